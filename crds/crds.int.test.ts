/**
 * The CRDs against a real kube-apiserver: they install and become Established, the examples are
 * accepted with defaults filled in, and invalid resources are refused with an error naming the
 * offending field - the error a user sees from `kubectl apply`.
 */
import { readdir, readFile } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Experiment, RecommenderModel, StoreRegion } from '../operator/src/api/v1alpha1/index.js';

const rootDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const namespace = `crds-test-${Date.now().toString(36)}`;

let kc: k8s.KubeConfig;
let crdApi: k8s.ApiextensionsV1Api;
let objects: k8s.KubernetesObjectApi;
let crds: k8s.V1CustomResourceDefinition[] = [];
const examples = new Map<string, k8s.KubernetesObject>();

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Reads a YAML manifest into the typed client model (raw YAML through the typed API drops `x-kubernetes-*`). */
async function loadCrd(file: string): Promise<k8s.V1CustomResourceDefinition> {
  return k8s.loadYaml<k8s.V1CustomResourceDefinition>(
    await readFile(path.join(rootDir, 'crds', file), 'utf8'),
  );
}

/** Creates the CRD or replaces the one already installed, then waits until it is Established. */
async function installCrd(body: k8s.V1CustomResourceDefinition): Promise<void> {
  const name = body.metadata!.name!;
  try {
    await crdApi.createCustomResourceDefinition({ body });
  } catch (err) {
    if (!(err instanceof k8s.ApiException) || err.code !== 409) throw err;
    const current = await crdApi.readCustomResourceDefinition({ name });
    body.metadata!.resourceVersion = current.metadata!.resourceVersion;
    await crdApi.replaceCustomResourceDefinition({ name, body });
  }
  for (let i = 0; i < 150; i++) {
    const crd = await crdApi.readCustomResourceDefinition({ name });
    if (crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) return;
    await sleep(200);
  }
  throw new Error(`CRD ${name} did not become Established`);
}

/** The Kubernetes Status of a rejected request. */
function statusOf(err: unknown): { code: number; status: k8s.V1Status } {
  if (!(err instanceof k8s.ApiException)) throw err;
  const body: unknown = err.body;
  const status = (typeof body === 'string' ? JSON.parse(body) : body) as k8s.V1Status;
  return { code: err.code, status };
}

/** GETs `apiPath` as a server-side Table, the way `kubectl get` asks for its printer columns. */
async function getTable(apiPath: string): Promise<{ columns: string[]; rows: unknown[][] }> {
  const url = new URL(kc.getCurrentCluster()!.server + apiPath);
  const opts: https.RequestOptions = {
    method: 'GET',
    headers: { Accept: 'application/json;as=Table;v=v1;g=meta.k8s.io' },
  };
  await kc.applyToHTTPSOptions(opts);
  const body = await new Promise<string>((resolve, reject) => {
    https
      .get(url, opts, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (data += chunk));
        res.on('end', () =>
          res.statusCode === 200 ? resolve(data) : reject(new Error(`${res.statusCode} ${data}`)),
        );
      })
      .on('error', reject);
  });
  const table = JSON.parse(body) as { columnDefinitions: { name: string }[]; rows: { cells: unknown[] }[] };
  return { columns: table.columnDefinitions.map((c) => c.name), rows: table.rows.map((r) => r.cells) };
}

