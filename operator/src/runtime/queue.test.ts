import { describe, expect, it } from 'vitest';
import { WorkQueue, type WorkResult } from './queue.js';

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe('WorkQueue', () => {
  it('de-duplicates a key added many times while waiting', async () => {
    const q = new WorkQueue();
    const seen: string[] = [];
    for (let i = 0; i < 5; i++) q.add('ns/a');
    q.add('ns/b');
    expect(q.depth).toBe(2);
    const run = q.run(1, async (k) => {
      seen.push(k);
      return { kind: 'done' };
    });
    await tick(20);
    q.shutdown();
    await run;
    expect(seen).toEqual(['ns/a', 'ns/b']);
  });

  it('never runs one key on two workers; an add during processing runs it once more after', async () => {
    const q = new WorkQueue();
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    const run = q.run(4, async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      runs++;
      await tick(20);
      active--;
      return { kind: 'done' };
    });
    q.add('ns/a');
    await tick(5);
    q.add('ns/a'); // while processing: marked dirty
    q.add('ns/a');
    await tick(80);
    q.shutdown();
    await run;
    expect(maxActive).toBe(1);
    expect(runs).toBe(2);
  });

  it('retries failures with exponential backoff and forgets after success', async () => {
    const q = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 1000 });
    const times: number[] = [];
    const t0 = Date.now();
    const run = q.run(1, async (): Promise<WorkResult> => {
      times.push(Date.now() - t0);
      return times.length < 4 ? { kind: 'error', error: new Error('boom') } : { kind: 'done' };
    });
    q.add('ns/a');
    await tick(250);
    q.shutdown();
    await run;
    expect(times).toHaveLength(4);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    // 10, 20, 40 ms (timers are not exact: allow slack, but each gap must grow)
    expect(gaps[0]).toBeGreaterThanOrEqual(9);
    expect(gaps[1]).toBeGreaterThanOrEqual(19);
    expect(gaps[2]).toBeGreaterThanOrEqual(39);
    expect(q.failuresOf('ns/a')).toBe(0);
  });

  it('caps the backoff', () => {
    const q = new WorkQueue({ baseDelayMs: 100, maxDelayMs: 1000 });
    const delays = Array.from({ length: 8 }, () => q.addRateLimited('k'));
    q.shutdown();
    expect(delays).toEqual([100, 200, 400, 800, 1000, 1000, 1000, 1000]);
  });

  it('lets in-flight work finish on shutdown and hands out no more', async () => {
    const q = new WorkQueue();
    const done: string[] = [];
    const run = q.run(1, async (k) => {
      await tick(30);
      done.push(k);
      return { kind: 'done' };
    });
    q.add('ns/a');
    q.add('ns/b');
    await tick(5);
    q.shutdown();
    await run;
    expect(done).toEqual(['ns/a']);
  });

  it('a sooner delayed add replaces a later one (a week-away wake-up does not delay a step due now)', async () => {
    const q = new WorkQueue();
    const seen: string[] = [];
    const run = q.run(1, async (k) => {
      seen.push(k);
      return { kind: 'done' };
    });
    q.addAfter('ns/a', 7 * 86_400_000);
    q.addAfter('ns/a', 10);
    q.addAfter('ns/a', 60_000); // later than the pending one: ignored
    await tick(60);
    expect(seen).toEqual(['ns/a']);
    q.shutdown();
    await run;
  });
});
