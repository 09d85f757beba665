import { afterEach, describe, expect, it } from 'vitest';
import {
  bearerTokenMatches,
  parseAlertPayload,
  startAlertWebhook,
  type AlertWebhook,
  type DriftAlert,
} from './alertmanager.js';

const TOKEN = 's3cret-token';

function alert(
  status: 'firing' | 'resolved',
  labels: Record<string, string> = {},
  annotations: Record<string, string> = {},
) {
  return {
    status,
    labels: {
      alertname: 'CremaFeatureDrift',
      namespace: 'shop',
      crema_model: 'drinks',
      model: 'drinks',
      revision: 'abc',
      variant: 'canary',
      feature: 'hour',
      ...labels,
    },
    annotations: { summary: 'drifted', value: '0.73', ...annotations },
    startsAt: '2026-11-24T12:00:00.000Z',
    endsAt: '0001-01-01T00:00:00Z',
    generatorURL: 'http://prometheus/graph',
    fingerprint: 'f00',
  };
}

const payload = (alerts: unknown[]) => ({
  version: '4',
  groupKey: '{}:{alertname="CremaFeatureDrift"}',
  truncatedAlerts: 0,
  status: 'firing',
  receiver: 'crema',
  groupLabels: {},
  commonLabels: {},
  commonAnnotations: {},
  externalURL: 'http://alertmanager',
  alerts,
});

describe('parseAlertPayload', () => {
  it('decodes a firing Crema alert', () => {
    const { alerts, ignored } = parseAlertPayload(payload([alert('firing')]));
    expect(ignored).toBe(0);
    expect(alerts).toEqual([
      {
        status: 'firing',
        alertname: 'CremaFeatureDrift',
        namespace: 'shop',
        model: 'drinks',
        revision: 'abc',
        variant: 'canary',
        feature: 'hour',
        value: 0.73,
        startsAt: '2026-11-24T12:00:00.000Z',
        labels: expect.objectContaining({ crema_model: 'drinks' }) as Record<string, string>,
        annotations: { summary: 'drifted', value: '0.73' },
      },
    ]);
  });

  it('decodes resolved alerts too (they clear the recorded state), with their endsAt', () => {
    const resolved = { ...alert('resolved'), endsAt: '2026-11-24T12:05:00.000Z' };
    const { alerts, ignored } = parseAlertPayload(payload([resolved]));
    expect(ignored).toBe(0);
    expect(alerts).toEqual([
      expect.objectContaining({ status: 'resolved', revision: 'abc', endsAt: '2026-11-24T12:05:00.000Z' }),
    ]);
    // Firing alerts carry Alertmanager's zero endsAt: not kept.
    expect(parseAlertPayload(payload([alert('firing')])).alerts[0]).not.toHaveProperty('endsAt');
  });

  it('skips alerts without Crema labels', () => {
    const foreign = alert('firing');
    delete (foreign.labels as Partial<typeof foreign.labels>).namespace;
    const r = parseAlertPayload(payload([alert('resolved'), foreign, alert('firing', { crema_model: 'x' })]));
    expect(r.ignored).toBe(1);
    expect(r.alerts.map((a) => `${a.status} ${a.model}`)).toEqual(['resolved drinks', 'firing x']);
  });

  it.each([
    ['not an object', [], 'body must be a JSON object'],
    ['wrong version', { ...payload([]), version: '3' }, 'version must be "4", got "3"'],
    ['alerts missing', { version: '4' }, 'alerts must be an array'],
    [
      'bad status',
      payload([{ ...alert('firing'), status: 'pending' }]),
      'alerts[0].status must be "firing" or "resolved"',
    ],
    [
      'labels not strings',
      payload([{ ...alert('firing'), labels: { a: 1 } }]),
      'alerts[0].labels must map names to strings',
    ],
    [
      'bad startsAt',
      payload([alert('firing'), { ...alert('firing'), startsAt: 'soon' }]),
      'alerts[1].startsAt must be an RFC 3339 time',
    ],
  ])('rejects %s', (_name, body, message) => {
    expect(() => parseAlertPayload(body)).toThrow(message);
  });
});

describe('bearerTokenMatches', () => {
  it.each([
    [`Bearer ${TOKEN}`, true],
    [`bearer ${TOKEN}`, true],
    [`Bearer ${TOKEN}x`, false],
    ['Bearer ', false],
    [TOKEN, false],
    [undefined, false],
  ])('%s → %s', (header, ok) => expect(bearerTokenMatches(header, TOKEN)).toBe(ok));
});

