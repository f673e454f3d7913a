/**
 * Batch-1 inference of a one-layer DeltaLSTM the way Spartus runs it: the pre-activation memory
 * M (4H, starting at b_ih + b_hh) is updated only by the weight columns of transmitted deltas,
 *
 *   M_t = M_{t−1} + Σ_{j: |x_tj − x̂_j| > Θx} W_ih[:, j]·Δx_tj + Σ_{k: |h_{t−1,k} − ĥ_k| > Θh} W_hh[:, k]·Δh_k,
 *
 * with the weights in the column-balanced layout (balanced.ts), so a transmitted column costs
 * blocks·keep multiply-accumulates (4H when dense). Every run counts them. `mode: 'dense'` is the
 * reference: the same delta recurrence with full matrix–vector products W·Δ (zero deltas
 * included), i.e. what the delta network computes without skipping anything.
 */
import { type BalancedSparseMatrix, balancedBytes, accumulateColumn, packBalanced, unpackBalanced } from './balanced.ts';
import type { DeltaLSTM } from './delta-lstm.ts';

/** Operation counts of one run (multiply-accumulates of the two weight matrices only). */
export interface DeltaRunCounts {
  steps: number;
  /** Input columns considered (steps·inputSize) and transmitted. */
  inputColumns: number;
  inputSent: number;
  /** Hidden columns considered (steps·hiddenSize) and transmitted. */
  hiddenColumns: number;
  hiddenSent: number;
  /** MACs done: Σ transmitted columns × entries stored per column (all columns in 'dense' mode). */
  macs: number;
  /** MACs of the plain dense LSTM: steps·4H·(inputSize + hiddenSize). */
  denseMacs: number;
}

export interface DeltaRunResult {
  /** h_t for every step, [steps, hiddenSize]. */
  output: Float64Array;
  /** Final cell state c_L, [hiddenSize]. */
  cell: Float64Array;
  counts: DeltaRunCounts;
}

export interface EngineOptions {
  /**
   * Column-block layout of the stored weights: keep `keep` of every `blockRows` rows per column
   * (largest |w|; lossless for a CBTD-pruned matrix). Default: dense columns (one block, all kept).
   */
  balanced?: { blockRows: number; keep: { ih: number; hh: number } | number };
}

const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/** A one-layer DeltaLSTM stored for sparse batch-1 inference. */
export class DeltaLstmEngine {
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly thresholdX: number;
  readonly thresholdH: number;
  readonly weightIh: BalancedSparseMatrix;
  readonly weightHh: BalancedSparseMatrix;
  readonly bias: Float64Array;
  /** Row-major dense copies for the 'dense' reference mode. */
  private readonly denseIh: Float32Array;
  private readonly denseHh: Float32Array;

