/**
 * The file source's cursor under awkward bytes: CRLF, blank lines, a last line without its newline,
 * multi-byte UTF-8 characters split across the 1 MiB read chunks, and a resume from every
 * checkpoint a page returned. Reading from a checkpoint must give exactly the records after it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileSource } from '../../../src/backfill/sources/file-source.js';
import type { SourcePage } from '../../../src/backfill/sources/source.js';

const dir = mkdtempSync(join(tmpdir(), 'file-source-'));
const MAX_LINE = 4 * 1_048_576;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function collect(source: FileSource, cursor: string | undefined, pageSize: number): Promise<SourcePage[]> {
  const pages: SourcePage[] = [];
  for await (const page of source.pages(cursor, pageSize, new AbortController().signal)) pages.push(page);
  return pages;
}

const values = (pages: SourcePage[]) => pages.flatMap((p) => p.records.map((r) => (r.kind === 'bytes' ? (r.value as Buffer).toString('utf8') : JSON.stringify(r.row))));

function fileOf(name: string, content: Buffer | string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

describe('file source cursor', () => {
  it('reads CRLF lines, skips blank and whitespace-only lines, keeps a last line without newline, and resumes exactly from every checkpoint', async () => {
    const lines = ['{"id":"a","version":1,"text":"é à"}', '', '   ', '{"id":"b","version":1,"text":"b"}', '\t', '{"id":"c","version":1,"text":"c"}'];
    const path = fileOf('crlf.ndjson', `${lines.join('\r\n')}\r\n\r\n{"id":"d","version":1,"text":"no newline"}`);
    const expected = ['{"id":"a","version":1,"text":"é à"}', '{"id":"b","version":1,"text":"b"}', '{"id":"c","version":1,"text":"c"}', '{"id":"d","version":1,"text":"no newline"}'];
    for (const pageSize of [1, 2, 3, 10]) {
      const pages = await collect(new FileSource(path, MAX_LINE), undefined, pageSize);
      expect(values(pages), `page size ${pageSize}`).toEqual(expected);
      expect(pages.at(-1)?.fraction).toBe(1);
      // Every checkpoint, resumed from, gives exactly the rest.
      let before = 0;
      for (const page of pages) {
        before += page.records.length;
        const rest = await collect(new FileSource(path, MAX_LINE), page.cursor, pageSize);
        expect(values(rest), `resumed at ${page.cursor} (page size ${pageSize})`).toEqual(expected.slice(before));
      }
    }
  });

  it('keeps a multi-byte UTF-8 character split across the 1 MiB read chunks intact, and its line positions right', async () => {
    const chunk = 1 << 20;
    // Line 1 ends so that a 3-byte "€" of line 2 straddles the first chunk boundary; line 3 is long
    // enough to straddle the second one with a 4-byte emoji.
    const head = '{"id":"x1","version":1,"text":"';
    const line1 = `${head}${'a'.repeat(chunk - head.length - 2 - 5)}"}`; // + "\n" → the boundary lands inside line 2
    const line2 = '{"id":"€€€€€","version":1,"text":"€ and 😀"}';
    const filler = 'b'.repeat(chunk - 40);
    const line3 = `{"id":"x3","version":1,"text":"${filler}😀😀😀😀"}`;
    const content = `${line1}\n${line2}\n${line3}\n`;
    const path = fileOf('utf8.ndjson', content);
    const pages = await collect(new FileSource(path, MAX_LINE), undefined, 1);
    expect(values(pages)).toEqual([line1, line2, line3]);
    const positions = pages.flatMap((p) => p.records.map((r) => r.position.split('@')[1]));
    expect(positions).toEqual(['0', String(Buffer.byteLength(`${line1}\n`)), String(Buffer.byteLength(`${line1}\n${line2}\n`))]);
    const rest = await collect(new FileSource(path, MAX_LINE), pages[0]?.cursor, 1);
    expect(values(rest)).toEqual([line2, line3]);
  });

  it('a checkpoint past the end of a file that shrank reads nothing instead of failing', async () => {
    const path = fileOf('short.ndjson', '{"id":"a","version":1,"text":"a"}\n');
    expect(values(await collect(new FileSource(path, MAX_LINE), '100000', 5))).toEqual([]);
  });

  it('refuses a path that is not a regular file (a directory) as BACKFILL_INVALID, so that the job fails at once instead of being retried', async () => {
    // stat() succeeds for a directory (and for /dev/zero, whose endless line without newline
    // would be buffered until the worker, which also runs the live roles, runs out of memory);
    // only the read fails, with EISDIR, which the runner treats as an unknown retryable error.
    let refused: unknown;
    try {
      await collect(new FileSource(dir, MAX_LINE), undefined, 1);
    } catch (error) {
      refused = error;
    }
    expect(refused, `a directory as backfill file should be refused as BACKFILL_INVALID, got ${String(refused)}`).toMatchObject({ code: 'BACKFILL_INVALID' });
  });
});

describe('file source limits', () => {
  it('cuts a line longer than the limit instead of holding it whole, and reads on after it', async () => {
    const long = `{"id":"big","version":1,"text":"${'x'.repeat(5_000)}"}`;
    const path = fileOf('long-line.ndjson', `${long}\n{"id":"after","version":1,"text":"fine"}\n`);
    const pages = await collect(new FileSource(path, 100), undefined, 10);
    const [first, second] = values(pages);
    // Kept only up to the limit plus one byte: enough for the parser to refuse it as too large.
    expect(first).toHaveLength(101);
    expect(second).toBe('{"id":"after","version":1,"text":"fine"}');
    expect(pages.at(-1)?.cursor).toBe(String(Buffer.byteLength(long) + 1 + Buffer.byteLength('{"id":"after","version":1,"text":"fine"}') + 1));
  });
});
