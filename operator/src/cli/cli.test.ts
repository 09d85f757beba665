/** Table tests of the plugin's pure parts: argument parsing, verdicts, views, the region calendar. */
import { describe, expect, it } from 'vitest';
import type { RecommenderModel, StoreRegion } from '../api/v1alpha1/index.js';
import { canaryStatus, modelObject, readyStatus, rolledBackStatus } from '../../test/plugin-fixtures.js';
import { parseInvocation } from './args.js';
import { regionCalendar } from './calendar.js';
import { CliError } from './errors.js';
import { drawTree, experimentTree, formatDuration, modelTree, regionTree } from './render.js';
import { exitCodeOf, judgeModel } from './verdict.js';

const refusal = (argv: string[]) => {
  try {
    parseInvocation(argv);
  } catch (err) {
    expect(err).toBeInstanceOf(CliError);
    return (err as CliError).message;
  }
  throw new Error(`accepted ${argv.join(' ')}`);
};

describe('parseInvocation', () => {
  it.each([
    [['get'], { name: 'get', kinds: ['models', 'experiments', 'regions'] }],
    [['get', 'rm', 'drinks'], { name: 'get', kinds: ['models'], resourceName: 'drinks' }],
    [['get', 'StoreRegions'], { name: 'get', kinds: ['regions'] }],
    [
      ['status', 'drinks', '-w', '--timeout', '90s'],
      { name: 'status', resourceName: 'drinks', watch: true, timeoutMs: 90_000 },
    ],
    [['promote', 'drinks', '--full'], { name: 'promote', resourceName: 'drinks', full: true }],
    [['exp', 'stop', 'e1'], { name: 'experiment', action: 'stop', resourceName: 'e1' }],
    [[], { name: 'help' }],
  ])('%j', (argv, command) => {
    expect(parseInvocation(argv).command).toEqual(command);
  });

  it('reads the kubectl flags', () => {
    expect(parseInvocation(['-n', 'shop', '--context', 'prod', '-o', 'yaml', 'get']).options).toEqual({
      namespace: 'shop',
      context: 'prod',
      allNamespaces: false,
      output: 'yaml',
    });
  });

  it.each([
    [['get', 'pods'], 'get: unknown resource kind "pods" (use models, experiments or regions)'],
    [['status'], 'status: a resource NAME is required'],
    [['status', 'x', '--timeout', '5m'], '--timeout: only valid with --watch'],
    [['status', 'x', '-w', '--timeout', '0s'], '--timeout: must be longer than 0s'],
    [['promote', 'A_B'], 'promote: "A_B" is not a valid resource name'],
    [['abort', 'x', 'y'], 'abort: unexpected argument "y"'],
    [['pause', 'x', '-A'], '--all-namespaces: only valid for get and dashboard'],
    [['get', '-n', 'a', '-A'], '--namespace and --all-namespaces: give one or the other'],
    [['get', '-o', 'table'], '--output: must be json or yaml, not "table"'],
    [['experiment'], 'experiment: an action is required (use conclude or stop)'],
    [
      ['rollback', 'x'],
      'unknown command "rollback" (use get, status, promote, abort, pause, resume, experiment, dashboard)',
    ],
  ])('refuses %j', (argv, message) => {
    expect(refusal(argv)).toBe(message);
  });
});

describe('judgeModel', () => {
  const at = new Date('2026-12-01T12:00:00Z');
  const model = (status: RecommenderModel['status'], generation = 1, paused = false) => ({
    ...modelObject('ns', 'm', paused ? { paused } : {}),
    metadata: { name: 'm', namespace: 'ns', generation },
    ...(status ? { status } : {}),
  });
  it.each([
    ['no status', 'Pending', 3, model(undefined)],
    ['ready', 'Healthy', 0, model(readyStatus(at))],
    ['canary running', 'Progressing', 3, model(canaryStatus(at))],
    ['canary paused', 'Paused', 3, model(canaryStatus(at), 1, true)],
    ['rolled back', 'Failed', 1, model(rolledBackStatus(at))],
    ['degraded', 'Failed', 1, model({ ...readyStatus(at), phase: 'Degraded' })],
    // Ready for generation 1 says nothing about the spec a user just applied.
    ['ready but stale', 'Pending', 3, model(readyStatus(at), 2)],
    ['rolled back but stale', 'Pending', 3, model(rolledBackStatus(at), 2)],
  ] as const)('%s → %s (exit %d)', (_, verdict, code, m) => {
    const v = judgeModel(m as RecommenderModel);
    expect(v.verdict).toBe(verdict);
    expect(exitCodeOf(v.verdict)).toBe(code);
  });
});

