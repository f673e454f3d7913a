/** Mixed-precision search: layer descriptions, cost models, plans, evaluation, sensitivity, allocation. */
export type { BitAssignment, BitChoice, ConvInfo, CostModel, LayerInfo, LayerOption, SearchLayerType } from './types.ts';
export { describeLayers } from './layers.ts';
export {
  bitOpsCost, bitSerialCost, COST_MODEL_NAMES, costModel, DEFAULT_ENERGY_CONSTANTS, energyCost, layerChoiceCost, sizeCost, totalCost, uniformAssignment,
  type BitSerialOptions, type CostModelName, type CostModelOptions, type EnergyConstants,
} from './costs.ts';
export {
  DEFAULT_SILAGO_ENERGY_PER_CYCLE, SILAGO_MODES, siLagoCost, siLagoEnergyCost, siLagoLanes, siLagoMode, type SiLagoMode, type SiLagoOptions,
} from './costs.ts';
export {
  latencyCost, latencyTablePath, measureAssignmentDelta, measureAssignmentLatency, measureLayerLatency, measureModelLatency, measureModelsInterleaved, modelFingerprint, type LatencyContext, type LatencyCostOptions,
} from './latency.ts';
export {
  assignmentFromPlan, checkAssignment, loadPlanFile, planFromAssignment, savePlanFile, type PlanBase, type PlanFile,
} from './plan.ts';
export {
  evaluateAssignment, evaluateAssignmentSync, firstLayerName, quantizeAssignment,
  type AssignmentScore, type EvaluateAssignmentOptions, type SearchData,
} from './evaluate.ts';
export {
  activationPerturbation, channelQuantErrors, fisherInformation, hessianTrace, hessianVectorProduct, ptqPerturbation, quantizationErrors, quantizeWeight, rankCorrelation, ranks,
  type ActivationPerturbation, type ActivationPerturbationOptions, type FisherOptions, type HessianTraceOptions, type LayerSensitivity, type PtqPerturbation, type RankCorrelation, type WeightQuantOptions,
} from './sensitivity.ts';
export {
  allocateExact, allocateExactMulti, NoAllocationFitsError, allocatePerChannel, layerOptions, layerOptionsMulti, paretoFront,
  type Allocation, type LayerChoices, type MultiCostAllocation, type MultiCostLayerChoices, type MultiCostOption, type PerChannelOptions,
} from './allocate.ts';
export {
  allocateMeasured, channelPruneScores, keptChannels, prunableLayers, pruneChoice, pruneLayerOptions, prunePerturbation, recoveredReference,
  type MeasuredAllocation, type PruneOptionsConfig, type PruneRecovery,
} from './prune.ts';
export {
  crowdingDistance, dominates, fastNonDominatedSort, nonDominated, nsga2,
  type Genome, type Individual, type Nsga2Options, type Nsga2Result, type Nsga2State, type Objectives,
} from './nsga2.ts';
export { BeaconSet, beaconHooks, rmsDistance, type Beacon, type BeaconSearchOptions, type BeaconSetOptions } from './beacons.ts';
export {
  assignmentCosts, bestWithinBudget, bitChoices, candidateFront, chooseWithinBudget, nsga2Search, rankByRetraining, retrainAssignment,
  type BeaconOptions, type BitSpaceOptions, type Nsga2SearchOptions, type Nsga2SearchResult, type RankByRetrainingOptions, type SearchCandidate,
} from './mohaq.ts';
export { repairToBudget, SDQ_KIND, SdqQuantizer, sdqSearch, type SdqOptions, type SdqResult } from './sdq.ts';
export {
  actionToChoice, DdpgAgent, forceToBudget, haq, haqSearch, HaqActor, HaqCritic, layerFeatures, normalizeFeatures, ReplayBuffer, softUpdate, truncatedNormal,
  type DdpgOptions, type DdpgUpdate, type HaqBudget, type HaqDecision, type HaqEnvironment, type HaqEpisode, type HaqOptions, type HaqResult, type HaqSearchOptions, type HaqSearchResult, type Transition,
} from './haq.ts';
export {
  assignmentToPath, buildSupernet, evolutionarySearch, pathCardinalities, pathToAssignment, recalibrateBatchNorm, samplePath, scoreBetter, searchSupernet, SPOS_KIND, SposQuantizer, sposSearch, trainSupernet,
  type EvolutionOptions, type EvolutionResult, type SposBudget, type SposEvolveOptions, type SposEvolveResult, type SposSearchOptions, type SposSearchResult, type SposSpace, type Supernet, type SupernetOptions, type SupernetTrainOptions,
} from './spos.ts';
export { BudgetError, costDisplay, parseBudget, type Budget, type CostDisplay } from './budget.ts';
export { buildSearchReport, exactSearch, outcomeJson, writeSearchOutputs, type ExactSearchOptions, type ExactSearchResult, type SearchOutcome } from './outcome.ts';
export {
  calibrateLm, describeLmLayers, exactErrorSearch, isSearchableLm, lmPtqEvaluator, lmQatPlan, lmScore, nsga2ErrorSearch, perplexityOfScore, prepareLmAssignment,
  type ErrorSearchOptions, type ErrorSearchResult, type LmQuantKind, type LmScore, type LmSearchData, type SearchableLm,
} from './lm.ts';
export {
  ACCURACY_METRIC, PERPLEXITY_METRIC, type ReportMetric,
  formatSi, paretoSvg, renderReportHtml, writeSearchReport,
  type ParetoSvgOptions, type PointKind, type ReportCost, type ReportLayer, type ReportPoint, type SearchReport,
} from './report.ts';
