/**
 * `kubectl crema`: the entry point kubectl runs as the `kubectl-crema` plugin (package.json bin).
 * Any failure ends as one line on stderr and exit code 4 (errors.ts); nothing prints a stack.
 */
import pkg from '../../../package.json' with { type: 'json' };
import { parseInvocation, USAGE } from './args.js';
import { connectCluster } from './cluster.js';
import { runCommand, type CliIO } from './commands.js';
import { CliError, EXIT, type ExitCode } from './errors.js';

/** Runs `kubectl crema` with `argv` (without node and the script); returns the exit code. */
export async function runCli(argv: readonly string[], io: CliIO): Promise<ExitCode> {
  try {
    const inv = parseInvocation(argv);
    if (inv.command.name === 'help') {
      io.out(USAGE.trimEnd());
      return EXIT.ok;
    }
    if (inv.command.name === 'version') {
      io.out(`kubectl-crema ${pkg.version}`);
      return EXIT.ok;
    }
    const cluster = await connectCluster(inv.options);
    try {
      if (inv.command.name === 'dashboard') {
        const { serveDashboard } = await import('./dashboard.js');
        return await serveDashboard(cluster, inv.command, io);
      }
      return await runCommand(cluster, inv, io);
    } finally {
      cluster.client.close();
    }
  } catch (err) {
    io.err(
      `error: ${err instanceof CliError ? err.message : String((err as Error)?.message ?? err).split('\n')[0]}`,
    );
    return err instanceof CliError ? err.exitCode : EXIT.error;
  }
}

const code = await runCli(process.argv.slice(2), {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
  now: () => new Date(),
});
process.exitCode = code;
