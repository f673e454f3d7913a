/** Spatio-temporal sparse LSTM (Spartus): DeltaLSTM, column-balanced targeted dropout, balanced sparse storage and the delta inference engine. */
export { DeltaLSTM, type DeltaLSTMOptions, type DeltaCounts, type WeightTransform } from './delta-lstm.ts';
export { ColumnBalancedTargetedDropout, type CbtdOptions } from './cbtd.ts';
export {
  type BalancedSparseMatrix, balancedTopKMask, packBalanced, unpackBalanced, balancedBytes, accumulateColumn, checkBlockLayout,
} from './balanced.ts';
export { DeltaLstmEngine, type DeltaRunCounts, type DeltaRunResult, type EngineOptions } from './engine.ts';
