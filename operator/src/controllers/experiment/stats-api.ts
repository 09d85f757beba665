/**
 * The contract between the Experiment controller (which gathers per-variant sufficient
 * statistics from serving's metrics) and the statistics (`stats.ts`, pure). Kept in its own
 * file so both sides build against it while the statistics are written.
 *
 * Every primary metric is a per-user outcome Y (conversion: 0/1 whether the exposed user ordered;
 * orderValue: the user's order value in the experiment; attachRate: 0/1 whether the user's orders
 * carried an add-on), aggregated per variant as sufficient statistics, so counters in Prometheus
 * are enough and no per-user data leaves serving. X is the user's pre-experiment value of the same
 * metric from the feature store (CUPED covariate); users without history are counted in `n` and
 * `sumY`/`sumYY` only, and in `nWithoutCovariate`.
 */

/** Sums over the exposed users of one variant. */
export interface MetricSums {
  /** Users exposed (unique per experiment). */
  readonly n: number;
  readonly sumY: number;
  readonly sumYY: number;
  /** CUPED: sums over the users that have a pre-experiment value X (n - nWithoutCovariate of them). */
  readonly sumX?: number;
  readonly sumXX?: number;
  readonly sumXY?: number;
  readonly nWithoutCovariate?: number;
}

export interface VariantInput {
  readonly name: string;
  /** Planned share in percent (spec weight); the SRM test compares `sums.n` with these. */
  readonly weight: number;
  readonly sums: MetricSums;
}

export interface AnalysisInput {
  /** The first variant is the control. */
  readonly variants: readonly VariantInput[];
  /** Family-wise error rate across the comparisons with control. */
  readonly alpha: number;
  /** Exposures each variant needs before any decision. */
  readonly minSamplesPerVariant: number;
  /** Whether the metric is binary (conversion, attachRate) or continuous (orderValue). */
  readonly binary: boolean;
  /**
   * Exposures per variant the experiment expects to reach (its planned sample size). Tunes the
   * sequential tests so their boundary is tightest there (ADR 0011); fixed for the life of the
   * experiment. Defaults to 10 × minSamplesPerVariant.
   */
  readonly plannedSamplesPerVariant?: number;
}

export interface Comparison {
  readonly variant: string;
  /** Relative lift of the variant's mean over control's, e.g. 0.031 for +3.1 %. */
  readonly lift: number;
  /** Always-valid confidence interval of the relative lift at the Holm-adjusted level. */
  readonly liftInterval: readonly [number, number];
  /** Test statistic of the sequential test (documented in the ADR). */
  readonly statistic: number;
  /** Always-valid p-value, and after Holm's adjustment. */
  readonly pValue: number;
  readonly adjustedPValue: number;
  readonly significant: boolean;
  /** Variance reduction CUPED achieved for this comparison, 0..1 (0 when not applied). */
  readonly varianceReduction: number;
}

export interface Analysis {
  /** Sample ratio mismatch test over the variants' exposures. */
  readonly srm: {
    /** Always-valid p-value of the sequential SRM test (ADR 0011); mismatch when below 0.001. */
    readonly pValue: number;
    readonly mismatch: boolean;
    /** The one-look chi-square goodness-of-fit p-value of the same counts, for reference. */
    readonly chiSquarePValue?: number;
  };
  readonly comparisons: readonly Comparison[];
  /**
   * `winner`: a variant significantly better than control (and better than every other
   * significant one), or control when every other variant is significantly worse;
   * `continue`: keep collecting; `blocked`: SRM or too few samples (reason says which).
   */
  readonly decision: 'winner' | 'continue' | 'blocked';
  readonly winner?: string;
  readonly reason: string;
}
