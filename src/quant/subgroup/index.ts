export { SUBGROUP_BITS, SCALE_BYTES, qmaxOf, subgroupBytes, validateChoices, type SubgroupBits } from './choices.ts';
export { SubgroupLinear, type SubgroupCodes, type SubgroupLinearOptions, type SubgroupMode } from './linear.ts';
export { SubgroupAttention, causalMask, type SubgroupAttentionOptions } from './attention.ts';
export { TinyTransformerLm, TransformerBlock, type SearchableOptions, type TinyTransformerOptions } from './transformer.ts';
export {
  applyPlan,
  derivePlan,
  expectedModelBytes,
  packSubgroupModel,
  planBytes,
  planScaleBytes,
  subgroupLayers,
  uniformPlan,
  type DerivePlanOptions,
  type PackedSubgroup,
  type PackedSubgroupModel,
  type SubgroupLayerPlan,
  type SubgroupPlan,
} from './plan.ts';
export { searchSubgroups, type SubgroupSearchOptions, type SubgroupSearchResult, type SubgroupSearchStep } from './search.ts';
