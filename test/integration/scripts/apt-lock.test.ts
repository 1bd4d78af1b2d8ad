import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';

/**
 * The service scripts install Debian packages with apt-get. Another install holding dpkg's lock
 * (unattended-upgrades, a second script) must make them wait, and past the wait say what failed.
 * The lock is taken the way dpkg and apt take it: a POSIX (fcntl) lock on lock-frontend.
 */
const LOCK = '/var/lib/dpkg/lock-frontend';
const holders: ChildProcess[] = [];

async function holdDpkgLock(): Promise<ChildProcess> {
  const holder = spawn('python3', ['-c', `import fcntl,sys\nf=open(${JSON.stringify(LOCK)},'w')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('locked',flush=True)\nsys.stdin.read()`], { stdio: ['pipe', 'pipe', 'inherit'] });
  holders.push(holder);
  const [chunk] = (await once(holder.stdout!, 'data')) as [Buffer];
  expect(chunk.toString()).toContain('locked');
  return holder;
}

function release(holder: ChildProcess): Promise<unknown> {
  const exited = once(holder, 'exit');
  holder.stdin!.end();
  return exited;
}

/** apt_install of a package this machine has (the Redis the suite runs on): no download, only the lock. */
function aptInstall(lockTimeoutS: number): { done: Promise<{ code: number | null; stderr: string }>; exitedAt: () => number | undefined } {
  const child = spawn('bash', ['-c', 'source scripts/services/lib.sh && apt_install redis-server'], { env: { ...process.env, APT_LOCK_TIMEOUT: String(lockTimeoutS) }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let exitedAt: number | undefined;
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = once(child, 'exit').then(([code]) => {
    exitedAt = performance.now();
    return { code: code as number | null, stderr };
  });
  return { done, exitedAt: () => exitedAt };
}

afterEach(async () => {
  await Promise.all(holders.splice(0).filter((h) => h.exitCode === null).map(release));
});

describe('apt-get in the service scripts', () => {
  it('waits for another install to release dpkg\'s lock, then installs', async () => {
    const holder = await holdDpkgLock();
    const install = aptInstall(120);
    // Still waiting while the lock is held: poll until apt has been blocked for a while.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect(install.exitedAt()).toBeUndefined();
    await release(holder);
    const { code, stderr } = await install.done;
    expect(stderr).toContain('waiting up to 120 s');
    expect(code).toBe(0);
  });

  it('past APT_LOCK_TIMEOUT, says that another install holds the lock', async () => {
    await holdDpkgLock();
    const { code, stderr } = await aptInstall(1).done;
    expect(code).not.toBe(0);
    expect(stderr).toContain("another package install held dpkg's lock for more than 1 s");
    expect(stderr).toContain('APT_LOCK_TIMEOUT');
  });
});