beforeAll(async () => {
  kc = new k8s.KubeConfig();
  kc.loadFromFile(inject('kubeconfigPath'));
  crdApi = kc.makeApiClient(k8s.ApiextensionsV1Api);
  objects = k8s.KubernetesObjectApi.makeApiClient(kc);

  const files = (await readdir(path.join(rootDir, 'crds'))).filter((f) => f.endsWith('.yaml')).sort();
  await Promise.all(files.map(async (f) => installCrd(await loadCrd(f))));
  crds = await Promise.all(
    files.map(async (f) => crdApi.readCustomResourceDefinition({ name: f.replace(/\.yaml$/, '') })),
  );
  await objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });

  const exampleDir = path.join(rootDir, 'manifests/examples');
  for (const f of (await readdir(exampleDir)).filter((f) => f.endsWith('.yaml')).sort()) {
    const obj = parse(await readFile(path.join(exampleDir, f), 'utf8')) as k8s.KubernetesObject;
    obj.metadata = { ...obj.metadata, namespace };
    examples.set(f, obj);
  }
  // Discovery of a freshly established group can lag a moment behind the Established condition.
  for (let i = 0; ; i++) {
    try {
      await objects.list('crema.dev/v1alpha1', 'StoreRegion', namespace);
      break;
    } catch (err) {
      if (i > 50) throw err;
      await sleep(200);
    }
  }
});

afterAll(async () => {
  await objects
    ?.delete({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } })
    .catch(() => {});
});

describe('installed CRDs', () => {
  it('are discoverable by short name and by the `crema` category (kubectl get crema)', async () => {
    const list = await kc.makeApiClient(k8s.CustomObjectsApi).getAPIResources({
      group: 'crema.dev',
      version: 'v1alpha1',
    });
    const byKind = Object.fromEntries(
      list.resources.filter((r) => !r.name.includes('/')).map((r) => [r.kind, r]),
    );
    expect(Object.keys(byKind).sort()).toEqual(['Experiment', 'RecommenderModel', 'StoreRegion']);
    expect(byKind['RecommenderModel']?.shortNames).toEqual(['rm']);
    expect(byKind['Experiment']?.shortNames).toEqual(['exp']);
    expect(byKind['StoreRegion']?.shortNames).toEqual(['sr']);
    for (const r of Object.values(byKind)) expect(r.categories, r.kind).toContain('crema');
    // The status subresource exists, so spec writes can never clobber the operator's status.
    expect(list.resources.map((r) => r.name)).toContain('recommendermodels/status');
  });

  it('document every field and its default for `kubectl explain`', () => {
    const undocumented: string[] = [];
    const walk = (schema: k8s.V1JSONSchemaProps, at: string): void => {
      for (const [name, child] of Object.entries(schema.properties ?? {})) {
        if (at === '' && name === 'metadata') continue;
        const here = at ? `${at}.${name}` : name;
        if (!child.description?.trim()) undocumented.push(here);
        // kubectl explain shows no defaults, so the description has to say it.
        const dflt: unknown = child._default;
        if (
          dflt !== undefined &&
          typeof dflt !== 'object' &&
          !child.description?.includes(`Defaults to ${dflt}.`)
        ) {
          undocumented.push(`${here} (default ${String(dflt)} not mentioned)`);
        }
        walk(child, here);
      }
      if (schema.items) walk(schema.items as k8s.V1JSONSchemaProps, `${at}[]`);
    };
    let fields = 0;
    for (const crd of crds) {
      const before = undocumented.length;
      const schema = crd.spec.versions[0]!.schema!.openAPIV3Schema!;
      walk(schema, '');
      fields += JSON.stringify(schema).split('"description"').length - 1;
      expect(undocumented.length - before, `${crd.metadata!.name}: ${undocumented.join(', ')}`).toBe(0);
    }
    expect(fields).toBeGreaterThan(100);
    // The schema that came back from the server still carries the CEL rules (nothing dropped on the way).
    const rm = crds.find((c) => c.spec.names.kind === 'RecommenderModel')!;
    const steps =
      rm.spec.versions[0]!.schema!.openAPIV3Schema!.properties!['spec']!.properties!['rollout']!.properties![
        'steps'
      ]!;
    expect(steps.x_kubernetes_validations?.[0]?.message).toBe('step weights must be strictly ascending');
  });
});

