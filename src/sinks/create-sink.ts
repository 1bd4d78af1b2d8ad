import type { Config } from '../config/config.js';
import { LanceDbSink } from './lancedb/lancedb-sink.js';
import { QdrantSink } from './qdrant/qdrant-sink.js';
import type { VectorSink } from './vector-sink.js';

export function createSink(sink: Config['sink'], dimensions: number): VectorSink {
  const spec = { name: sink.collection, dimensions, distance: sink.distance };
  if (sink.kind === 'qdrant') {
    if (!sink.qdrant) throw new Error('SINK=qdrant without QDRANT_URL (the config should have refused this)');
    return new QdrantSink(spec, sink.qdrant);
  }
  return new LanceDbSink(spec, sink.lancedb.uri, { readAheadBytes: sink.lancedb.readAheadBytes, cacheBytes: sink.lancedb.cacheBytes });
}