describe('views of objects with missing or unknown status fields', () => {
  const at = new Date('2026-12-01T12:00:00Z');
  it('a model with an empty status and a canary without analysis still draws', () => {
    const m = modelObject('ns', 'm');
    expect(drawTree(modelTree({ ...m, status: {} }, at))).toContain('stable    none yet  ready 0/0');
    const s = canaryStatus(at);
    const text = drawTree(modelTree({ ...m, status: { ...s, canary: { weight: 10 } } }, at));
    expect(text).toContain('canary    revision ?  ?  weight 10%  step 1/3');
    expect(text).toContain('step 1 pause over, waiting for analysis');
  });

  it('status fields a newer controller adds are printed, not dropped', () => {
    const e = {
      apiVersion: 'crema.dev/v1alpha1' as const,
      kind: 'Experiment' as const,
      metadata: { name: 'e', namespace: 'ns' },
      spec: {
        variants: [
          { name: 'a', modelRef: 'm1', weight: 50 },
          { name: 'b', modelRef: 'm2', weight: 50 },
        ],
        assignment: { salt: 'x' },
        primaryMetric: 'conversion' as const,
      },
      status: {
        phase: 'Running' as const,
        variants: [{ name: 'b', exposures: 10, pValue: 0.2 }],
        srm: { pValue: 0.5, mismatch: false },
        look: 7,
      },
    };
    const text = drawTree(experimentTree(e as never, at));
    expect(text).toMatch(/b +m2 +50% +10 +- +0\.0% .* pValue: 0\.2/);
    expect(text).toContain('srm: {"pValue":0.5,"mismatch":false}');
    expect(text).toContain('look: 7');
  });

  it("a region's next change is shown from the controller's status.nextChangeTime / nextMinReplicas", () => {
    const r: StoreRegion = {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'StoreRegion',
      metadata: { name: 'r', namespace: 'ns' },
      spec: { stores: ['a'], timezone: 'Mars/Olympus' },
      status: {
        desiredMinReplicas: 2,
        nextChangeTime: '2026-12-01T13:30:00Z',
        nextMinReplicas: 6,
      } as never,
    };
    const text = drawTree(regionTree(r, at));
    expect(text).toContain('next      floor 6  at 2026-12-01T13:30:00Z (in 1h30m)');
    expect(text).toContain('next 24 h  timezone "Mars/Olympus" is unknown: nothing can be scheduled');
  });
});

describe('regionCalendar', () => {
  const spec = (timezone: string): StoreRegion['spec'] => ({
    stores: ['s'],
    timezone,
    peakWindows: [{ days: ['Sun', 'Mon'], start: '06:00', end: '09:00', multiplier: 3 }],
    freezeWindows: [{ days: ['Sun'], start: '01:00', end: '03:30' }],
  });

  it('reads windows in the region’s time across the spring-forward night (America/Los_Angeles)', () => {
    // Sat 2027-03-13 20:00 PST = 2027-03-14 04:00Z; clocks jump 02:00 → 03:00 on Sunday.
    const cal = regionCalendar(spec('America/Los_Angeles'), new Date('2027-03-14T04:00:00Z'));
    expect(cal.localNow).toBe('Sat 20:00');
    expect(cal.entries.map((e) => [e.kind, e.start.toISOString(), e.end.toISOString()])).toEqual([
      // 01:00 PST = 09:00Z; 03:30 PDT = 10:30Z (the night is an hour short).
      ['freeze', '2027-03-14T09:00:00.000Z', '2027-03-14T10:30:00.000Z'],
      // 06:00 PDT = 13:00Z.
      ['peak', '2027-03-14T13:00:00.000Z', '2027-03-14T16:00:00.000Z'],
    ]);
    expect(cal.entries[1]?.startLocal).toBe('Sun 06:00');
  });

  it('marks the window in effect now and drops what ended', () => {
    const cal = regionCalendar(spec('UTC'), new Date('2027-03-14T07:00:00Z'));
    expect(cal.entries.map((e) => [e.kind, e.startLocal, e.active])).toEqual([
      ['peak', 'Sun 06:00', true],
      ['peak', 'Mon 06:00', false],
    ]);
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [192_000, '3m12s'],
    [3_725_000, '1h2m'],
    [90_000_000, '1d1h'],
  ])('%d ms → %s', (ms, s) => expect(formatDuration(ms)).toBe(s));
});
