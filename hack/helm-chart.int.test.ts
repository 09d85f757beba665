/**
 * charts/crema against the real API server of the integration project: `helm lint --strict`;
 * `helm template` for the default and non-default values accepted by a server-side dry run
 * (kubectl apply --server-side --dry-run=server) in a namespace that enforces PodSecurity
 * "restricted"; the prometheus-operator CRDs (pinned module zip) installed so ServiceMonitor,
 * PodMonitor and PrometheusRule are validated by their real schemas; bad values refused by the
 * schema naming the field; what the chart renders checked against its sources (crds/,
 * manifests/operator/rbac.yaml, manifests/monitoring); and a real `helm install` + `helm upgrade`
 * against the API server (no node here: pods stay Pending) that keeps the generated webhook token.
 */
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { eventually, testClient } from '../operator/test/helpers.js';
import { KubeApiError, type KubeClient } from '../operator/src/runtime/kube.js';
import { imageRef } from './images/build.js';
import { ensureBinaries, run } from './testenv/binaries.js';
import { CHART_DIR, ensureHelm, helmRun, prometheusOperatorCrds } from './testenv/helm.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const suffix = Date.now().toString(36);
const ns = `helm-${suffix}`;
const watched = `helm-watched-${suffix}`;
let helm: string;
let kubectl: string;
let admin: KubeClient;
let dir: string;
let helmEnv: NodeJS.ProcessEnv;

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [k: string]: unknown;
}
interface Container {
  image: string;
  env: Array<{ name: string; value?: string; valueFrom?: unknown }>;
  securityContext: { capabilities?: unknown } & Record<string, unknown>;
}
interface PodSpec {
  securityContext: Record<string, unknown>;
  containers: Container[];
  [k: string]: unknown;
}
interface Deployment extends Obj {
  spec: { replicas: number; template: { metadata: { annotations: Record<string, string> }; spec: PodSpec } };
}
interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

const helmCmd = (args: string[]) => helmRun(helm, args, { env: helmEnv });

/** `helm template` with `--set` pairs; throws with helm's stderr on failure. */
async function render(sets: Record<string, string | number | boolean> = {}, chart = CHART_DIR) {
  const args = ['template', 'crema', chart, '--namespace', ns];
  for (const [k, v] of Object.entries(sets))
    args.push(typeof v === 'string' ? '--set-string' : '--set', `${k}=${v}`);
  const res = await helmCmd(args);
  if (res.code !== 0) throw new Error(`helm template failed: ${res.stderr}`);
  const objs = parseAllDocuments(res.stdout)
    .map((d) => d.toJSON() as Obj | null)
    .filter((o): o is Obj => !!o);
  return { text: res.stdout, objs };
}

const find = (objs: Obj[], kind: string, name?: string) =>
  objs.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));

/** Server-side dry run of a rendered manifest; returns kubectl's result. */
async function dryRun(text: string) {
  const file = join(dir, `render-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(file, text);
  return run(kubectl, [
    '--kubeconfig',
    inject('kubeconfigPath'),
    'apply',
    '--server-side',
    '--force-conflicts',
    '--field-manager=helm-chart-test',
    '--dry-run=server',
    '-f',
    file,
  ]);
}

/** (group, resource, verb) triples of a rule list, sorted. */
const triples = (rules: Rule[]) =>
  [
    ...new Set(
      rules.flatMap((r) =>
        r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g}|${res}|${v}`))),
      ),
    ),
  ].sort();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'crema-helm-'));
  helmEnv = {
    HELM_CACHE_HOME: join(dir, 'cache'),
    HELM_CONFIG_HOME: join(dir, 'config'),
    HELM_DATA_HOME: join(dir, 'data'),
    KUBECONFIG: inject('kubeconfigPath'),
  };
  helm = (await ensureHelm()).helm;
  kubectl = (await ensureBinaries()).kubectl;
  admin = await testClient(inject('kubeconfigPath'));
  for (const [name, labels] of [
    // The release namespace enforces PodSecurity "restricted" (and warns on controllers).
    [
      ns,
      { 'pod-security.kubernetes.io/enforce': 'restricted', 'pod-security.kubernetes.io/warn': 'restricted' },
    ],
    [watched, {}],
  ] as const) {
    await admin.request('POST', '/api/v1/namespaces', { body: { metadata: { name, labels } } });
  }
  // ServiceMonitor, PodMonitor and PrometheusRule with their real schemas (pinned prometheus-operator).
  const wanted = ['servicemonitors', 'podmonitors', 'prometheusrules'];
  const files = (await prometheusOperatorCrds()).filter((f) => wanted.some((w) => f.endsWith(`_${w}.yaml`)));
  expect(files).toHaveLength(3);
  for (const f of files) {
    const res = await run(kubectl, [
      '--kubeconfig',
      inject('kubeconfigPath'),
      'apply',
      '--server-side',
      '--force-conflicts',
      '-f',
      f,
    ]);
    if (res.code !== 0) throw new Error(`installing ${f}: ${res.stderr}`);
  }
  for (const w of wanted) {
    await eventually(
      async () => {
        const crd = await admin.request<{
          status?: { conditions?: Array<{ type: string; status: string }> };
        }>('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${w}.monitoring.coreos.com`);
        return crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
      },
      30_000,
      `${w} CRD established`,
    );
  }
}, 900_000);

