/**
 * Canary rollouts against the real API server and controller-manager: steps move the router
 * weights and promote the canary to stable; an abort rolls back and is not retried until the
 * spec changes; a step without analysis provider waits and says why; a StoreRegion freeze
 * window holds promotion; manual promotion works step by step.
 *
 * Control plane only, no kubelet: `simulatePodsReady` marks the pods Ready (real pods: the node tests). No Prometheus here: steps opt out of
 * analysis, except in the test that checks an analysed step waits without one (the analysis
 * against a real Prometheus is tested in operator/src/analysis).
 */
import { isDeepStrictEqual } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  KubeApiError,
  RESOURCES,
  resourcePath,
  type KubeClient,
  type KubeObject,
} from '../../runtime/kube.js';
import { startOperator } from '../../operator.js';
import { eventually } from '../../../test/helpers.js';
import {
  startOperatorForTest,
  TEST_SERVING_REDIS_URL,
  type OperatorTestEnv,
} from '../../../test/operator.js';
import type { RecommenderModel } from './types.js';

const ns = `canary-${Date.now().toString(36)}`;
const sha = (c: string) => c.repeat(64);
let client: KubeClient;
let env: OperatorTestEnv;

const getModel = (name: string) =>
  client.request<RecommenderModel>('GET', resourcePath(RESOURCES.recommenderModel, ns, name));
const cond = (m: RecommenderModel, t: string) => m.status?.conditions?.find((c) => c.type === t);
const exists = (r: Parameters<typeof resourcePath>[0], name: string) =>
  client.request('GET', resourcePath(r, ns, name)).then(
    () => true,
    (e: unknown) => (e instanceof KubeApiError && e.notFound ? false : Promise.reject(e)),
  );
async function routerWeights(name: string): Promise<Record<string, number>> {
  const cm = await client.request<KubeObject & { data: Record<string, string> }>(
    'GET',
    resourcePath(RESOURCES.configMap, ns, `${name}-router`),
  );
  const doc = JSON.parse(cm.data['router.json']!) as { variants: Array<{ name: string; weight: number }> };
  return Object.fromEntries(doc.variants.map((v) => [v.name, v.weight]));
}
/** Status records a step first; the router config follows within moments. */
const routerReaches = (name: string, weights: Record<string, number>) =>
  eventually(
    async () => isDeepStrictEqual(await routerWeights(name), weights),
    1500,
    `${name}: router config at ${JSON.stringify(weights)}`,
  );
const deploymentSha = async (name: string) =>
  (
    await client.request<
      KubeObject & { spec: { template: { metadata: { annotations: Record<string, string> } } } }
    >('GET', resourcePath(RESOURCES.deployment, ns, name))
  ).spec.template.metadata.annotations['crema.dev/model-sha256'];

async function createModel(name: string, rollout: unknown): Promise<void> {
  await client.request('POST', resourcePath(RESOURCES.recommenderModel, ns), {
    body: {
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name, namespace: ns },
      spec: {
        model: { uri: `file:///models/${name}-a.onnx`, sha256: sha('a'), task: 'drink-ranking' },
        serving: { minReplicas: 1, maxReplicas: 3 },
        rollout,
      },
    },
  });
  await eventually(
    async () => cond(await getModel(name), 'Ready')?.status === 'True',
    60_000,
    `${name} Ready`,
  );
}

const setModel = (name: string, c: string) =>
  client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, name), {
    contentType: 'application/merge-patch+json',
    body: { spec: { model: { sha256: sha(c), uri: `file:///models/${name}-${c}.onnx` } } },
  });
const annotate = (name: string, annotations: Record<string, string>) =>
  client.request('PATCH', resourcePath(RESOURCES.recommenderModel, ns, name), {
    contentType: 'application/merge-patch+json',
    body: { metadata: { annotations } },
  });

beforeAll(async () => {
  env = await startOperatorForTest({
    kubeconfigPath: inject('kubeconfigPath'),
    namespace: ns,
    simulatePodReadiness: true,
  });
  client = env.client;
});

afterAll(async () => {
  await env?.op.stop(); // the restart test may have replaced the operator
  await env?.stop();
});

