/** The RecommenderModel types the controller uses, generated from crds/ (see operator/src/api). */
export type {
  RecommenderModel,
  RecommenderModelSpec,
  RecommenderModelStatus,
  RecommenderModelStatusCondition as Condition,
} from '../../api/v1alpha1/index.js';
