/**
 * The serving pod's init container (`node /app/fetch-model.js`): delivers one model into the
 * pod before the serving container starts. It fetches the model and its metadata, verifies them
 * exactly as serving's loader does (pinned sha256, metadata digest, task, feature schema), and
 * writes `<dir>/<task>.onnx` and `<dir>/<task>.meta.json` (contracts/serving-env.ts FETCH_ENV).
 *
 * A failure is retried a few times (a registry blip should not cost a CrashLoopBackOff); the last
 * one exits 1 with the reason, naming the URI, in the container's termination message, which
 * the operator reads into the RecommenderModel's Degraded condition.
 */
import { existsSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FETCH_ENV, MODEL_TASKS } from '../../../contracts/serving-env.js';
import type { ModelTask } from '../../../contracts/model-metadata.js';
import { fetchVerifiedArtifacts, ModelLoadError } from './loader.js';
import { checkModelUri } from './uri.js';

/** Settings of one fetch, from the environment. */
export interface FetchSettings {
  readonly uri: string;
  readonly sha256: string;
  readonly task: ModelTask;
  readonly dir: string;
  readonly metadataUri?: string;
}

/** Reads and checks FETCH_ENV; throws naming the variable at fault. */
export function fetchSettingsFrom(env: NodeJS.ProcessEnv): FetchSettings {
  const need = (name: string) => {
    const v = env[name];
    if (!v) throw new Error(`${name} is required`);
    return v;
  };
  const task = need(FETCH_ENV.task) as ModelTask;
  if (!MODEL_TASKS.includes(task))
    throw new Error(`${FETCH_ENV.task} ${task} is not one of ${MODEL_TASKS.join(', ')}`);
  const sha256 = need(FETCH_ENV.sha256);
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`${FETCH_ENV.sha256} is not a sha256 hex digest`);
  const uri = need(FETCH_ENV.uri);
  const metadataUri = env[FETCH_ENV.metadataUri] || undefined;
  // A malformed URI does not heal by retrying: refuse it here, naming the variable.
  for (const [name, value] of [
    [FETCH_ENV.uri, uri],
    [FETCH_ENV.metadataUri, metadataUri],
  ] as const) {
    const problem = value === undefined ? null : checkModelUri(value);
    if (problem !== null) throw new Error(`${name} ${problem}`);
  }
  return {
    uri,
    sha256,
    task,
    dir: need(FETCH_ENV.dir),
    ...(metadataUri ? { metadataUri } : {}),
  };
}

/** Fetches, verifies and writes the artifacts (each file written whole, then renamed). */
export async function fetchModel(
  s: FetchSettings,
  fetchImpl: typeof fetch = fetch,
): Promise<{ bytes: number }> {
  const { bytes, metaBytes } = await fetchVerifiedArtifacts(s.uri, {
    task: s.task,
    expectedSha256: s.sha256,
    fetchImpl,
    ...(s.metadataUri ? { metadataUri: s.metadataUri } : {}),
  });
  await mkdir(s.dir, { recursive: true });
  for (const [name, data] of [
    [`${s.task}.onnx`, bytes],
    [`${s.task}.meta.json`, metaBytes],
  ] as const) {
    const tmp = join(s.dir, `.${name}.tmp`);
    await writeFile(tmp, data);
    await rename(tmp, join(s.dir, name));
  }
  return { bytes: bytes.length };
}

async function main(): Promise<void> {
  let settings: FetchSettings;
  try {
    settings = fetchSettingsFrom(process.env);
  } catch (err) {
    return fail(`fetch-model: ${(err as Error).message}`);
  }
  const attempts = 3;
  for (let i = 1; ; i++) {
    try {
      const { bytes } = await fetchModel(settings);
      console.log(
        JSON.stringify({
          msg: 'model delivered',
          task: settings.task,
          uri: settings.uri,
          sha256: settings.sha256,
          bytes,
        }),
      );
      return;
    } catch (err) {
      const message =
        err instanceof ModelLoadError ? err.message : `model uri ${settings.uri}: ${String(err)}`;
      // A digest or metadata problem does not heal by retrying; an unreachable URI might.
      const permanent = /sha256|metadata|task is|featureSchemaVersion|not a URL|scheme/.test(message);
      if (permanent || i >= attempts) return fail(message);
      console.error(JSON.stringify({ msg: 'fetch failed, retrying', attempt: i, err: message }));
      await new Promise((r) => setTimeout(r, 2000 * i));
    }
  }
}

/** Exits 1 with `message` as the termination message (what `kubectl describe` and the operator show). */
async function fail(message: string): Promise<void> {
  console.error(message);
  if (existsSync('/dev/termination-log'))
    await writeFile('/dev/termination-log', message).catch(() => undefined);
  process.exit(1);
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) await main();
