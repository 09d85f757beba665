/** One StoreRegion: a group of stores in one IANA timezone, their rush hours and serving floor. */
import { ApiObject } from 'cdk8s';
import type { Construct } from 'constructs';
import { storeRegionResource, type StoreRegionSpec } from '../../../operator/src/api/v1alpha1/storeregion.js';
import { check, checkName } from './invariant.js';

export interface CremaStoreRegionProps {
  /** metadata.name. */
  readonly name: string;
  /** The spec as committed; stores are written sorted so the output does not depend on input order. */
  readonly spec: StoreRegionSpec;
}

/** Whether the runtime knows `tz` as an IANA timezone (the operator computes floors with the same Intl data). */
export function isKnownTimezone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

const minutes = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/**
 * A StoreRegion, checked at synth time for what the API server cannot check (a timezone unknown
 * to Intl, a store listed twice, windows ending before they start) so a bad region never reaches Git.
 */
export class CremaStoreRegion extends ApiObject {
  constructor(scope: Construct, id: string, props: CremaStoreRegionProps) {
    const path = `${scope.node.path}/${id}`;
    const { spec } = props;
    checkName(props.name, path);
    check(
      spec.stores.length >= 1 && spec.stores.length <= 2000,
      path,
      'spec.stores',
      'must list 1 to 2000 stores',
    );
    const dup = spec.stores.find((s, i) => spec.stores.indexOf(s) !== i);
    check(dup === undefined, path, 'spec.stores', `lists ${JSON.stringify(dup)} twice`);
    check(
      isKnownTimezone(spec.timezone),
      path,
      'spec.timezone',
      `${JSON.stringify(spec.timezone)} is not an IANA timezone`,
    );
    for (const [field, windows] of [
      ['peakWindows', spec.peakWindows ?? []],
      ['freezeWindows', spec.freezeWindows ?? []],
    ] as const) {
      windows.forEach((w, i) =>
        check(
          minutes(w.start) < minutes(w.end),
          path,
          `spec.${field}[${i}]`,
          `ends (${w.end}) before it starts (${w.start})`,
        ),
      );
    }
    const s = spec.serving;
    if (s?.minReplicas !== undefined && s.maxReplicas !== undefined)
      check(
        s.minReplicas <= s.maxReplicas,
        path,
        'spec.serving.minReplicas',
        `(${s.minReplicas}) is above spec.serving.maxReplicas (${s.maxReplicas})`,
      );
    super(scope, id, {
      apiVersion: storeRegionResource.apiVersion,
      kind: storeRegionResource.kind,
      metadata: { name: props.name },
      spec: { ...spec, stores: [...spec.stores].sort() },
    });
  }
}
