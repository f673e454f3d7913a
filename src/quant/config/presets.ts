/**
 * Quantizer-spec presets, named by what they are (DESIGN.md): plain frozen `QuantizerSpec`
 * objects, combined with object spread (`{ ...int4Lsq, bits: 3 }`).
 *
 * Options used here (read by the quantizer kinds in `quant/quantizers`):
 * - `signed`: signed integers (weights) or unsigned (post-ReLU activations);
 * - `symmetric`: zero point 0 (signed symmetric uses the narrow range [−(2^(b−1)−1), 2^(b−1)−1]);
 * - `granularity`: 'tensor' | 'channel' (axis = the weight's output channel) | 'group' (+ `groupSize`);
 * - `observer` ('movingAverage' | 'minMax') / `momentum`: how a range-based ('ste', 'clippedSte')
 *   quantizer tracks activation ranges (the quantizer's default momentum applies here);
 * - `thresholdFactor`: TWN's ternary threshold Δ = factor·mean|w|.
 */
import type { QuantizerSpec } from '../quantizers/quantizer.ts';

function preset<S extends QuantizerSpec>(spec: S): Readonly<S> {
  return Object.freeze(spec);
}

// ------------------------------------------------------------------ uniform, range based (STE)
/** Weights: int8, one symmetric scale per output channel, min-max range, straight-through gradient. */
export const int8PerChannelSym = preset({ kind: 'ste', bits: 8, signed: true, symmetric: true, granularity: 'channel' });
/** Weights: int8, one symmetric scale for the tensor. */
export const int8PerTensorSym = preset({ kind: 'ste', bits: 8, signed: true, symmetric: true, granularity: 'tensor' });
/** Weights: int4 per output channel, symmetric narrow range [−7, 7]. */
export const int4PerChannelSym = preset({ kind: 'ste', bits: 4, signed: true, symmetric: true, granularity: 'channel' });
/** Weights: int2 per output channel, symmetric narrow range [−1, 1]. */
export const int2PerChannelSym = preset({ kind: 'ste', bits: 2, signed: true, symmetric: true, granularity: 'channel' });
/**
 * Activations that may be negative (the normalised input image, pre-activation features): int8
 * per tensor with a zero point, range tracked by an exponential moving average.
 */
export const int8PerTensorAffine = preset({
  kind: 'ste', bits: 8, signed: true, symmetric: false, granularity: 'tensor', observer: 'movingAverage',
});
/** Non-negative activations (after ReLU): uint8 per tensor, moving-average (EMA) min-max range. */
export const uint8Ema = preset({
  kind: 'ste', bits: 8, signed: false, symmetric: false, granularity: 'tensor', observer: 'movingAverage',
});
/** uint4 activations with an EMA range. */
export const uint4Ema = preset({ ...uint8Ema, bits: 4 });
/** uint2 activations with an EMA range. */
export const uint2Ema = preset({ ...uint8Ema, bits: 2 });

// ------------------------------------------------------------------ learned step size (LSQ, LSQ+)
/** Weights: signed int8 with a learned step (LSQ, Esser et al. 2020), per tensor. */
export const int8Lsq = preset({ kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'tensor' });
export const int4Lsq = preset({ ...int8Lsq, bits: 4 });
export const int2Lsq = preset({ ...int8Lsq, bits: 2 });
/** Activations: unsigned with a learned step (LSQ). */
export const uint8Lsq = preset({ kind: 'lsq', bits: 8, signed: false, symmetric: true, granularity: 'tensor' });
export const uint4Lsq = preset({ ...uint8Lsq, bits: 4 });
export const uint2Lsq = preset({ ...uint8Lsq, bits: 2 });
/** 1-bit activations {0, s} with a learned step: binary activations for ReLU networks. */
export const uint1Lsq = preset({ ...uint8Lsq, bits: 1 });
/** LSQ+ (Bhalgat et al. 2020): learned step and learned offset (asymmetric), here for weights. */
export const int4LsqPlus = preset({ kind: 'lsqPlus', bits: 4, signed: true, symmetric: false, granularity: 'tensor' });
/** LSQ+ for activations that may dip below zero (Swish, GELU). */
export const uint4LsqPlus = preset({ kind: 'lsqPlus', bits: 4, signed: false, symmetric: false, granularity: 'tensor' });

// ------------------------------------------------------------------ clipping / transform based
/** Activations: PACT (Choi et al. 2018), unsigned 4-bit with a learned clipping level α. */
export const pactUint4 = preset({ kind: 'pact', bits: 4, signed: false });
export const pactUint8 = preset({ ...pactUint4, bits: 8 });
export const pactUint2 = preset({ ...pactUint4, bits: 2 });
/** Weights: DoReFa (Zhou et al. 2016) tanh-normalised signed 4-bit. */
export const dorefaInt4 = preset({ kind: 'dorefa', bits: 4, signed: true });
/** Activations: DoReFa, clipped to [0, 1], unsigned 4-bit. */
export const dorefaUint4 = preset({ kind: 'dorefa', bits: 4, signed: false });
/** Weights: LQ-Nets (Zhang et al. 2018) learned non-uniform 2-bit basis, per output channel. */
export const lqnetInt2 = preset({ kind: 'lqnet', bits: 2, signed: true, granularity: 'channel' });
/** Activations: LQ-Nets learned 2-bit basis, unsigned. */
export const lqnetUint2 = preset({ kind: 'lqnet', bits: 2, signed: false, granularity: 'tensor' });
/** Weights: quantization noise injection (pseudo-quantization noise), signed 4-bit per channel. */
export const noiseInt4 = preset({ kind: 'noise', bits: 4, signed: true, symmetric: true, granularity: 'channel' });
/** Activations: noise injection, unsigned 4-bit. */
export const noiseUint4 = preset({ kind: 'noise', bits: 4, signed: false, symmetric: false, granularity: 'tensor' });

// ------------------------------------------------------------------ binary and ternary
/** sign(x) with sign(0) = +1, values {−α, +α}, one α for the tensor (XNOR-Net / BNN). */
export const binarySign = preset({ kind: 'binary', bits: 1, granularity: 'tensor' });
/** sign(x), one α per output channel (XNOR-Net weights). */
export const binarySignPerChannel = preset({ kind: 'binary', bits: 1, granularity: 'channel' });
/** IR-Net (Qin et al. 2020): balanced, standardised weights, EDE gradient, per-channel α. */
export const irnetBinary = preset({ kind: 'irnet', bits: 1, granularity: 'channel' });
/** Binary with a smooth (annealed tanh) surrogate gradient. */
export const smoothBinarySign = preset({ kind: 'smoothBinary', bits: 1, granularity: 'tensor' });
/** AdaSTE (Le et al. 2022): sign weights, per-channel α, adaptive straight-through gradient, the authors' defaults. */
export const adasteBinaryPerChannel = preset({ kind: 'adaste', bits: 1, granularity: 'channel' });
/** TWN (Li et al. 2016): values {−α, 0, +α}, threshold Δ = 0.7·mean|w|, per tensor. Stored in 2 bits. */
export const ternaryTwn = preset({ kind: 'ternary', bits: 2, granularity: 'tensor', thresholdFactor: 0.7 });
