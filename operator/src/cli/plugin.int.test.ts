/**
 * `kubectl crema` as a user runs it: the bundled plugin as a process against the real API
 * server, its output and its exit codes, including every refusal (one line on stderr, exit 4).
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { bundlePlugin } from '../../../hack/plugin-bundle.js';
import type { Experiment, RecommenderModel, StoreRegion } from '../api/v1alpha1/index.js';
import { installCrds } from '../install.js';
import { RESOURCES, resourcePath, type KubeClient } from '../runtime/kube.js';
import { eventually, testClient } from '../../test/helpers.js';
import {
  canaryStatus,
  createWithStatus,
  modelObject,
  patchModelStatus,
  readyStatus,
  rolledBackStatus,
  runPlugin,
  startPlugin,
  type CliRun,
} from '../../test/plugin-fixtures.js';

const ns = `plugin-${Date.now().toString(36)}`;
const ns2 = `${ns}-b`;
let client: KubeClient;
let bundle: string;
let kubeconfig: string;

const crema = (...args: string[]): Promise<CliRun> =>
  runPlugin(bundle, ['--kubeconfig', kubeconfig, ...args]);
const inNs = (...args: string[]) => crema('-n', ns, ...args);

/** A refusal: exit 4, nothing on stdout, exactly one line on stderr. */
function expectRefused(r: CliRun, pattern: RegExp): void {
  expect(r.stdout, r.stderr).toBe('');
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
  expect(r.code).toBe(4);
}

async function getModel(name: string): Promise<RecommenderModel> {
  return client.request<RecommenderModel>('GET', resourcePath(RESOURCES.recommenderModel, ns, name));
}

const CRDS = ['experiments.crema.dev', 'recommendermodels.crema.dev', 'storeregions.crema.dev'];

beforeAll(async () => {
  kubeconfig = inject('kubeconfigPath');
  client = await testClient(kubeconfig, 'crema-plugin-tests');
  bundle = await bundlePlugin(await mkdtemp(join(tmpdir(), 'crema-plugin-')));
});

afterAll(async () => {
  for (const n of [ns, ns2]) await client?.request('DELETE', `/api/v1/namespaces/${n}`).catch(() => {});
  client?.close();
});

