/**
 * Multi-head attention with PyTorch 1.13's names, defaults, parameter names and init
 * (`in_proj_weight`, `in_proj_bias`, `out_proj.weight`, `out_proj.bias`): the fused `attention`
 * primitive for self-attention without weights, else composed of autograd ops.
 */
import {
  add, attention, cast, globalRng, linear, matmul, mean, mul, narrow, reshape, softmax, squeeze, transpose, unsqueeze, zeros,
  type Rng, type Tensor,
} from '../tensor/index.ts';
import { fusedTransformerLayers } from './fused-layers.ts';
import { Module, shapeText, sameShape } from './module.ts';
import { invertedDropout } from './dropout.ts';
import { kaimingUniform, xavierUniform } from './init.ts';
import type { FloatDType } from './rnn.ts';

export interface MultiheadAttentionOptions {
  /** Dropout probability on the attention weights, in training mode (default 0). */
  dropout?: number;
  /** Learn in_proj_bias and out_proj.bias (default true). */
  bias?: boolean;
  /** query, key, value and output are [N, L, E] instead of [L, N, E] (default false). */
  batchFirst?: boolean;
  /** Generator for the initial weights and for dropout (default: the global one). */
  rng?: Rng;
  /** Parameter dtype (default float32; float64 runs on the reference backend, for gradient checks). */
  dtype?: FloatDType;
}

/**
 * Masks, as PyTorch: an int32 tensor is a boolean mask (non-zero = masked out, i.e. PyTorch's
 * `True`); a float tensor is added to the attention scores (use −Infinity to mask).
 */
export interface MultiheadAttentionForwardOptions {
  /** [N, S] (unbatched: [S]): keys to ignore per batch entry. */
  keyPaddingMask?: Tensor | null;
  /** [L, S] for every batch entry and head, or [N·numHeads, L, S] (unbatched: [numHeads, L, S]). */
  attnMask?: Tensor | null;
  /** Also return the attention weights (default true). */
  needWeights?: boolean;
  /** Return the weights averaged over heads, [N, L, S], instead of per head, [N, numHeads, L, S] (default true). */
  averageAttnWeights?: boolean;
}

/**
 * The output projection of MultiheadAttention (`out_proj`), y = x·Wᵀ + b with W [E, E].
 * Like PyTorch's NonDynamicallyQuantizableLinear it is not a `Linear`, so quantization passes that
 * swap Linear layers leave attention whole. Weight init as Linear (kaiming_uniform, a = √5).
 * @internal created by MultiheadAttention.
 */
export class AttentionOutProjection extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;

  constructor(embedDim: number, bias: boolean, dtype: FloatDType) {
    super();
    this.weight = this.registerParameter('weight', zeros([embedDim, embedDim], dtype));
    this.bias = bias ? this.registerParameter('bias', zeros([embedDim], dtype)) : null;
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }

  override extraRepr(): string {
    return `${this.weight.shape[1]}, ${this.weight.shape[0]}, bias=${this.bias !== null}`;
  }
}

/**
 * Multi-head scaled dot-product attention, as `torch.nn.MultiheadAttention` (kdim = vdim = embedDim,
 * no bias_k/bias_v, no add_zero_attn):
 * Q = query·W_qᵀ + b_q, K, V likewise (W_q, W_k, W_v = rows of in_proj_weight [3E, E]);
 * per head h, A_h = softmax(Q_h·K_hᵀ/√(E/numHeads) + masks), O_h = A_h·V_h; output = out_proj(concat_h O_h).
 *
 * Shapes: query [L, N, E], key and value [S, N, E] ([N, L, E] / [N, S, E] with batchFirst;
 * unbatched [L, E] / [S, E]); output as query. Init as PyTorch: xavier_uniform in_proj_weight,
 * zero biases, out_proj.weight as Linear.
 *
 * Self-attention (query, key and value the same tensor) with `needWeights: false`, no key-padding
 * mask, no attention mask or the causal one ([L, L] masking exactly the keys after each query:
 * int32 non-zero / float −∞ above the diagonal, 0 on and below it) and no dropout in effect runs
 * as one fused `attention` primitive on in_proj(x) [N, L, 3E] (forward and backward; the same
 * function up to rounding); everything else runs the composed ops.
 */
export class MultiheadAttention extends Module {
  readonly embedDim: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly dropout: number;
  readonly batchFirst: boolean;
  readonly dtype: FloatDType;
  readonly inProjWeight: Tensor;
  readonly inProjBias: Tensor | null;
  /** Registered as `out_proj`. */
  readonly outProj: AttentionOutProjection;
  private readonly rng: Rng;

