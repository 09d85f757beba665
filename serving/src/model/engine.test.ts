import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeModel } from '../../test/fixtures.js';
import { InferenceBatcher, NativeSession } from './engine.js';

let dir: string;
let bytes: Buffer;
const COLS = 3;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-engine-'));
  await writeModel({ dir, file: 'm', features: ['recency_days', 'frequency_30d', 'cat_hot'], hidden: 8 });
  bytes = await readFile(join(dir, 'm.onnx'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

function rowsOf(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n * COLS }, (_, i) => Math.sin(seed * 31 + i));
}

describe('NativeSession', () => {
  it('opens a graph from bytes and scores one value per row', () => {
    const s = NativeSession.open(bytes);
    expect(s.inputNames).toEqual(['features']);
    expect(s.outputNames).toEqual(['score']);
    const out = s.run('features', 'score', rowsOf(4, 1), 4, COLS);
    expect(out).toHaveLength(4);
    for (const v of out) expect(v).toBeGreaterThan(0); // sigmoid output
    s.dispose();
    expect(() => s.run('features', 'score', rowsOf(1, 1), 1, COLS)).toThrow(/closed/);
  });

  it('refuses bytes that are not an ONNX graph with onnxruntime’s message', () => {
    expect(() => NativeSession.open(Buffer.from('not a model'))).toThrow(/protobuf|parse|load/i);
  });
});

describe('InferenceBatcher', () => {
  const session = () => NativeSession.open(bytes);

  it('answers requests made in the same turn with one run, each with exactly its own rows', async () => {
    const s = session();
    const runs: number[] = [];
    const b = new InferenceBatcher((d, r) => s.run('features', 'score', d, r, COLS), COLS, {
      onRun: (requests) => runs.push(requests),
    });
    const inputs = [rowsOf(3, 1), rowsOf(1, 2), rowsOf(5, 3)];
    const outs = await Promise.all(inputs.map((x) => b.submit(x, x.length / COLS)));
    expect(runs).toEqual([3]);
    inputs.forEach((x, i) => {
      const alone = s.run('features', 'score', x, x.length / COLS, COLS);
      expect(Array.from(outs[i]!)).toEqual(Array.from(alone));
    });
  });

  it('collects requests whose continuations run in the same microtask drain', async () => {
    const s = session();
    const runs: number[] = [];
    const b = new InferenceBatcher((d, r) => s.run('features', 'score', d, r, COLS), COLS, {
      onRun: (requests) => runs.push(requests),
    });
    // Like requests resuming after one Redis read: several awaits deep, same turn.
    const request = async (seed: number) => {
      await Promise.resolve();
      await Promise.resolve();
      return b.submit(rowsOf(2, seed), 2);
    };
    await Promise.all([request(1), request(2), request(3), request(4)]);
    expect(runs).toEqual([4]);
    // A later turn is a new run.
    await b.submit(rowsOf(1, 9), 1);
    expect(runs).toEqual([4, 1]);
  });

  it('splits a backlog larger than maxRows into several runs', async () => {
    const s = session();
    const rows: number[] = [];
    const b = new InferenceBatcher((d, r) => s.run('features', 'score', d, r, COLS), COLS, {
      maxRows: 10,
      onRun: (_q, r) => rows.push(r),
    });
    const outs = await Promise.all([4, 4, 4, 4, 12].map((n, i) => b.submit(rowsOf(n, i), n)));
    expect(rows).toEqual([8, 8, 12]);
    expect(outs.map((o) => o.length)).toEqual([4, 4, 4, 4, 12]);
  });

  it('fails only the request whose rows break the run', async () => {
    const s = session();
    // A model stand-in that fails on any NaN, like an operator rejecting bad input.
    const b = new InferenceBatcher((d, r) => {
      for (let i = 0; i < r * COLS; i++) if (Number.isNaN(d[i])) throw new Error('NaN in input');
      return s.run('features', 'score', d, r, COLS);
    }, COLS);
    const bad = rowsOf(2, 5);
    bad[4] = Number.NaN;
    const results = await Promise.allSettled([
      b.submit(rowsOf(2, 1), 2),
      b.submit(bad, 2),
      b.submit(rowsOf(1, 2), 1),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason.message).toBe('NaN in input');
  });

  it('scores rows written in place by submitWith; a fill that throws fails only its request', async () => {
    const s = session();
    const runs: number[] = [];
    const b = new InferenceBatcher((d, r) => s.run('features', 'score', d, r, COLS), COLS, {
      onRun: (_q, rows) => runs.push(rows),
    });
    const a = rowsOf(3, 1);
    const c = rowsOf(2, 3);
    const results = await Promise.allSettled([
      b.submitWith(3, (into) => into.set(a)),
      b.submitWith(4, () => {
        throw new Error('no features');
      }),
      b.submitWith(2, (into) => {
        expect(into).toHaveLength(2 * COLS);
        into.set(c);
      }),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason.message).toBe('no features');
    expect(runs).toEqual([5]); // the failed fill added no rows
    const scores = results.map((r) => (r.status === 'fulfilled' ? Array.from(r.value) : []));
    expect(scores[0]).toEqual(Array.from(s.run('features', 'score', a, 3, COLS)));
    expect(scores[2]).toEqual(Array.from(s.run('features', 'score', c, 2, COLS)));
  });

  it('keeps earlier answers intact when later turns reuse the batch input buffer', async () => {
    const s = session();
    const b = new InferenceBatcher((d, r) => s.run('features', 'score', d, r, COLS), COLS);
    const first = await Promise.all([b.submit(rowsOf(2, 1), 2), b.submit(rowsOf(2, 2), 2)]);
    const kept = first.map((x) => Array.from(x));
    for (let t = 0; t < 5; t++)
      await Promise.all([b.submit(rowsOf(2, 10 + t), 2), b.submit(rowsOf(2, 20 + t), 2)]);
    expect(first.map((x) => Array.from(x))).toEqual(kept);
  });

  it('rejects malformed submissions with the reason', async () => {
    const b = new InferenceBatcher(() => new Float32Array(0), COLS);
    await expect(b.submit(rowsOf(1, 1), 0)).rejects.toThrow(/rows must be >= 1/);
    await expect(b.submit(rowsOf(1, 1), 2)).rejects.toThrow(/holds 3 values, 2 rows need 6/);
    expect(() => new InferenceBatcher(() => new Float32Array(0), COLS, { maxRows: 0 })).toThrow(/maxRows/);
  });

  it('rejects a run whose output does not have one value per row', async () => {
    const b = new InferenceBatcher(() => new Float32Array(1), COLS);
    const r = await Promise.allSettled([b.submit(rowsOf(2, 1), 2), b.submit(rowsOf(2, 2), 2)]);
    expect(r.map((x) => (x as PromiseRejectedResult).reason?.message)).toEqual([
      'model returned 1 values for 2 rows',
      'model returned 1 values for 2 rows',
    ]);
  });
});
