import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeModel } from '../../test/fixtures.js';
import { InferenceBatcher, NativeSession } from './engine.js';
import { loadModel } from './loader.js';
import { InferenceThread } from './thread.js';

let dir: string;
let bytes: Buffer;
const COLS = 3;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-thread-'));
  await writeModel({ dir, file: 'm', features: ['recency_days', 'frequency_30d', 'cat_hot'], hidden: 8 });
  bytes = await readFile(join(dir, 'm.onnx'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

function rowsOf(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n * COLS }, (_, i) => Math.sin(seed * 31 + i));
}

describe('InferenceThread', () => {
  it('scores batches on one worker exactly like the calling thread would', async () => {
    const thread = new InferenceThread();
    const local = NativeSession.open(bytes);
    const handle = thread.openSession(bytes, 'features', 'score');
    const remoteRuns: number[] = [];
    const b = new InferenceBatcher((d, r) => local.run('features', 'score', d, r, COLS), COLS, {
      remote: (d, r) => thread.run(handle, d, r, COLS),
      onRun: (q) => remoteRuns.push(q),
    });
    for (let turn = 0; turn < 5; turn++) {
      const inputs = [rowsOf(3, turn), rowsOf(1, turn + 10), rowsOf(4, turn + 20)];
      const outs = await Promise.all(inputs.map((x) => b.submit(x, x.length / COLS)));
      inputs.forEach((x, i) =>
        expect(Array.from(outs[i]!)).toEqual(
          Array.from(local.run('features', 'score', x, x.length / COLS, COLS)),
        ),
      );
    }
    expect(remoteRuns).toEqual([3, 3, 3, 3, 3]);
    expect(thread.starts).toBe(1);
    thread.closeSession(handle);
    await expect(thread.run(handle, new Float32Array(new SharedArrayBuffer(12)), 1, COLS)).rejects.toThrow(
      /closed/,
    );
  });

  it('a crashed worker fails its runs, the batcher answers them inline, and a new worker starts after the back-off', async () => {
    const thread = new InferenceThread();
    const losses: string[] = [];
    thread.onLoss = (why) => losses.push(why);
    const local = NativeSession.open(bytes);
    const handle = thread.openSession(bytes, 'features', 'score');
    const b = new InferenceBatcher((d, r) => local.run('features', 'score', d, r, COLS), COLS, {
      remote: (d, r) => thread.run(handle, d, r, COLS),
    });
    const x = rowsOf(2, 1);
    const want = Array.from(local.run('features', 'score', x, 2, COLS));
    expect(Array.from(await b.submit(x, 2))).toEqual(want);
    await thread.crashForTest();
    await new Promise((r) => setTimeout(r, 50));
    expect(losses).toHaveLength(1);
    // Within the back-off the thread refuses at once and the answer comes from the calling thread.
    await expect(thread.run(handle, new Float32Array(new SharedArrayBuffer(24)), 2, COLS)).rejects.toThrow(
      /inference thread down/,
    );
    expect(Array.from(await b.submit(x, 2))).toEqual(want);
    expect(thread.starts).toBe(1);
    await new Promise((r) => setTimeout(r, 2100));
    expect(Array.from(await b.submit(x, 2))).toEqual(want);
    expect(thread.starts).toBe(2);
    thread.closeSession(handle);
  });

  it('serves a loaded model through the thread after warming it there', async () => {
    const thread = new InferenceThread();
    const m = await loadModel(pathToFileURL(join(dir, 'm.onnx')).toString(), {
      task: 'drink-ranking',
      thread,
    });
    expect(thread.starts).toBe(1);
    const x = rowsOf(5, 7);
    expect(Array.from(await m.run(x, 5))).toEqual(Array.from(m.runNow(x, 5)));
    m.retire();
    await expect(m.run(x, 5)).rejects.toThrow(/closed/);
  });
});
