/**
 * The sample catalog generator: realistic outdoor-shop products as change events, deterministic
 * (seeded with the same seed on every call), so data/sample-catalog.ndjson can always be rebuilt and
 * benchmarks can generate workloads of any size. Every item is created (version 1); then 10% are
 * re-priced (metadata only), 5% re-described (new text) and 1% deleted, as a live catalog would:
 * about 1.16 events per item, in that order (versions are monotonic per item in line order).
 *
 * Used by scripts/generate-catalog.ts (the CLI) and the benchmarks.
 */

/** The catalog's NDJSON lines (no trailing newlines) for `items` products. Same items, same lines. */
export function generateCatalogLines(items: number): string[] {
  if (!Number.isInteger(items) || items < 0) throw new RangeError(`items must be a non-negative integer, got ${items}`);
  const random = mulberry32(20261123);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T;
  const some = <T>(list: readonly T[], n: number): T[] => [...list].sort(() => random() - 0.5).slice(0, n);

  function makeProduct(n: number): Product {
    const kind = pick(KINDS);
    const noun = pick(kind.nouns);
    const brand = pick(BRANDS);
    const adjective = pick(ADJECTIVES);
    const model = `${pick(['Trail', 'Ridge', 'Storm', 'Ember', 'Glacier', 'Canyon', 'Aurora', 'Talus', 'Vista', 'Scree'])} ${Math.floor(random() * 9) + 1}`;
    const features = some(kind.features, 3);
    const use = pick(kind.uses);
    const [low, high] = kind.price;
    return {
      id: `sku-${String(n).padStart(5, '0')}`,
      title: `${brand} ${model} ${adjective} ${noun}`,
      description: `A ${adjective.toLowerCase()} ${noun} built for ${use}. Features ${features[0]}, ${features[1]} and ${features[2]}.`,
      category: kind.category,
      brand,
      price: Math.round((low + random() * (high - low)) * 100) / 100,
      color: pick(COLORS),
    };
  }

  const products = Array.from({ length: items }, (_, i) => makeProduct(i + 1));
  const versions = new Map(products.map((p) => [p.id, 1]));
  let clock = Date.parse('2026-11-20T08:00:00Z');
  const tick = () => new Date((clock += 1000));
  const lines = products.map((p) => event(p, 1, tick()));

  for (const p of some(products, Math.floor(items * 0.1))) {
    // a price change: metadata only, the text stays the same
    p.price = Math.round(p.price * (0.8 + random() * 0.3) * 100) / 100;
    versions.set(p.id, (versions.get(p.id) ?? 1) + 1);
    lines.push(event(p, versions.get(p.id) as number, tick()));
  }
  for (const p of some(products, Math.floor(items * 0.05))) {
    // a new description: the text changes and is embedded again
    p.description = `${p.description} Now in ${pick(COLORS)} with an improved fit.`;
    versions.set(p.id, (versions.get(p.id) ?? 1) + 1);
    lines.push(event(p, versions.get(p.id) as number, tick()));
  }
  for (const p of some(products, Math.floor(items * 0.01))) {
    versions.set(p.id, (versions.get(p.id) ?? 1) + 1);
    lines.push(event(p, versions.get(p.id) as number, tick(), 'delete'));
  }
  return lines;
}

/** How many events generateCatalogLines(items) yields (without generating them). */
export function catalogEventCount(items: number): number {
  return items + Math.floor(items * 0.1) + Math.floor(items * 0.05) + Math.floor(items * 0.01);
}

/**
 * Exactly `events` change events: the catalog of the fewest items that yields at least that many,
 * cut after its first `events` lines (line order kept, so versions stay monotonic per item; the
 * events cut off are the last re-prices, re-descriptions or deletes).
 */
export function generateCatalogEvents(events: number): { lines: string[]; items: number } {
  if (!Number.isInteger(events) || events < 0) throw new RangeError(`events must be a non-negative integer, got ${events}`);
  let items = Math.floor(events / 1.16);
  while (catalogEventCount(items) < events) items++;
  return { lines: generateCatalogLines(items).slice(0, events), items };
}

