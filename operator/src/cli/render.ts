/**
 * The human views of `kubectl crema get` (pure: objects and a clock in, text out). Every status
 * field is optional here: a view of an object the operator has not reconciled yet, or written by
 * an older operator, shows what is there and says what is not. Status fields this file does not
 * know yet (a newer controller's) are still printed, generically, under the object.
 */
import type { Experiment, RecommenderModel, StoreRegion } from '../api/v1alpha1/index.js';
import { regionCalendar, type CalendarEntry } from './calendar.js';

/** One line of a tree and the lines under it. */
export interface TreeNode {
  readonly label: string;
  readonly children?: readonly TreeNode[];
}

/** Draws `nodes` as a tree with box-drawing branches (like `kubectl argo rollouts get`). */
export function drawTree(root: TreeNode): string {
  const lines = [root.label];
  const walk = (nodes: readonly TreeNode[], prefix: string) => {
    nodes.forEach((n, i) => {
      const last = i === nodes.length - 1;
      lines.push(`${prefix}${last ? '└─ ' : '├─ '}${n.label}`);
      if (n.children?.length) walk(n.children, `${prefix}${last ? '   ' : '│  '}`);
    });
  };
  walk(root.children ?? [], '');
  return lines.join('\n');
}

/** 3725000 → "1h2m", 192000 → "3m12s", 0.4 s → "0s". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d) return `${d}d${h ? `${h}h` : ''}`;
  if (h) return `${h}h${m ? `${m}m` : ''}`;
  if (m) return `${m}m${sec ? `${sec}s` : ''}`;
  return `${sec}s`;
}

/** "3m12s ago" for an RFC 3339 time, "" when absent or unparsable. */
export function ago(iso: string | undefined, now: Date): string {
  const t = iso ? Date.parse(iso) : NaN;
  return Number.isNaN(t) ? '' : `${formatDuration(now.getTime() - t)} ago`;
}

const short = (sha: string | undefined) => (sha ? sha.slice(0, 12) : '?');
const pct = (x: number | undefined) => (x === undefined ? '?' : `${x}%`);
const join = (parts: readonly (string | false | undefined | null)[]) => parts.filter(Boolean).join('  ');

function parseMs(d: string | undefined): number | undefined {
  const m = d ? /^([0-9]+)(s|m|h)$/.exec(d) : null;
  return m ? Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 's' | 'm' | 'h'] : undefined;
}

interface AnyCondition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}

function conditionNodes(conditions: readonly AnyCondition[] | undefined, now: Date): TreeNode[] {
  if (!conditions?.length) return [];
  const width = Math.max(...conditions.map((c) => c.type.length));
  return [
    {
      label: 'conditions',
      children: conditions.map((c) => ({
        label: join([
          c.type.padEnd(width),
          c.status.padEnd(7),
          c.reason,
          c.message ? `- ${c.message}` : '',
          c.lastTransitionTime ? `(${ago(c.lastTransitionTime, now)})` : '',
        ]),
      })),
    },
  ];
}

/** Renders a value compactly for the generic "other fields" lines. */
function compact(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const s = JSON.stringify(v);
  return s.length > 160 ? `${s.slice(0, 157)}...` : s;
}

/** Lines for the fields of `obj` this view does not render itself (a newer controller's). */
function otherFields(obj: object | undefined, known: readonly string[]): TreeNode[] {
  if (!obj) return [];
  return Object.entries(obj)
    .filter(([k, v]) => !known.includes(k) && v !== undefined)
    .map(([k, v]) => ({ label: `${k}: ${compact(v)}` }));
}

/** Whether status describes the current spec (the operator has seen the latest generation). */
export function statusIsCurrent(obj: {
  metadata?: { generation?: number };
  status?: { observedGeneration?: number };
}): boolean {
  return (obj.status?.observedGeneration ?? -1) >= (obj.metadata?.generation ?? 0);
}

function header(
  kind: string,
  obj: { metadata?: { name?: string; namespace?: string } },
  phase: string | undefined,
) {
  return `${kind} ${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}  ${phase ?? '(no status yet)'}`;
}

