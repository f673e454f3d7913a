import type { Dataset, NormalizeStats } from './dataset.ts';
import { DataError } from './errors.ts';
import { loadFashionMnist } from './fashion-mnist.ts';
import { loadMnist, type Split } from './mnist.ts';

/** Names accepted by {@link loadDataset} (and the CLI's `--dataset`). */
export const DATASET_NAMES = ['mnist', 'fashion-mnist'] as const;
export type DatasetName = (typeof DATASET_NAMES)[number];

/**
 * Mean and standard deviation of the training pixels (after scaling to [0, 1]), the usual
 * normalization constants: MNIST 0.1307 / 0.3081, Fashion-MNIST 0.2860 / 0.3530.
 * Use them as `normalize(ds, DATASET_STATS.mnist)` or `new DataLoader(ds, { normalize: ... })`.
 */
export const DATASET_STATS: Readonly<Record<DatasetName, NormalizeStats>> = Object.freeze({
  mnist: Object.freeze({ mean: 0.1307, std: 0.3081 }),
  'fashion-mnist': Object.freeze({ mean: 0.286, std: 0.353 }),
});

/** True when `name` is one of {@link DATASET_NAMES}. */
export function isDatasetName(name: string): name is DatasetName {
  return (DATASET_NAMES as readonly string[]).includes(name);
}

/** Loads a built-in dataset by name (see `loadMnist`, `loadFashionMnist`). Throws `DataError`. */
export function loadDataset(name: DatasetName, split: Split, options: { limit?: number } = {}): Dataset {
  switch (name) {
    case 'mnist':
      return loadMnist({ split, ...options });
    case 'fashion-mnist':
      return loadFashionMnist({ split, ...options });
    default:
      throw new DataError('invalid-argument', `unknown dataset '${String(name)}'; known: ${DATASET_NAMES.join(', ')}`);
  }
}
