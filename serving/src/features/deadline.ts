/** The per-request feature deadline passed before Redis answered. */
export class DeadlineExceededError extends Error {
  constructor(ms: number) {
    super(`feature deadline of ${ms} ms exceeded`);
    this.name = 'DeadlineExceededError';
  }
}

/** Resolves like `p`, or rejects with DeadlineExceededError after `ms` milliseconds. */
export function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new DeadlineExceededError(ms)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
