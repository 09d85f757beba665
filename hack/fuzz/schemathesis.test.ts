import { describe, expect, it } from 'vitest';
import { countByOperation, venvPackageFrom, type HarEntry } from './schemathesis.js';

describe('venvPackageFrom', () => {
  it('installs the package Debian names in its ensurepip error, else python3-venv', () => {
    const debian = `The virtual environment was not created successfully because ensurepip is not
available.  On Debian/Ubuntu systems, you need to install the python3-venv
package using the following command.

    apt install python3.13-venv`;
    expect(venvPackageFrom(debian)).toBe('python3.13-venv');
    expect(venvPackageFrom('Error: ensurepip is not available')).toBe('python3-venv');
  });
});

describe('countByOperation', () => {
  const entry = (method: string, url: string, status: number, body?: object): HarEntry => ({
    request: { method, url: `http://127.0.0.1:8080${url}` },
    response: { status, ...(body ? { content: { text: JSON.stringify(body) } } : {}) },
  });
  const paths = {
    '/v1/users/{id}': { delete: {} },
    '/v1/users/{id}/offers': { get: {} },
    '/v1/recommendations': { post: {} },
  };

  it('counts requests per templated operation, by status, with model answers', () => {
    const counts = countByOperation(
      [
        entry('GET', '/v1/users/u1/offers?storeId=s1', 200, { fallback: false, modelRevision: 'abc' }),
        entry('GET', '/v1/users/u2/offers', 200, { fallback: false, modelRevision: null }),
        entry('GET', '/v1/users/u%20x/offers', 400, { code: 'VALIDATION' }),
        entry('DELETE', '/v1/users/u1', 200),
        entry('POST', '/v1/recommendations', 200, { fallback: true, modelRevision: null }),
        entry('TRACE', '/v1/recommendations', 404),
        entry('GET', '/nowhere', 404),
      ],
      paths,
    );
    expect(Object.fromEntries(counts)).toEqual({
      'GET /v1/users/{id}/offers': { total: 3, byStatus: { 200: 2, 400: 1 }, modelAnswers: 1 },
      'DELETE /v1/users/{id}': { total: 1, byStatus: { 200: 1 }, modelAnswers: 0 },
      'POST /v1/recommendations': { total: 1, byStatus: { 200: 1 }, modelAnswers: 0 },
      'undeclared methods': { total: 2, byStatus: { 404: 2 }, modelAnswers: 0 },
    });
  });
});
