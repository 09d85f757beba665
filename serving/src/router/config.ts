/**
 * Router configuration: the experiment salt, the stable variant and each variant's weight and
 * upstream. Read from a JSON or YAML file that the router watches, so a ConfigMap update (or an
 * operator editing weights) takes effect without a restart.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { assignVariant } from '../../../contracts/variant-hash.js';

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
  const total = o.variants.reduce((s, v) => s + (typeof v?.weight === 'number' ? v.weight : 0), 0);
  if (Math.abs(total - 100) > 1e-6) errors.push(`variants: weights sum to ${total}, must be 100`);
  if (typeof o.stable !== 'string' || !names.has(o.stable)) errors.push('stable: must name a variant');
  else if (!o.variants.find((v) => v.name === o.stable)?.upstream)
    errors.push('stable: must have an upstream');
  return errors;
}

/** Parses and validates a config file's text (JSON or YAML). */
export function parseRouterConfig(text: string): RouterConfig {
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (err) {
    throw new Error(`router config: ${(err as Error).message}`, { cause: err });
  }
  const errors = validateRouterConfig(parsed);
  if (errors.length > 0) throw new Error(`router config: ${errors.join('; ')}`);
  return parsed as RouterConfig;
}

/** Reads a config file. */
export async function readRouterConfig(path: string): Promise<RouterConfig> {
  return parseRouterConfig(await readFile(path, 'utf8'));
}

/** Where a user's request goes: the assigned variant and the upstream that serves it. */
export interface Route {
  readonly variant: string;
  /** The assigned variant has no upstream, so stable serves it. */
  readonly rerouted: boolean;
  readonly upstream: string;
}

/** The route of `userId` under `config` (users without an id go to stable). */
export function routeFor(config: RouterConfig, userId: string | undefined): Route {
  const stable = config.variants.find((v) => v.name === config.stable)!;
  if (userId === undefined) return { variant: stable.name, rerouted: false, upstream: stable.upstream! };
  const name = assignVariant(userId, config.salt, config.variants);
  const v = config.variants.find((x) => x.name === name)!;
  if (!v.upstream) return { variant: stable.name, rerouted: true, upstream: stable.upstream! };
  return { variant: v.name, rerouted: false, upstream: v.upstream };
}
