/**
 * The observability test environment with real parts: Prometheus scrapes a small HTTP server,
 * a rule fires, and Alertmanager delivers it to a webhook with the bearer token. Then the whole
 * drift pipeline: rules rendered by the operator, a PSI going high on a fake serving endpoint, the
 * operator's webhook receiving the firing alert, and the time that took.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RecommenderModel } from '../../operator/src/api/v1alpha1/recommendermodel.js';
import { startFakeServingMetrics } from '../../operator/test/fake-serving-metrics.js';
import { buildDriftRules } from '../../operator/src/analysis/rules.js';
import { startAlertWebhook, type DriftAlert } from '../../operator/src/webhooks/alertmanager.js';
import { TestEnvError } from './binaries.js';
import { startAlertmanager, startPrometheus } from './observability.js';

const TOKEN = 'test-token-4f1c';
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  await Promise.allSettled(cleanups.splice(0).map((c) => c()));
});

/** Resolves with the first value `check` returns, polling every 100 ms, or rejects after `ms`. */
async function eventually<T>(check: () => T | undefined, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('startPrometheus + startAlertmanager', () => {
  it('scrapes a target, fires a rule, and Alertmanager posts it to the webhook with the bearer token', async () => {
    // A tiny exporter whose value the test controls.
    let value = 0;
    const exporter = createServer((_req, res) =>
      res.end(`# TYPE crema_test_value gauge\ncrema_test_value ${value}\n`),
    );
    await new Promise<void>((r) => exporter.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => exporter.close(r)));
    // A raw receiver, so the test sees exactly what Alertmanager sends.
    const received: {
      headers: IncomingHttpHeaders;
      body: { alerts: { labels: Record<string, string> }[] };
    }[] = [];
    const receiver = createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => {
        received.push({ headers: req.headers, body: JSON.parse(text) as (typeof received)[number]['body'] });
        res.end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => receiver.close(r)));

    const am = await startAlertmanager({
      webhookUrl: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/alerts`,
      bearerToken: TOKEN,
    });
    cleanups.push(() => am.stop());
    const prom = await startPrometheus({
      scrapeTargets: [`127.0.0.1:${(exporter.address() as AddressInfo).port}`],
      alertmanagerUrl: am.url,
    });
    cleanups.push(() => prom.stop());

    // A broken rule file is refused with Prometheus's reason; the good one loads.
    await expect(
      prom.writeRules('broken', 'groups: [{name: t, rules: [{alert: X, expr: "sum("}]}]'),
    ).rejects.toThrow(TestEnvError);
    await rm(join(prom.rulesDir, 'broken.yml'));
    await prom.writeRules(
      'test',
      'groups: [{name: t, rules: [{alert: CremaTestHigh, expr: "crema_test_value > 1"}]}]',
    );

    const up = await fetch(`${prom.url}/api/v1/query?query=crema_test_value`).then((r) => r.json());
    expect(up).toMatchObject({ status: 'success', data: { result: [{ value: [expect.any(Number), '0'] }] } });
    await new Promise((r) => setTimeout(r, 2000));
    expect(received).toEqual([]); // nothing fires while the value is low

    value = 5;
    const first = await eventually(() => received[0], 15_000, 'the alert at the receiver');
    expect(first.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(first.body.alerts[0]!.labels).toMatchObject({ alertname: 'CremaTestHigh' });
  });

  it('scrapes targets added after start, with their target labels', async () => {
    const exporter = createServer((_req, res) => res.end('crema_test_value 7\n'));
    await new Promise<void>((r) => exporter.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => exporter.close(r)));
    const prom = await startPrometheus({ scrapeTargets: [] });
    cleanups.push(() => prom.stop());
    const target = `127.0.0.1:${(exporter.address() as AddressInfo).port}`;
    await prom.setScrapeTargets([{ target, labels: { variant: 'canary' } }]);
    const sample = await (async () => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const body = (await fetch(`${prom.url}/api/v1/query?query=crema_test_value`).then((r) =>
          r.json(),
        )) as {
          data: { result: { metric: Record<string, string>; value: [number, string] }[] };
        };
        if (body.data.result[0] || Date.now() > deadline) return body.data.result[0];
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    expect(sample?.metric).toMatchObject({ instance: target, variant: 'canary' });
    expect(sample?.value[1]).toBe('7');
  });

  it('says how to install Prometheus when the binary is missing', async () => {
    await expect(startPrometheus({ scrapeTargets: [], binary: '/nonexistent/prometheus' })).rejects.toThrow(
      /apt-get install -y prometheus prometheus-alertmanager/,
    );
    await expect(
      startAlertmanager({ webhookUrl: 'http://127.0.0.1:1', bearerToken: 't', binary: '/nonexistent/am' }),
    ).rejects.toThrow(TestEnvError);
  });
});

describe('drift pipeline: rendered rules → Prometheus → Alertmanager → startAlertWebhook', () => {
  it('delivers a canary drift alert to onAlert, authenticated, and measures how long it took', async () => {
    const STABLE = 's'.repeat(64);
    const CANARY = 'c'.repeat(64);
    const model = {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name: 'drinks', namespace: 'shop' },
      spec: {
        model: { uri: 'file:///m.onnx', sha256: CANARY, task: 'drink-ranking' },
        // A 5 s window gives `for: 0s`: the pipeline is measured without a debounce.
        drift: { psiThreshold: 0.2, window: '5s', action: 'Rollback' },
      },
      status: { stable: { modelSha: STABLE }, canary: { modelSha: CANARY, weight: 25, step: 1 } },
    } as RecommenderModel;

    const id = { model: 'drinks', namespace: 'shop' };
    const stable = await startFakeServingMetrics({ ...id, variant: 'stable', revision: STABLE });
    const canary = await startFakeServingMetrics({ ...id, variant: 'canary', revision: CANARY });
    cleanups.push(
      () => stable.close(),
      () => canary.close(),
    );

    const got: { alert: DriftAlert; at: number }[] = [];
    const hook = await startAlertWebhook({
      port: 0,
      bearerToken: TOKEN,
      onAlert: (alert) => void got.push({ alert, at: Date.now() }),
    });
    cleanups.push(() => hook.close());
    const am = await startAlertmanager({
      webhookUrl: `http://127.0.0.1:${hook.port}/alerts`,
      bearerToken: TOKEN,
    });
    cleanups.push(() => am.stop());
    // The rules are in place before Prometheus starts, as the operator would have written them.
    const dir = await mkdtemp(join(tmpdir(), 'crema-rules-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, 'crema-drift.yml'), buildDriftRules([model]));
    const prom = await startPrometheus({
      scrapeTargets: [stable.target, canary.target],
      ruleFiles: [join(dir, '*.yml')],
      alertmanagerUrl: am.url,
    });
    cleanups.push(() => prom.stop());

    // Both rules are loaded and quiet while PSI is low.
    const rules = (await fetch(`${prom.url}/api/v1/rules`).then((r) => r.json())) as {
      data: { groups: { rules: { labels: Record<string, string>; health: string }[] }[] };
    };
    const loaded = rules.data.groups.flatMap((g) => g.rules);
    expect(loaded.map((r) => r.labels['variant'])).toEqual(['stable', 'canary']);
    await new Promise((r) => setTimeout(r, 2000));
    expect(got).toEqual([]);

    const wentHigh = Date.now();
    canary.set({ psi: { hour: 0.02, temperature: 0.61 } });
    const { alert, at } = await eventually(() => got[0], 20_000, 'the drift alert at onAlert');
    const latencyMs = at - wentHigh;
    console.log(
      `[drift pipeline] PSI high → onAlert: ${latencyMs} ms (scrape 1 s, evaluation 1 s, group_wait 0s)`,
    );

    expect(alert).toMatchObject({
      alertname: 'CremaFeatureDrift',
      namespace: 'shop',
      model: 'drinks',
      revision: CANARY,
      variant: 'canary',
      feature: 'temperature',
      value: 0.61,
      labels: { severity: 'critical' },
    });
    expect(alert.annotations['summary']).toContain('Feature temperature of shop/drinks (canary');
    expect(got.every((g) => g.alert.variant === 'canary')).toBe(true); // stable never alerted
    // Budget for the alert pipeline inside the 5 s alert-to-weight-0 goal.
    expect(latencyMs).toBeLessThan(5000);
  });
});
