import { describe, expect, it } from 'vitest';
import {
  checkEvent,
  checkEventTime,
  decodeEventFields,
  encodeEventFields,
  EVENT_MAX_FUTURE_SKEW_MS,
  parseTimestampMs,
  TIMESTAMP_PATTERN,
} from './events.js';
import type { AppEvent } from './features.js';

describe('parseTimestampMs (RFC 3339)', () => {
  const ok: [string, string][] = [
    ['2026-11-24T08:00:00Z', '2026-11-24T08:00:00.000Z'],
    ['2026-11-24t08:00:00z', '2026-11-24T08:00:00.000Z'],
    ['2026-11-24T08:00:00.5Z', '2026-11-24T08:00:00.500Z'],
    ['2026-11-24T08:00:00.123456789Z', '2026-11-24T08:00:00.123Z'],
    ['2026-11-24T13:30:00+05:30', '2026-11-24T08:00:00.000Z'],
    ['2026-11-24T00:00:00-08:00', '2026-11-24T08:00:00.000Z'],
    ['2026-11-24T08:00:00-00:00', '2026-11-24T08:00:00.000Z'],
    ['2028-02-29T00:00:00Z', '2028-02-29T00:00:00.000Z'],
    ['2000-02-29T00:00:00Z', '2000-02-29T00:00:00.000Z'],
    ['0001-01-01T00:00:00Z', '0001-01-01T00:00:00.000Z'],
    // Leap seconds: the last millisecond of the minute, in UTC or any offset.
    ['2026-12-31T23:59:60Z', '2026-12-31T23:59:59.999Z'],
    ['2026-12-31T23:59:60.5Z', '2026-12-31T23:59:59.999Z'],
    ['2027-01-01T05:29:60+05:30', '2026-12-31T23:59:59.999Z'],
  ];
  for (const [s, iso] of ok) {
    it(`reads ${s}`, () => {
      expect(new RegExp(TIMESTAMP_PATTERN).test(s)).toBe(true);
      expect(new Date(parseTimestampMs(s)).toISOString()).toBe(iso);
    });
  }
  it('agrees with Date.parse wherever Date.parse reads RFC 3339', () => {
    for (let i = 0; i < 2000; i++) {
      const ms = Math.floor(Math.random() * 4e12) - 1e12;
      const s = new Date(ms).toISOString();
      expect(parseTimestampMs(s), s).toBe(ms);
    }
  });

  const bad: [string, RegExp][] = [
    ['2026-11-24 08:00:00Z', /not an RFC 3339/],
    ['2026-11-24T08:00:00', /not an RFC 3339/],
    ['2026-11-24T08:00:00+0530', /not an RFC 3339/],
    ['2026-11-24T08:00:00+05', /not an RFC 3339/],
    ['2026-11-24T08:00:00.1234567891Z', /not an RFC 3339/],
    ['2026-11-24T08:00Z', /not an RFC 3339/],
    ['+02026-11-24T08:00:00Z', /not an RFC 3339/],
    ['2026-02-29T00:00:00Z', /no such date/],
    ['2026-13-01T00:00:00Z', /no such date/],
    ['2026-04-31T00:00:00Z', /no such date/],
    ['2026-11-24T24:00:00Z', /no such time/],
    ['2026-11-24T08:60:00Z', /no such time/],
    ['2026-11-24T08:00:61Z', /no such time/],
    ['2026-11-24T08:00:00+24:00', /no such UTC offset/],
    ['2026-12-31T12:59:60Z', /23:59:60 UTC only/],
    ['2026-12-31T23:59:60+01:00', /23:59:60 UTC only/],
  ];
  for (const [s, why] of bad) {
    it(`refuses ${s}`, () => expect(() => parseTimestampMs(s)).toThrow(why));
  }
});

