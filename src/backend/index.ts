/**
 * Backend selection. The reference backend is always there; the native addon, when it builds
 * and loads, becomes the default. `LOWBIT_BACKEND=reference|native` forces one.
 */
import './reference/index.ts';

export { availableBackends, getBackend, setBackend, type BackendName } from './registry.ts';
export type { DType, RawTensor, TypedArray, PrimitiveName } from './primitives.ts';
