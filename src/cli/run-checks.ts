/**
 * Checks of a float32 run against what `lowbit quantize` / `lowbit search` were asked to do with it:
 * the architecture (--arch, or the one metrics.json names) must match the checkpoint's tensors,
 * and a --dataset other than the one the run was trained on is refused when its input shape or
 * number of classes differ, and warned about otherwise.
 */
import { isDatasetName, loadDataset, type Dataset } from '../data/index.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { compareStateDicts, type TensorModule } from '../nn/module.ts';
import { createModel } from '../nn/index.ts';
import type { StateTensors } from '../train/checkpoint.ts';
import { UsageError } from './args.ts';
import type { CommandIO } from './command.ts';
import type { FloatRun } from './float-run.ts';

/** `a, b, c (4 more)`: the first `shown` names and how many were left out. */
function someOf(names: readonly string[], shown = 3): string {
  const rest = names.length - shown;
  return `${names.slice(0, shown).join(', ')}${rest > 0 ? ` (${rest} more)` : ''}`;
}

/**
 * How a checkpoint's tensors differ from the state a model expects, in one line:
 * `missing fc1.weight, fc1.bias, fc2.weight (3 more); unexpected conv1.weight, ...; shape of fc3.weight [10, 84] (model [5, 84])`,
 * or null when every name and shape lines up.
 */
export function stateMismatch(expected: ReadonlyMap<string, Tensor>, found: StateTensors): string | null {
  const stored: ReadonlyMap<string, Tensor> = found instanceof Map ? found : new Map(Object.entries(found as Record<string, Tensor>));
  const { missingKeys: missing, unexpectedKeys: unexpected, shapeMismatches } = compareStateDicts(expected, stored);
  const reshaped = shapeMismatches.map(({ name, checkpoint, model }) => `${name} [${checkpoint.join(', ')}] (model [${model.join(', ')}])`);
  const parts: string[] = [];
  if (missing.length > 0) parts.push(`missing ${someOf(missing)}`);
  if (unexpected.length > 0) parts.push(`unexpected ${someOf(unexpected)}`);
  if (reshaped.length > 0) parts.push(`shape of ${someOf(reshaped, 2)}`);
  return parts.length > 0 ? parts.join('; ') : null;
}

/**
 * Throws unless the run's checkpoint holds exactly the tensors of `expected` (a fresh model's
 * `stateDict()`): a `UsageError` naming --arch when the architecture came from that flag, else an
 * Error naming the architecture the run's metrics.json (or checkpoint config) gives.
 */
export function checkCheckpointFits(run: Pick<FloatRun, 'checkpoint' | 'arch' | 'weights'>, expected: ReadonlyMap<string, Tensor>, archFromFlag: boolean, command: string): void {
  const mismatch = stateMismatch(expected, run.weights());
  if (mismatch === null) return;
  if (archFromFlag) throw new UsageError(`--model: '${run.checkpoint}' does not match --arch ${run.arch}: ${mismatch}`, command);
  throw new Error(`'${run.checkpoint}' does not match the architecture its run names (${run.arch}): ${mismatch}`);
}

/** What a dataset must share with the one a model was trained on. */
export type DatasetShape = Pick<Dataset, 'sampleShape' | 'numClasses'>;

/**
 * Compares the dataset a model was trained on with the one it is about to be used with:
 * 'error' when the input shape or the number of classes differ (the model cannot run on it
 * meaningfully), 'warning' when only the data differ, with a message naming both.
 */
export function compareDatasets(trained: { name: string; shape?: DatasetShape }, used: { name: string; shape: DatasetShape }): { level: 'error' | 'warning'; message: string } | null {
  if (trained.name === used.name) return null;
  const t = trained.shape;
  if (t) {
    const differences: string[] = [];
    if (t.sampleShape.join('x') !== used.shape.sampleShape.join('x')) differences.push(`input ${used.shape.sampleShape.join('x')} (trained on ${t.sampleShape.join('x')})`);
    if (t.numClasses !== used.shape.numClasses) differences.push(`${used.shape.numClasses} classes (trained on ${t.numClasses})`);
    if (differences.length > 0) return { level: 'error', message: `--dataset ${used.name} does not fit a model trained on ${trained.name}: ${differences.join(', ')}` };
  }
  return {
    level: 'warning',
    message: `--dataset ${used.name}, but the model was trained on ${trained.name}${t ? ' (same input shape and classes, so it runs)' : ''}: expect accuracy near chance`,
  };
}

/**
 * Applies compareDatasets to a run's recorded dataset and the --dataset the user gave (`chosen`,
 * `used` its loaded split): a UsageError for a shape or class mismatch, a warning on stderr for
 * another dataset of the same shape. Silent without --dataset or when the run records no dataset.
 */
export function checkDatasetChoice(config: Record<string, unknown>, chosen: string | undefined, used: DatasetShape, command: string, io: Pick<CommandIO, 'stderr'>): void {
  const recorded = config['dataset'];
  if (chosen === undefined || typeof recorded !== 'string' || recorded === chosen) return;
  let shape: DatasetShape | undefined;
  if (isDatasetName(recorded)) {
    try {
      shape = loadDataset(recorded, 'test', { limit: 1 });
    } catch {
      shape = undefined;  // not installed here: compare by name only
    }
  }
  const verdict = compareDatasets({ name: recorded, ...(shape ? { shape } : {}) }, { name: chosen, shape: used });
  if (!verdict) return;
  if (verdict.level === 'error') throw new UsageError(verdict.message, command);
  io.stderr.write(`lowbit ${command}: warning: ${verdict.message}\n`);
}

/** Throws a UsageError when --calib asks for more samples than the training split `trainSet` of `dataset` holds. */
export function checkCalibCount(calib: number, trainSet: Pick<Dataset, 'length'>, dataset: string, command: string): void {
  if (calib > trainSet.length) {
    throw new UsageError(`--calib ${calib}: the ${dataset} training split has ${trainSet.length.toLocaleString('en-US')} samples`, command);
  }
}

/**
 * Fresh models of the float32 run `run` with its weights loaded: the weights are read once and
 * checked against the architecture first (see {@link checkCheckpointFits}); each call builds a new
 * model (calibration and QAT change the one they get).
 */
export function floatRunBuilder(run: FloatRun, numClasses: number, archFromFlag: boolean, command: string): () => TensorModule {
  const weights = run.weights();
  checkCheckpointFits(run, createModel(run.arch, { numClasses }).stateDict(), archFromFlag, command);
  return () => {
    const model = createModel(run.arch, { numClasses });
    model.loadStateDict(weights);
    return model;
  };
}
