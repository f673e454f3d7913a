/**
 * Post-training quantization: `calibrate(model, loader, options)` prepares a float model with
 * 'static' quantizers, runs calibration batches through it in eval mode with observers on, and
 * freezes scales and zero points; optionally AdaRound (learned weight rounding) and bias
 * correction follow. The result is a fake-quant model for `evaluate` and for `convert`.
 */
import { noGrad } from '../../autograd/engine.ts';
import type { Module } from '../../nn/module.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import type { QuantPlan } from '../config/plan.ts';
import { defaultAddSpec, prepareQat, quantizedLayers, quantizers, resolveTarget, type PrepareQatOptions, type QatTarget } from '../qat/prepare.ts';
import type { ResolvedLayer } from '../config/plan.ts';
import type { Linear } from '../../nn/linear.ts';
import type { QuantLayer } from '../qat/layers.ts';
import { OBSERVER_METHODS, type ObserverMethod } from '../observers/index.ts';
import { STATIC_KIND, StaticQuantizer } from './static.ts';
import { adaround, type AdaRoundOptions, type AdaRoundResult } from './adaround.ts';
import { correctBias, type BiasCorrectionResult } from './bias-correction.ts';
import { equalizeCrossLayer, type EqualizeOptions, type EqualizeResult } from './equalize.ts';

/** A weight/activation bit-width scheme 'w<bits>a<bits>' (w8a8, w4a8, w4a4, w8a4, w2a8, ...). */
export type PtqScheme = `w${number}a${number}`;
export const PTQ_SCHEMES = ['w8a8', 'w4a8', 'w4a4', 'w8a4', 'w3a8', 'w2a8'] as const;

export interface PtqPlanOptions {
  /** Activation observer (default 'minmax'). */
  readonly method?: ObserverMethod;
  /** Weight observer (default 'minmax' at ≥ 8 bits, 'mse' below). */
  readonly weightMethod?: ObserverMethod;
  /** Observer of the model input, quantized int8 affine (default 'minmax': images are bounded). */
  readonly inputMethod?: ObserverMethod;
  /** Weight granularity (default 'channel'). */
  readonly weightGranularity?: 'tensor' | 'channel';
  /** Keep the first and last layers at 8 bits (default true, as `QuantPlan`). */
  readonly keepFirstLast8bit?: boolean;
  /** Percentile of the 'percentile' method (default 99.99). */
  readonly percentile?: number;
}

/** Weight and activation bits of a scheme name. */
export function parseScheme(scheme: string): { weightBits: number; activationBits: number } {
  const m = /^w(\d+)a(\d+)$/.exec(scheme);
  const weightBits = m ? Number(m[1]) : NaN;
  const activationBits = m ? Number(m[2]) : NaN;
  if (!(weightBits >= 2 && weightBits <= 16 && activationBits >= 1 && activationBits <= 16)) {
    throw new Error(`PTQ scheme must read w<2..16>a<1..16> (e.g. ${PTQ_SCHEMES.join(', ')}), got '${scheme}'`);
  }
  return { weightBits, activationBits };
}

/**
 * The QuantPlan of a PTQ scheme: signed symmetric per-channel 'static' weights, unsigned
 * per-tensor 'static' activations (layer inputs after ReLU), an int8 affine model input.
 */
export function ptqPlan(scheme: string, options: PtqPlanOptions = {}): QuantPlan {
  const { weightBits, activationBits } = parseScheme(scheme);
  const method = checkMethod(options.method ?? 'minmax', 'method');
  const weightMethod = checkMethod(options.weightMethod ?? (weightBits >= 8 ? 'minmax' : 'mse'), 'weightMethod');
  const inputMethod = checkMethod(options.inputMethod ?? 'minmax', 'inputMethod');
  const extra = method === 'percentile' && options.percentile !== undefined ? { percentile: options.percentile } : {};
  const weight: QuantizerSpec = {
    kind: STATIC_KIND, bits: weightBits, signed: true, symmetric: true, granularity: options.weightGranularity ?? 'channel', method: weightMethod,
  };
  const activation: QuantizerSpec = { kind: STATIC_KIND, bits: activationBits, signed: false, symmetric: false, granularity: 'tensor', method, ...extra };
  return {
    default: { weight, activation },
    keepFirstLast8bit: options.keepFirstLast8bit ?? true,
    inputActivation: { kind: STATIC_KIND, bits: 8, signed: true, symmetric: false, granularity: 'tensor', method: inputMethod },
  };
}

function checkMethod(method: string, name: string): ObserverMethod {
  if (!(OBSERVER_METHODS as readonly string[]).includes(method)) throw new Error(`calibrate: ${name} must be one of ${OBSERVER_METHODS.join(', ')}, got '${method}'`);
  return method as ObserverMethod;
}

