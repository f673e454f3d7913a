/**
 * The Bi-Real quantization plan (docs/binary.md): the 3×3 block convs binary — sign inputs with
 * Bi-Real's approxSign gradient, ±α per-channel weights with the magnitude-aware gradient — and
 * the stem and fc 8-bit on signed inputs (the residual stream has no ReLU); the real-valued
 * downsampling 1×1 convs 8-bit too, or binary for the 'projection' shortcut of the baseline layouts.
 */
import type { BiRealResNet } from '../../nn/index.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import type { QuantPlan } from './plan.ts';
import { int8PerChannelSym, int8PerTensorAffine } from './presets.ts';
import type { QConfig } from './qconfig.ts';

/** sign(x) ∈ {−1, +1} with Bi-Real's piecewise-quadratic gradient max(0, 2 − 2|x|). */
export const signApprox: QuantizerSpec = { kind: 'binary', bits: 1, granularity: 'tensor', gradient: 'approxSign' };
/** α_c·sign(w), α_c = mean|w_c|, gradient α_c·1{|w| ≤ 1} (magnitude-aware). */
export const binaryMagnitudeAware: QuantizerSpec = { kind: 'binary', bits: 1, granularity: 'channel', magnitudeAware: true };
/** 8-bit layer on a signed input. */
export const int8Signed: QConfig = { weight: int8PerChannelSym, activation: int8PerTensorAffine };

/**
 * The plan of a BiRealResNet: binary block convs; 8-bit stem and fc, and 8-bit downsampling convs
 * when `realDownsample` (default true; false leaves them binary).
 */
export function biRealPlan(model: BiRealResNet, options: { realDownsample?: boolean } = {}): QuantPlan {
  const overrides = [{ match: 'fc', config: int8Signed }];
  if (options.realDownsample ?? true) for (const name of model.downsampleConvNames()) overrides.push({ match: name, config: int8Signed });
  return { default: { weight: binaryMagnitudeAware, activation: signApprox }, overrides, keepFirstLast8bit: true };
}
