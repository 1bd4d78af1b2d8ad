import type { Redis } from 'ioredis';

export type DeadLetterStage = 'ingest' | 'backfill' | 'embed' | 'write';

export interface DeadLetter {
  stage: DeadLetterStage;
  /** Error code (EVENT_INVALID, EMBEDDINGS_REJECTED, ...) and the human-readable reason. */
  code: string;
  reason: string;
  itemId: string | undefined;
  /** The original Kafka message value (or job data), byte for byte, base64. */
  original: Buffer;
  key: Buffer | null;
  source: string | undefined;
}

export interface StoredDeadLetter extends Omit<DeadLetter, 'original' | 'key'> {
  id: string;
  at: string;
  original: Buffer;
  key: Buffer | null;
}

/**
 * Dead letters live in one Redis stream per deployment, capped (approximately) at maxEntries so
 * a flood of bad input cannot exhaust Redis. Entries keep the original bytes for replay.
 */
export class DeadLetterStore {
  readonly key: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly maxEntries = 1_000_000,
  ) {
    this.key = `${prefix}:dlq`;
  }

  async add(entries: DeadLetter[]): Promise<void> {
    if (entries.length === 0) return;
    const pipeline = this.redis.pipeline();
    for (const entry of entries) {
      pipeline.xadd(
        this.key,
        'MAXLEN',
        '~',
        String(this.maxEntries),
        '*',
        'stage', entry.stage,
        'code', entry.code,
        'reason', entry.reason,
        'item_id', entry.itemId ?? '',
        'source', entry.source ?? '',
        'key', entry.key === null ? '' : entry.key.toString('base64'),
        'original', entry.original.toString('base64'),
        'at', new Date().toISOString(),
      );
    }
    const results = await pipeline.exec();
    const failed = results?.find(([error]) => error);
    if (failed?.[0]) throw failed[0];
  }

  async count(): Promise<number> {
    return this.redis.xlen(this.key);
  }

  async list(limit = 100): Promise<StoredDeadLetter[]> {
    const rows = await this.redis.xrange(this.key, '-', '+', 'COUNT', limit);
    return rows.map(([id, flat]) => {
      const f: Record<string, string> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i] as string] = flat[i + 1] as string;
      return {
        id,
        stage: f.stage as DeadLetterStage,
        code: f.code ?? '',
        reason: f.reason ?? '',
        itemId: f.item_id || undefined,
        source: f.source || undefined,
        key: f.key ? Buffer.from(f.key, 'base64') : null,
        original: Buffer.from(f.original ?? '', 'base64'),
        at: f.at ?? '',
      };
    });
  }
}
