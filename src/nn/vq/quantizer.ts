/**
 * Vector quantization of rows with a learned codebook (VQ-VAE: van den Oord, Vinyals and
 * Kavukcuoglu, "Neural Discrete Representation Learning", 2017; EMA updates and dead-code restarts
 * as in its appendix and in Jukebox / SoundStream).
 *
 * Forward, for rows z_i ∈ R^D and a codebook E ∈ R^{K×D}:
 *   k_i = argmin_k ‖z_i − E_k‖² (ties: the lowest k),  ẑ_i = E_{k_i} (bit-exactly the codebook row
 *   for finite z: the straight-through value is E_k + (z − z) with z − z = 0).
 * Gradient (straight-through): ∂ẑ/∂z = I, nothing reaches E through ẑ. The codebook learns from
 *   codebookLoss   = mean((sg(z) − E_k)²)        (∂/∂E_k = 2(E_k − z_i)/(N·D) per assigned row)
 *   commitmentLoss = mean((z − sg(E_k))²)        (∂/∂z_i = 2(z_i − E_k)/(N·D))
 *   loss = codebookLoss + β·commitmentLoss        ('loss' update; 'ema': loss = β·commitmentLoss)
 * With `update: 'ema'` the codebook is a buffer moved by exponential moving averages of the
 * assigned rows instead (decay γ, Laplace-smoothed counts, ε):
 *   n_k ← γ·n_k + (1 − γ)·|{i : k_i = k}|,  m_k ← γ·m_k + (1 − γ)·Σ_{k_i = k} z_i,
 *   E_k = m_k / ñ_k,  ñ_k = (n_k + ε)/(Σn + K·ε)·Σn.
 * Dead-code restart (`deadCodeThreshold` > 0): after a training forward, every code whose usage
 * (the EMA count n_k, kept in both modes) fell below the threshold is moved onto a random row of
 * the batch, and its usage set to 2·threshold so it gets a chance to be picked.
 * The codebook is initialised, on the first training forward, from random rows of that batch
 * (`init: 'data'`, default) or drawn from U(±initScale) at construction (`init: 'uniform'`).
 */
import { noGrad } from '../../autograd/index.ts';
import { add, gather, matmul, mean, mul, slice, square, sub, Tensor, globalRng, type Rng } from '../../tensor/index.ts';
import { straightThrough } from '../../quant/quantizers/common.ts';
import { Module, shapeText } from '../module.ts';
import { uniform } from '../init.ts';
import type { FloatDType } from '../rnn.ts';

export interface VectorQuantizerOptions {
  /** β of the commitment term (default 0.25, as VQ-VAE). */
  commitment?: number;
  /** 'loss': the codebook is a parameter trained by the codebook loss; 'ema': a buffer moved by EMA (default 'loss'). */
  update?: 'loss' | 'ema';
  /** γ of the EMA usage counts (and of the codebook with update 'ema'); default 0.99. */
  decay?: number;
  /** Laplace smoothing ε of the EMA counts (default 1e-5). */
  epsilon?: number;
  /** Restart codes whose EMA usage falls below this (rows per forward); 0 = never (default 0). */
  deadCodeThreshold?: number;
  /** 'data': copy random rows of the first training batch (default); 'uniform': U(±initScale) now. */
  init?: 'data' | 'uniform';
  /** Half-width of the uniform initialisation (default 1/K). */
  initScale?: number;
  /** Choose codes by the distance over the first `matchDims` columns only (default: all D); the whole row is returned. */
  matchDims?: number;
  rng?: Rng;
  dtype?: FloatDType;
}

/** What one quantization returns. */
export interface VectorQuantized {
  /** [N, D]: the codebook rows, with the straight-through gradient to z. */
  readonly quantized: Tensor;
  /** k_i per row. */
  readonly codes: Int32Array;
  /** codebookLoss + β·commitmentLoss ('loss'), β·commitmentLoss ('ema'); a scalar. */
  readonly loss: Tensor;
  readonly codebookLoss: Tensor;
  readonly commitmentLoss: Tensor;
}

