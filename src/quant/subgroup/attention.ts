import { MultiheadAttention } from '../../nn/attention.ts';
import { Module } from '../../nn/module.ts';
import { causalMask } from '../../nn/models/transformer-lm.ts';
import { add, matmul, mul, reshape, softmax, transpose } from '../../tensor/ops.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { Rng } from '../../tensor/random.ts';
import { SubgroupLinear, type SubgroupMode } from './linear.ts';

export interface SubgroupAttentionOptions {
  /** Precision choices of every subgroup (default {0, 2, 4, 8}). */
  choices?: readonly number[];
  sampler?: 'softmax' | 'gumbel';
  dtype?: 'float32' | 'float64';
  rng?: Rng;
}

/**
 * Multi-head self-attention whose four projections are {@link SubgroupLinear}s with one subgroup per
 * head: W_q, W_k, W_v split into blocks of headDim output rows (head h's rows), W_o into blocks of
 * headDim input columns (the columns reading head h's context). A head whose Q, K, V and output
 * subgroups are all pruned contributes nothing.
 *
 * Forward (batch first, x [N, L, E]): Q = x·Ŵ_qᵀ + b_q (K, V likewise), per head
 * A_h = softmax(Q_h·K_hᵀ/√headDim + mask), output = concat_h(A_h·V_h)·Ŵ_oᵀ + b_o — the computation
 * of `MultiheadAttention` (PyTorch's) with the quantized weights.
 */
export class SubgroupAttention extends Module {
  readonly embedDim: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly q: SubgroupLinear;
  readonly k: SubgroupLinear;
  readonly v: SubgroupLinear;
  readonly out: SubgroupLinear;

  constructor(embedDim: number, numHeads: number, options: SubgroupAttentionOptions = {}) {
    super();
    if (!Number.isInteger(embedDim) || embedDim < 1) throw new RangeError(`SubgroupAttention: embedDim must be a positive integer, got ${embedDim}`);
    if (!Number.isInteger(numHeads) || numHeads < 1 || embedDim % numHeads !== 0) {
      throw new RangeError(`SubgroupAttention: numHeads must be a positive integer dividing embedDim ${embedDim}, got ${numHeads}`);
    }
    this.embedDim = embedDim;
    this.numHeads = numHeads;
    this.headDim = embedDim / numHeads;
    const common = { choices: options.choices, sampler: options.sampler, dtype: options.dtype, rng: options.rng, groupSize: this.headDim };
    this.q = this.registerModule('q', new SubgroupLinear(embedDim, embedDim, { ...common, axis: 0 }));
    this.k = this.registerModule('k', new SubgroupLinear(embedDim, embedDim, { ...common, axis: 0 }));
    this.v = this.registerModule('v', new SubgroupLinear(embedDim, embedDim, { ...common, axis: 0 }));
    this.out = this.registerModule('out', new SubgroupLinear(embedDim, embedDim, { ...common, axis: 1 }));
  }

  /** A copy of a float `MultiheadAttention` (in_proj rows → q, k, v; out_proj → out); needs its biases. */
  static fromMultiheadAttention(source: MultiheadAttention, options: Omit<SubgroupAttentionOptions, 'dtype'> = {}): SubgroupAttention {
    if (!source.inProjBias || !source.outProj.bias) throw new Error('SubgroupAttention.fromMultiheadAttention: the source must have biases (bias: true)');
    const e = source.embedDim;
    const layer = new SubgroupAttention(e, source.numHeads, { ...options, dtype: source.dtype });
    [layer.q, layer.k, layer.v].forEach((target, i) => {
      target.weight.data.set(source.inProjWeight.data.subarray(i * e * e, (i + 1) * e * e));
      target.bias!.data.set(source.inProjBias!.data.subarray(i * e, (i + 1) * e));
    });
    layer.out.weight.data.set(source.outProj.weight.data);
    layer.out.bias!.data.set(source.outProj.bias.data);
    return layer;
  }

  /** The four projections, in the order q, k, v, out. */
  projections(): SubgroupLinear[] {
    return [this.q, this.k, this.v, this.out];
  }

  /** Sets the mode of the four projections. */
  setMode(mode: SubgroupMode): void {
    for (const p of this.projections()) p.mode = mode;
  }

  /**
   * Self-attention over x [N, L, E] (batch first). `causal` masks every key after the query's
   * position. Returns [N, L, E].
   */
  forward(x: Tensor, options: { causal?: boolean } = {}): Tensor {
    if (x.rank !== 3 || x.shape[2] !== this.embedDim) throw new Error(`SubgroupAttention(${this.embedDim}, ${this.numHeads}): input must be [N, L, ${this.embedDim}], got [${x.shape.join(', ')}]`);
    const [batch, length] = [x.shape[0]!, x.shape[1]!];
    const heads = (t: Tensor): Tensor => transpose(reshape(t, [batch, length, this.numHeads, this.headDim]), [0, 2, 1, 3]);
    const q = heads(this.q.forward(x));
    const k = heads(this.k.forward(x));
    const v = heads(this.v.forward(x));
    let scores = matmul(mul(q, 1 / Math.sqrt(this.headDim)), k, { transB: true }); // [N, heads, L, L]
    if (options.causal) scores = add(scores, causalMask(length, x.dtype === 'float64' ? 'float64' : 'float32'));
    const context = matmul(softmax(scores, -1), v); // [N, heads, L, headDim]
    const merged = reshape(transpose(context, [0, 2, 1, 3]), [batch, length, this.embedDim]);
    return this.out.forward(merged);
  }

  override extraRepr(): string {
    return `embedDim=${this.embedDim}, numHeads=${this.numHeads}`;
  }
}

/** Additive causal mask [L, L]: 0 on and below the diagonal, −∞ above (nn's, re-exported here). */
export { causalMask };
