/**
 * The JSON text of a recommendation answer, assembled from fragments cached per catalog item.
 * Of a ~1.5 KB answer only the scores vary per request; item ids, names, categories, prices
 * and add-on entries are the same for every request of a feature version. Generic
 * serialization (fast-json-stringify or JSON.stringify, both ~6 µs) rebuilt all of it per
 * request and was a quarter of the bytes the process allocated at load; this is ~1.5 µs.
 * Every string goes through JSON.stringify once, when its fragment is cached, so escaping is
 * the standard one. The shape is RecommendationResponse (routes/recommendations.ts); a unit
 * test checks the text parses to the same value and validates against that schema.
 */
import type { CatalogItem } from '../../../contracts/features.js';

/** One recommended drink: its catalog index, score, reason and add-on catalog indices. */
export interface RankedDrink {
  readonly index: number;
  readonly score: number;
  readonly reason: string;
  readonly addons: readonly number[];
}

/** The fields of an answer that are not per item. */
export interface AnswerMeta {
  readonly modelRevision: string | null;
  readonly variant: string;
  readonly fallback: boolean;
  readonly fallbackReason?: string;
  readonly personalization: 'user' | 'segment' | 'popularity';
  readonly featureVersion: string;
}

interface Fragments {
  /** `{"itemId":…,"name":…,"category":…,"price":…,"score":` per catalog index. */
  readonly head: string[];
  /** `{"itemId":…,"name":…,"price":…}` per catalog index. */
  readonly addon: string[];
}

const cache = new WeakMap<readonly CatalogItem[], Fragments>();
const quoted = new Map<string, string>();

function fragmentsOf(catalog: readonly CatalogItem[]): Fragments {
  let f = cache.get(catalog);
  if (!f) {
    const j = JSON.stringify;
    f = {
      head: catalog.map(
        (it) =>
          `{"itemId":${j(it.id)},"name":${j(it.name)},"category":${j(it.category)},"price":${num(it.price)},"score":`,
      ),
      addon: catalog.map((it) => `{"itemId":${j(it.id)},"name":${j(it.name)},"price":${num(it.price)}}`),
    };
    cache.set(catalog, f);
  }
  return f;
}

/** JSON text of a string, memoized for the few distinct strings (reasons, variants, versions). */
function quote(s: string): string {
  let q = quoted.get(s);
  if (q === undefined) {
    q = JSON.stringify(s);
    if (quoted.size < 1000) quoted.set(s, q);
  }
  return q;
}

/** A JSON number; non-finite values (never produced by a sane model) become 0, as JSON has none. */
function num(x: number): string {
  return Number.isFinite(x) ? String(x) : '0';
}

/** The answer as JSON text. */
export function recommendationJson(
  catalog: readonly CatalogItem[],
  drinks: readonly RankedDrink[],
  meta: AnswerMeta,
): string {
  const f = fragmentsOf(catalog);
  let out = '{"items":[';
  for (let k = 0; k < drinks.length; k++) {
    const d = drinks[k]!;
    if (k > 0) out += ',';
    out += f.head[d.index]! + num(d.score) + ',"reason":' + quote(d.reason) + ',"addons":[';
    for (let a = 0; a < d.addons.length; a++) {
      if (a > 0) out += ',';
      out += f.addon[d.addons[a]!]!;
    }
    out += ']}';
  }
  out +=
    '],"modelRevision":' +
    (meta.modelRevision === null ? 'null' : quote(meta.modelRevision)) +
    ',"variant":' +
    quote(meta.variant) +
    ',"fallback":' +
    (meta.fallback ? 'true' : 'false') +
    (meta.fallbackReason !== undefined ? ',"fallbackReason":' + quote(meta.fallbackReason) : '') +
    ',"personalization":"' +
    meta.personalization +
    '","featureVersion":' +
    quote(meta.featureVersion) +
    '}';
  return out;
}
