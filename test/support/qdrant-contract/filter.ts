/**
 * The part of Qdrant's filter language the indexer uses (must / should / must_not, match, range,
 * has_id, is_empty, is_null), evaluated as Qdrant does: a point without the key never matches a
 * match or range condition. Anything else is refused loudly rather than guessed.
 */
export type Payload = Record<string, unknown>;

export class UnsupportedFilter extends Error {}

interface Point {
  id: string | number;
  payload: Payload;
}

function valuesAt(payload: Payload, key: string): unknown[] {
  let current: unknown[] = [payload];
  for (const part of key.split('.')) {
    const next: unknown[] = [];
    const arrayPart = part.endsWith('[]');
    const name = arrayPart ? part.slice(0, -2) : part;
    for (const value of current) {
      if (value && typeof value === 'object' && !Array.isArray(value)) {
        const v = (value as Record<string, unknown>)[name];
        if (v === undefined) continue;
        if (Array.isArray(v)) next.push(...v);
        else next.push(v);
      }
    }
    current = next;
  }
  return current;
}

function matchesCondition(point: Point, condition: Record<string, unknown>): boolean {
  if ('must' in condition || 'should' in condition || 'must_not' in condition || 'min_should' in condition) return matchesFilter(point, condition);
  if ('has_id' in condition) return (condition.has_id as (string | number)[]).map(String).includes(String(point.id));
  if ('is_empty' in condition) {
    const values = valuesAt(point.payload, (condition.is_empty as { key: string }).key);
    return values.length === 0 || values.every((v) => v === null);
  }
  if ('is_null' in condition) return valuesAt(point.payload, (condition.is_null as { key: string }).key).some((v) => v === null);
  if ('key' in condition) {
    const values = valuesAt(point.payload, condition.key as string).filter((v) => v !== null);
    if (condition.match) {
      const match = condition.match as Record<string, unknown>;
      if ('value' in match) return values.some((v) => v === match.value);
      if ('any' in match) return values.some((v) => (match.any as unknown[]).includes(v));
      if ('except' in match) return values.length > 0 && values.every((v) => !(match.except as unknown[]).includes(v));
      throw new UnsupportedFilter(`match ${JSON.stringify(match)}`);
    }
    if (condition.range) {
      const r = condition.range as { lt?: number | null; gt?: number | null; lte?: number | null; gte?: number | null };
      return values.some(
        (v) =>
          typeof v === 'number' &&
          (r.lt == null || v < r.lt) &&
          (r.gt == null || v > r.gt) &&
          (r.lte == null || v <= r.lte) &&
          (r.gte == null || v >= r.gte),
      );
    }
    throw new UnsupportedFilter(`field condition ${JSON.stringify(condition)}`);
  }
  throw new UnsupportedFilter(`condition ${JSON.stringify(condition)}`);
}

const asList = (v: unknown): Record<string, unknown>[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]) as Record<string, unknown>[];

export function matchesFilter(point: Point, filter: Record<string, unknown> | null | undefined): boolean {
  if (!filter) return true;
  if (filter.min_should) throw new UnsupportedFilter('min_should');
  const must = asList(filter.must);
  const should = asList(filter.should);
  const mustNot = asList(filter.must_not);
  return (
    must.every((c) => matchesCondition(point, c)) &&
    (should.length === 0 || should.some((c) => matchesCondition(point, c))) &&
    !mustNot.some((c) => matchesCondition(point, c))
  );
}
