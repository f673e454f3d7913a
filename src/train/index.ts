/** Training loop, evaluation, progress display and checkpoints. */
export {
  fit,
  TrainingDivergedError,
  evaluate,
  countCorrect,
  formatPercent,
  type Batch,
  type BatchSource,
  type TrainOptimizer,
  type EpochScheduler,
  type MetricScheduler,
  type LossFn,
  type EpochRecord,
  type History,
  type FitOptions,
  type EvaluateResult,
} from './fit.ts';
export { MONITORS, monitorValue, type Monitor, type EarlyStoppingOptions, type EarlyStoppingState } from './early-stopping.ts';
export { evaluatePerplexity, PerplexityMeter, type PerplexityResult } from './perplexity.ts';
export { ProgressBar, formatDuration, type ProgressBarOptions, type ProgressMetrics, type ProgressStream } from './progress.ts';
export {
  saveCheckpoint,
  loadCheckpoint,
  CheckpointError,
  CHECKPOINT_FORMAT,
  CHECKPOINT_VERSION,
  type CheckpointData,
  type LoadedCheckpoint,
  type StateTensors,
} from './checkpoint.ts';
export { preferThroughputGc } from './gc.ts';
export {
  LM_OBJECTIVES,
  isLmObjective,
  shiftedTargets,
  everyPositionBatches,
  everyPositionLoss,
  everyPositionCrossEntropy,
  EveryPositionObjective,
  type LmObjective,
  type AllPositionsModel,
} from './lm-objective.ts';
