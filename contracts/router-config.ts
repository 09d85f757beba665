/**
 * The router's config (`router.json` in ConfigMap `NAME-router`, key ROUTER_CONFIG_KEY): the
 * operator writes it (operator/src/traffic/router.ts), serving's router mode validates and
 * applies it (serving/src/router/config.ts). The shape and its rules are defined here once.
 */
import { EXPERIMENT_RUN } from './experiments.js';

/** One variant: its traffic share in percent and where it is served. */
export interface RouterVariant {
  readonly name: string;
  readonly weight: number;
  /** Base URL, e.g. http://serving-canary:8080; absent = unknown upstream (routes to stable). */
  readonly upstream?: string;
}

export interface RouterConfig {
  /** Experiment salt: changing it reshuffles every user. */
  readonly salt: string;
  /** Name of the variant that takes traffic when another variant cannot. */
  readonly stable: string;
  readonly variants: readonly RouterVariant[];
  /**
   * Set by the Experiment controller: the router then tells each upstream which experiment and
   * variant a request belongs to (contracts/experiments.ts EXPERIMENT_HEADERS), so serving counts
   * it. Absent on a canary's router. `run` is the Experiment object's run
   * (contracts/experiments.ts experimentRunOf): each object counts on its own.
   */
  readonly experiment?: { readonly id: string; readonly run: string; readonly ttlSeconds: number };
}

/** Problems with a config (empty when valid). */
export function validateRouterConfig(c: unknown): string[] {
  const o = c as Partial<RouterConfig> | null;
  if (!o || typeof o !== 'object') return ['config: not an object'];
  const errors: string[] = [];
  if (typeof o.salt !== 'string' || o.salt === '') errors.push('salt: required');
  if (!Array.isArray(o.variants) || o.variants.length === 0) return [...errors, 'variants: at least one'];
  const names = new Set<string>();
  o.variants.forEach((v: Partial<RouterVariant>, i) => {
    if (typeof v?.name !== 'string' || !/^[A-Za-z0-9_.-]{1,40}$/.test(v.name))
      errors.push(`variants[${i}].name: required`);
    else if (names.has(v.name)) errors.push(`variants[${i}].name: duplicate ${v.name}`);
    else names.add(v.name);
    if (typeof v?.weight !== 'number' || !(v.weight >= 0))
      errors.push(`variants[${i}].weight: a number >= 0`);
    if (v?.upstream !== undefined) {
      try {
        const u = new URL(v.upstream);
        if (u.protocol !== 'http:') errors.push(`variants[${i}].upstream: only http:// is supported`);
      } catch {
        errors.push(`variants[${i}].upstream: not a URL`);
      }
    }
  });
  if (o.experiment !== undefined) {
    const e = o.experiment as Partial<NonNullable<RouterConfig['experiment']>> | null;
    if (typeof e?.id !== 'string' || !/^[a-z0-9-]{1,63}\/[a-z0-9.-]{1,253}$/.test(e.id))
      errors.push('experiment.id: namespace/name required');
    if (typeof e?.run !== 'string' || !EXPERIMENT_RUN.test(e.run))
      errors.push('experiment.run: 8 to 32 lowercase hex digits required (from the Experiment uid)');
    if (typeof e?.ttlSeconds !== 'number' || !Number.isInteger(e.ttlSeconds) || e.ttlSeconds < 1)
      errors.push('experiment.ttlSeconds: a whole number >= 1');
  }
  const total = o.variants.reduce((s, v) => s + (typeof v?.weight === 'number' ? v.weight : 0), 0);
  if (Math.abs(total - 100) > 1e-6) errors.push(`variants: weights sum to ${total}, must be 100`);
  if (typeof o.stable !== 'string' || !names.has(o.stable)) errors.push('stable: must name a variant');
  else if (!o.variants.find((v) => v.name === o.stable)?.upstream)
    errors.push('stable: must have an upstream');
  return errors;
}
