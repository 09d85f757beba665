/**
 * Every Grafana panel query and every alerting rule of manifests/monitoring against a real
 * Prometheus that scrapes real processes: serving processes (stable and canary revisions of one
 * model, and a stable replica that lost its Redis), a router in front of them, and the operator
 * reconciling a RecommenderModel on the real API server. A query Prometheus refuses fails the test; so does an empty answer, except for
 * the queries listed in EXPECTED_EMPTY with the reason they are empty here.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startRedis } from '../../hack/testenv/environment.js';
import { startPrometheus, type PrometheusServer } from '../../hack/testenv/observability.js';
import { installCrds } from '../../operator/src/install.js';
import type { KubeClient } from '../../operator/src/runtime/kube.js';
import { testClient } from '../../operator/test/helpers.js';
import { startOperatorProcess, type OperatorProcess } from '../../operator/test/process.js';
import { rng, seedFeatures, syntheticUser, writeModel } from '../../serving/test/fixtures.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const monitoringDir = join(root, 'manifests/monitoring');

/**
 * Queries that may answer nothing in this run, and why. Keyed `<dashboard>/<panel title>/<refId>`,
 * `<dashboard>/var/<name>` or `rule/<alert>`. `always`: no process here exports the metric, so the
 * answer must be empty (a planned metric that starts being exported must leave this list);
 * otherwise the counter has no series until its event happens, which a loaded machine may cause.
 */
const EXPECTED_EMPTY: Record<string, { readonly always: boolean; readonly why: string }> = {
  'crema-serving/Requests refused before handling/A': {
    always: false,
    why: 'crema_requests_rejected_total has no series until a request is refused (overload or rate limit)',
  },
  'crema-serving/App events by type and outcome/B': {
    always: false,
    why: 'crema_events_refused_total has no series until the events stream is full',
  },
  'crema-operator/Reconcile errors per second/A': {
    always: false,
    why: 'crema_operator_reconcile_errors_total has no series until a reconcile fails',
  },
  'crema-experiments/Lift with its always-valid interval/A': {
    always: true,
    why: 'crema_experiment_lift is exported by the operator while an Experiment is Running; this test runs none',
  },
  'crema-experiments/Lift with its always-valid interval/B': {
    always: true,
    why: 'crema_experiment_lift_ci_low: only while an Experiment is Running (none here)',
  },
  'crema-experiments/Lift with its always-valid interval/C': {
    always: true,
    why: 'crema_experiment_lift_ci_high: only while an Experiment is Running (none here)',
  },
  'crema-experiments/Sample-ratio mismatch p-value/A': {
    always: true,
    why: 'crema_experiment_srm_p_value: only while an Experiment is Running (none here)',
  },
  'crema-experiments/Exposed users and conversions per experiment variant/A': {
    always: true,
    why: 'crema_experiment_users has series only for experiments in Redis (serving exports their totals); this test runs none',
  },
  'crema-experiments/Exposed users and conversions per experiment variant/B': {
    always: true,
    why: 'crema_experiment_sums: only for experiments in Redis (none here)',
  },
  'crema-regions/Floor per region/A': {
    always: true,
    why: 'crema_storeregion_desired_min_replicas is exported while a StoreRegion serves a model; this test runs none',
  },
  'crema-regions/HPA minReplicas vs current replicas/A': {
    always: true,
    why: 'kube_horizontalpodautoscaler_* come from kube-state-metrics, which this test does not run',
  },
  'crema-regions/HPA minReplicas vs current replicas/B': {
    always: true,
    why: 'kube-state-metrics, as above',
  },
};

interface Target {
  readonly refId: string;
  readonly expr: string;
}
interface Panel {
  readonly title: string;
  readonly type: string;
  readonly description?: string;
  readonly datasource: { uid: string };
  readonly targets: readonly Target[];
}
interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly panels: readonly Panel[];
  readonly templating: { list: { name: string; type: string; query?: { query: string } | string }[] };
}
interface Rule {
  readonly alert: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels: Record<string, string>;
  readonly annotations: Record<string, string>;
}

/** What Grafana sends for the dashboard variables: every value, a short range. */
function expand(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '30s')
    .replaceAll('$__range', '5m')
    .replace(/\$(namespace|model|feature)\b/g, '.*');
}

