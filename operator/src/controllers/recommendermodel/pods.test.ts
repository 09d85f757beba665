import { describe, expect, it } from 'vitest';
import { findPodProblem, type PodObject } from './pods.js';

const SHA = 'a'.repeat(64);
const pod = (
  status: PodObject['status'],
  opts: { track?: string; sha?: string; deleting?: boolean } = {},
): PodObject => ({
  metadata: {
    name: 'drinks-stable-abc',
    labels: { 'crema.dev/track': opts.track ?? 'stable' },
    annotations: { 'crema.dev/model-sha256': opts.sha ?? SHA },
    ...(opts.deleting ? { deletionTimestamp: new Date('2026-12-01T00:00:00Z') } : {}),
  },
  spec: { containers: [{ name: 'serving', image: 'crema/serving:0.1.0' }] },
  status,
});

describe('findPodProblem', () => {
  it.each<[string, PodObject['status'], { reason: string; message: RegExp } | null]>([
    ['a pod still starting', { phase: 'Pending' }, null],
    [
      'a model fetch that failed, with the reason the init container wrote (names the URI)',
      {
        initContainerStatuses: [
          {
            name: 'fetch-model',
            state: { waiting: { reason: 'CrashLoopBackOff' } },
            lastState: { terminated: { exitCode: 1, message: 'model uri http://m/x.onnx: HTTP 404' } },
          },
        ],
      },
      {
        reason: 'ModelFetchFailed',
        message: /^pod drinks-stable-abc: model uri http:\/\/m\/x\.onnx: HTTP 404$/,
      },
    ],
    [
      'a fetch that died before writing a message',
      {
        initContainerStatuses: [
          { name: 'fetch-model', state: { terminated: { exitCode: 1, reason: 'Error' } } },
        ],
      },
      { reason: 'ModelFetchFailed', message: /init container exited 1 \(Error\)/ },
    ],
    [
      'a fetch that succeeded after an earlier failure',
      {
        initContainerStatuses: [
          {
            name: 'fetch-model',
            state: { terminated: { exitCode: 0 } },
            lastState: { terminated: { exitCode: 1 } },
          },
        ],
      },
      null,
    ],
    [
      'an image that cannot be pulled',
      {
        containerStatuses: [
          {
            name: 'serving',
            state: { waiting: { reason: 'ImagePullBackOff', message: 'Back-off pulling' } },
          },
        ],
      },
      {
        reason: 'ImagePullFailed',
        message: /image crema\/serving:0\.1\.0 cannot be pulled \(ImagePullBackOff\)/,
      },
    ],
    [
      'a missing Secret or setting',
      {
        containerStatuses: [
          {
            name: 'serving',
            state: { waiting: { reason: 'CreateContainerConfigError', message: 'secret "x" not found' } },
          },
        ],
      },
      { reason: 'ContainerConfigError', message: /secret "x" not found/ },
    ],
    [
      'a serving container that keeps crashing',
      {
        containerStatuses: [
          {
            name: 'serving',
            ready: false,
            restartCount: 3,
            lastState: { terminated: { exitCode: 137, reason: 'OOMKilled' } },
          },
        ],
      },
      { reason: 'ServingCrashLoop', message: /keeps exiting: last exit 137 \(OOMKilled\)/ },
    ],
    [
      'a container that restarted once and serves again',
      {
        containerStatuses: [
          { name: 'serving', ready: true, restartCount: 1, lastState: { terminated: { exitCode: 137 } } },
        ],
      },
      null,
    ],
    [
      'a pod no node can take',
      {
        conditions: [
          {
            type: 'PodScheduled',
            status: 'False',
            reason: 'Unschedulable',
            message: '0/1 nodes: Insufficient cpu',
          },
        ],
      },
      { reason: 'Unschedulable', message: /Insufficient cpu/ },
    ],
  ])('%s', (_what, status, want) => {
    const got = findPodProblem([pod(status)], 'stable', SHA);
    if (want === null) expect(got).toBeNull();
    else {
      expect(got?.reason).toBe(want.reason);
      expect(got?.message).toMatch(want.message);
    }
  });

  it('only looks at pods of the track and digest asked about, and not at pods being deleted', () => {
    const failing = {
      containerStatuses: [{ name: 'serving', state: { waiting: { reason: 'ErrImagePull' } } }],
    };
    expect(findPodProblem([pod(failing, { track: 'canary' })], 'stable', SHA)).toBeNull();
    expect(findPodProblem([pod(failing, { sha: 'b'.repeat(64) })], 'stable', SHA)).toBeNull();
    expect(findPodProblem([pod(failing, { deleting: true })], 'stable', SHA)).toBeNull();
    expect(findPodProblem([pod(failing, { track: 'router' })], 'router')).not.toBeNull();
  });

  it('reports a fetch failure before an image problem of another pod (most specific first)', () => {
    const pull = pod({
      containerStatuses: [{ name: 'serving', state: { waiting: { reason: 'ErrImagePull' } } }],
    });
    const fetch = pod({
      initContainerStatuses: [
        { name: 'fetch-model', state: { terminated: { exitCode: 1, message: 'digest' } } },
      ],
    });
    expect(findPodProblem([pull, fetch], 'stable', SHA)?.reason).toBe('ModelFetchFailed');
  });
});
