/**
 * Writes to the API server: server-side apply of owned children with a named field manager,
 * and status through the status subresource only when it changed. Both skip the request when
 * the cluster already matches, so a no-op resync sends zero writes.
 */
import { isDeepStrictEqual } from 'node:util';
import { sameQuantity } from '../../../contracts/quantity.js';
import { apiVersionOf, resourcePath, type KubeClient, type KubeObject, type ResourceDef } from './kube.js';

/** The field manager every operator write uses. */
export const FIELD_MANAGER = 'crema-operator';

/**
 * True when every field set in `desired` has the same value in `observed` (extra fields in
 * `observed`, such as server defaults or other managers' fields, are ignored). Lists must
 * match element by element; a zero value matches an absent field.
 */
export function isSubset(desired: unknown, observed: unknown, key = '', parentKey = ''): boolean {
  // The API server drops zero values of non-pointer fields (`minReadySeconds: 0`,
  // `hostNetwork: false`): absent there means the same as zero here.
  if (observed === undefined && (desired === 0 || desired === false || desired === '')) return true;
  // It also rewrites quantities in canonical form ("1.5Gi" → "1536Mi", "1000m" → "1").
  if (typeof desired === 'string' && typeof observed === 'string' && isQuantityField(key, parentKey))
    return sameQuantity(desired, observed);
  if (desired === null || typeof desired !== 'object') return isDeepStrictEqual(desired, observed);
  if (Array.isArray(desired)) {
    if (!Array.isArray(observed) || observed.length !== desired.length) return false;
    return desired.every((d, i) => isSubset(d, observed[i], key, parentKey));
  }
  if (observed === null || typeof observed !== 'object' || Array.isArray(observed)) return false;
  const o = observed as Record<string, unknown>;
  return Object.entries(desired as Record<string, unknown>).every(
    ([k, v]) => v === undefined || isSubset(v, o[k], k, key),
  );
}

/** Fields holding a resource.Quantity: container requests/limits entries and volume size limits. */
function isQuantityField(key: string, parentKey: string): boolean {
  return key === 'sizeLimit' || parentKey === 'requests' || parentKey === 'limits';
}

/**
 * Server-side applies `desired` (force: the operator owns these fields) unless `observed`
 * already contains it. Returns the object the server answered with, or `observed` when no
 * request was needed.
 */
export async function applyOwned<T extends KubeObject>(
  client: KubeClient,
  resource: ResourceDef,
  desired: T,
  observed: T | undefined,
): Promise<{ object: T; wrote: boolean }> {
  if (observed && isSubset({ metadata: comparableMeta(desired), ...stripMeta(desired) }, observed)) {
    return { object: observed, wrote: false };
  }
  const ns = desired.metadata?.namespace;
  const name = desired.metadata?.name;
  if (!name) throw new Error(`applyOwned: ${resource.kind} without metadata.name`);
  const object = await client.request<T>('PATCH', resourcePath(resource, ns, name), {
    body: { ...desired, apiVersion: apiVersionOf(resource), kind: resource.kind },
    contentType: 'application/apply-patch+yaml',
    query: { fieldManager: FIELD_MANAGER, force: true },
  });
  return { object, wrote: true };
}

function stripMeta<T extends KubeObject>(obj: T): Omit<T, 'metadata'> {
  const { metadata: _m, ...rest } = obj;
  return rest;
}

function comparableMeta(obj: KubeObject): Record<string, unknown> {
  const m = obj.metadata ?? {};
  return {
    labels: m.labels,
    annotations: m.annotations,
    ownerReferences: m.ownerReferences,
  };
}

/**
 * Replaces `.status` through the status subresource when it differs from `current`. Uses a
 * JSON merge patch guarded by the resourceVersion we computed from, so a concurrent change
 * makes the write fail (409) and the reconcile retry with fresh state. Returns the object as
 * written (its new resourceVersion), or undefined when nothing differed.
 */
export async function patchStatus<T extends KubeObject & { status?: unknown }>(
  client: KubeClient,
  resource: ResourceDef,
  obj: T,
  status: unknown,
): Promise<T | undefined> {
  if (isDeepStrictEqual(obj.status ?? {}, status)) return undefined;
  return await client.request<T>(
    'PATCH',
    resourcePath(resource, obj.metadata?.namespace, obj.metadata?.name, 'status'),
    {
      body: {
        metadata: { resourceVersion: obj.metadata?.resourceVersion },
        status: nullMissing(obj.status, status),
      },
      contentType: 'application/merge-patch+json',
    },
  );
}

/** A merge patch that also deletes keys present before and absent now (merge patch needs explicit nulls). */
function nullMissing(before: unknown, after: unknown): unknown {
  if (
    before === null ||
    typeof before !== 'object' ||
    Array.isArray(before) ||
    after === null ||
    typeof after !== 'object' ||
    Array.isArray(after)
  ) {
    return after;
  }
  const out: Record<string, unknown> = {};
  const b = before as Record<string, unknown>;
  const a = after as Record<string, unknown>;
  for (const k of Object.keys(b)) if (!(k in a)) out[k] = null;
  for (const [k, v] of Object.entries(a)) out[k] = nullMissing(b[k], v);
  return out;
}

/**
 * Removes command annotations (`keys`) from `obj` once their effect is recorded in status, with
 * `obj`'s resourceVersion as precondition: a command a user adds meanwhile changes it, the patch
 * then fails with 409, and the next reconcile sees both. Returns `obj` with the new
 * resourceVersion.
 */
export async function consumeAnnotations<T extends KubeObject>(
  client: KubeClient,
  resource: ResourceDef,
  obj: T,
  keys: readonly string[],
): Promise<T> {
  const patched = await client.request<T>(
    'PATCH',
    resourcePath(resource, obj.metadata!.namespace!, obj.metadata!.name!),
    {
      contentType: 'application/merge-patch+json',
      body: {
        metadata: {
          resourceVersion: obj.metadata?.resourceVersion,
          annotations: Object.fromEntries(keys.map((k) => [k, null])),
        },
      },
    },
  );
  return { ...obj, metadata: { ...obj.metadata, resourceVersion: patched.metadata?.resourceVersion } };
}
