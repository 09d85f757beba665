/**
 * Entry point of the cdk8s app (`cdk8s.yaml` at the repo root runs it): `npx cdk8s synth`
 * writes manifests/gitops/{models,regions,experiments}.yaml from the inputs `site.ts` names.
 * Reads only committed files: no network, and the same inputs give the same bytes.
 */
import { fileURLToPath } from 'node:url';
import { buildGitOpsApp, loadInputs } from './app.js';
import { SITE } from './site.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
buildGitOpsApp(SITE, await loadInputs(root, SITE)).synth();
