import { noGrad } from '../../autograd/engine.ts';
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import { Linear } from '../../nn/linear.ts';
import { Module } from '../../nn/module.ts';
import { defaultLayerInit } from '../../nn/init.ts';
import { add, div, linear, maximum, mul, narrow, reshape, softmax, sum } from '../../tensor/ops.ts';
import { globalRng, type Rng } from '../../tensor/random.ts';
import { Tensor, full, zeros } from '../../tensor/tensor.ts';
import { fakeQuantize } from '../core/quantize.ts';
import { qmaxOf, subgroupBytes, validateChoices, type SubgroupBits } from './choices.ts';

/** Smallest step the forward uses (keeps w/s finite if an optimizer drives a step through zero). */
const MIN_STEP = 1e-8;

/**
 * How a {@link SubgroupLinear} forms its weight:
 * - `float`: the float weight (no quantization);
 * - `search`: the mixture Σ_k α_{g,k}·Q_{b_k}(W_g) per subgroup g, α = softmax over the choices;
 * - `fixed`: each subgroup at its assigned width only (see {@link SubgroupLinear.setAssignment}).
 */
export type SubgroupMode = 'float' | 'search' | 'fixed';

/** The modes in the order of their codes in the 'mode' buffer. */
const SUBGROUP_MODES: readonly SubgroupMode[] = ['float', 'search', 'fixed'];

export interface SubgroupLinearOptions {
  /** Subgroups are blocks of output rows (0, default) or of input columns (1) of W [out, in]. */
  axis?: 0 | 1;
  /** Rows (axis 0) or columns (axis 1) per subgroup; must divide that dimension (default: all, one subgroup). */
  groupSize?: number;
  /** Precision choices, a subset of {0, 2, 4, 8} (default all four; 0 = pruned). */
  choices?: readonly number[];
  /** Learn a bias (default true; the bias stays float). */
  bias?: boolean;
  /** Parameter dtype (default float32; float64 for gradient checks). */
  dtype?: 'float32' | 'float64';
  /** softmax (default) or Gumbel-softmax (noise in training mode only) over the architecture logits. */
  sampler?: 'softmax' | 'gumbel';
  /** Generator for the initial weights and the Gumbel noise (default: the global one). */
  rng?: Rng;
}

/** The integer form of one subgroup: its width, scale and codes (row-major over the subgroup's block). */
export interface SubgroupCodes {
  readonly bits: number;
  /** float32 scale (0 when pruned). */
  readonly scale: number;
  /** Codes in [−(2^(b−1)−1), 2^(b−1)−1]; empty when pruned. */
  readonly codes: Int32Array;
}

/**
 * A linear layer y = x·Ŵᵀ + b whose weight W [out, in] is split into subgroups (blocks of output rows
 * or input columns), each quantized at a precision chosen from {0 (pruned), 2, 4, 8} bits by a
 * differentiable search — the subgroup-wise mixed precision and pruning of Zhao et al., "Automatic
 * Mixed-Precision Quantization Search of BERT" (IJCAI 2021), after DARTS.
 *
 * Search forward, for subgroup g with architecture logits θ_g [K] and temperature τ:
 *   α_g = softmax(θ_g/τ)  (Gumbel-softmax: softmax((θ_g + G)/τ), G ~ Gumbel(0, 1), training only),
 *   Ŵ_g = Σ_k α_{g,k}·Q_{b_k}(W_g),   Q_0(W) = 0,
 *   Q_b(W) = clamp(roundHalfEven(W/s_{g,b}), −q_b, q_b)·s_{g,b},   q_b = 2^(b−1) − 1,
 * with one learned step s_{g,b} per subgroup and width (LSQ: gradient STE for W inside the range,
 * LSQ's for s scaled by 1/√(n_g·q_b)). ∂Ŵ_g/∂α_{g,k} = Q_{b_k}(W_g), so the architecture logits get
 * exact gradients (the quantizers do not depend on them). Steps start at the MSE-best of a grid of
 * max|W_g|/q_b·f, f ∈ (0, 1] on the first forward (or {@link initializeSteps}).
 * Expected size E = Σ_g Σ_k α_{g,k}·bytes(n_g, b_k), bytes(n, b) = ⌈n·b/8⌉ + 4 (0 when b = 0).
 */
