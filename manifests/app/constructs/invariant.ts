/** The error a construct throws when its props break an invariant; the message quotes the prop. */
export class ManifestPropsError extends Error {
  constructor(
    /** The construct's path, e.g. regions/northeast. */
    readonly path: string,
    /** The prop, e.g. spec.serving.minReplicas. */
    readonly prop: string,
    message: string,
  ) {
    super(`${path}: ${prop} ${message}`);
    this.name = 'ManifestPropsError';
  }
}

/** Lower-case RFC 1123 subdomain: what Kubernetes accepts as metadata.name of these kinds. */
export const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** Throws ManifestPropsError(path, prop, message) when `ok` is false. */
export function check(ok: boolean, path: string, prop: string, message: string): asserts ok {
  if (!ok) throw new ManifestPropsError(path, prop, message);
}

/** Checks a metadata.name. */
export function checkName(name: string, path: string): void {
  check(
    name.length <= 253 && DNS_SUBDOMAIN.test(name),
    path,
    'metadata.name',
    `${JSON.stringify(name)} is not a lower-case DNS name`,
  );
}
