/**
 * Quantized activation gradients for QAT models: the W·A·G training of DoReFa-Net (Zhou et al.
 * 2016, "DoReFa-Net: Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth
 * Gradients") and QNN (Hubara et al. 2016), where the gradient flowing backward between layers is
 * low-bit too, not only the parameter gradients (optim.withQuantizedGradients).
 *
 * Every chosen quantized layer ends its forward with `quantizeGradient` (tensor/ops.ts): the output
 * is unchanged, and the gradient arriving at it is stochastically quantized to k bits (max-abs
 * scale per tensor or per sample, unbiased) before the layer's backward computes its weight and
 * input gradients from it. DoReFa applies its quantizer f_γ to the output of each conv / FC.
 */
import type { Module } from '../../nn/module.ts';
import { Rng } from '../../tensor/random.ts';
import { quantizeGradient, STOCHASTIC_QUANTIZE_BITS, type Tensor } from '../../tensor/index.ts';
import { isGradEnabled } from '../../autograd/engine.ts';
import { QuantLayer } from './layers.ts';

export interface ActivationGradientOptions {
  /** Bit width k of the gradient at each layer output, an integer in [2, 16]. */
  readonly bits: number;
  /** Max-abs scale per tensor (default) or per sample (index of axis 0; DoReFa's choice). */
  readonly granularity?: 'tensor' | 'sample';
  /** 'dorefa' (default): 2^k levels without zero; 'symmetric': 2^k − 1 levels with zero (see StochasticQuantizeAttrs). */
  readonly grid?: 'dorefa' | 'symmetric';
  /** Seed of the rounding draws (default 0); one generator shared by the model's layers, drawn in forward order. */
  readonly seed?: number;
  /** Names of the quantized layers to apply it to (default: every quantized layer). */
  readonly layers?: readonly string[];
}

/**
 * The per-model state of quantized activation gradients: the settings and the random stream
 * every layer draws its per-step seed from (not saved in checkpoints).
 */
export class ActivationGradientQuantizer {
  readonly bits: number;
  readonly granularity: 'tensor' | 'sample';
  readonly grid: 'dorefa' | 'symmetric';
  readonly rng: Rng;

  constructor(options: ActivationGradientOptions) {
    const { bits, granularity = 'tensor', grid = 'dorefa', seed = 0 } = options;
    if (!Number.isInteger(bits) || bits < STOCHASTIC_QUANTIZE_BITS.min || bits > STOCHASTIC_QUANTIZE_BITS.max) {
      throw new RangeError(`activation gradients: bits must be an integer in [${STOCHASTIC_QUANTIZE_BITS.min}, ${STOCHASTIC_QUANTIZE_BITS.max}], got ${String(bits)}`);
    }
    if (granularity !== 'tensor' && granularity !== 'sample') throw new RangeError(`activation gradients: granularity must be 'tensor' or 'sample', got ${JSON.stringify(granularity)}`);
    if (grid !== 'dorefa' && grid !== 'symmetric') throw new RangeError(`activation gradients: grid must be 'dorefa' or 'symmetric', got ${JSON.stringify(grid)}`);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`activation gradients: seed must be a uint32 integer, got ${String(seed)}`);
    this.bits = bits;
    this.granularity = granularity;
    this.grid = grid;
    this.rng = new Rng(seed);
  }

  /** `y` with its gradient quantized (a new seed per call); `y` itself when no gradient is recorded. */
  apply(y: Tensor): Tensor {
    if (!isGradEnabled() || !y.requiresGrad) return y;
    return quantizeGradient(y, { bits: this.bits, granularity: this.granularity, grid: this.grid, seed: this.rng.nextUint32() });
  }

  /** One line for logs: "4-bit activation gradients (per-tensor max scale, DoReFa grid, stochastic rounding)". */
  describe(): string {
    return `${this.bits}-bit activation gradients (per-${this.granularity} max scale, ${this.grid === 'dorefa' ? 'DoReFa' : 'symmetric'} grid, stochastic rounding)`;
  }
}

/**
 * Makes the quantized layers of a prepared model (prepareQat) quantize the gradient entering their
 * output during training (`module.training`; eval and noGrad() forwards are untouched), or turns it
 * off with `null`. The forward values never change. Returns the names of the layers it applies to.
 * A QuantConvBn2d quantizes the gradient at its folded output; the batch-statistics branch of its
 * training forward keeps a float gradient. QuantConv2d then runs its conv, ReLU and pooling unfused.
 */
export function quantizeActivationGradients(model: Module, options: ActivationGradientOptions | null): string[] {
  const layers = model.namedModules().filter((entry): entry is [string, QuantLayer] => entry[1] instanceof QuantLayer);
  if (layers.length === 0) throw new Error('quantizeActivationGradients: the model has no quantized layers (call prepareQat first)');
  if (options === null) {
    for (const [, layer] of layers) layer.activationGradientQuantizer = null;
    return [];
  }
  const { quantizer, wanted } = checkActivationGradients(options, layers.map(([name]) => name), 'quantizeActivationGradients');
  for (const [name, layer] of layers) layer.activationGradientQuantizer = wanted.includes(name) ? quantizer : null;
  return wanted;
}

/**
 * @internal Validates `options` against the quantized layer names (prepareQat calls it before it
 * swaps any layer) and returns the quantizer and the chosen names, in model order.
 */
export function checkActivationGradients(options: ActivationGradientOptions, names: readonly string[], where: string): { quantizer: ActivationGradientQuantizer; wanted: string[] } {
  const quantizer = new ActivationGradientQuantizer(options);
  const chosen = options.layers ?? names;
  const unknown = chosen.filter((name) => !names.includes(name));
  if (unknown.length > 0) throw new Error(`${where}: activation-gradient layers ${JSON.stringify(unknown)} are not quantized layers of the model (those are ${JSON.stringify(names)})`);
  return { quantizer, wanted: names.filter((name) => chosen.includes(name)) };
}
