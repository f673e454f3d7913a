/**
 * The model of a `lowbit train` checkpoint, rebuilt as it was trained: the architecture and the
 * QAT plan come from the run config (in the checkpoint, else the metrics.json beside it), the model
 * is prepared for QAT when the run was quantized, then the weights are loaded. Shared by the
 * commands that read checkpoints (attack, eval, export) so that all of them accept the same runs
 * and refuse the same files with the same messages.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { readTextLimited } from '../format/index.ts';
import { createModel, isModelName, MODEL_NAMES, type ModelName, type TensorModule } from '../nn/index.ts';
import { prepareQat, qatPlanOfRunConfig } from '../quant/qat/index.ts';
import { applyEqualizedStructure, parseScheme, ptqTarget } from '../quant/ptq/index.ts';
import { OBSERVER_METHODS, type ObserverMethod } from '../quant/observers/index.ts';
import { loadCheckpoint } from '../train/checkpoint.ts';
import { parseNormalizeStats, type NormalizeStats } from '../data/dataset.ts';
import { loadOnnxImageModel, onnxTensorModule } from './onnx-model.ts';

/** What the commands read from a training run's config (every field unchecked until used). */
export interface RunConfig {
  model?: unknown;
  dataset?: unknown;
  quant?: unknown;
  estimator?: unknown;
  plan?: unknown;
  /** A --plan run's per-layer widths ({ layer: { w, a } }). */
  assignment?: unknown;
  scheme?: unknown;
  /** A `lowbit quantize --equalize` state: the structure equalization left (EqualizedStructure), or false. */
  equalize?: unknown;
  /** A run fine-tuned from an ONNX model (`lowbit train --init FILE.onnx`, model 'onnx'): that file. */
  onnx?: unknown;
  /** Its input scaling ({ mean, std }; mean 0, std 1 = none); other runs use their dataset's. */
  normalize?: unknown;
}

/** A checkpoint's model, ready to run (eval mode). */
export interface CheckpointModel {
  readonly model: TensorModule;
  readonly config: RunConfig;
  /** 'onnx': the graph of the ONNX file the run was fine-tuned from (RunConfig.onnx). */
  readonly arch: ModelName | 'onnx';
  /** The run's input scaling when its config records one (ONNX runs), else undefined: the dataset's. */
  readonly normalize: NormalizeStats | undefined;
  /** Prepared for QAT (the run's --quant / --plan), not a float32 run. */
  readonly quantized: boolean;
  /** The run's dataset name, when its config has one. */
  readonly dataset: string | undefined;
  /**
   * What the model was trained as: 'fp32', the run's `--quant` (and `--estimator`), or for a
   * `lowbit train --plan` run `plan (conv1=W3A8 ...)` from its assignment (such a run's `quant`
   * field holds the CLI default, not what ran).
   */
  readonly quantLabel: string;
}

/** See {@link CheckpointModel.quantLabel}. */
export function quantLabelOfRunConfig(config: RunConfig, quantized: boolean): string {
  if (!quantized) return 'fp32';
  if (config.plan !== undefined && config.plan !== null) {
    const assignment = config.assignment;
    if (typeof assignment !== 'object' || assignment === null || Array.isArray(assignment)) return 'plan';
    const layers = Object.entries(assignment as Record<string, { w?: unknown; a?: unknown; wPerChannel?: unknown }>).map(([layer, c]) => {
      const kept = Array.isArray(c?.wPerChannel) ? ` (${c.wPerChannel.filter((b) => b !== 0).length}/${c.wPerChannel.length} channels)` : '';
      return `${layer}=W${String(c?.w ?? '?')}${c?.a === undefined || c?.a === null ? '' : `A${String(c.a)}`}${kept}`;
    });
    return layers.length > 0 ? `plan (${layers.join(' ')})` : 'plan';
  }
  return `${String(config.quant ?? 'quantized')}${typeof config.estimator === 'string' ? ` ${config.estimator}` : ''}`;
}

/** How {@link modelOfCheckpoint} fills what the config does not say. */
export interface CheckpointModelOptions {
  /** Architecture to use instead of the config's (`export --arch`). */
  readonly arch?: string;
  /** Architecture when neither `arch` nor the config names one; without it such a checkpoint is refused. */
  readonly defaultArch?: ModelName;
}

/**
 * Rebuilds the model of the training checkpoint `checkpoint` (see the module comment). Errors start
 * with `command:` and name the file: a post-training-quantization state, an unknown architecture,
 * a plan that does not parse, or weights that do not fit the prepared model.
 */