describe('startAlertWebhook', () => {
  let hook: AlertWebhook | undefined;
  afterEach(async () => {
    await hook?.close();
    hook = undefined;
  });

  async function post(body: string, auth?: string, path = '/alerts') {
    const res = await fetch(`http://127.0.0.1:${hook!.port}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
      body,
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  it('calls onAlert for each Crema alert, in order, and answers with the counts', async () => {
    const got: DriftAlert[] = [];
    hook = await startAlertWebhook({ port: 0, bearerToken: TOKEN, onAlert: (a) => void got.push(a) });
    const foreign = alert('firing', { alertname: 'Other' });
    delete (foreign.labels as Partial<typeof foreign.labels>).revision;
    const res = await post(
      JSON.stringify(payload([alert('firing'), foreign, alert('resolved', { feature: 'temp' })])),
      `Bearer ${TOKEN}`,
    );
    expect(res).toEqual({ status: 200, body: { accepted: 2, ignored: 1 } });
    expect(got.map((a) => `${a.status} ${a.feature}`)).toEqual(['firing hour', 'resolved temp']);
  });

  it('counts alerts onAlert ignores as ignored', async () => {
    hook = await startAlertWebhook({
      port: 0,
      bearerToken: TOKEN,
      onAlert: (a) => (a.model === 'gone' ? 'ignored' : undefined),
    });
    const res = await post(
      JSON.stringify(payload([alert('firing'), alert('firing', { crema_model: 'gone' })])),
      `Bearer ${TOKEN}`,
    );
    expect(res).toEqual({ status: 200, body: { accepted: 1, ignored: 1 } });
  });

  it('answers only after onAlert has finished (the state is written before Alertmanager hears 200)', async () => {
    let written = false;
    hook = await startAlertWebhook({
      port: 0,
      bearerToken: TOKEN,
      onAlert: async () => {
        await new Promise((r) => setTimeout(r, 50));
        written = true;
      },
    });
    const res = await post(JSON.stringify(payload([alert('firing')])), `Bearer ${TOKEN}`);
    expect(res.status).toBe(200);
    expect(written).toBe(true);
  });

  it('refuses a missing or wrong token with 401 and never calls onAlert', async () => {
    const got: DriftAlert[] = [];
    hook = await startAlertWebhook({ port: 0, bearerToken: TOKEN, onAlert: (a) => void got.push(a) });
    const body = JSON.stringify(payload([alert('firing')]));
    expect((await post(body)).status).toBe(401);
    expect((await post(body, 'Bearer nope')).status).toBe(401);
    expect((await post(body, `Basic ${TOKEN}`)).status).toBe(401);
    expect(got).toEqual([]);
  });

  it('answers 400 naming the problem for malformed bodies', async () => {
    hook = await startAlertWebhook({ port: 0, bearerToken: TOKEN, onAlert: () => {} });
    expect(await post('{not json', `Bearer ${TOKEN}`)).toMatchObject({
      status: 400,
      body: { code: 'BAD_PAYLOAD', message: expect.stringContaining('body is not JSON') as string },
    });
    expect(await post(JSON.stringify({ version: '4', alerts: {} }), `Bearer ${TOKEN}`)).toEqual({
      status: 400,
      body: { code: 'BAD_PAYLOAD', message: 'alerts must be an array' },
    });
  });

  it('answers 500 when onAlert fails, so Alertmanager retries', async () => {
    hook = await startAlertWebhook({
      port: 0,
      bearerToken: TOKEN,
      onAlert: async () => {
        throw new Error('status patch refused');
      },
    });
    expect(await post(JSON.stringify(payload([alert('firing')])), `Bearer ${TOKEN}`)).toEqual({
      status: 500,
      body: { code: 'HANDLER_FAILED', message: 'status patch refused' },
    });
  });

  it('serves only POST /alerts and caps the body size', async () => {
    hook = await startAlertWebhook({ port: 0, bearerToken: TOKEN, onAlert: () => {}, maxBodyBytes: 100 });
    expect((await post('{}', `Bearer ${TOKEN}`, '/other')).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${hook.port}/alerts`)).status).toBe(405);
    expect((await post(JSON.stringify(payload([alert('firing')])), `Bearer ${TOKEN}`)).status).toBe(413);
  });
});
