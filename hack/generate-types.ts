/**
 * Generates the operator's TypeScript API types from `crds/*.yaml` (the single source of truth) and
 * copies the CRDs into the Helm chart (charts/crema/files/crds, rendered by its crds.yaml template),
 * along with the alert rules and dashboards of manifests/monitoring (charts/crema/files/monitoring).
 * Run with `npm run generate`; `hack/generate-types.test.ts` fails when the committed output is stale.
 */
import { readdir, readFile, writeFile, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { format, resolveConfig } from 'prettier';
import { parse } from 'yaml';

/** The subset of an OpenAPI v3 schema that CRDs use and the converter understands. */
export interface JsonSchema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  enum?: unknown[];
  default?: unknown;
  format?: string;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean;
  exclusiveMaximum?: boolean;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-validations'?: { rule: string; message?: string }[];
}

export interface CrdDocument {
  kind: string;
  metadata: { name: string };
  spec: {
    group: string;
    names: { kind: string; plural: string; listKind?: string; shortNames?: string[] };
    versions: { name: string; storage: boolean; schema: { openAPIV3Schema: JsonSchema } }[];
  };
}

/** One file the generator owns: its path relative to the repository root and its full content. */
export interface GeneratedFile {
  path: string;
  content: string;
}

export const CRD_DIR = 'crds';
export const CHART_CRD_DIR = 'charts/crema/files/crds';
export const TYPES_DIR = 'operator/src/api/v1alpha1';
/** Alert rules and dashboards (manifests/monitoring), copied into the chart so it can template them. */
export const MONITORING_DIR = 'manifests/monitoring';
export const CHART_MONITORING_DIR = 'charts/crema/files/monitoring';

/** Files under `dir` (relative to `rootDir`), recursively, as paths relative to `rootDir`; [] when absent. */
async function walk(rootDir: string, dir: string): Promise<string[]> {
  const entries = await readdir(path.join(rootDir, dir), { withFileTypes: true }).catch(() => []);
  const out: string[] = [];
  for (const e of entries) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...(await walk(rootDir, rel)));
    else out.push(rel);
  }
  return out;
}

const pascal = (name: string): string => name.charAt(0).toUpperCase() + name.slice(1);

/** `steps` → `Step`, `history` → `HistoryItem`: the type name of one element of a list property. */
const itemTypeName = (name: string): string =>
  /[^s]s$/.test(name) ? pascal(name.slice(0, -1)) : `${pascal(name)}Item`;

const isIdentifier = (name: string): boolean => /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name);

/** Greedy word wrap, so that long CRD descriptions stay readable in the generated JSDoc. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

/** JSDoc of a property: its description, then its constraints, CEL rules and default. */
function jsDoc(schema: JsonSchema, indent: string, withFacts = true): string {
  const width = 100 - indent.length;
  const lines: string[] = schema.description ? wrap(schema.description, width) : [];
  const facts: string[] = [];
  if (withFacts) {
    if (schema.minimum !== undefined) facts.push(`${schema.exclusiveMinimum ? '>' : '≥'} ${schema.minimum}`);
    if (schema.maximum !== undefined) facts.push(`${schema.exclusiveMaximum ? '<' : '≤'} ${schema.maximum}`);
    if (schema.minLength !== undefined) facts.push(`length ≥ ${schema.minLength}`);
    if (schema.maxLength !== undefined) facts.push(`length ≤ ${schema.maxLength}`);
    if (schema.minItems !== undefined) facts.push(`at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined) facts.push(`at most ${schema.maxItems} items`);
    if (schema.pattern !== undefined) facts.push(`pattern \`${schema.pattern}\``);
    if (schema.format !== undefined) facts.push(`format ${schema.format}`);
    for (const v of schema['x-kubernetes-validations'] ?? []) facts.push(v.message ?? `\`${v.rule}\``);
  }
  if (facts.length > 0) lines.push(...wrap(`Constraints: ${facts.join('; ')}.`, width));
  if (withFacts && schema.default !== undefined) lines.push(`@default ${JSON.stringify(schema.default)}`);
  if (lines.length === 0) return '';
  const body = lines.map((l) => `${indent} * ${l.replaceAll('*/', '*\\/')}`.trimEnd()).join('\n');
  return `${indent}/**\n${body}\n${indent} */\n`;
}

