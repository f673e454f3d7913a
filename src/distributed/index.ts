/** Data-parallel training: communicators with byte accounting, dense and DGC gradient exchange. */
export { InProcessCommunicator, CommunicatorError, sparseMessageBytes, type Communicator, type SparseMessage, type TrafficStats } from './communicator.ts';
export { selectTopK, type TopKResult, type TopKSampling } from './topk.ts';
export { DGC_WARMUP_SPARSITIES, DgcTensorState, dgcSendCount, dgcSparsityAt, resolveDgcOptions, type DgcOptions, type ResolvedDgcOptions } from './dgc.ts';
export { COMPRESSOR_NAMES, DataParallel, shardRows, type CompressorName, type DataParallelOptions, type DataParallelStep, type ShardStepResult } from './data-parallel.ts';
export { fitDataParallel, formatBytes, type DataParallelEpochRecord, type DataParallelHistory, type FitDataParallelOptions, type TrafficSummary } from './fit-data-parallel.ts';
export { SharedMemoryCommunicator, allocateCommunicatorMemory, abortCommunicatorMemory, type SharedCommunicatorMemory } from './shared-communicator.ts';
