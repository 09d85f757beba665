import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Rng } from '../common/rng.js';
import { auc, mae, ndcgAtK, rankOf, recallAtK } from '../evaluate/metrics.js';
import {
  computeStandardization,
  exportMlpOnnx,
  huberLoss,
  initMlp,
  logisticLoss,
  predictMlp,
  softmaxLoss,
  trainMlp,
  type TrainingSet,
} from './mlp.js';

function rows(n: number, cols: number, f: (x: number[]) => number, seed = 1): TrainingSet {
  const rng = new Rng(seed);
  const x = new Float64Array(n * cols);
  const y = new Float64Array(n);
  for (let r = 0; r < n; r++) {
    const v = Array.from({ length: cols }, (_, c) => rng.normal() * (c + 1) * 10 + c * 100);
    x.set(v, r * cols);
    y[r] = f(v);
  }
  return { cols, x, y, offsets: Uint32Array.from({ length: n + 1 }, (_, i) => i) };
}

describe('MLP training', () => {
  it('learns a non-linear boundary (AUC well above chance) with unscaled inputs', () => {
    const f = (v: number[]) => (Math.abs(v[0]!) > 10 && v[1]! > 100 ? 1 : 0);
    const train = rows(3000, 3, f);
    const test = rows(1000, 3, f, 2);
    const { mean, std } = computeStandardization(train.x, 3);
    const m = initMlp([3, 16, 1], 3, mean, std, true);
    trainMlp(m, train, logisticLoss, { epochs: 8, lr: 0.01, batch: 32, seed: 4 });
    expect(auc(predictMlp(m, test.x, 1000), test.y)).toBeGreaterThan(0.9);
  });

  it('regresses a target with Huber loss to a small MAE', () => {
    const f = (v: number[]) => 2 + 0.05 * v[0]! + Math.max(0, v[1]! - 100) / 10;
    const train = rows(3000, 2, f);
    const test = rows(500, 2, f, 2);
    const { mean, std } = computeStandardization(train.x, 2);
    const m = initMlp([2, 16, 1], 3, mean, std, false);
    const base = mae(new Float64Array(500).fill(train.y.reduce((a, b) => a + b) / 3000), test.y);
    trainMlp(m, train, huberLoss(1), { epochs: 15, lr: 0.01, batch: 16, seed: 4 });
    expect(mae(predictMlp(m, test.x, 500), test.y)).toBeLessThan(base * 0.2);
  });

  it('exported ONNX (standardization folded in) gives the TypeScript model’s own predictions', async () => {
    const train = rows(500, 4, (v) => (v[0]! + v[3]! > 300 ? 1 : 0));
    const { mean, std } = computeStandardization(train.x, 4);
    for (const sigmoid of [true, false]) {
      const m = initMlp([4, 8, 5, 1], 9, mean, std, sigmoid);
      trainMlp(m, train, logisticLoss, { epochs: 2, lr: 0.01, batch: 8, seed: 1 });
      const session = await ort.InferenceSession.create(exportMlpOnnx(m, 't'));
      const x = Float32Array.from(train.x.subarray(0, 40 * 4));
      const out = await session.run({ features: new ort.Tensor('float32', x, [40, 4]) });
      const got = out['score']!.data as Float32Array;
      const want = predictMlp(m, x, 40);
      for (let i = 0; i < 40; i++) expect(got[i]!).toBeCloseTo(want[i]!, sigmoid ? 5 : 3);
    }
  });

  it('softmax groups: puts the labelled row of each group first', () => {
    // group of 4 rows; the positive is the row whose feature 0 is largest.
    const rng = new Rng(5);
    const groups = 600;
    const x = new Float64Array(groups * 4 * 2);
    const y = new Float64Array(groups * 4);
    for (let g = 0; g < groups; g++) {
      let best = 0;
      for (let r = 0; r < 4; r++) {
        x[(g * 4 + r) * 2] = rng.normal();
        x[(g * 4 + r) * 2 + 1] = rng.normal();
        if (x[(g * 4 + r) * 2]! > x[(g * 4 + best) * 2]!) best = r;
      }
      y[g * 4 + best] = 1;
    }
    const data = { cols: 2, x, y, offsets: Uint32Array.from({ length: groups + 1 }, (_, i) => i * 4) };
    const m = initMlp([2, 8, 1], 1, new Float64Array(2), new Float64Array(2).fill(1), false);
    trainMlp(m, data, softmaxLoss, { epochs: 5, lr: 0.01, batch: 8, seed: 2 });
    let hits = 0;
    for (let g = 0; g < groups; g++) {
      const s = predictMlp(m, x.subarray(g * 8, g * 8 + 8), 4);
      const cands = [0, 1, 2, 3];
      if (
        rankOf(
          s,
          cands,
          cands.find((r) => y[g * 4 + r] === 1)!,
        ) === 1
      )
        hits++;
    }
    expect(hits / groups).toBeGreaterThan(0.9);
  });
});

describe('metrics', () => {
  it.each([
    [1, 1, 1],
    [3, 0.5, 1],
    [6, 1 / Math.log2(7), 0],
    [11, 0, 0],
  ])('rank %i → ndcg@10 %f, recall@5 %i', (rank, ndcg, recall) => {
    expect(ndcgAtK(rank, 10)).toBeCloseTo(ndcg);
    expect(recallAtK(rank, 5)).toBe(recall);
  });

  it('rankOf counts ties against the target and only over candidates', () => {
    expect(rankOf([0.9, 0.5, 0.5, 0.1], [0, 1, 2, 3], 1)).toBe(3);
    expect(rankOf([0.9, 0.5, 0.5, 0.1], [1, 3], 1)).toBe(1);
  });

  it('AUC: perfect, inverted, ties and one-class', () => {
    expect(auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])).toBe(1);
    expect(auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1])).toBe(0);
    expect(auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1])).toBe(0.5);
    expect(auc([0.3, 0.1, 0.4, 0.2], [1, 0, 0, 1])).toBeCloseTo(0.5);
    expect(auc([1, 2], [1, 1])).toBeNaN();
  });
});
