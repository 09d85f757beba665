/**
 * The grammar of a model URI (`file://`, `http://`, `https://`, docs/serving.md "Models"): one
 * pure check used by the admin route (400 naming `uri`), the loader and the fetch init container,
 * so a URI is refused with a reason before anything is fetched.
 */
import { fileURLToPath } from 'node:url';

/** The schemes a model can be fetched from. */
export const MODEL_URI_SCHEMES = ['file:', 'http:', 'https:'] as const;

/** Why `uri` is not a model URI serving can fetch, or null when it is one. */
export function checkModelUri(uri: string): string | null {
  if (uri.trim() === '') return 'is empty';
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    // The usual mistake: a plain path, which the docs write as a file:// URI.
    if (uri.startsWith('/')) return `is not a URL; a local file is written file://${uri}`;
    return 'is not a URL (file://, http:// or https://)';
  }
  if (!(MODEL_URI_SCHEMES as readonly string[]).includes(url.protocol))
    return `has scheme ${url.protocol}, which is not supported (file, http, https)`;
  if (url.protocol === 'file:') {
    if (url.host !== '' && url.host !== 'localhost') {
      // file://models/x.onnx names the host "models"; the path needs a third slash.
      return `names host ${url.host}; a local file is written file:///${url.host}${url.pathname}`;
    }
    try {
      fileURLToPath(url);
    } catch (err) {
      return `is not a local file path: ${(err as Error).message}`;
    }
  } else if (url.hostname === '') {
    return 'has no host';
  }
  if (url.pathname === '' || url.pathname.endsWith('/')) return 'names a directory, not a model file';
  return null;
}