describe('valid resources', () => {
  it('accepts every example in manifests/examples', async () => {
    for (const [file, obj] of examples) {
      const created = await objects.create(obj);
      expect(created.metadata?.uid, file).toBeTruthy();
    }
  });

  it('fills in defaults for a minimal RecommenderModel', async () => {
    const rm = await objects.create<RecommenderModel>({
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'RecommenderModel',
      metadata: { name: 'minimal', namespace },
      spec: {
        model: { uri: 'https://models.example/churn.onnx', sha256: 'a'.repeat(64), task: 'churn' },
        rollout: { steps: [{ weight: 20 }, { weight: 100, pause: '30s' }], analysis: {} },
        drift: {},
      },
    });
    expect(rm.spec.model.featureSchemaVersion).toBe(1);
    expect(rm.spec.serving).toEqual({
      image: 'crema/serving:0.1.0',
      minReplicas: 2,
      maxReplicas: 10,
      targetCPUUtilization: 70,
      port: 8080,
      resources: { requests: { cpu: '250m', memory: '256Mi' }, limits: { memory: '512Mi' } },
      adminTokenSecretRef: { name: 'crema-serving-admin', key: 'token' },
    });
    expect(rm.spec.rollout?.steps).toEqual([
      { weight: 20, analysis: true },
      { weight: 100, pause: '30s', analysis: true },
    ]);
    expect(rm.spec.rollout?.analysis).toEqual({ interval: '1m', failureLimit: 2, minSamples: 500 });
    expect(rm.spec.drift).toEqual({ psiThreshold: 0.2, window: '1h', action: 'Alert' });
    expect(rm.spec.fallback).toEqual({ strategy: 'popularity' });
    expect(rm.spec.paused).toBe(false);
  });

  it('fills in defaults for a minimal Experiment and StoreRegion', async () => {
    const exp = await objects.create<Experiment>({
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'Experiment',
      metadata: { name: 'minimal', namespace },
      spec: {
        variants: [
          { name: 'a', modelRef: 'drinks', weight: 50 },
          { name: 'b', modelRef: 'drinks-v2', weight: 50 },
        ],
        assignment: { salt: 's1' },
        primaryMetric: 'attachRate',
      },
    });
    expect(exp.spec.assignment.unit).toBe('userId');
    expect(exp.spec.minSamplesPerVariant).toBe(1000);
    expect(exp.spec.maxDuration).toBe('14d');
    expect(exp.spec.decision).toEqual({ alpha: 0.05, autoPromote: false });

    const sr = await objects.create<StoreRegion>({
      apiVersion: 'crema.dev/v1alpha1',
      kind: 'StoreRegion',
      metadata: { name: 'minimal', namespace },
      spec: {
        stores: ['s-1'],
        timezone: 'UTC',
        peakWindows: [{ days: ['Sat'], start: '07:00', end: '07:01' }],
      },
    });
    expect(sr.spec.peakWindows?.[0]?.multiplier).toBe(1);
  });
});

type Kind = 'RecommenderModel' | 'Experiment' | 'StoreRegion';
interface InvalidCase<T> {
  /** What is wrong, as a user would say it. */
  name: string;
  mutate: (obj: T) => void;
  /** The field path the API server must name. */
  field: string;
  /** A fragment of the API server's explanation. */
  says: string;
}

