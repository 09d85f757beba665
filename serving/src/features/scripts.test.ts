import { describe, expect, it } from 'vitest';
import { defineScript, ReplicaAckError, type ScriptCall } from '../../../contracts/redis.js';
import { ReplicasUnavailableError, ScriptBatcher } from './scripts.js';

const script = defineScript('return ARGV[1]');
const call = (n: number): ScriptCall => ({ script, keys: ['k'], args: [String(n)] });

/** A SendScripts that answers each batch when the test says so, recording the batches. */
function manualSend() {
  const batches: string[][] = [];
  const answer: (() => void)[] = [];
  const send = (calls: readonly ScriptCall[]) => {
    batches.push(calls.map((c) => String(c.args[0])));
    return new Promise<(unknown | Error)[]>((resolve) =>
      answer.push(() =>
        resolve(calls.map((c) => (c.args[0] === '13' ? new ReplicaAckError(0, 1, 100) : c.args[0]))),
      ),
    );
  };
  return { batches, answer, send };
}

const turn = () => new Promise((r) => setImmediate(r));

describe('ScriptBatcher', () => {
  it('sends the calls of one turn as one batch and gives each caller its own reply or error', async () => {
    const m = manualSend();
    const b = new ScriptBatcher(m.send);
    const got = [1, 13, 2].map((n) => b.run(call(n)).catch((e: unknown) => e));
    await turn();
    expect(m.batches).toEqual([['1', '13', '2']]);
    m.answer[0]!();
    const [one, unconfirmed, two] = await Promise.all(got);
    expect([one, two]).toEqual(['1', '2']);
    expect(unconfirmed).toBeInstanceOf(ReplicaAckError);
  });

  it('with WAIT keeps one batch out: calls arriving meanwhile go together in the next (group commit)', async () => {
    const m = manualSend();
    const b = new ScriptBatcher(m.send, { oneAtATime: true });
    const first = b.run(call(1));
    await turn();
    const later = [2, 3, 4].map((n) => b.run(call(n)));
    await turn();
    await turn();
    expect(m.batches).toEqual([['1']]); // nothing else goes out while the first WAIT blocks
    m.answer[0]!();
    expect(await first).toBe('1');
    await turn();
    await turn();
    expect(m.batches).toEqual([['1'], ['2', '3', '4']]);
    m.answer[1]!();
    expect(await Promise.all(later)).toEqual(['2', '3', '4']);
  });

  it('without WAIT sends each turn at once and splits a turn larger than maxCalls', async () => {
    const m = manualSend();
    const b = new ScriptBatcher(m.send, { maxCalls: 2 });
    const all = [1, 2, 3, 4, 5].map((n) => b.run(call(n)));
    await turn();
    await turn();
    await turn();
    expect(m.batches).toEqual([['1', '2'], ['3', '4'], ['5']]);
    for (const a of m.answer) a();
    expect(await Promise.all(all)).toEqual(['1', '2', '3', '4', '5']);
  });

  it('after writes no replica confirmed, refuses at once until the pause is over, then probes', async () => {
    let now = 0;
    let replicas = 0;
    const sent: number[] = [];
    const b = new ScriptBatcher(
      async (calls) => {
        sent.push(calls.length);
        return calls.map(() => (replicas > 0 ? 'ok' : new ReplicaAckError(0, 1, 100)));
      },
      { oneAtATime: true, pauseAfterUnconfirmedMs: 1000, now: () => now },
    );
    await expect(b.run(call(1))).rejects.toBeInstanceOf(ReplicaAckError);
    // Within the pause: refused without being sent.
    now = 400;
    await expect(b.run(call(2))).rejects.toBeInstanceOf(ReplicasUnavailableError);
    expect(sent).toEqual([1]);
    // After it: one batch probes; the replica is back.
    now = 1001;
    replicas = 1;
    expect(await b.run(call(3))).toBe('ok');
    expect(sent).toEqual([1, 1]);
  });

  it('rejects every call of a batch whose send failed, and keeps going', async () => {
    let fail = true;
    const b = new ScriptBatcher(async (calls) => {
      if (fail) throw new Error('Connection is closed.');
      return calls.map(() => 'ok');
    });
    const r = await Promise.allSettled([b.run(call(1)), b.run(call(2))]);
    expect(r.map((x) => (x as PromiseRejectedResult).reason.message)).toEqual([
      'Connection is closed.',
      'Connection is closed.',
    ]);
    fail = false;
    expect(await b.run(call(3))).toBe('ok');
  });
});
