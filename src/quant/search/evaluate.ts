/**
 * Accuracy of a bit assignment: PTQ (calibrate the plan and evaluate; what a search calls for
 * every candidate) or QAT (calibrate, then fine-tune the weights through the fake quantizers;
 * what beacons and final comparisons use). The model is quantized in place and restored
 * afterwards, so one trained float model serves every candidate.
 */
import type { Module, TensorModule } from '../../nn/module.ts';
import { BatchNorm } from '../../nn/batchnorm.ts';
import { Adam } from '../../optim/adam.ts';
import { crossEntropy } from '../../tensor/ops.ts';
import { manualSeed } from '../../tensor/random.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { evaluate, type Batch } from '../../train/fit.ts';
import { ProgressBar } from '../../train/progress.ts';
import { quantizableLayers } from '../config/plan.ts';
import { calibrate } from '../ptq/calibrate.ts';
import { prepareQat } from '../qat/prepare.ts';
import { qatParamGroups } from '../qat/param-groups.ts';
import { describeLayers } from './layers.ts';
import { planFromAssignment, type PlanBase } from './plan.ts';
import type { BitAssignment } from './types.ts';

/** The data a search evaluates with. */
export interface SearchData {
  /** Calibration batches (PTQ; only `x` is read). */
  readonly calibration: Iterable<{ x: Tensor }>;
  /** Batches accuracy and loss are measured on. */
  readonly eval: Iterable<Batch>;
  /** Training batches of the QAT fine-tune (cycled when shorter than `qatSteps`). */
  readonly train?: Iterable<Batch>;
}

export interface EvaluateAssignmentOptions {
  /** 'ptq': calibrate and evaluate; 'qat': calibrate, fine-tune `qatSteps` steps, evaluate. */
  readonly method: 'ptq' | 'qat';
  /** Quantizer kinds of the plan (default: 'static' weights and activations, see `PlanBase`). */
  readonly base?: PlanBase;
  /** Calibration samples (default 512). */
  readonly calibrationSamples?: number;
  /** QAT fine-tune steps (default 200). */
  readonly qatSteps?: number;
  /** QAT learning rate (Adam; default 1e-4), cosine-decayed to 0 over the steps. */
  readonly qatLr?: number;
  /** Seed of in-model randomness (dropout) during QAT (default 0). */
  readonly seed?: number;
  /** Progress bar of the QAT steps on stderr (default false). */
  readonly progress?: boolean;
  /**
   * Called with the quantized model before it is restored (e.g. to `convert` it). The model is
   * in eval mode; keep no reference to it past the call.
   */
  readonly inspect?: (model: TensorModule) => void;
}

export interface AssignmentScore {
  /** Fraction in [0, 1]. */
  readonly accuracy: number;
  /** Mean cross-entropy per sample. */
  readonly loss: number;
}

/** The first quantizable layer in forward order (its input is the model input). */
export function firstLayerName(model: Module, sampleShape: readonly number[]): string {
  return describeLayers(model, sampleShape)[0]!.name;
}

/** @internal What `snapshot` returns: puts the model back as it was. */
export interface Snapshot {
  restore(): void;
}

/**
 * @internal Records every parameter and buffer value, the module tree's quantizable layers and
 * BatchNorms, and the mode, so a model quantized in place can be restored.
 */
export function snapshot(model: Module): Snapshot {
  // The live tensors (stateDict() returns copies), with copies of their values.
  const values = [...new Set([...model.parameters(), ...model.buffers()])].map((t) => [t, t.data.slice()] as const);
  const modules = new Map<string, Module>();
  for (const { name, module } of quantizableLayers(model)) modules.set(name, module);
  for (const [name, m] of model.namedModules()) if (m instanceof BatchNorm) modules.set(name, m);
  const training = model.training;
  const flags = model.parameters().map((p) => [p, p.requiresGrad] as const);
  return {
    restore() {
      for (const [name, m] of modules) if (model.getSubmodule(name) !== m) model.setSubmodule(name, m);
      for (const [t, data] of values) t.data.set(data);
      for (const [p, flag] of flags) {
        p.requiresGrad_(flag);
        p.grad = null;
      }
      model.train(training);
    },
  };
}

