/** One Experiment, checked at synth time against the models the same app renders. */
import { ApiObject } from 'cdk8s';
import type { Construct } from 'constructs';
import { experimentResource, type Experiment } from '../../../operator/src/api/v1alpha1/experiment.js';
import { check, checkName } from './invariant.js';

export interface CremaExperimentProps {
  /** The resource as written (manifests/examples); its namespace is replaced by the chart's. */
  readonly experiment: Experiment;
  /**
   * Names of the RecommenderModels rendered next to it. When given, a variant naming another
   * model fails the synth (the operator would only raise a condition after the commit).
   */
  readonly knownModels?: ReadonlySet<string>;
}

/** An Experiment whose variants (unique names, weights summing to 100, known models) are checked. */
export class CremaExperiment extends ApiObject {
  constructor(scope: Construct, id: string, props: CremaExperimentProps) {
    const path = `${scope.node.path}/${id}`;
    const { experiment } = props;
    check(experiment.kind === experimentResource.kind, path, 'kind', `is ${experiment.kind}, not Experiment`);
    const name = experiment.metadata?.name ?? '';
    checkName(name, path);
    const variants = experiment.spec?.variants ?? [];
    const total = variants.reduce((s, v) => s + v.weight, 0);
    check(total === 100, path, 'spec.variants[*].weight', `sum to ${total}, not 100`);
    variants.forEach((v, i) => {
      check(
        variants.findIndex((w) => w.name === v.name) === i,
        path,
        `spec.variants[${i}].name`,
        `${JSON.stringify(v.name)} is used twice`,
      );
      if (props.knownModels)
        check(
          props.knownModels.has(v.modelRef),
          path,
          `spec.variants[${i}].modelRef`,
          `names ${JSON.stringify(v.modelRef)}, which this app does not render (known: ${[...props.knownModels].join(', ')})`,
        );
    });
    const { namespace: _ignored, ...metadata } = experiment.metadata ?? {};
    super(scope, id, {
      apiVersion: experimentResource.apiVersion,
      kind: experimentResource.kind,
      metadata: { ...metadata, name },
      spec: experiment.spec,
    });
  }
}
