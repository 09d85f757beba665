import { describe, expect, it } from 'vitest';
import { checkModelUri } from './uri.js';

describe('model URI grammar', () => {
  const refused: [string, string][] = [
    ['', 'is empty'],
    ['   ', 'is empty'],
    ['0', 'is not a URL (file://, http:// or https://)'],
    ['x.onnx', 'is not a URL (file://, http:// or https://)'],
    ['/models/churn.onnx', 'is not a URL; a local file is written file:///models/churn.onnx'],
    ['http://', 'is not a URL (file://, http:// or https://)'],
    ['https://', 'is not a URL (file://, http:// or https://)'],
    ['s3://bucket/m.onnx', 'has scheme s3:, which is not supported (file, http, https)'],
    ['ftp://h/m.onnx', 'has scheme ftp:, which is not supported (file, http, https)'],
    ['C:\\models\\m.onnx', 'has scheme c:, which is not supported (file, http, https)'],
    ['file://models/churn.onnx', 'names host models; a local file is written file:///models/churn.onnx'],
    [
      'file:///models/a%2Fb.onnx',
      'is not a local file path: File URL path must not include encoded / characters',
    ],
    ['file:///', 'names a directory, not a model file'],
    ['file:///models/', 'names a directory, not a model file'],
    ['http://registry/models/', 'names a directory, not a model file'],
    ['http://registry', 'names a directory, not a model file'],
  ];
  for (const [uri, why] of refused) {
    it(`refuses ${JSON.stringify(uri)}: ${why}`, () => {
      expect(checkModelUri(uri)).toBe(why);
    });
  }

  for (const uri of [
    'file:///models/churn.onnx',
    'file://localhost/models/churn.onnx',
    'file:///var/lib/crema/models/drink-ranking.onnx',
    'http://127.0.0.1:8080/m/ranker.onnx',
    'https://registry.example/models/ranker?rev=3',
    'http://registry/m/ranker',
  ]) {
    it(`accepts ${uri}`, () => {
      expect(checkModelUri(uri)).toBeNull();
    });
  }
});
