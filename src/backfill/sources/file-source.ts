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
  /** `maxLineBytes`: a longer line is cut there (and refused as too large) instead of held whole. */
  constructor(
    private readonly path: string,
    private readonly maxLineBytes: number,
  ) {}

  async *pages(cursor: string | undefined, pageSize: number, signal: AbortSignal): AsyncIterable<SourcePage> {
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
    let pendingBytes = 0;
    let overlong = false;
    for await (const chunk of createReadStream(this.path, { start: offset, highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      signal.throwIfAborted();
      let from = 0;
      for (let newline = chunk.indexOf(NEWLINE, from); newline >= 0; newline = chunk.indexOf(NEWLINE, from)) {
        const piece = chunk.subarray(from, newline);
        if (!overlong) pending.push(piece);
        const length = pendingBytes + piece.length;
        const whole = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending);
        const line = whole.length > this.maxLineBytes ? whole.subarray(0, this.maxLineBytes + 1) : whole;
        pending = [];
        pendingBytes = 0;
        overlong = false;
        offset += length + 1;
        this.push(records, line, lineStart);
        lineStart = offset;
        from = newline + 1;
        if (records.length >= pageSize) yield page();
      }
      if (from < chunk.length) {
        const rest = chunk.subarray(from);
        // A line past the limit keeps only its first bytes (enough to be refused as too large).
        if (!overlong) pending.push(Buffer.from(rest.subarray(0, Math.max(0, this.maxLineBytes + 1 - pendingBytes))));
        pendingBytes += rest.length;
        overlong = pendingBytes > this.maxLineBytes;
      }
    }
    // The last line may lack its newline.
    const tail = Buffer.concat(pending).subarray(0, this.maxLineBytes + 1);
    if (pendingBytes > 0) {
      offset += pendingBytes;
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
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(this.path);
    } catch (error) {
      throw new BackfillError('BACKFILL_INVALID', `cannot read the backfill file ${this.path}: ${(error as Error).message} (the path must be readable by the worker running the backfill role)`, { canRetry: false, cause: error });
    }
    if (!info.isFile()) throw new BackfillError('BACKFILL_INVALID', `the backfill source ${this.path} is not a regular file: give an NDJSON file`, { canRetry: false });
    return info.size;
  }
}
