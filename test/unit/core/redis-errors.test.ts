/**
 * Issue 10: Redis errors that pass (out of memory, a failover, a script running long, a lost
 * connection) were classed as final, so the job boundary dead-lettered work it should have retried.
 */
import { ReplyError } from 'ioredis';
import { MaxRetriesPerRequestError } from 'ioredis/built/errors/index.js';
import { describe, expect, it } from 'vitest';
import { IndexerError, isRetryable } from '../../../src/core/errors.js';

const reply = (message: string): Error => new ReplyError(message) as Error;

describe('isRetryable: Redis', () => {
  it.each([
    "OOM command not allowed when used memory > 'maxmemory'.",
    "OOM command not allowed when used memory > 'maxmemory'. script: bd6f3018b28bbdb36260f19d3c44afed740db987, on @user_script:1.",
    "READONLY You can't write against a read only replica.",
    'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.',
    'LOADING Redis is loading the dataset in memory',
    'MISCONF Redis is configured to save RDB snapshots, but it is currently not able to persist on disk.',
    'TRYAGAIN Multiple keys request during rehashing of slot',
    'CLUSTERDOWN The cluster is down',
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    'NOREPLICAS Not enough good replicas to write.',
    // Redis before 7 wraps a reply from inside a script.
    "ERR Error running script (call to f_8f55ae4a3be429c6d38c5d5db3e80edf89197b64): @user_script:41: @user_script: 41: -OOM command not allowed when used memory > 'maxmemory'.",
    'ERR Error running script (call to f_0a9a51ee96320953ec7bde8e63f3f060b9dac00c): @user_script:3: @user_script: 3: -READONLY You can\'t write against a read only replica.',
  ])('retries the reply %s', (message) => {
    expect(isRetryable(reply(message))).toBe(true);
  });

  it.each([
    'WRONGTYPE Operation against a key holding the wrong kind of value',
    'NOSCRIPT No matching script. Please use EVAL.',
    'BUSYGROUP Consumer Group name already exists',
    'BUSYKEY Target key name already exists.',
    "ERR unknown command 'OOMX'",
    // The words are there, but not as the reply's code: a script's own error is a bug.
    'ERR Error running script (call to f_1): @user_script:1: user_script:1: Script attempted to access nonexistent global variable OOM',
    'ERR value is not an integer or out of range; LOADING was not the problem',
  ])('does not retry the reply %s', (message) => {
    expect(isRetryable(reply(message))).toBe(false);
  });

  it('reads the reply code only from Redis replies, not from any error that mentions it', () => {
    expect(isRetryable(new Error("OOM command not allowed when used memory > 'maxmemory'."))).toBe(false);
    expect(isRetryable(new Error('the parser said: LOADING Redis is loading'))).toBe(false);
  });

  it('retries ioredis giving up on a connection', () => {
    expect(isRetryable(new MaxRetriesPerRequestError(20))).toBe(true);
    expect(isRetryable(new Error('Connection is closed.'))).toBe(true);
    expect(isRetryable(new Error("Stream isn't writeable and enableOfflineQueue options is false"))).toBe(true);
    expect(isRetryable(new Error('The Connection is closed. Or is it?'))).toBe(false);
  });

  it('finds a transient reply in the cause chain, and still lets a final error of ours win', () => {
    const oom = reply("OOM command not allowed when used memory > 'maxmemory'.");
    expect(isRetryable(new Error('could not add the dead letters', { cause: oom }))).toBe(true);
    expect(isRetryable(new IndexerError('VECTOR_INVALID', 'bad vector', { canRetry: false, cause: oom }))).toBe(false);
  });
});
