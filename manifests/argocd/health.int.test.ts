/**
 * The Argo CD health checks (Lua) run by Debian's Lua 5.1 interpreter (Argo CD runs them in
 * gopher-lua, a Lua 5.1) against status fixtures in the shapes the operator writes; and the
 * argocd-cm snippet in docs/gitops.md carries exactly these scripts.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureDebianPackages } from '../../hack/testenv/debian.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const healthDir = join(root, 'manifests/argocd/health');
const LUA = 'lua5.1';
let dir: string;

beforeAll(async () => {
  await ensureDebianPackages(
    [{ command: LUA, pkg: 'lua5.1' }],
    (l) => console.error(l),
    'the Argo CD health check tests',
  );
  dir = await mkdtemp(join(tmpdir(), 'crema-lua-'));
}, 300_000);
afterAll(() => rm(dir, { recursive: true, force: true }));

/** A JSON value as a Lua 5.1 literal: objects and arrays become tables (arrays 1-based), null nil. */
export function toLua(v: unknown): string {
  if (v === null || v === undefined) return 'nil';
  if (typeof v === 'boolean' || typeof v === 'number') return String(v);
  if (typeof v === 'string')
    return `"${[...Buffer.from(v, 'utf8')]
      .map((b) => (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c ? String.fromCharCode(b) : `\\${b}`))
      .join('')}"`;
  if (Array.isArray(v)) return `{${v.map(toLua).join(', ')}}`;
  return `{${Object.entries(v as Record<string, unknown>)
    .filter(([, x]) => x !== null && x !== undefined)
    .map(([k, x]) => `[${toLua(k)}] = ${toLua(x)}`)
    .join(', ')}}`;
}

/** Runs the health script of `kind` on `obj` as Argo CD does (a global `obj`, the chunk returns hs). */
async function health(kind: string, obj: unknown): Promise<{ status: string; message: string }> {
  const runner = join(dir, `run-${kind}-${Math.random().toString(36).slice(2)}.lua`);
  await writeFile(
    runner,
    `obj = ${toLua(obj)}
local hs = assert(loadfile(${toLua(join(healthDir, `crema.dev_${kind}.lua`))}))()
io.write(hs.status, "\\n", hs.message or "")
`,
  );
  const { stdout } = await run(LUA, [runner]);
  const [status, ...message] = stdout.split('\n');
  return { status: status!, message: message.join('\n') };
}

const sha = (c: string) => c.repeat(64);
const cond = (type: string, status: 'True' | 'False', reason: string, message: string) => ({
  type,
  status,
  reason,
  message,
  observedGeneration: 3,
  lastTransitionTime: '2026-11-24T08:00:00Z',
});
const meta = { name: 'drinks', namespace: 'shop', generation: 3 };
const ready = cond('Ready', 'True', 'Serving', 'revision 4 serving with 2 ready replicas');
const notDegraded = cond('Degraded', 'False', 'AsExpected', 'children applied and healthy');
const canary = { modelSha: sha('c'), revision: 5, step: 1, weight: 25, failures: 0 };

