import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

// What value LanceDB itself reads for LANCE_DEFAULT_IO_BUFFER_SIZE, and when: a getenv() spy
// (LD_PRELOAD) in a child process logs every read by the native module with the value it saw,
// between markers the child prints before each step. The sink's own test only checks
// process.env; this checks what LanceDB (@lancedb/lancedb 0.37.1) gets, at the compaction too.
// Kept from the adversarial review of the bounded read-ahead, which found with it that LanceDB
// reads the variable at every scan (merge-insert, query, compaction), not once per process as the
// first docs said; unset, a local table's scans use 32 MiB x 8 I/O threads = 256 MiB
// (SchedulerConfig::max_bandwidth, seen in gdb), not 2 GiB.

const dir = mkdtempSync(join(tmpdir(), 'review-read-ahead-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SPY = `
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static char *(*real_getenv)(const char *) = 0;
char *getenv(const char *name) {
  if (!real_getenv) real_getenv = dlsym(RTLD_NEXT, "getenv");
  char *v = real_getenv(name);
  if (name && strcmp(name, "LANCE_DEFAULT_IO_BUFFER_SIZE") == 0) {
    Dl_info info;
    if (dladdr(__builtin_return_address(0), &info) && info.dli_fname && strstr(info.dli_fname, "lancedb")) {
      char buf[128];
      int n = snprintf(buf, sizeof buf, "READ %s\\n", v ? v : "unset");
      write(2, buf, n);
    }
  }
  return v;
}`;

function compileSpy(): string | undefined {
  const source = join(dir, 'spy.c');
  const library = join(dir, 'spy.so');
  writeFileSync(source, SPY);
  const cc = spawnSync('cc', ['-shared', '-fPIC', '-O2', '-o', library, source, '-ldl'], { encoding: 'utf8' });
  return cc.status === 0 ? library : undefined;
}

const spy = compileSpy();

/** The child's steps, each with the values LanceDB read during it. */
function run(script: string): Map<string, string[]> {
  const file = join(process.cwd(), '.cache', `review-read-ahead-${process.pid}.mts`);
  writeFileSync(file, script);
  try {
    if (spy === undefined) throw new Error('this test builds a getenv() spy with a C compiler: install one (apt-get install gcc) so that `cc` runs');
    const env: NodeJS.ProcessEnv = { ...process.env, LD_PRELOAD: spy };
    delete env.LANCE_DEFAULT_IO_BUFFER_SIZE;
    const child = spawnSync(process.execPath, ['--import', 'tsx', file], { encoding: 'utf8', env, timeout: 120_000 });
    expect(child.status, child.stderr).toBe(0);
    const steps = new Map<string, string[]>();
    let step = 'start';
    for (const line of child.stderr.split('\n')) {
      if (line.startsWith('STEP ')) steps.set((step = line.slice(5)), []);
      else if (line.startsWith('READ ')) (steps.get(step) ?? steps.set(step, []).get(step) as string[]).push(line.slice(5));
    }
    return steps;
  } finally {
    rmSync(file, { force: true });
  }
}

const PRELUDE = `
import { writeSync } from 'node:fs';
import * as lancedb from '@lancedb/lancedb';
import { createSink } from '../src/sinks/create-sink.js';
import { loadConfig } from '../src/config/config.js';
const step = (s) => writeSync(2, 'STEP ' + s + '\\n');
const now = new Date().toISOString();
const record = (i) => ({ itemId: 'i' + i, vector: Float32Array.of(1, 2, 3, 4), payload: { item_id: 'i' + i, version: 1, content_hash: 'h', model: 'm', source_updated_at: now, embedded_at: now, indexed_at: now, text_tokens: 1, truncated: false } });
const dir = ${JSON.stringify(dir)} + '/' + Math.random().toString(36).slice(2);
`;

describe("LanceDB's read-ahead, as LanceDB reads it", () => {
  it('is the configured value at every scan of the sink, the compaction included', () => {
    const steps = run(`${PRELUDE}
      const sink = createSink(loadConfig({ LANCEDB_URI: dir, LANCEDB_READ_AHEAD_MIB: '8' }).sink, 4);
      step('open'); await sink.open();
      step('upserts'); for (let i = 0; i < 5; i++) await sink.upsert([record(i)]);
      step('compaction'); await sink.table.optimize({ cleanupOlderThan: new Date(Date.now() - 60_000) });
      step('retrieve'); await sink.retrieve(['i1']);
      step('end'); await sink.close();`);
    for (const name of ['upserts', 'compaction', 'retrieve']) {
      expect(steps.get(name)?.length, `LanceDB read the variable during ${name}`).toBeGreaterThan(0);
      expect(new Set(steps.get(name)), name).toEqual(new Set([String(8 * 2 ** 20)]));
    }
  });

  it('holds even when LanceDB scanned in this process before the sink opened (it is read again at each scan)', () => {
    const steps = run(`${PRELUDE}
      step('raw scan before the sink');
      const db = await lancedb.connect(dir);
      const t = await db.createTable('raw', [{ id: 'a', v: 1 }]);
      await t.mergeInsert('id').whenMatchedUpdateAll().whenNotMatchedInsertAll().execute([{ id: 'b', v: 2 }]);
      await t.query().toArray();
      const sink = createSink(loadConfig({ LANCEDB_URI: dir, LANCEDB_READ_AHEAD_MIB: '8' }).sink, 4);
      step('open'); await sink.open();
      step('upserts'); for (let i = 0; i < 3; i++) await sink.upsert([record(i)]);
      step('compaction'); await sink.table.optimize({ cleanupOlderThan: new Date(Date.now() - 60_000) });
      step('later change of process.env'); process.env.LANCE_DEFAULT_IO_BUFFER_SIZE = String(3 * 2 ** 20);
      await sink.retrieve(['i1']);
      step('end'); await sink.close();`);
    expect(new Set(steps.get('raw scan before the sink'))).toEqual(new Set(['unset']));
    expect(new Set(steps.get('compaction'))).toEqual(new Set([String(8 * 2 ** 20)]));
    // Not "read once per process": a value written after the first scans is the one LanceDB uses next.
    expect(new Set(steps.get('later change of process.env'))).toEqual(new Set([String(3 * 2 ** 20)]));
  });
});