describe('the event grammar and its stream encoding', () => {
  const e: AppEvent = {
    eventId: 'e-1',
    type: 'order',
    userId: 'user@example.com',
    storeId: 'store-0',
    at: '2026-11-24T08:00:00Z',
    itemIds: ['d001', 'a002'],
    value: 1e-7,
    variant: 'canary',
    modelRevision: 'é,[x] y',
  };

  it('decodes what it encodes, with the parsed time', () => {
    expect(decodeEventFields(encodeEventFields(e))).toEqual({ event: e, atMs: Date.parse(e.at) });
    const bare: AppEvent = { eventId: 'e', type: 'click', userId: 'u', storeId: 's', at: e.at, itemIds: [] };
    expect(decodeEventFields(encodeEventFields(bare))).toEqual({ event: bare, atMs: Date.parse(e.at) });
  });

  const wrong: [string, Partial<AppEvent> | Record<string, unknown>, string][] = [
    ['a comma in an item id (the list separator)', { itemIds: ['a,b'] }, 'itemIds[0]'],
    ['an item id like a JSON list', { itemIds: ['ok', '[x'] }, 'itemIds[1]'],
    ['51 items', { itemIds: Array.from({ length: 51 }, () => 'd') }, 'itemIds'],
    ['a leap second off 23:59 UTC', { at: '2026-11-24T08:00:60Z' }, 'at'],
    ['a negative value', { value: -1 }, 'value'],
    ['a value above the maximum', { value: 10_000.5 }, 'value'],
    ['an unknown type', { type: 'purchase' }, 'type'],
    ['a user id with glob characters', { userId: 'a*b' }, 'userId'],
  ];
  /** The stream fields of `e` with `patch` written as a careless producer would. */
  const rawFields = (patch: Record<string, unknown>) => {
    const f = new Map<string, string>();
    const g = encodeEventFields(e);
    for (let i = 0; i < g.length; i += 2) f.set(g[i]!, g[i + 1]!);
    for (const [k, v] of Object.entries(patch)) f.set(k, Array.isArray(v) ? JSON.stringify(v) : String(v));
    return [...f].flat();
  };
  for (const [name, patch, field] of wrong) {
    it(`names the field of ${name}: the API's check, the encoder, and off the stream`, () => {
      const bad = { ...e, ...patch } as AppEvent;
      expect(checkEvent(bad)?.field).toBe(field);
      expect(() => encodeEventFields(bad)).toThrow(field.replace(/\[\d+\]$/, ''));
      expect(decodeEventFields(rawFields(patch))).toMatchObject({ field });
    });
  }

  it('names a malformed stream entry and never throws', () => {
    const f = encodeEventFields(e);
    const at = f.indexOf('at') + 1;
    expect(decodeEventFields(f.filter((_, i) => i !== at && i !== at - 1))).toMatchObject({ field: 'at' });
    expect(decodeEventFields([...f, 'itemIds', '[broken'])).toMatchObject({ field: 'itemIds' });
    expect(decodeEventFields([...f, 'itemIds', '[1,2]'])).toMatchObject({ field: 'itemIds' });
    expect(decodeEventFields([...f, 'value', 'NaN'])).toMatchObject({ field: 'value' });
    expect(decodeEventFields([...f, 'value', ''])).toMatchObject({ field: 'value' });
    // Early versions stored itemIds as a JSON list.
    expect(decodeEventFields([...f, 'itemIds', '["d001"]'])).toMatchObject({ event: { itemIds: ['d001'] } });
  });

  it('accepts at most the dedup window into the past and a few minutes of clock skew into the future', () => {
    const now = Date.parse('2026-11-24T08:00:00Z');
    const day = 86_400_000;
    expect(checkEventTime(now - 2 * day, now, 2 * day)).toBeNull();
    expect(checkEventTime(now - 2 * day - 1, now, 2 * day)).toMatchObject({ field: 'at' });
    expect(checkEventTime(now + EVENT_MAX_FUTURE_SKEW_MS, now, 2 * day)).toBeNull();
    expect(checkEventTime(now + EVENT_MAX_FUTURE_SKEW_MS + 1, now, 2 * day)?.message).toMatch(/future/);
  });
});