const rmCases: InvalidCase<RecommenderModel>[] = [
  {
    name: 'sha256 is not lower-case hex',
    mutate: (o) => (o.spec.model.sha256 = 'G'.repeat(64)),
    field: 'spec.model.sha256',
    says: 'should match',
  },
  {
    name: 'sha256 is too short',
    mutate: (o) => (o.spec.model.sha256 = 'abc123'),
    field: 'spec.model.sha256',
    says: 'at least 64 chars',
  },
  {
    name: 'model uri has an unsupported scheme',
    mutate: (o) => (o.spec.model.uri = 's3://bucket/drinks.onnx'),
    field: 'spec.model.uri',
    says: 'must start with file://, http:// or https://',
  },
  {
    name: 'metadataUri has an unsupported scheme',
    mutate: (o) => (o.spec.model.metadataUri = 'ftp://host/meta.json'),
    field: 'spec.model.metadataUri',
    says: 'must start with file://',
  },
  {
    name: 'unknown task',
    mutate: (o) => (o.spec.model.task = 'fraud-detection' as never),
    field: 'spec.model.task',
    says: 'Unsupported value: "fraud-detection"',
  },
  {
    name: 'missing sha256',
    mutate: (o) => Reflect.deleteProperty(o.spec.model, 'sha256'),
    field: 'spec.model.sha256',
    says: 'Required value',
  },
  {
    name: 'admission proxy passing no request at all',
    mutate: (o) => Object.assign(o.spec.serving!, { admissionProxy: { enabled: true, maxConcurrency: 0 } }),
    field: 'spec.serving.admissionProxy.maxConcurrency',
    says: 'should be greater than or equal to 1',
  },
  {
    name: 'minReplicas > maxReplicas',
    mutate: (o) => Object.assign(o.spec.serving!, { minReplicas: 30, maxReplicas: 20 }),
    field: 'spec.serving.minReplicas',
    says: 'minReplicas must be less than or equal to maxReplicas',
  },
  {
    name: 'maxReplicas above 1000',
    mutate: (o) => (o.spec.serving!.maxReplicas = 5000),
    field: 'spec.serving.maxReplicas',
    says: 'less than or equal to 1000',
  },
  {
    name: 'memory request is not a quantity',
    mutate: (o) => (o.spec.serving!.resources = { requests: { memory: 'lots' } }),
    field: 'spec.serving.resources.requests.memory',
    says: 'should match',
  },
  {
    name: 'rollout weights not ascending',
    mutate: (o) => (o.spec.rollout!.steps = [{ weight: 50 }, { weight: 10 }]),
    field: 'spec.rollout.steps',
    says: 'step weights must be strictly ascending',
  },
  {
    name: 'rollout weights repeated',
    mutate: (o) => (o.spec.rollout!.steps = [{ weight: 25 }, { weight: 25 }, { weight: 100 }]),
    field: 'spec.rollout.steps',
    says: 'step weights must be strictly ascending',
  },
  {
    name: 'rollout weight above 100',
    mutate: (o) => (o.spec.rollout!.steps[2]!.weight = 150),
    field: 'spec.rollout.steps[2].weight',
    says: 'less than or equal to 100',
  },
  {
    name: 'rollout without steps',
    mutate: (o) => (o.spec.rollout!.steps = []),
    field: 'spec.rollout.steps',
    says: 'at least 1 items',
  },
  {
    name: 'pause is not a duration',
    mutate: (o) => (o.spec.rollout!.steps[0]!.pause = '5 minutes'),
    field: 'spec.rollout.steps[0].pause',
    says: 'should match',
  },
  {
    name: 'errorRate threshold above 1',
    mutate: (o) => (o.spec.rollout!.analysis!.metrics!.errorRate = { max: 1.5 }),
    field: 'spec.rollout.analysis.metrics.errorRate.max',
    says: 'less than or equal to 1',
  },
  {
    name: 'unknown drift action',
    mutate: (o) => (o.spec.drift!.action = 'Delete' as never),
    field: 'spec.drift.action',
    says: 'Unsupported value: "Delete"',
  },
];

