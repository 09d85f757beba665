#!/usr/bin/env node
// `kubectl crema`: kubectl runs any executable named kubectl-crema on PATH. `npm i -g` (or
// `npm link`) in a checkout puts this file there. It runs the bundled plugin when one was built
// (`npm run build:plugin`, one file with its dependencies, fast to start), else the TypeScript
// source through tsx.
import { existsSync } from 'node:fs';
import { URL, fileURLToPath } from 'node:url';

const bundle = new URL('../dist/plugin/kubectl-crema.js', import.meta.url);
if (existsSync(fileURLToPath(bundle))) {
  await import(bundle.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../operator/src/cli/main.ts');
}
