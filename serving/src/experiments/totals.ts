/**
 * The experiment totals as gauges: at each scrape, serving reads every indexed experiment's
 * totals hash from Redis (written exactly once per exposure and order by counting.ts's scripts)
 * and exports it. Every serving process exports the same numbers, so a restarted or replaced pod
 * takes nothing with it, and one that just started exports the full totals before its first
 * request. A failed read is counted (crema_experiment_count_failures_total{kind="scrape"}) and
 * omits these series; the rest of the scrape answers as usual. (The failure shows from the next
 * scrape on: prom-client reads the counter while this read is still out.)
 */
import { Gauge, type Counter, type Registry } from 'prom-client';
import {
  EXPERIMENT_GAUGES,
  EXPERIMENT_INDEX_KEY,
  experimentIndexEntry,
  experimentTotalsKey,
  parseExperimentIndexEntry,
  parseTotalsField,
} from '../../../contracts/experiments.js';
import type { RedisClient } from '../../../contracts/redis.js';

/** Where the totals come from (Redis in production). */
export interface TotalsSource {
  /** Every index entry (`<namespace>/<name>/<run>`, contracts/experiments.ts). */
  experiments(): Promise<string[]>;
  /** The run's totals hash; empty once it expired. */
  totals(namespace: string, name: string, run: string): Promise<Record<string, string>>;
  /**
   * Drops an index entry whose totals expired (`run` undefined: a malformed entry). An entry
   * whose totals exist again (a new user since they were read) stays.
   */
  forget(entry: string, run?: { namespace: string; name: string; run: string }): Promise<void>;
}

/** The totals of the index in `redis` (a cluster client too: one key per command). */
export function redisTotalsSource(redis: RedisClient): TotalsSource {
  return {
    experiments: () => redis.smembers(EXPERIMENT_INDEX_KEY),
    totals: (namespace, name, run) => redis.hgetall(experimentTotalsKey(namespace, name, run)),
    forget: async (entry, r) => {
      if (!r) return void (await redis.srem(EXPERIMENT_INDEX_KEY, entry));
      // The index and the totals are in different slots (no script or MULTI spans both in a
      // cluster). A new user runs EXPOSE (creating the totals) and then SADDs the entry; so:
      // drop the entry only while the totals do not exist, and put it back if they exist
      // after the drop (an EXPOSE in between, whose SADD may have come before our SREM).
      const key = experimentTotalsKey(r.namespace, r.name, r.run);
      if ((await redis.exists(key)) === 1) return;
      await redis.srem(EXPERIMENT_INDEX_KEY, entry);
      if ((await redis.exists(key)) === 1)
        await redis.sadd(EXPERIMENT_INDEX_KEY, experimentIndexEntry(r.namespace, r.name, r.run));
    },
  };
}

/** One gauge sample. */
export interface TotalsSample {
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** The samples of one experiment's totals hash (pure). Fields of another shape are skipped. */
export function buildTotalsSamples(
  namespace: string,
  experiment: string,
  run: string,
  hash: Readonly<Record<string, string>>,
): { users: TotalsSample[]; sums: TotalsSample[] } {
  const users: TotalsSample[] = [];
  const sums: TotalsSample[] = [];
  for (const [field, text] of Object.entries(hash)) {
    const f = parseTotalsField(field);
    const value = Number(text);
    if (!f || !Number.isFinite(value)) continue;
    const base = { experiment, variant: f.variant, model: f.model, namespace, run };
    if (f.kind === 'users') users.push({ labels: base, value });
    else sums.push({ labels: { ...base, metric: f.metric, stat: f.stat }, value });
  }
  return { users, sums };
}

/** Options of ExperimentTotalsGauges. */
export interface ExperimentTotalsOptions {
  /** A read slower than this fails the series (not the scrape), ms. Default 1000. */
  readonly timeoutMs?: number;
}

/** The two gauges, filled from `source` at scrape time. */
export class ExperimentTotalsGauges {
  readonly users: Gauge<string>;
  readonly sums: Gauge<string>;
  private reading: Promise<{ users: TotalsSample[]; sums: TotalsSample[] } | undefined> | undefined;
  private readonly timeoutMs: number;

  constructor(
    registry: Registry,
    private readonly source: TotalsSource,
    /** crema_experiment_count_failures_total (counting.ts); a failed read adds kind=scrape. */
    private readonly failures: Counter<string>,
    opts: ExperimentTotalsOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 1000;
    // prom-client asks every metric of a scrape at once: both gauges share one read. `collect`
    // runs with `this` = the gauge.
    const read = () => this.read();
    this.users = new Gauge({
      name: EXPERIMENT_GAUGES.users.name,
      help: 'Users exposed to an experiment variant, each counted once per experiment (Redis totals; every serving pod reports the same: take max across pods).',
      labelNames: EXPERIMENT_GAUGES.users.labels,
      registers: [registry],
      async collect() {
        const r = await read();
        this.reset();
        for (const s of r?.users ?? []) this.set(s.labels, s.value);
      },
    });
    this.sums = new Gauge({
      name: EXPERIMENT_GAUGES.sums.name,
      help: 'Sufficient statistics (sumY, sumYY, CUPED sums) of each experiment metric over exposed users (Redis totals; take max across pods).',
      labelNames: EXPERIMENT_GAUGES.sums.labels,
      registers: [registry],
      async collect() {
        const r = await read();
        this.reset();
        for (const s of r?.sums ?? []) this.set(s.labels, s.value);
      },
    });
  }

  private read(): Promise<{ users: TotalsSample[]; sums: TotalsSample[] } | undefined> {
    this.reading ??= this.readOnce().finally(() => (this.reading = undefined));
    return this.reading;
  }

  private async readOnce(): Promise<{ users: TotalsSample[]; sums: TotalsSample[] } | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`experiment totals not read in ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
    });
    try {
      return await Promise.race([this.readAll(), timeout]);
    } catch {
      this.failures.inc({ kind: 'scrape' });
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  private async readAll(): Promise<{ users: TotalsSample[]; sums: TotalsSample[] }> {
    const ids = await this.source.experiments();
    const out = { users: [] as TotalsSample[], sums: [] as TotalsSample[] };
    const hashes = await Promise.all(
      ids.map(async (id) => {
        const parsed = parseExperimentIndexEntry(id);
        if (!parsed) return { id, parsed, hash: {} };
        return { id, parsed, hash: await this.source.totals(parsed.namespace, parsed.name, parsed.run) };
      }),
    );
    for (const { id, parsed, hash } of hashes) {
      if (!parsed || Object.keys(hash).length === 0) {
        // Expired (no exposure or order for maxDuration) or not an experiment id: out of the
        // index. A new user of the experiment adds it back.
        await this.source.forget(id, parsed);
        continue;
      }
      const s = buildTotalsSamples(parsed.namespace, parsed.name, parsed.run, hash);
      out.users.push(...s.users);
      out.sums.push(...s.sums);
    }
    return out;
  }
}
