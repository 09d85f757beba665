import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { main } from './cli.js';

const dir = mkdtempSync(join(tmpdir(), 'crema-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((err += String(s)), true));
  vi.spyOn(console, 'error').mockImplementation((s) => void (err += `${String(s)}\n`));
  const code = await main(argv);
  vi.restoreAllMocks();
  return { code, out, err };
}

describe('crema-jobs CLI', () => {
  it('lists the five commands and prints help for each', async () => {
    const top = await run('--help');
    expect(top.code).toBe(0);
    for (const c of ['generate', 'features', 'stream', 'train', 'evaluate']) {
      expect(top.out).toContain(c);
      const h = await run(c, '--help');
      expect(h.code, c).toBe(0);
      expect(h.out).toContain(`crema-jobs ${c}`);
    }
  });

  it('rejects unknown commands and flags with exit code 64', async () => {
    expect((await run('nope')).code).toBe(64);
    const r = await run('features', '--bogus');
    expect(r.code).toBe(64);
    expect(r.err).toContain("Unknown option '--bogus'");
  });

  it('names the missing or malformed input file and exits 2 without touching Redis', async () => {
    const missing = await run('features', '--data', join(dir, 'none'), '--redis', 'redis://127.0.0.1:1');
    expect(missing.code).toBe(2);
    expect(missing.err).toContain(`${join(dir, 'none', 'manifest.json')}: file not found`);
    mkdirSync(join(dir, 'bad'));
    writeFileSync(join(dir, 'bad', 'manifest.json'), '{"format":"crema-history/1","seed":"x"}');
    const bad = await run('train', '--data', join(dir, 'bad'), '--out', join(dir, 'models'));
    expect(bad.code).toBe(2);
    expect(bad.err).toContain(`${join(dir, 'bad', 'manifest.json')}: seed: integer required`);
    const models = await run('evaluate', '--models', join(dir, 'nomodels'));
    expect(models.code).toBe(2);
    expect(models.err).toMatch(/nomodels\/drink-ranking\.meta\.json: file not found/);
  });

  it('--shards takes its index from JOB_COMPLETION_INDEX and refuses to run without it', async () => {
    delete process.env['JOB_COMPLETION_INDEX'];
    const r = await run('features', '--data', join(dir, 'none'), '--shards', '4');
    expect(r.code).toBe(64);
    expect(r.err).toContain('JOB_COMPLETION_INDEX');
    process.env['JOB_COMPLETION_INDEX'] = '4';
    const out = await run('features', '--data', join(dir, 'none'), '--shards', '4');
    delete process.env['JOB_COMPLETION_INDEX'];
    expect(out.code).toBe(64);
    expect(out.err).toContain('--shard "4/4"');
  });

  it('generate writes a complete dataset and leaves no temporary directory behind', async () => {
    const r = await run(
      'generate',
      '--out',
      join(dir, 'ds'),
      '--users',
      '200',
      '--stores',
      '5',
      '--days',
      '2',
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out).counts.users).toBe(200);
    expect(existsSync(join(dir, 'ds', 'manifest.json'))).toBe(true);
    expect(readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
    const again = await run('generate', '--out', join(dir, 'ds'), '--users', '200');
    expect(again.code).toBe(2);
    expect(again.err).toContain('already exists');
  });
});
