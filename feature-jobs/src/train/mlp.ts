/**
 * A small dense network trained with Adam, in plain TypeScript: x → relu(xW+b) → … → xW+b
 * (one output). Inputs are standardized during training; the standardization is then folded
 * into the first layer so the exported ONNX graph takes raw feature values.
 */
import { buildMlp } from '../onnx/builder.js';
import { Rng } from '../common/rng.js';

export interface Mlp {
  /** Layer sizes, e.g. [30, 24, 1]. */
  readonly sizes: readonly number[];
  /** Per layer, row-major [in × out]. */
  readonly w: Float64Array[];
  readonly b: Float64Array[];
  /** Input standardization: x' = (x - mean) / std. */
  readonly mean: Float64Array;
  readonly std: Float64Array;
  /** Apply a sigmoid to the output (probabilities); otherwise identity. */
  readonly sigmoid: boolean;
}

/** He-initialised network; `mean`/`std` come from the training rows. */
export function initMlp(
  sizes: readonly number[],
  seed: number,
  mean: Float64Array,
  std: Float64Array,
  sigmoid: boolean,
): Mlp {
  const rng = new Rng(seed);
  const w: Float64Array[] = [];
  const b: Float64Array[] = [];
  for (let l = 0; l + 1 < sizes.length; l++) {
    const fanIn = sizes[l]!;
    const n = fanIn * sizes[l + 1]!;
    const wl = new Float64Array(n);
    const scale = Math.sqrt(2 / fanIn);
    for (let i = 0; i < n; i++) wl[i] = rng.normal() * scale * (l + 2 === sizes.length ? 0.5 : 1);
    w.push(wl);
    b.push(new Float64Array(sizes[l + 1]!));
  }
  return { sizes, w, b, mean, std, sigmoid };
}

/** Column means and standard deviations of row-major `x` (std floored so constant columns pass through). */
export function computeStandardization(
  x: ArrayLike<number>,
  cols: number,
): { mean: Float64Array; std: Float64Array } {
  const rows = x.length / cols;
  const mean = new Float64Array(cols);
  const sq = new Float64Array(cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const v = x[r * cols + c]!;
      mean[c]! += v;
      sq[c]! += v * v;
    }
  const std = new Float64Array(cols);
  for (let c = 0; c < cols; c++) {
    mean[c]! /= rows || 1;
    const variance = sq[c]! / (rows || 1) - mean[c]! * mean[c]!;
    std[c] = Math.sqrt(Math.max(variance, 0)) || 1;
  }
  return { mean, std };
}

/** Forward pass of one raw input row (from `x` at `off`); returns the pre-activation output and fills `acts`. */
function forwardRow(m: Mlp, x: ArrayLike<number>, off: number, acts: Float64Array[]): number {
  const a0 = acts[0]!;
  for (let i = 0; i < m.sizes[0]!; i++) a0[i] = (x[off + i]! - m.mean[i]!) / m.std[i]!;
  const L = m.sizes.length - 1;
  for (let l = 0; l < L; l++) {
    const inp = acts[l]!;
    const out = acts[l + 1]!;
    const nin = m.sizes[l]!;
    const nout = m.sizes[l + 1]!;
    const w = m.w[l]!;
    out.set(m.b[l]!);
    for (let i = 0; i < nin; i++) {
      const v = inp[i]!;
      if (v === 0) continue;
      const row = i * nout;
      for (let j = 0; j < nout; j++) out[j]! += v * w[row + j]!;
    }
    if (l < L - 1) for (let j = 0; j < nout; j++) if (out[j]! < 0) out[j] = 0;
  }
  return acts[L]![0]!;
}

function allocActs(m: Mlp): Float64Array[] {
  return m.sizes.map((s) => new Float64Array(s));
}

/** The model's own prediction for raw rows (row-major, sizes[0] columns): sigmoid or identity of the output. */
export function predictMlp(m: Mlp, x: ArrayLike<number>, rows: number): Float64Array {
  const acts = allocActs(m);
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const z = forwardRow(m, x, r * m.sizes[0]!, acts);
    out[r] = m.sigmoid ? 1 / (1 + Math.exp(-z)) : z;
  }
  return out;
}

