/**
 * A bulk SET writer that speaks the Redis protocol (RESP) directly over one socket. The batch
 * job writes ~1.4M user blobs per full-scale day; building each pipeline as one Buffer avoids
 * ioredis' per-command objects (~10 µs each), which were the bottleneck. Commands are sent in
 * order on one connection, so a checkpoint written after a batch is stored only after every
 * SET before it was applied. Plain TCP only: for TLS or anything unusual use ioredis.
 */
import { connect, type Socket } from 'node:net';
import { endianness } from 'node:os';

const LITTLE_ENDIAN = endianness() === 'LE';

function encodeFloat32LE(v: Float32Array): Buffer {
  const b = Buffer.alloc(v.length * 4);
  for (let i = 0; i < v.length; i++) b.writeFloatLE(v[i]!, i * 4);
  return b;
}

export interface RespTarget {
  readonly host: string;
  readonly port: number;
  readonly username?: string;
  readonly password?: string;
  readonly db?: number;
}

interface Pending {
  remaining: number;
  error?: string;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Appends a RESP command (all arguments as strings or buffers) to `parts`. */
export function encodeCommand(args: readonly (string | Buffer)[]): Buffer {
  const bufs = args.map((a) => (typeof a === 'string' ? Buffer.from(a) : a));
  let size = 1 + String(args.length).length + 2;
  for (const b of bufs) size += 1 + String(b.length).length + 2 + b.length + 2;
  const out = Buffer.allocUnsafe(size);
  let o = out.write(`*${args.length}\r\n`, 0, 'latin1');
  for (const b of bufs) {
    o += out.write(`$${b.length}\r\n`, o, 'latin1');
    o += b.copy(out, o);
    o += out.write('\r\n', o, 'latin1');
  }
  return out;
}

/** One connection; `batch()` collects SETs, `send()` writes them and resolves when all are acknowledged. */
export class RespBulkWriter {
  private readonly queue: Pending[] = [];
  private partial = '';
  private failed: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e) => this.fail(e));
    socket.on('close', () => this.fail(new Error('redis connection closed')));
  }

  static async connect(t: RespTarget): Promise<RespBulkWriter> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect({ host: t.host, port: t.port }, () => resolve(s));
      s.once('error', reject);
    });
    socket.setNoDelay(true);
    const w = new RespBulkWriter(socket);
    const hello: Buffer[] = [];
    if (t.password)
      hello.push(encodeCommand(t.username ? ['AUTH', t.username, t.password] : ['AUTH', t.password]));
    if (t.db) hello.push(encodeCommand(['SELECT', String(t.db)]));
    if (hello.length) await w.send(Buffer.concat(hello), hello.length);
    return w;
  }

  /** Sends `bytes` holding `commands` commands whose replies are all simple strings (+OK). */
  send(bytes: Buffer, commands: number): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.queue.push({ remaining: commands, resolve, reject });
      this.socket.write(bytes);
    });
  }

  close(): void {
    this.socket.removeAllListeners('close');
    this.socket.end();
  }

  private onData(d: Buffer): void {
    const text = this.partial + d.toString('latin1');
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\r\n', start);
      if (nl < 0) break;
      const line = text.slice(start, nl);
      start = nl + 2;
      const head = this.queue[0];
      if (!head) return this.fail(new Error(`unexpected reply ${line}`));
      if (line[0] === '-') head.error ??= line.slice(1);
      else if (line[0] !== '+') return this.fail(new Error(`unexpected reply type: ${line.slice(0, 40)}`));
      if (--head.remaining === 0) {
        this.queue.shift();
        if (head.error) head.reject(new Error(`redis: ${head.error}`));
        else head.resolve();
      }
    }
    this.partial = text.slice(start);
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = e;
    for (const p of this.queue.splice(0)) p.reject(e);
    this.socket.destroy();
  }
}

/** Builds one Buffer of `SET key value EX ttl` commands. */
export class SetBatch {
  private buf: Buffer;
  private len = 0;
  count = 0;
  private readonly tail: Buffer;

  constructor(ttlSeconds: number, capacity = 1 << 20) {
    this.buf = Buffer.allocUnsafe(capacity);
    const ttl = String(ttlSeconds);
    this.tail = Buffer.from(`\r\n$2\r\nEX\r\n$${ttl.length}\r\n${ttl}\r\n`, 'latin1');
  }

  /** Appends SET key value EX ttl (key is ASCII). */
  set(key: string, value: Buffer): void {
    const need = 64 + key.length + value.length + this.tail.length;
    if (this.len + need > this.buf.length) {
      const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + need));
      this.buf.copy(b, 0, 0, this.len);
      this.buf = b;
    }
    let o = this.len;
    o += this.buf.write(`*5\r\n$3\r\nSET\r\n$${key.length}\r\n${key}\r\n$${value.length}\r\n`, o, 'latin1');
    o += value.copy(this.buf, o);
    o += this.tail.copy(this.buf, o);
    this.len = o;
    this.count++;
  }

  /** Appends SET key value EX ttl where value is `v` as little-endian float32 (encodeUserFeatures' bytes). */
  setFloat32(key: string, v: Float32Array): void {
    if (!LITTLE_ENDIAN) return this.set(key, encodeFloat32LE(v));
    this.set(key, Buffer.from(v.buffer, v.byteOffset, v.byteLength));
  }

  /** Appends a plain SET key value EX ttl with a string value (checkpoints). */
  setString(key: string, value: string): void {
    this.set(key, Buffer.from(value, 'latin1'));
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}