function checkOption(name: string, value: number, ok: boolean): number {
  if (!ok) throw new RangeError(`VectorQuantizer: ${name} is out of range, got ${value}`);
  return value;
}

/**
 * Indices of the nearest codebook rows to the rows of z (squared Euclidean distance over the first
 * `matchDims` columns, default all; ties go to the lowest index). Scores ‖E_k‖² − 2·z·E_k come from
 * one matmul, so the choice follows the backend's arithmetic; NaN rows get code 0.
 */
export function nearestCodes(z: Tensor, codebook: Tensor, matchDims?: number): Int32Array {
  const [rows, dim] = z.shape as [number, number];
  const [count, codeDim] = codebook.shape as [number, number];
  if (z.rank !== 2 || codebook.rank !== 2 || dim !== codeDim) {
    throw new Error(`nearestCodes: expected z [N, D] and codebook [K, D], got ${shapeText(z.shape)} and ${shapeText(codebook.shape)}`);
  }
  const m = matchDims ?? dim;
  if (!Number.isInteger(m) || m < 1 || m > dim) throw new RangeError(`nearestCodes: matchDims must be an integer in [1, ${dim}], got ${m}`);
  const dots = noGrad(() => {
    const a = m === dim ? z.detach() : slice(z.detach(), [0, 0], [rows, m]);
    const b = m === dim ? codebook.detach() : slice(codebook.detach(), [0, 0], [count, m]);
    return matmul(a, b, { transB: true });
  }).data;
  const norms = new Float64Array(count);
  for (let k = 0; k < count; k++) {
    let s = 0;
    for (let d = 0; d < m; d++) s += codebook.data[k * dim + d]! ** 2;
    norms[k] = s;
  }
  const codes = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    let best = 0;
    let bestScore = Infinity;
    for (let k = 0; k < count; k++) {
      const score = norms[k]! - 2 * dots[i * count + k]!;
      if (score < bestScore) {
        bestScore = score;
        best = k;
      }
    }
    codes[i] = best;
  }
  return codes;
}

/** A learned codebook [K, D] and the VQ-VAE quantization of [N, D] rows onto it (see the file comment). */
export class VectorQuantizer extends Module {
  readonly codebookSize: number;
  readonly dim: number;
  readonly commitment: number;
  readonly update: 'loss' | 'ema';
  readonly decay: number;
  readonly epsilon: number;
  readonly deadCodeThreshold: number;
  readonly dtype: FloatDType;
  /** Columns the nearest-code search compares (the first `matchDims`). */
  readonly matchDims: number;
  /** [K, D]: a parameter ('loss') or a buffer ('ema'). */
  readonly codebook: Tensor;
  /** [K]: EMA of how many rows each code got per training forward. */
  readonly usage: Tensor;
  /** [K, D]: EMA of the sum of the rows assigned to each code ('ema' only). */
  readonly embedSum: Tensor | null;
  /** [1]: 1 once the codebook holds its initial values. */
  readonly initialized: Tensor;
  /** Codes restarted since construction. */
  restarts = 0;
  private readonly rng: Rng;