function mulberry32(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
interface Kind {
  category: string;
  nouns: string[];
  features: string[];
  uses: string[];
  price: [number, number];
}

const KINDS: Kind[] = [
  { category: 'footwear', nouns: ['trail running shoe', 'hiking boot', 'approach shoe', 'sandal', 'winter boot', 'road running shoe'], features: ['waterproof Gore-Tex membrane', 'Vibram outsole', 'rock plate', 'wide toe box', 'cushioned midsole', 'quick lace system', 'recycled mesh upper', 'aggressive 5 mm lugs'], uses: ['muddy trails', 'long-distance hiking', 'ultramarathons', 'scrambling', 'snowy city streets', 'daily road runs'], price: [59, 249] },
  { category: 'jackets', nouns: ['down jacket', 'rain shell', 'softshell jacket', 'fleece', 'insulated parka', 'windbreaker'], features: ['800-fill responsibly sourced down', 'three-layer waterproof fabric', 'pit zips', 'helmet-compatible hood', 'packs into its own pocket', 'PFC-free water repellent', 'synthetic insulation that stays warm when wet'], uses: ['alpine climbing', 'rainy commutes', 'winter camping', 'ski touring', 'everyday layering'], price: [49, 499] },
  { category: 'backpacks', nouns: ['daypack', 'trekking backpack', 'hydration vest', 'climbing pack', 'travel backpack', 'ultralight pack'], features: ['adjustable torso length', 'ventilated back panel', 'rain cover included', 'hip-belt pockets', 'laptop sleeve', 'ice-axe loops', 'roll-top closure'], uses: ['day hikes', 'multi-day treks', 'trail running races', 'crag days', 'carry-on travel', 'thru-hiking'], price: [35, 329] },
  { category: 'tents', nouns: ['backpacking tent', 'family tent', 'bivy sack', 'tarp shelter', 'four-season tent', 'trekking-pole tent'], features: ['freestanding design', 'two doors and two vestibules', 'color-coded poles', 'ripstop nylon fly', 'mesh inner for ventilation', 'snow skirts', 'single-wall construction'], uses: ['backpacking', 'car camping with kids', 'alpine bivouacs', 'thru-hiking', 'winter expeditions'], price: [89, 899] },
  { category: 'sleeping', nouns: ['sleeping bag', 'sleeping pad', 'camping pillow', 'quilt', 'sleeping bag liner'], features: ['rated to -10 °C', 'R-value of 4.2', 'hydrophobic down', 'self-inflating foam', 'compresses to the size of a water bottle', 'draft collar'], uses: ['cold-weather camping', 'summer festivals', 'ultralight backpacking', 'hut trips'], price: [19, 459] },
  { category: 'lighting', nouns: ['headlamp', 'camping lantern', 'bike light', 'flashlight'], features: ['400 lumens', 'rechargeable USB-C battery', 'red night-vision mode', 'reactive lighting', '60-hour battery life', 'IPX7 waterproof'], uses: ['night trail runs', 'campsite cooking', 'cave exploring', 'alpine starts', 'power outages'], price: [15, 149] },
  { category: 'cooking', nouns: ['camping stove', 'titanium pot', 'water filter', 'insulated bottle', 'cook set', 'coffee press'], features: ['boils a liter in three minutes', 'weighs only 85 grams', 'removes 99.9999% of bacteria', 'keeps drinks cold for 24 hours', 'nests inside itself', 'piezo igniter'], uses: ['backcountry cooking', 'hut-to-hut treks', 'car camping breakfasts', 'international travel'], price: [12, 189] },
  { category: 'climbing', nouns: ['climbing harness', 'dynamic rope', 'belay device', 'chalk bag', 'climbing helmet', 'quickdraw set'], features: ['UIAA certified', 'dry-treated sheath', 'assisted braking', 'adjustable leg loops', 'lightweight foam shell', 'keylock carabiners'], uses: ['sport climbing', 'gym sessions', 'multi-pitch routes', 'ice climbing', 'bouldering'], price: [19, 349] },
];
const BRANDS = ['Northline', 'Cairnworks', 'Alpenglow', 'Ridgeback', 'Tundra & Co', 'Summitcraft', 'Driftwood', 'Peakform', 'Lumen Outdoor', 'Basecamp Supply'];
const ADJECTIVES = ['Lightweight', 'Rugged', 'Compact', 'Breathable', 'Durable', 'Versatile', 'Warm', 'Minimalist', 'Technical', 'Classic'];
const COLORS = ['black', 'forest green', 'slate blue', 'burnt orange', 'sand', 'charcoal', 'red'];

interface Product {
  id: string;
  title: string;
  description: string;
  category: string;
  brand: string;
  price: number;
  color: string;
}

function event(p: Product, version: number, at: Date, op: 'upsert' | 'delete' = 'upsert'): string {
  if (op === 'delete') return JSON.stringify({ id: p.id, op, version, updated_at: at.toISOString() });
  return JSON.stringify({
    id: p.id,
    op,
    version,
    updated_at: at.toISOString(),
    text: `${p.title}\n${p.description}`,
    metadata: { title: p.title, category: p.category, brand: p.brand, price: p.price, color: p.color },
  });
}