export interface CalibrateOptions extends PtqPlanOptions {
  /** What to quantize: a plan, QConfig or resolved table (its quantizers should be 'static'). */
  readonly plan?: QatTarget;
  /** Or a scheme (default 'w8a8' when no plan is given). */
  readonly scheme?: string;
  /** Number of calibration batches; when absent, `samples` decides. */
  readonly batches?: number;
  /** Number of calibration samples (default 1000; the last batch is cut). */
  readonly samples?: number;
  /** Bias correction after calibration (default false). */
  readonly biasCorrection?: boolean;
  /**
   * Cross-layer equalization of the float model first (default false; `equalizeCrossLayer`: folds
   * the BatchNorms, replaces ReLU6 between equalized pairs by ReLU, rescales the pairs). An object
   * sets its options.
   */
  readonly equalize?: boolean | EqualizeOptions;
  /** AdaRound of the ≤ 4-bit weights (default false); an object sets its options. */
  readonly adaround?: boolean | AdaRoundOptions;
  /** Options of prepareQat (BN folding pairs). */
  readonly prepare?: PrepareQatOptions;
  /**
   * Per-group weights for Linear layers: one scale per output row and per `weightGroupSize`
   * consecutive inputs (granularity 'group' on axis 1) instead of one per row, for every Linear
   * whose 'static' weight spec is per channel or per tensor and whose input count is a multiple of
   * it; the others keep their spec (named in `progress`). Conv2d weights stay as the plan says.
   * Per-group models run as fake quantization (`evaluate`); `convert` and the ONNX export refuse them.
   */
  readonly weightGroupSize?: number;
  /** Progress messages. */
  readonly progress?: (message: string) => void;
}

/** What the passes did, for printing. */
export interface CalibrationReport {
  readonly samples: number;
  readonly batches: number;
  readonly seconds: number;
  readonly adaround: AdaRoundResult[];
  readonly biasCorrection: BiasCorrectionResult[];
  /** What cross-layer equalization did (null: not asked). */
  readonly equalize: EqualizeResult | null;
}

type ForwardModule = Module & { forward(x: Tensor): Tensor };

const reports = new WeakMap<Module, CalibrationReport>();

/** The report of the last `calibrate` of `model` (undefined if never calibrated). */
export function calibrationReport(model: Module): CalibrationReport | undefined {
  return reports.get(model);
}

/** Up to `samples` inputs (or `batches` batches) of the loader, copied. */
export function collectCalibrationBatches(loader: Iterable<{ x: Tensor }>, options: { batches?: number; samples?: number } = {}): Tensor[] {
  const out: Tensor[] = [];
  const maxBatches = options.batches ?? Infinity;
  const maxSamples = options.batches === undefined ? options.samples ?? 1000 : Infinity;
  if (!(maxBatches > 0) || !(maxSamples > 0)) throw new Error('calibrate: batches and samples must be positive');
  let seen = 0;
  for (const { x } of loader) {
    if (out.length >= maxBatches || seen >= maxSamples) break;
    const take = Math.min(x.shape[0]!, maxSamples - seen);
    const per = x.size / x.shape[0]!;
    out.push(new Tensor(Float32Array.from(x.data.subarray(0, take * per)), [take, ...x.shape.slice(1)]));
    seen += take;
  }
  if (out.length === 0) throw new Error('calibrate: the loader yielded no batch');
  return out;
}

/**
 * What `calibrate(model, loader, options)` prepares `model` with: the plan (or `ptqPlan(scheme)`)
 * and the prepareQat options, with the Linear weights made per group under `weightGroupSize`
 * (`log` names the layers left as they were). A calibrated model's state dict loads into a fresh
 * model prepared with the same target (how `lowbit eval` reads a `lowbit quantize` folder).
 */
export function ptqTarget(model: Module, options: Pick<CalibrateOptions, 'plan' | 'scheme' | 'prepare' | 'weightGroupSize'> & PtqPlanOptions, log: (message: string) => void = () => {}): { target: QatTarget; prepare: PrepareQatOptions | undefined } {
  const target: QatTarget = options.plan ?? ptqPlan(options.scheme ?? 'w8a8', options);
  if (options.weightGroupSize === undefined) return { target, prepare: options.prepare };
  const { addActivation, activationGradients: _gradients, ...resolveOptions } = options.prepare ?? {};
  const table = resolveTarget(model, target, resolveOptions);
  // The adds keep the quantizer the plan would have given them (a table alone would change it).
  const prepare = { ...options.prepare, addActivation: addActivation === undefined ? defaultAddSpec(target, table) : addActivation };
  return { target: groupLinearWeights(model, table, options.weightGroupSize, log), prepare };
}

