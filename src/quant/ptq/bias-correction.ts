/**
 * Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight
 * Equalization and Bias Correction", §4.2; Banner et al. 2019, "Post training 4-bit quantization
 * of convolutional networks for rapid-deployment", §4): quantizing a weight shifts the expected
 * pre-activation of each output channel c by
 *   δ_c = E[(W_q x − W x)_c] = E[((W_q − W) x)_c],
 * the expectation over calibration samples (and spatial positions for a conv), with x the layer
 * input as the quantized model computes it. The correction subtracts δ from the layer's bias
 * (for a QuantConvBn2d from the BatchNorm's β, which the folded bias contains with weight 1).
 * Layers are corrected in definition order, each measured on inputs produced by the already
 * corrected layers before it. A layer without a bias (and without an affine BN) is skipped.
 */
import { noGrad } from '../../autograd/engine.ts';
import type { Module } from '../../nn/module.ts';
import { sub } from '../../tensor/ops.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { QuantConvBn2d, type QuantLayer } from '../qat/layers.ts';
import { quantizedLayers } from '../qat/prepare.ts';
import { captureLayerInputs, layerOp } from './layer-io.ts';

export interface BiasCorrectionResult {
  readonly layer: string;
  /** True when δ was subtracted (false: the layer has no bias to correct, or a float weight). */
  readonly corrected: boolean;
  /** δ per output channel. */
  readonly shift: Float64Array;
  /** mean_c |δ_c|. */
  readonly meanAbsShift: number;
}

/** The expected output shift δ of `layer` over `inputs` (already quantized layer inputs). */
export function expectedOutputShift(layer: QuantLayer, inputs: readonly Tensor[], floatWeight?: Tensor): Float64Array {
  const exported = layer.exportLayer();
  const delta = noGrad(() => sub(exported.weightFakeQuant, floatWeight ?? exported.weightFloat));
  const channels = delta.shape[0]!;
  const sums = new Float64Array(channels);
  let count = 0;
  noGrad(() => {
    for (const x of inputs) {
      const y = layerOp(exported.geometry, x, delta);
      // y is [N, C] (linear), [N, C, L] (conv1d) or [N, C, H, W] (conv): sum per channel.
      const inner = y.shape.slice(2).reduce((p, d) => p * d, 1);
      const n = y.shape[0]!;
      for (let b = 0; b < n; b++) {
        for (let c = 0; c < channels; c++) {
          const base = (b * channels + c) * inner;
          let s = 0;
          for (let k = 0; k < inner; k++) s += y.data[base + k]!;
          sums[c]! += s;
        }
      }
      count += n * inner;
    }
  });
  for (let c = 0; c < channels; c++) sums[c] = count > 0 ? sums[c]! / count : 0;
  return sums;
}

/** Subtracts δ from the bias the layer computes with; false when it has none. */
function subtractFromBias(layer: QuantLayer, shift: Float64Array): boolean {
  let bias: Tensor | null = layer.bias;
  if (layer instanceof QuantConvBn2d) bias = layer.bn.bias ?? null;
  if (!bias) return false;
  for (let c = 0; c < shift.length; c++) bias.data[c] = bias.data[c]! - shift[c]!;
  return true;
}

/**
 * Corrects the bias of every quantized layer with a quantized weight of a calibrated model
 * (see the file comment), in place, using the calibration `batches` (model inputs).
 */
export function correctBias(
  model: Module & { forward(x: Tensor): Tensor },
  batches: readonly Tensor[],
  options: {
    progress?: (message: string) => void;
    /**
     * The float (BN-folded) weight W to measure against, by layer, when the layer's weight was
     * already replaced by its rounding (AdaRound writes W̃ into the layer); default: the layer's.
     */
    floatWeights?: ReadonlyMap<QuantLayer, Tensor>;
  } = {},
): BiasCorrectionResult[] {
  const results: BiasCorrectionResult[] = [];
  for (const info of quantizedLayers(model)) {
    const layer = info.layer;
    if (!layer.weightQuantizer) continue;
    const inputs = captureLayerInputs(model, layer, batches);
    const shift = expectedOutputShift(layer, inputs, options.floatWeights?.get(layer));
    const corrected = subtractFromBias(layer, shift);
    const meanAbsShift = shift.reduce((a, v) => a + Math.abs(v), 0) / Math.max(1, shift.length);
    results.push({ layer: info.name, corrected, shift, meanAbsShift });
    options.progress?.(`bias correction ${info.name}: mean |δ| ${meanAbsShift.toExponential(2)}${corrected ? '' : ' (no bias: skipped)'}`);
  }
  return results;
}