  constructor(embedDim: number, numHeads: number, options: MultiheadAttentionOptions = {}) {
    super();
    if (!Number.isInteger(embedDim) || embedDim < 1) throw new RangeError(`MultiheadAttention: embedDim must be a positive integer, got ${embedDim}`);
    if (!Number.isInteger(numHeads) || numHeads < 1) throw new RangeError(`MultiheadAttention: numHeads must be a positive integer, got ${numHeads}`);
    if (embedDim % numHeads !== 0) throw new RangeError(`MultiheadAttention: embedDim ${embedDim} must be divisible by numHeads ${numHeads}`);
    const dropout = options.dropout ?? 0;
    if (!(dropout >= 0 && dropout <= 1)) throw new RangeError(`MultiheadAttention: dropout must be in [0, 1], got ${dropout}`);
    this.embedDim = embedDim;
    this.numHeads = numHeads;
    this.headDim = embedDim / numHeads;
    this.dropout = dropout;
    this.batchFirst = options.batchFirst ?? false;
    this.dtype = options.dtype ?? 'float32';
    this.rng = options.rng ?? globalRng;
    const bias = options.bias ?? true;
    this.inProjWeight = this.registerParameter('in_proj_weight', zeros([3 * embedDim, embedDim], this.dtype));
    this.inProjBias = bias ? this.registerParameter('in_proj_bias', zeros([3 * embedDim], this.dtype)) : null;
    this.outProj = this.registerModule('out_proj', new AttentionOutProjection(embedDim, bias, this.dtype));
    this.resetParameters(options.rng);
  }

  /** Re-draws the weights: xavier_uniform in_proj_weight, Linear's init for out_proj.weight, zero biases. */
  resetParameters(rng?: Rng): void {
    const generator = rng ?? this.rng;
    kaimingUniform(this.outProj.weight, { a: Math.sqrt(5), rng: generator });
    xavierUniform(this.inProjWeight, { rng: generator });
    this.inProjBias?.data.fill(0);
    this.outProj.bias?.data.fill(0);
  }

  /**
   * Attends from `query` to `key`/`value`. Returns [output, weights]: weights are [N, L, S]
   * (averaged over heads) or [N, numHeads, L, S] (unbatched without N), after dropout, or null
   * when `needWeights` is false. A query row whose keys are all masked gives NaN, as PyTorch.
   */
  forward(query: Tensor, key: Tensor, value: Tensor, options: MultiheadAttentionForwardOptions = {}): [Tensor, Tensor | null] {
    const who = `MultiheadAttention(${this.embedDim}, numHeads=${this.numHeads})`;
    for (const [name, t] of [['query', query], ['key', key], ['value', value]] as const) {
      if (t.dtype !== this.dtype) throw new TypeError(`${who}: ${name} dtype ${t.dtype} differs from the parameters' ${this.dtype}`);
      if (t.rank !== query.rank || (t.rank !== 2 && t.rank !== 3)) {
        const layout = this.batchFirst ? '[N, L, E]' : '[L, N, E]';
        throw new Error(`${who}: query, key and value must all be ${layout} or all unbatched [L, E], got ${shapeText(query.shape)}, ${shapeText(key.shape)}, ${shapeText(value.shape)}`);
      }
      if (t.shape[t.rank - 1] !== this.embedDim) throw new Error(`${who}: ${name} has shape ${shapeText(t.shape)}, last dim should be ${this.embedDim}`);
    }
    if (!sameShape(key.shape, value.shape)) throw new Error(`${who}: key ${shapeText(key.shape)} and value ${shapeText(value.shape)} must have the same shape`);
    const batched = query.rank === 3;
    const timeAxis = batched && this.batchFirst ? 1 : 0;
    // Internally [N, L, E].
    const toBatchFirst = (t: Tensor): Tensor => (!batched ? unsqueeze(t, 0) : this.batchFirst ? t : transpose(t, [1, 0, 2]));
    const q3 = toBatchFirst(query);
    const k3 = toBatchFirst(key);
    const v3 = toBatchFirst(value);
    const [batch, targetLength] = [q3.shape[0]!, q3.shape[1]!];
    const sourceLength = k3.shape[1]!;
    if (k3.shape[0] !== batch) throw new Error(`${who}: query ${shapeText(query.shape)} and key ${shapeText(key.shape)} differ in batch size`);
    const e = this.embedDim;
    const causal = this.fusedCausality(query, key, value, options, targetLength);
    if (causal !== null) {
      const merged = attention(linear(q3, this.inProjWeight, this.inProjBias), { heads: this.numHeads, causal }); // [N, L, E]
      const output = this.outProj.forward(merged);
      return [!batched ? squeeze(output, 0) : timeAxis === 0 ? transpose(output, [1, 0, 2]) : output, null];
    }
    const mask = this.combinedMask(options, batched, batch, targetLength, sourceLength, who);

    const bias = (i: number): Tensor | null => (this.inProjBias ? narrow(this.inProjBias, 0, i * e, e) : null);
    // [N, T, E] -> [N, heads, T, headDim]
    const heads = (t: Tensor): Tensor => transpose(reshape(t, [batch, t.shape[1]!, this.numHeads, this.headDim]), [0, 2, 1, 3]);
    const q = heads(linear(q3, narrow(this.inProjWeight, 0, 0, e), bias(0)));
    const k = heads(linear(k3, narrow(this.inProjWeight, 0, e, e), bias(1)));
    const v = heads(linear(v3, narrow(this.inProjWeight, 0, 2 * e, e), bias(2)));

    let scores = matmul(mul(q, 1 / Math.sqrt(this.headDim)), k, { transB: true }); // [N, heads, L, S]
    if (mask) scores = add(scores, mask);
    let weights = softmax(scores, -1);
    if (this.training && this.dropout > 0) weights = invertedDropout(weights, this.dropout, this.rng);
    const context = matmul(weights, v); // [N, heads, L, headDim]
    const merged = reshape(transpose(context, [0, 2, 1, 3]), [batch, targetLength, e]);
    let output = this.outProj.forward(merged);
    output = !batched ? squeeze(output, 0) : timeAxis === 0 ? transpose(output, [1, 0, 2]) : output;

    if (!(options.needWeights ?? true)) return [output, null];
    let returned = options.averageAttnWeights ?? true ? mean(weights, 1) : weights;
    if (!batched) returned = squeeze(returned, 0);
    return [output, returned];
  }

