/** A one-line progress bar on stderr, drawn only when stdout is a terminal. */
export interface Progress {
  update(done: number, total: number): void;
  done(): void;
}

/** Returns a progress bar for `label`; a no-op when `tty` is false (logs, CI, Kubernetes). */
export function createProgress(
  label: string,
  tty: boolean,
  out: NodeJS.WritableStream = process.stderr,
  now: () => number = Date.now,
): Progress {
  if (!tty) return { update() {}, done() {} };
  const t0 = now();
  let last = 0;
  let drawn = false;
  return {
    update(done, total) {
      const t = now();
      if (t - last < 100 && done < total) return;
      last = t;
      drawn = true;
      const frac = total ? Math.min(1, done / total) : 1;
      const width = 30;
      const fill = Math.round(frac * width);
      const bar = '#'.repeat(fill) + '.'.repeat(width - fill);
      out.write(
        `\r${label} [${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${done}/${total} ${((t - t0) / 1000).toFixed(1)}s`,
      );
    },
    done() {
      if (drawn) out.write('\n');
    },
  };
}
