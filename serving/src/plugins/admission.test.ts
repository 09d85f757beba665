import { describe, expect, it } from 'vitest';
import {
  availableCores,
  ConcurrencyLimit,
  LoopSaturation,
  QueueDelayCheck,
  QueueDelayEstimator,
  readLoopThreadTimes,
} from './admission.js';

/** A clock the test moves. */
function manualClock(start = 1000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

/** Runs `n` requests through `limit` at once, each answering after `latencyMs`. */
function wave(limit: ConcurrencyLimit, clock: ReturnType<typeof manualClock>, n: number, latencyMs: number) {
  let admitted = 0;
  for (let i = 0; i < n; i++) if (limit.tryAcquire()) admitted++;
  clock.advance(latencyMs);
  for (let i = 0; i < admitted; i++) limit.release(latencyMs);
  return admitted;
}

describe('ConcurrencyLimit', () => {
  it('admits up to the limit and refuses the rest until one is released', () => {
    const c = manualClock();
    const l = new ConcurrencyLimit({ targetMs: 10, max: 100, initial: 3, min: 1 }, c.now);
    expect([l.tryAcquire(), l.tryAcquire(), l.tryAcquire(), l.tryAcquire()]).toEqual([
      true,
      true,
      true,
      false,
    ]);
    expect(l.inFlight).toBe(3);
    l.release(1);
    expect(l.tryAcquire()).toBe(true);
  });

  it('shrinks while admitted requests are slower than the target, down to min', () => {
    const c = manualClock();
    const l = new ConcurrencyLimit({ targetMs: 10, max: 512, initial: 100, min: 4 }, c.now);
    const seen: number[] = [];
    for (let i = 0; i < 30; i++) {
      wave(l, c, 1000, 40);
      seen.push(l.limit);
    }
    expect(seen[0]).toBe(80); // one slow window: x0.8
    expect(seen.every((v, i) => i === 0 || v <= seen[i - 1]!)).toBe(true);
    expect(l.limit).toBe(4);
  });

  it('grows by one per window while the limit is used and requests are fast, up to max', () => {
    const c = manualClock();
    const l = new ConcurrencyLimit({ targetMs: 10, max: 40, initial: 20 }, c.now);
    wave(l, c, 1000, 2);
    expect(l.limit).toBe(21);
    for (let i = 0; i < 50; i++) wave(l, c, 1000, 2);
    expect(l.limit).toBe(40);
  });

  it('does not grow a limit that is not used (an idle process keeps what it learned)', () => {
    const c = manualClock();
    const l = new ConcurrencyLimit({ targetMs: 10, max: 512, initial: 50 }, c.now);
    for (let i = 0; i < 20; i++) {
      // 5 at a time: a tenth of the limit.
      wave(l, c, 5, 2);
      c.advance(200);
    }
    expect(l.limit).toBe(50);
  });

  it('counts a request that missed its feature deadline as slow, however fast it answered', () => {
    const c = manualClock();
    const l = new ConcurrencyLimit({ targetMs: 50, max: 512, initial: 100, min: 4 }, c.now);
    for (let i = 0; i < 100; i++) expect(l.tryAcquire()).toBe(true);
    c.advance(5);
    // Fast answers, but a third of them are fallbacks: the limit must come down.
    for (let i = 0; i < 100; i++) l.release(5, i % 3 === 0);
    expect(l.limit).toBe(80);
  });

  it('ignores a few slow requests (p90): one slow admin call does not shrink the limit', () => {
    const c = manualClock();
    const l = new ConcurrencyLimit({ targetMs: 10, max: 512, initial: 20 }, c.now);
    for (let i = 0; i < 20; i++) expect(l.tryAcquire()).toBe(true);
    c.advance(3);
    l.release(2000);
    for (let i = 0; i < 19; i++) l.release(3);
    expect(l.limit).toBe(21);
  });

  it('ends a window after windowMs even with fewer answers than the limit', () => {
    const c = manualClock();
    const l = new ConcurrencyLimit({ targetMs: 10, max: 512, initial: 100, windowMs: 100 }, c.now);
    for (let i = 0; i < 60; i++) l.tryAcquire();
    c.advance(50);
    for (let i = 0; i < 10; i++) l.release(50);
    expect(l.limit).toBe(100);
    c.advance(60);
    l.release(50);
    expect(l.limit).toBe(80);
  });

  it('settles near throughput x target when latency grows with load (Little)', () => {
    // A server answering 1000 requests/s: latency = in-flight / 1000 s.
    const c = manualClock();
    const l = new ConcurrencyLimit({ targetMs: 20, max: 512, initial: 200 }, c.now);
    const limits: number[] = [];
    for (let i = 0; i < 400; i++) {
      let n = 0;
      while (l.tryAcquire()) n++;
      // n requests at 1 ms each: all answer after n ms.
      c.advance(n);
      for (let k = 0; k < n; k++) l.release(n);
      limits.push(l.limit);
    }
    const tail = limits.slice(-100);
    // 1000/s x 20 ms = 20 in flight; AIMD saws between ~0.8x and 1x of it.
    expect(Math.max(...tail)).toBeLessThanOrEqual(21);
    expect(Math.min(...tail)).toBeGreaterThanOrEqual(12);
  });

  it('a slow window of a process that is not saturated does not shrink the limit; force admits past it', () => {
    const c = manualClock();
    const l = new ConcurrencyLimit({ targetMs: 10, max: 512, initial: 8, min: 1 }, c.now);
    for (let w = 0; w < 5; w++) {
      for (let i = 0; i < 8; i++) expect(l.tryAcquire()).toBe(true);
      c.advance(100);
      for (let i = 0; i < 8; i++) l.release(100, false, false);
    }
    expect(l.limit).toBe(8);
    for (let i = 0; i < 8; i++) l.tryAcquire();
    expect(l.tryAcquire()).toBe(false);
    expect(l.tryAcquire(true)).toBe(true);
    expect(l.inFlight).toBe(9);
    for (let i = 0; i < 9; i++) l.release(100, false, true);
    expect(l.limit).toBeLessThan(8);
  });

  it('rejects bad options, naming them', () => {
    const now = () => 0;
    expect(() => new ConcurrencyLimit({ targetMs: 0, max: 10 }, now)).toThrow(/targetMs/);
    expect(() => new ConcurrencyLimit({ targetMs: 5, max: 0 }, now)).toThrow(/max/);
    expect(() => new ConcurrencyLimit({ targetMs: 5, max: 10, backoff: 1 }, now)).toThrow(/backoff/);
  });
});

describe('QueueDelayCheck (CoDel)', () => {
  it('refuses nothing without a standing queue, however long one request waited', () => {
    const c = manualClock();
    const q = new QueueDelayCheck({ maxMs: 20 }, c.now);
    // One stall: requests that waited 300 ms, then the queue drains within the interval.
    for (const d of [300, 250, 200, 1, 0]) expect(q.shouldShed(d)).toBe(false);
    c.advance(100);
    expect(q.shouldShed(2)).toBe(false);
    expect(q.overloaded).toBe(false);
    c.advance(100);
    expect(q.shouldShed(300)).toBe(false);
  });

  it('while every request of an interval waited over half the budget, refuses those over the budget', () => {
    const c = manualClock();
    const q = new QueueDelayCheck({ maxMs: 20 }, c.now);
    for (let i = 0; i < 10; i++) {
      q.shouldShed(15 + i * 5);
      c.advance(10);
    }
    // The interval ended with min 15 > 10: a standing queue.
    expect(q.shouldShed(25)).toBe(true);
    expect(q.overloaded).toBe(true);
    expect(q.shouldShed(19)).toBe(false);
    // It drains: an interval with a short wait ends the standing state.
    q.shouldShed(3);
    c.advance(100);
    expect(q.shouldShed(25)).toBe(false);
    expect(q.overloaded).toBe(false);
  });

  it('an interval without requests is no queue', () => {
    const c = manualClock();
    const q = new QueueDelayCheck({ maxMs: 20 }, c.now);
    q.shouldShed(50);
    c.advance(100);
    expect(q.shouldShed(50)).toBe(true);
    c.advance(5000);
    // After a quiet gap the queue is gone: the requests before it say nothing about now.
    expect(q.shouldShed(50)).toBe(false);
    expect(q.overloaded).toBe(false);
  });
});

describe('QueueDelayEstimator', () => {
  function loop() {
    const c = manualClock(0);
    let idle = 0;
    return {
      c,
      idleMs: () => idle,
      /** The loop waits for I/O for `ms`. */
      wait: (ms: number) => {
        c.advance(ms);
        idle += ms;
      },
      /** The loop works for `ms`. */
      work: (ms: number) => c.advance(ms),
    };
  }

  it('a process that keeps up: requests waited about nothing, whatever the connection did before', () => {
    const l = loop();
    const e = new QueueDelayEstimator(l.c.now, l.idleMs);
    const lastAnswer = l.c.now();
    l.wait(5000); // an idle keep-alive connection
    l.work(1);
    e.look();
    expect(e.delay(lastAnswer)).toBeLessThanOrEqual(1);
  });

  it('a busy loop: a request waited since its connection last answered', () => {
    const l = loop();
    const e = new QueueDelayEstimator(l.c.now, l.idleMs);
    l.wait(10);
    e.look();
    const lastAnswer = l.c.now();
    l.work(80); // no idle since: the bytes may have waited all along
    e.look();
    expect(e.delay(lastAnswer)).toBe(80);
    // A connection that answered later waited less.
    expect(e.delay(lastAnswer + 50)).toBe(30);
  });

  it('bounds the wait by the busy time since the loop last waited, for new connections too', () => {
    const l = loop();
    const e = new QueueDelayEstimator(l.c.now, l.idleMs);
    e.look();
    l.wait(20);
    l.work(40);
    e.look();
    // The loop waited 20 ms at most 40 ms ago.
    expect(e.delay(undefined)).toBe(40);
    expect(e.delay(0)).toBe(40);
  });
});

describe('LoopSaturation', () => {
  /** 250 ms samples of a loop thread that, per 250 ms, ran `run`, waited for a CPU `wait` ms. */
  function loop(run: number, wait: number, eluActive = run + wait) {
    const clock = manualClock();
    const t = { runMs: 0, waitMs: 0 };
    const e = { idle: 0, active: 0 };
    const withTimes = (times: boolean) =>
      new LoopSaturation(
        0.9,
        clock.now,
        () => (times ? { ...t } : undefined),
        () => ({ ...e }),
      );
    const sat = withTimes(true);
    const eluOnly = withTimes(false);
    for (let i = 0; i < 4; i++) {
      clock.advance(250);
      t.runMs += run;
      t.waitMs += wait;
      e.active += eluActive;
      e.idle += 250 - eluActive;
      sat.sample();
      eluOnly.sample();
    }
    return { saturated: sat.saturated, byUtilization: eluOnly.saturated };
  }

  it('a loop that runs all the time it is given a CPU is saturated', () => {
    expect(loop(240, 0).saturated).toBe(true);
    // ...also when neighbours take most of the CPU: it has no time to sleep.
    expect(loop(60, 185).saturated).toBe(true);
  });

  it('a mostly idle loop on a starved node is not, though its callbacks were descheduled', () => {
    // 30 ms of work per 250 ms, 200 ms of it waiting for a CPU mid-callback: event loop
    // utilization (the old signal) calls it saturated, 92 % busy.
    expect(loop(30, 200)).toEqual({ saturated: false, byUtilization: true });
  });

  it('a stopped process (SIGSTOP: neither running nor runnable) is not saturated', () => {
    expect(loop(5, 0, 245).saturated).toBe(false);
  });

  it('a process whose other threads take its one core while the loop sleeps is saturated', () => {
    // Per 250 ms the loop runs 100 ms and sleeps 150 waiting for inference, which (onnxruntime's
    // threads) takes the rest of the pod's one core: nothing to spare, though the loop sleeps.
    const clock = manualClock();
    const t = { runMs: 0, waitMs: 0 };
    let cpu = 0;
    const on = (cores: number) =>
      new LoopSaturation(
        0.9,
        clock.now,
        () => ({ ...t }),
        () => ({ idle: 0, active: 0 }),
        () => cpu,
        cores,
      );
    const oneCore = on(1);
    const twoCores = on(2);
    for (let i = 0; i < 4; i++) {
      clock.advance(250);
      t.runMs += 100;
      cpu += 245;
      oneCore.sample();
      twoCores.sample();
    }
    expect(oneCore.saturated).toBe(true);
    // With a second core to spare, it is not.
    expect(twoCores.saturated).toBe(false);
  });

  it('the CPUs a process may use: its affinity, capped by its cgroup quota', () => {
    const files = (f: Record<string, string>) => (p: string) => f[p];
    expect(availableCores(2, files({}))).toBe(2);
    expect(availableCores(2, files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' }))).toBe(2);
    expect(availableCores(4, files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' }))).toBe(1.5);
    expect(availableCores(1, files({ '/sys/fs/cgroup/cpu.max': '400000 100000\n' }))).toBe(1);
    expect(
      availableCores(
        8,
        files({
          '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '50000\n',
          '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n',
        }),
      ),
    ).toBe(0.5);
    expect(availableCores(8, files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n' }))).toBe(8);
  });

  it('without scheduler times it falls back to event loop utilization', () => {
    expect(loop(240, 0).byUtilization).toBe(true);
    expect(loop(100, 0).byUtilization).toBe(false);
  });

  it('reads /proc/thread-self/schedstat (ns on a CPU, ns runnable)', () => {
    expect(readLoopThreadTimes(() => '296115000 2900458000 2\n')).toEqual({
      runMs: 296.115,
      waitMs: 2900.458,
    });
    expect(readLoopThreadTimes(() => '')).toBeUndefined();
    expect(
      readLoopThreadTimes(() => {
        throw new Error('ENOENT');
      }),
    ).toBeUndefined();
  });
});