  constructor(weightIh: BalancedSparseMatrix, weightHh: BalancedSparseMatrix, bias: Float64Array, thresholdX: number, thresholdH: number) {
    const hidden = weightHh.cols;
    if (weightHh.rows !== 4 * hidden || weightIh.rows !== 4 * hidden) {
      throw new RangeError(`DeltaLstmEngine: W_hh must be [4H, H] and W_ih [4H, in], got [${weightHh.rows}, ${weightHh.cols}] and [${weightIh.rows}, ${weightIh.cols}]`);
    }
    if (bias.length !== 4 * hidden) throw new RangeError(`DeltaLstmEngine: bias has ${bias.length} entries, expected ${4 * hidden}`);
    for (const [name, v] of [['thresholdX', thresholdX], ['thresholdH', thresholdH]] as const) {
      if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`DeltaLstmEngine: ${name} must be a finite number ≥ 0, got ${v}`);
    }
    this.inputSize = weightIh.cols;
    this.hiddenSize = hidden;
    this.weightIh = weightIh;
    this.weightHh = weightHh;
    this.bias = bias;
    this.thresholdX = thresholdX;
    this.thresholdH = thresholdH;
    this.denseIh = unpackBalanced(weightIh);
    this.denseHh = unpackBalanced(weightHh);
  }

  /**
   * From a trained one-layer, one-direction DeltaLSTM: its effective weights (after its weight
   * transform, e.g. CBTD's prune mask) and thresholds (`thresholds` overrides them).
   */
  static fromModule(layer: DeltaLSTM, options: EngineOptions & { thresholdX?: number; thresholdH?: number } = {}): DeltaLstmEngine {
    if (layer.numLayers !== 1 || layer.bidirectional) throw new Error('DeltaLstmEngine: only a one-layer, one-direction DeltaLSTM is supported');
    const state = layer.stateDict();
    const get = (name: string): Float64Array | null => {
      const t = state.get(name);
      if (!t) return null;
      const w = name.startsWith('weight') ? layer.effectiveWeight(t) : t;
      return Float64Array.from(w.data);
    };
    const rows = 4 * layer.hiddenSize;
    const ih = get('weight_ih_l0')!;
    const hh = get('weight_hh_l0')!;
    const bias = new Float64Array(rows);
    const bIh = get('bias_ih_l0');
    const bHh = get('bias_hh_l0');
    if (bIh && bHh) for (let r = 0; r < rows; r++) bias[r] = bIh[r]! + bHh[r]!;
    const blockRows = options.balanced?.blockRows ?? rows;
    const keep = options.balanced?.keep ?? blockRows;
    const keepIh = typeof keep === 'number' ? keep : keep.ih;
    const keepHh = typeof keep === 'number' ? keep : keep.hh;
    return new DeltaLstmEngine(
      packBalanced(ih, rows, layer.inputSize, blockRows, keepIh),
      packBalanced(hh, rows, layer.hiddenSize, blockRows, keepHh),
      bias,
      options.thresholdX ?? layer.thresholdX,
      options.thresholdH ?? layer.thresholdH,
    );
  }

  /** Bytes of the stored weight matrices (values + indices) and of the dense float32 pair. */
  get storageBytes(): { balanced: number; dense: number } {
    return { balanced: balancedBytes(this.weightIh) + balancedBytes(this.weightHh), dense: 4 * (this.denseIh.length + this.denseHh.length) };
  }

  /**
   * Runs one sequence `x` [steps, inputSize] (row-major) from h0 = c0 = 0, x̂ = ĥ = 0, M = bias.
   * 'sparse' (default) touches only transmitted columns; 'dense' multiplies full matrices by Δ.
   */
  run(x: ArrayLike<number>, steps: number, mode: 'sparse' | 'dense' = 'sparse'): DeltaRunResult {
    const { inputSize: inputs, hiddenSize: hidden } = this;
    if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`DeltaLstmEngine.run: steps must be a positive integer, got ${steps}`);
    if (x.length !== steps * inputs) throw new RangeError(`DeltaLstmEngine.run: ${x.length} inputs for ${steps} steps of ${inputs}`);
    const rows = 4 * hidden;
    const memory = Float64Array.from(this.bias);
    const xHat = new Float64Array(inputs);
    const hHat = new Float64Array(hidden);
    const h = new Float64Array(hidden);
    const c = new Float64Array(hidden);
    const deltaX = new Float64Array(inputs);
    const deltaH = new Float64Array(hidden);
    const output = new Float64Array(steps * hidden);
    const counts: DeltaRunCounts = {
      steps, inputColumns: steps * inputs, inputSent: 0, hiddenColumns: steps * hidden, hiddenSent: 0, macs: 0, denseMacs: steps * rows * (inputs + hidden),
    };
    for (let t = 0; t < steps; t++) {
      for (let j = 0; j < inputs; j++) {
        const d = x[t * inputs + j]! - xHat[j]!;
        deltaX[j] = Math.abs(d) <= this.thresholdX ? 0 : d; // a NaN change is sent (as in DeltaLSTM)
        if (deltaX[j] !== 0) {
          xHat[j] = x[t * inputs + j]!;
          counts.inputSent++;
        }
      }
      for (let k = 0; k < hidden; k++) {
        const d = h[k]! - hHat[k]!;
        deltaH[k] = Math.abs(d) <= this.thresholdH ? 0 : d;
        if (deltaH[k] !== 0) {
          hHat[k] = h[k]!;
          counts.hiddenSent++;
        }
      }
      if (mode === 'sparse') {
        for (let j = 0; j < inputs; j++) if (deltaX[j] !== 0) counts.macs += accumulateColumn(this.weightIh, j, deltaX[j]!, memory);
        for (let k = 0; k < hidden; k++) if (deltaH[k] !== 0) counts.macs += accumulateColumn(this.weightHh, k, deltaH[k]!, memory);
      } else {
        for (let r = 0; r < rows; r++) {
          let sum = 0;
          for (let j = 0; j < inputs; j++) sum += this.denseIh[r * inputs + j]! * deltaX[j]!;
          for (let k = 0; k < hidden; k++) sum += this.denseHh[r * hidden + k]! * deltaH[k]!;
          memory[r] = memory[r]! + sum;
        }
        counts.macs += rows * (inputs + hidden);
      }
      for (let k = 0; k < hidden; k++) {
        const i = sigmoid(memory[k]!);
        const f = sigmoid(memory[hidden + k]!);
        const g = Math.tanh(memory[2 * hidden + k]!);
        const o = sigmoid(memory[3 * hidden + k]!);
        c[k] = f * c[k]! + i * g;
        h[k] = o * Math.tanh(c[k]!);
        output[t * hidden + k] = h[k]!;
      }
    }
    return { output, cell: c, counts };
  }
}
