import type { Config } from '../config/config.js';
import type { SearchHit } from '../sinks/vector-sink.js';
import { openProvider, openSink } from './context.js';

export async function searchText(config: Config, text: string, limit: number): Promise<SearchHit[]> {
  const provider = openProvider(config);
  const sink = await openSink(config);
  try {
    const { vectors } = await provider.embed([text]);
    return await sink.search(vectors[0] as Float32Array, limit);
  } finally {
    await sink.close();
    await provider.close();
  }
}

/** One line per hit: score, item id, title (when the metadata has one), the rest of the metadata. */
export function formatHits(hits: SearchHit[]): string {
  if (hits.length === 0) return '(no results)\n';
  return hits
    .map((hit, i) => {
      const { item_id, version, content_hash, model, source_updated_at, embedded_at, indexed_at, text_tokens, truncated, title, ...rest } = hit.payload;
      void version, content_hash, model, source_updated_at, embedded_at, indexed_at, text_tokens, truncated;
      const label = typeof title === 'string' ? `  ${title}` : '';
      return `${String(i + 1).padStart(2)}. ${hit.score.toFixed(4)}  ${item_id}${label}\n      ${JSON.stringify(rest)}`;
    })
    .join('\n')
    .concat('\n');
}
