/**
 * @internal Helpers the PTQ passes share: capturing a quantized layer's input as the prepared
 * model computes it, and recomputing a layer's output with another weight.
 */
import { noGrad } from '../../autograd/engine.ts';
import { keepingIntermediates } from '../../autograd/release.ts';
import type { Module } from '../../nn/module.ts';
import { conv2d, linear, reshape } from '../../tensor/ops.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { LayerGeometry, QuantLayer } from '../qat/layers.ts';

/** Thrown inside a forward pass to stop it once the wanted input was captured. */
class StopForward extends Error {}

/**
 * The inputs of `layer` over `batches`, fake-quantized by its input quantizer (what its weight
 * multiplies in the prepared model). The forward pass stops at the layer (later layers don't run).
 */
export function captureLayerInputs(model: Module & { forward(x: Tensor): Tensor }, layer: QuantLayer, batches: readonly Tensor[]): Tensor[] {
  const captured: Tensor[] = [];
  const original = layer.forward;
  layer.forward = (x: Tensor): Tensor => {
    captured.push(quantizedInput(layer, x));
    throw new StopForward();
  };
  try {
    // The captured tensors may be intermediates of the forward: keep their buffers out of the pool.
    keepingIntermediates(() => noGrad(() => {
      for (const x of batches) {
        try {
          model.forward(x);
        } catch (error) {
          if (!(error instanceof StopForward)) throw error;
        }
      }
    }));
  } finally {
    layer.forward = original;
  }
  if (captured.length !== batches.length) throw new Error(`PTQ: layer input captured on ${captured.length} of ${batches.length} batches (is the layer on the forward path?)`);
  return captured;
}

/** x after the layer's input quantizer (identity when float or disabled). */
export function quantizedInput(layer: QuantLayer, x: Tensor): Tensor {
  const q = layer.inputQuantizer;
  return noGrad(() => (q && q.fakeQuantEnabled ? q.forward(x) : x));
}

/** The layer's computation with an explicit weight and bias: conv2d, conv1d (as conv2d on height 1) or linear. */
export function layerOp(geometry: LayerGeometry, x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  if (geometry.type === 'linear') return linear(x, weight, bias);
  const attrs = { stride: geometry.stride, padding: geometry.padding, dilation: geometry.dilation, groups: geometry.groups };
  if (geometry.conv1d !== true) return conv2d(x, weight, bias, attrs);
  const [n, c, length] = x.shape as [number, number, number];
  const [o, cg, k] = weight.shape as [number, number, number];
  const y = conv2d(reshape(x, [n, c, 1, length]), reshape(weight, [o, cg, 1, k]), bias, attrs);
  return reshape(y, [n, o, y.shape[3]!]);
}

/** Batches concatenated along dim 0 (float32). */
export function concatBatches(batches: readonly Tensor[], limit = Infinity): Tensor {
  const first = batches[0];
  if (!first) throw new Error('PTQ: no calibration batches');
  const per = first.size / first.shape[0]!;
  const total = Math.min(limit, batches.reduce((n, b) => n + b.shape[0]!, 0));
  const data = new Float32Array(total * per);
  let rows = 0;
  for (const b of batches) {
    if (rows >= total) break;
    const take = Math.min(b.shape[0]!, total - rows);
    data.set(b.data.subarray(0, take * per), rows * per);
    rows += take;
  }
  return new Tensor(data, [total, ...first.shape.slice(1)]);
}

/** Rows `indices` of x (dim 0), float32. */
export function takeRows(x: Tensor, indices: readonly number[]): Tensor {
  const per = x.size / x.shape[0]!;
  const data = new Float32Array(indices.length * per);
  indices.forEach((r, i) => data.set(x.data.subarray(r * per, (r + 1) * per), i * per));
  return new Tensor(data, [indices.length, ...x.shape.slice(1)]);
}
