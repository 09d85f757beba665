/**
 * Parses the command line of `kubectl crema` into a command (pure). Every refusal names the
 * argument or flag at fault, so a typo costs one line of output, not a stack trace.
 */
import { parseArgs } from 'node:util';
import { parseDurationMs } from '../../../contracts/duration.js';
import { CliError } from './errors.js';

/** The resource kinds `get` shows. */
export type Kind = 'models' | 'experiments' | 'regions';

/** Spellings of each kind a user may type (plural, singular, short name, full resource name). */
const KIND_ALIASES: Readonly<Record<string, Kind>> = {
  models: 'models',
  model: 'models',
  rm: 'models',
  recommendermodels: 'models',
  recommendermodel: 'models',
  experiments: 'experiments',
  experiment: 'experiments',
  exp: 'experiments',
  regions: 'regions',
  region: 'regions',
  sr: 'regions',
  storeregions: 'regions',
  storeregion: 'regions',
};

/** How results are printed: `tree` is the human view; json and yaml print the API objects. */
export type Output = 'tree' | 'json' | 'yaml';

/** Flags every command takes (the kubectl ones a plugin has to implement itself). */
export interface GlobalOptions {
  readonly kubeconfig?: string;
  readonly context?: string;
  readonly namespace?: string;
  readonly allNamespaces: boolean;
  readonly output: Output;
}

export type Command =
  | { readonly name: 'help' }
  | { readonly name: 'version' }
  | { readonly name: 'get'; readonly kinds: readonly Kind[]; readonly resourceName?: string }
  | {
      readonly name: 'status';
      readonly resourceName: string;
      readonly watch: boolean;
      /** 0 waits without limit. */
      readonly timeoutMs: number;
    }
  | { readonly name: 'promote'; readonly resourceName: string; readonly full: boolean }
  | { readonly name: 'abort' | 'pause' | 'resume'; readonly resourceName: string }
  | { readonly name: 'experiment'; readonly action: 'conclude' | 'stop'; readonly resourceName: string }
  | { readonly name: 'dashboard'; readonly port: number; readonly address: string };

export interface Invocation {
  readonly command: Command;
  readonly options: GlobalOptions;
}

export const USAGE = `kubectl crema - Crema's models, experiments and store regions

Usage:
  kubectl crema get [models|experiments|regions] [NAME]   tree of models, experiment results, region floors
  kubectl crema status NAME [--watch] [--timeout 10m]     a model's rollout; the exit code says how it ended
  kubectl crema promote NAME [--full]                     canary to its next step (--full: to stable now)
  kubectl crema abort NAME                                roll the canary back now
  kubectl crema pause NAME | resume NAME                  hold / release the rollout (spec.paused)
  kubectl crema experiment conclude|stop NAME             end an experiment (decision so far | back to control)
  kubectl crema dashboard [--port 3100] [--address 127.0.0.1]   web view of the above
  kubectl crema version

Flags:
  --kubeconfig PATH   kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)
  --context NAME      kubeconfig context to use
  -n, --namespace NS  namespace (default: the context's, then "default")
  -A, --all-namespaces  every namespace (get, dashboard)
  -o, --output FMT    json or yaml instead of the tree
  -w, --watch         status: wait until the rollout ends
  --timeout DURATION  status --watch: give up after e.g. 30s, 10m, 1h (exit 2); default: no limit

Exit codes: 0 ok / healthy, 1 degraded or rolled back, 2 timeout, 3 still in progress
(status without --watch), 4 error (bad input, not found, no Crema CRDs, API refused).
`;

/** A DNS subdomain, the grammar of every Kubernetes object name. */
const NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

function checkName(what: string, v: string | undefined): string {
  if (v === undefined) throw new CliError(`${what}: a resource NAME is required`);
  if (!NAME_RE.test(v)) throw new CliError(`${what}: ${JSON.stringify(v)} is not a valid resource name`);
  return v;
}

function noMore(what: string, rest: readonly string[]): void {
  if (rest.length) throw new CliError(`${what}: unexpected argument ${JSON.stringify(rest[0])}`);
}

