/**
 * The label and annotation keys the parts of Crema share on Kubernetes objects: the operator
 * sets and selects on them, training writes some on the resources it generates, users set the
 * command annotations, SREs select on the labels (`kubectl get pods -l crema.dev/model=drinks`).
 * Lineage annotations are in lineage.ts.
 */

/** On every object the operator owns; its informers select on it. */
export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'crema-operator' } as const;
/** The RecommenderModel a child object belongs to. */
export const MODEL_LABEL = 'crema.dev/model';
/** Which track a pod serves: stable, canary or router. */
export const TRACK_LABEL = 'crema.dev/track';
/** What a generated RecommenderModel predicts (feature-jobs' training output). */
export const TASK_LABEL = 'crema.dev/task';
/** On ConfigMaps that hold Prometheus rule files (`rules.yaml`). */
export const RULES_LABEL = 'crema.dev/prometheus-rules';
/** Pod template annotation: the model digest the pods serve (a new one rolls the Deployment). */
export const MODEL_SHA_ANNOTATION = 'crema.dev/model-sha256';
/** User command on a RecommenderModel: `step` leaves the current step, `full` promotes now. */
export const PROMOTE_ANNOTATION = 'crema.dev/promote';
/** User command on a RecommenderModel: `true` rolls the canary back now. */
export const ABORT_ANNOTATION = 'crema.dev/abort';
/** User command on an Experiment: `true` concludes it now (with the winner so far, if any). */
export const CONCLUDE_ANNOTATION = 'crema.dev/conclude';
/** User command on an Experiment: `true` stops it now (no winner, traffic back to the control). */
export const STOP_ANNOTATION = 'crema.dev/stop';
/** The Experiment a child object belongs to. */
export const EXPERIMENT_LABEL = 'crema.dev/experiment';
