/**
 * Simple recurrent units (SRU; Lei et al., "Simple Recurrent Units for Highly Parallelizable
 * Recurrence", EMNLP 2018, arXiv 1709.02755v5). Per layer-direction and time step t:
 *
 *   [x̃_t, f̂_t, r̂_t (, s_t)] = W x_t                       (one matmul over every step at once)
 *   f_t = σ(f̂_t + v_f ⊙ c_{t−1} + b_f)
 *   c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ x̃_t
 *   r_t = σ(r̂_t + v_r ⊙ c_{t−1} + b_r)
 *   h_t = r_t ⊙ g(c_t) + (1 − r_t) ⊙ s_t
 *
 * This is the paper's final version, with the vector recurrence terms v_f ⊙ c_{t−1} and
 * v_r ⊙ c_{t−1}; g is the identity by default (the paper's choice) or tanh (the first arXiv
 * version). The highway input s_t is x_t itself when the layer's input width equals hiddenSize,
 * else a fourth block of W projects it (W then has 4·H rows), as the authors' implementation does.
 * The paper's highway scaling constant α (√3 at initialization) is not applied.
 *
 * W lives in a child `Linear` (no bias) named `proj`, so quantization passes (prepareQat, PTQ,
 * search plans) address each layer-direction's matrix as `<sru>.layer{k}[_reverse].proj` like any
 * other Linear; the vectors v_f, v_r, b_f, b_r stay float.
 */
import {
  add, concat, globalRng, mul, reshape, sigmoid, split, squeeze, stack, sub, tanh, unsqueeze, zeros,
  type Rng, type Tensor,
} from '../tensor/index.ts';
import { Module, shapeText, type TensorModule } from './module.ts';
import { Linear } from './linear.ts';
import { invertedDropout } from './dropout.ts';
import { sequenceInput } from './rnn.ts';
import { uniform } from './init.ts';

/** The output nonlinearity g of h_t = r ⊙ g(c) + (1 − r) ⊙ s. */
export type SRUActivation = 'identity' | 'tanh';

export interface SRUOptions {
  /** Stacked layers; layer k > 0 reads layer k − 1's output (default 1). */
  numLayers?: number;
  /** Input and output are [N, L, ·] instead of [L, N, ·] (default false; the state stays [D·layers, N, H]). */
  batchFirst?: boolean;
  /** Dropout probability on each layer's output except the last, in training mode (default 0). */
  dropout?: number;
  /** Add a layer running backwards in time; outputs are concatenated [forward, reverse] (default false). */
  bidirectional?: boolean;
  /** g in h_t = r ⊙ g(c_t) + (1 − r) ⊙ s_t (default 'identity', as the EMNLP 2018 paper). */
  activation?: SRUActivation;
  /** Generator for the initial weights and for dropout (default: the global one). */
  rng?: Rng;
}

/** The recurrence's per-channel vectors, each [H]. */
export interface SRUVectors {
  readonly vF: Tensor;
  readonly vR: Tensor;
  readonly bF: Tensor;
  readonly bR: Tensor;
}

export interface SRURecurrenceOptions {
  /** `projected` and `input` are [N, L, ·] (default false: [L, N, ·]). */
  readonly batchFirst?: boolean;
  /** Run from the last step to the first (default false). */
  readonly reverse?: boolean;
  /** g (default 'identity'). */
  readonly activation?: SRUActivation;
}

