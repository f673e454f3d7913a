/**
 * AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"):
 * instead of rounding every weight to nearest, learn per weight whether to round up or down so
 * that the layer output is reconstructed. With the frozen per-channel scale s and zero point z,
 *   h(V) = clip(σ(V)·(ζ − γ) + γ, 0, 1),   ζ = 1.1, γ = −0.1   (rectified sigmoid),
 *   W̃ = s·(clamp(⌊W/s⌋ + h(V) + z, qmin, qmax) − z),
 * and V minimises, on the layer's calibration inputs x (as the quantized model computes them),
 *   ‖W̃x − Wx‖²  (summed over outputs, averaged over samples)  +  λ·Σ (1 − |2h(V) − 1|^β),
 * the regulariser driving h to 0 or 1 while β anneals from 20 to 2 (linearly, after a warm-up
 * of 20 % of the iterations without the regulariser, as in the reference implementation).
 * V starts at h(V) = W/s − ⌊W/s⌋ (so W̃ = W before clamping); Adam, lr 1e-3.
 * Afterwards the rounding is made hard (h = 1 where V ≥ 0, i.e. h(V) ≥ 0.5) and W̃ is written
 * into the layer's weight (for a QuantConvBn2d, W̃ divided by the BN fold factor γ/√(σ² + ε)),
 * so the frozen weight quantizer reproduces W̃ exactly and `exportLayer()` carries it.
 * Layers are processed in definition order, each on inputs through the already rounded layers.
 */
import { noGrad } from '../../autograd/engine.ts';
import type { Module } from '../../nn/module.ts';
import { Adam } from '../../optim/adam.ts';
import { abs, add, clamp, mul, pow, sigmoid, square, sub, sum } from '../../tensor/ops.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { QuantConvBn2d, type LayerGeometry, type QuantLayer } from '../qat/layers.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { quantizedLayers } from '../qat/prepare.ts';
import type { QParams } from '../core/qparams.ts';
import { paramIndex } from '../core/qparams.ts';
import { StaticQuantizer } from './static.ts';
import { captureLayerInputs, concatBatches, layerOp, takeRows } from './layer-io.ts';

export interface AdaRoundOptions {
  /** Optimisation steps per layer (default 500). */
  readonly iterations?: number;
  /** Adam learning rate (default 1e-3). */
  readonly lr?: number;
  /** β annealed from beta[0] to beta[1] (default [20, 2]). */
  readonly beta?: readonly [number, number];
  /** Regulariser weight λ (default 0.01). */
  readonly lambda?: number;
  /** Samples per step (default 32). */
  readonly batchSize?: number;
  /** Calibration samples cached per layer (default 1024). */
  readonly samples?: number;
  /** Fraction of iterations without the regulariser (default 0.2). */
  readonly warmup?: number;
  /** Only layers whose weight has at most this many bits (default 4). */
  readonly maxBits?: number;
  readonly seed?: number;
}

export interface AdaRoundResult {
  readonly layer: string;
  /** ‖W̃x − Wx‖² per sample with nearest rounding and with AdaRound, on the cached inputs. */
  readonly nearestError: number;
  readonly adaroundError: number;
  /** Fraction of weights rounded differently from nearest. */
  readonly flipped: number;
}

const ZETA = 1.1;
const GAMMA = -0.1;

/** The rectified sigmoid h(V). */
function rectifiedSigmoid(v: Tensor): Tensor {
  return clamp(add(mul(sigmoid(v), ZETA - GAMMA), GAMMA), 0, 1);
}

/** Per-element scale and zero point of a weight under `qp`, as Float32 tensors shaped like w. */
function expandQParams(shape: readonly number[], qp: QParams): { s: Float32Array; z: Float32Array } {
  const size = shape.reduce((p, d) => p * d, 1);
  const idx = paramIndex(shape, qp);
  const s = new Float32Array(size);
  const z = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    s[i] = qp.scale[idx(i)]!;
    z[i] = qp.zeroPoint[idx(i)]!;
  }
  return { s, z };
}

/** s·(clamp(base + h + z, qmin, qmax) − z) with base = ⌊W/s⌋ (all arrays elementwise). */
function roundedWeight(base: Float32Array, h: ArrayLike<number>, s: Float32Array, z: Float32Array, qp: QParams): Float32Array {
  const out = new Float32Array(base.length);
  for (let i = 0; i < base.length; i++) {
    const q = Math.min(qp.qmax, Math.max(qp.qmin, base[i]! + h[i]! + z[i]!));
    out[i] = (q - z[i]!) * s[i]!;
  }
  return out;
}

/** Σ‖op(x, w) − target‖² / N. */
function reconstructionError(geometry: LayerGeometry, x: Tensor, weight: Tensor, target: Tensor): number {
  return noGrad(() => {
    const y = layerOp(geometry, x, weight);
    let total = 0;
    for (let i = 0; i < y.size; i++) total += (y.data[i]! - target.data[i]!) ** 2;
    return total / x.shape[0]!;
  });
}

/**
 * AdaRound of one layer on cached (quantized) inputs `x`; writes the hard-rounded weight into
 * the layer. The weight quantizer must be a calibrated StaticQuantizer.
 */
