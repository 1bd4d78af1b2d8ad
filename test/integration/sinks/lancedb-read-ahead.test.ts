import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createSink } from '../../../src/sinks/create-sink.js';
import { loadConfig } from '../../../src/config/config.js';
import { DEFAULT_READ_AHEAD_BYTES, LanceDbSink, READ_AHEAD_ENV } from '../../../src/sinks/lancedb/lancedb-sink.js';

// LanceDB takes its scans' read-ahead from its environment only (the JavaScript client has no
// option for it), and its default (256 MiB on a local disk) let each compaction raise the writer's
// RSS by 150-330 MiB. What the sink must do is put the configured bound there when it opens
// (lancedb-read-ahead-seen.test.ts checks that LanceDB reads it so).
const dirs: string[] = [];
const before = process.env[READ_AHEAD_ENV];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  if (before === undefined) delete process.env[READ_AHEAD_ENV];
  else process.env[READ_AHEAD_ENV] = before;
});

async function openedSink(make: (dir: string) => LanceDbSink | ReturnType<typeof createSink>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'lancedb-read-ahead-'));
  dirs.push(dir);
  const sink = make(dir);
  await sink.open();
  await sink.count();
  await sink.close();
}

describe("LanceDB's read-ahead", () => {
  it('is set from LANCEDB_READ_AHEAD_MIB, over a value already in the environment, when the sink opens', async () => {
    process.env[READ_AHEAD_ENV] = String(2 * 2 ** 30);
    await openedSink((dir) => createSink(loadConfig({ LANCEDB_URI: dir, LANCEDB_READ_AHEAD_MIB: '8' }).sink, 4));
    expect(process.env[READ_AHEAD_ENV]).toBe(String(8 * 2 ** 20));
  });

  it('is 64 MiB for a sink built without the setting', async () => {
    delete process.env[READ_AHEAD_ENV];
    await openedSink((dir) => new LanceDbSink({ name: 'items', dimensions: 4, distance: 'cosine' }, dir));
    expect(DEFAULT_READ_AHEAD_BYTES).toBe(64 * 2 ** 20);
    expect(process.env[READ_AHEAD_ENV]).toBe(String(DEFAULT_READ_AHEAD_BYTES));
  });
});
