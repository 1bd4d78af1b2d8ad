import type { Redis } from 'ioredis';
import { WRITE_QUEUE, type ItemWrite, type WriteJobData } from '../queue/jobs.js';
import { hasBlob, unpackWrites, vectorsKey } from '../queue/write-jobs.js';
import { RecentVectors } from './recent-vectors.js';

// KEYS[1]: the in-flight hash. ARGV: pairs of content hash and write job id. Deletes each hash's
// entry only while it still names that job: another write job holding the same text (another
// item's, or a vector reused into a newer job) may have announced it since. One read and one
// delete for the whole list, whatever its length.
const FORGET_IF_HELD_BY = `
local hashes = {}
for i = 1, #ARGV, 2 do hashes[#hashes + 1] = ARGV[i] end
local current = redis.call('HMGET', KEYS[1], unpack(hashes))
local stale = {}
for i, job in ipairs(current) do
  if job == ARGV[i * 2] then stale[#stale + 1] = hashes[i] end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
return #stale`;

/** Lua's unpack takes a few thousand values at most: longer lists go in slices. */
const SLICE = 2000;
/** The vectors a process keeps of the write jobs it announced: 16 MiB of float32. */
const RECENT_VECTORS_MAX_BYTES = 16 * 2 ** 20;

/**
 * Which write job holds the vector of a text that was bought and is not written yet, by content
 * hash (one Redis hash, `<prefix>:inflight`). A vector waits in the write queue between embed and
 * write; a change needing the same text meanwhile (a metadata-only change of an item whose new
 * text is still on its way, a stalled embed job run again, a redelivered batch) takes the vector
 * from that job instead of paying for it again.
 *
 * It is a hint, never trusted alone: the vector is read from the write job itself, and a job that
 * is gone (written and removed) just means the vector is not reused. So its upkeep is one command
 * per batch, never per item: the embed stage announces a write job's hashes before adding it, and
 * the writer forgets them once written, each only while it still names that job. An entry can
 * outlive its job only when a process dies between the two steps; it then points to nothing and
 * is removed when next looked up.
 */
export class InflightVectors {
  readonly key: string;
  /** The vectors of the write jobs this process announced: read without reading their job back. */
  private readonly recent = new RecentVectors(RECENT_VECTORS_MAX_BYTES);

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.key = `${prefix}:inflight`;
  }

  /** The write job announced for each hash, where there is one. */
  async lookup(hashes: string[]): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    if (hashes.length === 0) return found;
    const jobs = await this.redis.hmget(this.key, ...hashes);
    hashes.forEach((hash, i) => {
      const job = jobs[i];
      if (job) found.set(hash, job);
    });
    return found;
  }

  /**
   * The vectors that the given write jobs still hold for the wanted hashes: from this process's
   * memory when it announced them, else read from the jobs (their data and their vectors' blob, a
   * request's vectors: reading one back costs them all). Hints pointing to jobs that no longer
   * exist (or whose blob is gone: written) are removed.
   */
  async vectorsFrom(jobsByHash: Map<string, string>): Promise<Map<string, Float32Array>> {
    const vectors = new Map<string, Float32Array>();
    const toRead = new Map<string, string>();
    for (const [hash, job] of jobsByHash) {
      const vector = this.recent.get(hash);
      if (vector === undefined) toRead.set(hash, job);
      else vectors.set(hash, vector);
    }
    const jobIds = [...new Set(toRead.values())];
    if (jobIds.length === 0) return vectors;
    const pipeline = this.redis.pipeline();
    for (const id of jobIds) {
      pipeline.hget(`${this.prefix}:${WRITE_QUEUE}:${id}`, 'data');
      pipeline.getBuffer(vectorsKey(this.prefix, id));
    }
    const results = (await pipeline.exec()) ?? [];
    const gone: string[] = [];
    jobIds.forEach((id, i) => {
      const [dataError, raw] = results[2 * i] ?? [];
      const [blobError, blob] = results[2 * i + 1] ?? [];
      const data = typeof raw === 'string' ? (JSON.parse(raw) as WriteJobData) : undefined;
      // A job whose blob is gone had its writes recorded (the blob goes last): as good as gone.
      if (dataError || blobError || data === undefined || (hasBlob(data) && blob === null)) {
        gone.push(id);
        return;
      }
      for (const write of unpackWrites(data, blob as Buffer | null)) {
        if (write.op === 'upsert' && write.contentHash && write.vector && toRead.has(write.contentHash)) vectors.set(write.contentHash, write.vector);
      }
    });
    await this.forget([...toRead].filter(([, job]) => gone.includes(job)).map(([hash, job]) => ({ hash, job })));
    return vectors;
  }

  /**
   * Before a write job is added: the vectors of its upserts are findable by hash while it waits,
   * and this process keeps them at hand.
   */
  async announce(writes: ItemWrite[], writeJobId: string): Promise<void> {
    const held = writes.filter((w) => w.op === 'upsert' && w.contentHash !== undefined && w.vector !== undefined);
    if (held.length === 0) return;
    await this.redis.hset(this.key, Object.fromEntries(held.map((w) => [w.contentHash, writeJobId])));
    for (const w of held) this.recent.remember(w.contentHash as string, w.vector as Float32Array);
  }

  /** After vectors are written: the jobs that held them no longer do (entries naming other jobs stay). */
  async forget(held: { hash: string; job: string }[]): Promise<void> {
    for (let i = 0; i < held.length; i += SLICE) {
      const slice = held.slice(i, i + SLICE);
      await this.redis.eval(FORGET_IF_HELD_BY, 1, this.key, ...slice.flatMap(({ hash, job }) => [hash, job]));
    }
  }
}
