import { Module } from '../../nn/module.ts';
import { add, type Tensor } from '../../tensor/index.ts';
import type { Quantizer, QuantizerSpec } from '../quantizers/quantizer.ts';

/**
 * The fake-quant `nn.Add` that `prepareQat` swaps in: y = q_a(a) + q_b(b). Like the quantized
 * layers, it quantizes its INPUTS (each with its own per-tensor quantizer, child modules
 * `inputQuantizerA` / `inputQuantizerB`, so calibration and LSQ steps work as for any layer) and
 * leaves its output float: whatever consumes the sum quantizes it (the next layer's or Add's input
 * quantizer). The integer runtime computes the sum directly in each consumer's input domain with
 * one rounding (see runtime/intmodel.ts, node 'add').
 */
export class QuantAdd extends Module {
  readonly inputQuantizerA: Quantizer | null;
  readonly inputQuantizerB: Quantizer | null;

  constructor(inputQuantizerA: Quantizer | null, inputQuantizerB: Quantizer | null) {
    super();
    this.inputQuantizerA = inputQuantizerA ? this.registerModule('inputQuantizerA', inputQuantizerA) : null;
    this.inputQuantizerB = inputQuantizerB ? this.registerModule('inputQuantizerB', inputQuantizerB) : null;
  }

  get activationSpec(): QuantizerSpec | null {
    return this.inputQuantizerA?.spec ?? null;
  }

  forward(a: Tensor, b: Tensor): Tensor {
    if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
      throw new Error(`QuantAdd: input shapes [${a.shape.join(', ')}] and [${b.shape.join(', ')}] differ (no broadcasting)`);
    }
    const qa = this.inputQuantizerA;
    const qb = this.inputQuantizerB;
    return add(qa && qa.fakeQuantEnabled ? qa.forward(a) : a, qb && qb.fakeQuantEnabled ? qb.forward(b) : b);
  }
}