const MODEL_STATUS_KNOWN = [
  'observedGeneration',
  'phase',
  'conditions',
  'stable',
  'canary',
  'promotion',
  'pendingCommand',
  'abortedModelSha',
  'readyReplicas',
  'replicas',
  'history',
  'lineage',
];

/** The tree of one model: spec → stable → canary (steps, analysis) → promotion → conditions → history. */
export function modelTree(m: RecommenderModel, now: Date): TreeNode {
  const s = m.status ?? {};
  const spec = m.spec;
  const steps = spec.rollout?.steps ?? [];
  const nodes: TreeNode[] = [];
  const stale = m.status && !statusIsCurrent(m);

  nodes.push({
    label: join([
      `spec      ${spec.model.task}`,
      `model ${short(spec.model.sha256)}`,
      steps.length ? `${steps.length} canary steps` : 'no canary (replace at once)',
      spec.paused && 'PAUSED (spec.paused)',
      stale &&
        `status is of generation ${s.observedGeneration ?? '?'}, spec is ${m.metadata?.generation ?? '?'}`,
    ]),
  });

  const canaryWeight = s.canary?.weight ?? s.promotion?.weight ?? 0;
  if (s.stable) {
    nodes.push({
      label: join([
        `stable    revision ${s.stable.revision ?? '?'}`,
        short(s.stable.modelSha),
        `weight ${100 - canaryWeight}%`,
        `ready ${s.readyReplicas ?? 0}/${s.replicas ?? 0}`,
        s.stable.since && `since ${ago(s.stable.since, now)}`,
      ]),
    });
  } else if (m.status) {
    nodes.push({ label: `stable    none yet  ready ${s.readyReplicas ?? 0}/${s.replicas ?? 0}` });
  }

  if (s.canary) {
    const c = s.canary;
    const step = c.step ?? 0;
    const failureLimit = spec.rollout?.analysis?.failureLimit;
    const children: TreeNode[] = [];
    if (steps.length) {
      const current = steps[step];
      const pauseMs = parseMs(current?.pause);
      const left =
        pauseMs !== undefined && c.stepStartedAt
          ? pauseMs - (now.getTime() - Date.parse(c.stepStartedAt))
          : undefined;
      children.push({
        label: `steps     ${steps
          .map((st, i) => {
            const txt = `${st.weight}%${st.pause ? ` ${st.pause}` : ' manual'}${st.analysis === false ? '' : ' analysed'}`;
            return i < step ? `✔ ${txt}` : i === step ? `[${txt}]` : txt;
          })
          .join(' → ')}`,
      });
      if (current)
        children.push({
          label:
            current.pause === undefined
              ? `step ${step + 1} holds until promoted (kubectl crema promote ${m.metadata?.name ?? ''})`
              : left !== undefined && left > 0
                ? `step ${step + 1} pause: ${formatDuration(left)} left`
                : `step ${step + 1} pause over${current.analysis === false ? '' : ', waiting for analysis'}`,
        });
    }
    const analysis = c.analysis ?? [];
    if (analysis.length)
      children.push({
        label: 'analysis (newest first)',
        children: analysis.map((a) => ({
          label: join([
            `step ${(a.step ?? 0) + 1}`,
            (a.verdict ?? '?').padEnd(12),
            a.at && ago(a.at, now),
            a.message,
          ]),
        })),
      });
    nodes.push({
      label: join([
        `canary    revision ${c.revision ?? '?'}`,
        short(c.modelSha),
        `weight ${pct(c.weight)}`,
        steps.length ? `step ${step + 1}/${steps.length}` : `step ${step + 1}`,
        `failures ${c.failures ?? 0}${failureLimit !== undefined ? `/${failureLimit}` : ''}`,
        `ready ${c.readyReplicas ?? 0}`,
        c.startedAt && `started ${ago(c.startedAt, now)}`,
      ]),
      children,
    });
  }

  if (s.promotion)
    nodes.push({
      label: join([
        `promotion revision ${s.promotion.revision ?? '?'}`,
        short(s.promotion.modelSha),
        `stable pods rolling to it; canary pods keep ${pct(s.promotion.weight)}`,
        s.promotion.startedAt && `decided ${ago(s.promotion.startedAt, now)}`,
      ]),
    });
  if (s.pendingCommand)
    nodes.push({ label: `command   ${s.pendingCommand} (acted on; annotation not yet removed)` });
  if (s.abortedModelSha)
    nodes.push({
      label: `aborted   ${short(s.abortedModelSha)} is not rolled out again until spec.model changes`,
    });
  nodes.push(...conditionNodes(s.conditions, now));
  if (s.history?.length)
    nodes.push({
      label: 'history (newest first)',
      children: s.history.map((h) => ({
        label: join([
          `revision ${h.revision ?? '?'}`,
          short(h.modelSha),
          h.track,
          h.reason,
          h.endedAt && `ended ${ago(h.endedAt, now)}`,
        ]),
      })),
    });
  if (s.lineage)
    nodes.push({
      label: join([
        'lineage',
        s.lineage.datasetHash && `dataset ${s.lineage.datasetHash}`,
        s.lineage.featureJobVersion && `feature job ${s.lineage.featureJobVersion}`,
        s.lineage.codeVersion && `code ${s.lineage.codeVersion}`,
      ]),
    });
  nodes.push(...otherFields(s, MODEL_STATUS_KNOWN));
  return { label: header('RecommenderModel', m, s.phase), children: nodes };
}