  /**
   * Whether this call can run as the fused `attention` primitive: null if not, else whether with the
   * causal mask (see the class comment for the conditions).
   */
  private fusedCausality(query: Tensor, key: Tensor, value: Tensor, options: MultiheadAttentionForwardOptions, length: number): boolean | null {
    if (!fusedTransformerLayers() || query !== key || key !== value) return null;
    if ((options.needWeights ?? true) || options.keyPaddingMask || (this.training && this.dropout > 0)) return null;
    const mask = options.attnMask;
    if (!mask) return false;
    return isCausalMask(mask, length) ? true : null;
  }

  /** Key-padding and attention masks as one additive float mask broadcastable to [N, heads, L, S], or null. */
  private combinedMask(options: MultiheadAttentionForwardOptions, batched: boolean, batch: number, targetLength: number, sourceLength: number, who: string): Tensor | null {
    let combined: Tensor | null = null;
    const padding = options.keyPaddingMask;
    if (padding) {
      const expected = batched ? [batch, sourceLength] : [sourceLength];
      if (!sameShape(padding.shape, expected)) throw new Error(`${who}: keyPaddingMask has shape ${shapeText(padding.shape)}, expected ${shapeText(expected)}`);
      combined = reshape(this.additive(padding), [batch, 1, 1, sourceLength]);
    }
    const attn = options.attnMask;
    if (attn) {
      const full = [batched ? batch * this.numHeads : this.numHeads, targetLength, sourceLength];
      let shaped: Tensor;
      if (sameShape(attn.shape, [targetLength, sourceLength])) shaped = this.additive(attn);
      else if (sameShape(attn.shape, full)) shaped = reshape(this.additive(attn), [batch, this.numHeads, targetLength, sourceLength]);
      else throw new Error(`${who}: attnMask has shape ${shapeText(attn.shape)}, expected ${shapeText([targetLength, sourceLength])} or ${shapeText(full)}`);
      combined = combined ? add(combined, shaped) : shaped;
    }
    return combined;
  }

  /** An int32 (boolean) mask becomes 0 / −∞; a float mask is used as it is, in the parameters' dtype. */
  private additive(mask: Tensor): Tensor {
    if (mask.dtype !== 'int32') return cast(mask, this.dtype);
    const out = zeros(mask.shape, this.dtype);
    for (let i = 0; i < mask.size; i++) if (mask.data[i] !== 0) out.data[i] = -Infinity;
    return out;
  }

  override extraRepr(): string {
    const parts = [`embedDim=${this.embedDim}`, `numHeads=${this.numHeads}`];
    if (this.dropout !== 0) parts.push(`dropout=${this.dropout}`);
    if (!this.inProjBias) parts.push('bias=false');
    if (this.batchFirst) parts.push('batchFirst=true');
    if (this.dtype !== 'float32') parts.push(`dtype=${this.dtype}`);
    return parts.join(', ');
  }
}

/**
 * Whether `mask` is [L, L] and masks exactly the keys after each query: int32 non-zero (float −∞)
 * above the diagonal and 0 on and below it.
 */
function isCausalMask(mask: Tensor, length: number): boolean {
  if (!sameShape(mask.shape, [length, length])) return false;
  const masked = mask.dtype === 'int32' ? (v: number): boolean => v !== 0 : (v: number): boolean => v === -Infinity;
  for (let i = 0; i < length; i++) {
    for (let j = 0; j < length; j++) {
      const v = mask.data[i * length + j]!;
      if (j > i ? !masked(v) : v !== 0) return false;
    }
  }
  return true;
}
