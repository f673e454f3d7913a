/**
 * The plain training loop the bench scripts share: Adam on cross-entropy over a dataset, a progress
 * bar per pass, an optional cap on batches per pass and a hook after every step.
 */
import { DataLoader, type Dataset } from '../src/data/index.ts';
import type { TensorModule } from '../src/nn/index.ts';
import { Adam } from '../src/optim/index.ts';
import { crossEntropy } from '../src/tensor/index.ts';
import { ProgressBar } from '../src/train/index.ts';

export interface AdamLoopOptions {
  /** Passes over `ds`. */
  readonly rounds: number;
  readonly lr: number;
  /** Progress-bar label. */
  readonly label: string;
  readonly batchSize: number;
  /** Shuffle seed of the loader. */
  readonly seed: number;
  /** At most this many batches per pass (default: all). */
  readonly maxBatches?: number;
  /** Called after every optimizer step. */
  readonly onStep?: () => void;
}

/** Trains `model` (in training mode) with a fresh Adam; returns the last pass's mean loss. */
export function trainAdam(model: TensorModule, ds: Dataset, o: AdamLoopOptions): number {
  const maxBatches = o.maxBatches ?? Infinity;
  const optimizer = new Adam(model.parameters(), { lr: o.lr });
  const loader = new DataLoader(ds, { batchSize: o.batchSize, shuffle: true, seed: o.seed });
  model.train();
  let last = Number.NaN;
  for (let epoch = 0; epoch < o.rounds; epoch++) {
    const bar = new ProgressBar({ total: Math.min(loader.length, maxBatches), label: `${o.label} epoch ${epoch + 1}/${o.rounds}` });
    let sum = 0;
    let count = 0;
    for (const { x, y } of loader) {
      if (count >= maxBatches) break;
      optimizer.zeroGrad();
      const loss = crossEntropy(model.forward(x), y);
      loss.backward();
      optimizer.step();
      o.onStep?.();
      sum += loss.item();
      count++;
      bar.tick(1, { loss: sum / count });
    }
    bar.done();
    last = sum / count;
  }
  return last;
}
