/**
 * Weight initialisers (as torch.nn.init). Each fills a tensor's data in place, records no graph,
 * and returns the tensor. Random ones draw from `rng` (default: the global generator).
 */
import { globalRng, type Rng, type Tensor } from '../tensor/index.ts';

/** Activations `calculateGain` knows. */
export type Nonlinearity = 'linear' | 'conv2d' | 'sigmoid' | 'tanh' | 'relu' | 'leakyRelu' | 'selu';

/** Whether the standard deviation is scaled by the fan-in (forward pass) or fan-out (backward pass). */
export type FanMode = 'fanIn' | 'fanOut';

/**
 * The recommended gain for a nonlinearity: 1 for linear/conv/sigmoid, 5/3 for tanh, √2 for relu,
 * √(2 / (1 + slope²)) for leaky relu (slope `param`, default 0.01), 3/4 for selu.
 */
export function calculateGain(nonlinearity: Nonlinearity, param?: number): number {
  switch (nonlinearity) {
    case 'linear':
    case 'conv2d':
    case 'sigmoid':
      return 1;
    case 'tanh':
      return 5 / 3;
    case 'relu':
      return Math.SQRT2;
    case 'leakyRelu': {
      const slope = param ?? 0.01;
      return Math.sqrt(2 / (1 + slope * slope));
    }
    case 'selu':
      return 3 / 4;
  }
}

/**
 * Fan-in and fan-out of a weight: for [out, in, ...kernel] shapes,
 * fanIn = in·∏kernel and fanOut = out·∏kernel.
 */
export function fans(shape: readonly number[]): { fanIn: number; fanOut: number } {
  if (shape.length < 2) throw new Error(`fan in/out need a tensor of rank >= 2, got shape [${shape.join(', ')}]`);
  let receptive = 1;
  for (let i = 2; i < shape.length; i++) receptive *= shape[i]!;
  return { fanIn: shape[1]! * receptive, fanOut: shape[0]! * receptive };
}

export interface KaimingOptions {
  /** Negative slope of the leaky relu that follows (only with `nonlinearity: 'leakyRelu'`). Default 0. */
  a?: number;
  /** Default `'fanIn'`. */
  mode?: FanMode;
  /** Default `'leakyRelu'` (with a = 0 the same as relu), as PyTorch. */
  nonlinearity?: Nonlinearity;
  rng?: Rng;
}

function kaimingStd(tensor: Tensor, options: KaimingOptions): number {
  const f = fans(tensor.shape);
  const fan = (options.mode ?? 'fanIn') === 'fanIn' ? f.fanIn : f.fanOut;
  const gain = calculateGain(options.nonlinearity ?? 'leakyRelu', options.a ?? 0);
  return gain / Math.sqrt(fan);
}

/** He uniform: U(−b, b) with b = gain·√(3 / fan). */
export function kaimingUniform(tensor: Tensor, options: KaimingOptions = {}): Tensor {
  const bound = Math.sqrt(3) * kaimingStd(tensor, options);
  return uniform(tensor, -bound, bound, options.rng);
}

/**
 * PyTorch's default initialisation of Linear and ConvNd (`reset_parameters`): kaiming_uniform with
 * a = √5 on the weight, then U(−1/√fanIn, 1/√fanIn) on the bias (in that order of random draws).
 */
export function defaultLayerInit(weight: Tensor, bias: Tensor | null, rng?: Rng): void {
  kaimingUniform(weight, { a: Math.sqrt(5), rng });
  if (bias) {
    const { fanIn } = fans(weight.shape);
    const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
    uniform(bias, -bound, bound, rng);
  }
}

/** He normal: N(0, std²) with std = gain / √fan. */
export function kaimingNormal(tensor: Tensor, options: KaimingOptions = {}): Tensor {
  return normal(tensor, 0, kaimingStd(tensor, options), options.rng);
}

/** Glorot uniform: U(−b, b) with b = gain·√(6 / (fanIn + fanOut)). */
export function xavierUniform(tensor: Tensor, options: { gain?: number; rng?: Rng } = {}): Tensor {
  const { fanIn, fanOut } = fans(tensor.shape);
  const bound = (options.gain ?? 1) * Math.sqrt(6 / (fanIn + fanOut));
  return uniform(tensor, -bound, bound, options.rng);
}

/** Glorot normal: N(0, std²) with std = gain·√(2 / (fanIn + fanOut)). */
export function xavierNormal(tensor: Tensor, options: { gain?: number; rng?: Rng } = {}): Tensor {
  const { fanIn, fanOut } = fans(tensor.shape);
  return normal(tensor, 0, (options.gain ?? 1) * Math.sqrt(2 / (fanIn + fanOut)), options.rng);
}

/** Uniform samples in [low, high). */
export function uniform(tensor: Tensor, low = 0, high = 1, rng: Rng = globalRng): Tensor {
  const data = tensor.data;
  const width = high - low;
  for (let i = 0; i < data.length; i++) data[i] = low + width * rng.uniform();
  return tensor;
}

/** Normal samples N(mean, std²). */
export function normal(tensor: Tensor, mean = 0, std = 1, rng: Rng = globalRng): Tensor {
  const data = tensor.data;
  for (let i = 0; i < data.length; i++) data[i] = mean + std * rng.normal();
  return tensor;
}

/** Fills with a constant. */
export function constant(tensor: Tensor, value: number): Tensor {
  tensor.data.fill(value);
  return tensor;
}

export function zeros(tensor: Tensor): Tensor {
  return constant(tensor, 0);
}

export function ones(tensor: Tensor): Tensor {
  return constant(tensor, 1);
}
