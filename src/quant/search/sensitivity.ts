/**
 * Layer and channel sensitivity to weight quantization, three ways:
 * - Hessian trace by Hutchinson's estimator (HAWQ-v2, Dong et al. 2020): Tr(H_l) ≈ mean over
 *   Rademacher vectors v of v_lᵀ(Hv)_l, with Hv by double backward;
 * - PTQ loss perturbation: the loss increase when only layer l's weights are quantized to b bits
 *   (MOHAQ-style direct measurement);
 * - the empirical Fisher information diagonal, E[(∂ℓ/∂w)²] over single samples.
 * Each gives per-layer (and, for Hessian and Fisher, per-output-channel) numbers that
 * `quantizationErrors` turns into the additive error estimates the allocators minimise.
 */
import { grad, noGrad } from '../../autograd/engine.ts';
import type { TensorModule } from '../../nn/module.ts';
import { add, crossEntropy, logSoftmax, mul, sum } from '../../tensor/ops.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { Batch } from '../../train/fit.ts';
import { quantizableLayers } from '../config/plan.ts';
import { createQuantizer } from '../quantizers/quantizer.ts';
import type { QuantPlan } from '../config/plan.ts';
import { calibrate } from '../ptq/calibrate.ts';
import '../ptq/static.ts';
import { snapshot } from './evaluate.ts';
import { describeLayers } from './layers.ts';
import { activationSpecFor } from './plan.ts';

/** Sensitivity of one layer: a total over its weights and the same per output channel. */
export interface LayerSensitivity {
  readonly name: string;
  /** The layer's number (Hessian trace, Fisher trace). */
  readonly value: number;
  /** value / weightCount: HAWQ-v2's average trace. */
  readonly mean: number;
  readonly weightCount: number;
  /** Per output channel (sum over the channel's weights), when computed. */
  readonly perChannel?: Float64Array;
  /** Per-weight diagonal estimate (Hutchinson v⊙Hv averaged, or Fisher E[g²]), when kept. */
  readonly diagonal?: Float64Array;
}

export interface HessianTraceOptions {
  /** Rademacher vectors (Hutchinson samples; default 32). */
  readonly samples?: number;
  /** Batches of `data` used (default 1: the first); each vector's Hv is averaged over them. */
  readonly batches?: number;
  /** Also return per-output-channel traces (and the per-weight diagonal estimate). */
  readonly perChannel?: boolean;
  /** Seed of the Rademacher vectors (default 0). */
  readonly seed?: number;
  /** Called after each sample with (done, total). */
  readonly onProgress?: (done: number, total: number) => void;
}

/** Weight tensors of the Conv2d / Linear layers (definition order) with their names. */
function layerWeights(model: TensorModule): { name: string; weight: Tensor }[] {
  const layers = quantizableLayers(model);
  if (layers.length === 0) throw new Error(`sensitivity: ${model.constructor.name} has no Conv2d or Linear layer (already prepared?)`);
  return layers.map(({ name, module }) => ({ name, weight: module.weight }));
}

function takeBatches(data: Iterable<Batch>, count: number): Batch[] {
  if (!Number.isInteger(count) || count < 1) throw new Error(`sensitivity: batches must be a positive integer, got ${count}`);
  const out: Batch[] = [];
  for (const b of data) {
    out.push(b);
    if (out.length >= count) break;
  }
  if (out.length === 0) throw new Error('sensitivity: the data yielded no batch');
  return out;
}

/** Runs fn with the model in eval mode and the weights requiring grad; restores both. */
function withEvalGrad<T>(model: TensorModule, weights: readonly Tensor[], fn: () => T): T {
  const wasTraining = model.training;
  const flags = weights.map((w) => w.requiresGrad);
  model.eval();
  for (const w of weights) w.requiresGrad_(true);
  try {
    return fn();
  } finally {
    weights.forEach((w, i) => {
      w.requiresGrad_(flags[i]!);
      w.grad = null;
    });
    model.train(wasTraining);
  }
}

function perChannelSums(values: ArrayLike<number>, channels: number): Float64Array {
  const out = new Float64Array(channels);
  const per = values.length / channels;
  for (let i = 0; i < values.length; i++) out[Math.floor(i / per)]! += values[i]!;
  return out;
}

