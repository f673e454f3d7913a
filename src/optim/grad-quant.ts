/**
 * Quantized parameter gradients, as in QNN (Hubara et al. 2016, "Quantized Neural Networks:
 * Training Neural Networks with Low Precision Weights and Activations": "we quantize the parameter
 * gradients to 6 bits as well"): before the optimizer step, every parameter gradient is replaced
 * by a k-bit one with a per-tensor scale and unbiased stochastic rounding.
 */
import type { TypedArray } from '../backend/primitives.ts';
import { Rng } from '../tensor/random.ts';
import type { Tensor } from '../tensor/index.ts';

/** Bit widths `quantizeGradientInPlace` accepts. */
export const MIN_GRADIENT_BITS = 2;
export const MAX_GRADIENT_BITS = 16;

function checkBits(bits: number, where: string): number {
  if (!Number.isInteger(bits) || bits < MIN_GRADIENT_BITS || bits > MAX_GRADIENT_BITS) {
    throw new RangeError(`${where}: bits must be an integer in [${MIN_GRADIENT_BITS}, ${MAX_GRADIENT_BITS}], got ${String(bits)}`);
  }
  return bits;
}

/**
 * Quantizes `g` in place to k bits: s = max|g| / (2^(k−1) − 1), g ← s·q with
 * q = floor(g/s) + [u < g/s − floor(g/s)], u ~ U[0, 1) from `rng` (stochastic rounding), so
 * q ∈ {−(2^(k−1) − 1), …, 2^(k−1) − 1}: at most 2^k − 1 levels, symmetric, zero included, and
 * E[s·q] = g exactly (g/s never leaves the range, so nothing is clipped). The error of one element
 * is below s. An all-zero (or empty) gradient is left as it is. Returns s (0 when max|g| = 0);
 * a NaN or infinite entry throws.
 */
export function quantizeGradientInPlace(g: TypedArray, bits: number, rng: Rng): number {
  checkBits(bits, 'quantizeGradientInPlace');
  let max = 0;
  for (let i = 0; i < g.length; i++) {
    const a = Math.abs(g[i]!);
    if (!Number.isFinite(a)) throw new RangeError(`quantizeGradientInPlace: gradient entry ${i} is ${g[i]}`);
    if (a > max) max = a;
  }
  if (max === 0) return 0;
  const qmax = 2 ** (bits - 1) - 1;
  const scale = max / qmax;
  const inverse = qmax / max;
  for (let i = 0; i < g.length; i++) {
    const x = g[i]! * inverse;
    const low = Math.floor(x);
    let q = rng.uniform() < x - low ? low + 1 : low;
    if (q > qmax) q = qmax;
    else if (q < -qmax) q = -qmax;
    g[i] = q * scale;
  }
  return scale;
}

/** The optimizer calls `withQuantizedGradients` wraps (every lowbit optimizer has them). */
export interface SteppableOptimizer {
  step(): void;
  zeroGrad(): void;
  readonly paramGroups: readonly { readonly params: readonly Tensor[]; lr: number }[];
  readonly lr?: number;
  stateDict?(): unknown;
}

export interface QuantizedGradientOptions {
  /** Gradient bit width k, in [2, 16] (default 6, QNN's). */
  readonly bits?: number;
  /** Seed of the stochastic rounding (default 0). */
  readonly seed?: number;
  /** Which parameters get quantized gradients (default: every parameter with a gradient). */
  readonly filter?: (param: Tensor) => boolean;
}

/**
 * An optimizer whose `step()` first quantizes every parameter gradient to `bits` bits
 * (`quantizeGradientInPlace`, one scale per tensor, its own seeded stream of rounding draws),
 * then runs the wrapped optimizer's step. Everything else (zeroGrad, lr, paramGroups, stateDict)
 * is the wrapped optimizer's; schedulers and loss scalers keep working on either.
 */
export class QuantizedGradientOptimizer<O extends SteppableOptimizer> {
  readonly bits: number;
  readonly rng: Rng;
  private readonly filter: (param: Tensor) => boolean;

  constructor(readonly inner: O, options: QuantizedGradientOptions = {}) {
    this.bits = checkBits(options.bits ?? 6, 'withQuantizedGradients');
    const seed = options.seed ?? 0;
    if (!Number.isInteger(seed) || seed < 0) throw new RangeError(`withQuantizedGradients: seed must be a non-negative integer, got ${String(seed)}`);
    this.rng = new Rng(seed);
    this.filter = options.filter ?? (() => true);
  }

  /** Quantizes the gradients (see `quantizeGradientInPlace`), then steps the wrapped optimizer. */
  step(): void {
    for (const group of this.inner.paramGroups) {
      for (const p of group.params) {
        if (p.grad && this.filter(p)) quantizeGradientInPlace(p.grad.data, this.bits, this.rng);
      }
    }
    this.inner.step();
  }

  zeroGrad(): void {
    this.inner.zeroGrad();
  }

  get lr(): number | undefined {
    return this.inner.lr;
  }

  get paramGroups(): O['paramGroups'] {
    return this.inner.paramGroups;
  }

  stateDict(): unknown {
    return this.inner.stateDict?.();
  }
}

/** `optimizer` with k-bit stochastically rounded parameter gradients (QNN); see QuantizedGradientOptimizer. */
export function withQuantizedGradients<O extends SteppableOptimizer>(optimizer: O, options: QuantizedGradientOptions = {}): QuantizedGradientOptimizer<O> {
  return new QuantizedGradientOptimizer(optimizer, options);
}
