/** The Experiment types the controller uses, generated from crds/ (see operator/src/api). */
export type {
  Experiment,
  ExperimentSpec,
  ExperimentStatus,
  ExperimentStatusVariant,
  ExperimentStatusCondition as Condition,
} from '../../api/v1alpha1/index.js';
export type { RecommenderModel } from '../recommendermodel/types.js';