function summarize(name: string, diag: Float64Array, channels: number, keepChannels: boolean): LayerSensitivity {
  let total = 0;
  for (const v of diag) total += v;
  const base = { name, value: total, mean: total / diag.length, weightCount: diag.length };
  return keepChannels ? { ...base, perChannel: perChannelSums(diag, channels), diagonal: diag } : base;
}

/**
 * Hessian-vector products of the mean cross-entropy on `batches` w.r.t. `weights` (double backward):
 * Hv = ∂/∂w (∂L/∂w · v), averaged over the batches.
 */
export function hessianVectorProduct(model: TensorModule, batches: readonly Batch[], weights: readonly Tensor[], vectors: readonly Tensor[]): Float64Array[] {
  const out = weights.map((w) => new Float64Array(w.size));
  for (const { x, y } of batches) {
    const loss = crossEntropy(model.forward(x), y);
    const g = grad(loss, weights, { createGraph: true });
    let dot: Tensor | null = null;
    g.forEach((gi, i) => {
      const term = sum(mul(gi, vectors[i]!));
      dot = dot === null ? term : add(dot, term);
    });
    const hv = grad(dot!, weights);
    hv.forEach((h, i) => {
      const o = out[i]!;
      for (let k = 0; k < o.length; k++) o[k]! += h.data[k]! / batches.length;
    });
  }
  return out;
}

/**
 * Hessian trace of the loss w.r.t. each layer's weights by Hutchinson's estimator:
 *   Tr(H_l) ≈ (1/m) Σ_{j=1..m} v_jᵀ (H v_j)_l,  v_j Rademacher (±1) over all layers' weights,
 * unbiased for each diagonal block (E[v_l v_kᵀ] = 0 for l ≠ k). Per channel: the same sum
 * restricted to the channel's weights; `diagonal` keeps v ⊙ Hv averaged (Bekas et al.'s diagonal
 * estimator). The model runs in eval mode (BatchNorm running statistics, no dropout).
 */
export function hessianTrace(model: TensorModule, data: Iterable<Batch>, options: HessianTraceOptions = {}): LayerSensitivity[] {
  const samples = options.samples ?? 32;
  if (!Number.isInteger(samples) || samples < 1) throw new Error(`hessianTrace: samples must be a positive integer, got ${samples}`);
  const batches = takeBatches(data, options.batches ?? 1);
  const layers = layerWeights(model);
  const weights = layers.map((l) => l.weight);
  const rng = new Rng(options.seed ?? 0);
  const diag = weights.map((w) => new Float64Array(w.size));
  withEvalGrad(model, weights, () => {
    for (let j = 0; j < samples; j++) {
      const vs = weights.map((w) => {
        const v = new Float32Array(w.size);
        for (let k = 0; k < v.length; k++) v[k] = rng.nextUint32() & 1 ? 1 : -1;
        return new Tensor(w.dtype === 'float64' ? Float64Array.from(v) : v, w.shape);
      });
      const hv = hessianVectorProduct(model, batches, weights, vs);
      hv.forEach((h, i) => {
        const v = vs[i]!.data;
        const d = diag[i]!;
        for (let k = 0; k < d.length; k++) d[k]! += (v[k]! * h[k]!) / samples;
      });
      options.onProgress?.(j + 1, samples);
    }
  });
  return layers.map((l, i) => summarize(l.name, diag[i]!, l.weight.shape[0]!, options.perChannel ?? false));
}

export interface FisherOptions {
  /** Single samples whose squared gradients are averaged (default 256). */
  readonly samples?: number;
  /** Also return per-output-channel sums and the per-weight diagonal. */
  readonly perChannel?: boolean;
  readonly onProgress?: (done: number, total: number) => void;
}

/**
 * Empirical Fisher information diagonal of each layer's weights, F_ii = E_n[(∂ℓ_n/∂w_i)²] over
 * single samples n (per-sample gradients: one backward per sample), summed per layer (the Fisher
 * trace) and per output channel. Eval mode.
 */
