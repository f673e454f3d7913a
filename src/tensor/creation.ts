import type { DType } from '../backend/primitives.ts';
import { sizeOf, typedArrayFor } from '../backend/primitives.ts';
import { globalRng, type Rng } from './random.ts';
import { Tensor } from './tensor.ts';

export interface RandomOptions {
  dtype?: DType;
  /** Generator to draw from (default: the global one seeded by `manualSeed`). */
  rng?: Rng;
}

/** Standard normal samples (times `std`, plus `mean`). */
export function randn(shape: readonly number[], options: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  const rng = options.rng ?? globalRng;
  const data = typedArrayFor(options.dtype ?? 'float32', sizeOf(shape));
  const mean = options.mean ?? 0;
  const std = options.std ?? 1;
  for (let i = 0; i < data.length; i++) data[i] = mean + std * rng.normal();
  return new Tensor(data, shape);
}

/** Uniform samples in [low, high). */
export function rand(shape: readonly number[], options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  const rng = options.rng ?? globalRng;
  const data = typedArrayFor(options.dtype ?? 'float32', sizeOf(shape));
  const low = options.low ?? 0;
  const high = options.high ?? 1;
  for (let i = 0; i < data.length; i++) data[i] = low + (high - low) * rng.uniform();
  return new Tensor(data, shape);
}

/** Uniform int32 samples in [0, high). */
export function randint(high: number, shape: readonly number[], options: { rng?: Rng } = {}): Tensor {
  const rng = options.rng ?? globalRng;
  const data = new Int32Array(sizeOf(shape));
  for (let i = 0; i < data.length; i++) data[i] = rng.int(high);
  return new Tensor(data, shape);
}
