/**
 * Kubernetes resource quantities ("250m", "1.5Gi", "500M", "1e3"): one grammar for the CRDs'
 * OpenAPI patterns, the operator's renderer and its comparison with what the API server stores
 * (the server rewrites quantities into canonical form: "1.5Gi" comes back as "1536Mi", "1000m" as
 * "1", so two spellings of one amount must compare equal or every resync writes again).
 */

/**
 * A non-negative quantity, as the API server parses it: a decimal number, then a binary suffix
 * (Ki…Ei), a decimal suffix (n u m k M G T P E) or an integer exponent (e3, E-2).
 */
export const QUANTITY_PATTERN =
  '^\\+?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]{1,2}))?$';

const QUANTITY = new RegExp(QUANTITY_PATTERN);

const BINARY: Record<string, number> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};
const DECIMAL: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
};

/** Whether `q` is a quantity this grammar accepts. */
export function isQuantity(q: string): boolean {
  return QUANTITY.test(q);
}

/**
 * The amount `q` stands for (bytes for memory, cores for CPU). Throws, naming `field` and the
 * value, when it is not a quantity.
 */
export function parseQuantity(q: string, field = 'quantity'): number {
  const m = QUANTITY.exec(q);
  if (!m) {
    throw new RangeError(
      `${field}: ${JSON.stringify(q)} is not a Kubernetes quantity (e.g. 250m, 1, 512Mi, 1.5Gi, 500M)`,
    );
  }
  const number = Number(m[1]);
  const suffix = m[5] ?? '';
  if (suffix in BINARY) return number * BINARY[suffix]!;
  if (suffix in DECIMAL) return number * DECIMAL[suffix]!;
  return number * 10 ** Number(suffix.slice(1));
}

/** Whether two quantity strings stand for the same amount (either one not a quantity: string equality). */
export function sameQuantity(a: string, b: string): boolean {
  if (a === b) return true;
  if (!isQuantity(a) || !isQuantity(b)) return false;
  const x = parseQuantity(a);
  const y = parseQuantity(b);
  return Math.abs(x - y) <= 1e-12 * Math.max(Math.abs(x), Math.abs(y));
}