/** `table` with the 'static' weights of Linear layers made per group of `groupSize` inputs where their input count allows. */
function groupLinearWeights(model: Module, table: readonly ResolvedLayer[], groupSize: number, log: (message: string) => void): ResolvedLayer[] {
  if (!Number.isInteger(groupSize) || groupSize < 1) throw new Error(`calibrate: weightGroupSize must be a positive integer, got ${groupSize}`);
  let grouped = 0;
  const out = table.map((row) => {
    const spec = row.weightSpec;
    if (row.type !== 'Linear' || spec === null || spec.kind !== STATIC_KIND) return row;
    const inputs = (model.getSubmodule(row.name) as Linear).inFeatures;
    if (spec['granularity'] === 'group' || spec['channelBits'] !== undefined) {
      log(`${row.name}: weights keep the plan's ${spec['granularity'] === 'group' ? 'groups' : 'per-channel bit widths'} (weightGroupSize not applied)`);
      return row;
    }
    if (inputs % groupSize !== 0) {
      log(`${row.name}: ${inputs} inputs are not a multiple of weightGroupSize ${groupSize}: weights stay ${String(spec['granularity'] ?? 'channel') === 'tensor' ? 'per tensor' : 'per output channel'}`);
      return row;
    }
    grouped++;
    const { axis: _axis, ...rest } = spec;
    return { ...row, weightSpec: { ...rest, granularity: 'group', axis: 1, groupSize } };
  });
  log(`weights of ${grouped} Linear layer${grouped === 1 ? '' : 's'} in groups of ${groupSize} inputs`);
  return out;
}

/**
 * Post-training quantization of a float `model` (in place; returned):
 * 0. with `equalize`, cross-layer equalization of the float model (BatchNorms folded first);
 * 1. `prepareQat` with the plan (or `ptqPlan(scheme)`), in eval mode: a Conv2d followed by a
 *    BatchNorm2d becomes a QuantConvBn2d folding the BN's running statistics (never trained);
 * 2. every 'static' quantizer observes the calibration batches (the float model runs) and
 *    freezes (s, z) — weights per output channel by default;
 * 3. AdaRound (`adaround`) of the ≤ 4-bit weights, then bias correction (`biasCorrection`).
 * The model is left in eval mode.
 */
export function calibrate<M extends ForwardModule>(model: M, loader: Iterable<{ x: Tensor }>, options: CalibrateOptions = {}): M {
  const start = performance.now();
  const log = options.progress ?? (() => {});
  const batches = collectCalibrationBatches(loader, options);
  const samples = batches.reduce((n, b) => n + b.shape[0]!, 0);
  const equalized = options.equalize ? equalizeCrossLayer(model, { sample: batches[0], ...(typeof options.equalize === 'object' ? options.equalize : {}) }) : null;
  if (equalized) log(`cross-layer equalization: ${equalized.folded.length} BatchNorms folded, ${equalized.pairs.length} pairs in ${equalized.iterations} sweeps${equalized.replacedRelu6.length > 0 ? `, ReLU6 -> ReLU at ${equalized.replacedRelu6.join(', ')}` : ''}`);
  const { target, prepare } = ptqTarget(model, options, log);
  model.eval();
  prepareQat(model, target, prepare);
  const statics = quantizers(model).filter((q): q is StaticQuantizer => q instanceof StaticQuantizer);
  if (statics.length === 0) throw new Error(`calibrate: the plan has no '${STATIC_KIND}' quantizer to calibrate`);
  for (const q of statics) q.startCalibration();
  noGrad(() => {
    for (const x of batches) model.forward(x);
  });
  for (const q of statics) q.freeze();
  log(`calibrated ${statics.length} quantizers on ${samples} samples (${batches.length} batches)`);

  let adaroundResults: AdaRoundResult[] = [];
  // Bias correction measures E[(W_q − W)x] against the float weights AdaRound is about to overwrite.
  const floatWeights = new Map<QuantLayer, Tensor>();
  if (options.adaround && options.biasCorrection) {
    for (const { layer } of quantizedLayers(model)) {
      const w = layer.exportLayer().weightFloat;
      floatWeights.set(layer, new Tensor(w.data.slice(), w.shape)); // a copy: detach() may share the data
    }
  }
  if (options.adaround) {
    const adaOptions = typeof options.adaround === 'object' ? options.adaround : {};
    adaroundResults = adaround(model, batches, { ...adaOptions, progress: log });
  }
  const biasResults = options.biasCorrection ? correctBias(model, batches, { progress: log, floatWeights }) : [];
  reports.set(model, {
    samples, batches: batches.length, seconds: (performance.now() - start) / 1000, adaround: adaroundResults, biasCorrection: biasResults, equalize: equalized,
  });
  return model;
}