/** The part of an alert expression before its threshold: what must have data while all is well. */
export function signalOf(expr: string): string {
  const e = expr.trim();
  const absent = /^absent\(([\s\S]*)\)$/.exec(e);
  if (absent) return absent[1]!;
  return e.replace(/\s*(>=|<=|==|!=|>|<)\s*[0-9.e+-]+$/, '');
}

let dir: string;
const children: ChildProcess[] = [];
let redisStop: (() => Promise<void>) | undefined;
let operator: OperatorProcess | undefined;
let prom: PrometheusServer;
let client: KubeClient;
let namespace: string;
let dashboards: Dashboard[];
let rules: Rule[];
let stopTraffic = false;
let traffic: Promise<void> | undefined;

/** Starts serving/src/server.ts; resolves with its port once it listens. */
function startServing(args: string[], env: Record<string, string>): Promise<number> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'serving/src/server.ts', ...args], {
    cwd: root,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(proc);
  let out = '';
  return new Promise((resolve, reject) => {
    let port = 0;
    const onData = (b: Buffer) => {
      if (port) return; // listening: the request log is not kept
      out += b.toString();
      const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve((port = Number(m[1])));
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`server.ts ${args.join(' ')} exited ${code}: ${out}`)));
  });
}

async function query(
  expr: string,
): Promise<{ status: string; error?: string; data?: { result: unknown[] } }> {
  const res = await fetch(`${prom.url}/api/v1/query?query=${encodeURIComponent(expr)}`);
  return (await res.json()) as { status: string; error?: string; data?: { result: unknown[] } };
}

const post = (url: string, body: unknown) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  }).then((r) => r.arrayBuffer());

