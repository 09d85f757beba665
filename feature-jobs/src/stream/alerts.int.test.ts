/**
 * The shipped event-path alert rules: a real kube-apiserver accepts the ConfigMap, and promtool
 * (Prometheus's own rule checker and unit-test runner) shows the alert fires when serving
 * refuses events because the stream is full, and stays quiet otherwise.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { RULES_LABEL } from '../../../contracts/kube-keys.js';
import { EVENT_REFUSAL_REASONS, SERVING_METRICS } from '../../../contracts/metrics.js';
import { ensureDebianPackages } from '../../../hack/testenv/debian.js';

const FILE = 'manifests/monitoring/events-alerts.yaml';
const dir = mkdtempSync(join(tmpdir(), 'crema-alerts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('event path alert rules', () => {
  const cm = parse(readFileSync(FILE, 'utf8'));
  const rules = cm.data['rules.yaml'] as string;

  it('select on the metric and reason serving counts refusals with', () => {
    expect(cm.metadata.labels[RULES_LABEL]).toBe('true');
    const [rule] = parse(rules).groups[0].rules;
    expect(rule.expr).toContain(
      `${SERVING_METRICS.eventsRefused.name}{reason="${EVENT_REFUSAL_REASONS.streamFull}"}`,
    );
  });

  it('are accepted by the API server', () => {
    const kubeconfig = inject('kubeconfigPath');
    try {
      execFileSync('kubectl', ['--kubeconfig', kubeconfig, 'create', 'namespace', 'crema'], {
        stdio: 'pipe',
      });
    } catch (err) {
      if (!String((err as { stderr?: Buffer }).stderr).includes('AlreadyExists')) throw err;
    }
    const out = execFileSync(
      'kubectl',
      ['--kubeconfig', kubeconfig, 'apply', '--dry-run=server', '-f', FILE, '-o', 'json'],
      {
        encoding: 'utf8',
      },
    );
    expect(JSON.parse(out).data['rules.yaml']).toBe(rules);
  });

  it('fire when serving refuses events, and not while it accepts them', async () => {
    await ensureDebianPackages([{ command: 'promtool', pkg: 'prometheus' }], () => undefined, 'promtool');
    writeFileSync(join(dir, 'rules.yaml'), rules);
    const rule = parse(rules).groups[0].rules[0];
    const refused = `${SERVING_METRICS.eventsRefused.name}{model="drinks",namespace="shop",revision="abc",reason="${EVENT_REFUSAL_REASONS.streamFull}"}`;
    writeFileSync(
      join(dir, 'test.yaml'),
      stringify({
        rule_files: ['rules.yaml'],
        evaluation_interval: '1m',
        tests: [
          {
            interval: '1m',
            // Minute by minute: nothing refused for 10 minutes, then 150 refusals, then none.
            input_series: [{ series: refused, values: '0x10 40 90 150x12' }],
            alert_rule_test: [
              // Before any refusal: quiet.
              { eval_time: '10m', alertname: 'CremaEventsRefused', exp_alerts: [] },
              {
                eval_time: '13m',
                alertname: 'CremaEventsRefused',
                exp_alerts: [
                  {
                    exp_labels: { severity: 'critical', namespace: 'shop', model: 'drinks' },
                    exp_annotations: {
                      summary: 'Serving shop/drinks refuses app events: the events stream is full',
                      description: rule.annotations.description,
                    },
                  },
                ],
              },
              // Five minutes after the last refusal: resolved.
              { eval_time: '19m', alertname: 'CremaEventsRefused', exp_alerts: [] },
            ],
          },
        ],
      }),
    );
    expect(
      execFileSync('promtool', ['check', 'rules', join(dir, 'rules.yaml')], { encoding: 'utf8' }),
    ).toContain('SUCCESS: 1 rules found');
    execFileSync('promtool', ['test', 'rules', join(dir, 'test.yaml')], { encoding: 'utf8', stdio: 'pipe' });
  });
});
