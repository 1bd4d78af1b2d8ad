import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { BackfillError } from '../../core/errors.js';
import type { BackfillSource, SourcePage, SourceRecord } from './source.js';

const NEWLINE = 0x0a;

/**
 * `file:PATH`: an NDJSON file of change events, one per line, in the same format and field mapping
 * as Kafka events. The cursor is the byte offset of the next line, so a resumed backfill seeks
 * straight to it. Blank lines are skipped. Records carry no timestamp: each needs a version or
 * updated_at.
 */
export class FileSource implements BackfillSource {
  constructor(private readonly path: string) {}

  async *pages(cursor: string | undefined, pageSize: number): AsyncIterable<SourcePage> {
    const size = await this.size();
    let offset = cursor === undefined ? 0 : Number(cursor);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new BackfillError('BACKFILL_INVALID', `the checkpoint of ${this.path} is not a byte offset: ${cursor}`, { canRetry: false });
    let records: SourceRecord[] = [];
    let pending: Buffer[] = [];
    let lineStart = offset;
    const page = (): SourcePage => {
      const done = { records, cursor: String(offset), fraction: size === 0 ? 1 : offset / size };
      records = [];
      return done;
    };
    for await (const chunk of createReadStream(this.path, { start: offset, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      let from = 0;
      for (let newline = chunk.indexOf(NEWLINE, from); newline >= 0; newline = chunk.indexOf(NEWLINE, from)) {
        pending.push(chunk.subarray(from, newline));
        const line = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending);
        pending = [];
        offset += line.length + 1;
        this.push(records, line, lineStart);
        lineStart = offset;
        from = newline + 1;
        if (records.length >= pageSize) yield page();
      }
      if (from < chunk.length) pending.push(Buffer.from(chunk.subarray(from)));
    }
    // The last line may lack its newline.
    const tail = Buffer.concat(pending);
    if (tail.length > 0) {
      offset += tail.length;
      this.push(records, tail, lineStart);
    }
    if (records.length > 0) yield page();
  }

  async close(): Promise<void> {}

  private push(records: SourceRecord[], line: Buffer, at: number): void {
    const trimmed = line.at(-1) === 0x0d ? line.subarray(0, -1) : line;
    if (trimmed.toString('utf8').trim() === '') return;
    records.push({ kind: 'bytes', position: `${this.path}@${at}`, key: null, value: Buffer.from(trimmed), timestampMs: undefined });
  }

  private async size(): Promise<number> {
    try {
      return (await stat(this.path)).size;
    } catch (error) {
      throw new BackfillError('BACKFILL_INVALID', `cannot read the backfill file ${this.path}: ${(error as Error).message} (the path must be readable by the worker running the backfill role)`, { canRetry: false, cause: error });
    }
  }
}
