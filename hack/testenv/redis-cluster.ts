/**
 * A real Redis Cluster for tests: `primaries` redis-server processes owning the 16384 slots in
 * equal ranges, each with `replicasPerPrimary` replicas, all on loopback. Nodes can be SIGKILLed
 * and restarted (same port, same nodes.conf, no data: a restarted primary rejoins as a replica
 * of whoever took over its slots), which is what the failover tests do. Like startRedis(), data
 * is not persisted; the cluster bus port is chosen explicitly (`--cluster-port`) so both ports
 * of a node come from the free-port probe.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { TestEnvError } from './binaries.js';
import { ensureDebianPackages, which } from './debian.js';
import {
  ManagedProcess,
  TEMP_PREFIX,
  claimDir,
  reapAbandoned,
  registerCleanup,
  startWithPortRetry,
  waitReady,
} from './process.js';

/** What startRedisCluster starts. */
export interface RedisClusterOptions {
  /** Default 3. */
  readonly primaries?: number;
  /** Default 1. */
  readonly replicasPerPrimary?: number;
  /**
   * cluster-node-timeout: how long a node may be unreachable before it is marked failed and
   * its replica takes over. Default 1000 ms (Redis' default is 15 s).
   */
  readonly nodeTimeoutMs?: number;
  readonly log?: (line: string) => void;
}

/** One redis-server of the cluster. */
export interface RedisClusterNode {
  readonly port: number;
  readonly busPort: number;
  /** redis://127.0.0.1:PORT */
  readonly url: string;
  /** The cluster node id (kept across restarts in nodes.conf). */
  readonly id: string;
  readonly running: boolean;
  /** Sends `signal` (default SIGKILL) and resolves once the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same ports with its nodes.conf and no data; resolves on PING. */
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: a node that is alive for TCP but answers nothing. */
  pause(): void;
  resume(): void;
}

/** A node as one of the cluster's members sees it (CLUSTER NODES). */
export interface ClusterNodeView {
  readonly id: string;
  readonly port: number;
  readonly flags: readonly string[];
  /** Primary id of a replica, undefined for a primary. */
  readonly primaryId: string | undefined;
  readonly slots: number;
}

/** A running cluster. `stop()` is idempotent. */
export interface RedisCluster {
  readonly dir: string;
  readonly nodes: readonly RedisClusterNode[];
  /** Every node's URL, comma-separated: the value Crema's REDIS_URL / CREMA_REDIS_URL takes. */
  readonly seeds: string;
  /** The topology as a running node sees it (the first that answers). */
  topology(): Promise<ClusterNodeView[]>;
  /** The node that is primary for `key`'s slot right now. */
  primaryOf(key: string): Promise<RedisClusterNode>;
  /** The replicas of `primary` right now. */
  replicasOf(primary: RedisClusterNode): Promise<RedisClusterNode[]>;
  /**
   * Resolves when every running node reports cluster_state:ok, every slot has a primary, and
   * every primary has `replicasPerPrimary` replicas whose link is up (replication in sync).
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const SLOTS = 16384;

function defaultLog(line: string) {
  console.error(`[testenv] ${line}`);
}

/** Parses CLUSTER NODES output. */
export function parseClusterNodes(text: string): ClusterNodeView[] {
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, addr, flags, primary, , , , , ...slots] = line.split(' ');
      let count = 0;
      for (const s of slots) {
        if (s.startsWith('[')) continue; // a slot being migrated
        const [a, b] = s.split('-').map(Number);
        count += b === undefined ? 1 : b - a! + 1;
      }
      return {
        id: id!,
        port: Number(/:(\d+)@/.exec(addr!)?.[1]),
        flags: flags!.split(','),
        primaryId: primary === '-' ? undefined : primary,
        slots: count,
      };
    });
}

