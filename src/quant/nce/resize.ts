/**
 * resizeChain: a layer chain rebuilt with new output widths for some of its weighted layers, as an
 * ordinary Sequential of standard layers. Every layer after a resized one that sees its channels
 * (BatchNorm, the next Conv2d's input channels, the next Linear's input features behind a Flatten)
 * is resized to match. Weights of kept channels are copied exactly; new channels get the layer's
 * default initialisation.
 */
import { Identity, ReLU } from '../../nn/activation.ts';
import { BatchNorm1d, BatchNorm2d } from '../../nn/batchnorm.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Dropout } from '../../nn/dropout.ts';
import { Flatten } from '../../nn/flatten.ts';
import { Linear } from '../../nn/linear.ts';
import type { TensorModule } from '../../nn/module.ts';
import { AvgPool2d, MaxPool2d } from '../../nn/pooling.ts';
import { Sequential } from '../../nn/sequential.ts';
import type { Rng } from '../../tensor/random.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { modelChain, NceError, weightedLayers, type ChainLayer } from './chain.ts';

export interface ResizeOptions {
  /** Copy the weights of kept channels from the chain (default true); false draws every weight fresh. */
  readonly inherit?: boolean;
  /** Generator of fresh weights (default: the global one, seeded by `manualSeed`). */
  readonly rng?: Rng;
}

/**
 * Copies src[i0, i1, rest] into dst[i0, i1, rest] for i0 < keep0 and i1 < keep1 (row-major; dims
 * beyond the first two are equal in both). For rank-1 tensors only keep0 applies.
 */
function copyPrefix(dst: Tensor, src: Tensor, keep0: number, keep1: number): void {
  if (src.rank === 1) {
    dst.data.set(src.data.subarray(0, keep0));
    return;
  }
  const inner = src.shape.slice(2).reduce((p, d) => p * d, 1);
  const srcRow = src.shape[1]! * inner;
  const dstRow = dst.shape[1]! * inner;
  for (let i = 0; i < keep0; i++) dst.data.set(src.data.subarray(i * srcRow, i * srcRow + keep1 * inner), i * dstRow);
}

/**
 * The chain with output widths `widths` (source layer name → new output channels / features) for
 * some of its Conv2d and Linear layers; layers not named keep their widths. The last weighted layer
 * (the model output) cannot change width. Returns a new Sequential whose layer i rebuilds chain[i]
 * (new module instances; the chain's modules are not touched).
 *
 * Kept channels (the first min(old, new) of every resized dimension) carry the chain's weights,
 * biases and BatchNorm statistics bit for bit; so narrowing a layer gives exactly the network whose
 * dropped channels are zeroed (see ChannelMask). A Linear behind a Flatten of [C, H, W] has its
 * input features resized in blocks of H·W (channel-major, as Flatten orders them).
 */