/** Converts schemas into TypeScript declarations; nested objects become named interfaces. */
class TypeEmitter {
  readonly declarations: string[] = [];

  /** Returns a TypeScript type expression for `schema`, declaring interfaces named after `name`. */
  typeOf(schema: JsonSchema, name: string): string {
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
    switch (schema.type) {
      case 'string':
        return 'string';
      case 'integer':
      case 'number':
        return 'number';
      case 'boolean':
        return 'boolean';
      case 'array': {
        if (!schema.items) throw new Error(`${name}: array without items`);
        const item = this.typeOf(schema.items, name);
        return item.includes('|') ? `(${item})[]` : `${item}[]`;
      }
      case 'object':
        if (!schema.properties) {
          return schema['x-kubernetes-preserve-unknown-fields'] ? 'Record<string, unknown>' : 'object';
        }
        this.declareInterface(schema, name);
        return name;
      default:
        throw new Error(`${name}: unsupported schema type ${String(schema.type)}`);
    }
  }

  declareInterface(schema: JsonSchema, name: string): void {
    // Reserve the slot first so that a parent interface comes before the interfaces it uses.
    const slot = this.declarations.push('') - 1;
    const required = new Set(schema.required ?? []);
    const members = Object.entries(schema.properties ?? {}).map(([prop, child]) => {
      const childName = child.type === 'array' ? name + itemTypeName(prop) : name + pascal(prop);
      const key = isIdentifier(prop) ? prop : JSON.stringify(prop);
      const optional = required.has(prop) ? '' : '?';
      return `${jsDoc(child, '  ')}  ${key}${optional}: ${this.typeOf(child, childName)};\n`;
    });
    this.declarations[slot] = `${jsDoc(schema, '', false)}export interface ${name} {\n${members.join('')}}\n`;
  }
}

/** Renders the TypeScript module for one CRD (unformatted). */
export function renderTypes(crd: CrdDocument, sourceFile: string): string {
  const version = crd.spec.versions.find((v) => v.storage) ?? crd.spec.versions[0];
  if (!version) throw new Error(`${sourceFile}: no versions`);
  const { kind, plural, listKind = `${kind}List`, shortNames = [] } = crd.spec.names;
  const root = version.schema.openAPIV3Schema;
  const props = root.properties ?? {};
  const emitter = new TypeEmitter();
  const required = new Set(root.required ?? []);
  const member = (prop: string): string => {
    const schema = props[prop];
    if (!schema) return '';
    const optional = required.has(prop) ? '' : '?';
    return `${jsDoc(schema, '  ')}  ${prop}${optional}: ${emitter.typeOf(schema, kind + pascal(prop))};\n`;
  };
  const body = member('spec') + member('status');
  const apiVersion = `${crd.spec.group}/${version.name}`;
  const top =
    `${jsDoc(root, '', false)}export interface ${kind} {\n` +
    `  apiVersion: '${apiVersion}';\n  kind: '${kind}';\n  metadata?: V1ObjectMeta;\n${body}}\n`;
  const list =
    `/** A list of ${kind} objects, as returned by list calls. */\n` +
    `export interface ${listKind} {\n  apiVersion: '${apiVersion}';\n  kind: '${listKind}';\n` +
    `  metadata?: V1ListMeta;\n  items: ${kind}[];\n}\n`;
  const constName = kind.charAt(0).toLowerCase() + kind.slice(1) + 'Resource';
  const resource =
    `/** Coordinates of the ${kind} resource for API calls. */\n` +
    `export const ${constName} = {\n  group: '${crd.spec.group}',\n  version: '${version.name}',\n` +
    `  apiVersion: '${apiVersion}',\n  kind: '${kind}',\n  listKind: '${listKind}',\n  plural: '${plural}',\n` +
    `  shortNames: ${JSON.stringify(shortNames)},\n} as const;\n`;
  return [
    `// Code generated by hack/generate-types.ts from ${sourceFile}; DO NOT EDIT.\n`,
    `import type { V1ListMeta, V1ObjectMeta } from '@kubernetes/client-node';\n`,
    resource,
    top,
    list,
    ...emitter.declarations,
  ].join('\n');
}

