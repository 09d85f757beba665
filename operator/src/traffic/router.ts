/**
 * Traffic splitting between a model's stable and canary revisions sits behind one interface;
 * each mechanism is one implementation. The first writes the config the serving tier's router
 * mode reads (a ConfigMap with router.json: salt, stable variant, variants with weights and
 * upstreams — the shape in contracts/router-config.ts, which serving validates).
 */
import type { RouterConfig } from '../../../contracts/router-config.js';
import { ROUTER_CONFIG_KEY } from '../../../contracts/serving-env.js';
import type { KubeObject } from '../runtime/kube.js';

/** Where each track is served inside the cluster. */
export interface TrafficTargets {
  readonly namespace: string;
  readonly model: string;
  readonly stableUpstream: string;
  readonly canaryUpstream?: string;
}

/** One way of splitting traffic. */
export interface TrafficRouter {
  /** The objects that route `canaryWeight` percent to the canary (0 = everything to stable). */
  build(targets: TrafficTargets, canaryWeight: number): KubeObject[];
  /** The canary weight the observed objects actually route, or undefined when not set up. */
  observedWeight(observed: KubeObject | undefined): number | undefined;
  /** Names of the objects `build` produces (so the caller can find them in caches). */
  objectNames(model: string): string[];
}

/** Builds the router config for a split. The salt is per model, so users keep their variant across weight changes. */
export function buildRouterConfig(t: TrafficTargets, canaryWeight: number): RouterConfig {
  if (!(canaryWeight >= 0 && canaryWeight <= 100))
    throw new RangeError(`canary weight ${canaryWeight} is not within 0..100`);
  return {
    salt: `${t.namespace}/${t.model}`,
    stable: 'stable',
    variants: [
      { name: 'stable', weight: 100 - canaryWeight, upstream: t.stableUpstream },
      ...(t.canaryUpstream ? [{ name: 'canary', weight: canaryWeight, upstream: t.canaryUpstream }] : []),
    ],
  };
}

/** Writes router.json into ConfigMap `<model>-router`, which router pods mount and watch. */
export class ConfigMapTrafficRouter implements TrafficRouter {
  objectNames(model: string): string[] {
    return [`${model}-router`];
  }

  build(t: TrafficTargets, canaryWeight: number): KubeObject[] {
    const doc = buildRouterConfig(t, t.canaryUpstream ? canaryWeight : 0);
    return [
      {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: `${t.model}-router`, namespace: t.namespace },
        data: { [ROUTER_CONFIG_KEY]: JSON.stringify(doc) },
      } as KubeObject,
    ];
  }

  observedWeight(observed: KubeObject | undefined): number | undefined {
    const text = (observed as { data?: Record<string, string> } | undefined)?.data?.[ROUTER_CONFIG_KEY];
    if (!text) return undefined;
    try {
      const doc = JSON.parse(text) as RouterConfig;
      return doc.variants.find((v) => v.name === 'canary')?.weight ?? 0;
    } catch {
      return undefined;
    }
  }
}
