/**
 * Fusion of layer chains: when no gradient is needed, a Conv2d followed by ReLU and/or MaxPool2d
 * runs as one `conv2dFused` op (one pass, no intermediate tensors on the native backend) instead
 * of three, and a bias-free Conv2d followed by an eval-mode BatchNorm2d and ReLU or ReLU6 runs as
 * one `conv2dFused` op with the BatchNorm's per-channel scale and shift in its epilogue.
 * In training, Conv2d → ReLU → MaxPool2d runs as two ops: the conv with its bias, then max
 * pooling with the ReLU fused in front (`maxPool2d(z, …, { relu: true })`), whose backward routes
 * each window's gradient to its positive maximum in one pass -- no ReLU output, no separate ReLU
 * backward. Conv2d → ReLU without pooling fuses into one op (its gradient needs only the output),
 * and BatchNorm2d → ReLU6 runs as one `batchNorm` op with the clamp (`forwardClamped`). Results
 * equal the unfused chain (for finite values).
 */
import { isGradEnabled } from '../autograd/engine.ts';
import { autocastFormat } from '../lowp/context.ts';
import { conv2dFused, maxPool2d, type Tensor } from '../tensor/index.ts';
import { ReLU, ReLU6 } from './activation.ts';
import { BatchNorm2d } from './batchnorm.ts';
import { Conv2d } from './conv.ts';
import type { TensorModule } from './module.ts';
import { MaxPool2d } from './pooling.ts';

/**
 * True when `layer` is exactly an instance of `type` (not a subclass, e.g. a quantized
 * replacement) and its `forward` has not been patched on the instance (calibration and
 * conversion hooks capture a layer's inputs that way, so such a layer must run on its own).
 * @internal also used by nn/models/transformer-decode.ts.
 */
export function plain<T>(layer: TensorModule, type: abstract new (...args: never[]) => T): layer is TensorModule & T {
  return layer.constructor === type && !Object.prototype.hasOwnProperty.call(layer, 'forward');
}

/** Max pooling fused into a conv op: window and stride, no padding. */
export interface FusedPool {
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
}

/**
 * A conv layer that runs conv → [ReLU] → [max pooling] as one op itself (the fake-quantized
 * QuantConv2d of src/quant/qat: it quantizes its input and weight, then calls `conv2dFused`).
 */
export interface FusableConv extends TensorModule {
  readonly inChannels: number;
  forwardFused(x: Tensor, options: { relu: boolean; pool: FusedPool | null }): Tensor;
}

function fusable(layer: TensorModule): layer is FusableConv {
  return 'forwardFused' in layer && typeof layer.forwardFused === 'function' && !Object.prototype.hasOwnProperty.call(layer, 'forward');
}

/** Whether running `conv` on `x` would record anything for backward. */
function needsGradient(conv: Conv2d | FusableConv, x: Tensor): boolean {
  if (!isGradEnabled()) return false;
  if (x.requiresGrad) return true;
  return conv instanceof Conv2d ? conv.weight.requiresGrad || (conv.bias?.requiresGrad ?? false) : conv.parameters().some((p) => p.requiresGrad);
}

/**
 * Runs `layers` one after the other on `x` (what `Sequential.forward` does), fusing each
 * Conv2d → [ReLU] → [MaxPool2d without padding] run into one `conv2dFused` op when no gradient
 * is needed (under `noGrad()`, or when neither `x` nor the conv's parameters require grad); when
 * one is, Conv2d → ReLU → MaxPool2d becomes conv-with-bias + ReLU-fused max pooling, and
 * Conv2d → ReLU one op. Layers that are subclasses or have a patched `forward` are never fused;
 * a `FusableConv` (QuantConv2d) fuses the same way through its own `forwardFused`.
 */
export function forwardChain(layers: readonly TensorModule[], x: Tensor): Tensor {
  let y = x;
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i]!;
    if (plain(layer, BatchNorm2d) && i + 1 < layers.length && plain(layers[i + 1]!, ReLU6)) {
      // BatchNorm2d → ReLU6: one batchNorm op with the clamp in training (batch statistics).
      y = layer.forwardClamped(y, 0, 6);
      i++;
      continue;
    }
    if (!((plain(layer, Conv2d) || fusable(layer)) && y.rank === 4)) {
      y = layer.forward(y);
      continue;
    }
    const training = needsGradient(layer, y);
    if (!training && layer instanceof Conv2d) {
      const fused = convBatchNorm(layers, i, layer, y);
      if (fused) {
        y = fused.y;
        i = fused.next - 1;
        continue;
      }
    }
    let next = i + 1;
    const relu = next < layers.length && plain(layers[next]!, ReLU);
    if (relu) next++;
    // Training pools after a ReLU (fused in front of the pooling); inference pools without padding.
    const candidate = layers[next];
    const pool = candidate && plain(candidate, MaxPool2d) && (training ? relu : candidate.padding[0] === 0 && candidate.padding[1] === 0) ? candidate : null;
    if (pool) next++;
    if (!relu && !pool) {
      y = layer.forward(y);
      continue;
    }
    if (y.shape[1] !== layer.inChannels) return layer.forward(y);  // lets the conv report the mismatch
    if (training && pool) {
      y = maxPool2d(convOp(layer, y, false, null), pool.kernelSize, { stride: pool.stride, padding: pool.padding, relu: true });
    } else {
      y = convOp(layer, y, relu, pool ? { kernel: pool.kernelSize, stride: pool.stride } : null);
    }
    i = next - 1;
  }
  return y;
}

/**
 * layers[i] = `conv` (bias-free) → an eval-mode BatchNorm2d → [ReLU | ReLU6] on `x` as one
 * `conv2dFused` op with the BatchNorm's running scale and shift, when they apply: plain layers,
 * float32 throughout, no autocast. Equal to the unfused chain: conv2d, then x·scale + shift as
 * BatchNorm2d's eval mode computes it (each product rounded to float32, then the shift added),
 * then the activation. Returns the output and the index after the chain, or null.
 */
function convBatchNorm(layers: readonly TensorModule[], i: number, conv: Conv2d, x: Tensor): { y: Tensor; next: number } | null {
  const bn = layers[i + 1];
  if (!bn || !plain(bn, BatchNorm2d) || conv.bias || autocastFormat() || x.shape[1] !== conv.inChannels || bn.numFeatures !== conv.outChannels) return null;
  if (x.dtype !== 'float32' || conv.weight.dtype !== 'float32' || (bn.weight && bn.weight.dtype !== 'float32')) return null;
  const affine = bn.runningAffine('float32');
  if (!affine) return null;
  let next = i + 2;
  const act = layers[next];
  const relu = act !== undefined && (plain(act, ReLU) || plain(act, ReLU6));
  const clampMax = act !== undefined && plain(act, ReLU6) ? 6 : null;
  if (relu) next++;
  const y = conv2dFused(x, conv.weight, affine.shift, {
    stride: conv.stride, padding: conv.padding, dilation: conv.dilation, groups: conv.groups, relu, clampMax, scale: affine.scale,
  });
  return { y, next };
}

/** conv → [ReLU] → [max pooling] as one op: `conv2dFused` for a Conv2d, `forwardFused` for a FusableConv. */
function convOp(layer: Conv2d | FusableConv, x: Tensor, relu: boolean, pool: FusedPool | null): Tensor {
  if (!(layer instanceof Conv2d)) return layer.forwardFused(x, { relu, pool });
  return conv2dFused(x, layer.weight, layer.bias, {
    stride: layer.stride, padding: layer.padding, dilation: layer.dilation, groups: layer.groups, relu, pool,
  });
}