/**
 * Quantizes a float `model` in place by `assignment` (planFromAssignment with `options.base`,
 * the model's first layer taking the signed input spec), calibrates it and, for 'qat',
 * fine-tunes it: Adam on the weights (and any quantizer parameters, LR ×0.1) for `qatSteps`
 * steps with cosine decay over `data.train`. Returns the model in eval mode.
 */
export function quantizeAssignment(model: TensorModule, assignment: BitAssignment, data: SearchData, options: EvaluateAssignmentOptions): TensorModule {
  const firstBatch = firstOf(data.calibration);
  const base: PlanBase = { firstLayer: firstLayerName(model, firstBatch.x.shape.slice(1)), ...options.base };
  const plan = planFromAssignment(assignment, base);
  calibrate(model, data.calibration, { plan, samples: options.calibrationSamples ?? 512 });
  if (options.method === 'qat') fineTune(model, data, options);
  model.eval();
  return model;
}

function firstOf<T>(it: Iterable<T>): T {
  for (const v of it) return v;
  throw new Error('evaluateAssignment: the calibration data is empty');
}

function fineTune(model: TensorModule, data: SearchData, options: EvaluateAssignmentOptions): void {
  if (!data.train) throw new Error("evaluateAssignment: method 'qat' needs data.train");
  const steps = options.qatSteps ?? 200;
  const lr = options.qatLr ?? 1e-4;
  if (!Number.isInteger(steps) || steps < 0) throw new Error(`evaluateAssignment: qatSteps must be a non-negative integer, got ${steps}`);
  if (!(lr >= 0)) throw new Error(`evaluateAssignment: qatLr must be >= 0, got ${lr}`);
  manualSeed(options.seed ?? 0);
  const optimizer = new Adam(qatParamGroups(model, { lr }));
  const baseLr = optimizer.paramGroups.map((g) => g.lr);
  const bar = options.progress ? new ProgressBar({ total: steps, label: 'qat fine-tune' }) : null;
  model.train();
  let step = 0;
  while (step < steps) {
    let any = false;
    for (const { x, y } of data.train) {
      if (step >= steps) break;
      any = true;
      const scale = 0.5 * (1 + Math.cos((Math.PI * step) / steps));
      optimizer.paramGroups.forEach((g, i) => (g.lr = baseLr[i]! * scale));
      const loss = crossEntropy(model.forward(x), y);
      loss.backward();
      optimizer.step();
      optimizer.zeroGrad();
      step++;
      bar?.tick(1, { loss: loss.item() });
    }
    if (!any) throw new Error('evaluateAssignment: data.train yielded no batch');
  }
  bar?.done();
  model.eval();
}

/**
 * Accuracy and loss of `model` quantized by `assignment` (see `quantizeAssignment`), measured
 * on `data.eval` in fake-quant simulation. The float model is restored afterwards (weights,
 * buffers, modules, mode), so candidates can be evaluated one after another on one model.
 */
export async function evaluateAssignment(model: TensorModule, assignment: BitAssignment, data: SearchData, options: EvaluateAssignmentOptions): Promise<AssignmentScore> {
  return evaluateAssignmentSync(model, assignment, data, options);
}

/** Synchronous form of `evaluateAssignment`. */
export function evaluateAssignmentSync(model: TensorModule, assignment: BitAssignment, data: SearchData, options: EvaluateAssignmentOptions): AssignmentScore {
  const snap = snapshot(model);
  try {
    quantizeAssignment(model, assignment, data, options);
    const r = evaluate(model, data.eval);
    options.inspect?.(model);
    return { accuracy: r.accuracy, loss: r.loss };
  } finally {
    snap.restore();
  }
}
