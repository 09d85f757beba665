import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { buildMlp } from './builder.js';

describe('ONNX builder', () => {
  it('writes an MLP that onnxruntime runs with the same numbers as plain arithmetic', async () => {
    // 3 inputs -> 2 hidden (relu) -> 1 output (sigmoid)
    const w0 = [1, -1, 0.5, 2, -0.5, 0.25];
    const b0 = [0.1, -0.2];
    const w1 = [1.5, -2];
    const b1 = [0.3];
    const bytes = buildMlp({
      name: 't',
      layers: [
        { weights: w0, bias: b0, inSize: 3, outSize: 2 },
        { weights: w1, bias: b1, inSize: 2, outSize: 1 },
      ],
      sigmoid: true,
    });
    const session = await ort.InferenceSession.create(bytes);
    const x = [0.2, 0.4, -1, 1, 0, 2];
    const out = await session.run({ features: new ort.Tensor('float32', Float32Array.from(x), [2, 3]) });
    const expected = [0, 1].map((r) => {
      const row = x.slice(r * 3, r * 3 + 3);
      const h = [0, 1].map((j) => Math.max(0, row.reduce((s, v, i) => s + v * w0[i * 2 + j]!, 0) + b0[j]!));
      const z = h[0]! * w1[0]! + h[1]! * w1[1]! + b1[0]!;
      return 1 / (1 + Math.exp(-z));
    });
    const got = Array.from(out['score']!.data as Float32Array);
    got.forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
  });
});