export class SubgroupLinear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly axis: 0 | 1;
  readonly groupSize: number;
  /** Number of subgroups G. */
  readonly groups: number;
  /** Elements per subgroup n_g (the same for all). */
  readonly groupElements: number;
  readonly choices: readonly SubgroupBits[];
  readonly sampler: 'softmax' | 'gumbel';
  readonly dtype: 'float32' | 'float64';
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  /** Architecture logits θ [G, K], registered as `arch_logits` (start at 0: uniform). */
  readonly archLogits: Tensor;
  /** Learned steps per nonzero choice, each [G], registered as `step_b{bits}`. */
  readonly steps: ReadonlyMap<number, Tensor>;
  /** 1 once the steps were initialised from the weight. */
  readonly initialized: Tensor;
  /** Softmax temperature τ of the search. */
  temperature = 1;
  /** Buffer 'mode': the {@link SubgroupMode} as an index into SUBGROUP_MODES (persistent, like the plan). */
  private readonly modeState: Tensor;
  /** Buffer 'assignment' [G]: the fixed width of each subgroup, −1 before `setAssignment`. */
  private readonly assignmentState: Tensor;
  private readonly rng: Rng;

  constructor(inFeatures: number, outFeatures: number, options: SubgroupLinearOptions = {}) {
    super();
    const who = `SubgroupLinear(${inFeatures}, ${outFeatures})`;
    for (const [name, v] of [['inFeatures', inFeatures], ['outFeatures', outFeatures]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`${who}: ${name} must be a positive integer, got ${v}`);
    }
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const axis = options.axis ?? 0;
    if (axis !== 0 && axis !== 1) throw new RangeError(`${who}: axis must be 0 (row blocks) or 1 (column blocks), got ${String(axis)}`);
    this.axis = axis;
    const length = axis === 0 ? outFeatures : inFeatures;
    const groupSize = options.groupSize ?? length;
    if (!Number.isInteger(groupSize) || groupSize < 1 || length % groupSize !== 0) {
      throw new RangeError(`${who}: groupSize must be a positive integer dividing ${length} (${axis === 0 ? 'rows' : 'columns'}), got ${groupSize}`);
    }
    this.groupSize = groupSize;
    this.groups = length / groupSize;
    this.groupElements = axis === 0 ? groupSize * inFeatures : outFeatures * groupSize;
    this.choices = validateChoices(options.choices ?? [0, 2, 4, 8], who);
    const sampler = options.sampler ?? 'softmax';
    if (sampler !== 'softmax' && sampler !== 'gumbel') throw new RangeError(`${who}: sampler must be 'softmax' or 'gumbel', got ${String(sampler)}`);
    this.sampler = sampler;
    const dtype = options.dtype ?? 'float32';
    if (dtype !== 'float32' && dtype !== 'float64') throw new RangeError(`${who}: dtype must be float32 or float64, got ${String(dtype)}`);
    this.dtype = dtype;
    this.rng = options.rng ?? globalRng;
    this.weight = this.registerParameter('weight', zeros([outFeatures, inFeatures], dtype));
    this.bias = options.bias ?? true ? this.registerParameter('bias', zeros([outFeatures], dtype)) : null;
    defaultLayerInit(this.weight, this.bias, this.rng);
    this.archLogits = this.registerParameter('arch_logits', zeros([this.groups, this.choices.length], dtype));
    const steps = new Map<number, Tensor>();
    for (const bits of this.choices) if (bits > 0) steps.set(bits, this.registerParameter(`step_b${bits}`, full([this.groups], 1, dtype)));
    this.steps = steps;
    this.initialized = this.registerBuffer('initialized', zeros([1]));
    this.modeState = this.registerBuffer('mode', full([1], SUBGROUP_MODES.indexOf('search'), 'float32'));
    this.assignmentState = this.registerBuffer('assignment', full([this.groups], -1, 'float32'));
  }

  /** float (plain weights), search (the mixture over the choices) or fixed (one width per subgroup); saved in the state dict. */
  get mode(): SubgroupMode {
    return SUBGROUP_MODES[this.modeState.data[0]!]!;
  }

  set mode(mode: SubgroupMode) {
    const code = SUBGROUP_MODES.indexOf(mode);
    if (code < 0) throw new RangeError(`SubgroupLinear: mode must be one of ${SUBGROUP_MODES.join(', ')}, got ${String(mode)}`);
    this.modeState.data[0] = code;
  }

  /** The fixed assignment, or null before `setAssignment`. */
  private get assignmentBits(): Int32Array | null {
    return this.assignmentState.data[0]! < 0 ? null : Int32Array.from(this.assignmentState.data);
  }

  /** Refuses a loaded mode that is not one of SUBGROUP_MODES, an assignment that is not all −1 or all choices, and fixed mode without one. */
  protected override checkLoadedState(incoming: ReadonlyMap<string, Tensor>): string[] {
    const problems: string[] = [];
    const mode = incoming.get('mode')?.data[0];
    if (mode !== undefined && SUBGROUP_MODES[mode] === undefined) problems.push(`mode: code ${mode} is not one of 0 (float), 1 (search), 2 (fixed)`);
    const assignment = incoming.get('assignment');
    if (assignment) {
      const values = Array.from(assignment.data);
      const unset = values.every((v) => v === -1);
      if (!unset && !values.every((v) => (this.choices as readonly number[]).includes(v))) {
        problems.push(`assignment: [${values.join(', ')}] must be all -1 (none) or widths among the choices {${this.choices.join(', ')}}`);
      }
      if (unset && mode === SUBGROUP_MODES.indexOf('fixed')) problems.push('mode: fixed, but the assignment is empty (-1)');
    }
    return problems;
  }

  /** A searchable copy of a float Linear (weights and bias copied; W is [out, in] as in Linear). */
  static fromLinear(source: Linear, options: Omit<SubgroupLinearOptions, 'bias'> = {}): SubgroupLinear {
    const layer = new SubgroupLinear(source.inFeatures, source.outFeatures, { ...options, bias: source.bias !== null });
    layer.weight.data.set(source.weight.data);
    if (source.bias && layer.bias) layer.bias.data.set(source.bias.data);
    return layer;
  }

  /** The parameters the search trains as architecture (the logits); the rest are weights and steps. */
  architectureParameters(): Tensor[] {
    return [this.archLogits];
  }

  /** Flat indices (row-major in W) of subgroup g's elements, in the block's row-major order. */
  subgroupIndices(g: number): Int32Array {
    if (!Number.isInteger(g) || g < 0 || g >= this.groups) throw new RangeError(`subgroup ${g} out of range [0, ${this.groups})`);
    const out = new Int32Array(this.groupElements);
    let k = 0;
    if (this.axis === 0) {
      for (let r = g * this.groupSize; r < (g + 1) * this.groupSize; r++) for (let c = 0; c < this.inFeatures; c++) out[k++] = r * this.inFeatures + c;
    } else {
      for (let r = 0; r < this.outFeatures; r++) for (let c = g * this.groupSize; c < (g + 1) * this.groupSize; c++) out[k++] = r * this.inFeatures + c;
    }
    return out;
  }

  /**
   * Sets every step from the current weight: for each subgroup and width b, the s = max|W_g|/q_b·f
   * (f on a grid of 64 points in (0, 1]) with the least squared quantization error.
   */
  initializeSteps(): void {
    noGrad(() => {
      const w = this.weight.data;
      for (let g = 0; g < this.groups; g++) {
        const idx = this.subgroupIndices(g);
        let maxAbs = 0;
        for (const i of idx) maxAbs = Math.max(maxAbs, Math.abs(w[i]!));
        for (const [bits, step] of this.steps) {
          const qmax = qmaxOf(bits);
          let best = Math.max(maxAbs / qmax, MIN_STEP);
          let bestError = Infinity;
          for (let j = 1; j <= 64; j++) {
            const s = Math.max((maxAbs / qmax) * (j / 64), MIN_STEP);
            let error = 0;
            for (const i of idx) {
              const q = Math.min(qmax, Math.max(-qmax, roundHalfEven(w[i]! / s)));
              error += (q * s - w[i]!) ** 2;
            }
            if (error < bestError) [best, bestError] = [s, error];
          }
          step.data[g] = best;
        }
      }
      this.initialized.data[0] = 1;
    });
  }

  /** Architecture weights α [G, K]: softmax(θ/τ), with Gumbel noise when sampling in training mode. */
  architectureWeights(): Tensor {
    if (!(this.temperature > 0) || !Number.isFinite(this.temperature)) throw new RangeError(`SubgroupLinear: temperature must be a positive finite number, got ${this.temperature}`);
    let logits = this.archLogits;
    if (this.sampler === 'gumbel' && this.training) {
      const noise = zeros(logits.shape, this.dtype);
      for (let i = 0; i < noise.size; i++) noise.data[i] = -Math.log(-Math.log(Math.min(Math.max(this.rng.uniform(), 1e-12), 1 - 1e-12)));
      logits = add(logits, noise);
    }
    return softmax(this.temperature === 1 ? logits : div(logits, this.temperature), 1);
  }

  /** The current width per subgroup in fixed mode, or null. */
  get assignment(): Int32Array | null {
    return this.assignmentBits ? this.assignmentBits.slice() : null;
  }

  /** Fixes each subgroup at its width (one of `choices`, G entries) and switches to fixed mode. */
  setAssignment(bits: ArrayLike<number>): void {
    if (bits.length !== this.groups) throw new RangeError(`SubgroupLinear: assignment has ${bits.length} entries, the layer has ${this.groups} subgroups`);
    for (let g = 0; g < bits.length; g++) {
      if (!(this.choices as readonly number[]).includes(bits[g]!)) throw new RangeError(`SubgroupLinear: subgroup ${g} width ${bits[g]} is not one of the choices {${this.choices.join(', ')}}`);
    }
    this.assignmentState.data.set(Array.from(bits));
    this.mode = 'fixed';
  }

  /** Q_b(W) over the grouped view of W (all subgroups at width b), as a tensor shaped like W. */
  quantizedAt(bits: number): Tensor {
    const step = this.steps.get(bits);
    if (!step) throw new RangeError(`SubgroupLinear: ${bits} bits is not a nonzero choice {${this.choices.filter((b) => b > 0).join(', ')}}`);
    if (this.initialized.data[0] === 0) this.initializeSteps();
    const qmax = qmaxOf(bits);
    const view = this.axis === 0 ? [this.groups, this.groupSize, this.inFeatures] : [this.outFeatures, this.groups, this.groupSize];
    const paramShape = this.axis === 0 ? [this.groups, 1, 1] : [1, this.groups, 1];
    let scale = reshape(step, paramShape);
    if (!allAbove(step.data, MIN_STEP)) scale = maximum(scale, MIN_STEP);
    const zeroPoint = zeros(paramShape, this.dtype);
    const q = fakeQuantize(reshape(this.weight, view), { scale, zeroPoint, qmin: -qmax, qmax }, { gradient: 'clipped', scaleGradFactor: 1 / Math.sqrt(this.groupElements * qmax) });
    return reshape(q, [this.outFeatures, this.inFeatures]);
  }

  /** Per-subgroup coefficients [G] as a tensor broadcasting against W [out, in]. */
  private perGroup(values: Tensor): Tensor {
    if (this.axis === 0) {
      // [G] -> [G, 1, 1] against [G, gs, in], viewed back as [out, 1] against [out, in]: repeat rows.
      return reshape(mul(reshape(values, [this.groups, 1]), ones2(this.groupSize, this.dtype)), [this.outFeatures, 1]);
    }
    return reshape(mul(reshape(values, [this.groups, 1]), ones2(this.groupSize, this.dtype)), [1, this.inFeatures]);
  }

  /** Ŵ of the current mode (see {@link SubgroupMode}). */
  quantizedWeight(): Tensor {
    if (this.mode === 'float') return this.weight;
    if (this.mode === 'fixed') {
      const assignment = this.assignmentBits;
      if (!assignment) throw new Error('SubgroupLinear: fixed mode needs an assignment (setAssignment)');
      let total: Tensor | null = null;
      for (const bits of this.choices) {
        if (bits === 0 || !assignment.includes(bits)) continue;
        const mask = zeros([this.groups], this.dtype);
        for (let g = 0; g < this.groups; g++) mask.data[g] = assignment[g] === bits ? 1 : 0;
        const term = mul(this.quantizedAt(bits), this.perGroup(mask));
        total = total ? add(total, term) : term;
      }
      return total ?? zeros([this.outFeatures, this.inFeatures], this.dtype);
    }
    const alpha = this.architectureWeights();
    let total: Tensor | null = null;
    this.choices.forEach((bits, k) => {
      if (bits === 0) return;
      const coefficient = reshape(narrow(alpha, 1, k, 1), [this.groups]);
      const term = mul(this.quantizedAt(bits), this.perGroup(coefficient));
      total = total ? add(total, term) : term;
    });
    return total ?? mul(this.weight, 0);
  }

  forward(x: Tensor): Tensor {
    if (x.shape[x.rank - 1] !== this.inFeatures) {
      throw new Error(`SubgroupLinear(${this.inFeatures}, ${this.outFeatures}): input has shape [${x.shape.join(', ')}], last dim should be ${this.inFeatures}`);
    }
    return linear(x, this.quantizedWeight(), this.bias);
  }

  /** Bytes of each choice for one subgroup, [K]. */
  choiceBytes(): number[] {
    return this.choices.map((b) => subgroupBytes(this.groupElements, b));
  }

  /** Expected stored bytes E = Σ_g Σ_k α_{g,k}·bytes(n_g, b_k) under the current architecture weights (differentiable scalar). */
  expectedBytes(): Tensor {
    const costs = new Tensor(this.dtype === 'float64' ? new Float64Array(this.groups * this.choices.length) : new Float32Array(this.groups * this.choices.length), [this.groups, this.choices.length]);
    const perChoice = this.choiceBytes();
    for (let i = 0; i < costs.size; i++) costs.data[i] = perChoice[i % this.choices.length]!;
    return sum(mul(this.architectureWeights(), costs));
  }

  /** Stored bytes of the fixed assignment: Σ_g bytes(n_g, b_g). */
  assignedBytes(): number {
    const assignment = this.assignmentBits;
    if (!assignment) throw new Error('SubgroupLinear: no assignment (setAssignment)');
    let total = 0;
    for (const b of assignment) total += subgroupBytes(this.groupElements, b);
    return total;
  }

  /** The integer codes of every subgroup under the fixed assignment (the exact values the fixed forward uses). */
  exportCodes(): SubgroupCodes[] {
    const assignment = this.assignmentBits;
    if (!assignment) throw new Error('SubgroupLinear: export needs a fixed assignment (setAssignment)');
    if (this.initialized.data[0] === 0) this.initializeSteps();
    const w = this.weight.data;
    const out: SubgroupCodes[] = [];
    for (let g = 0; g < this.groups; g++) {
      const bits = assignment[g]!;
      if (bits === 0) {
        out.push({ bits, scale: 0, codes: new Int32Array(0) });
        continue;
      }
      const qmax = qmaxOf(bits);
      const s = Math.max(this.steps.get(bits)!.data[g]!, MIN_STEP);
      const idx = this.subgroupIndices(g);
      const codes = new Int32Array(idx.length);
      for (let k = 0; k < idx.length; k++) codes[k] = Math.min(qmax, Math.max(-qmax, roundHalfEven(w[idx[k]!]! / s)));
      out.push({ bits, scale: s, codes });
    }
    return out;
  }

  override extraRepr(): string {
    return `${this.inFeatures}, ${this.outFeatures}, axis=${this.axis}, groupSize=${this.groupSize}, choices=[${this.choices.join(', ')}], mode=${this.mode}`;
  }
}

/** A [1, n] tensor of ones. */
function ones2(n: number, dtype: 'float32' | 'float64'): Tensor {
  return full([1, n], 1, dtype);
}

/** True when every value exceeds `bound` (false for NaN). */
function allAbove(values: ArrayLike<number>, bound: number): boolean {
  for (let i = 0; i < values.length; i++) if (!(values[i]! > bound)) return false;
  return true;
}
