import { Redis } from 'ioredis';

/**
 * One ioredis connection per component. BullMQ workers need maxRetriesPerRequest=null (blocking
 * commands must not time out while Redis is briefly away); the same setting keeps the producer side
 * waiting through a Redis restart instead of failing the enqueue.
 */
export function createRedis(url: string, connectionName: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, connectionName, lazyConnect: false });
}
