import type { Writable } from 'node:stream';
import type { Config } from '../config/config.js';
import { SYSTEM_FIELDS, type StoredRecord } from '../sinks/vector-sink.js';
import { openSink } from './context.js';

/** The export line of a record: identity and state first, then the item's own metadata. */
export function exportLine(record: StoredRecord): Record<string, unknown> {
  const metadata = { ...record.payload } as Record<string, unknown>;
  for (const field of SYSTEM_FIELDS) delete metadata[field];
  const line: Record<string, unknown> = {
    item_id: record.payload.item_id,
    version: record.payload.version,
    content_hash: record.payload.content_hash,
    model: record.payload.model,
    source_updated_at: record.payload.source_updated_at,
    embedded_at: record.payload.embedded_at,
    indexed_at: record.payload.indexed_at,
    text_tokens: record.payload.text_tokens,
    truncated: record.payload.truncated,
    metadata,
  };
  if (record.vector) line.vector = record.vector;
  return line;
}

export async function exportRecords(config: Config, out: Writable, withVectors: boolean): Promise<number> {
  const sink = await openSink(config);
  let count = 0;
  try {
    for await (const record of sink.scan({ withVectors })) {
      if (!out.write(`${JSON.stringify(exportLine(record))}\n`)) await new Promise((resolve) => out.once('drain', resolve));
      count++;
    }
  } finally {
    await sink.close();
  }
  return count;
}