export function modelOfCheckpoint(checkpoint: string, command: string, options: CheckpointModelOptions = {}): CheckpointModel {
  const ck = loadCheckpoint(checkpoint);
  let config = (ck.config ?? {}) as RunConfig;
  const metricsPath = join(dirname(checkpoint), 'metrics.json');
  if (config.model === undefined && existsSync(metricsPath)) {
    try {
      config = (JSON.parse(readTextLimited(metricsPath)) as { config?: RunConfig }).config ?? {};
    } catch (e) {
      throw new Error(`${command}: ${metricsPath}: not a readable JSON file (${(e as Error).message})`);
    }
  }
  const ptq = config.scheme !== undefined && config.quant === undefined;
  if (ptq && config.assignment !== undefined) {
    const lowbit = join(dirname(checkpoint), 'model.lowbit');
    throw new Error(`${command}: '${checkpoint}' is the post-training-quantization state of a --plan run; use the integer model written next to it${existsSync(lowbit) ? ` (${lowbit})` : ' (model.lowbit)'}`);
  }
  const arch = options.arch ?? (typeof config.model === 'string' ? config.model : options.defaultArch);
  if (arch === undefined) throw new Error(`${command}: --arch is required: the checkpoint names no model (known: ${MODEL_NAMES.join(', ')})`);
  const onnx = arch === 'onnx' && options.arch === undefined;
  if (!onnx && !isModelName(arch)) throw new Error(`${command}: '${checkpoint}' names an unknown model '${arch}' (known: ${MODEL_NAMES.join(', ')})`);
  const model = onnx ? onnxModelOfRun(config, checkpoint, command) : createModel(arch as ModelName, { numClasses: 10 });
  let quantized = false;
  let label = 'fp32';
  try {
    if (ptq) {
      // A lowbit quantize folder's model.safetensors: prepared as calibrate prepared it, then its frozen scales loaded.
      const settings = ptqSettingsOf(config);
      // equalized before calibration: the same structure (BatchNorms folded, ReLU6 -> ReLU); the values come from the state
      if (config.equalize !== undefined && config.equalize !== false) applyEqualizedStructure(model, config.equalize);
      const { target, prepare } = ptqTarget(model, settings);
      model.eval();
      prepareQat(model, target, prepare);
      quantized = true;
      label = `ptq ${settings.scheme}${settings.weightGroupSize === undefined ? '' : ` (Linear weights in groups of ${settings.weightGroupSize})`}`;
    } else {
      const plan = qatPlanOfRunConfig(config);
      if (plan) prepareQat(model, plan);
      quantized = plan !== null;
      label = quantLabelOfRunConfig(config, quantized);
    }
  } catch (e) {
    throw new Error(`${command}: '${checkpoint}': ${(e as Error).message}`);
  }
  try {
    model.loadStateDict(ck.model);
  } catch (e) {
    throw new Error(`${command}: '${checkpoint}' does not fit a ${arch}${quantized ? ` prepared for ${label}` : ''}: ${(e as Error).message}`);
  }
  model.eval();
  return {
    model, config, arch: arch as ModelName | 'onnx', quantized, dataset: typeof config.dataset === 'string' ? config.dataset : undefined, quantLabel: label,
    normalize: normalizeOfRunConfig(config, checkpoint, command),
  };
}

/** The imported graph of an ONNX run (config.onnx), fresh from its file. */
function onnxModelOfRun(config: RunConfig, checkpoint: string, command: string): TensorModule {
  const file = config.onnx;
  if (typeof file !== 'string' || file === '') throw new Error(`${command}: '${checkpoint}' is a run of an ONNX model but its config names no file (onnx: ${JSON.stringify(file)})`);
  if (!existsSync(file)) throw new Error(`${command}: '${checkpoint}' was fine-tuned from '${file}', which is gone: its graph is needed to load the weights`);
  return onnxTensorModule(loadOnnxImageModel(file, `${command}: the ONNX model of '${checkpoint}'`));
}

/** config.normalize checked (see parseNormalizeStats), else undefined when the config has none. */
function normalizeOfRunConfig(config: RunConfig, checkpoint: string, command: string): NormalizeStats | undefined {
  const v = config.normalize;
  if (v === undefined || v === null) return undefined;
  const stats = parseNormalizeStats(v);
  if (!stats) throw new Error(`${command}: '${checkpoint}': its normalize is ${JSON.stringify(v).slice(0, 200)}, not { mean, std } with std > 0`);
  return stats;
}

/** The calibrate settings a `lowbit quantize` state records (ptq.json's config), checked. */
function ptqSettingsOf(config: RunConfig): { scheme: string; method?: ObserverMethod; weightMethod?: ObserverMethod; weightGroupSize?: number; weightGranularity?: 'tensor' | 'channel' } {
  const { scheme, method, weightMethod, groupSize, weightGranularity } = config as Record<string, unknown>;
  if (typeof scheme !== 'string') throw new Error(`its PTQ scheme is ${JSON.stringify(scheme)}, not a string like 'w4a8'`);
  parseScheme(scheme);
  const observer = (v: unknown, name: string): ObserverMethod | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' || !(OBSERVER_METHODS as readonly string[]).includes(v)) throw new Error(`its ${name} is ${JSON.stringify(v)} (known: ${OBSERVER_METHODS.join(', ')})`);
    return v as ObserverMethod;
  };
  if (groupSize !== undefined && groupSize !== null && !(Number.isInteger(groupSize) && (groupSize as number) >= 1)) throw new Error(`its groupSize is ${JSON.stringify(groupSize)}, not a positive integer`);
  if (weightGranularity !== undefined && weightGranularity !== 'tensor' && weightGranularity !== 'channel') throw new Error(`its weightGranularity is ${JSON.stringify(weightGranularity)} (known: tensor, channel)`);
  return {
    scheme,
    ...(observer(method, 'method') ? { method: observer(method, 'method') } : {}),
    ...(observer(weightMethod, 'weightMethod') ? { weightMethod: observer(weightMethod, 'weightMethod') } : {}),
    ...(typeof groupSize === 'number' ? { weightGroupSize: groupSize } : {}),
    ...(weightGranularity === undefined ? {} : { weightGranularity }),
  };
}
