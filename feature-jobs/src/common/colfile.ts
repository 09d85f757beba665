/**
 * The columnar file format of the synthetic history: a small JSON header followed by raw
 * little-endian typed-array columns, each 8-byte aligned. Loading is a read plus typed-array
 * views (no parsing per row), which is what lets a 2M-order day load in well under a second.
 *
 *   "CREMACOL" | u32 header length | header JSON | pad to 8 | column bytes (each padded to 8)
 */
import { InputFileError, readInputFile, writeFileAtomic } from './files.js';

const MAGIC = 'CREMACOL';

export type ColumnType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32';
export type ColumnArray =
  Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array;

const CTORS = {
  u8: Uint8Array,
  i8: Int8Array,
  u16: Uint16Array,
  i16: Int16Array,
  u32: Uint32Array,
  i32: Int32Array,
  f32: Float32Array,
} as const;

function typeOf(a: ColumnArray): ColumnType {
  for (const [name, ctor] of Object.entries(CTORS)) if (a instanceof ctor) return name as ColumnType;
  throw new TypeError('unsupported column array');
}

interface Header {
  readonly version: 1;
  readonly rows: number;
  readonly columns: ReadonlyArray<{ name: string; type: ColumnType; offset: number; bytes: number }>;
}

const pad8 = (n: number) => (n + 7) & ~7;

/** Serializes columns into the format above; `rows` is the first column's length (others may be multiples). */
export function encodeColumns(columns: Readonly<Record<string, ColumnArray>>): Buffer {
  const entries = Object.entries(columns);
  const rows = entries[0]?.[1].length ?? 0;
  let offset = 0;
  const cols = entries.map(([name, a]) => {
    const c = { name, type: typeOf(a), offset, bytes: a.byteLength };
    offset += pad8(a.byteLength);
    return c;
  });
  const header = Buffer.from(JSON.stringify({ version: 1, rows, columns: cols } satisfies Header));
  const dataStart = pad8(MAGIC.length + 4 + header.length);
  const out = Buffer.alloc(dataStart + offset);
  out.write(MAGIC, 0, 'latin1');
  out.writeUInt32LE(header.length, MAGIC.length);
  header.copy(out, MAGIC.length + 4);
  entries.forEach(([, a], i) => {
    out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), dataStart + cols[i]!.offset);
  });
  return out;
}

/** Writes columns to `path` atomically. */
export function writeColumns(path: string, columns: Readonly<Record<string, ColumnArray>>): Buffer {
  const bytes = encodeColumns(columns);
  writeFileAtomic(path, bytes);
  return bytes;
}

/** Parses a buffer produced by encodeColumns; `file` names it in errors. */
export function decodeColumns(
  buf: Buffer,
  file: string,
): { rows: number; columns: Map<string, ColumnArray> } {
  if (buf.length < MAGIC.length + 4 || buf.toString('latin1', 0, MAGIC.length) !== MAGIC) {
    throw new InputFileError(file, 'not a Crema column file (bad magic)');
  }
  const hlen = buf.readUInt32LE(MAGIC.length);
  let header: Header;
  try {
    header = JSON.parse(buf.toString('utf8', MAGIC.length + 4, MAGIC.length + 4 + hlen)) as Header;
  } catch {
    throw new InputFileError(file, 'corrupt column header');
  }
  if (header.version !== 1 || !Array.isArray(header.columns)) {
    throw new InputFileError(file, `unsupported column file version ${String(header.version)}`);
  }
  const dataStart = pad8(MAGIC.length + 4 + hlen);
  // Typed-array views need aligned offsets; copy once if the buffer is not 8-aligned.
  const base = buf.byteOffset % 8 === 0 ? buf : new Uint8Array(buf);
  const columns = new Map<string, ColumnArray>();
  for (const c of header.columns) {
    const ctor = CTORS[c.type as ColumnType] as (typeof CTORS)[ColumnType] | undefined;
    if (!ctor) throw new InputFileError(file, `column ${c.name}: unknown type ${c.type}`);
    const start = dataStart + c.offset;
    if (start + c.bytes > base.length) throw new InputFileError(file, `column ${c.name}: truncated file`);
    const len = c.bytes / ctor.BYTES_PER_ELEMENT;
    if (!Number.isInteger(len))
      throw new InputFileError(file, `column ${c.name}: ${c.bytes} bytes is not whole ${c.type}s`);
    columns.set(c.name, new ctor(base.buffer as ArrayBuffer, base.byteOffset + start, len));
  }
  return { rows: header.rows, columns };
}

/** Reads a column file. */
export function readColumns(path: string): { rows: number; columns: Map<string, ColumnArray> } {
  return decodeColumns(readInputFile(path), path);
}

/** Returns the named column as the expected array type or throws an InputFileError. */
export function column<T extends ColumnType>(
  cols: Map<string, ColumnArray>,
  name: string,
  type: T,
  file: string,
): InstanceType<(typeof CTORS)[T]> {
  const a = cols.get(name);
  if (!a) throw new InputFileError(file, `missing column ${name}`);
  if (!(a instanceof CTORS[type])) throw new InputFileError(file, `column ${name}: expected ${type}`);
  return a as InstanceType<(typeof CTORS)[T]>;
}
