/**
 * `kubectl crema dashboard`: a web view of the models, canary steps, experiments and regions the
 * user's kubeconfig can see, served on loopback by the plugin itself (like Argo Rollouts'
 * dashboard). Each page load reads the API server afresh and the page reloads itself every few
 * seconds; nothing is cached and nothing is written, so it needs only the `get`/`list` rights.
 * `GET /api/state` gives the same data as JSON.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Experiment, RecommenderModel, StoreRegion } from '../api/v1alpha1/index.js';
import type { Command } from './args.js';
import { regionCalendar } from './calendar.js';
import { listObjects, type Cluster } from './cluster.js';
import type { CliIO } from './commands.js';
import { CliError, EXIT, type ExitCode } from './errors.js';
import { ago, formatDuration, nextChangeOf, statusIsCurrent } from './render.js';
import { judgeModel } from './verdict.js';

/** How often the page reloads itself, seconds. */
const REFRESH_S = 5;

const esc = (v: unknown): string => String(v ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const pct = (x: number | undefined) =>
  x === undefined ? '–' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;

/** Everything one page shows, read in one pass. */
export interface DashboardState {
  readonly generatedAt: string;
  readonly namespace: string | null;
  readonly models: readonly RecommenderModel[];
  readonly experiments: readonly Experiment[];
  readonly regions: readonly StoreRegion[];
}

async function readState(c: Cluster, now: Date): Promise<DashboardState> {
  const [models, experiments, regions] = await Promise.all([
    listObjects(c, 'models'),
    listObjects(c, 'experiments'),
    listObjects(c, 'regions'),
  ]);
  return { generatedAt: now.toISOString(), namespace: c.namespace ?? null, models, experiments, regions };
}

const ref = (o: { metadata?: { name?: string; namespace?: string } }) =>
  `${esc(o.metadata?.namespace)}/<b>${esc(o.metadata?.name)}</b>`;

function modelCard(m: RecommenderModel, now: Date): string {
  const s = m.status ?? {};
  const v = judgeModel(m);
  const steps = m.spec.rollout?.steps ?? [];
  const canaryW = s.canary?.weight ?? s.promotion?.weight ?? 0;
  const step = s.canary?.step ?? -1;
  const stepsHtml = steps
    .map(
      (st, i) =>
        `<li class="${i < step ? 'done' : i === step ? 'current' : ''}">${st.weight}%${st.pause ? ` · ${esc(st.pause)}` : ' · manual'}${st.analysis === false ? '' : ' · analysed'}</li>`,
    )
    .join('');
  const analysis = (s.canary?.analysis ?? [])
    .map(
      (a) =>
        `<li class="verdict-${esc(a.verdict)}">step ${(a.step ?? 0) + 1} <b>${esc(a.verdict)}</b> ${esc(ago(a.at, now))} — ${esc(a.message)}</li>`,
    )
    .join('');
  return `<section class="card model" data-name="${esc(m.metadata?.name)}">
  <h3>${ref(m)} <span class="badge ${esc(v.verdict)}">${esc(s.phase ?? 'no status')}</span>${m.spec.paused ? ' <span class="badge Paused">paused</span>' : ''}</h3>
  <p class="verdict">${esc(v.verdict)} — ${esc(v.message)}</p>
  <div class="weights" title="traffic split">
    <div class="stable" style="width:${100 - canaryW}%">stable r${esc(s.stable?.revision ?? '?')} ${100 - canaryW}%</div>
    ${canaryW > 0 ? `<div class="canary" style="width:${canaryW}%">canary r${esc(s.canary?.revision ?? s.promotion?.revision ?? '?')} ${canaryW}%</div>` : ''}
  </div>
  ${steps.length ? `<ol class="steps">${stepsHtml}</ol>` : '<p>no canary steps: a new model replaces the stable one at once</p>'}
  ${s.canary ? `<p>canary failures ${s.canary.failures ?? 0}/${m.spec.rollout?.analysis?.failureLimit ?? 2} · ready ${s.canary.readyReplicas ?? 0}${s.canary.stepStartedAt ? ` · step started ${esc(ago(s.canary.stepStartedAt, now))}` : ''}</p>` : ''}
  ${analysis ? `<ul class="analysis">${analysis}</ul>` : ''}
  <p class="meta">ready ${s.readyReplicas ?? 0}/${s.replicas ?? 0} · ${esc(m.spec.model.task)}${m.status && !statusIsCurrent(m) ? ' · status is of an older generation' : ''}</p>
</section>`;
}

/** A lift interval drawn on a −20 % … +20 % axis (clamped), the point estimate as a tick. */
function intervalBar(lift?: number, lo?: number, hi?: number): string {
  if (lo === undefined || hi === undefined) return '';
  const x = (v: number) => Math.max(0, Math.min(100, 50 + v * 250));
  const cls = lo > 0 ? 'better' : hi < 0 ? 'worse' : 'unsure';
  return `<div class="ci"><div class="zero"></div><div class="range ${cls}" style="left:${x(lo)}%;width:${Math.max(0.5, x(hi) - x(lo))}%"></div>${lift === undefined ? '' : `<div class="point" style="left:${x(lift)}%"></div>`}</div>`;
}

function experimentCard(e: Experiment, now: Date): string {
  const s = e.status ?? {};
  const results = new Map((s.variants ?? []).map((v) => [v.name ?? '', v]));
  const rows = e.spec.variants
    .map((v) => {
      const r = results.get(v.name);
      const rate = r?.exposures ? `${(((r.conversions ?? 0) / r.exposures) * 100).toFixed(1)}%` : '–';
      return `<tr data-variant="${esc(v.name)}"><td>${esc(v.name)}${s.winner === v.name ? ' 🏆' : ''}</td><td>${esc(v.modelRef)}</td><td>${v.weight}%</td><td>${r?.exposures?.toLocaleString('en-US') ?? '–'}</td><td>${rate}</td><td>${r?.meanOrderValue?.toFixed(2) ?? '–'}</td><td>${pct(r?.lift)}</td><td>${r?.ciLow === undefined ? '–' : `[${pct(r.ciLow)}, ${pct(r.ciHigh)}]`}</td><td>${intervalBar(r?.lift, r?.ciLow, r?.ciHigh)}</td></tr>`;
    })
    .join('');
  return `<section class="card experiment" data-name="${esc(e.metadata?.name)}">
  <h3>${ref(e)} <span class="badge">${esc(s.phase ?? 'no status')}</span></h3>
  <p>primary ${esc(e.spec.primaryMetric)} · alpha ${e.spec.decision?.alpha ?? 0.05}${s.startedAt ? ` · started ${esc(ago(s.startedAt, now))}` : ''}</p>
  <table><thead><tr><th>variant</th><th>model</th><th>weight</th><th>exposures</th><th>conv. rate</th><th>mean order</th><th>lift</th><th>interval</th><th>−20% · 0 · +20%</th></tr></thead><tbody>${rows}</tbody></table>
  <p class="decision">${esc(s.decision ?? 'no decision yet')}${s.winner ? ` · winner <b>${esc(s.winner)}</b>` : ''}</p>
</section>`;
}

function regionCard(r: StoreRegion, now: Date): string {
  const s = r.status ?? {};
  const cal = regionCalendar(r.spec, now);
  const items = cal.error
    ? `<li>${esc(cal.error)}</li>`
    : cal.entries
        .map(
          (e) =>
            `<li class="${e.kind}${e.active ? ' active' : ''}">${esc(e.startLocal)} – ${esc(e.endLocal)} ${e.kind === 'freeze' ? 'freeze' : `${e.kind === 'promotion' ? `promotion ${esc(e.name)}` : 'peak'} ×${e.multiplier}`}${e.active ? ' ← now' : ''}</li>`,
        )
        .join('') || '<li>nothing scheduled</li>';
  const next = nextChangeOf(s as Record<string, unknown>);
  return `<section class="card region" data-name="${esc(r.metadata?.name)}">
  <h3>${ref(r)} <span class="badge">floor ${esc(s.desiredMinReplicas ?? '?')}</span></h3>
  <p>${esc(r.spec.timezone)}${cal.localNow ? ` (now ${esc(cal.localNow)})` : ''} · model ${esc(r.spec.serving?.modelRef ?? '–')} · ${r.spec.stores.length} stores${s.activeWindow ? ` · active: ${esc(s.activeWindow)}` : ''}</p>
  ${next?.at ? `<p>next: floor ${esc(next.desiredMinReplicas ?? '?')} in ${esc(formatDuration(Date.parse(next.at) - now.getTime()))}</p>` : ''}
  <ul class="calendar">${items}</ul>
</section>`;
}

const CSS = `body{font:14px system-ui,sans-serif;margin:1.5em;background:#f6f5f2;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:1.5em}h3{margin:0 0 .4em;font-size:15px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em 1em;margin:.6em 0}
.badge{font-size:12px;padding:1px 6px;border-radius:8px;background:#ddd}
.badge.Healthy{background:#b9e4c2}.badge.Failed{background:#f3b5b5}.badge.Progressing{background:#cfe0f7}.badge.Paused{background:#f5e2a8}
.weights{display:flex;height:22px;border-radius:4px;overflow:hidden;font-size:12px;color:#fff;margin:.4em 0}
.weights .stable{background:#3a7d44;padding-left:4px}.weights .canary{background:#d9822b;padding-left:4px}
.steps{display:flex;gap:.5em;list-style:none;padding:0}.steps li{border:1px solid #ccc;border-radius:4px;padding:2px 6px}
.steps li.done{background:#e3f1e5}.steps li.current{background:#fbe3c6;font-weight:bold}
.verdict-Fail{color:#a11}.verdict-Pass{color:#275e30}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}
.ci{position:relative;width:160px;height:12px;background:#f0f0f0}.ci .zero{position:absolute;left:50%;top:0;bottom:0;border-left:1px solid #888}
.ci .range{position:absolute;top:3px;height:6px}.range.better{background:#3a7d44}.range.worse{background:#b33}.range.unsure{background:#999}
.ci .point{position:absolute;top:0;height:12px;border-left:2px solid #000}
.calendar li.active{font-weight:bold}.calendar li.freeze{color:#7a5a00}.meta{color:#666}`;

/** The whole page (pure). */
export function renderDashboard(state: DashboardState, now: Date): string {
  const section = (title: string, cards: string[], empty: string) =>
    `<h2>${title} (${cards.length})</h2>${cards.length ? cards.join('\n') : `<p class="empty">${empty}</p>`}`;
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="${REFRESH_S}">
<title>Crema — ${esc(state.namespace ?? 'all namespaces')}</title><style>${CSS}</style></head><body>
<h1>Crema · ${esc(state.namespace ?? 'all namespaces')}</h1><p class="meta">read from the API server at ${esc(state.generatedAt)}; reloads every ${REFRESH_S} s</p>
${section(
  'Models',
  state.models.map((m) => modelCard(m, now)),
  'no RecommenderModels',
)}
${section(
  'Experiments',
  state.experiments.map((e) => experimentCard(e, now)),
  'no Experiments',
)}
${section(
  'Store regions',
  state.regions.map((r) => regionCard(r, now)),
  'no StoreRegions',
)}
</body></html>`;
}

/** Serves the dashboard until SIGINT/SIGTERM; prints its URL first. */
export async function serveDashboard(
  c: Cluster,
  cmd: Extract<Command, { name: 'dashboard' }>,
  io: CliIO,
): Promise<ExitCode> {
  // Fail before listening when the CRDs are missing or the credentials do not work.
  await readState(c, io.now());
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET' }).end('method not allowed: the dashboard only reads\n');
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path !== '/' && path !== '/api/state') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`no page ${path}\n`);
      return;
    }
    try {
      const now = io.now();
      const state = await readState(c, now);
      if (path === '/api/state')
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(state));
      else
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(renderDashboard(state, now));
    } catch (err) {
      const msg = err instanceof CliError ? err.message : String((err as Error).message);
      res.writeHead(502, { 'content-type': 'text/plain' }).end(`cannot read the cluster: ${msg}\n`);
    }
  };
  const server = createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new CliError(`--port: cannot listen on ${cmd.address}:${cmd.port} (${err.code ?? err.message})`),
      ),
    );
    server.listen(cmd.port, cmd.address, resolve);
  });
  const { port } = server.address() as AddressInfo;
  io.out(`Crema dashboard on http://${cmd.address}:${port}/ (Ctrl-C to stop)`);
  await new Promise<void>((resolve) => {
    const stop = () => server.close(() => resolve());
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return EXIT.ok;
}
