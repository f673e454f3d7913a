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
import { loadCheckpoint } from '../train/checkpoint.ts';

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
}

/** A checkpoint's model, ready to run (eval mode). */
export interface CheckpointModel {
  readonly model: TensorModule;
  readonly config: RunConfig;
  readonly arch: ModelName;
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
  if (config.scheme !== undefined && config.quant === undefined) {
    const lowbit = join(dirname(checkpoint), 'model.lowbit');
    throw new Error(`${command}: '${checkpoint}' is a post-training-quantization state, not a lowbit train checkpoint; use the integer model written next to it${existsSync(lowbit) ? ` (${lowbit})` : ' (model.lowbit)'}`);
  }
  const arch = options.arch ?? (typeof config.model === 'string' ? config.model : options.defaultArch);
  if (arch === undefined) throw new Error(`${command}: --arch is required: the checkpoint names no model (known: ${MODEL_NAMES.join(', ')})`);
  if (!isModelName(arch)) throw new Error(`${command}: '${checkpoint}' names an unknown model '${arch}' (known: ${MODEL_NAMES.join(', ')})`);
  const model = createModel(arch, { numClasses: 10 });
  let plan;
  try {
    plan = qatPlanOfRunConfig(config);
  } catch (e) {
    throw new Error(`${command}: '${checkpoint}': ${(e as Error).message}`);
  }
  if (plan) prepareQat(model, plan);
  try {
    model.loadStateDict(ck.model);
  } catch (e) {
    throw new Error(`${command}: '${checkpoint}' does not fit a ${arch}${plan ? ` prepared for ${quantLabelOfRunConfig(config, true)}` : ''}: ${(e as Error).message}`);
  }
  model.eval();
  return { model, config, arch, quantized: plan !== null, dataset: typeof config.dataset === 'string' ? config.dataset : undefined, quantLabel: quantLabelOfRunConfig(config, plan !== null) };
}