beforeAll(async () => {
  dashboards = await Promise.all(
    (await readdir(join(monitoringDir, 'dashboards')))
      .filter((f) => f.endsWith('.json'))
      .sort()
      .map(
        async (f) => JSON.parse(await readFile(join(monitoringDir, 'dashboards', f), 'utf8')) as Dashboard,
      ),
  );
  const ruleDoc = parse(await readFile(join(monitoringDir, 'crema-alerts.yaml'), 'utf8')) as {
    spec: { groups: { name: string; rules: Rule[] }[] };
  };
  rules = ruleDoc.spec.groups.flatMap((g) => g.rules);

  const t0 = Date.now();
  const step = (what: string) => console.error(`[monitoring] ${what} at ${Date.now() - t0} ms`);
  dir = await mkdtemp(join(tmpdir(), 'crema-monitoring-'));
  const redis = (await startRedis(dir, () => undefined)).redis;
  redisStop = () => redis.stop();
  const admin = new Redis(redis.url);
  const r = rng(3);
  const users = Array.from({ length: 40 }, (_, i) => ({ id: `u${i}`, features: syntheticUser(r, 150) }));
  await seedFeatures(admin, { version: 'v1', users });
  admin.disconnect();

  // Two revisions of one model, as the operator runs them during a canary.
  const stableModel = await writeModel({ dir, file: 'stable', seed: 1 });
  const canaryModel = await writeModel({ dir, file: 'canary', seed: 2 });
  const identity = { CREMA_MODEL_NAME: 'drinks', POD_NAMESPACE: 'shop', REDIS_URL: redis.url };
  const stablePort = await startServing([], {
    ...identity,
    CREMA_RANKING_MODEL_URI: stableModel.uri,
    CREMA_VARIANT: 'stable',
    CREMA_FEATURE_DEADLINE_MS: '1000',
  });
  const canaryPort = await startServing([], {
    ...identity,
    CREMA_RANKING_MODEL_URI: canaryModel.uri,
    CREMA_VARIANT: 'canary',
    CREMA_FEATURE_DEADLINE_MS: '1000',
  });
  // A stable replica that loses its Redis after start: it answers from the popularity fallback
  // (its in-memory snapshot) with reason redis_unavailable.
  const lostDir = join(dir, 'lost');
  await mkdir(lostDir);
  const lostRedis = (await startRedis(lostDir, () => undefined)).redis;
  const lostAdmin = new Redis(lostRedis.url);
  await seedFeatures(lostAdmin, { version: 'v1', users });
  lostAdmin.disconnect();
  const cutOffPort = await startServing([], {
    ...identity,
    REDIS_URL: lostRedis.url,
    CREMA_RANKING_MODEL_URI: stableModel.uri,
    CREMA_VARIANT: 'stable',
  });
  for (let i = 0; i < 100 && (await fetch(`http://127.0.0.1:${cutOffPort}/readyz`)).status !== 200; i++)
    await new Promise((res) => setTimeout(res, 200));
  await lostRedis.stop();
  // A third variant whose upstream is down: the router sends its users to stable (a router fallback).
  const routerConfig = join(dir, 'router.yaml');
  const config = stringify({
    salt: 'monitoring',
    stable: 'stable',
    variants: [
      { name: 'stable', weight: 60, upstream: `http://127.0.0.1:${stablePort}` },
      { name: 'canary', weight: 30, upstream: `http://127.0.0.1:${canaryPort}` },
      { name: 'gone', weight: 10, upstream: 'http://127.0.0.1:1' },
    ],
  });
  await writeFile(routerConfig, config);
  const routerPort = await startServing(['--mode', 'router'], {
    CREMA_ROUTER_CONFIG: routerConfig,
  });

  step('serving and router listening');
  // The operator, reconciling one model on the real API server.
  client = await testClient(inject('kubeconfigPath'));
  await installCrds(client);
  namespace = `monitoring-${Date.now().toString(36)}`;
  await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: namespace } } });
  await client.request('POST', `/apis/crema.dev/v1alpha1/namespaces/${namespace}/recommendermodels`, {
    body: {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name: 'drinks' },
      spec: { model: { uri: stableModel.uri, sha256: stableModel.meta.sha256, task: 'drink-ranking' } },
    },
  });
  operator = await startOperatorProcess({
    kubeconfigPath: inject('kubeconfigPath'),
    ns: namespace,
    identity: 'monitoring-test',
  });
  const operatorPort = Number(/health and metrics on :(\d+)/.exec(operator.output())?.[1]);
  expect(operatorPort).toBeGreaterThan(0);

  step('operator running');
  prom = await startPrometheus({
    scrapeTargets: [
      `127.0.0.1:${stablePort}`,
      `127.0.0.1:${canaryPort}`,
      `127.0.0.1:${cutOffPort}`,
      `127.0.0.1:${routerPort}`,
      `127.0.0.1:${operatorPort}`,
    ],
  });

  // Traffic until the test ends: recommendations through the router and (for the drift window)
  // straight to stable, known and unknown users (cold starts), a few to the replica without Redis
  // (fallbacks), and experiment events.
  const day = new Date().toISOString();
  let n = 0;
  const round = async () => {
    const batch: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++, n++) {
      const userId = n % 5 === 0 ? `new-${n}` : `u${n % 40}`;
      const body = { userId, storeId: `store-${n % 3}`, context: { time: day }, limit: 5 };
      batch.push(post(`http://127.0.0.1:${routerPort}/v1/recommendations`, body));
      batch.push(post(`http://127.0.0.1:${stablePort}/v1/recommendations`, body));
    }
    for (let i = 0; i < 3; i++)
      batch.push(
        post(`http://127.0.0.1:${cutOffPort}/v1/recommendations`, {
          userId: `u${i}`,
          storeId: 'store-0',
          context: { time: day },
          limit: 5,
        }),
      );
    for (const variant of ['control', 'v2']) {
      const ev = (type: string, extra = {}) => ({
        eventId: `${type}-${variant}-${n}`,
        type,
        userId: `u${n % 40}`,
        storeId: 'store-0',
        at: new Date().toISOString(),
        variant,
        ...extra,
      });
      batch.push(
        post(`http://127.0.0.1:${stablePort}/v1/events`, ev('impression', { itemIds: ['drink-3'] })),
      );
      batch.push(
        post(`http://127.0.0.1:${stablePort}/v1/events`, ev('order', { itemIds: ['drink-3'], value: 6.5 })),
      );
    }
    await Promise.allSettled(batch);
  };
  // 700 requests to stable first: drift PSI is published from 500 values in the window.
  step('prometheus scraping');
  for (let i = 0; i < 18; i++) await round();
  step('first traffic sent');
  traffic = (async () => {
    while (!stopTraffic) {
      await round();
      await new Promise((res) => setTimeout(res, 250));
    }
  })();
  // A config change the router reloads (crema_router_config_reloads_total).
  await new Promise((res) => setTimeout(res, 1000));
  await writeFile(routerConfig, config.replace('salt: monitoring', 'salt: monitoring-2'));
}, 240_000);

