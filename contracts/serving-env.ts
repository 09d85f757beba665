/**
 * The environment a serving pod reads its models from: the operator renders it, serving's
 * server.ts reads it. One URI and one pinned digest per task.
 */
import type { ModelTask } from './model-metadata.js';

const PREFIX: Record<ModelTask, string> = {
  'drink-ranking': 'CREMA_RANKING_MODEL',
  'addon-attach': 'CREMA_ADDON_MODEL',
  'pickup-time': 'CREMA_PICKUP_MODEL',
  churn: 'CREMA_CHURN_MODEL',
};

/** Names of the env vars holding the model URI and its expected sha256 for `task`. */
export function modelEnvNames(task: ModelTask): { readonly uri: string; readonly sha256: string } {
  const p = PREFIX[task];
  if (!p) throw new RangeError(`unknown model task ${JSON.stringify(task)}`);
  return { uri: `${p}_URI`, sha256: `${p}_SHA256` };
}

/** Every task, in a stable order. */
export const MODEL_TASKS = Object.keys(PREFIX) as ModelTask[];
