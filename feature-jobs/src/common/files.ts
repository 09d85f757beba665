/**
 * File I/O at the edges: every write goes to a temporary file in the same directory and is
 * renamed into place, so a crash never leaves a half-written output; every read failure names
 * the file and says what is wrong with it.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** A missing, unreadable or malformed input file. */
export class InputFileError extends Error {
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(`${file}: ${problem}`);
    this.name = 'InputFileError';
  }
}

/** Writes `data` to `path` atomically (temp file + rename), creating parent directories. */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** Reads a file, turning ENOENT and friends into an InputFileError that names the file. */
export function readInputFile(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new InputFileError(path, 'file not found');
    if (code === 'EISDIR') throw new InputFileError(path, 'is a directory, expected a file');
    throw new InputFileError(path, `cannot read (${code ?? String(err)})`);
  }
}

/** Reads and parses a JSON file; `check` returns a problem string or null. */
export function readJsonFile<T>(path: string, check: (v: unknown) => string | null): T {
  const text = readInputFile(path).toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InputFileError(path, `malformed JSON (${(err as Error).message})`);
  }
  const problem = check(value);
  if (problem) throw new InputFileError(path, problem);
  return value as T;
}
