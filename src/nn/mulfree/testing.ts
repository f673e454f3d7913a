/**
 * Test helpers of the shift and adder layers: the two toy problems their seeded learning runs use,
 * and the Adam loop that trains them. @internal
 */
import type { Tensor as TensorType } from '../../tensor/tensor.ts';
import { Tensor } from '../../tensor/tensor.ts';
import * as o from '../../tensor/ops.ts';
import { manualSeed, Rng } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/engine.ts';
import { Adam } from '../../optim/adam.ts';

/** 96 samples of 4 features in 3 classes: feature c is 2 for class c, plus N(0, 0.5²) noise. Seeds the global RNG too. */
export function threeClassData(seed: number): { x: TensorType; y: TensorType; labels: Int32Array } {
  manualSeed(seed);
  const rng = new Rng(seed);
  const n = 96;
  const xs = new Float32Array(n * 4);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % 3;
    labels[i] = c;
    for (let j = 0; j < 4; j++) xs[i * 4 + j] = (j === c ? 2 : 0) + 0.5 * rng.normal();
  }
  return { x: new Tensor(xs, [n, 4]), y: new Tensor(labels, [n]), labels };
}

/** 48 single-channel 6×6 images, bright on the left half (class 0) or the right half (class 1), plus N(0, 0.3²) noise. Seeds the global RNG too. */
export function leftRightImages(seed: number): { x: TensorType; y: TensorType } {
  manualSeed(seed);
  const rng = new Rng(seed);
  const n = 48;
  const xs = new Float32Array(n * 36);
  const ys = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    ys[i] = i % 2;
    for (let r = 0; r < 6; r++) for (let c = 0; c < 6; c++) xs[i * 36 + r * 6 + c] = ((c < 3) === (i % 2 === 0) ? 1 : 0) + 0.3 * rng.normal();
  }
  return { x: new Tensor(xs, [n, 1, 6, 6]), y: new Tensor(ys, [n]) };
}

/** `steps` Adam steps (lr 0.05) on the cross-entropy of `logits()`; the loss before the first and at the last step. */
export function trainWithAdam(params: TensorType[], logits: () => TensorType, y: TensorType, steps = 60): { first: number; last: number } {
  const opt = new Adam(params, { lr: 0.05 });
  const first = o.crossEntropy(logits(), y).item();
  let last = first;
  for (let step = 0; step < steps; step++) {
    const loss = o.crossEntropy(logits(), y);
    loss.backward();
    opt.step();
    opt.zeroGrad();
    last = loss.item();
  }
  return { first, last };
}

/** Fraction of rows of `logits()` (run without gradients) whose argmax is the label. */
export function accuracyOf(logits: () => TensorType, labels: Int32Array): number {
  const predicted = noGrad(() => o.argmax(logits(), 1));
  let hits = 0;
  for (let i = 0; i < labels.length; i++) if (predicted.data[i] === labels[i]) hits++;
  return hits / labels.length;
}