export function fisherInformation(model: TensorModule, data: Iterable<Batch>, options: FisherOptions = {}): LayerSensitivity[] {
  const wanted = options.samples ?? 256;
  if (!Number.isInteger(wanted) || wanted < 1) throw new Error(`fisherInformation: samples must be a positive integer, got ${wanted}`);
  const layers = layerWeights(model);
  const weights = layers.map((l) => l.weight);
  const diag = weights.map((w) => new Float64Array(w.size));
  let seen = 0;
  withEvalGrad(model, weights, () => {
    outer: for (const { x, y } of data) {
      const n = x.shape[0]!;
      const per = x.size / n;
      for (let s = 0; s < n; s++) {
        if (seen >= wanted) break outer;
        const xs = new Tensor(x.data.slice(s * per, (s + 1) * per), [1, ...x.shape.slice(1)]);
        const ys = new Tensor(y.data.slice(s, s + 1), [1]);
        const g = grad(crossEntropy(model.forward(xs), ys), weights);
        g.forEach((gi, i) => {
          const d = diag[i]!;
          for (let k = 0; k < d.length; k++) d[k]! += gi.data[k]! * gi.data[k]!;
        });
        seen++;
        options.onProgress?.(seen, wanted);
      }
    }
  });
  if (seen === 0) throw new Error('fisherInformation: the data yielded no sample');
  for (const d of diag) for (let k = 0; k < d.length; k++) d[k]! /= seen;
  return layers.map((l, i) => summarize(l.name, diag[i]!, l.weight.shape[0]!, options.perChannel ?? false));
}

export interface WeightQuantOptions {
  /** Observer of the per-channel symmetric weight quantizer (default 'mse'; 'minmax' at ≥ 8 bits). */
  readonly method?: string;
}

/**
 * The weight of `w` fake-quantized as a search plan quantizes it: 'static' signed symmetric per
 * output channel at `bits` (1 bit: sign with per-channel α = mean|w_c|), data-free calibration.
 */
export function quantizeWeight(w: Tensor, bits: number, options: WeightQuantOptions = {}): Float32Array {
  return noGrad(() => {
    const spec = bits === 1
      ? { kind: 'binary', bits: 1, granularity: 'channel' }
      : { kind: 'static', bits, signed: true, symmetric: true, granularity: 'channel', method: options.method ?? (bits >= 8 ? 'minmax' : 'mse') };
    const q = createQuantizer(spec, { role: 'weight', shape: w.shape, channelAxis: 0 });
    q.eval();
    return Float32Array.from(q.forward(w.detach()).data);
  });
}

/** Per output channel Σ (Q_b(w) − w)² of one weight tensor. */
export function channelQuantErrors(w: Tensor, bits: number, options: WeightQuantOptions = {}): Float64Array {
  const q = quantizeWeight(w, bits, options);
  const d = new Float64Array(q.length);
  for (let i = 0; i < q.length; i++) d[i] = (q[i]! - w.data[i]!) ** 2;
  return perChannelSums(d, w.shape[0]!);
}

export interface PtqPerturbation {
  readonly name: string;
  /** bits → loss increase over the float model when only this layer's weights are quantized. */
  readonly deltaLoss: Record<number, number>;
  /** bits → accuracy change (fraction, negative = worse). */
  readonly deltaAccuracy: Record<number, number>;
  /**
   * bits → mean KL(p_float ‖ p_quantized) of the output distributions: ≥ 0 and far less noisy
   * than Δloss when the perturbation is small (ZeroQ's sensitivity).
   */
  readonly kl: Record<number, number>;
}

/** Log-probabilities [N, C] of the model on every batch, and the labels. */
/** @internal Log-probabilities, loss and accuracy of `model` (eval, no grad) on `batches`. */
export function logProbs(model: TensorModule, batches: readonly Batch[]): { lp: Float64Array[]; loss: number; accuracy: number } {
  const wasTraining = model.training;
  model.eval();
  try {
    return noGrad(() => {
      let lossSum = 0;
      let correct = 0;
      let count = 0;
      const lp = batches.map(({ x, y }) => {
        const out = logSoftmax(model.forward(x), 1);
        const [n, c] = out.shape as [number, number];
        for (let i = 0; i < n; i++) {
          const row = out.data.subarray(i * c, (i + 1) * c);
          const label = y.data[i]!;
          lossSum -= row[label]!;
          let best = 0;
          for (let j = 1; j < c; j++) if (row[j]! > row[best]!) best = j;
          if (best === label) correct++;
        }
        count += n;
        return Float64Array.from(out.data);
      });
      return { lp, loss: lossSum / count, accuracy: correct / count };
    });
  } finally {
    model.train(wasTraining);
  }
}

/** Mean KL(p ‖ q) per sample of two models' log-probabilities on the same batches. */
function meanKl(p: readonly Float64Array[], q: readonly Float64Array[], batches: readonly Batch[]): number {
  let sum = 0;
  let rows = 0;
  p.forEach((pk, k) => {
    const qk = q[k]!;
    for (let i = 0; i < pk.length; i++) sum += Math.exp(pk[i]!) * (pk[i]! - qk[i]!);
    rows += batches[k]!.y.shape[0]!;
  });
  return sum / rows;
}

