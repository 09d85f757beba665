/**
 * A dataset directory: manifest.json, catalog.json, stores.json, weather.json, users.col and
 * orders/YYYY-MM-DD.col. Generation writes into a temporary sibling directory and renames it
 * into place at the end, so an interrupted run leaves nothing behind.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Catalog } from '../../../contracts/features.js';
import { column, decodeColumns, readColumns, writeColumns } from '../common/colfile.js';
import { InputFileError, readInputFile, readJsonFile, writeFileAtomic } from '../common/files.js';
import { buildCatalog, catalogCounts } from './catalog.js';
import { ORDER_COLUMNS, generateDay, type OrderColumns, type World } from './orders.js';
import { buildStores, buildWeather, type GenStore, type Weather } from './stores.js';
import { buildUsers, type Users } from './users.js';

export const DATASET_FORMAT = 'crema-history/1';

export interface Manifest {
  readonly format: typeof DATASET_FORMAT;
  readonly seed: number;
  readonly start: string;
  readonly days: readonly string[];
  readonly counts: {
    readonly stores: number;
    readonly drinks: number;
    readonly addons: number;
    readonly users: number;
    readonly orders: number;
    readonly ordersByDay: Readonly<Record<string, number>>;
  };
  /** sha256 per file, relative path → hex. */
  readonly files: Readonly<Record<string, string>>;
  /** sha256 over seed and the sorted file hashes: the dataset's identity in model lineage. */
  readonly hash: string;
}

export interface GenerateOptions {
  readonly seed: number;
  readonly users: number;
  readonly stores: number;
  /** First day, YYYY-MM-DD (store-local calendar). */
  readonly start: string;
  readonly days: number;
  /** Orders per day across all stores; defaults to 0.4 × users (2M for 5M users). */
  readonly ordersPerDay?: number;
}

/** Lists `n` consecutive dates starting at `start`. */
export function dateRange(start: string, n: number): string[] {
  const t0 = Date.parse(`${start}T00:00:00Z`);
  if (!/^\d{4}-\d{2}-\d{2}$/.test(start) || Number.isNaN(t0)) throw new RangeError(`bad date ${start}`);
  return Array.from({ length: n }, (_, i) => new Date(t0 + i * 86_400_000).toISOString().slice(0, 10));
}

/** Builds the in-memory world (catalog, stores, weather, users) from the options. */
export function buildWorld(opts: GenerateOptions): World {
  const catalog = buildCatalog(opts.seed);
  const ordersPerDay = opts.ordersPerDay ?? opts.users * 0.4;
  const drinks = catalog.items.filter((i) => i.kind === 'drink');
  const stores = buildStores(
    opts.seed,
    opts.stores,
    ordersPerDay,
    drinks.map((d) => d.id),
  );
  const weather = buildWeather(opts.seed, dateRange(opts.start, opts.days));
  const drinksByCategory = (['hot', 'iced', 'blended', 'energy'] as const).map((c) =>
    drinks.filter((d) => d.category === c).map((d) => d.index),
  );
  // Calibrated so the realised mean (after weekday, rain and churn effects) lands near target.
  const users = buildUsers({
    seed: opts.seed,
    n: opts.users,
    days: opts.days,
    stores,
    drinksByCategory,
    addonCount: catalogCounts(catalog).addons,
    meanOrdersPerDay: (ordersPerDay / opts.users) * 1.12,
  });
  return { seed: opts.seed, catalog, stores, users, weather };
}

const USER_COLUMNS = [
  'homeStore',
  'habit',
  'activity',
  'churnPropensity',
  'churnDay',
  'addonPropensity',
  'sizePref',
  'tempSensitivity',
  'categoryWeights',
  'favourites',
  'favouriteAddon',
] as const;