describe('RecommenderModel', () => {
  const model = (status: unknown, spec: Record<string, unknown> = {}) => ({
    apiVersion: 'crema.dev/v1alpha1',
    kind: 'RecommenderModel',
    metadata: meta,
    spec: { model: { uri: 'file:///m.onnx', sha256: sha('c'), task: 'drink-ranking' }, ...spec },
    ...(status === undefined ? {} : { status }),
  });
  const cases: [string, unknown, Record<string, unknown>, string, RegExp][] = [
    ['no status yet', undefined, {}, 'Progressing', /Waiting for the operator/],
    [
      'status of an older generation',
      { observedGeneration: 2, phase: 'Ready', conditions: [ready] },
      {},
      'Progressing',
      /observe generation 3/,
    ],
    [
      'stable and ready',
      {
        observedGeneration: 3,
        phase: 'Ready',
        stable: { modelSha: sha('s'), revision: 4 },
        conditions: [notDegraded, ready],
      },
      {},
      'Healthy',
      /revision 4 serving/,
    ],
    [
      'a canary at step 2',
      {
        observedGeneration: 3,
        phase: 'Progressing',
        canary,
        conditions: [
          notDegraded,
          ready,
          cond('Progressing', 'True', 'Canary', 'canary revision 5 at step 2, weight 25%'),
        ],
      },
      {},
      'Progressing',
      /^canary revision 5 at step 2, weight 25%$/,
    ],
    [
      'a canary held by spec.paused',
      {
        observedGeneration: 3,
        phase: 'Progressing',
        canary,
        conditions: [
          ready,
          cond(
            'Progressing',
            'True',
            'Canary',
            'canary revision 5 at step 2, weight 25%: paused (spec.paused is true)',
          ),
        ],
      },
      { paused: true },
      'Suspended',
      /Canary revision 5 at step 2, weight 25%: paused/,
    ],
    [
      'a canary held by a freeze window (the message the rollout machine writes today)',
      {
        observedGeneration: 3,
        phase: 'Progressing',
        canary: { ...canary, step: 2, weight: 100 },
        conditions: [
          ready,
          cond(
            'Progressing',
            'True',
            'Canary',
            'canary revision 5 at step 3, weight 100%: promotion to stable held: StoreRegion freeze window northwest/freezeWindows[0] 06:00-10:00 America/Los_Angeles is active',
          ),
        ],
      },
      {},
      'Suspended',
      /frozen \(.*freeze window northwest/,
    ],
    [
      'a canary held by a freeze window (a Frozen condition)',
      {
        observedGeneration: 3,
        canary,
        conditions: [ready, cond('Frozen', 'True', 'FreezeWindow', 'northwest until 10:00')],
      },
      {},
      'Suspended',
      /frozen \(northwest until 10:00\)/,
    ],
    [
      'a canary held by a freeze window (status.frozenUntil)',
      { observedGeneration: 3, canary, frozenUntil: '2026-11-24T18:00:00Z', conditions: [ready] },
      {},
      'Suspended',
      /frozen/,
    ],
    [
      'the stable pods crash',
      {
        observedGeneration: 3,
        phase: 'Degraded',
        conditions: [cond('Degraded', 'True', 'CrashLoopBackOff', 'serving pods crash: back-off restarting')],
      },
      {},
      'Degraded',
      /serving pods crash/,
    ],
    [
      'the canary was rolled back',
      {
        observedGeneration: 3,
        phase: 'RolledBack',
        stable: { modelSha: sha('s'), revision: 4 },
        abortedModelSha: sha('c'),
        conditions: [
          notDegraded,
          ready,
          cond('Progressing', 'False', 'RolloutComplete', 'revision 4 rolled out'),
          cond('RolledBack', 'True', 'AnalysisFailed', 'p99 latency 180 ms above 50 ms at step 2'),
        ],
      },
      {},
      'Degraded',
      /^Rolled back: p99 latency 180 ms/,
    ],
    [
      'a new canary after a rollback',
      {
        observedGeneration: 3,
        canary,
        conditions: [
          ready,
          cond('RolledBack', 'False', 'NewRollout', 'canary revision 5 started'),
          cond('Progressing', 'True', 'Canary', 'canary revision 5 at step 1, weight 10%'),
        ],
      },
      {},
      'Progressing',
      /step 1/,
    ],
    [
      'promoting',
      {
        observedGeneration: 3,
        promotion: { modelSha: sha('c'), weight: 100 },
        conditions: [
          ready,
          cond(
            'Progressing',
            'True',
            'Promoting',
            'revision 5 promoted; stable pods rolling to it (1/2 updated)',
          ),
        ],
      },
      {},
      'Progressing',
      /promoted/,
    ],
    [
      'ready with drift on stable (action Alert)',
      {
        observedGeneration: 3,
        conditions: [ready, cond('DriftDetected', 'True', 'FeatureDrift', 'temperature_c PSI 0.41')],
      },
      {},
      'Healthy',
      /drift detected: temperature_c PSI 0.41/,
    ],
    ['conditions missing entirely', { observedGeneration: 3 }, {}, 'Progressing', /Waiting/],
    ['conditions not a list', { conditions: 'x', canary: 'y' }, {}, 'Progressing', /Waiting/],
  ];
  it.each(cases)('%s', async (_name, status, spec, want, message) => {
    const hs = await health('RecommenderModel', model(status, spec));
    expect(hs.status).toBe(want);
    expect(hs.message).toMatch(message);
  });
});

describe('Experiment', () => {
  const exp = (status: unknown, spec: Record<string, unknown> = {}) => ({
    kind: 'Experiment',
    metadata: meta,
    spec: { variants: [], ...spec },
    ...(status === undefined ? {} : { status }),
  });
  const variants = [
    { name: 'control', exposures: 41000, conversions: 10200 },
    { name: 'v2', exposures: 10300, conversions: 2700, lift: 0.031, ciLow: 0.004, ciHigh: 0.058 },
  ];
  const cases: [string, unknown, Record<string, unknown>, string, RegExp][] = [
    ['no status yet', undefined, {}, 'Progressing', /Waiting/],
    ['pending', { observedGeneration: 3, phase: 'Pending' }, {}, 'Progressing', /^Pending/],
    [
      'running',
      {
        observedGeneration: 3,
        phase: 'Running',
        variants,
        decision: 'continue: look 12, v2 not significant yet',
      },
      {},
      'Progressing',
      /^Running: continue: look 12/,
    ],
    [
      'concluded with a winner',
      {
        observedGeneration: 3,
        phase: 'Concluded',
        winner: 'v2',
        decision: 'v2 +3.1% [0.4%, 5.8%]',
        variants,
      },
      {},
      'Healthy',
      /^Concluded: winner v2 \(v2 \+3.1%/,
    ],
    [
      'concluded inconclusive at maxDuration',
      { observedGeneration: 3, phase: 'Concluded', decision: 'maxDuration 14d reached: inconclusive' },
      {},
      'Healthy',
      /inconclusive/,
    ],
    [
      'stopped by a guardrail',
      {
        observedGeneration: 3,
        phase: 'Stopped',
        decision: 'v2 stopped: p99 112 ms above the 80 ms guardrail',
      },
      {},
      'Degraded',
      /^Stopped: v2 stopped: p99 112 ms/,
    ],
    [
      'stopped by a sample-ratio mismatch (a Stopped condition)',
      {
        observedGeneration: 3,
        phase: 'Stopped',
        conditions: [cond('Stopped', 'True', 'SampleRatioMismatch', 'SRM p=1e-6: 78/22 observed for 80/20')],
      },
      {},
      'Degraded',
      /^Stopped: SRM p=1e-6/,
    ],
    [
      'running with a sample-ratio mismatch',
      {
        observedGeneration: 3,
        phase: 'Running',
        conditions: [cond('SampleRatioMismatch', 'True', 'SRM', 'p=2e-5')],
      },
      {},
      'Degraded',
      /^Sample ratio mismatch: p=2e-5/,
    ],
    [
      'a variant names a missing model',
      {
        observedGeneration: 3,
        phase: 'Pending',
        conditions: [
          cond(
            'Degraded',
            'True',
            'ModelNotFound',
            'spec.variants[1].modelRef: RecommenderModel drinks-v3 not found',
          ),
        ],
      },
      {},
      'Degraded',
      /drinks-v3 not found/,
    ],
    [
      'a winner awaits a person',
      {
        observedGeneration: 3,
        phase: 'Running',
        winner: 'v2',
        conditions: [cond('WinnerAwaitsPromotion', 'True', 'AutoPromoteOff', 'v2 won; promote it by hand')],
      },
      {},
      'Suspended',
      /v2 won/,
    ],
    ['paused', { observedGeneration: 3, phase: 'Running' }, { paused: true }, 'Suspended', /Paused/],
  ];
  it.each(cases)('%s', async (_name, status, spec, want, message) => {
    const hs = await health('Experiment', exp(status, spec));
    expect(hs.status).toBe(want);
    expect(hs.message).toMatch(message);
  });
});

describe('StoreRegion', () => {
  const region = (status: unknown) => ({
    kind: 'StoreRegion',
    metadata: meta,
    spec: { stores: ['s0001'], timezone: 'UTC' },
    ...(status === undefined ? {} : { status }),
  });
  const cases: [string, unknown, string, RegExp][] = [
    ['no status yet', undefined, 'Progressing', /Waiting/],
    [
      'floor computed, in a peak',
      {
        observedGeneration: 3,
        desiredMinReplicas: 6,
        activeWindow: 'Mon-Fri 06:00-09:00 x3',
        conditions: [cond('Ready', 'True', 'FloorApplied', 'floor 6')],
      },
      'Healthy',
      /^floor 6 \(Mon-Fri 06:00-09:00 x3\)$/,
    ],
    ['floor computed, no Ready condition yet', { desiredMinReplicas: 2 }, 'Healthy', /^floor 2$/],
    [
      'unknown timezone',
      {
        observedGeneration: 3,
        conditions: [
          cond('Degraded', 'True', 'UnknownTimezone', 'spec.timezone "Mars/Olympus" is not an IANA timezone'),
        ],
      },
      'Degraded',
      /spec.timezone "Mars\/Olympus"/,
    ],
    [
      'capacity clamped',
      {
        observedGeneration: 3,
        desiredMinReplicas: 20,
        conditions: [
          cond('Ready', 'True', 'FloorApplied', ''),
          cond('CapacityClamped', 'True', 'AboveMax', 'floor 36 clamped to spec.serving.maxReplicas 20'),
        ],
      },
      'Degraded',
      /^Capacity clamped: floor 36/,
    ],
    [
      'freeze window active',
      {
        observedGeneration: 3,
        desiredMinReplicas: 6,
        conditions: [
          cond('Ready', 'True', 'FloorApplied', ''),
          cond('Frozen', 'True', 'FreezeWindow', 'freezeWindows[0] 06:00-10:00'),
        ],
      },
      'Suspended',
      /^Freeze window active: freezeWindows\[0\] 06:00-10:00; floor 6/,
    ],
    [
      'freeze window active (status.frozenUntil)',
      { desiredMinReplicas: 6, frozenUntil: '2026-11-24T18:00:00Z' },
      'Suspended',
      /until 2026-11-24T18:00:00Z/,
    ],
    [
      'not ready, with a reason',
      {
        observedGeneration: 3,
        conditions: [cond('Ready', 'False', 'Waiting', 'waiting for the HPA of drinks')],
      },
      'Progressing',
      /waiting for the HPA/,
    ],
  ];
  it.each(cases)('%s', async (_name, status, want, message) => {
    const hs = await health('StoreRegion', region(status));
    expect(hs.status).toBe(want);
    expect(hs.message).toMatch(message);
  });
});

it('docs/gitops.md carries the same scripts in its argocd-cm snippet', async () => {
  const doc = await readFile(join(root, 'docs/gitops.md'), 'utf8');
  const blocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map(
    (m) => parse(m[1]!) as Record<string, unknown>,
  );
  const cm = blocks.find(
    (b) => b['kind'] === 'ConfigMap' && (b['metadata'] as { name?: string })?.name === 'argocd-cm',
  ) as { data: Record<string, string> } | undefined;
  expect(cm, 'an argocd-cm ConfigMap block').toBeDefined();
  for (const kind of ['RecommenderModel', 'Experiment', 'StoreRegion']) {
    const script = await readFile(join(healthDir, `crema.dev_${kind}.lua`), 'utf8');
    expect(cm!.data[`resource.customizations.health.crema.dev_${kind}`], kind).toBe(script);
  }
});
