/**
 * `kubectl crema dashboard` against the real API server, looked at in a real headless Chromium
 * (Debian's `chromium`): the page shows the models' traffic split, canary steps and experiment
 * intervals, and a change in the cluster shows on the next load — checked in the DOM Chromium
 * builds and in the pixels of its screenshot.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ensureDebianPackages } from '../../../hack/testenv/debian.js';
import { bundlePlugin } from '../../../hack/plugin-bundle.js';
import type { Experiment } from '../api/v1alpha1/index.js';
import { installCrds } from '../install.js';
import { RESOURCES, resourcePath, type KubeClient } from '../runtime/kube.js';
import { eventually, testClient } from '../../test/helpers.js';
import {
  canaryStatus,
  createWithStatus,
  modelObject,
  patchModelStatus,
  readyStatus,
  runPlugin,
} from '../../test/plugin-fixtures.js';
import { countColour, decodePng } from '../../test/png.js';

const ns = `dash-${Date.now().toString(36)}`;
const STABLE_GREEN = '#3a7d44';
const CANARY_ORANGE = '#d9822b';
let client: KubeClient;
let bundle: string;
let kubeconfig: string;
let dashboard: ChildProcess | undefined;
let url: string;
let scratch: string;

/** Runs Debian's chromium headless on `url`; returns what `args` produce. */
async function chromium(args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(
    'chromium',
    [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--hide-scrollbars',
      `--user-data-dir=${join(scratch, 'profile')}`,
      ...args,
    ],
    { timeout: 90_000, maxBuffer: 1 << 26 },
  );
  return stdout;
}

async function screenshot(name: string) {
  const file = join(scratch, `${name}.png`);
  await chromium(['--window-size=1200,1400', `--screenshot=${file}`, url]);
  return decodePng(await readFile(file));
}

// As root (CI) a missing Chromium is installed (minutes); otherwise the error names the apt-get command.
beforeAll(
  () => ensureDebianPackages([{ command: 'chromium', pkg: 'chromium' }], console.log, 'the dashboard test'),
  600_000,
);

beforeAll(async () => {
  kubeconfig = inject('kubeconfigPath');
  client = await testClient(kubeconfig, 'crema-dashboard-tests');
  scratch = await mkdtemp(join(tmpdir(), 'crema-dashboard-'));
  bundle = await bundlePlugin(join(scratch, 'bundle'));
  await installCrds(client);
  await client.request('POST', '/api/v1/namespaces', { body: { metadata: { name: ns } } });
  await eventually(() => client.request('GET', resourcePath(RESOURCES.recommenderModel, ns)), 30_000);
  const now = new Date();
  await createWithStatus(client, modelObject(ns, 'drinks'), canaryStatus(now, 0, 10));
  const exp: Experiment = {
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'Experiment',
    metadata: { name: 'drinks-v2', namespace: ns },
    spec: {
      variants: [
        { name: 'control', modelRef: 'drinks', weight: 50 },
        { name: 'v2', modelRef: 'drinks-v2', weight: 50 },
      ],
      assignment: { salt: 's' },
      primaryMetric: 'conversion',
    },
  };
  await createWithStatus(client, exp, {
    phase: 'Running',
    variants: [
      { name: 'control', exposures: 5000, conversions: 1250 },
      { name: 'v2', exposures: 5010, conversions: 1400, lift: 0.115, ciLow: 0.03, ciHigh: 0.2 },
    ],
  });

  dashboard = spawn(
    process.execPath,
    [bundle, '--kubeconfig', kubeconfig, '-n', ns, 'dashboard', '--port', '0'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const lines = createInterface({ input: dashboard.stdout! });
  url = await new Promise<string>((resolve, reject) => {
    lines.on('line', (l) => {
      const m = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(l);
      if (m) resolve(m[1]!);
    });
    dashboard!.once('exit', (code) => reject(new Error(`dashboard exited ${code}`)));
  });
});

afterAll(async () => {
  dashboard?.kill('SIGTERM');
  await client?.request('DELETE', `/api/v1/namespaces/${ns}`).catch(() => {});
  client?.close();
});

describe('kubectl crema dashboard', () => {
  it('serves the state as JSON and only reads', async () => {
    const state = (await (await fetch(`${url}api/state`)).json()) as {
      namespace: string;
      models: { metadata: { name: string } }[];
    };
    expect(state.namespace).toBe(ns);
    expect(state.models.map((m) => m.metadata.name)).toEqual(['drinks']);
    expect((await fetch(url, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${url}nope`)).status).toBe(404);
  });

  it('in Chromium: the split, the canary step and the experiment interval; a promotion shows on the next load', async () => {
    const dom = await chromium(['--dump-dom', url]);
    expect(dom).toContain(`<title>Crema — ${ns}</title>`);
    expect(dom).toMatch(/<div class="stable" style="width:90%">stable r3 90%<\/div>/);
    expect(dom).toMatch(/<div class="canary" style="width:10%">canary r4 10%<\/div>/);
    expect(dom).toMatch(/<li class="current">10% · 5m · analysed<\/li>/);
    expect(dom).toMatch(
      /<tr data-variant="v2"><td>v2<\/td>.*<td>\+11\.5%<\/td><td>\[\+3\.0%, \+20\.0%\]<\/td>.*class="range better"/,
    );

    const before = await screenshot('canary-10');
    const green0 = countColour(before, STABLE_GREEN);
    const orange0 = countColour(before, CANARY_ORANGE);
    expect(green0, 'stable bar').toBeGreaterThan(1000);
    expect(orange0, 'canary bar').toBeGreaterThan(100);

    // The operator moves the canary to 50 %: the next load draws a five times wider canary bar.
    await patchModelStatus(client, ns, 'drinks', canaryStatus(new Date(), 1, 50));
    const after = await screenshot('canary-50');
    const orange1 = countColour(after, CANARY_ORANGE);
    expect(orange1 / orange0).toBeGreaterThan(3);
    expect(countColour(after, STABLE_GREEN)).toBeLessThan(green0);

    // Promoted: no canary bar at all.
    await patchModelStatus(client, ns, 'drinks', { ...readyStatus(new Date()), canary: null, history: null });
    expect(countColour(await screenshot('ready'), CANARY_ORANGE)).toBeLessThan(orange0 / 10);
  });

  it('refuses a port it cannot use, in one line, exit 4', async () => {
    const port = new URL(url).port;
    const r = await runPlugin(bundle, ['--kubeconfig', kubeconfig, '-n', ns, 'dashboard', '--port', port]);
    expect(r.code).toBe(4);
    expect(r.stderr.trim()).toBe(`error: --port: cannot listen on 127.0.0.1:${port} (EADDRINUSE)`);
    const bad = await runPlugin(bundle, ['dashboard', '--port', '70000']);
    expect([bad.code, bad.stderr.trim()]).toEqual([
      4,
      'error: --port: "70000" is not a port number (0-65535)',
    ]);
  });
});