export function resizeChain(chain: readonly ChainLayer[], widths: Readonly<Record<string, number>>, options: ResizeOptions = {}): Sequential {
  const inherit = options.inherit ?? true;
  const rng = options.rng;
  const weighted = weightedLayers(chain);
  if (weighted.length === 0) throw new NceError('resizeChain: the chain has no Conv2d or Linear layer');
  const byName = new Map(weighted.map((w) => [w.layer.name, w.layer]));
  for (const [name, width] of Object.entries(widths)) {
    const layer = byName.get(name);
    if (!layer) throw new NceError(`resizeChain: '${name}' is not a Conv2d or Linear of the chain (known: ${[...byName.keys()].join(', ')})`);
    if (!Number.isInteger(width) || width < 1) throw new NceError(`resizeChain: width of '${name}' must be a positive integer, got ${String(width)}`);
    const last = weighted[weighted.length - 1]!.layer;
    if (layer === last && width !== outWidth(last.module)) throw new NceError(`resizeChain: '${name}' is the output layer; its width (${outWidth(last.module)}) cannot change`);
  }
  // Running activation width: old and new channel counts, and features per channel after a Flatten.
  let oldChannels = chain[0]!.inShape[0]!;
  let newChannels = oldChannels;
  let perChannel = 1;
  const out: TensorModule[] = [];
  for (const { name, module } of chain) {
    if (module instanceof Conv2d) {
      if (perChannel !== 1) throw new NceError(`resizeChain: conv '${name}' follows a Flatten`);
      const cout = widths[name] ?? module.outChannels;
      const conv = new Conv2d(newChannels, cout, module.kernelSize, {
        stride: module.stride, padding: module.padding, dilation: module.dilation, bias: module.bias !== null, rng,
      });
      if (inherit) {
        copyPrefix(conv.weight, module.weight, Math.min(cout, module.outChannels), Math.min(newChannels, oldChannels));
        if (conv.bias && module.bias) copyPrefix(conv.bias, module.bias, Math.min(cout, module.outChannels), 0);
      }
      out.push(conv);
      oldChannels = module.outChannels;
      newChannels = cout;
    } else if (module instanceof Linear) {
      if (module.inFeatures !== oldChannels * perChannel) throw new NceError(`resizeChain: '${name}' takes ${module.inFeatures} features, the chain gives ${oldChannels}·${perChannel}`);
      const fout = widths[name] ?? module.outFeatures;
      const linear = new Linear(newChannels * perChannel, fout, { bias: module.bias !== null, rng });
      if (inherit) {
        copyPrefix(linear.weight, module.weight, Math.min(fout, module.outFeatures), Math.min(newChannels, oldChannels) * perChannel);
        if (linear.bias && module.bias) copyPrefix(linear.bias, module.bias, Math.min(fout, module.outFeatures), 0);
      }
      out.push(linear);
      oldChannels = module.outFeatures;
      newChannels = fout;
      perChannel = 1;
    } else if (module instanceof BatchNorm1d || module instanceof BatchNorm2d) {
      if (module.numFeatures !== oldChannels) throw new NceError(`resizeChain: BatchNorm '${name}' has ${module.numFeatures} features, the chain gives ${oldChannels}`);
      const options = { eps: module.eps, momentum: module.momentum, affine: module.affine, trackRunningStats: module.trackRunningStats };
      const bn = module instanceof BatchNorm2d ? new BatchNorm2d(newChannels, options) : new BatchNorm1d(newChannels, options);
      if (inherit) {
        const keep = Math.min(newChannels, oldChannels);
        for (const key of ['weight', 'bias', 'runningMean', 'runningVar'] as const) {
          const from = module[key];
          const to = bn[key];
          if (from && to) copyPrefix(to, from, keep, 0);
        }
        if (module.numBatchesTracked && bn.numBatchesTracked) bn.numBatchesTracked.data.set(module.numBatchesTracked.data);
      }
      out.push(bn);
    } else if (module instanceof Flatten) {
      const inShape = chain[out.length]!.inShape;
      const end = module.endDim < 0 ? module.endDim + inShape.length + 1 : module.endDim;
      if (inShape.length > 1 && (module.startDim !== 1 || end !== inShape.length)) {
        throw new NceError(`resizeChain: Flatten '${name}' must merge every dim after the batch (startDim 1, endDim -1)`);
      }
      perChannel *= inShape.slice(1).reduce((p, d) => p * d, 1);
      out.push(new Flatten(module.startDim, module.endDim));
    } else if (module instanceof MaxPool2d || module instanceof AvgPool2d) {
      const Pool = module instanceof MaxPool2d ? MaxPool2d : AvgPool2d;
      out.push(new Pool(module.kernelSize, { stride: module.stride, padding: module.padding }));
    } else if (module instanceof ReLU) {
      out.push(new ReLU());
    } else if (module instanceof Dropout) {
      out.push(new Dropout(module.p));
    } else if (module instanceof Identity) {
      out.push(new Identity());
    } else {
      throw new NceError(`resizeChain: cannot rebuild layer '${name}' (${(module as object).constructor.name})`);
    }
  }
  const model = new Sequential(...out);
  return model;
}

/** Output channels (Conv2d) or features (Linear). */
export function outWidth(module: Conv2d | Linear): number {
  return module instanceof Conv2d ? module.outChannels : module.outFeatures;
}

/**
 * The float feed-forward `model` with new output widths for some of its Conv2d / Linear layers
 * (source layer name → width, e.g. `nceSearch(...).widths`), as a new Sequential of standard layers
 * (layer i rebuilds the i-th leaf of `model`; see `modelChain` and `resizeChain`). With
 * `inherit: false` every weight is drawn fresh (training the architecture from scratch).
 */
export function expandModel(model: TensorModule, inputShape: readonly number[], widths: Readonly<Record<string, number>>, options: ResizeOptions = {}): Sequential {
  return resizeChain(modelChain(model, inputShape), widths, options);
}
