/**
 * Rolling distributions of the features and scores a ranking model sees in production,
 * compared with the baseline shipped in its metadata. Only features that vary per request
 * (user and context features) are monitored; item features are constant per version.
 */
import type { ModelMetadata } from '../../../contracts/model-metadata.js';
import { computePsi, RollingHistogram } from './psi.js';

/** One monitored feature: its position in the model input and its rolling window. */
interface Monitored {
  readonly feature: string;
  readonly baseline: readonly number[];
  readonly window: RollingHistogram;
}

/** A PSI reading. */
/**
 * Observations a window needs before its PSI is reported. PSI over a handful of requests is
 * large by chance alone (about bins/n): a canary's first hundred requests read 0.2–0.3 on a
 * healthy model and tripped the drift alert, which rolls a canary back at once.
 */
export const DRIFT_MIN_OBSERVATIONS = 500;

export interface DriftReading {
  readonly feature: string;
  /** Undefined until the window holds `minObservations` values. */
  readonly psi: number | undefined;
  readonly observations: number;
  /** Observed share per baseline bin. */
  readonly shares: readonly number[];
}

export class DriftMonitor {
  private readonly monitored = new Map<string, Monitored>();
  private readonly score: Monitored | undefined;

  /** `features` are the names observed per request; others in the baseline are ignored. */
  constructor(
    readonly meta: ModelMetadata,
    features: readonly string[],
    windowSize = 5000,
    private readonly minObservations = Math.min(DRIFT_MIN_OBSERVATIONS, windowSize),
  ) {
    for (const f of features) {
      const b = meta.baseline.features[f];
      if (!b || b.edges.length !== b.probs.length + 1 || b.probs.length === 0) continue;
      this.monitored.set(f, {
        feature: f,
        baseline: b.probs,
        window: new RollingHistogram(b.edges, windowSize),
      });
    }
    const s = meta.baseline.score;
    if (s.edges.length === s.probs.length + 1 && s.probs.length > 0) {
      this.score = {
        feature: 'score',
        baseline: s.probs,
        window: new RollingHistogram(s.edges, windowSize * 20),
      };
    }
  }

  /** Records one request's value of a monitored feature (ignored when not monitored). */
  observe(feature: string, value: number): void {
    this.monitored.get(feature)?.window.observe(value);
  }

  /** Names of the monitored features. */
  features(): string[] {
    return [...this.monitored.keys()];
  }

  /** Records model scores. */
  observeScores(scores: ArrayLike<number>, count = scores.length): void {
    if (!this.score) return;
    for (let i = 0; i < count; i++) this.score.window.observe(scores[i]!);
  }

  /** PSI of each monitored feature over its window. */
  featureReadings(): DriftReading[] {
    return [...this.monitored.values()].map((m) => reading(m, this.minObservations));
  }

  /** PSI of the score distribution, when the baseline has one. */
  scoreReading(): DriftReading | undefined {
    return this.score ? reading(this.score, this.minObservations) : undefined;
  }
}

function reading(m: Monitored, minObservations: number): DriftReading {
  const counts = m.window.binCounts();
  const n = m.window.size;
  return {
    feature: m.feature,
    psi: n >= minObservations ? computePsi(m.baseline, counts) : undefined,
    observations: n,
    shares: Array.from(counts, (c) => (n === 0 ? 0 : c / n)),
  };
}
