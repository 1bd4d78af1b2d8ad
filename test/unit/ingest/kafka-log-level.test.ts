import { logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { kafkaLogLevel } from '../../../src/ingest/kafka.js';

describe('kafkajs log levels', () => {
  it('demotes the coordinator answers kafkajs retries on its own to debug', () => {
    for (const error of ["The coordinator is loading and hence can't process requests for this group", 'The group coordinator is not available', 'This is not the correct coordinator for this group', 'There is no leader for this topic-partition as we are in the middle of a leadership election']) {
      expect(kafkaLogLevel(logLevel.ERROR, 'Response FindCoordinator(key: 10, version: 2)', { error, correlationId: 1 }), error).toBe('debug');
    }
  });

  it('makes retry notices and restarts the ingest consumer handles warnings', () => {
    expect(kafkaLogLevel(logLevel.ERROR, 'Restarting the consumer in 300ms', { retryCount: 0 })).toBe('warn');
    expect(kafkaLogLevel(logLevel.ERROR, 'Crash: KafkaJSNumberOfRetriesExceeded: The group coordinator is not available', { groupId: 'g' })).toBe('warn');
    expect(kafkaLogLevel(logLevel.ERROR, 'Failed to connect to seed broker, trying another broker from the list: Connection error', {})).toBe('warn');
  });

  it('keeps every other error an error', () => {
    expect(kafkaLogLevel(logLevel.ERROR, 'Response SaslAuthenticate(key: 36, version: 1)', { error: 'Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256' })).toBe('error');
    expect(kafkaLogLevel(logLevel.ERROR, 'Response Produce(key: 0, version: 7)', { error: 'Not authorized to access topics: [Topic authorization failed]' })).toBe('error');
    expect(kafkaLogLevel(logLevel.WARN, 'anything', {})).toBe('warn');
    expect(kafkaLogLevel(logLevel.INFO, 'anything', {})).toBe('info');
  });
});
