import { describe, expect, it } from 'vitest';
import type { DriftAlert } from '../webhooks/alertmanager.js';
import { DriftAlertStore } from './alerts.js';

const alert = (over: Partial<DriftAlert> = {}): DriftAlert => ({
  status: 'firing',
  alertname: 'CremaFeatureDrift',
  namespace: 'stores',
  model: 'drinks',
  revision: 'b'.repeat(64),
  variant: 'canary',
  feature: 'hour',
  value: 0.4512,
  startsAt: '2026-11-24T10:00:00Z',
  labels: {},
  annotations: {},
  ...over,
});

describe('DriftAlertStore', () => {
  it('answers for the alerted revision only, with a message naming the feature and PSI', () => {
    const store = new DriftAlertStore();
    expect(store.record(alert())).toBe('stores/drinks');
    expect(store.firing('stores', 'drinks', 'b'.repeat(64))?.message).toMatch(
      /canary revision bbbbbbbbbbbb.*feature hour PSI 0\.451/,
    );
    expect(store.firing('stores', 'drinks', 'a'.repeat(64))).toBeUndefined();
    expect(store.firing('other', 'drinks', 'b'.repeat(64))).toBeUndefined();
  });

  it('forgets an alert that was not re-sent within its ttl', () => {
    let now = 0;
    const store = new DriftAlertStore(1000, () => now);
    store.record(alert());
    now = 999;
    expect(store.firing('stores', 'drinks', 'b'.repeat(64))).toBeDefined();
    now = 1001;
    expect(store.firing('stores', 'drinks', 'b'.repeat(64))).toBeUndefined();
  });
});
