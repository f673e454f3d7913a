/** lowbit: train, search and deploy low-bit neural networks in TypeScript. */
export * from './tensor/index.ts';
export * from './autograd/index.ts';
export { availableBackends, getBackend, setBackend, type BackendName, type DType } from './backend/index.ts';
