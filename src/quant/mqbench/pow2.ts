/**
 * Power-of-two-scale quantizer kinds for the shift-only backends of the MQBench profiles (TVM,
 * Vitis, NNIE-like: requantization by a bit shift). Importing this module registers them:
 *
 * - `stePow2`: min-max range (the 'ste' kind's observers) whose scale is rounded UP to a power of
 *   two, s = 2^⌈log2(s_minmax)⌉, so the observed range stays representable; gradient: the clipped
 *   straight-through estimator (1 inside the grid, 0 outside), as 'clippedSte'.
 * - `lsqPow2`: LSQ (learned step) whose forward uses s = 2^round(log2(step)) (round half to even);
 *   the step's gradient is LSQ's gradient evaluated at that power of two and passed straight
 *   through the rounding (∂s/∂step := 1).
 *
 * Both are symmetric only (zero point 0): an asymmetric power-of-two grid would need its zero
 * point recomputed after the rounding, which no shift-only backend modelled here asks for.
 */
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { zerosLike } from '../../tensor/ops.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { fakeQuantize } from '../core/quantize.ts';
import { ceilPowerOfTwo, type QParams } from '../core/qparams.ts';
import '../quantizers/index.ts';
import { quantizerKinds, registerQuantizer, type QuantizerContext, type QuantizerSpec } from '../quantizers/quantizer.ts';
import { SteQuantizer } from '../quantizers/ste.ts';
import { LsqQuantizer } from '../quantizers/lsq.ts';
import { constant, paramFor, straightThrough } from '../quantizers/common.ts';

/** The registered kind names. */
export const POW2_KINDS = ['stePow2', 'lsqPow2'] as const;

const MIN_STEP = 1e-8;

/** 2^round(log2(s)), with ties of the exponent to even (s > 0). */
export function roundPowerOfTwo(s: number): number {
  return 2 ** roundHalfEven(Math.log2(Math.max(s, MIN_STEP)));
}

function checkSymmetric(spec: QuantizerSpec, context: QuantizerContext): void {
  const symmetricDefault = context.role === 'weight';
  const symmetric = spec['symmetric'] ?? symmetricDefault;
  if (symmetric !== true) throw new Error(`quantizer '${spec.kind}': power-of-two scales are symmetric only (zero point 0); set symmetric: true`);
}

/** Min-max STE quantizer with scales rounded up to powers of two (see the module comment). */
export class StePow2Quantizer extends SteQuantizer {
  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    checkSymmetric(spec, context);
    super(spec, context);
  }

  /** The min-max parameters with every scale replaced by 2^⌈log2 s⌉ (z stays 0). */
  override qparams(): QParams {
    const qp = super.qparams();
    return { ...qp, scale: Float32Array.from(qp.scale, (s) => ceilPowerOfTwo(s)) };
  }
}

/** LSQ with power-of-two steps in the forward (see the module comment). */
export class LsqPow2Quantizer extends LsqQuantizer {
  constructor(spec: QuantizerSpec, context: QuantizerContext) {
    checkSymmetric(spec, context);
    super(spec, context);
  }

  protected override quantize(x: Tensor): Tensor {
    if (this.initialized.data[0] === 0) this.initializeFrom(x.detach());
    const learned = paramFor(this.step, x, this.format.axis);
    const pot = constant(Array.from(this.step.data, (s) => roundPowerOfTwo(s)), learned.shape, learned.dtype);
    // Value: exactly the powers of two; gradient: that of the learned step (straight through the rounding).
    const scale = straightThrough(pot, learned);
    return fakeQuantize(x, { scale, zeroPoint: zerosLike(scale), qmin: this.qmin, qmax: this.qmax }, { gradient: 'clipped', scaleGradFactor: this.gradScale(x) });
  }

  override qparams(): QParams {
    const qp = super.qparams();
    return { ...qp, scale: Float32Array.from(this.step.data, (s) => roundPowerOfTwo(s)) };
  }
}

if (!quantizerKinds().includes('stePow2')) registerQuantizer('stePow2', (spec, context) => new StePow2Quantizer(spec, context));
if (!quantizerKinds().includes('lsqPow2')) registerQuantizer('lsqPow2', (spec, context) => new LsqPow2Quantizer(spec, context));