function sha256(b: Uint8Array | string): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Generates a dataset into `outDir` (must not exist unless `force`); returns its manifest. */
export function generateDataset(
  opts: GenerateOptions,
  outDir: string,
  onDay: (date: string, orders: number) => void = () => {},
  force = false,
): Manifest {
  if (existsSync(outDir) && !force)
    throw new InputFileError(outDir, 'already exists (use --force to replace it)');
  const tmp = join(dirname(outDir), `.${basename(outDir)}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, 'orders'), { recursive: true });
  try {
    const world = buildWorld(opts);
    const files: Record<string, string> = {};
    const put = (rel: string, data: string | Uint8Array) => {
      writeFileAtomic(join(tmp, rel), data);
      files[rel] = sha256(data);
    };
    put('catalog.json', JSON.stringify(world.catalog, null, 1));
    put('stores.json', JSON.stringify(world.stores, null, 1));
    put('weather.json', JSON.stringify(world.weather));
    // Users are columns too; the multi-valued tastes are stored flattened.
    const u = world.users;
    const userCols = Object.fromEntries(USER_COLUMNS.map((k) => [k, u[k]]));
    files['users.col'] = sha256(writeColumns(join(tmp, 'users.col'), userCols));
    const ordersByDay: Record<string, number> = {};
    let orders = 0;
    world.weather.days.forEach((date, i) => {
      const day = generateDay(world, i, date);
      const cols = Object.fromEntries(
        Object.keys(ORDER_COLUMNS).map((k) => [k, day[k as keyof typeof ORDER_COLUMNS]]),
      );
      files[`orders/${date}.col`] = sha256(writeColumns(join(tmp, 'orders', `${date}.col`), cols));
      ordersByDay[date] = day.n;
      orders += day.n;
      onDay(date, day.n);
    });
    const { drinks, addons } = catalogCounts(world.catalog);
    const sorted = Object.keys(files).sort();
    const manifest: Manifest = {
      format: DATASET_FORMAT,
      seed: opts.seed,
      start: opts.start,
      days: world.weather.days,
      counts: { stores: world.stores.length, drinks, addons, users: u.n, orders, ordersByDay },
      files: Object.fromEntries(sorted.map((k) => [k, files[k]!])),
      hash: sha256(JSON.stringify([opts.seed, sorted.map((k) => [k, files[k]])])),
    };
    writeFileAtomic(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    if (existsSync(outDir)) rmSync(outDir, { recursive: true, force: true });
    mkdirSync(dirname(outDir), { recursive: true });
    renameSync(tmp, outDir);
    return manifest;
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

function checkManifest(v: unknown): string | null {
  const m = v as Partial<Manifest> | null;
  if (!m || typeof m !== 'object') return 'not a JSON object';
  if (m.format !== DATASET_FORMAT)
    return `format must be "${DATASET_FORMAT}", got ${JSON.stringify(m.format)}`;
  if (!Number.isInteger(m.seed)) return 'seed: integer required';
  if (!Array.isArray(m.days) || m.days.length === 0) return 'days: non-empty list required';
  if (!m.files || typeof m.files !== 'object') return 'files: map of file → sha256 required';
  if (typeof m.hash !== 'string') return 'hash: required';
  if (!m.counts || !Number.isInteger(m.counts.users)) return 'counts.users: integer required';
  return null;
}

/** A dataset opened for reading; order days load lazily. */
export class Dataset {
  private constructor(
    readonly dir: string,
    readonly manifest: Manifest,
    readonly catalog: Catalog,
    readonly stores: readonly GenStore[],
    readonly weather: Weather,
    private readonly verify: boolean,
  ) {}

  /** Opens `dir`, validating the manifest and the small JSON files (hashes checked on read). */
  static open(dir: string, verify = true): Dataset {
    const manifestPath = join(dir, 'manifest.json');
    const manifest = readJsonFile<Manifest>(manifestPath, checkManifest);
    const json = <T>(rel: string, check: (v: unknown) => string | null): T => {
      const path = join(dir, rel);
      if (verify) verifyHash(path, manifest.files[rel]);
      return readJsonFile<T>(path, check);
    };
    const catalog = json<Catalog>('catalog.json', (v) =>
      Array.isArray((v as Catalog | null)?.items) ? null : 'items: list required',
    );
    const stores = json<GenStore[]>('stores.json', (v) =>
      Array.isArray(v) ? null : 'expected a list of stores',
    );
    const weather = json<Weather>('weather.json', (v) =>
      Array.isArray((v as Weather | null)?.tempC) ? null : 'tempC: list required',
    );
    return new Dataset(dir, manifest, catalog, stores, weather, verify);
  }

  get days(): readonly string[] {
    return this.manifest.days;
  }

  /** Loads one day of orders. */
  orders(date: string): OrderColumns {
    const rel = `orders/${date}.col`;
    const path = join(this.dir, rel);
    if (!(rel in this.manifest.files)) throw new InputFileError(path, `day ${date} is not in the manifest`);
    const bytes = readInputFile(path);
    if (this.verify && sha256(bytes) !== this.manifest.files[rel]) {
      throw new InputFileError(path, 'sha256 does not match manifest.json (file changed or truncated)');
    }
    const { rows, columns } = decodeColumns(bytes, path);
    const get = <K extends keyof typeof ORDER_COLUMNS>(k: K) => column(columns, k, ORDER_COLUMNS[k], path);
    return {
      n: rows,
      user: get('user'),
      store: get('store'),
      ts: get('ts'),
      drink: get('drink'),
      size: get('size'),
      addon1: get('addon1'),
      addon2: get('addon2'),
      cents: get('cents'),
      pickupSec: get('pickupSec'),
      hour: get('hour'),
      dow: get('dow'),
    } as OrderColumns;
  }

  /** Loads the hidden user tastes (for judging models, never for features). */
  users(): Users {
    const path = join(this.dir, 'users.col');
    if (this.verify) verifyHash(path, this.manifest.files['users.col']);
    const { rows, columns } = readColumns(path);
    const out: Record<string, unknown> = { n: rows };
    for (const k of USER_COLUMNS) out[k] = columns.get(k);
    return out as unknown as Users;
  }
}

function verifyHash(path: string, expected: string | undefined): void {
  if (!expected) throw new InputFileError(path, 'not listed in manifest.json');
  if (sha256(readInputFile(path)) !== expected) {
    throw new InputFileError(path, 'sha256 does not match manifest.json (file changed or truncated)');
  }
}