async function formatTs(content: string, filePath: string): Promise<string> {
  const options = (await resolveConfig(filePath)) ?? {};
  return format(content, { ...options, filepath: filePath });
}

/** Computes every file the generator owns, without touching the disk beyond reading `crds/`. */
export async function generate(rootDir: string): Promise<GeneratedFile[]> {
  const crdFiles = (await readdir(path.join(rootDir, CRD_DIR))).filter((f) => f.endsWith('.yaml')).sort();
  const files: GeneratedFile[] = [];
  const modules: string[] = [];
  for (const file of crdFiles) {
    const source = `${CRD_DIR}/${file}`;
    const text = await readFile(path.join(rootDir, source), 'utf8');
    const crd = parse(text) as CrdDocument;
    if (crd?.kind !== 'CustomResourceDefinition')
      throw new Error(`${source}: not a CustomResourceDefinition`);
    const module = crd.spec.names.kind.toLowerCase();
    const target = `${TYPES_DIR}/${module}.ts`;
    files.push({
      path: target,
      content: await formatTs(renderTypes(crd, source), path.join(rootDir, target)),
    });
    files.push({ path: `${CHART_CRD_DIR}/${file}`, content: text });
    modules.push(module);
  }
  const indexPath = `${TYPES_DIR}/index.ts`;
  const index =
    `// Code generated by hack/generate-types.ts from ${CRD_DIR}/*.yaml; DO NOT EDIT.\n\n` +
    modules.map((m) => `export * from './${m}.js';\n`).join('');
  files.push({ path: indexPath, content: await formatTs(index, path.join(rootDir, indexPath)) });
  for (const source of (await walk(rootDir, MONITORING_DIR))
    .filter((f) => /\.(ya?ml|json)$/.test(f))
    .sort()) {
    files.push({
      path: `${CHART_MONITORING_DIR}/${source.slice(MONITORING_DIR.length + 1)}`,
      content: await readFile(path.join(rootDir, source), 'utf8'),
    });
  }
  return files;
}

/** Lists the files currently in the generator's output directories (relative paths). */
export async function listOwnedFiles(rootDir: string): Promise<string[]> {
  const owned: string[] = [];
  for (const dir of [TYPES_DIR, CHART_CRD_DIR]) {
    const entries = await readdir(path.join(rootDir, dir)).catch(() => [] as string[]);
    owned.push(...entries.map((e) => `${dir}/${e}`));
  }
  owned.push(...(await walk(rootDir, CHART_MONITORING_DIR)));
  return owned.sort();
}

/** Writes the generated files and deletes leftovers (e.g. types of a removed CRD). */
export async function writeGenerated(rootDir: string): Promise<GeneratedFile[]> {
  const files = await generate(rootDir);
  const wanted = new Set(files.map((f) => f.path));
  for (const stale of (await listOwnedFiles(rootDir)).filter((f) => !wanted.has(f))) {
    await rm(path.join(rootDir, stale));
  }
  for (const file of files) {
    await mkdir(path.dirname(path.join(rootDir, file.path)), { recursive: true });
    await writeFile(path.join(rootDir, file.path), file.content);
  }
  return files;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const files = await writeGenerated(rootDir);
  for (const f of files) console.log(`wrote ${f.path}`);
}