const expCases: InvalidCase<Experiment>[] = [
  {
    name: 'variant weights do not sum to 100',
    mutate: (o) => (o.spec.variants[1]!.weight = 10),
    field: 'spec.variants',
    says: 'variant weights must sum to 100',
  },
  {
    name: 'duplicate variant names',
    mutate: (o) => (o.spec.variants[1]!.name = 'control'),
    field: 'spec.variants',
    says: 'variant names must be unique',
  },
  {
    name: 'fewer than 2 variants',
    mutate: (o) => (o.spec.variants = [{ name: 'only', modelRef: 'drinks', weight: 100 }]),
    field: 'spec.variants',
    says: 'at least 2 items',
  },
  {
    name: 'variant name is not a DNS label',
    mutate: (o) => (o.spec.variants[0]!.name = 'Control_A'),
    field: 'spec.variants[0].name',
    says: 'should match',
  },
  {
    name: 'alpha of 0',
    mutate: (o) => (o.spec.decision = { alpha: 0 }),
    field: 'spec.decision.alpha',
    says: 'greater than 0',
  },
  {
    name: 'alpha above 0.5',
    mutate: (o) => (o.spec.decision = { alpha: 0.6 }),
    field: 'spec.decision.alpha',
    says: 'less than or equal to 0.5',
  },
  {
    name: 'missing assignment salt',
    mutate: (o) => (o.spec.assignment = { unit: 'userId' } as never),
    field: 'spec.assignment.salt',
    says: 'Required value',
  },
  {
    name: 'unknown primary metric',
    mutate: (o) => (o.spec.primaryMetric = 'revenue' as never),
    field: 'spec.primaryMetric',
    says: 'Unsupported value: "revenue"',
  },
  {
    name: 'maxDuration in weeks',
    mutate: (o) => (o.spec.maxDuration = '2w'),
    field: 'spec.maxDuration',
    says: 'should match',
  },
];

const srCases: InvalidCase<StoreRegion>[] = [
  {
    name: 'timezone with a space',
    mutate: (o) => (o.spec.timezone = 'Pacific Time'),
    field: 'spec.timezone',
    says: 'should match',
  },
  {
    name: 'missing timezone',
    mutate: (o) => Reflect.deleteProperty(o.spec, 'timezone'),
    field: 'spec.timezone',
    says: 'Required value',
  },
  { name: 'no stores', mutate: (o) => (o.spec.stores = []), field: 'spec.stores', says: 'at least 1 items' },
  {
    name: 'a store listed twice',
    mutate: (o) => (o.spec.stores = ['sea-0001', 'sea-0001']),
    field: 'spec.stores[1]',
    says: 'Duplicate value',
  },
  {
    name: 'peak window starts after it ends',
    mutate: (o) => Object.assign(o.spec.peakWindows![0]!, { start: '10:00', end: '09:00' }),
    field: 'spec.peakWindows[0].start',
    says: 'start must be before end',
  },
  {
    // 24:00 is allowed (the midnight that ends the day), 24:01 is not.
    name: 'peak window end is not HH:MM',
    mutate: (o) => (o.spec.peakWindows![1]!.end = '24:01'),
    field: 'spec.peakWindows[1].end',
    says: 'should match',
  },
  {
    name: 'peak window on an unknown day',
    mutate: (o) => (o.spec.peakWindows![0]!.days = ['Monday' as never]),
    field: 'spec.peakWindows[0].days[0]',
    says: 'Unsupported value: "Monday"',
  },
  {
    name: 'peak multiplier below 1',
    mutate: (o) => (o.spec.peakWindows![0]!.multiplier = 0.5),
    field: 'spec.peakWindows[0].multiplier',
    says: 'greater than or equal to 1',
  },
  {
    name: 'promotion ends before it starts',
    // 06:00 at UTC-7 is 13:00Z, after the start: the rule compares instants, not strings.
    mutate: (o) =>
      Object.assign(o.spec.promotions![0]!, {
        start: '2026-09-01T14:00:00Z',
        end: '2026-09-01T06:00:00-07:00',
      }),
    field: 'spec.promotions[0].end',
    says: 'end must be after start',
  },
  {
    name: 'promotion start is not a date-time',
    mutate: (o) => (o.spec.promotions![0]!.start = 'next tuesday'),
    field: 'spec.promotions[0].start',
    says: 'date-time',
  },
  {
    name: 'region minReplicas > maxReplicas',
    mutate: (o) => Object.assign(o.spec.serving!, { minReplicas: 8, maxReplicas: 4 }),
    field: 'spec.serving.minReplicas',
    says: 'minReplicas must be less than or equal to maxReplicas',
  },
  {
    name: 'freeze window of zero length',
    mutate: (o) => Object.assign(o.spec.freezeWindows![0]!, { start: '06:00', end: '06:00' }),
    field: 'spec.freezeWindows[0].start',
    says: 'start must be before end',
  },
];

