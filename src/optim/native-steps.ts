/**
 * The native addon's optimizer steps (native/optim.cc): used while the native backend is active
 * and every array is a Float32Array. They compute each element in double precision with the same
 * operations as the TypeScript loops, so the weights are bit-identical either way (tested); the
 * TypeScript loops cost ~3 ns per parameter, the addon well under 1.
 */
import { getBackend } from '../backend/registry.ts';
import { nativeAddon } from '../backend/native/index.ts';
import type { NativeAddon } from '../backend/native/addon.ts';
import type { TypedArray } from '../backend/primitives.ts';

/** The addon when the native backend is active, else null (the reference backend keeps the TS loops). */
export function nativeSteps(...arrays: (TypedArray | null)[]): NativeAddon | null {
  if (getBackend() !== 'native' || !arrays.every((a) => a === null || a instanceof Float32Array)) return null;
  return nativeAddon();
}