/** Parses `argv` (without node and the script). Throws CliError naming what is wrong. */
export function parseInvocation(argv: readonly string[]): Invocation {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
        namespace: { type: 'string', short: 'n' },
        'all-namespaces': { type: 'boolean', short: 'A', default: false },
        output: { type: 'string', short: 'o' },
        watch: { type: 'boolean', short: 'w', default: false },
        timeout: { type: 'string' },
        full: { type: 'boolean', default: false },
        port: { type: 'string' },
        address: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    // node:util's messages name the flag ("Unknown option '--bogus'"); keep their first line.
    throw new CliError((err as Error).message.split('\n')[0] ?? String(err));
  }
  const { values: v, positionals } = parsed;

  const output = v.output ?? 'tree';
  if (output !== 'tree' && output !== 'json' && output !== 'yaml')
    throw new CliError(`--output: must be json or yaml, not ${JSON.stringify(output)}`);
  if (v.namespace !== undefined && !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v.namespace))
    throw new CliError(`--namespace: ${JSON.stringify(v.namespace)} is not a valid namespace name`);
  if (v.namespace !== undefined && v['all-namespaces'])
    throw new CliError('--namespace and --all-namespaces: give one or the other');
  const options: GlobalOptions = {
    ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}),
    ...(v.context !== undefined ? { context: v.context } : {}),
    ...(v.namespace !== undefined ? { namespace: v.namespace } : {}),
    allNamespaces: v['all-namespaces'],
    output,
  };

  const [verb, ...rest] = positionals;
  const onlyFor = (flag: string, set: boolean, cmds: string) => {
    if (set) throw new CliError(`--${flag}: only valid for ${cmds}`);
  };
  if (verb !== 'status') {
    onlyFor('watch', v.watch, 'status');
    onlyFor('timeout', v.timeout !== undefined, 'status');
  }
  if (verb !== 'promote') onlyFor('full', v.full, 'promote');
  if (verb !== 'dashboard') {
    onlyFor('port', v.port !== undefined, 'dashboard');
    onlyFor('address', v.address !== undefined, 'dashboard');
  }
  if (v['all-namespaces'] && verb !== 'get' && verb !== 'dashboard')
    throw new CliError('--all-namespaces: only valid for get and dashboard');

  if (v.help || verb === undefined || verb === 'help') return { command: { name: 'help' }, options };
  switch (verb) {
    case 'version':
      noMore('version', rest);
      return { command: { name: 'version' }, options };
    case 'get': {
      const [kindArg, name, ...more] = rest;
      noMore('get', more);
      if (kindArg === undefined || kindArg === 'all')
        return { command: { name: 'get', kinds: ['models', 'experiments', 'regions'] }, options };
      const kind = KIND_ALIASES[kindArg.toLowerCase()];
      if (!kind)
        throw new CliError(
          `get: unknown resource kind ${JSON.stringify(kindArg)} (use models, experiments or regions)`,
        );
      if (name !== undefined && options.allNamespaces)
        throw new CliError('get: a NAME and --all-namespaces cannot be combined');
      return {
        command: {
          name: 'get',
          kinds: [kind],
          ...(name !== undefined ? { resourceName: checkName('get', name) } : {}),
        },
        options,
      };
    }
    case 'status': {
      const [name, ...more] = rest;
      noMore('status', more);
      let timeoutMs = 0;
      if (v.timeout !== undefined) {
        if (!v.watch) throw new CliError('--timeout: only valid with --watch');
        try {
          timeoutMs = parseDurationMs(v.timeout);
        } catch {
          throw new CliError(
            `--timeout: ${JSON.stringify(v.timeout)} is not a duration (use e.g. 30s, 10m, 1h)`,
          );
        }
        if (timeoutMs <= 0) throw new CliError('--timeout: must be longer than 0s');
      }
      return {
        command: { name: 'status', resourceName: checkName('status', name), watch: v.watch, timeoutMs },
        options,
      };
    }
    case 'promote': {
      const [name, ...more] = rest;
      noMore('promote', more);
      return {
        command: { name: 'promote', resourceName: checkName('promote', name), full: v.full },
        options,
      };
    }
    case 'abort':
    case 'pause':
    case 'resume': {
      const [name, ...more] = rest;
      noMore(verb, more);
      return { command: { name: verb, resourceName: checkName(verb, name) }, options };
    }
    case 'experiment':
    case 'exp': {
      const [action, name, ...more] = rest;
      if (action !== 'conclude' && action !== 'stop')
        throw new CliError(
          `experiment: ${action === undefined ? 'an action is required' : `unknown action ${JSON.stringify(action)}`} (use conclude or stop)`,
        );
      noMore(`experiment ${action}`, more);
      return {
        command: { name: 'experiment', action, resourceName: checkName(`experiment ${action}`, name) },
        options,
      };
    }
    case 'dashboard': {
      noMore('dashboard', rest);
      const port = v.port === undefined ? 3100 : Number(v.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new CliError(`--port: ${JSON.stringify(v.port)} is not a port number (0-65535)`);
      return { command: { name: 'dashboard', port, address: v.address ?? '127.0.0.1' }, options };
    }
    default:
      throw new CliError(
        `unknown command ${JSON.stringify(verb)} (use get, status, promote, abort, pause, resume, experiment, dashboard)`,
      );
  }
}