export function adaroundLayer(layer: QuantLayer, x: Tensor, options: AdaRoundOptions = {}, name = 'layer'): AdaRoundResult {
  const quantizer = layer.weightQuantizer;
  if (!(quantizer instanceof StaticQuantizer) || !quantizer.isCalibrated) throw new Error(`AdaRound: '${name}' needs a calibrated 'static' weight quantizer`);
  const iterations = options.iterations ?? 500;
  const lr = options.lr ?? 1e-3;
  const [betaStart, betaEnd] = options.beta ?? [20, 2];
  const lambda = options.lambda ?? 0.01;
  const batchSize = Math.min(options.batchSize ?? 32, x.shape[0]!);
  const warmup = options.warmup ?? 0.2;
  const rng = new Rng(options.seed ?? 0);

  const exported = layer.exportLayer();
  const weight = exported.weightFloat;
  const qp = quantizer.qparams();
  const { s, z } = expandQParams(weight.shape, qp);
  const base = new Float32Array(weight.size);
  const v = new Float32Array(weight.size);
  for (let i = 0; i < weight.size; i++) {
    const ratio = weight.data[i]! / s[i]!;
    base[i] = Math.floor(ratio);
    const rest = Math.min(Math.max(ratio - base[i]!, 1e-4), 1 - 1e-4);
    // σ(V) = (rest − γ)/(ζ − γ)  ⇒  V = −log((ζ − γ)/(rest − γ) − 1)
    v[i] = -Math.log((ZETA - GAMMA) / (rest - GAMMA) - 1);
  }
  const target = noGrad(() => layerOp(exported.geometry, x, weight));
  const V = new Tensor(v, weight.shape).requiresGrad_(true);
  const baseZ = new Tensor(Float32Array.from(base, (b, i) => b + z[i]!), weight.shape);
  const scale = new Tensor(s, weight.shape);
  const zero = new Tensor(z, weight.shape);
  const optimizer = new Adam([V], { lr });
  const warmupSteps = Math.floor(warmup * iterations);
  const rows = x.shape[0]!;
  for (let it = 0; it < iterations; it++) {
    const indices = Array.from({ length: batchSize }, () => rng.int(rows));
    const xb = takeRows(x, indices);
    const tb = takeRows(target, indices);
    const h = rectifiedSigmoid(V);
    const wq = mul(sub(clamp(add(baseZ, h), qp.qmin, qp.qmax), zero), scale);
    let loss = mul(sum(square(sub(layerOp(exported.geometry, xb, wq), tb))), 1 / batchSize);
    if (it >= warmupSteps) {
      const t = (it - warmupSteps) / Math.max(1, iterations - warmupSteps);
      const beta = betaEnd + (betaStart - betaEnd) * Math.max(0, 1 - t);
      const reg = sum(sub(1, pow(abs(sub(mul(h, 2), 1)), beta)));
      loss = add(loss, mul(reg, lambda));
    }
    optimizer.zeroGrad();
    loss.backward();
    optimizer.step();
  }

  const hard = Float32Array.from(V.data, (value) => (value >= 0 ? 1 : 0));
  const nearest = Float32Array.from(weight.data, (w, i) => roundHalfEven(w / s[i]!) - base[i]!);
  let flips = 0;
  for (let i = 0; i < hard.length; i++) if (hard[i] !== nearest[i]) flips++;
  const adaWeight = new Tensor(roundedWeight(base, hard, s, z, qp), weight.shape);
  const nearestWeight = new Tensor(roundedWeight(base, nearest, s, z, qp), weight.shape);
  const result = {
    layer: name,
    nearestError: reconstructionError(exported.geometry, x, nearestWeight, target),
    adaroundError: reconstructionError(exported.geometry, x, adaWeight, target),
    flipped: flips / hard.length,
  };
  writeWeight(layer, adaWeight);
  return result;
}

/** Stores a (BN-folded) weight into the layer: divided by the fold factor for QuantConvBn2d. */
function writeWeight(layer: QuantLayer, folded: Tensor): void {
  if (!(layer instanceof QuantConvBn2d)) {
    layer.weight.data.set(folded.data);
    return;
  }
  const bn = layer.bn;
  if (!bn.runningVar) throw new Error('AdaRound: the BatchNorm2d of a QuantConvBn2d tracks no running statistics');
  const out = folded.shape[0]!;
  const per = folded.size / out;
  for (let c = 0; c < out; c++) {
    const gamma = bn.weight ? bn.weight.data[c]! : 1;
    const factor = gamma / Math.sqrt(bn.runningVar.data[c]! + bn.eps);
    for (let k = 0; k < per; k++) {
      const i = c * per + k;
      layer.weight.data[i] = factor !== 0 ? folded.data[i]! / factor : 0;
    }
  }
}

/**
 * AdaRound of every quantized layer of a calibrated model whose static weight quantizer has at
 * most `maxBits` bits, in definition order, on the calibration `batches` (model inputs).
 */
export function adaround(
  model: Module & { forward(x: Tensor): Tensor },
  batches: readonly Tensor[],
  options: AdaRoundOptions & { progress?: (message: string) => void } = {},
): AdaRoundResult[] {
  const maxBits = options.maxBits ?? 4;
  const samples = options.samples ?? 1024;
  const results: AdaRoundResult[] = [];
  for (const info of quantizedLayers(model)) {
    const q = info.layer.weightQuantizer;
    if (!(q instanceof StaticQuantizer) || q.format.bits > maxBits) continue;
    const start = performance.now();
    const x = concatBatches(captureLayerInputs(model, info.layer, batches), samples);
    const r = adaroundLayer(info.layer, x, options, info.name);
    results.push(r);
    options.progress?.(
      `adaround ${info.name}: reconstruction error ${r.nearestError.toExponential(3)} (nearest) -> ${r.adaroundError.toExponential(3)}, ` +
      `${(100 * r.flipped).toFixed(1)} % flipped, ${((performance.now() - start) / 1000).toFixed(1)} s`,
    );
  }
  return results;
}