const exampleOf: Record<Kind, string> = {
  RecommenderModel: 'drinks-recommender.yaml',
  Experiment: 'experiment-drinks-v2.yaml',
  StoreRegion: 'store-region-northwest.yaml',
};

const table = [
  ...rmCases.map((c) => ({ kind: 'RecommenderModel' as Kind, ...c })),
  ...expCases.map((c) => ({ kind: 'Experiment' as Kind, ...c })),
  ...srCases.map((c) => ({ kind: 'StoreRegion' as Kind, ...c })),
] as (InvalidCase<unknown> & { kind: Kind })[];

describe('status', () => {
  it('is written through the status subresource and shown by `kubectl get rm`', async () => {
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const rm = structuredClone(examples.get('drinks-recommender.yaml')!) as RecommenderModel;
    rm.metadata = { name: 'columns', namespace };
    const created = await objects.create(rm);
    created.status = {
      observedGeneration: 1,
      phase: 'Progressing',
      stable: { modelSha: rm.spec.model.sha256, revision: 3, since: '2026-11-24T21:00:00Z' },
      canary: { modelSha: 'b'.repeat(64), weight: 10, step: 0 },
      readyReplicas: 2,
      replicas: 3,
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Serving',
          message: 'stable serves',
          lastTransitionTime: '2026-11-24T21:00:00Z',
        },
      ],
    };
    const target = {
      group: 'crema.dev',
      version: 'v1alpha1',
      namespace,
      plural: 'recommendermodels',
      name: 'columns',
    };
    const updated = (await custom.replaceNamespacedCustomObjectStatus({
      ...target,
      body: created,
    })) as RecommenderModel;

    const table = await getTable(`/apis/crema.dev/v1alpha1/namespaces/${namespace}/recommendermodels`);
    expect(table.columns).toEqual(['Name', 'Phase', 'Revision', 'Canary%', 'Ready', 'Frozen-Until', 'Age']);
    const row = table.rows.find((r) => r[0] === 'columns');
    expect(row?.slice(0, 5)).toEqual(['columns', 'Progressing', 3, 10, 2]);

    // A status the schema does not allow is refused too (the operator cannot write nonsense).
    const bad = { ...updated, status: { phase: 'Exploded' } };
    const err = await custom.replaceNamespacedCustomObjectStatus({ ...target, body: bad }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(statusOf(err).status.message).toContain('status.phase: Unsupported value: "Exploded"');
  });
});

describe('invalid resources are rejected naming the field', () => {
  it('covers at least 15 distinct cases across all three kinds', () => {
    expect(new Set(table.map((c) => c.name)).size).toBe(table.length);
    expect(table.length).toBeGreaterThanOrEqual(15);
  });

  it.each(table)('$kind: $name → $field', async ({ kind, mutate, field, says }) => {
    const obj = structuredClone(examples.get(exampleOf[kind])!);
    obj.metadata = { name: 'invalid', namespace };
    mutate(obj);
    // Server-side dry run: full validation, nothing stored.
    const err = await objects.create(obj, undefined, 'All').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, 'the API server accepted it').toBeDefined();
    const { code, status } = statusOf(err);
    expect(code).toBe(422);
    expect(status.message).toContain(`${field}:`);
    expect(status.message).toContain(says);
    // Only the broken field is reported, so each case tests one rule.
    const fields = (status.details?.causes ?? []).map((c) => c.field).filter((f) => f && f !== '<nil>');
    expect(fields).toEqual([field]);
  });
});