/**
 * Loss perturbation of weight PTQ per layer and bit width: for each layer l and each b in `bits`,
 * quantize only l's weights (`quantizeWeight`: per-channel symmetric, MSE-calibrated) and measure,
 * on `data` against the float model: the mean loss increase, the accuracy change and the mean
 * KL divergence of the output distributions. Activations stay float; the weights are restored
 * after each measurement.
 */
export function ptqPerturbation(model: TensorModule, data: Iterable<Batch>, bits: readonly number[], options: WeightQuantOptions & { onProgress?: (done: number, total: number) => void } = {}): PtqPerturbation[] {
  if (bits.length === 0 || bits.some((b) => !Number.isInteger(b) || b < 1 || b > 16)) throw new Error(`ptqPerturbation: bits must be integers in [1, 16], got ${JSON.stringify(bits)}`);
  const layers = layerWeights(model);
  const batches = [...data];
  if (batches.length === 0) throw new Error('ptqPerturbation: the data yielded no batch');
  const base = logProbs(model, batches);
  const total = layers.length * bits.length;
  let done = 0;
  return layers.map(({ name, weight }) => {
    const original = weight.data.slice();
    const deltaLoss: Record<number, number> = {};
    const deltaAccuracy: Record<number, number> = {};
    const kl: Record<number, number> = {};
    try {
      for (const b of bits) {
        weight.data.set(quantizeWeight(weight, b, options));
        const r = logProbs(model, batches);
        deltaLoss[b] = r.loss - base.loss;
        deltaAccuracy[b] = r.accuracy - base.accuracy;
        kl[b] = meanKl(base.lp, r.lp, batches);
        weight.data.set(original);
        options.onProgress?.(++done, total);
      }
    } finally {
      weight.data.set(original);
    }
    return { name, deltaLoss, deltaAccuracy, kl };
  });
}

/**
 * Second-order estimate of the loss increase of quantizing a layer's weights to b bits:
 *   ΔL ≈ ½ Σ_i h_i (Q_b(w_i) − w_i)²
 * with h_i the Hessian (or Fisher) diagonal: per channel when `sensitivity.perChannel` is there
 * (h_i = the channel's mean), else the layer's mean trace (HAWQ-v2's Ω = Tr(H)/n·‖Q(W) − W‖²,
 * halved). Returns bits → estimate.
 */
export function quantizationErrors(w: Tensor, sensitivity: LayerSensitivity, bits: readonly number[], options: WeightQuantOptions = {}): Record<number, number> {
  const channels = w.shape[0]!;
  const perWeight = w.size / channels;
  const out: Record<number, number> = {};
  for (const b of bits) {
    const e = channelQuantErrors(w, b, options);
    let total = 0;
    for (let c = 0; c < channels; c++) {
      const h = sensitivity.perChannel ? sensitivity.perChannel[c]! / perWeight : sensitivity.mean;
      total += 0.5 * h * e[c]!;
    }
    out[b] = total;
  }
  return out;
}

/** Rank correlations of two score lists of equal length. */
export interface RankCorrelation {
  /** Spearman's ρ: Pearson correlation of the ranks (ties get average ranks). */
  readonly spearman: number;
  /** Kendall's τ-b (tie-corrected). */
  readonly kendall: number;
}

/** Average ranks (1-based) of `v`; ties share the mean of their positions. */
export function ranks(v: readonly number[]): number[] {
  const order = v.map((x, i) => [x, i] as const).sort((a, b) => a[0] - b[0]);
  const r = new Array<number>(v.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++;
    const avg = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) r[order[k]![1]] = avg;
    i = j + 1;
  }
  return r;
}

