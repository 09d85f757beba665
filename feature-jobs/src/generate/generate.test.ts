import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Dataset, buildWorld, generateDataset } from './dataset.js';
import { generateDay } from './orders.js';

const dir = mkdtempSync(join(tmpdir(), 'crema-gen-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const opts = { seed: 42, users: 3000, stores: 40, start: '2026-10-01', days: 3 };

describe('synthetic order history', () => {
  it('is byte-identical for the same seed and differs for another seed', () => {
    const a = generateDataset(opts, join(dir, 'a'));
    const b = generateDataset(opts, join(dir, 'b'));
    const c = generateDataset({ ...opts, seed: 43 }, join(dir, 'c'));
    expect(b.hash).toBe(a.hash);
    expect(b.files).toEqual(a.files);
    expect(readFileSync(join(dir, 'a/orders/2026-10-02.col'))).toEqual(
      readFileSync(join(dir, 'b/orders/2026-10-02.col')),
    );
    expect(c.hash).not.toBe(a.hash);
  });

  it('generates any single day identically to a full run (days are independent streams)', () => {
    const world = buildWorld(opts);
    const alone = generateDay(world, 2, '2026-10-03');
    const ds = Dataset.open(join(dir, 'a'));
    const full = ds.orders('2026-10-03');
    expect(alone.n).toBe(full.n);
    expect(Array.from(alone.ts)).toEqual(Array.from(full.ts));
    expect(Array.from(alone.drink)).toEqual(Array.from(full.drink));
  });

  it('matches the business shape: ~0.4 orders per user per day, $6-8 average, 06-09 and 14-16 peaks', () => {
    const ds = Dataset.open(join(dir, 'a'));
    const m = ds.manifest;
    expect(m.counts.orders / m.days.length / m.counts.users).toBeGreaterThan(0.3);
    expect(m.counts.orders / m.days.length / m.counts.users).toBeLessThan(0.5);
    expect(m.counts.drinks).toBeGreaterThanOrEqual(140);
    expect(m.counts.addons).toBeGreaterThanOrEqual(40);
    const o = ds.orders('2026-10-01');
    let cents = 0;
    const hours = new Array<number>(24).fill(0);
    for (let i = 0; i < o.n; i++) {
      cents += o.cents[i]!;
      hours[o.hour[i]!]!++;
      if (i > 0) expect(o.ts[i]!).toBeGreaterThanOrEqual(o.ts[i - 1]!);
    }
    const avg = cents / o.n / 100;
    expect(avg).toBeGreaterThan(6);
    expect(avg).toBeLessThan(8);
    const share = (a: number, b: number) => hours.slice(a, b).reduce((x, y) => x + y, 0) / o.n;
    // 06-09 and 14-16 are 5 of the ~17 open hours but carry most orders.
    expect(share(6, 9) + share(14, 16)).toBeGreaterThan(0.6);
    expect(share(0, 5)).toBe(0);
  });

  it('builds 800+ stores across regions at the default store count', () => {
    const w = buildWorld({ ...opts, stores: 840, users: 10 });
    expect(w.stores.length).toBe(840);
    expect(new Set(w.stores.map((s) => s.timezone)).size).toBeGreaterThanOrEqual(4);
    expect(w.catalog.items.some((i) => i.season)).toBe(true);
  });

  it('names the file and the problem when an input is missing or corrupt, and leaves no temp dirs', () => {
    const broken = join(dir, 'broken');
    generateDataset({ ...opts, users: 100, days: 1 }, broken);
    expect(() => Dataset.open(join(dir, 'nope'))).toThrow(/nope\/manifest\.json: file not found/);
    const day = join(broken, 'orders/2026-10-01.col');
    writeFileSync(day, readFileSync(day).subarray(0, 100));
    expect(() => Dataset.open(broken).orders('2026-10-01')).toThrow(/2026-10-01\.col: sha256 does not match/);
    writeFileSync(join(broken, 'manifest.json'), '{"format": "x"');
    expect(() => Dataset.open(broken)).toThrow(/manifest\.json: malformed JSON/);
    expect(() => generateDataset(opts, join(dir, 'a'))).toThrow(/already exists/);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    expect(existsSync(join(dir, 'a', 'manifest.json'))).toBe(true);
  });
});
