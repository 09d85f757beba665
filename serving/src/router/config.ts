/**
 * Router configuration: the experiment salt, the stable variant and each variant's weight and
 * upstream. Read from a JSON or YAML file that the router watches, so a ConfigMap update (or an
 * operator editing weights) takes effect without a restart.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import {
  validateRouterConfig,
  type RouterConfig,
  type RouterVariant,
} from '../../../contracts/router-config.js';
import { assignVariant } from '../../../contracts/variant-hash.js';

export { validateRouterConfig, type RouterConfig, type RouterVariant };

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
  /** The variant the sticky hash assigned (also when stable serves it instead). */
  readonly variant: string;
  /** The assigned variant has no upstream, so stable serves it (`upstream` is stable's). */
  readonly rerouted: boolean;
  readonly upstream: string;
}

/** The route of `userId` under `config` (users without an id go to stable). */
export function routeFor(config: RouterConfig, userId: string | undefined): Route {
  const stable = config.variants.find((v) => v.name === config.stable)!;
  if (userId === undefined) return { variant: stable.name, rerouted: false, upstream: stable.upstream! };
  const name = assignVariant(userId, config.salt, config.variants);
  const v = config.variants.find((x) => x.name === name)!;
  if (!v.upstream) return { variant: v.name, rerouted: true, upstream: stable.upstream! };
  return { variant: v.name, rerouted: false, upstream: v.upstream };
}
