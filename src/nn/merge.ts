import { add, type Tensor } from '../tensor/index.ts';
import { Module } from './module.ts';

/**
 * Elementwise sum of two tensors of the same shape, as a module (a Keras-style merge layer), so
 * that a residual connection is a leaf the integer runtime can capture: a model calls
 * `this.add.forward(a, b)` where a PyTorch model would write `a + b`. Register one `Add` per use.
 * `prepareQat` swaps it for a `QuantAdd` that fake-quantizes both inputs.
 */
export class Add extends Module {
  /** a + b; both must have the same shape (no broadcasting: the integer add does not broadcast). */
  forward(a: Tensor, b: Tensor): Tensor {
    if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
      throw new Error(`Add: input shapes [${a.shape.join(', ')}] and [${b.shape.join(', ')}] differ (no broadcasting)`);
    }
    return add(a, b);
  }
}