describe('on a cluster without the Crema CRDs', () => {
  it('every command says so in one line and exits 4', async () => {
    // The shared test server may have them from another file: remove them, then put them back.
    for (const crd of CRDS)
      await client
        .request('DELETE', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd}`)
        .catch(() => {});
    await eventually(async () => {
      const groups = await client.request<{ groups: { name: string }[] }>('GET', '/apis');
      return !groups.groups.some((g) => g.name === 'crema.dev');
    }, 60_000);
    for (const args of [
      ['get'],
      ['get', 'models', 'drinks'],
      ['status', 'drinks'],
      ['promote', 'drinks'],
      ['experiment', 'stop', 'x'],
    ])
      expectRefused(
        await crema(...args),
        /^error: the Crema CRDs are not installed on this cluster \(.*serves no \w+\.crema\.dev\/v1alpha1\)/,
      );
  });
});

describe('with the CRDs', () => {
  const now = new Date();
  beforeAll(async () => {
    await installCrds(client);
    for (const n of [ns, ns2])
      await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: n } } });
    await eventually(() => client.request('GET', resourcePath(RESOURCES.recommenderModel, ns)), 30_000);
    await createWithStatus(client, modelObject(ns, 'drinks'), canaryStatus(now));
    await createWithStatus(client, modelObject(ns, 'addons'), readyStatus(now));
    await createWithStatus(client, modelObject(ns, 'fresh'));
    await createWithStatus(client, modelObject(ns2, 'churn'), readyStatus(now));
    const exp: Experiment = {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'Experiment',
      metadata: { name: 'drinks-v2', namespace: ns },
      spec: {
        variants: [
          { name: 'control', modelRef: 'drinks', weight: 50 },
          { name: 'v2', modelRef: 'drinks-v2', weight: 50 },
        ],
        assignment: { salt: 's1' },
        primaryMetric: 'conversion',
      },
    };
    await createWithStatus(client, exp, {
      observedGeneration: 1,
      phase: 'Running',
      decision: 'continue: no variant differs from control yet',
      startedAt: new Date(now.getTime() - 3_600_000).toISOString(),
      variants: [
        { name: 'control', exposures: 12034, conversions: 3010, meanOrderValue: 6.8 },
        {
          name: 'v2',
          exposures: 11990,
          conversions: 3130,
          meanOrderValue: 6.95,
          lift: 0.043,
          ciLow: -0.005,
          ciHigh: 0.081,
        },
      ],
    });
    await createWithStatus(
      client,
      { ...exp, metadata: { name: 'old', namespace: ns } },
      { phase: 'Concluded', winner: 'v2' },
    );
    const region: StoreRegion = {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'StoreRegion',
      metadata: { name: 'northwest', namespace: ns },
      spec: {
        stores: ['s1', 's2'],
        timezone: 'UTC',
        serving: { modelRef: 'drinks', minReplicas: 2, maxReplicas: 20 },
        peakWindows: [
          {
            days: ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'],
            start: '00:00',
            end: '23:59',
            multiplier: 3,
          },
        ],
        promotions: [
          {
            name: 'pumpkin',
            start: new Date(now.getTime() + 3_600_000).toISOString(),
            end: new Date(now.getTime() + 7_200_000).toISOString(),
            multiplier: 10,
          },
        ],
      },
    };
    await createWithStatus(client, region, {
      observedGeneration: 1,
      desiredMinReplicas: 6,
      activeWindow: 'peak 00:00-23:59',
    });
  });

  describe('get', () => {
    it('draws a model as a tree: stable, canary step and weights, analysis, history', async () => {
      const r = await inNs('get', 'models', 'drinks');
      expect(r.code, r.stderr).toBe(0);
      const out = r.stdout;
      expect(out).toMatch(new RegExp(`^RecommenderModel ${ns}/drinks  Progressing`));
      expect(out).toMatch(/stable +revision 3 +aaaaaaaaaaaa +weight 50% +ready 4\/4/);
      expect(out).toMatch(/canary +revision 4 +bbbbbbbbbbbb +weight 50% +step 2\/3 +failures 1\/2 +ready 2/);
      expect(out).toContain('steps     ✔ 10% 5m analysed → [50% manual analysed] → 100% manual analysed');
      expect(out).toContain('step 2 holds until promoted (kubectl crema promote drinks)');
      expect(out).toMatch(/step 2 +Pass .*errorRate 0\.002 <= 0\.01/);
      expect(out).toMatch(/step 1 +Fail .*p99LatencyMs 71 > 50/);
      expect(out).toMatch(/revision 2 +cccccccccccc +stable +Superseded/);
    });

    it('lists every kind of the namespace; a model without status says so', async () => {
      const r = await inNs('get');
      expect(r.code, r.stderr).toBe(0);
      for (const head of [
        `RecommenderModel ${ns}/addons  Ready`,
        `RecommenderModel ${ns}/fresh  (no status yet)`,
        `Experiment ${ns}/drinks-v2  Running`,
        `StoreRegion ${ns}/northwest  floor 6`,
      ])
        expect(r.stdout).toContain(head);
      expect(r.stdout).not.toContain('churn');
    });

    it('shows experiment results per variant with the lift interval', async () => {
      const r = await inNs('get', 'exp', 'drinks-v2');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/control +drinks +50% +12,034 +3,010 +25\.0% +6\.80 +- +-/);
      expect(r.stdout).toMatch(
        /v2 +drinks-v2 +50% +11,990 +3,130 +26\.1% +6\.95 +\+4\.3% +\[-0\.5%, \+8\.1%\]/,
      );
      expect(r.stdout).toContain('decision  continue: no variant differs from control yet');
    });

    it("shows a region's floor now and what the next 24 h hold", async () => {
      const r = await inNs('get', 'regions', 'northwest');
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/floor now 6 +active: peak 00:00-23:59/);
      expect(r.stdout).toMatch(/next 24 h \(region time\)/);
      expect(r.stdout).toMatch(/peak ×3 +← now/);
      expect(r.stdout).toMatch(/promotion pumpkin ×10/);
    });

    it('-A lists all namespaces; -o json and -o yaml print the API objects', async () => {
      const all = await crema('get', 'models', '-A');
      expect(all.code, all.stderr).toBe(0);
      expect(all.stdout).toContain(`RecommenderModel ${ns2}/churn  Ready`);
      expect(all.stdout).toContain(`RecommenderModel ${ns}/drinks  Progressing`);

      const json = await inNs('get', 'models', '-o', 'json');
      expect(json.code, json.stderr).toBe(0);
      const list = JSON.parse(json.stdout) as { kind: string; items: RecommenderModel[] };
      expect(list.kind).toBe('List');
      expect(list.items.map((m) => m.metadata?.name)).toEqual(['addons', 'drinks', 'fresh']);
      expect(list.items[1]?.status?.canary?.weight).toBe(50);

      const yaml = await inNs('get', 'exp', 'drinks-v2', '-o', 'yaml');
      expect(yaml.code, yaml.stderr).toBe(0);
      expect((parse(yaml.stdout) as Experiment).status?.variants?.[1]?.lift).toBe(0.043);
    });

    it('refuses a missing resource, an unknown kind, a bad name, a bad output format', async () => {
      expectRefused(
        await inNs('get', 'models', 'nope'),
        new RegExp(`^error: recommendermodel "nope" not found in namespace "${ns}"$`, 'm'),
      );
      expectRefused(await inNs('get', 'regions', 'nope'), /^error: storeregion "nope" not found/);
      expectRefused(await inNs('get', 'pods'), /^error: get: unknown resource kind "pods"/);
      expectRefused(
        await inNs('get', 'models', 'Bad_Name'),
        /^error: get: "Bad_Name" is not a valid resource name/,
      );
      expectRefused(await inNs('get', '-o', 'wide'), /^error: --output: must be json or yaml, not "wide"/);
      expectRefused(await inNs('get', '--bogus'), /^error: Unknown option '--bogus'/);
    });

    it('refuses a kubeconfig, context or server it cannot use', async () => {
      expectRefused(
        await runPlugin(bundle, ['--kubeconfig', '/nonexistent/kubeconfig', 'get']),
        /^error: --kubeconfig: \/nonexistent\/kubeconfig does not exist/,
      );
      expectRefused(
        await crema('--context', 'elsewhere', 'get'),
        /^error: --context: no context "elsewhere" in the kubeconfig/,
      );
      // The same credentials, pointed at a port nothing listens on.
      const text = await readFile(kubeconfig, 'utf8');
      const dead = join(await mkdtemp(join(tmpdir(), 'crema-plugin-')), 'kubeconfig');
      await writeFile(
        dead,
        text.replace(/server: https:\/\/127\.0\.0\.1:\d+/, 'server: https://127.0.0.1:1'),
      );
      expectRefused(
        await runPlugin(bundle, ['--kubeconfig', dead, 'get']),
        /^error: cannot reach the API server at https:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\)/,
      );
    });
  });

  describe('status', () => {
    it('exit code 0 for a healthy model, 3 while a canary runs, 1 after a rollback', async () => {
      const ok = await inNs('status', 'addons');
      expect([ok.code, ok.stdout.trim()]).toEqual([
        0,
        'Healthy (Ready) - revision 3 serving, 4/4 replicas ready',
      ]);
      const running = await inNs('status', 'drinks');
      expect(running.code).toBe(3);
      expect(running.stdout).toMatch(/^Progressing - Canary: canary revision 4 at step 2, weight 50%/);
      const pending = await inNs('status', 'fresh');
      expect([pending.code, pending.stdout.trim()]).toEqual([
        3,
        'Pending - the operator has not written a status yet',
      ]);

      await createWithStatus(client, modelObject(ns, 'failed'), rolledBackStatus(now));
      const failed = await inNs('status', 'failed', '-o', 'json');
      expect(failed.code).toBe(1);
      expect(JSON.parse(failed.stdout)).toMatchObject({
        name: 'failed',
        verdict: 'Failed',
        phase: 'RolledBack',
        message: 'AnalysisFailed: p99LatencyMs 90 > 50 in 3 checks',
        exitCode: 1,
      });
      expectRefused(await inNs('status', 'nope'), /^error: recommendermodel "nope" not found/);
      expectRefused(
        await inNs('status', 'drinks', '--timeout', '5m'),
        /^error: --timeout: only valid with --watch/,
      );
      expectRefused(
        await inNs('status', 'drinks', '-w', '--timeout', 'soon'),
        /^error: --timeout: "soon" is not a duration/,
      );
    });

    it('--watch follows the rollout and exits 0 when the canary is promoted', async () => {
      await createWithStatus(client, modelObject(ns, 'w-ok'), canaryStatus(now, 0, 10));
      const run = startPlugin(bundle, [
        '--kubeconfig',
        kubeconfig,
        '-n',
        ns,
        'status',
        'w-ok',
        '--watch',
        '--timeout',
        '60s',
      ]);
      // Change the status only once the watch has reported the state it started from.
      expect(await run.firstLine).toMatch(/^Progressing - Canary: canary revision 4 at step 1, weight 10%/);
      await patchModelStatus(client, ns, 'w-ok', { ...canaryStatus(now, 2, 100) });
      await patchModelStatus(client, ns, 'w-ok', { ...readyStatus(now), canary: null, history: null });
      const r = await run.done;
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines[0]).toMatch(/^Progressing - Canary: canary revision 4 at step 1, weight 10%/);
      expect(lines.at(-1)).toBe('Healthy (Ready) - revision 3 serving, 4/4 replicas ready');
    });

    it('--watch exits 1 when the canary is rolled back, 2 at its timeout', async () => {
      await createWithStatus(client, modelObject(ns, 'w-bad'), canaryStatus(now, 0, 10));
      const run = startPlugin(bundle, [
        '--kubeconfig',
        kubeconfig,
        '-n',
        ns,
        'status',
        'w-bad',
        '--watch',
        '--timeout',
        '60s',
      ]);
      expect(await run.firstLine).toMatch(/^Progressing/);
      await patchModelStatus(client, ns, 'w-bad', { ...rolledBackStatus(now), canary: null, history: null });
      const bad = await run.done;
      expect(bad.code, bad.stderr).toBe(1);
      expect(bad.stdout.trim().split('\n').at(-1)).toBe(
        'Failed (RolledBack) - AnalysisFailed: p99LatencyMs 90 > 50 in 3 checks',
      );

      const slow = await inNs('status', 'drinks', '--watch', '--timeout', '2s');
      expect(slow.code).toBe(2);
      expect(slow.stderr.trim()).toMatch(/^timed out after 2s: still Progressing/);
    });
  });

  describe('rollout commands write what the operator reads', () => {
    it('promote sets crema.dev/promote=step, --full sets full, abort sets crema.dev/abort', async () => {
      await createWithStatus(client, modelObject(ns, 'cmd'), canaryStatus(now));
      const step = await inNs('promote', 'cmd');
      expect(step.code, step.stderr).toBe(0);
      expect(step.stdout.trim()).toBe(
        `recommendermodel ${ns}/cmd: promotion to the next step requested (crema.dev/promote=step)`,
      );
      expect((await getModel('cmd')).metadata?.annotations?.['crema.dev/promote']).toBe('step');

      const full = await inNs('promote', 'cmd', '--full', '-o', 'json');
      expect(full.code, full.stderr).toBe(0);
      expect((JSON.parse(full.stdout) as RecommenderModel).metadata?.annotations?.['crema.dev/promote']).toBe(
        'full',
      );

      const abort = await inNs('abort', 'cmd');
      expect(abort.code, abort.stderr).toBe(0);
      expect((await getModel('cmd')).metadata?.annotations?.['crema.dev/abort']).toBe('true');
    });

    it('refuses promote and abort on a model with no canary, and leaves it untouched', async () => {
      expectRefused(
        await inNs('promote', 'addons'),
        /^error: recommendermodel "addons" has no canary rollout in progress \(phase Ready\): nothing to promote/,
      );
      expectRefused(await inNs('abort', 'addons'), /nothing to abort/);
      expect((await getModel('addons')).metadata?.annotations ?? {}).toEqual({});
      expectRefused(await inNs('promote', 'nope'), /^error: recommendermodel "nope" not found/);
      expectRefused(await inNs('promote'), /^error: promote: a resource NAME is required/);
      expectRefused(await inNs('abort', 'addons', '--full'), /^error: --full: only valid for promote/);
    });

    it('pause and resume set spec.paused', async () => {
      const p = await inNs('pause', 'drinks');
      expect([p.code, p.stdout.trim()]).toEqual([
        0,
        `recommendermodel ${ns}/drinks paused: rollouts hold where they are (spec.paused=true)`,
      ]);
      expect((await getModel('drinks')).spec.paused).toBe(true);
      const again = await inNs('pause', 'drinks');
      expect(again.stdout.trim()).toBe(`recommendermodel ${ns}/drinks is already paused`);
      const r = await inNs('resume', 'drinks', '-o', 'yaml');
      expect(r.code, r.stderr).toBe(0);
      expect((parse(r.stdout) as RecommenderModel).spec.paused).toBe(false);
      expectRefused(await inNs('pause', 'nope'), /^error: recommendermodel "nope" not found/);
    });
  });

  describe('experiment conclude|stop', () => {
    it('sets crema.dev/conclude or crema.dev/stop; refuses an ended or missing experiment', async () => {
      const c = await inNs('experiment', 'conclude', 'drinks-v2');
      expect([c.code, c.stdout.trim()]).toEqual([
        0,
        `experiment ${ns}/drinks-v2: conclude requested (crema.dev/conclude=true)`,
      ]);
      const s = await inNs('experiment', 'stop', 'drinks-v2', '-o', 'json');
      expect(s.code, s.stderr).toBe(0);
      expect((JSON.parse(s.stdout) as Experiment).metadata?.annotations).toMatchObject({
        'crema.dev/conclude': 'true',
        'crema.dev/stop': 'true',
      });
      expectRefused(
        await inNs('experiment', 'stop', 'old'),
        /^error: experiment "old" has already ended \(phase Concluded\): nothing to stop/,
      );
      expectRefused(await inNs('experiment', 'stop', 'nope'), /^error: experiment "nope" not found/);
      expectRefused(
        await inNs('experiment', 'finish', 'drinks-v2'),
        /^error: experiment: unknown action "finish" \(use conclude or stop\)/,
      );
    });
  });

  it('bin/kubectl-crema.js, the file npm installs as kubectl-crema, runs the plugin', async () => {
    const r = await runPlugin(join(import.meta.dirname, '../../../bin/kubectl-crema.js'), [
      '--kubeconfig',
      kubeconfig,
      '-n',
      ns,
      'get',
      'rm',
      'addons',
      '-o',
      'json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as RecommenderModel).status?.phase).toBe('Ready');
  });
});
