import type { Redis } from 'ioredis';

/** USD per million tokens, as published by OpenAI; EMBEDDINGS_PRICES overrides or extends it. */
export const DEFAULT_PRICES_PER_MILLION: Record<string, number> = {
  'text-embedding-3-small': 0.02,
  'text-embedding-3-large': 0.13,
  'text-embedding-ada-002': 0.1,
  'local-hash-v1': 0,
};

export interface ModelUsage {
  model: string;
  requests: number;
  inputs: number;
  tokens: number;
  /** undefined when no price is known for the model. */
  estimatedCostUsd: number | undefined;
}

/**
 * Embeddings usage per model, from the providers' own `usage` figures, kept in one Redis hash so
 * that every replica adds to the same totals and `indexer usage` can show them.
 */
const BATCH_SUFFIX = ' (batch)';
/** OpenAI's Batch API costs half of the synchronous price. */
const BATCH_PRICE_FACTOR = 0.5;

/** The usage key of a model's Batch API requests. */
export function batchUsageModel(model: string): string {
  return `${model}${BATCH_SUFFIX}`;
}

export class UsageStore {
  private readonly key: string;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly prices: Record<string, number>,
  ) {
    this.key = `${prefix}:usage`;
  }

  /** Batch API usage is recorded under `<model> (batch)` and priced at half the model's price. */
  costOf(model: string, tokens: number): number | undefined {
    const batch = model.endsWith(BATCH_SUFFIX);
    const price = this.prices[batch ? model.slice(0, -BATCH_SUFFIX.length) : model];
    return price === undefined ? undefined : (tokens / 1_000_000) * price * (batch ? BATCH_PRICE_FACTOR : 1);
  }

  async record(model: string, inputs: number, tokens: number): Promise<void> {
    await this.redis.pipeline().hincrby(this.key, `${model}\u0000requests`, 1).hincrby(this.key, `${model}\u0000inputs`, inputs).hincrby(this.key, `${model}\u0000tokens`, tokens).exec();
  }

  async totals(): Promise<ModelUsage[]> {
    const flat = await this.redis.hgetall(this.key);
    const byModel = new Map<string, ModelUsage>();
    for (const [field, value] of Object.entries(flat)) {
      const [model = '', counter = ''] = field.split('\u0000');
      const usage = byModel.get(model) ?? { model, requests: 0, inputs: 0, tokens: 0, estimatedCostUsd: undefined };
      if (counter === 'requests' || counter === 'inputs' || counter === 'tokens') usage[counter] = Number(value);
      byModel.set(model, usage);
    }
    return [...byModel.values()].map((u) => ({ ...u, estimatedCostUsd: this.costOf(u.model, u.tokens) }));
  }
}

/** "model=price,model=price" (USD per million tokens) over the defaults. */
export function parsePrices(spec: string | undefined): Record<string, number> {
  const prices = { ...DEFAULT_PRICES_PER_MILLION };
  for (const entry of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const at = entry.lastIndexOf('=');
    prices[entry.slice(0, at).trim()] = Number(entry.slice(at + 1));
  }
  return prices;
}
