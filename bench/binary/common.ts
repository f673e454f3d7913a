/** Pieces shared by the binary-net benches (bireal.ts, intmodel.ts). */
import { DATASET_STATS, DataLoader, type Dataset } from '../../src/data/index.ts';
import { normalizeInPlace } from '../../src/data/dataset.ts';
import type { TensorModule } from '../../src/nn/index.ts';
import { crossEntropy } from '../../src/tensor/index.ts';
import { Adam, CosineAnnealingLR } from '../../src/optim/index.ts';
import { ProgressBar } from '../../src/train/index.ts';

/** A copy of a Fashion-MNIST split normalised with the dataset's statistics. */
export function normalizedFashion(ds: Dataset): Dataset {
  const images = ds.images.slice();
  normalizeInPlace(images, ds.sampleShape, DATASET_STATS['fashion-mnist']);
  return { ...ds, images };
}

/** Adam on cross-entropy, batch 64, the lr decayed to 0 by a per-step cosine; a progress bar per epoch. */
export function fitCosine(model: TensorModule, train: Dataset, options: { epochs: number; lr: number; seed: number; label: string }): void {
  const { epochs, lr, seed, label } = options;
  const optimizer = new Adam(model.parameters(), { lr });
  const loader = new DataLoader(train, { batchSize: 64, shuffle: true, seed });
  const schedule = new CosineAnnealingLR(optimizer, { tMax: epochs * loader.length });
  model.train();
  for (let epoch = 0; epoch < epochs; epoch++) {
    const bar = new ProgressBar({ total: loader.length, label: `${label} epoch ${epoch + 1}/${epochs}` });
    let sum = 0;
    let count = 0;
    for (const { x, y } of loader) {
      optimizer.zeroGrad();
      const loss = crossEntropy(model.forward(x), y);
      loss.backward();
      optimizer.step();
      schedule.step();
      sum += loss.item();
      count++;
      bar.tick(1, { loss: sum / count });
    }
    bar.done();
  }
}