/** One short-lived admin connection; never retries, so a dead node fails at once. */
async function withAdmin<T>(port: number, f: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({
    port,
    host: '127.0.0.1',
    lazyConnect: true,
    connectTimeout: 1000,
    commandTimeout: 2000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  r.on('error', () => {});
  try {
    await r.connect();
    return await f(r);
  } finally {
    r.disconnect();
  }
}

async function until(what: string, timeoutMs: number, check: () => Promise<string | null>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: string | null = 'not checked';
  while (Date.now() < deadline) {
    last = await check().catch((err: unknown) => (err as Error).message);
    if (last === null) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new TestEnvError(`redis cluster: ${what} not reached after ${timeoutMs} ms (${last})`);
}

/** Starts the cluster and resolves once it is healthy. On failure everything started is stopped. */
export async function startRedisCluster(opts: RedisClusterOptions = {}): Promise<RedisCluster> {
  const log = opts.log ?? defaultLog;
  const primaries = opts.primaries ?? 3;
  const perPrimary = opts.replicasPerPrimary ?? 1;
  const nodeTimeoutMs = opts.nodeTimeoutMs ?? 1000;
  if (!(primaries >= 1 && primaries <= 16)) throw new RangeError('primaries must be 1..16');
  if (!(perPrimary >= 0 && perPrimary <= 4)) throw new RangeError('replicasPerPrimary must be 0..4');
  await ensureDebianPackages([{ command: 'redis-server', pkg: 'redis-server' }], log, 'Redis Cluster');
  const bin = which('redis-server');
  if (!bin) throw new TestEnvError('redis-server not found on PATH after installing it');
  reapAbandoned(log);

  const t0 = Date.now();
  const dir = await mkdtemp(join(tmpdir(), TEMP_PREFIX));
  claimDir(dir);
  const procs = new Map<number, ManagedProcess>();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    unregister();
    await Promise.all([...procs.values()].map((p) => p.stop(2000)));
    await rm(dir, { recursive: true, force: true });
  };
  const unregister = registerCleanup({
    stop,
    stopNow() {
      for (const p of procs.values()) p.killNow();
    },
  });

  const launch = async (port: number, busPort: number) => {
    const p = new ManagedProcess(
      `redis-cluster-${port}`,
      bin,
      [
        '--port',
        String(port),
        '--cluster-port',
        String(busPort),
        '--bind',
        '127.0.0.1',
        '--protected-mode',
        'no',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${port}.conf`,
        '--cluster-node-timeout',
        String(nodeTimeoutMs),
        // A replica takes over however long it was disconnected (the default refuses after
        // 10 x node-timeout), and slots whose primary is gone do not stop the others.
        '--cluster-replica-validity-factor',
        '0',
        '--cluster-require-full-coverage',
        'no',
        // A restarted node resyncs at once instead of after the default 5 s delay.
        '--repl-diskless-sync',
        'yes',
        '--repl-diskless-sync-delay',
        '0',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
        '--daemonize',
        'no',
        '--loglevel',
        'warning',
      ],
      dir,
    );
    await waitReady(
      p,
      () => withAdmin(port, async (r) => (await r.ping()) === 'PONG'),
      15_000,
      'answering PING',
    );
    procs.set(port, p);
    return p;
  };

  try {
    const total = primaries * (1 + perPrimary);
    const ports: [number, number][] = [];
    for (let i = 0; i < total; i++) {
      ports.push(
        await startWithPortRetry(2, async ([port, bus]) => {
          await launch(port!, bus!);
          return [port!, bus!] as [number, number];
        }),
      );
    }
    const ids = await Promise.all(
      ports.map(([port]) => withAdmin(port, (r) => r.call('CLUSTER', 'MYID') as Promise<string>)),
    );

    // 1. Slots in equal ranges to the first `primaries` nodes.
    for (let i = 0; i < primaries; i++) {
      const from = Math.floor((i * SLOTS) / primaries);
      const to = Math.floor(((i + 1) * SLOTS) / primaries) - 1;
      await withAdmin(ports[i]![0], (r) => r.call('CLUSTER', 'ADDSLOTSRANGE', from, to));
    }
    // 2. Everyone meets the first node; gossip does the rest.
    for (const [port, bus] of ports.slice(1)) {
      await withAdmin(ports[0]![0], (r) => r.call('CLUSTER', 'MEET', '127.0.0.1', port, bus));
    }
    await until('every node knowing every other', 20_000, async () => {
      for (const [port] of ports) {
        const seen = parseClusterNodes(
          await withAdmin(port, (r) => r.call('CLUSTER', 'NODES') as Promise<string>),
        );
        if (seen.length < total || seen.some((n) => n.flags.includes('handshake')))
          return `node ${port} sees ${seen.length}/${total}`;
      }
      return null;
    });
    // 3. Replicas: node primaries + k*primaries + i replicates primary i.
    for (let k = 0; k < perPrimary; k++) {
      for (let i = 0; i < primaries; i++) {
        const replica = ports[primaries + k * primaries + i]![0];
        await withAdmin(replica, (r) => r.call('CLUSTER', 'REPLICATE', ids[i]!));
      }
    }

    const nodes: RedisClusterNode[] = ports.map(([port, busPort], i) => ({
      port,
      busPort,
      url: `redis://127.0.0.1:${port}`,
      id: ids[i]!,
      get running() {
        return procs.get(port)?.running ?? false;
      },
      async kill(signal: NodeJS.Signals = 'SIGKILL') {
        const p = procs.get(port);
        if (!p?.running) return;
        if (signal === 'SIGKILL') p.killNow();
        else p.child.kill(signal);
        await p.stop(5000);
      },
      async start() {
        if (procs.get(port)?.running) return;
        await launch(port, busPort);
      },
      pause() {
        procs.get(port)?.child.kill('SIGSTOP');
      },
      resume() {
        procs.get(port)?.child.kill('SIGCONT');
      },
    }));
    const byId = (id: string) => nodes.find((n) => n.id === id);

    const topology = async (): Promise<ClusterNodeView[]> => {
      for (const n of nodes) {
        if (!n.running) continue;
        try {
          return parseClusterNodes(
            await withAdmin(n.port, (r) => r.call('CLUSTER', 'NODES') as Promise<string>),
          );
        } catch {
          // paused or just killed: ask the next one
        }
      }
      throw new TestEnvError('redis cluster: no node answers CLUSTER NODES');
    };

    const waitHealthy = (timeoutMs = 30_000) =>
      until('a healthy cluster', timeoutMs, async () => {
        for (const n of nodes) {
          if (!n.running) return `node ${n.port} is not running`;
          const info = await withAdmin(n.port, (r) => r.call('CLUSTER', 'INFO') as Promise<string>);
          if (!info.includes('cluster_state:ok')) return `node ${n.port}: cluster_state not ok`;
        }
        const view = await topology();
        const heads = view.filter((v) => v.flags.includes('master') && v.slots > 0);
        const covered = heads.reduce((s, v) => s + v.slots, 0);
        if (covered !== SLOTS) return `${covered}/${SLOTS} slots have a primary`;
        if (view.some((v) => v.flags.includes('fail') || v.flags.includes('fail?')))
          return 'a node is flagged failing';
        for (const h of heads) {
          const node = byId(h.id);
          if (!node) return `unknown primary ${h.id}`;
          const repl = await withAdmin(node.port, (r) => r.info('replication'));
          const up = [...repl.matchAll(/^slave\d+:.*state=online/gm)].length;
          if (up < perPrimary) return `primary ${node.port} has ${up}/${perPrimary} replicas online`;
        }
        return null;
      });

    await waitHealthy();
    const cluster: RedisCluster = {
      dir,
      nodes,
      seeds: nodes.map((n) => n.url).join(','),
      topology,
      async primaryOf(key) {
        let slot = -1;
        for (const n of nodes) {
          if (!n.running) continue;
          slot = await withAdmin(n.port, (r) => r.call('CLUSTER', 'KEYSLOT', key) as Promise<number>).catch(
            () => -1,
          );
          if (slot >= 0) break;
        }
        for (const n of nodes) {
          if (!n.running) continue;
          const owner = await withAdmin(n.port, async (r) => {
            const slots = (await r.call('CLUSTER', 'SLOTS')) as [number, number, [string, number, string]][];
            return slots.find(([a, b]) => slot >= a && slot <= b)?.[2]?.[1];
          }).catch(() => undefined);
          const node = nodes.find((x) => x.port === owner);
          if (node) return node;
        }
        throw new TestEnvError(`redis cluster: no primary for ${key} (slot ${slot})`);
      },
      async replicasOf(primary) {
        const view = await topology();
        return view
          .filter((v) => v.primaryId === primary.id)
          .map((v) => byId(v.id))
          .filter((n): n is RedisClusterNode => n !== undefined);
      },
      waitHealthy,
      stop,
    };
    log(
      `redis cluster of ${primaries} primaries x ${perPrimary} replicas on ${nodes.map((n) => n.port).join(',')} in ${Date.now() - t0} ms`,
    );
    return cluster;
  } catch (err) {
    await stop();
    throw err;
  }
}
