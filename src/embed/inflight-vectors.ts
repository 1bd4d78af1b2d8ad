import type { Redis } from 'ioredis';
import { WRITE_QUEUE, type WriteJobData } from '../queue/jobs.js';

/**
 * Which write job holds the vector of a text that was bought and is not written yet, by content
 * hash (one Redis hash, `<prefix>:inflight`). A vector waits in the write queue between embed and
 * write; a change needing the same text meanwhile (a metadata-only change of an item whose new
 * text is still on its way, a stalled embed job run again, a redelivered batch) takes the vector
 * from that job instead of paying for it again.
 *
 * It is a hint, never trusted alone: the vector is read from the write job itself, and a job that
 * is gone (written and removed) just means the vector is not reused. So its upkeep is one command
 * per job, never per item: the embed stage announces a write job's hashes before adding it, and
 * the writer forgets them once the job is done. An entry can outlive its job only when a process
 * dies between the two steps; it then points to nothing and is removed when next looked up.
 */
export class InflightVectors {
  readonly key: string;

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
   * The vectors (base64 float32) that the given write jobs still hold for the wanted hashes. Hints
   * pointing to jobs that no longer exist are removed.
   */
  async vectorsFrom(jobsByHash: Map<string, string>): Promise<Map<string, string>> {
    const vectors = new Map<string, string>();
    const jobIds = [...new Set(jobsByHash.values())];
    if (jobIds.length === 0) return vectors;
    const pipeline = this.redis.pipeline();
    for (const id of jobIds) pipeline.hget(`${this.prefix}:${WRITE_QUEUE}:${id}`, 'data');
    const results = (await pipeline.exec()) ?? [];
    const gone: string[] = [];
    results.forEach(([error, raw], i) => {
      if (error || typeof raw !== 'string') {
        gone.push(jobIds[i] as string);
        return;
      }
      for (const write of (JSON.parse(raw) as WriteJobData).writes) {
        if (write.op === 'upsert' && write.contentHash && write.vector && jobsByHash.has(write.contentHash)) vectors.set(write.contentHash, write.vector);
      }
    });
    const stale = [...jobsByHash].filter(([, job]) => gone.includes(job)).map(([hash]) => hash);
    if (stale.length > 0) await this.redis.hdel(this.key, ...stale);
    return vectors;
  }

  /** Before a write job is added: its vectors are findable by hash while it waits. */
  async announce(hashes: string[], writeJobId: string): Promise<void> {
    if (hashes.length === 0) return;
    await this.redis.hset(this.key, Object.fromEntries(hashes.map((h) => [h, writeJobId])));
  }

  /** After a write job is done (written or dead-lettered): its vectors are no longer held. */
  async forget(hashes: string[]): Promise<void> {
    if (hashes.length === 0) return;
    await this.redis.hdel(this.key, ...hashes);
  }
}
