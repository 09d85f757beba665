/**
 * Exit codes of `kubectl crema` and the one error type its commands throw. Scripts and CI
 * pipelines branch on these codes, so they are part of the plugin's interface (docs/plugin.md).
 */

/** Exit codes: what a script can rely on. */
export const EXIT = {
  /** Done; for `status`, the model is healthy (Ready, no rollout in progress). */
  ok: 0,
  /** `status`: the model is Degraded or its canary was rolled back. */
  failed: 1,
  /** `status --watch --timeout`: neither healthy nor failed before the timeout. */
  timeout: 2,
  /** `status` without --watch: a rollout is still in progress (or paused, or not yet observed). */
  inProgress: 3,
  /** The command could not run: bad input, missing resource, no Crema CRDs, API refused or unreachable. */
  error: 4,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** An error a user caused or can act on; the CLI prints its message as one line on stderr. */
export class CliError extends Error {
  override readonly name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: ExitCode = EXIT.error,
  ) {
    super(message);
  }
}
