/**
 * Why a model's pods do not serve, read from the pods themselves (pure). A Deployment only says
 * "0 ready"; the pods say whether the model could not be fetched or failed its digest check (the
 * fetch-model init container's termination message names the URI), the image cannot be pulled,
 * a Secret or setting is missing, the container crashes, or nothing can schedule it. The first
 * problem found becomes the RecommenderModel's Degraded reason and message.
 */
import type { KubeObject } from '../../runtime/kube.js';
import { FETCH_CONTAINER, MODEL_SHA_ANNOTATION, TRACK_LABEL, type Track } from './desired.js';

interface ContainerState {
  waiting?: { reason?: string; message?: string };
  terminated?: { exitCode?: number; reason?: string; message?: string };
}
interface ContainerStatus {
  name: string;
  image?: string;
  ready?: boolean;
  restartCount?: number;
  state?: ContainerState;
  lastState?: ContainerState;
}
/** The pod fields read here. */
export interface PodObject extends KubeObject {
  spec?: { containers?: Array<{ name: string; image?: string }> };
  status?: {
    phase?: string;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
    initContainerStatuses?: ContainerStatus[];
    containerStatuses?: ContainerStatus[];
  };
}

/** A reason (PascalCase, for conditions) and a message a human can act on. */
export interface PodProblem {
  readonly reason: string;
  readonly message: string;
}

const PULL_FAILURES = new Set(['ErrImagePull', 'ImagePullBackOff', 'ErrImageNeverPull', 'InvalidImageName']);
const CONFIG_FAILURES = new Set(['CreateContainerConfigError', 'CreateContainerError']);

type Check = (pod: PodObject) => PodProblem | null;

/** The model fetch failed: unreachable URI, HTTP error, digest or metadata mismatch. */
const modelFetchFailed: Check = (pod) => {
  const s = pod.status?.initContainerStatuses?.find((c) => c.name === FETCH_CONTAINER);
  if (!s || s.state?.terminated?.exitCode === 0) return null;
  const t = [s.state?.terminated, s.lastState?.terminated].find((x) => x && x.exitCode !== 0);
  if (!t) return null;
  return {
    reason: 'ModelFetchFailed',
    message:
      t.message?.trim() ||
      `the ${FETCH_CONTAINER} init container exited ${t.exitCode ?? '?'} (${t.reason ?? 'Error'})`,
  };
};

const imagePullFailed: Check = (pod) => {
  for (const s of [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])]) {
    const w = s.state?.waiting;
    if (w?.reason && PULL_FAILURES.has(w.reason)) {
      const image = pod.spec?.containers?.find((c) => c.name === s.name)?.image ?? s.image ?? '?';
      return {
        reason: 'ImagePullFailed',
        message: `image ${image} cannot be pulled (${w.reason}): ${w.message ?? ''}`.trim(),
      };
    }
  }
  return null;
};

const containerConfigFailed: Check = (pod) => {
  for (const s of [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])]) {
    const w = s.state?.waiting;
    if (w?.reason && CONFIG_FAILURES.has(w.reason))
      return { reason: 'ContainerConfigError', message: `container ${s.name}: ${w.message ?? w.reason}` };
  }
  return null;
};

const crashLooping: Check = (pod) => {
  for (const s of pod.status?.containerStatuses ?? []) {
    const last = s.lastState?.terminated;
    if ((s.restartCount ?? 0) > 0 && !s.ready && last && last.exitCode !== 0) {
      return {
        reason: 'ServingCrashLoop',
        message: `container ${s.name} keeps exiting: last exit ${last.exitCode} (${last.reason ?? 'Error'})${last.message ? `: ${last.message.trim()}` : ''}`,
      };
    }
  }
  return null;
};

const unschedulable: Check = (pod) => {
  const c = pod.status?.conditions?.find((x) => x.type === 'PodScheduled' && x.status === 'False');
  return c?.reason === 'Unschedulable'
    ? { reason: 'Unschedulable', message: c.message ?? 'no node can run the pod' }
    : null;
};

/** Tried in order; the first problem of any pod wins. */
const CHECKS: readonly Check[] = [
  modelFetchFailed,
  imagePullFailed,
  containerConfigFailed,
  crashLooping,
  unschedulable,
];

/**
 * The first problem among the pods of `track` (and, for serving tracks, of digest `sha256`) that
 * are not being deleted; null when none shows one (still starting counts as no problem).
 */
export function findPodProblem(pods: readonly PodObject[], track: Track, sha256?: string): PodProblem | null {
  const mine = pods.filter(
    (p) =>
      !p.metadata?.deletionTimestamp &&
      p.metadata?.labels?.[TRACK_LABEL] === track &&
      (sha256 === undefined || p.metadata?.annotations?.[MODEL_SHA_ANNOTATION] === sha256),
  );
  for (const check of CHECKS) {
    for (const pod of mine) {
      const problem = check(pod);
      if (problem)
        return { reason: problem.reason, message: `pod ${pod.metadata?.name}: ${problem.message}` };
    }
  }
  return null;
}