/** A table of rows, columns padded to their widest cell. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)];
}

const signedPct = (x: number | undefined) =>
  x === undefined ? '-' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;
const num = (x: number | undefined) => (x === undefined ? '-' : x.toLocaleString('en-US'));

const VARIANT_KNOWN = ['name', 'exposures', 'conversions', 'meanOrderValue', 'lift', 'ciLow', 'ciHigh'];
const EXPERIMENT_STATUS_KNOWN = [
  'observedGeneration',
  'phase',
  'conditions',
  'variants',
  'decision',
  'winner',
  'startedAt',
];

/** One experiment: its variants (spec weights beside their results so far), decision and winner. */
export function experimentTree(e: Experiment, now: Date): TreeNode {
  const s = e.status ?? {};
  const results = new Map((s.variants ?? []).map((v) => [v.name ?? '', v]));
  const rows = e.spec.variants.map((v) => {
    const r = results.get(v.name);
    const rate = r?.exposures ? `${(((r.conversions ?? 0) / r.exposures) * 100).toFixed(1)}%` : '-';
    const extra = r ? otherFields(r, VARIANT_KNOWN).map((n) => n.label) : [];
    return [
      v.name,
      v.modelRef,
      `${v.weight}%`,
      num(r?.exposures),
      num(r?.conversions),
      rate,
      r?.meanOrderValue === undefined ? '-' : r.meanOrderValue.toFixed(2),
      signedPct(r?.lift),
      r?.ciLow === undefined || r.ciHigh === undefined
        ? '-'
        : `[${signedPct(r.ciLow)}, ${signedPct(r.ciHigh)}]`,
      extra.join(' '),
    ];
  });
  const variantLines = table(
    [
      'VARIANT',
      'MODEL',
      'WEIGHT',
      'EXPOSURES',
      'CONVERSIONS',
      'CONV.RATE',
      'MEAN ORDER',
      'LIFT',
      'INTERVAL',
      '',
    ],
    rows,
  );
  const nodes: TreeNode[] = [
    {
      label: join([
        `spec      primary ${e.spec.primaryMetric}`,
        `alpha ${e.spec.decision?.alpha ?? 0.05}`,
        `min ${num(e.spec.minSamplesPerVariant ?? 1000)} per variant`,
        `max ${e.spec.maxDuration ?? '14d'}`,
        e.spec.decision?.autoPromote ? 'auto-promote' : 'winner awaits a person',
        e.spec.guardrails?.p99LatencyMs !== undefined &&
          `guardrail p99 ≤ ${e.spec.guardrails.p99LatencyMs} ms`,
        e.spec.guardrails?.errorRate !== undefined && `guardrail errors ≤ ${e.spec.guardrails.errorRate}`,
      ]),
    },
    { label: 'variants', children: variantLines.map((l) => ({ label: l })) },
    {
      label: join([
        `decision  ${s.decision ?? (e.status ? 'none yet' : 'no status yet (no Experiment controller has written it)')}`,
        s.winner && `winner ${s.winner}`,
        s.startedAt && `started ${ago(s.startedAt, now)}`,
      ]),
    },
    ...conditionNodes(s.conditions, now),
    ...otherFields(s, EXPERIMENT_STATUS_KNOWN),
  ];
  return { label: header('Experiment', e, s.phase), children: nodes };
}