  constructor(codebookSize: number, dim: number, options: VectorQuantizerOptions = {}) {
    super();
    if (!Number.isInteger(codebookSize) || codebookSize < 1) throw new RangeError(`VectorQuantizer: codebookSize must be a positive integer, got ${codebookSize}`);
    if (!Number.isInteger(dim) || dim < 1) throw new RangeError(`VectorQuantizer: dim must be a positive integer, got ${dim}`);
    this.codebookSize = codebookSize;
    this.dim = dim;
    this.commitment = options.commitment ?? 0.25;
    checkOption('commitment', this.commitment, Number.isFinite(this.commitment) && this.commitment >= 0);
    this.update = options.update ?? 'loss';
    if (this.update !== 'loss' && this.update !== 'ema') throw new RangeError(`VectorQuantizer: update must be 'loss' or 'ema', got ${String(this.update)}`);
    this.decay = options.decay ?? 0.99;
    checkOption('decay', this.decay, this.decay >= 0 && this.decay < 1);
    this.epsilon = options.epsilon ?? 1e-5;
    checkOption('epsilon', this.epsilon, this.epsilon > 0 && Number.isFinite(this.epsilon));
    this.deadCodeThreshold = options.deadCodeThreshold ?? 0;
    checkOption('deadCodeThreshold', this.deadCodeThreshold, this.deadCodeThreshold >= 0 && Number.isFinite(this.deadCodeThreshold));
    this.matchDims = options.matchDims ?? dim;
    checkOption('matchDims', this.matchDims, Number.isInteger(this.matchDims) && this.matchDims >= 1 && this.matchDims <= dim);
    const init = options.init ?? 'data';
    if (init !== 'data' && init !== 'uniform') throw new RangeError(`VectorQuantizer: init must be 'data' or 'uniform', got ${String(init)}`);
    this.dtype = options.dtype ?? 'float32';
    this.rng = options.rng ?? globalRng;
    const table = new Tensor(this.dtype === 'float64' ? new Float64Array(codebookSize * dim) : new Float32Array(codebookSize * dim), [codebookSize, dim]);
    this.codebook = this.update === 'loss' ? this.registerParameter('codebook', table) : this.registerBuffer('codebook', table);
    this.usage = this.registerBuffer('usage', new Tensor(new Float32Array(codebookSize), [codebookSize]));
    this.embedSum = this.update === 'ema' ? this.registerBuffer('embedSum', new Tensor(new Float32Array(codebookSize * dim), [codebookSize, dim])) : null;
    this.initialized = this.registerBuffer('initialized', new Tensor(new Float32Array(1), [1]));
    if (init === 'uniform') {
      const scale = options.initScale ?? 1 / codebookSize;
      checkOption('initScale', scale, scale > 0 && Number.isFinite(scale));
      uniform(this.codebook, -scale, scale, this.rng);
      this.embedSum?.data.set(this.codebook.data);
      this.usage.data.fill(1);
      this.initialized.data[0] = 1;
    }
  }

  /**
   * Quantizes the rows of z [N, D]. In training mode this also initialises the codebook (first
   * call, init 'data'), moves the EMA statistics and restarts dead codes, after the quantization
   * (the returned values use the codebook as it was).
   */
  forward(z: Tensor): VectorQuantized {
    if (z.rank !== 2 || z.shape[1] !== this.dim) throw new Error(`VectorQuantizer: expected z [N, ${this.dim}], got ${shapeText(z.shape)}`);
    if (z.dtype !== this.dtype) throw new TypeError(`VectorQuantizer: z dtype ${z.dtype} differs from the codebook's ${this.dtype}`);
    if (this.initialized.data[0] !== 1) {
      if (!this.training) throw new Error('VectorQuantizer: the codebook is not initialised (init \'data\' takes it from the first training batch); call train() first');
      this.initFromRows(z);
    }
    const codes = nearestCodes(z, this.codebook, this.matchDims);
    const index = new Tensor(codes, [codes.length]);
    const chosen = gather(this.codebook, index, 0);
    const quantized = straightThrough(chosen, z);
    const codebookLoss = mean(square(sub(z.detach(), chosen)));
    const commitmentLoss = mean(square(sub(z, chosen.detach())));
    const weighted = mul(commitmentLoss, this.commitment);
    const loss = this.update === 'loss' ? add(codebookLoss, weighted) : weighted;
    if (this.training) {
      this.updateStatistics(z, codes);
      if (this.deadCodeThreshold > 0) this.restartDeadCodes(z);
    }
    return { quantized, codes, loss, codebookLoss, commitmentLoss };
  }

