/**
 * Fusion of layer chains: when no gradient is needed, a Conv2d followed by ReLU and/or MaxPool2d
 * runs as one `conv2dFused` op (one pass, no intermediate tensors on the native backend) instead
 * of three. In training, Conv2d → ReLU → MaxPool2d runs as two ops: the conv with its bias, then
 * max pooling with the ReLU fused in front (`maxPool2d(z, …, { relu: true })`), whose backward
 * routes each window's gradient to its positive maximum in one pass -- no ReLU output, no separate
 * ReLU backward. Conv2d → ReLU without pooling fuses into one op (its gradient needs only the
 * output). Results equal the unfused chain (for finite values).
 */
import { isGradEnabled } from '../autograd/engine.ts';
import { conv2dFused, maxPool2d, type Tensor } from '../tensor/index.ts';
import { ReLU } from './activation.ts';
import { Conv2d } from './conv.ts';
import type { TensorModule } from './module.ts';
import { MaxPool2d } from './pooling.ts';

/**
 * True when `layer` is exactly an instance of `type` (not a subclass, e.g. a quantized
 * replacement) and its `forward` has not been patched on the instance (calibration and
 * conversion hooks capture a layer's inputs that way, so such a layer must run on its own).
 */
function plain<T>(layer: TensorModule, type: abstract new (...args: never[]) => T): layer is TensorModule & T {
  return layer.constructor === type && !Object.prototype.hasOwnProperty.call(layer, 'forward');
}

/**
 * A conv layer that runs conv → [ReLU] → [max pooling] as one op itself (the fake-quantized
 * QuantConv2d of src/quant/qat: it quantizes its input and weight, then calls `conv2dFused`).
 */
export interface FusableConv extends TensorModule {
  readonly inChannels: number;
  forwardFused(x: Tensor, options: { relu: boolean; pool: { kernel: readonly [number, number]; stride: readonly [number, number] } | null }): Tensor;
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
    if ((plain(layer, Conv2d) || fusable(layer)) && y.rank === 4) {
      const training = needsGradient(layer, y);
      let relu = false;
      let pool: MaxPool2d | null = null;
      let next = i + 1;
      if (next < layers.length && plain(layers[next]!, ReLU)) {
        relu = true;
        next++;
      }
      const candidate = layers[next];
      if (training && relu && candidate && plain(candidate, MaxPool2d)) {
        if (y.shape[1] !== layer.inChannels) return layer.forward(y);  // lets the conv report the mismatch
        const z = layer instanceof Conv2d
          ? conv2dFused(y, layer.weight, layer.bias, { stride: layer.stride, padding: layer.padding, dilation: layer.dilation, groups: layer.groups })
          : layer.forwardFused(y, { relu: false, pool: null });
        y = maxPool2d(z, candidate.kernelSize, { stride: candidate.stride, padding: candidate.padding, relu: true });
        i = next;
        continue;
      }
      if (!training && candidate && plain(candidate, MaxPool2d) && candidate.padding[0] === 0 && candidate.padding[1] === 0) {
        pool = candidate;
        next++;
      }
      if (relu || pool) {
        if (y.shape[1] !== layer.inChannels) return layer.forward(y);  // lets Conv2d report the mismatch
        const poolOptions = pool ? { kernel: pool.kernelSize, stride: pool.stride } : null;
        if (!(layer instanceof Conv2d)) {
          y = layer.forwardFused(y, { relu, pool: poolOptions });
          i = next - 1;
          continue;
        }
        y = conv2dFused(y, layer.weight, layer.bias, {
          stride: layer.stride,
          padding: layer.padding,
          dilation: layer.dilation,
          groups: layer.groups,
          relu,
          pool: poolOptions,
        });
        i = next - 1;
        continue;
      }
    }
    y = layer.forward(y);
  }
  return y;
}
