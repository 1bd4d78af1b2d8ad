/**
 * A backfill source: where a backfill reads the catalog from. A new source is one file that
 * implements this and one case in `openSource` (and one in the job schema).
 */
export interface BackfillSource {
  /**
   * The records, page by page, from `cursor` (a position an earlier page returned, saved as the
   * checkpoint; undefined for the start). The iteration ends after the last record. When `signal`
   * aborts (a cancel, a shutdown), a source waiting for records stops waiting and throws.
   */
  pages(cursor: string | undefined, pageSize: number, signal: AbortSignal): AsyncIterable<SourcePage>;
  close(): Promise<void>;
}

export interface SourcePage {
  records: SourceRecord[];
  /** The position after this page: reading from it gives the rest of the source. */
  cursor: string;
  /** How far through the source this page ends (0..1), when the source can tell: for the ETA. */
  fraction: number | undefined;
}

/**
 * One change record, still to be validated with the event field mapping: a Kafka message or an
 * NDJSON line as bytes, or a database row as an object.
 */
export type SourceRecord =
  | { kind: 'bytes'; position: string; key: Buffer | null; value: Buffer | null; timestampMs: number | undefined }
  | { kind: 'row'; position: string; row: Record<string, unknown> };
