/** lowbit: train, search and deploy low-bit neural networks in TypeScript. */
export * from './tensor/index.ts';
export * from './autograd/index.ts';
export { availableBackends, getBackend, setBackend, profileOps, type OpProfile, nativeInfo, setNativeThreads, nativeUnavailableReason, setWasmThreads, wasmThreadsInfo, type WasmThreadsInfo, type BackendName, type DType } from './backend/index.ts';
export * as nn from './nn/index.ts';
export * as optim from './optim/index.ts';
export * as lowp from './lowp/index.ts';
export * as data from './data/index.ts';
// Also at the top level, as in the browser entry (src/browser.ts): one import works in both.
export { DataLoader, type DataLoaderOptions } from './data/loader.ts';
export { createDataset, type Dataset } from './data/dataset.ts';
export * from './train/index.ts';
export * as format from './format/index.ts';
export * as quant from './quant/index.ts';
export * as runtime from './runtime/index.ts';
export * as onnx from './onnx/index.ts';
export * as distributed from './distributed/node.ts';
export * as attacks from './eval/index.ts';