afterAll(async () => {
  await helmCmd(['uninstall', 'helmtest', '--namespace', ns, '--wait', '--timeout', '60s']).catch(() => {});
  for (const n of [ns, watched]) await admin?.request('DELETE', `/api/v1/namespaces/${n}`).catch(() => {});
  admin?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('charts/crema', () => {
  it('passes helm lint --strict (default and non-default values)', async () => {
    for (const sets of [
      [],
      ['--set', 'rbac.scope=namespace'],
      [
        '--set',
        'metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,prometheusRule.enabled=true,dashboards.enabled=true',
      ],
    ]) {
      const res = await helmCmd(['lint', '--strict', CHART_DIR, ...sets]);
      expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0);
      expect(res.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
    }
  });

  it('default values: accepted by the API server, PodSecurity restricted, two replicas with leader election', async () => {
    const { text, objs } = await render();
    const res = await dryRun(text);
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).not.toMatch(/violate PodSecurity/);
    const [dep] = find(objs, 'Deployment', 'crema-operator') as Deployment[];
    expect(dep!.spec.replicas).toBe(2);
    const pod = dep!.spec.template.spec;
    const c = pod.containers[0]!;
    // The image `npm run images` builds (crema/operator:<package version>).
    expect(c.image).toBe(await imageRef('operator'));
    expect(pod.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(c.securityContext).toMatchObject({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    const env = Object.fromEntries(
      (c.env as Array<{ name: string; value?: string; valueFrom?: unknown }>).map((e) => [
        e.name,
        e.value ?? e.valueFrom,
      ]),
    );
    expect(env).toMatchObject({
      CREMA_LEADER_ELECTION: 'true',
      CREMA_LEASE_NAMESPACE: ns,
      CREMA_ALERT_WEBHOOK_PORT: '8443',
      CREMA_ALERT_WEBHOOK_TOKEN: { secretKeyRef: { name: 'crema-operator-webhook', key: 'token' } },
    });
    expect(env).not.toHaveProperty('CREMA_NAMESPACE');
    expect(env).not.toHaveProperty('CREMA_PROMETHEUS_URL');
    // A chart-managed token Secret, cluster-wide RBAC, a NetworkPolicy, a PDB; no monitoring objects.
    expect(find(objs, 'Secret', 'crema-operator-webhook')).toHaveLength(1);
    expect(find(objs, 'ClusterRole', 'crema-operator')).toHaveLength(1);
    expect(find(objs, 'NetworkPolicy')).toHaveLength(1);
    expect(find(objs, 'PodDisruptionBudget')).toHaveLength(1);
    expect(objs.filter((o) => o.apiVersion.startsWith('monitoring.coreos.com'))).toEqual([]);
  });

  it('the operator pod it renders is admitted where PodSecurity "restricted" is enforced (and a weakened one is not)', async () => {
    const { objs } = await render();
    const [dep] = find(objs, 'Deployment') as Deployment[];
    const podSpec = { ...dep!.spec.template.spec, serviceAccountName: 'default' };
    const create = (spec: unknown) =>
      admin.request('POST', `/api/v1/namespaces/${ns}/pods`, {
        body: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'restricted-check' }, spec },
        query: { dryRun: 'All' },
      });
    await create(podSpec);
    const weakened = structuredClone(podSpec);
    delete weakened.containers[0]!.securityContext.capabilities;
    const err = await create(weakened).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect((err as KubeApiError).status).toBe(403);
    expect(String((err as Error).message)).toMatch(/restricted/);
  });

  it('renders the CRDs from crds/ (one source), kept on uninstall unless crds.keep=false, none with crds.install=false', async () => {
    const { objs } = await render();
    const crds = find(objs, 'CustomResourceDefinition');
    expect(crds.map((c) => c.metadata.name).sort()).toEqual([
      'experiments.crema.dev',
      'recommendermodels.crema.dev',
      'storeregions.crema.dev',
    ]);
    for (const crd of crds) {
      const source = parse(await readFile(join(root, 'crds', `${crd.metadata.name}.yaml`), 'utf8')) as Obj;
      expect(crd['spec']).toEqual(source['spec']);
      expect(crd.metadata.annotations?.['helm.sh/resource-policy']).toBe('keep');
    }
    const notKept = find((await render({ 'crds.keep': false })).objs, 'CustomResourceDefinition');
    expect(notKept).toHaveLength(3);
    expect(notKept.every((c) => !c.metadata.annotations?.['helm.sh/resource-policy'])).toBe(true);
    expect(find((await render({ 'crds.install': false })).objs, 'CustomResourceDefinition')).toEqual([]);
  });

  it('grants exactly the verbs of manifests/operator/rbac.yaml (which rbac.int.test.ts proves sufficient)', async () => {
    const shipped = parseAllDocuments(await readFile(join(root, 'manifests/operator/rbac.yaml'), 'utf8')).map(
      (d) => d.toJSON() as Obj & { rules?: Rule[] },
    );
    const want = (kind: string) => triples(shipped.find((o) => o.kind === kind)!.rules!);
    const { objs } = await render();
    const cr = find(objs, 'ClusterRole')[0] as Obj & { rules: Rule[] };
    expect(triples(cr.rules)).toEqual(want('ClusterRole'));
    const lease = find(objs, 'Role', 'crema-operator-leader-election')[0] as Obj & { rules: Rule[] };
    expect(triples(lease.rules)).toEqual(want('Role'));
    expect(lease.metadata.namespace).toBe(ns);
  });

  it('namespaced mode: no cluster-wide RBAC, a Role in the watched namespace, the operator told to watch only it', async () => {
    const { text, objs } = await render({ 'rbac.scope': 'namespace', 'rbac.watchNamespace': watched });
    const res = await dryRun(text);
    expect(res.code, res.stderr).toBe(0);
    expect(objs.filter((o) => o.kind.startsWith('Cluster'))).toEqual([]);
    const role = find(objs, 'Role', 'crema-operator')[0] as Obj & { rules: Rule[] };
    expect(role.metadata.namespace).toBe(watched);
    const cr = find((await render()).objs, 'ClusterRole')[0] as Obj & { rules: Rule[] };
    expect(triples(role.rules)).toEqual(triples(cr.rules));
    const binding = find(objs, 'RoleBinding', 'crema-operator')[0] as Obj & { subjects: unknown[] };
    expect(binding.metadata.namespace).toBe(watched);
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'crema-operator', namespace: ns }]);
    const dep = find(objs, 'Deployment')[0] as Deployment;
    expect(dep.spec.template.spec.containers[0]!.env).toContainEqual({
      name: 'CREMA_NAMESPACE',
      value: watched,
    });
    // The CRDs are cluster-scoped by nature: the namespaced install leaves them to the cluster admin.
    expect(
      find(
        (await render({ 'rbac.scope': 'namespace', 'crds.install': false })).objs,
        'CustomResourceDefinition',
      ),
    ).toEqual([]);
  });

  it('monitoring on with extra labels: ServiceMonitor, PodMonitors, PrometheusRules from manifests/monitoring, all accepted', async () => {
    const { text, objs } = await render({
      'metrics.serviceMonitor.enabled': true,
      'metrics.serviceMonitor.labels.release': 'kube-prometheus-stack',
      'metrics.podMonitor.enabled': true,
      'metrics.podMonitor.labels.release': 'kube-prometheus-stack',
      'prometheusRule.enabled': true,
      'prometheusRule.labels.release': 'kube-prometheus-stack',
      'prometheus.url': 'http://prometheus-operated.monitoring.svc:9090',
    });
    const res = await dryRun(text);
    expect(res.code, res.stderr).toBe(0);
    const mon = objs.filter((o) => o.apiVersion === 'monitoring.coreos.com/v1');
    // One PrometheusRule per rule file of manifests/monitoring (crema-alerts, events-alerts).
    expect(mon.map((o) => o.kind).sort()).toEqual([
      'PodMonitor',
      'PodMonitor',
      'PrometheusRule',
      'PrometheusRule',
      'ServiceMonitor',
    ]);
    for (const o of mon) expect(o.metadata.labels?.['release']).toBe('kube-prometheus-stack');
    // Every alert of manifests/monitoring (ConfigMaps' rule files, PrometheusRules) is in a
    // PrometheusRule, verbatim.
    const sourceGroups: unknown[] = [];
    for (const file of ['crema-alerts.yaml', 'events-alerts.yaml']) {
      for (const d of parseAllDocuments(await readFile(join(root, 'manifests/monitoring', file), 'utf8'))) {
        const o = d.toJSON() as { kind: string; data?: Record<string, string>; spec?: { groups: unknown[] } };
        if (o.kind === 'PrometheusRule') sourceGroups.push(...o.spec!.groups);
        else
          sourceGroups.push(
            ...Object.values(o.data ?? {}).flatMap((f) => (parse(f) as { groups: unknown[] }).groups),
          );
      }
    }
    const rendered = find(objs, 'PrometheusRule').flatMap((o) => (o['spec'] as { groups: unknown[] }).groups);
    expect(rendered).toEqual(sourceGroups);
    expect(JSON.stringify(rendered)).toContain('CremaEventsRefused');
    expect(JSON.stringify(rendered)).toContain('CremaOperatorDown');
    // runbookBaseUrl points every alert's runbook at the team's own copy of docs/runbooks.
    const moved = await render({
      'prometheusRule.enabled': true,
      'prometheusRule.runbookBaseUrl': 'https://wiki.example.com/crema/runbooks/',
    });
    const urls = find(moved.objs, 'PrometheusRule')
      .flatMap(
        (o) =>
          (o['spec'] as { groups: { rules: { alert?: string; annotations?: Record<string, string> }[] }[] })
            .groups,
      )
      .flatMap((g) => g.rules)
      .filter((r) => r.annotations?.['runbook_url'])
      .map((r) => r.annotations!['runbook_url']);
    expect(urls.length).toBeGreaterThan(5);
    for (const u of urls) expect(u).toMatch(/^https:\/\/wiki\.example\.com\/crema\/runbooks\/Crema\w+\.md$/);
    const dep = find(objs, 'Deployment')[0] as Deployment;
    expect(dep.spec.template.spec.containers[0]!.env).toContainEqual({
      name: 'CREMA_PROMETHEUS_URL',
      value: 'http://prometheus-operated.monitoring.svc:9090',
    });
  });

  it('grafana dashboards dropped into files/monitoring become ConfigMaps with the grafana_dashboard label', async () => {
    const chart = join(dir, 'chart-with-dashboard');
    await cp(CHART_DIR, chart, { recursive: true });
    const dashboard = {
      title: 'Crema serving',
      uid: 'crema-serving',
      panels: [{ type: 'timeseries', title: 'p99' }],
    };
    await mkdir(join(chart, 'files/monitoring/dashboards'), { recursive: true });
    await writeFile(join(chart, 'files/monitoring/dashboards/serving.json'), JSON.stringify(dashboard));
    const { text, objs } = await render({ 'dashboards.enabled': true }, chart);
    const cms = find(objs, 'ConfigMap', 'crema-dashboard-serving') as Array<
      Obj & { data: Record<string, string> }
    >;
    expect(cms).toHaveLength(1);
    expect(cms[0]!.metadata.labels?.['grafana_dashboard']).toBe('1');
    expect(JSON.parse(cms[0]!.data['serving.json']!)).toEqual(dashboard);
    expect((await dryRun(text)).code).toBe(0);
    // Off by default.
    expect(find((await render({}, chart)).objs, 'ConfigMap')).toEqual([]);
  });

  it('an existing Secret for the webhook token: no chart Secret, the Deployment reads the named key', async () => {
    const { text, objs } = await render({
      'alertWebhook.existingSecret': 'my-am-token',
      'alertWebhook.secretKey': 'bearer',
    });
    expect((await dryRun(text)).code).toBe(0);
    expect(find(objs, 'Secret')).toEqual([]);
    const dep = find(objs, 'Deployment')[0] as Deployment;
    expect(dep.spec.template.spec.containers[0]!.env).toContainEqual({
      name: 'CREMA_ALERT_WEBHOOK_TOKEN',
      valueFrom: { secretKeyRef: { name: 'my-am-token', key: 'bearer' } },
    });
  });

  it('egress restricted: DNS, the API server and Prometheus only; accepted by the API server', async () => {
    const { text, objs } = await render({
      'networkPolicy.egress.enabled': true,
      'networkPolicy.egress.apiServer.cidrs[0]': '10.0.0.1/32',
      'prometheus.url': 'http://prometheus.monitoring.svc:9090',
      'networkPolicy.egress.prometheus.to[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name':
        'monitoring',
    });
    expect((await dryRun(text)).code).toBe(0);
    const np = find(objs, 'NetworkPolicy')[0] as Obj & { spec: { policyTypes: string[]; egress: unknown[] } };
    expect(np.spec.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(np.spec.egress).toHaveLength(3);
    const missing = await helmCmd(['template', 'x', CHART_DIR, '--set', 'networkPolicy.egress.enabled=true']);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('networkPolicy.egress.apiServer.cidrs');
  });

  it.each([
    ['rbac.scope=global', '/rbac/scope'],
    ['replicaCount=many', '/replicaCount'],
    ['image.pullPolicy=Sometimes', '/image/pullPolicy'],
    ['replicas=3', "additional properties 'replicas' not allowed"],
    ['alertWebhook.port=70000', '/alertWebhook/port'],
    ['prometheus.url=prometheus:9090', '/prometheus/url'],
  ])('refuses %s, naming the field', async (set, field) => {
    const res = await helmCmd(['template', 'crema', CHART_DIR, '--set', set]);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain("values don't meet the specifications of the schema");
    expect(res.stderr).toContain(field);
  });

  it('refuses several replicas without leader election, saying why', async () => {
    const res = await helmCmd(['template', 'crema', CHART_DIR, '--set', 'leaderElection.enabled=false']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('replicaCount > 1 needs leaderElection.enabled');
    const single = await helmCmd([
      'template',
      'crema',
      CHART_DIR,
      '--set',
      'leaderElection.enabled=false,replicaCount=1',
    ]);
    expect(single.code, single.stderr).toBe(0);
  });

  it('helm install and upgrade against the API server: the generated webhook token survives the upgrade', async () => {
    // The shared test API server already has the CRDs (other tests apply crds/), not owned by a
    // release: this install leaves them alone. Pods stay Pending (no node in this project).
    const install = await helmCmd([
      'install',
      'helmtest',
      CHART_DIR,
      '--namespace',
      ns,
      '--set',
      'crds.install=false',
    ]);
    expect(install.code, install.stderr).toBe(0);
    const token = async () => {
      const s = await admin.request<{ data: Record<string, string> }>(
        'GET',
        `/api/v1/namespaces/${ns}/secrets/helmtest-crema-operator-webhook`,
      );
      return Buffer.from(s.data['token']!, 'base64').toString();
    };
    const before = await token();
    expect(before).toMatch(/^[A-Za-z0-9]{40}$/);
    const dep = async () =>
      admin.request<Deployment>('GET', `/apis/apps/v1/namespaces/${ns}/deployments/helmtest-crema-operator`);
    const d1 = await dep();
    const upgrade = await helmCmd([
      'upgrade',
      'helmtest',
      CHART_DIR,
      '--namespace',
      ns,
      '--reuse-values',
      '--set',
      'operator.concurrency=8',
    ]);
    expect(upgrade.code, upgrade.stderr).toBe(0);
    expect(await token()).toBe(before);
    const d2 = await dep();
    expect(d2.spec.template.metadata.annotations['checksum/webhook-token']).toBe(
      d1.spec.template.metadata.annotations['checksum/webhook-token'],
    );
    expect(d2.spec.template.spec.containers[0]!.env).toContainEqual({
      name: 'CREMA_CONCURRENCY',
      value: '8',
    });
    const status = await helmCmd(['status', 'helmtest', '--namespace', ns, '-o', 'json']);
    expect((JSON.parse(status.stdout) as { version: number }).version).toBe(2);
  });
});
