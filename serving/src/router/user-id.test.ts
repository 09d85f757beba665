import { describe, expect, it } from 'vitest';
import { bodyUserId, userIdOf } from './user-id.js';
// Seeded (mulberry32), so a failure names a reproducible seed.
import { rng } from '../../test/fixtures.js';

/** What the router answered before the scanner: JSON.parse of the whole body. */
function reference(b: Buffer): string | undefined {
  try {
    const parsed = JSON.parse(b.toString('utf8')) as { userId?: unknown } | null;
    return typeof parsed?.userId === 'string' ? parsed.userId : undefined;
  } catch {
    return undefined;
  }
}

const pieces = [
  'u1',
  'user-42',
  'ab@c.d:e_f',
  'é',
  '日本',
  '😀',
  '\\"',
  '\\\\',
  '\\/',
  '\\n',
  '\\t',
  '\\u0041',
  '\\u00e9',
  '\\ud83d\\ude00',
  '\\ud800',
  '\\uDFFF',
  ' ',
  '\u2028',
  '',
];

/** A random JSON string literal's content (already escaped), from fragments. */
function strContent(r: () => number): string {
  let s = '';
  const n = Math.floor(r() * 4);
  for (let k = 0; k < n; k++) s += pieces[Math.floor(r() * pieces.length)]!;
  return s;
}

/** Keys near and equal to userId, spelled with and without escapes. */
const keys = [
  'userId',
  'userId',
  'user\\u0049d',
  '\\u0075serId',
  'userid',
  'userId ',
  'user',
  'storeId',
  'x',
];
const ws = ['', '', ' ', '\n', '\t ', '\r\n  '];

function value(r: () => number, depth: number): string {
  const k = Math.floor(r() * (depth > 3 ? 6 : 8));
  const w = () => ws[Math.floor(r() * ws.length)]!;
  switch (k) {
    case 0:
    case 1:
      return `"${strContent(r)}"`;
    case 2:
      return ['0', '-1', '12.5', '1e3', '-0.0E-2', '123456789012345678901234'][Math.floor(r() * 6)]!;
    case 3:
      return ['true', 'false', 'null'][Math.floor(r() * 3)]!;
    case 4:
    case 5:
      return `"${strContent(r)}${strContent(r)}"`;
    case 6: {
      const n = Math.floor(r() * 4);
      return `[${w()}${Array.from({ length: n }, () => value(r, depth + 1)).join(`${w()},${w()}`)}${w()}]`;
    }
    default:
      return object(r, depth + 1);
  }
}

function object(r: () => number, depth: number): string {
  const w = () => ws[Math.floor(r() * ws.length)]!;
  const n = Math.floor(r() * 5);
  const members = Array.from(
    { length: n },
    () => `"${keys[Math.floor(r() * keys.length)]!}"${w()}:${w()}${value(r, depth)}`,
  );
  return `{${w()}${members.join(`${w()},${w()}`)}${w()}}`;
}

/** Small damage that often turns valid JSON into invalid JSON (or into other valid JSON). */
function mutate(r: () => number, b: Buffer): Buffer {
  const junk = [
    0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x20, 0x00, 0x0a, 0x30, 0x75, 0xff, 0xc3, 0xe2,
  ];
  const kind = Math.floor(r() * 4);
  const at = Math.floor(r() * (b.length + 1));
  if (kind === 0) return b.subarray(0, at); // truncated
  if (kind === 1 && b.length > 0) {
    const c = Buffer.from(b);
    c[Math.min(at, b.length - 1)] = junk[Math.floor(r() * junk.length)]!;
    return c;
  }
  if (kind === 2)
    return Buffer.concat([
      b.subarray(0, at),
      Buffer.from([junk[Math.floor(r() * junk.length)]!]),
      b.subarray(at),
    ]);
  return Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1))]); // a byte removed
}

describe('bodyUserId answers what JSON.parse answers', () => {
  it('on hand-picked bodies', () => {
    const cases = [
      '{"userId":"u7"}',
      '{"userId":"u7","userId":"u8"}',
      '{"userId":"u7","userId":8}',
      '{"userId":8,"userId":"u9"}',
      '{"a":{"userId":"inner"}}',
      '{"a":{"userId":"inner"},"userId":"outer"}',
      '[{"userId":"u"}]',
      '"userId"',
      '{"user\\u0049d":"esc-key"}',
      '{"userId":"a\\"b\\\\c\\u00e9\\ud83d\\ude00"}',
      '{"userId":"\u00e9\u65e5"}',
      '{"userId":"tab\there"}',
      '{"userId":"u"} x',
      '{"userId":"u",}',
      '{"userId":"u"',
      ' \n{ "userId" : "spaced" } \r\n',
      '\ufeff{"userId":"bom"}',
      '{"userId":null}',
      '{"userId":01}',
      '{"userId":"u","n":-}',
      '{"userId":"u","n":1.}',
      '{"userId":"u","n":[1,2,]}',
      '{"userId":"u","n":tru}',
      '{"userId":"u\\x"}',
      '{"userId":"\\u12G4"}',
      '{}',
      'null',
      '',
    ];
    for (const c of cases) expect([c, bodyUserId(Buffer.from(c))]).toEqual([c, reference(Buffer.from(c))]);
    // invalid UTF-8 in and around the value
    for (const bytes of [
      [0xff],
      [0xc3],
      [0xe2, 0x82],
      [0xf0, 0x9f, 0x98],
      [0xed, 0xa0, 0x80],
      [0xc0, 0xaf],
    ]) {
      const b = Buffer.concat([Buffer.from('{"userId":"a'), Buffer.from(bytes), Buffer.from('b"}')]);
      expect(bodyUserId(b)).toBe(reference(b));
    }
  });

  it('on 10,000 random documents and 10,000 damaged ones', { timeout: 30_000 }, () => {
    const r = rng(20261202);
    for (let n = 0; n < 10_000; n++) {
      const doc = Buffer.from(r() < 0.9 ? object(r, 0) : value(r, 0));
      const damaged = mutate(r, doc);
      for (const b of [doc, damaged]) {
        const want = reference(b);
        const got = bodyUserId(b);
        if (got !== want)
          expect({ body: b.toString('latin1'), got }).toEqual({ body: b.toString('latin1'), got: want });
      }
    }
  });

  it('finds the userId in documents that have one (the fuzz is not all misses)', () => {
    const r = rng(7);
    let found = 0;
    for (let n = 0; n < 2000; n++) if (bodyUserId(Buffer.from(object(r, 0))) !== undefined) found++;
    expect(found).toBeGreaterThan(300);
  });

  it('survives deep nesting like JSON.parse', () => {
    const deep = Buffer.from(`{"a":${'['.repeat(100_000)}${']'.repeat(100_000)},"userId":"deep"}`);
    expect(bodyUserId(deep)).toBe(reference(deep));
  });
});

describe('userIdOf', () => {
  it('reads the path for user routes and the JSON body otherwise', () => {
    expect(userIdOf('/v1/users/ab%40c/offers', undefined)).toBe('ab@c');
    expect(userIdOf('/v1/users/%E0%A4%A/offers', undefined)).toBeUndefined();
    expect(userIdOf('/v1/recommendations', Buffer.from('{"userId":"u7"}'))).toBe('u7');
    expect(userIdOf('/v1/recommendations', Buffer.from('not json'))).toBeUndefined();
    expect(userIdOf('/v1/recommendations', undefined)).toBeUndefined();
  });
});