describe('canary rollout (control plane only: pod readiness simulated)', () => {
  it('moves traffic through the steps and promotes the canary to stable', { timeout: 120_000 }, async () => {
    await createModel('drinks', {
      steps: [
        { weight: 20, pause: '2s', analysis: false },
        { weight: 50, pause: '2s', analysis: false },
        { weight: 100, pause: '1s', analysis: false },
      ],
    });
    expect(await routerWeights('drinks')).toEqual({ stable: 100 });
    await setModel('drinks', 'b');

    // Weight 20 once the canary pod is ready; stable keeps serving the old digest meanwhile.
    const at20 = await eventually(
      async () => {
        const m = await getModel('drinks');
        return m.status?.canary?.weight === 20 ? m : undefined;
      },
      60_000,
      'canary at 20%',
    );
    expect(at20.status?.canary).toMatchObject({ modelSha: sha('b'), revision: 2, step: 0 });
    expect(cond(at20, 'Progressing')).toMatchObject({ status: 'True', reason: 'Canary' });
    expect(await deploymentSha('drinks-stable')).toBe(sha('a'));
    expect(await deploymentSha('drinks-canary')).toBe(sha('b'));
    await routerReaches('drinks', { stable: 80, canary: 20 });

    await eventually(
      async () => (await getModel('drinks')).status?.canary?.weight === 50,
      30_000,
      'canary at 50%',
    );
    await routerReaches('drinks', { stable: 50, canary: 50 });

    // Promoted: stable names revision 2 at once (the intent), and the promotion completes once
    // every stable pod runs it.
    const promoted = await eventually(
      async () => {
        const m = await getModel('drinks');
        return !m.status?.canary && !m.status?.promotion && m.status?.stable?.revision === 2 ? m : undefined;
      },
      30_000,
      'promoted',
    );
    expect(promoted.status?.stable).toMatchObject({
      modelSha: sha('b'),
      uri: 'file:///models/drinks-b.onnx',
    });
    expect(promoted.status?.history?.[0]).toMatchObject({
      revision: 1,
      modelSha: sha('a'),
      reason: expect.stringMatching(/Replaced by revision 2 after a successful canary/),
    });
    expect(await deploymentSha('drinks-stable')).toBe(sha('b'));
    // The canary's Deployment and Service are deleted one after the other: wait for both.
    await eventually(
      async () =>
        !(await exists(RESOURCES.deployment, 'drinks-canary')) &&
        !(await exists(RESOURCES.service, 'drinks-canary')),
      20_000,
      'canary Deployment and Service removed',
    );
    expect(await routerWeights('drinks')).toEqual({ stable: 100 });
  });

  it('an operator restart mid-step resumes that step', { timeout: 120_000 }, async () => {
    await createModel('resume', {
      steps: [
        { weight: 30, pause: '6s', analysis: false },
        { weight: 100, pause: '1s', analysis: false },
      ],
    });
    await setModel('resume', '9');
    const before = await eventually(
      async () => {
        const m = await getModel('resume');
        return m.status?.canary?.weight === 30 ? m : undefined;
      },
      60_000,
      'canary at 30%',
    );
    // Replace the operator: state lives in status, so the new one continues the same step.
    await env.op.stop();
    const config = {
      kubeconfigPath: inject('kubeconfigPath'),
      namespace: ns,
      healthPort: 0,
      healthHost: '127.0.0.1',
      leaderElection: false,
      log: () => {},
      servingRedisUrl: TEST_SERVING_REDIS_URL,
    };
    const restarted = await startOperator(config);
    try {
      await new Promise((r) => setTimeout(r, 1500));
      const during = await getModel('resume');
      expect(during.status?.canary).toMatchObject({
        step: 0,
        weight: 30,
        stepStartedAt: before.status?.canary?.stepStartedAt,
      });
      expect(await routerWeights('resume')).toEqual({ stable: 70, canary: 30 });
      const promoted = await eventually(
        async () => {
          const m = await getModel('resume');
          return m.status?.stable?.modelSha === sha('9') ? m : undefined;
        },
        30_000,
        'promoted after the restart',
      );
      // The pause was counted from the original step start, not from the restart.
      const since = new Date(promoted.status!.stable!.since!).getTime();
      expect(since - new Date(before.status!.canary!.stepStartedAt!).getTime()).toBeGreaterThanOrEqual(6000);
    } finally {
      await restarted.stop();
      env = { ...env, op: await startOperator(config) };
    }
  });

  it(
    'abort rolls back, is recorded, and is not retried until the spec changes',
    { timeout: 120_000 },
    async () => {
      await createModel('addons', {
        steps: [
          { weight: 10, analysis: false },
          { weight: 100, analysis: false },
        ],
      });
      await setModel('addons', 'c');
      await eventually(
        async () => (await getModel('addons')).status?.canary?.weight === 10,
        60_000,
        'canary at 10%',
      );
      // Steps without pause hold for a manual promotion.
      expect(cond(await getModel('addons'), 'Progressing')?.message).toMatch(/holds until promoted/);

      await annotate('addons', { 'crema.dev/abort': 'true' });
      const rolledBack = await eventually(
        async () => {
          const m = await getModel('addons');
          return cond(m, 'RolledBack')?.status === 'True' ? m : undefined;
        },
        30_000,
        'rolled back',
      );
      expect(cond(rolledBack, 'RolledBack')).toMatchObject({ reason: 'Aborted' });
      expect(rolledBack.status?.abortedModelSha).toBe(sha('c'));
      expect(rolledBack.status?.phase).toBe('RolledBack');
      expect(rolledBack.status?.stable?.modelSha).toBe(sha('a'));
      await routerReaches('addons', { stable: 100 });
      await eventually(
        async () => !(await exists(RESOURCES.deployment, 'addons-canary')),
        20_000,
        'canary removed',
      );
      await eventually(
        async () => !(await getModel('addons')).metadata?.annotations?.['crema.dev/abort'],
        10_000,
        'abort annotation consumed',
      );

      // Not retried: the spec still names the aborted digest.
      await new Promise((r) => setTimeout(r, 2000));
      const still = await getModel('addons');
      expect(still.status?.canary).toBeUndefined();
      expect(cond(still, 'Progressing')?.message).toMatch(/was rolled back; change spec.model/);

      // A new digest starts a new rollout; promote=step moves it by hand.
      await setModel('addons', 'd');
      await eventually(
        async () => (await getModel('addons')).status?.canary?.modelSha === sha('d'),
        60_000,
        'new canary',
      );
      await eventually(
        async () => (await getModel('addons')).status?.canary?.weight === 10,
        60_000,
        'new canary at 10%',
      );
      expect(cond(await getModel('addons'), 'RolledBack')).toMatchObject({
        status: 'False',
        reason: 'NewRollout',
      });
      await annotate('addons', { 'crema.dev/promote': 'step' });
      await eventually(
        async () => (await getModel('addons')).status?.canary?.weight === 100,
        30_000,
        'step 2',
      );
      // The step is written to status before the command is removed: annotating the same value
      // again before that removal changes nothing, and the removal then takes it too.
      await eventually(
        async () => !(await getModel('addons')).metadata?.annotations?.['crema.dev/promote'],
        10_000,
        'first promote consumed',
      );
      await annotate('addons', { 'crema.dev/promote': 'step' });
      await eventually(
        async () => (await getModel('addons')).status?.stable?.modelSha === sha('d'),
        30_000,
        'promoted by hand',
      );
    },
  );

  it('an analysed step without analysis waits and says why', { timeout: 90_000 }, async () => {
    await createModel('pickup', {
      steps: [{ weight: 10, pause: '1s' }, { weight: 100 }],
      analysis: { interval: '1s', minSamples: 100, metrics: { errorRate: { max: 0.01 } } },
    });
    await setModel('pickup', 'e');
    const waiting = await eventually(
      async () => {
        const m = await getModel('pickup');
        return m.status?.canary?.analysis?.length ? m : undefined;
      },
      60_000,
      'an analysis record',
    );
    expect(waiting.status?.canary).toMatchObject({ step: 0, weight: 10, failures: 0 });
    expect(waiting.status?.canary?.analysis?.[0]).toMatchObject({
      verdict: 'Inconclusive',
      message: expect.stringMatching(/no analysis provider/),
    });
    expect(cond(waiting, 'Progressing')?.message).toMatch(/analysis inconclusive/);
  });

  it('does not promote inside a StoreRegion freeze window', { timeout: 90_000 }, async () => {
    await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), {
      body: {
        apiVersion: 'crema.dev/v1alpha1',
        kind: 'StoreRegion',
        metadata: { name: 'everywhere', namespace: ns },
        spec: {
          stores: ['s1'],
          timezone: 'UTC',
          serving: { modelRef: 'churn' },
          freezeWindows: [
            { days: ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'], start: '00:00', end: '23:59' },
          ],
        },
      },
    });
    await createModel('churn', { steps: [{ weight: 100, pause: '1s', analysis: false }] });
    await setModel('churn', 'f');
    const held = await eventually(
      async () => {
        const m = await getModel('churn');
        return /freeze window/.test(cond(m, 'Progressing')?.message ?? '') ? m : undefined;
      },
      60_000,
      'held by the freeze window',
    );
    expect(held.status?.stable?.modelSha).toBe(sha('a'));
    expect(cond(held, 'Progressing')?.message).toMatch(/everywhere\/freezeWindows\[0\]/);
    // A promotion asked for by hand during the freeze is not dropped: it stays, and says why.
    await annotate('churn', { 'crema.dev/promote': 'full' });
    const waiting = await eventually(
      async () => {
        const m = await getModel('churn');
        return /crema.dev\/promote=full held: .*freeze window/.test(cond(m, 'Progressing')?.message ?? '')
          ? m
          : undefined;
      },
      30_000,
      'the held promotion shown',
    );
    await new Promise((r) => setTimeout(r, 2000));
    expect((await getModel('churn')).metadata?.annotations?.['crema.dev/promote']).toBe('full');
    expect(waiting.status?.stable?.modelSha).toBe(sha('a'));
    // Lifting the freeze lets it promote, and the command is consumed then.
    await client.request('DELETE', resourcePath(RESOURCES.storeRegion, ns, 'everywhere'));
    const promoted = await eventually(
      async () => {
        const m = await getModel('churn');
        return m.status?.stable?.modelSha === sha('f') ? m : undefined;
      },
      60_000,
      'promoted after the freeze',
    );
    expect(promoted.status?.stable?.modelSha).toBe(sha('f'));
    // The decision is recorded first (marked pendingCommand), then the annotation is removed.
    await eventually(
      async () => {
        const m = await getModel('churn');
        return m.metadata?.annotations?.['crema.dev/promote'] === undefined && !m.status?.pendingCommand;
      },
      10_000,
      'the command consumed',
    );
  });

  it(
    'a freeze holds a step past its pause; the operator wakes at the freeze end and the step moves then',
    { timeout: 180_000 },
    async () => {
      await createModel('frozen', {
        steps: [
          { weight: 20, pause: '10s', analysis: false },
          { weight: 60, pause: '10m', analysis: false },
        ],
      });
      await setModel('frozen', '7');
      const at20 = await eventually(
        async () => {
          const m = await getModel('frozen');
          return m.status?.canary?.weight === 20 ? m : undefined;
        },
        60_000,
        'canary at 20%',
      );
      const pauseEnds = new Date(at20.status!.canary!.stepStartedAt!).getTime() + 10_000;
      // A UTC window from this minute to a minute boundary well after the step's pause ends.
      const hhmm = (t: number) => new Date(t).toISOString().slice(11, 16);
      let end = Math.ceil((Math.max(pauseEnds, Date.now()) + 15_000) / 60_000) * 60_000;
      if (hhmm(end) === '00:00') {
        // A window cannot end at 24:00: wait for the next day.
        await new Promise((r) => setTimeout(r, end - Date.now() + 1000));
        end = Math.ceil((Date.now() + 15_000) / 60_000) * 60_000;
      }
      await client.request('POST', resourcePath(RESOURCES.storeRegion, ns), {
        body: {
          apiVersion: 'crema.dev/v1alpha1',
          kind: 'StoreRegion',
          metadata: { name: 'rush', namespace: ns },
          spec: {
            stores: ['s1'],
            timezone: 'UTC',
            serving: { modelRef: 'frozen' },
            freezeWindows: [
              {
                days: ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'],
                start: hhmm(Date.now()),
                end: hhmm(end),
              },
            ],
          },
        },
      });
      const frozen = await eventually(
        async () => {
          const m = await getModel('frozen');
          return m.status?.phase === 'Frozen' ? m : undefined;
        },
        20_000,
        'phase Frozen',
      );
      expect(frozen.status?.freeze).toEqual({
        window: expect.stringMatching(/^rush\/freezeWindows\[0\] /),
        until: new Date(end).toISOString(),
      });
      expect(cond(frozen, 'Frozen')).toMatchObject({ status: 'True', reason: 'RolloutHeld' });

      // Past the step's pause, inside the freeze: still step 1 at 20%.
      await new Promise((r) => setTimeout(r, Math.max(0, pauseEnds + 3000 - Date.now())));
      expect(Date.now()).toBeLessThan(end);
      const held = await getModel('frozen');
      expect(held.status?.canary).toMatchObject({ step: 0, weight: 20 });
      expect(cond(held, 'Progressing')?.message).toMatch(
        /frozen until .*the canary holds at step 1, weight 20%/,
      );
      expect(await routerWeights('frozen')).toEqual({ stable: 80, canary: 20 });

      // Nothing else changes at the freeze's end: the operator's own wake-up moves the step.
      const moved = await eventually(
        async () => {
          const m = await getModel('frozen');
          return m.status?.canary?.weight === 60 ? { m, at: Date.now() } : undefined;
        },
        end - Date.now() + 10_000,
        'step 2 after the freeze',
      );
      expect(moved.at).toBeGreaterThanOrEqual(end);
      expect(moved.at - end).toBeLessThan(5_000);
      expect(new Date(moved.m.status!.canary!.stepStartedAt!).getTime()).toBeGreaterThanOrEqual(end);
      expect(moved.m.status?.freeze).toBeUndefined();
      expect(cond(moved.m, 'Frozen')).toMatchObject({ status: 'False', reason: 'NoFreeze' });
      await routerReaches('frozen', { stable: 40, canary: 60 });
    },
  );
});