/** Spearman's ρ and Kendall's τ-b of `a` and `b` (length ≥ 2; NaN when one list is constant). */
export function rankCorrelation(a: readonly number[], b: readonly number[]): RankCorrelation {
  if (a.length !== b.length) throw new Error(`rankCorrelation: lists differ in length (${a.length} vs ${b.length})`);
  if (a.length < 2) throw new Error('rankCorrelation: needs at least 2 items');
  if ([...a, ...b].some((x) => !Number.isFinite(x))) throw new Error('rankCorrelation: values must be finite');
  const ra = ranks(a);
  const rb = ranks(b);
  const n = a.length;
  const mean = (n + 1) / 2;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (ra[i]! - mean) * (rb[i]! - mean);
    saa += (ra[i]! - mean) ** 2;
    sbb += (rb[i]! - mean) ** 2;
  }
  const spearman = sab / Math.sqrt(saa * sbb);
  let concordant = 0;
  let discordant = 0;
  let tiesA = 0;
  let tiesB = 0;
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const da = Math.sign(a[i]! - a[j]!);
      const db = Math.sign(b[i]! - b[j]!);
      if (da === 0 && db === 0) continue;
      if (da === 0) tiesA++;
      else if (db === 0) tiesB++;
      else if (da === db) concordant++;
      else discordant++;
    }
  }
  const kendall = (concordant - discordant) / Math.sqrt((concordant + discordant + tiesA) * (concordant + discordant + tiesB));
  return { spearman, kendall };
}

/** Per-layer input-activation perturbation (`activationPerturbation`). */
export interface ActivationPerturbation {
  readonly name: string;
  /** bits → loss increase over the float model when only this layer's input is quantized. */
  readonly deltaLoss: Record<number, number>;
  /** bits → accuracy change (fraction, negative = worse). */
  readonly deltaAccuracy: Record<number, number>;
  /** bits → mean KL(p_float ‖ p_quantized) of the output distributions. */
  readonly kl: Record<number, number>;
}

export interface ActivationPerturbationOptions {
  /** Observer of the calibrated activation range (default 'mse'). */
  readonly method?: string;
  /** Calibration samples (default 512). */
  readonly calibrationSamples?: number;
  /** The layer whose input is the model input (signed); default the first layer in forward order. */
  readonly firstLayer?: string;
  readonly onProgress?: (done: number, total: number) => void;
}

/**
 * The activation counterpart of `ptqPerturbation`: for each quantizable layer l and each b in
 * `bits`, quantize only l's input activation (a calibrated 'static' per-tensor quantizer, range
 * from `options.method` on `calibration`; signed for the model input) and measure on `data`,
 * against the float model, the mean loss increase, the accuracy change and the mean KL of the
 * output distributions. Weights and every other activation stay float; the model is restored
 * after each measurement. With `ptqPerturbation` (or a Hessian estimate) for the weights it gives
 * additive (w, a) errors for searches over weight and activation bits.
 */
export function activationPerturbation(model: TensorModule, calibration: Iterable<{ x: Tensor }>, data: Iterable<Batch>, bits: readonly number[], options: ActivationPerturbationOptions = {}): ActivationPerturbation[] {
  if (bits.length === 0 || bits.some((b) => !Number.isInteger(b) || b < 2 || b > 16)) throw new Error(`activationPerturbation: bits must be integers in [2, 16], got ${JSON.stringify(bits)}`);
  const batches = [...data];
  if (batches.length === 0) throw new Error('activationPerturbation: the data yielded no batch');
  const calib = [...calibration];
  if (calib.length === 0) throw new Error('activationPerturbation: the calibration data yielded no batch');
  const names = layerWeights(model).map((l) => l.name);
  const first = options.firstLayer ?? describeLayers(model, calib[0]!.x.shape.slice(1))[0]!.name;
  const base = logProbs(model, batches);
  const total = names.length * bits.length;
  let done = 0;
  return names.map((name) => {
    const deltaLoss: Record<number, number> = {};
    const deltaAccuracy: Record<number, number> = {};
    const kl: Record<number, number> = {};
    for (const b of bits) {
      const snap = snapshot(model);
      try {
        const activation = activationSpecFor(b, name === first, { activationMethod: options.method ?? 'mse' });
        const plan: QuantPlan = { default: { weight: null, activation: null }, overrides: [{ match: name, config: { weight: null, activation } }], keepFirstLast8bit: false, inputActivation: 'layer' };
        calibrate(model, calib, { plan, samples: options.calibrationSamples ?? 512 });
        const r = logProbs(model, batches);
        deltaLoss[b] = r.loss - base.loss;
        deltaAccuracy[b] = r.accuracy - base.accuracy;
        kl[b] = meanKl(base.lp, r.lp, batches);
      } finally {
        snap.restore();
      }
      options.onProgress?.(++done, total);
    }
    return { name, deltaLoss, deltaAccuracy, kl };
  });
}