/** Pre-activation outputs (logits) for raw rows. */
export function logitsMlp(
  m: Mlp,
  x: ArrayLike<number>,
  rows: number,
  out = new Float64Array(rows),
): Float64Array {
  const acts = allocActs(m);
  for (let r = 0; r < rows; r++) out[r] = forwardRow(m, x, r * m.sizes[0]!, acts);
  return out;
}

/**
 * How a group of rows turns logits into a loss gradient: `grad[r] = dLoss/dlogit[r]`.
 * Softmax groups (ranking), independent binary rows (classifiers), regression rows.
 */
export type LossGrad = (
  logits: Float64Array,
  rows: number,
  labels: Float64Array,
  grad: Float64Array,
) => number;

/** Softmax cross-entropy over the group; labels one-hot. */
export const softmaxLoss: LossGrad = (z, n, y, g) => {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, z[i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += g[i] = Math.exp(z[i]! - max);
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const p = g[i]! / sum;
    g[i] = p - y[i]!;
    if (y[i]! > 0) loss -= Math.log(Math.max(p, 1e-12));
  }
  return loss;
};

/** Logistic loss per row. */
export const logisticLoss: LossGrad = (z, n, y, g) => {
  let loss = 0;
  for (let i = 0; i < n; i++) {
    const p = 1 / (1 + Math.exp(-z[i]!));
    g[i] = p - y[i]!;
    loss -= y[i]! ? Math.log(Math.max(p, 1e-12)) : Math.log(Math.max(1 - p, 1e-12));
  }
  return loss;
};

/** Huber loss per row (delta in target units): squared near the target, absolute far from it. */
export function huberLoss(delta: number): LossGrad {
  return (z, n, y, g) => {
    let loss = 0;
    for (let i = 0; i < n; i++) {
      const d = z[i]! - y[i]!;
      const a = Math.abs(d);
      g[i] = a <= delta ? d : delta * Math.sign(d);
      loss += a <= delta ? 0.5 * d * d : delta * (a - 0.5 * delta);
    }
    return loss;
  };
}

/** Training examples: groups of rows (a ranking list, or single rows) with labels. */
export interface TrainingSet {
  readonly cols: number;
  /** Row-major raw features. */
  readonly x: Float32Array | Float64Array;
  readonly y: Float64Array;
  /** Group boundaries: group g is rows [offsets[g], offsets[g+1]). */
  readonly offsets: Uint32Array;
}

export interface TrainOptions {
  readonly epochs: number;
  readonly lr: number;
  /** Groups per Adam step. */
  readonly batch: number;
  readonly seed: number;
  readonly l2?: number;
  readonly onEpoch?: (epoch: number, meanLoss: number) => void;
}

