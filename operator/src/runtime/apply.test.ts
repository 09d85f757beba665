import { describe, expect, it } from 'vitest';
import { isSubset } from './apply.js';

describe('isSubset (does the cluster already hold what we would apply?)', () => {
  it.each([
    ['equal scalars', { a: 1 }, { a: 1 }, true],
    ['server defaults and other managers fields are extra', { a: 1 }, { a: 1, b: 2 }, true],
    ['changed value', { a: 1 }, { a: 2 }, false],
    ['missing field', { a: { b: 1 } }, { a: {} }, false],
    ['nested extra fields in list elements', { l: [{ n: 'x' }] }, { l: [{ n: 'x', protocol: 'TCP' }] }, true],
    ['list with an extra element', { l: [1] }, { l: [1, 2] }, false],
    ['list order matters', { l: [1, 2] }, { l: [2, 1] }, false],
    ['zero values the server omits', { minReadySeconds: 0, hostNetwork: false }, {}, true],
    ['non-zero value absent', { minReadySeconds: 5 }, {}, false],
    ['object vs scalar', { a: { b: 1 } }, { a: 1 }, false],
    // The API server stores quantities in canonical form.
    [
      'quantities in canonical form',
      { resources: { requests: { cpu: '1000m', memory: '1.5Gi' }, limits: { memory: '1024Mi' } } },
      { resources: { requests: { cpu: '1', memory: '1536Mi' }, limits: { memory: '1Gi' } } },
      true,
    ],
    [
      'an emptyDir size limit',
      { emptyDir: { sizeLimit: '1024Mi' } },
      { emptyDir: { sizeLimit: '1Gi' } },
      true,
    ],
    ['a changed quantity', { requests: { memory: '1.5Gi' } }, { requests: { memory: '1Gi' } }, false],
    [
      'quantity-like strings elsewhere compare as strings',
      { labels: { v: '1000m' } },
      { labels: { v: '1' } },
      false,
    ],
  ])('%s', (_name, desired, observed, expected) => {
    expect(isSubset(desired, observed)).toBe(expected);
  });
});