const REGION_STATUS_KNOWN = [
  'observedGeneration',
  'conditions',
  'activeWindow',
  'desiredMinReplicas',
  'activePromotions',
  'nextChange',
  'nextChangeTime',
  'nextMinReplicas',
];

function calendarLine(e: CalendarEntry): string {
  const span = `${e.startLocal} – ${e.endLocal}`;
  const what =
    e.kind === 'freeze'
      ? 'freeze (no canary step advances)'
      : `${e.kind === 'promotion' ? `promotion ${e.name ?? ''}` : 'peak'} ×${e.multiplier}`;
  return join([span.padEnd(23), what, e.active && '← now']);
}

/**
 * A region's next floor change: the controller writes `status.nextChangeTime` and
 * `status.nextMinReplicas`; `status.nextChange {at, desiredMinReplicas}` is read too.
 */
export function nextChangeOf(
  status: Record<string, unknown>,
): { at?: string; desiredMinReplicas?: number; reason?: string } | undefined {
  if (typeof status['nextChangeTime'] === 'string') {
    const floor = status['nextMinReplicas'];
    return {
      at: status['nextChangeTime'],
      ...(typeof floor === 'number' ? { desiredMinReplicas: floor } : {}),
    };
  }
  return status['nextChange'] as { at?: string; desiredMinReplicas?: number; reason?: string } | undefined;
}

/** One region: the floor it asks for now, what is scheduled in the next 24 h of its own time. */
export function regionTree(r: StoreRegion, now: Date): TreeNode {
  const s = r.status ?? {};
  const loose = s as Record<string, unknown>;
  const next = nextChangeOf(loose);
  const cal = regionCalendar(r.spec, now);
  const nodes: TreeNode[] = [
    {
      label: join([
        `spec      model ${r.spec.serving?.modelRef ?? '(none)'}`,
        `${r.spec.stores.length} stores`,
        `timezone ${r.spec.timezone}`,
        cal.localNow && `(now ${cal.localNow} there)`,
        r.spec.serving?.minReplicas !== undefined && `min ${r.spec.serving.minReplicas}`,
        r.spec.serving?.maxReplicas !== undefined && `max ${r.spec.serving.maxReplicas}`,
      ]),
    },
    {
      label: join([
        `floor now ${s.desiredMinReplicas ?? (r.status ? '?' : '? (no StoreRegion controller has written status yet)')}`,
        s.activeWindow && `active: ${s.activeWindow}`,
        !!s.activePromotions?.length && `promotions: ${s.activePromotions.join(', ')}`,
      ]),
    },
  ];
  if (next && (next.at || next.desiredMinReplicas !== undefined))
    nodes.push({
      label: join([
        `next      floor ${next.desiredMinReplicas ?? '?'}`,
        next.at &&
          `at ${next.at}${Date.parse(next.at) > now.getTime() ? ` (in ${formatDuration(Date.parse(next.at) - now.getTime())})` : ''}`,
        next.reason,
      ]),
    });
  nodes.push({
    label: cal.error
      ? `next 24 h  ${cal.error}`
      : `next 24 h (region time)${cal.entries.length ? '' : '  nothing scheduled'}`,
    children: cal.entries.map((e) => ({ label: calendarLine(e) })),
  });
  nodes.push(...conditionNodes(s.conditions, now), ...otherFields(loose, REGION_STATUS_KNOWN));
  return {
    label: header(
      'StoreRegion',
      r,
      s.desiredMinReplicas !== undefined ? `floor ${s.desiredMinReplicas}` : undefined,
    ),
    children: nodes,
  };
}