function checkPositiveInteger(owner: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${owner}: ${name} must be a positive integer, got ${value}`);
}

/**
 * The light recurrence of one SRU layer-direction, composed of differentiable tensor ops (so
 * autograd gives its gradient), one time step at a time.
 *
 * Shapes (time-major; with batchFirst swap L and N): `projected` = W x over the sequence,
 * [L, N, 3H] or [L, N, 4H] (blocks x̃, f̂, r̂, then the highway projection s when 4H);
 * `input` [L, N, H] is the highway input x when `projected` has 3H columns (ignored otherwise,
 * pass null); `c0` [N, H]. Returns h for every step [L, N, H] (input's layout) and the final c [N, H]
 * (at the last step, or the first when reverse).
 */
export function sruRecurrence(projected: Tensor, input: Tensor | null, vectors: SRUVectors, c0: Tensor, options: SRURecurrenceOptions = {}): { output: Tensor; final: Tensor } {
  const batchFirst = options.batchFirst ?? false;
  const timeAxis = batchFirst ? 1 : 0;
  if (projected.rank !== 3) throw new Error(`sruRecurrence: projected must be rank 3, got ${shapeText(projected.shape)}`);
  const steps = projected.shape[timeAxis]!;
  const batch = projected.shape[1 - timeAxis]!;
  const hidden = c0.shape[1]!;
  const width = projected.shape[2]!;
  if (c0.rank !== 2 || c0.shape[0] !== batch) throw new Error(`sruRecurrence: c0 has shape ${shapeText(c0.shape)}, expected [${batch}, H]`);
  if (width !== 3 * hidden && width !== 4 * hidden) throw new Error(`sruRecurrence: projected has ${width} columns, expected 3·H or 4·H with H = ${hidden}`);
  for (const [name, v] of Object.entries(vectors)) {
    if (v.rank !== 1 || v.shape[0] !== hidden) throw new Error(`sruRecurrence: ${name} has shape ${shapeText(v.shape)}, expected [${hidden}]`);
  }
  const projectedSkip = width === 4 * hidden;
  if (!projectedSkip) {
    if (!input || input.rank !== 3 || input.shape[timeAxis] !== steps || input.shape[1 - timeAxis] !== batch || input.shape[2] !== hidden) {
      throw new Error(`sruRecurrence: with 3·H projected columns the highway input must be ${batchFirst ? `[${batch}, ${steps}, ${hidden}]` : `[${steps}, ${batch}, ${hidden}]`}, got ${input ? shapeText(input.shape) : 'null'}`);
    }
  }
  const blocks = split(projected, projectedSkip ? [hidden, hidden, hidden, hidden] : [hidden, hidden, hidden], 2);
  // Biases over every step at once; the c-dependent terms come inside the loop.
  const forgetPre = add(blocks[1]!, vectors.bF);
  const resetPre = add(blocks[2]!, vectors.bR);
  const skip = projectedSkip ? blocks[3]! : input!;
  const perStep = (x: Tensor): Tensor[] => (steps === 1 ? [x] : split(x, new Array<number>(steps).fill(1), timeAxis)).map((p) => reshape(p, [batch, hidden]));
  const [candidates, forgets, resets, skips] = [blocks[0]!, forgetPre, resetPre, skip].map(perStep) as [Tensor[], Tensor[], Tensor[], Tensor[]];
  const g = options.activation === 'tanh' ? tanh : (c: Tensor): Tensor => c;
  const outputs = new Array<Tensor>(steps);
  let c = c0;
  for (let k = 0; k < steps; k++) {
    const t = options.reverse ? steps - 1 - k : k;
    const f = sigmoid(add(forgets[t]!, mul(vectors.vF, c)));
    const r = sigmoid(add(resets[t]!, mul(vectors.vR, c)));
    // c_t = f ⊙ c_{t−1} + (1 − f) ⊙ x̃ = x̃ + f ⊙ (c_{t−1} − x̃)
    const candidate = candidates[t]!;
    c = add(candidate, mul(f, sub(c, candidate)));
    // h_t = r ⊙ g(c_t) + (1 − r) ⊙ s = s + r ⊙ (g(c_t) − s)
    outputs[t] = add(skips[t]!, mul(r, sub(g(c), skips[t]!)));
  }
  return { output: stack(outputs, timeAxis), final: c };
}

/**
 * One SRU layer-direction: the projection `proj` (Linear inputSize → 3·H, or 4·H when
 * inputSize ≠ H, no bias) and the vectors `v_f`, `v_r`, `b_f`, `b_r` [H].
 * Init: W ~ U(±√(3/inputSize)) (variance 1/inputSize, the paper's scheme), v ~ U(±1/√H), b = 0.
 */
export class SRUCell extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  /** W x for every step; a Linear (or, after prepareQat, its fake-quant wrapper). */
  proj: TensorModule;
  readonly vF: Tensor;
  readonly vR: Tensor;
  readonly bF: Tensor;
  readonly bR: Tensor;

  constructor(inputSize: number, hiddenSize: number, rng: Rng = globalRng) {
    super();
    checkPositiveInteger('SRUCell', 'inputSize', inputSize);
    checkPositiveInteger('SRUCell', 'hiddenSize', hiddenSize);
    this.inputSize = inputSize;
    this.hiddenSize = hiddenSize;
    const blocks = inputSize === hiddenSize ? 3 : 4;
    this.proj = this.registerModule('proj', new Linear(inputSize, blocks * hiddenSize, { bias: false, rng }));
    this.vF = this.registerParameter('v_f', zeros([hiddenSize]));
    this.vR = this.registerParameter('v_r', zeros([hiddenSize]));
    this.bF = this.registerParameter('b_f', zeros([hiddenSize]));
    this.bR = this.registerParameter('b_r', zeros([hiddenSize]));
    this.resetParameters(rng);
  }

  /** Re-draws W ~ U(±√(3/inputSize)), v_f, v_r ~ U(±1/√H); b_f = b_r = 0. */
  resetParameters(rng: Rng = globalRng): void {
    for (const p of this.proj.parameters()) uniform(p, -Math.sqrt(3 / this.inputSize), Math.sqrt(3 / this.inputSize), rng);
    const bound = 1 / Math.sqrt(this.hiddenSize);
    uniform(this.vF, -bound, bound, rng);
    uniform(this.vR, -bound, bound, rng);
    this.bF.data.fill(0);
    this.bR.data.fill(0);
  }

  /** `x` [L, N, inputSize] ([N, L, inputSize] with batchFirst), `c0` [N, H] → [h [L, N, H], c_final [N, H]]. */
  forward(x: Tensor, c0: Tensor, options: SRURecurrenceOptions = {}): [Tensor, Tensor] {
    const projected = this.proj.forward(x);
    const { output, final } = sruRecurrence(projected, this.inputSize === this.hiddenSize ? x : null, { vF: this.vF, vR: this.vR, bF: this.bF, bR: this.bR }, c0, options);
    return [output, final];
  }

  override extraRepr(): string {
    return `${this.inputSize}, ${this.hiddenSize}`;
  }
}

/**
 * A stack of SRU layers over a sequence (see the module comment for the recurrence), shaped as
 * nn.LSTM: input [L, N, inputSize] ([N, L, inputSize] with batchFirst, or unbatched
 * [L, inputSize]); c0 [D·numLayers, N, H] (unbatched [D·numLayers, H]); output [L, N, D·H]
 * (batchFirst [N, L, D·H]). Children are named `layer{k}` and `layer{k}_reverse`; parameters read
 * `layer0.proj.weight`, `layer0.v_f`, `layer0.v_r`, `layer0.b_f`, `layer0.b_r`. Parameters are float32.
 */
export class SRU extends Module {
  readonly inputSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly batchFirst: boolean;
  readonly dropout: number;
  readonly bidirectional: boolean;
  readonly activation: SRUActivation;
  /** Child names, layer k direction d at index k·D + d. */
  private readonly cellNames: readonly string[];
  private readonly rng: Rng;

  constructor(inputSize: number, hiddenSize: number, options: SRUOptions = {}) {
    super();
    checkPositiveInteger('SRU', 'inputSize', inputSize);
    checkPositiveInteger('SRU', 'hiddenSize', hiddenSize);
    const numLayers = options.numLayers ?? 1;
    checkPositiveInteger('SRU', 'numLayers', numLayers);
    const dropout = options.dropout ?? 0;
    if (!(dropout >= 0 && dropout <= 1)) throw new RangeError(`SRU: dropout must be in [0, 1], got ${dropout}`);
    const activation = options.activation ?? 'identity';
    if (activation !== 'identity' && activation !== 'tanh') throw new RangeError(`SRU: activation must be 'identity' or 'tanh', got '${String(activation)}'`);
    this.inputSize = inputSize;
    this.hiddenSize = hiddenSize;
    this.numLayers = numLayers;
    this.batchFirst = options.batchFirst ?? false;
    this.dropout = dropout;
    this.bidirectional = options.bidirectional ?? false;
    this.activation = activation;
    this.rng = options.rng ?? globalRng;
    const names: string[] = [];
    for (let layer = 0; layer < numLayers; layer++) {
      const layerInput = layer === 0 ? inputSize : hiddenSize * this.numDirections;
      for (let d = 0; d < this.numDirections; d++) {
        const name = `layer${layer}${d === 1 ? '_reverse' : ''}`;
        this.registerModule(name, new SRUCell(layerInput, hiddenSize, this.rng));
        names.push(name);
      }
    }
    this.cellNames = names;
  }

  /** The layer-directions (layer k, direction d at index k·D + d), looked up by name so a replaced child is seen. */
  get cells(): SRUCell[] {
    return this.cellNames.map((name) => {
      const cell = this.getSubmodule(name);
      if (!(cell instanceof SRUCell)) throw new TypeError(`SRU: child '${name}' is a ${cell.constructor.name}, not an SRUCell`);
      return cell;
    });
  }

  /** 2 when bidirectional, else 1. */
  get numDirections(): number {
    return this.bidirectional ? 2 : 1;
  }

  /** Returns [output, cN]; `c0` defaults to zeros. */
  forward(x: Tensor, c0?: Tensor): [Tensor, Tensor] {
    const who = `SRU(${this.inputSize}, ${this.hiddenSize})`;
    const stateCount = this.numLayers * this.numDirections;
    const { batched, timeAxis, input, steps, batch, stateShape } = sequenceInput(who, x, this.inputSize, this.batchFirst, stateCount, this.hiddenSize);
    if (x.dtype !== 'float32') throw new TypeError(`${who}: input dtype ${x.dtype}, expected float32`);
    if (c0 && (c0.rank !== stateShape.length || c0.shape.some((d, i) => d !== stateShape[i]))) {
      throw new Error(`${who}: c0 has shape ${shapeText(c0.shape)}, expected ${shapeText(stateShape)}`);
    }
    if (c0 && c0.dtype !== 'float32') throw new TypeError(`${who}: c0 dtype ${c0.dtype}, expected float32`);
    const full = c0 ? (batched ? c0 : unsqueeze(c0, 1)) : zeros([stateCount, batch, this.hiddenSize]);
    const starts = (stateCount === 1 ? [full] : split(full, new Array<number>(stateCount).fill(1), 0)).map((p) => reshape(p, [batch, this.hiddenSize]));

    const cells = this.cells;
    const finals: Tensor[] = [];
    let layerInput = input;
    for (let layer = 0; layer < this.numLayers; layer++) {
      const outputs: Tensor[] = [];
      for (let d = 0; d < this.numDirections; d++) {
        const index = layer * this.numDirections + d;
        const [output, final] = cells[index]!.forward(layerInput, starts[index]!, { batchFirst: timeAxis === 1, reverse: d === 1, activation: this.activation });
        outputs.push(output);
        finals.push(final);
      }
      layerInput = outputs.length === 1 ? outputs[0]! : concat(outputs, 2);
      if (layer < this.numLayers - 1 && this.training && this.dropout > 0) layerInput = invertedDropout(layerInput, this.dropout, this.rng);
    }
    const output = batched ? layerInput : squeeze(layerInput, 1);
    const stacked = stack(finals, 0);
    return [output, batched ? stacked : squeeze(stacked, 1)];
  }

  override extraRepr(): string {
    const parts = [`${this.inputSize}, ${this.hiddenSize}`];
    if (this.numLayers !== 1) parts.push(`numLayers=${this.numLayers}`);
    if (this.batchFirst) parts.push('batchFirst=true');
    if (this.dropout !== 0) parts.push(`dropout=${this.dropout}`);
    if (this.bidirectional) parts.push('bidirectional=true');
    if (this.activation !== 'identity') parts.push(`activation=${this.activation}`);
    return parts.join(', ');
  }
}