afterAll(async () => {
  stopTraffic = true;
  await traffic;
  await prom?.stop();
  if (operator && operator.exitCode === null) {
    operator.kill('SIGTERM');
    await new Promise((r) => operator!.once('exit', r));
  }
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  if (client && namespace) await client.request('DELETE', `/api/v1/namespaces/${namespace}`).catch(() => {});
  client?.close();
  await redisStop?.();
  await rm(dir, { recursive: true, force: true });
}, 60_000);

/** Every query to check: key, PromQL, and whether it must return data. */
function dashboardQueries(): { key: string; expr: string }[] {
  const out: { key: string; expr: string }[] = [];
  for (const d of dashboards) {
    for (const p of d.panels)
      for (const t of p.targets) out.push({ key: `${d.uid}/${p.title}/${t.refId}`, expr: expand(t.expr) });
    for (const v of d.templating.list) {
      if (v.type !== 'query') continue;
      const q = typeof v.query === 'string' ? v.query : v.query!.query;
      // label_values(SELECTOR, label) is Grafana's: the selector must match series.
      const m = /^label_values\(([\s\S]+),\s*\w+\)$/.exec(q);
      expect(m, `${d.uid} variable ${v.name}: ${q}`).not.toBeNull();
      out.push({ key: `${d.uid}/var/${v.name}`, expr: expand(m![1]!) });
    }
  }
  return out;
}

/** Polls until `keys` all have data (rate windows fill, a subquery step passes), up to `ms`. */
async function resultsWhenFilled(
  queries: readonly { key: string; expr: string }[],
  ms: number,
): Promise<Map<string, { status: string; error?: string; n: number }>> {
  const deadline = Date.now() + ms;
  for (;;) {
    const results = new Map<string, { status: string; error?: string; n: number }>();
    for (const q of queries) {
      const r = await query(q.expr);
      results.set(q.key, {
        status: r.status,
        ...(r.error ? { error: r.error } : {}),
        n: r.data?.result.length ?? 0,
      });
    }
    const missing = queries.filter((q) => !EXPECTED_EMPTY[q.key] && results.get(q.key)!.n === 0);
    if (missing.length === 0 || Date.now() > deadline) return results;
    await new Promise((r) => setTimeout(r, 2000));
  }
}

describe('dashboards', () => {
  it('are Grafana dashboards on the ${datasource} variable with unique uids', () => {
    expect(dashboards.map((d) => d.uid).sort()).toEqual([
      'crema-canary',
      'crema-drift',
      'crema-experiments',
      'crema-operator',
      'crema-regions',
      'crema-serving',
    ]);
    for (const d of dashboards)
      for (const p of d.panels) {
        expect(p.datasource.uid, `${d.uid}/${p.title}`).toBe('${datasource}');
        expect(p.targets.length, `${d.uid}/${p.title}`).toBeGreaterThan(0);
        // A planned metric says so where a person reads it.
        if (
          Object.keys(EXPECTED_EMPTY).some(
            (k) => k.startsWith(`${d.uid}/${p.title}/`) && /planned/.test(EXPECTED_EMPTY[k]!.why),
          )
        )
          expect(p.description, `${d.uid}/${p.title}`).toMatch(/^PLANNED METRIC/);
      }
  });

  it('every panel query is valid PromQL and answers with data unless listed in EXPECTED_EMPTY', async () => {
    const queries = dashboardQueries();
    const results = await resultsWhenFilled(queries, 90_000);
    const invalid = queries.filter((q) => results.get(q.key)!.status !== 'success');
    expect(invalid.map((q) => `${q.key}: ${results.get(q.key)!.error}`)).toEqual([]);
    const empty = queries.filter((q) => results.get(q.key)!.n === 0).map((q) => q.key);
    // Only listed queries may be empty, and those no process exports must be: a planned metric
    // that a controller starts exporting must leave the list.
    expect(
      empty.filter((k) => !EXPECTED_EMPTY[k]).map((k) => `${k}: ${queries.find((q) => q.key === k)!.expr}`),
    ).toEqual([]);
    const always = Object.entries(EXPECTED_EMPTY)
      .filter(([, v]) => v.always)
      .map(([k]) => k);
    expect(always.filter((k) => !empty.includes(k))).toEqual([]);
    expect(always.filter((k) => !queries.some((q) => q.key === k))).toEqual([]);
    console.log(
      `[monitoring] ${queries.length} dashboard queries: ${queries.length - empty.length} with data, ${empty.length} empty:\n` +
        empty.map((k) => `  ${k}: ${EXPECTED_EMPTY[k]!.why}`).join('\n'),
    );
  }, 150_000);
});

