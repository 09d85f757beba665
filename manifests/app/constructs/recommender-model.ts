/** One RecommenderModel, as training wrote it (manifests/models), placed in the GitOps namespace. */
import { ApiObject } from 'cdk8s';
import type { Construct } from 'constructs';
import {
  recommenderModelResource,
  type RecommenderModel,
} from '../../../operator/src/api/v1alpha1/recommendermodel.js';
import { check, checkName } from './invariant.js';

export interface CremaRecommenderModelProps {
  /** The resource training wrote; its namespace, if any, is replaced by the chart's. */
  readonly model: RecommenderModel;
}

/** A RecommenderModel whose name, digest and task are checked at synth time. */
export class CremaRecommenderModel extends ApiObject {
  /** metadata.name, for StoreRegions and Experiments that refer to it. */
  readonly modelName: string;
  /** spec.model.task. */
  readonly task: string;

  constructor(scope: Construct, id: string, props: CremaRecommenderModelProps) {
    const path = `${scope.node.path}/${id}`;
    const { model } = props;
    check(
      model.kind === recommenderModelResource.kind,
      path,
      'kind',
      `is ${model.kind}, not RecommenderModel`,
    );
    const name = model.metadata?.name ?? '';
    checkName(name, path);
    check(
      /^[0-9a-f]{64}$/.test(model.spec?.model?.sha256 ?? ''),
      path,
      'spec.model.sha256',
      'is not 64 hex digits',
    );
    const { namespace: _ignored, ...metadata } = model.metadata ?? {};
    super(scope, id, {
      apiVersion: recommenderModelResource.apiVersion,
      kind: recommenderModelResource.kind,
      metadata: { ...metadata, name },
      spec: model.spec,
    });
    this.modelName = name;
    this.task = model.spec.model.task;
  }
}
