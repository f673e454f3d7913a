/** The float32 training run that `lowbit quantize` and `lowbit search` start from (--model). */
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isDatasetName, type DatasetName } from '../data/index.ts';
import { isModelName, MODEL_NAMES, type ModelName } from '../nn/index.ts';
import { readTextLimited } from '../format/index.ts';
import { loadCheckpoint, type LoadedCheckpoint, type StateTensors } from '../train/checkpoint.ts';
import { UsageError } from './args.ts';

export interface FloatRun {
  /** The checkpoint file: the --model path itself, or checkpoint.safetensors in that run directory. */
  checkpoint: string;
  /** The training config from metrics.json next to the checkpoint, else the checkpoint's own ({} without either). */
  config: Record<string, unknown>;
  arch: ModelName;
  dataset: DatasetName;
  /** The checkpoint's model tensors, read at most once (the config fallback may have read them already). */
  weights(): StateTensors;
}

/**
 * Resolves --model (a run directory or a checkpoint file) for `command`. The architecture and the
 * dataset come from --arch / --dataset, else from the run's metrics.json or, without one, the
 * checkpoint's stored config (dataset default: mnist).
 * A run trained with --quant is refused: `startsFrom` completes "… starts from a float32 model".
 * `flag` is the option that named the path, for error messages (default --model).
 */
export function locateFloatRun(
  path: string | undefined,
  overrides: { arch?: ModelName | undefined; dataset?: DatasetName | undefined },
  command: string,
  startsFrom: string,
  flag = '--model',
): FloatRun {
  const usage = (message: string) => new UsageError(message, command);
  if (path === undefined) throw usage(`${flag} is required (a run directory such as runs/lenet5-mnist-fp32, or a checkpoint.safetensors)`);
  // A missing file is not a usage error (exit 1, like eval / export / info).
  if (!existsSync(path)) throw new Error(`${command}: ${flag}: '${path}' does not exist (a run directory such as runs/lenet5-mnist-fp32, or a checkpoint.safetensors)`);
  const checkpoint = statSync(path).isDirectory() ? join(path, 'checkpoint.safetensors') : path;
  if (!existsSync(checkpoint)) throw new Error(`${command}: ${flag}: no checkpoint.safetensors in '${path}' (train one with lowbit train)`);
  let loaded: LoadedCheckpoint | undefined;
  const read = (): LoadedCheckpoint => (loaded ??= loadCheckpoint(checkpoint));
  const metricsPath = join(dirname(checkpoint), 'metrics.json');
  let config: Record<string, unknown> = {};
  if (existsSync(metricsPath)) {
    try {
      config = (JSON.parse(readTextLimited(metricsPath)) as { config?: Record<string, unknown> }).config ?? {};
    } catch (e) {
      throw new Error(`${metricsPath}: not a readable JSON file (${(e as Error).message})`);
    }
  } else {
    // A checkpoint moved away from its run directory still carries the run's config.
    const stored = read().config;
    if (stored !== null && typeof stored === 'object' && !Array.isArray(stored)) config = stored as Record<string, unknown>;
  }
  if (typeof config.quant === 'string' && config.quant !== 'fp32') {
    throw usage(`${flag}: '${checkpoint}' was trained with --quant ${config.quant}; ${startsFrom} starts from a float32 model`);
  }
  if (config.model === 'onnx' && overrides.arch === undefined) {
    throw usage(`${flag}: '${checkpoint}' is a float run fine-tuned from an ONNX model (${typeof config.onnx === 'string' ? config.onnx : 'lowbit train --init FILE.onnx'}); ${startsFrom} reads lowbit architectures' runs or .onnx files: give that .onnx file, or fine-tune it with --quant (QAT) instead`);
  }
  const arch = overrides.arch ?? (isModelName(String(config.model)) ? (config.model as ModelName) : undefined);
  if (!arch) {
    const why = existsSync(metricsPath) ? `${metricsPath} names no known model` : `neither a metrics.json next to '${checkpoint}' nor the checkpoint's config names the model`;
    throw usage(`--arch is required: ${why} (known: ${MODEL_NAMES.join(', ')})`);
  }
  const dataset = overrides.dataset ?? (isDatasetName(String(config.dataset)) ? (config.dataset as DatasetName) : 'mnist');
  return { checkpoint, config, arch, dataset, weights: () => read().model };
}