describe('alerting rules', () => {
  it('carry severity, summary, description and a runbook page that exists', () => {
    expect(rules.map((r) => r.alert)).toEqual(
      expect.arrayContaining([
        'CremaOperatorDown',
        'CremaReconcileErrors',
        'CremaRolloutStuck',
        'CremaFallbackRateHigh',
        'CremaFeatureDriftHigh',
      ]),
    );
    for (const r of rules) {
      expect(['critical', 'warning', 'info'], r.alert).toContain(r.labels.severity);
      expect(r.annotations.summary, r.alert).toBeTruthy();
      expect(r.annotations.description, r.alert).toBeTruthy();
      expect(r.annotations.runbook_url, r.alert).toMatch(new RegExp(`/docs/runbooks/${r.alert}\\.md$`));
      expect(existsSync(join(root, 'docs/runbooks', `${r.alert}.md`)), `docs/runbooks/${r.alert}.md`).toBe(
        true,
      );
    }
  });

  it('pass promtool check rules', async () => {
    const doc = parse(await readFile(join(monitoringDir, 'crema-alerts.yaml'), 'utf8')) as {
      spec: { groups: unknown };
    };
    const file = join(dir, 'crema-alerts.rules.yml');
    await writeFile(file, stringify({ groups: doc.spec.groups }));
    const { stdout } = await run('promtool', ['check', 'rules', file]);
    expect(stdout).toMatch(new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  it('load into Prometheus, evaluate without error, and their signals have data', async () => {
    const doc = parse(await readFile(join(monitoringDir, 'crema-alerts.yaml'), 'utf8')) as {
      spec: { groups: unknown };
    };
    await prom.writeRules('crema-alerts', stringify({ groups: doc.spec.groups }));
    const signals = rules.map((r) => ({ key: `rule/${r.alert}`, expr: signalOf(r.expr) }));
    const results = await resultsWhenFilled(signals, 90_000);
    expect(signals.filter((s) => results.get(s.key)!.status !== 'success').map((s) => s.key)).toEqual([]);
    expect(signals.filter((s) => results.get(s.key)!.n === 0).map((s) => `${s.key}: ${s.expr}`)).toEqual([]);
    for (const r of rules) expect((await query(r.expr)).status, r.alert).toBe('success');
    // Prometheus evaluated every rule (evaluation interval 1 s) without an error.
    await new Promise((r) => setTimeout(r, 2500));
    const loaded = (await fetch(`${prom.url}/api/v1/rules`).then((r) => r.json())) as {
      data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
    };
    const evaluated = loaded.data.groups.flatMap((g) => g.rules);
    expect(evaluated.map((r) => r.name).sort()).toEqual(rules.map((r) => r.alert).sort());
    expect(evaluated.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError}`)).toEqual([]);
    // All is well here: the operator leads, so neither operator alert is pending or firing.
    const alerts = (await fetch(`${prom.url}/api/v1/alerts`).then((r) => r.json())) as {
      data: { alerts: { labels: { alertname: string } }[] };
    };
    const names = alerts.data.alerts.map((a) => a.labels.alertname);
    expect(names).not.toContain('CremaOperatorDown');
    expect(names).not.toContain('CremaOperatorNoLeader');
  }, 150_000);
});
