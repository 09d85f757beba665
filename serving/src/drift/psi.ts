import { binOf } from '../../../contracts/drift-binning.js';

/**
 * Population stability index of an observed histogram against a baseline:
 * PSI = Σ (a_i − e_i) · ln(a_i / e_i), with shares floored at `epsilon` so empty bins stay finite.
 * Rule of thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 significant shift.
 */
export function computePsi(
  baselineProbs: ArrayLike<number>,
  observedCounts: ArrayLike<number>,
  epsilon = 1e-4,
): number {
  if (baselineProbs.length !== observedCounts.length) {
    throw new RangeError(`psi: baseline has ${baselineProbs.length} bins, observed ${observedCounts.length}`);
  }
  let total = 0;
  for (let i = 0; i < observedCounts.length; i++) total += observedCounts[i]!;
  if (total === 0) return 0;
  let psi = 0;
  for (let i = 0; i < baselineProbs.length; i++) {
    const e = Math.max(baselineProbs[i]!, epsilon);
    const a = Math.max(observedCounts[i]! / total, epsilon);
    psi += (a - e) * Math.log(a / e);
  }
  return psi;
}

/** Re-exported: the one binning shared with training (contracts/drift-binning.ts). */
export { binOf };

/** A rolling window of the last `capacity` bin observations with running per-bin counts. */
export class RollingHistogram {
  private readonly ring: Uint16Array;
  private readonly counts: Float64Array;
  private next = 0;
  private filled = 0;

  constructor(
    readonly edges: readonly number[],
    readonly capacity: number,
  ) {
    if (edges.length < 2) throw new RangeError('RollingHistogram: edges needs at least 2 entries');
    this.ring = new Uint16Array(capacity);
    this.counts = new Float64Array(edges.length - 1);
  }

  /** Records one value, evicting the oldest once the window is full. */
  observe(value: number): void {
    if (!Number.isFinite(value)) return;
    const bin = binOf(this.edges, value);
    if (this.filled === this.capacity) this.counts[this.ring[this.next]!]!--;
    else this.filled++;
    this.ring[this.next] = bin;
    this.counts[bin]!++;
    this.next = (this.next + 1) % this.capacity;
  }

  /** Observations currently in the window. */
  get size(): number {
    return this.filled;
  }

  /** Per-bin counts of the window. */
  binCounts(): Float64Array {
    return this.counts;
  }
}