/** Trains `m` in place with Adam on the groups of `data`. */
export function trainMlp(m: Mlp, data: TrainingSet, loss: LossGrad, o: TrainOptions): void {
  const L = m.sizes.length - 1;
  const gw = m.w.map((w) => new Float64Array(w.length));
  const gb = m.b.map((b) => new Float64Array(b.length));
  const mw = m.w.map((w) => new Float64Array(w.length));
  const vw = m.w.map((w) => new Float64Array(w.length));
  const mb = m.b.map((b) => new Float64Array(b.length));
  const vb = m.b.map((b) => new Float64Array(b.length));
  const groups = data.offsets.length - 1;
  let maxRows = 1;
  for (let g = 0; g < groups; g++) maxRows = Math.max(maxRows, data.offsets[g + 1]! - data.offsets[g]!);
  // Activations per row of the current group, kept for the backward pass.
  const acts: Float64Array[][] = Array.from({ length: maxRows }, () => allocActs(m));
  const z = new Float64Array(maxRows);
  const dz = new Float64Array(maxRows);
  const delta = m.sizes.map((s) => new Float64Array(s));
  const order = Uint32Array.from({ length: groups }, (_, i) => i);
  const rng = new Rng(o.seed);
  const l2 = o.l2 ?? 1e-5;
  const b1 = 0.9;
  const b2 = 0.999;
  let step = 0;
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    for (let i = groups - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    let total = 0;
    let inBatch = 0;
    const lr = o.lr * (epoch === o.epochs - 1 && o.epochs > 1 ? 0.3 : 1);
    for (let k = 0; k < groups; k++) {
      const g = order[k]!;
      const r0 = data.offsets[g]!;
      const n = data.offsets[g + 1]! - r0;
      for (let r = 0; r < n; r++) z[r] = forwardRow(m, data.x, (r0 + r) * data.cols, acts[r]!);
      total += loss(z, n, data.y.subarray(r0, r0 + n), dz);
      for (let r = 0; r < n; r++) {
        if (dz[r] === 0) continue;
        const a = acts[r]!;
        delta[L]![0] = dz[r]!;
        for (let l = L - 1; l >= 0; l--) {
          const nin = m.sizes[l]!;
          const nout = m.sizes[l + 1]!;
          const d = delta[l + 1]!;
          const inp = a[l]!;
          const w = m.w[l]!;
          const gwl = gw[l]!;
          const gbl = gb[l]!;
          for (let j = 0; j < nout; j++) gbl[j]! += d[j]!;
          const dprev = delta[l]!;
          for (let i = 0; i < nin; i++) {
            const v = inp[i]!;
            const row = i * nout;
            let s = 0;
            for (let j = 0; j < nout; j++) {
              if (v !== 0) gwl[row + j]! += v * d[j]!;
              s += w[row + j]! * d[j]!;
            }
            // relu derivative of the previous layer (its activation is 0 where it was cut)
            dprev[i] = l > 0 && v <= 0 ? 0 : s;
          }
        }
      }
      if (++inBatch === o.batch || k === groups - 1) {
        step++;
        const c1 = 1 - Math.pow(b1, step);
        const c2 = 1 - Math.pow(b2, step);
        const upd = (
          p: Float64Array,
          gr: Float64Array,
          mm: Float64Array,
          vv: Float64Array,
          decay: number,
        ) => {
          for (let i = 0; i < p.length; i++) {
            const gi = gr[i]! / inBatch + decay * p[i]!;
            mm[i] = b1 * mm[i]! + (1 - b1) * gi;
            vv[i] = b2 * vv[i]! + (1 - b2) * gi * gi;
            p[i]! -= (lr * (mm[i]! / c1)) / (Math.sqrt(vv[i]! / c2) + 1e-8);
            gr[i] = 0;
          }
        };
        for (let l = 0; l < L; l++) {
          upd(m.w[l]!, gw[l]!, mw[l]!, vw[l]!, l2);
          upd(m.b[l]!, gb[l]!, mb[l]!, vb[l]!, 0);
        }
        inBatch = 0;
      }
    }
    o.onEpoch?.(epoch, total / groups);
  }
}

/** ONNX bytes of `m` with the input standardization folded into the first layer (float32 weights). */
export function exportMlpOnnx(
  m: Mlp,
  name: string,
  inputName = 'features',
  outputName = 'score',
): Uint8Array {
  const layers = m.w.map((w, l) => {
    const nin = m.sizes[l]!;
    const nout = m.sizes[l + 1]!;
    if (l > 0) return { weights: w, bias: m.b[l]!, inSize: nin, outSize: nout };
    // x' = (x - μ)/σ  ⇒  x'W + b = x(W/σ) + (b - Σ μ/σ W)
    const fw = new Float64Array(w.length);
    const fb = Float64Array.from(m.b[0]!);
    for (let i = 0; i < nin; i++) {
      for (let j = 0; j < nout; j++) {
        const v = w[i * nout + j]! / m.std[i]!;
        fw[i * nout + j] = v;
        fb[j]! -= m.mean[i]! * v;
      }
    }
    return { weights: fw, bias: fb, inSize: nin, outSize: nout };
  });
  return buildMlp({ name, inputName, outputName, layers, sigmoid: m.sigmoid });
}
