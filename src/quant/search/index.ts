/** Mixed-precision search: layer descriptions, cost models, plans, evaluation, sensitivity, allocation. */
export type { BitAssignment, BitChoice, ConvInfo, CostModel, LayerInfo, LayerOption } from './types.ts';
export { describeLayers } from './layers.ts';
export {
  bitOpsCost, bitSerialCost, COST_MODEL_NAMES, costModel, DEFAULT_ENERGY_CONSTANTS, energyCost, layerChoiceCost, sizeCost, totalCost, uniformAssignment,
  type BitSerialOptions, type CostModelName, type CostModelOptions, type EnergyConstants,
} from './costs.ts';
export { latencyCost, latencyTablePath, measureLayerLatency, measureModelLatency, type LatencyCostOptions } from './latency.ts';
export {
  assignmentFromPlan, checkAssignment, loadPlanFile, planFromAssignment, savePlanFile, type PlanBase, type PlanFile,
} from './plan.ts';
export {
  evaluateAssignment, evaluateAssignmentSync, firstLayerName, quantizeAssignment,
  type AssignmentScore, type EvaluateAssignmentOptions, type SearchData,
} from './evaluate.ts';
export {
  channelQuantErrors, fisherInformation, hessianTrace, hessianVectorProduct, ptqPerturbation, quantizationErrors, quantizeWeight, rankCorrelation, ranks,
  type FisherOptions, type HessianTraceOptions, type LayerSensitivity, type PtqPerturbation, type RankCorrelation, type WeightQuantOptions,
} from './sensitivity.ts';
export { allocateExact, allocatePerChannel, layerOptions, paretoFront, type Allocation, type LayerChoices, type PerChannelOptions } from './allocate.ts';
