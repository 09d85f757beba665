/**
 * The Alertmanager webhook receiver: `POST /alerts` with an Alertmanager v4 payload and
 * `Authorization: Bearer <token>`. Every alert, firing or resolved, that names a Crema model
 * becomes one `onAlert` call; alerts without the Crema labels are acknowledged and skipped.
 *
 * Answers: 200 `{ accepted, ignored }` once every `onAlert` finished; 400 malformed body (the
 * message names the problem); 401 missing or wrong token; 404 other paths; 405 other methods on
 * /alerts; 413 body over 1 MiB; 500 when `onAlert` throws, so Alertmanager retries the notification.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A drift alert (firing or resolved), decoded from its labels and annotations. */
export interface DriftAlert {
  /** Resolved: Prometheus no longer sees the condition. */
  status: 'firing' | 'resolved';
  alertname: string;
  /** Label `namespace`. */
  namespace: string;
  /** Label `crema_model` (the RecommenderModel name), else `model`. */
  model: string;
  /** Label `revision`: the model sha256 the alert is about. */
  revision: string;
  /** Label `variant`: stable or canary. */
  variant?: string;
  /** Label `feature`: the drifted feature, when the rule keeps it. */
  feature?: string;
  /** Annotation `value` (the rule's `{{ $value }}`), as a number. */
  value?: number;
  /** RFC 3339, when Prometheus first saw the condition firing. */
  startsAt: string;
  /** RFC 3339, when a resolved alert stopped firing (Alertmanager zeroes it while firing). */
  endsAt?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface AlertWebhookOptions {
  /** 0 picks a free port. */
  readonly port: number;
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** The token Alertmanager sends as `Authorization: Bearer <token>`. */
  readonly bearerToken: string;
  /**
   * Called once per Crema alert, in order; a rejection answers 500 so Alertmanager retries.
   * Resolving to 'ignored' counts the alert as ignored (acknowledged, nothing to do).
   */
  readonly onAlert: (alert: DriftAlert) => AlertOutcome | Promise<AlertOutcome>;
  /** Largest accepted body. Default 1 MiB. */
  readonly maxBodyBytes?: number;
}

/** What `onAlert` did: nothing to report (handled), or 'ignored'. */
export type AlertOutcome = void | 'ignored';

export interface AlertWebhook {
  readonly port: number;
  close(): Promise<void>;
}

/** A payload that is not a valid Alertmanager v4 webhook body; the message says which field. */
export class AlertPayloadError extends Error {
  override readonly name = 'AlertPayloadError';
}

const isRecordOfStrings = (v: unknown): v is Record<string, string> =>
  typeof v === 'object' &&
  v !== null &&
  !Array.isArray(v) &&
  Object.values(v).every((x) => typeof x === 'string');

/** Decodes an Alertmanager v4 payload into its Crema alerts and a count of skipped ones (pure). */
export function parseAlertPayload(body: unknown): { alerts: DriftAlert[]; ignored: number } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new AlertPayloadError('body must be a JSON object');
  }
  const b = body as Record<string, unknown>;
  if (b['version'] !== '4')
    throw new AlertPayloadError(`version must be "4", got ${JSON.stringify(b['version'])}`);
  if (!Array.isArray(b['alerts'])) throw new AlertPayloadError('alerts must be an array');
  const alerts: DriftAlert[] = [];
  let ignored = 0;
  b['alerts'].forEach((raw: unknown, i) => {
    if (typeof raw !== 'object' || raw === null)
      throw new AlertPayloadError(`alerts[${i}] must be an object`);
    const a = raw as Record<string, unknown>;
    if (a['status'] !== 'firing' && a['status'] !== 'resolved') {
      throw new AlertPayloadError(`alerts[${i}].status must be "firing" or "resolved"`);
    }
    if (!isRecordOfStrings(a['labels']))
      throw new AlertPayloadError(`alerts[${i}].labels must map names to strings`);
    const annotations = a['annotations'] ?? {};
    if (!isRecordOfStrings(annotations)) {
      throw new AlertPayloadError(`alerts[${i}].annotations must map names to strings`);
    }
    if (typeof a['startsAt'] !== 'string' || Number.isNaN(Date.parse(a['startsAt']))) {
      throw new AlertPayloadError(`alerts[${i}].startsAt must be an RFC 3339 time`);
    }
    const labels = a['labels'];
    const model = labels['crema_model'] ?? labels['model'];
    const { namespace, revision } = labels;
    if (!model || !namespace || !revision) {
      ignored++;
      return;
    }
    const value = annotations['value'] === undefined ? undefined : Number(annotations['value']);
    const endsAt = a['endsAt'];
    alerts.push({
      status: a['status'],
      alertname: labels['alertname'] ?? '',
      namespace,
      model,
      revision,
      ...(labels['variant'] ? { variant: labels['variant'] } : {}),
      ...(labels['feature'] ? { feature: labels['feature'] } : {}),
      ...(value !== undefined && Number.isFinite(value) ? { value } : {}),
      startsAt: a['startsAt'],
      ...(a['status'] === 'resolved' && typeof endsAt === 'string' && !Number.isNaN(Date.parse(endsAt))
        ? { endsAt }
        : {}),
      labels: { ...labels },
      annotations: { ...annotations },
    });
  });
  return { alerts, ignored };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time check of an Authorization header against the expected bearer token. */
export function bearerTokenMatches(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/i.exec(header ?? '');
  // Comparing fixed-length digests keeps the time independent of where, or whether, lengths differ.
  const ok = timingSafeEqual(digest(m?.[1] ?? ''), digest(token));
  return ok && m !== null;
}

function send(
  res: ServerResponse,
  status: number,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        reject(new BodyTooLarge());
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** Starts the receiver; resolves once it listens. */
export async function startAlertWebhook(opts: AlertWebhookOptions): Promise<AlertWebhook> {
  if (!opts.bearerToken) throw new Error('startAlertWebhook: bearerToken must not be empty');
  const maxBody = opts.maxBodyBytes ?? 1024 * 1024;
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/alerts')
      return send(res, 404, { code: 'NOT_FOUND', message: 'only POST /alerts is served' });
    if (req.method !== 'POST') {
      return send(res, 405, { code: 'METHOD_NOT_ALLOWED', message: 'use POST' }, { allow: 'POST' });
    }
    if (!bearerTokenMatches(req.headers.authorization, opts.bearerToken)) {
      req.resume();
      return send(
        res,
        401,
        { code: 'UNAUTHORIZED', message: 'missing or wrong bearer token' },
        { 'www-authenticate': 'Bearer realm="crema-alerts"' },
      );
    }
    let parsed: { alerts: DriftAlert[]; ignored: number };
    try {
      const text = await readBody(req, maxBody);
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (err) {
        throw new AlertPayloadError(`body is not JSON: ${(err as Error).message}`);
      }
      parsed = parseAlertPayload(json);
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        return send(res, 413, { code: 'TOO_LARGE', message: `body exceeds ${maxBody} bytes` });
      }
      if (err instanceof AlertPayloadError)
        return send(res, 400, { code: 'BAD_PAYLOAD', message: err.message });
      throw err;
    }
    let ignored = parsed.ignored;
    try {
      for (const alert of parsed.alerts) if ((await opts.onAlert(alert)) === 'ignored') ignored++;
    } catch (err) {
      return send(res, 500, { code: 'HANDLER_FAILED', message: (err as Error).message });
    }
    return send(res, 200, { accepted: parsed.alerts.length + parsed.ignored - ignored, ignored });
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, { code: 'INTERNAL', message: (err as Error).message });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      }),
  };
}
