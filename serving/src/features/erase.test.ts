import { describe, expect, it } from 'vitest';
import { KEYS } from '../../../contracts/features.js';
import { userOfDeadLetter, userOfFeatureKey } from './erase.js';

describe('userOfFeatureKey', () => {
  it('gives the whole user id of a feature blob key, also when the id contains :user:', () => {
    for (const [version, user] of [
      ['v1', 'x1'],
      ['v1', 'y1:user:x1'],
      ['20261124T2100-3f2a8b9c', 'a@b.example'],
      ['v0-old', ':user:'],
    ] as const) {
      expect(userOfFeatureKey(KEYS.user(version, user))).toBe(user);
    }
  });

  it('is undefined for every other key of a version', () => {
    for (const key of [
      KEYS.catalog('v1'),
      KEYS.stores('v1'),
      KEYS.storePopularity('v1', 's1'),
      KEYS.current,
    ]) {
      expect(userOfFeatureKey(key)).toBeUndefined();
    }
    expect(userOfFeatureKey(KEYS.onlineUser('x1'))).toBeUndefined();
  });
});

describe('userOfDeadLetter', () => {
  it("reads the user id from the original entry's fields, and nothing from a broken entry", () => {
    const entry = (original: string) => ['sourceId', '1-1', 'reason', 'r', 'fields', original];
    expect(userOfDeadLetter(entry(JSON.stringify(['eventId', 'e', 'userId', 'u:1'])))).toBe('u:1');
    expect(userOfDeadLetter(entry(JSON.stringify(['eventId', 'e'])))).toBeUndefined();
    expect(userOfDeadLetter(entry('{not json'))).toBeUndefined();
    expect(userOfDeadLetter(['sourceId', '1-1'])).toBeUndefined();
  });
});