  /** The codebook rows of `codes` as [N, D], no gradient (decoding from stored codes). */
  lookup(codes: Int32Array): Tensor {
    for (const k of codes) {
      if (!Number.isInteger(k) || k < 0 || k >= this.codebookSize) throw new RangeError(`VectorQuantizer.lookup: code ${k} is outside [0, ${this.codebookSize})`);
    }
    return noGrad(() => gather(this.codebook.detach(), new Tensor(codes, [codes.length]), 0));
  }

  /** How many codes have EMA usage ≥ `threshold` (default: above 1e-3 rows per forward). */
  activeCodes(threshold = 1e-3): number {
    let n = 0;
    for (const u of this.usage.data) if (u >= threshold) n++;
    return n;
  }

  private initFromRows(z: Tensor): void {
    const [rows, dim] = z.shape as [number, number];
    if (rows === 0) throw new Error('VectorQuantizer: cannot initialise the codebook from an empty batch');
    const order = Array.from({ length: rows }, (_, i) => i);
    this.rng.shuffle(order);
    let spread = 0;
    for (const v of z.data) spread += v * v;
    const noise = 1e-2 * Math.sqrt(spread / z.size);
    for (let k = 0; k < this.codebookSize; k++) {
      // Past the batch's rows, repeat them with a little noise so the copies are not exact ties.
      const row = order[k % rows]!;
      for (let d = 0; d < dim; d++) {
        this.codebook.data[k * dim + d] = z.data[row * dim + d]! + (k >= rows ? noise * this.rng.normal() : 0);
      }
    }
    this.embedSum?.data.set(this.codebook.data);
    this.usage.data.fill(1);
    this.initialized.data[0] = 1;
  }

  private updateStatistics(z: Tensor, codes: Int32Array): void {
    const { dim, decay } = this;
    const counts = new Float64Array(this.codebookSize);
    for (const k of codes) counts[k]!++;
    for (let k = 0; k < this.codebookSize; k++) this.usage.data[k] = decay * this.usage.data[k]! + (1 - decay) * counts[k]!;
    const sums = this.embedSum;
    if (!sums) return;
    const batchSums = new Float64Array(this.codebookSize * dim);
    codes.forEach((k, i) => {
      for (let d = 0; d < dim; d++) batchSums[k * dim + d]! += z.data[i * dim + d]!;
    });
    for (let j = 0; j < batchSums.length; j++) sums.data[j] = decay * sums.data[j]! + (1 - decay) * batchSums[j]!;
    let total = 0;
    for (const u of this.usage.data) total += u;
    const denominator = total + this.codebookSize * this.epsilon;
    for (let k = 0; k < this.codebookSize; k++) {
      const smoothed = ((this.usage.data[k]! + this.epsilon) / denominator) * total;
      for (let d = 0; d < dim; d++) this.codebook.data[k * dim + d] = sums.data[k * dim + d]! / smoothed;
    }
  }

  private restartDeadCodes(z: Tensor): void {
    const [rows, dim] = z.shape as [number, number];
    if (rows === 0) return;
    for (let k = 0; k < this.codebookSize; k++) {
      if (this.usage.data[k]! >= this.deadCodeThreshold) continue;
      const row = this.rng.int(rows);
      for (let d = 0; d < dim; d++) this.codebook.data[k * dim + d] = z.data[row * dim + d]!;
      this.usage.data[k] = 2 * this.deadCodeThreshold;
      if (this.embedSum) for (let d = 0; d < dim; d++) this.embedSum.data[k * dim + d] = this.codebook.data[k * dim + d]! * this.usage.data[k]!;
      this.restarts++;
    }
  }

  override extraRepr(): string {
    return `${this.codebookSize}, ${this.dim}, update=${this.update}, commitment=${this.commitment}`;
  }
}
