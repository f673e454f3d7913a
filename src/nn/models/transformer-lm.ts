/**
 * A small decoder-only (causal, pre-LayerNorm) Transformer language model with the next-word
 * interface of {@link NextWordModel}: int32 ids [N, C] → logits [N, V] of the word after each row.
 *
 * Every matmul with a weight is an `nn.Linear` (the fused Q/K/V projection, the attention output
 * projection, the two MLP layers, the head), so the quantization passes that swap Linear layers
 * (`quant.prepareQat`, `quant.rnn.prepareRnnQat`) reach all of them; the two matmuls between
 * activations (Q·Kᵀ and A·V) take optional operand fake-quantizers (`setOperandQuantizers`).
 */
import { Module, type TensorModule } from '../module.ts';
import { fusedTransformerLayers } from '../fused-layers.ts';
import { Embedding } from '../embedding.ts';
import { LayerNorm } from '../layernorm.ts';
import { Linear } from '../linear.ts';
import { GELU, ReLU } from '../activation.ts';
import { Sequential } from '../sequential.ts';
import { invertedDropout } from '../dropout.ts';
import { chainReleasing, releaseIntermediates } from '../../autograd/release.ts';
import {
  add, arange, attention, concat, decodeAttention, globalRng, linear, matmul, mul, narrow, reshape, softmax, Tensor, transpose, zeros,
  type Rng,
} from '../../tensor/index.ts';
import { isGradEnabled } from '../../autograd/engine.ts';
import { fusedDecodeStep } from './transformer-decode.ts';

/** The operands of the two activation-by-activation matmuls of attention: (Q·Kᵀ) and (A·V). */
export const ATTENTION_OPERANDS = ['query', 'key', 'probs', 'value'] as const;
export type AttentionOperand = (typeof ATTENTION_OPERANDS)[number];

/** A tensor-to-tensor module applied to one attention operand (a fake-quantizer, in QAT). */
export type OperandQuantizers = Partial<Record<AttentionOperand, Module & TensorModule>>;

/**
 * Additive causal mask [C, C] in `dtype`: 0 on and below the diagonal, −∞ above it (position t
 * attends to positions ≤ t only).
 */
export function causalMask(steps: number, dtype: 'float32' | 'float64' = 'float32'): Tensor {
  return offsetCausalMask(steps, 0, dtype);
}

/**
 * Additive mask [S, past + S] of S new positions after `past` cached ones: new position i (absolute
 * past + i) sees the cached positions and the new ones up to itself (0), not the later ones (−∞).
 */
export function offsetCausalMask(steps: number, past: number, dtype: 'float32' | 'float64' = 'float32'): Tensor {
  const width = past + steps;
  const mask = zeros([steps, width], dtype);
  for (let i = 0; i < steps; i++) for (let j = past + i + 1; j < width; j++) mask.data[i * width + j] = -Infinity;
  return mask;
}

/**
 * The keys and values one {@link CausalSelfAttention} layer has seen so far (a KV cache), in buffers
 * allocated once with room for `capacity` positions: keys and values are [N, capacity, E], row t
 * holding position t's key (value) with the heads side by side, as the K (V) third of the fused
 * projection (after the operand quantizers, which Q·Kᵀ and A·V read). Each call writes its new
 * positions' rows in place, so a decoding step copies O(E) per row, not the whole cache.
 */
export interface AttentionCache {
  /** [N, capacity, E]; null until the first call allocates it (N is known then). */
  keys: Tensor | null;
  values: Tensor | null;
  /** Positions held: rows 0..length−1 are valid. */
  length: number;
  /** The most positions the buffers hold. */
  readonly capacity: number;
}

/** An empty {@link AttentionCache} for up to `capacity` positions (the buffers are allocated at the first call). */
export function createAttentionCache(capacity: number): AttentionCache {
  if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`createAttentionCache: capacity must be a positive integer, got ${String(capacity)}`);
  return { keys: null, values: null, length: 0, capacity };
}

export interface CausalSelfAttentionOptions {
  /** Dropout on the attention weights, in training mode (default 0). */
  readonly dropout?: number;
  readonly rng?: Rng;
}

/**
 * Causal multi-head self-attention on [N, C, E]: [Q | K | V] = qkv(x) (one Linear E → 3E, rows
 * W_q, W_k, W_v as PyTorch's in_proj_weight), per head h
 * A_h = softmax(Q_h·K_hᵀ/√d + causal mask), O_h = A_h·V_h (d = E / heads), y = proj(concat_h O_h).
 * With operand quantizers set, Q, K, A and V pass through them right before their matmul.
 */
export class CausalSelfAttention extends Module {
  readonly embedDim: number;
  readonly numHeads: number;
  readonly headDim: number;
  readonly dropout: number;
  /** Registered as `qkv`: Linear(E, 3E). */
  readonly qkv: Module & TensorModule;
  /** Registered as `proj`: Linear(E, E). */
  readonly proj: Module & TensorModule;
  private readonly rng: Rng;
  private quantizers: OperandQuantizers = {};

  constructor(embedDim: number, numHeads: number, options: CausalSelfAttentionOptions = {}) {
    super();
    if (!Number.isInteger(embedDim) || embedDim < 1) throw new RangeError(`CausalSelfAttention: embedDim must be a positive integer, got ${embedDim}`);
    if (!Number.isInteger(numHeads) || numHeads < 1) throw new RangeError(`CausalSelfAttention: numHeads must be a positive integer, got ${numHeads}`);
    if (embedDim % numHeads !== 0) throw new RangeError(`CausalSelfAttention: embedDim ${embedDim} must be divisible by numHeads ${numHeads}`);
    const dropout = options.dropout ?? 0;
    if (!(dropout >= 0 && dropout < 1)) throw new RangeError(`CausalSelfAttention: dropout must be in [0, 1), got ${dropout}`);
    this.embedDim = embedDim;
    this.numHeads = numHeads;
    this.headDim = embedDim / numHeads;
    this.dropout = dropout;
    this.rng = options.rng ?? globalRng;
    this.qkv = this.registerModule('qkv', new Linear(embedDim, 3 * embedDim, { rng: options.rng }));
    this.proj = this.registerModule('proj', new Linear(embedDim, embedDim, { rng: options.rng }));
  }

  /**
   * Installs modules applied to Q and K (before Q·Kᵀ), to the attention weights A and to V (before
   * A·V); registered as `quant_query`, `quant_key`, `quant_probs`, `quant_value`. Throws if any is set already.
   */
  setOperandQuantizers(quantizers: OperandQuantizers): void {
    for (const name of Object.keys(quantizers)) {
      if (!(ATTENTION_OPERANDS as readonly string[]).includes(name)) throw new RangeError(`CausalSelfAttention.setOperandQuantizers: unknown operand ${JSON.stringify(name)} (known: ${ATTENTION_OPERANDS.join(', ')})`);
      if (this.quantizers[name as AttentionOperand]) throw new Error(`CausalSelfAttention.setOperandQuantizers: operand '${name}' already has a quantizer`);
    }
    for (const name of ATTENTION_OPERANDS) {
      const q = quantizers[name];
      if (q) this.registerModule(`quant_${name}`, q);
    }
    this.quantizers = { ...this.quantizers, ...quantizers };
  }

  /** The operand modules installed by {@link setOperandQuantizers}. */
  operandQuantizers(): OperandQuantizers {
    return { ...this.quantizers };
  }

  /**
   * x [N, C, E] → [N, C, E]; position t sees positions 0..t. Without operand quantizers and
   * attention dropout this is one `attention` primitive on the fused Q/K/V projection (no head
   * split, transposes or mask tensor; a fused native kernel, forward and backward); else the
   * composed ops of {@link forwardCached}.
   */
  forward(x: Tensor): Tensor {
    const fused = fusedTransformerLayers() && Object.keys(this.quantizers).length === 0 && !(this.training && this.dropout > 0);
    if (!fused || x.rank !== 3 || x.shape[2] !== this.embedDim) return this.attend(x, null);
    return this.proj.forward(attention(this.qkv.forward(x), { heads: this.numHeads, causal: true }));
  }

  /**
   * Incremental attention with a KV cache: x [N, S, E] holds S new positions that follow the T
   * positions in `cache`; their keys and values are written into `cache` (rows T..T+S−1) and the
   * output [N, S, E] is what `forward` gives at those positions of the whole sequence (each sees
   * every cached position and the new ones up to itself). With S = 1 this is one decoding step.
   *
   * Without a tape (noGrad), operand quantizers or training-mode attention dropout (and with the
   * fused layers on, the default) this is one
   * `decodeAttention` primitive on the fused projection and the cache buffers (no head split,
   * concat or mask); else composed ops, differentiable with respect to x (the cached positions are
   * constants).
   */
  forwardCached(x: Tensor, cache: AttentionCache): Tensor {
    return this.attend(x, cache);
  }

  /** {@link forwardCached}, or with `cache` null the whole sequence without a cache (forward's composed path). */
  private attend(x: Tensor, cache: AttentionCache | null): Tensor {
    if (x.rank !== 3 || x.shape[2] !== this.embedDim) throw new Error(`CausalSelfAttention(${this.embedDim}, heads=${this.numHeads}): expected [N, C, ${this.embedDim}], got [${x.shape.join(', ')}]`);
    if (x.dtype !== 'float32' && x.dtype !== 'float64') throw new TypeError(`CausalSelfAttention.forwardCached: expected a float32 or float64 x, got ${x.dtype}`);
    const [batch, steps] = x.shape as [number, number, number];
    const past = cache?.length ?? 0;
    const e = this.embedDim;
    if (cache) {
      if (past + steps > cache.capacity) throw new RangeError(`CausalSelfAttention.forwardCached: positions ${past}..${past + steps - 1} do not fit the cache's capacity ${cache.capacity}`);
      if (cache.keys && cache.keys.shape[0] !== batch) throw new Error(`CausalSelfAttention.forwardCached: the cache holds ${cache.keys.shape[0]} rows, x has ${batch}`);
      if (cache.keys && cache.keys.dtype !== x.dtype) throw new TypeError(`CausalSelfAttention.forwardCached: the cache holds ${cache.keys.dtype}, x is ${x.dtype}`);
      if (!cache.keys || !cache.values) {
        cache.keys = zeros([batch, cache.capacity, e], x.dtype);
        cache.values = zeros([batch, cache.capacity, e], x.dtype);
      }
    }
    const fused = this.qkv.forward(x); // [N, S, 3E]
    const direct = fusedTransformerLayers() && !isGradEnabled() && Object.keys(this.quantizers).length === 0 && !(this.training && this.dropout > 0);
    if (cache?.keys && cache.values && direct) {
      writeRows(cache.keys, fused, past, e);
      writeRows(cache.values, fused, past, 2 * e);
      cache.length = past + steps;
      return this.proj.forward(decodeAttention(fused, cache.keys, cache.values, { heads: this.numHeads, past }));
    }
    // [N, T, E] -> [N, heads, T, d]
    const split = (t: Tensor): Tensor => transpose(reshape(t, [batch, t.shape[1]!, this.numHeads, this.headDim]), [0, 2, 1, 3]);
    const apply = (name: AttentionOperand, t: Tensor): Tensor => this.quantizers[name]?.forward(t) ?? t;
    const q = apply('query', split(narrow(fused, 2, 0, e)));
    const newKeys = apply('key', split(narrow(fused, 2, e, e)));
    const newValues = apply('value', split(narrow(fused, 2, 2 * e, e)));
    let keys = newKeys; // [N, heads, T+S, d]
    let values = newValues;
    if (cache?.keys && cache.values) {
      if (past > 0) {
        keys = concat([split(narrow(cache.keys, 1, 0, past)), newKeys], 2);
        values = concat([split(narrow(cache.values, 1, 0, past)), newValues], 2);
      }
      // Back to rows [N, S, E] in the buffers (what the next call reads).
      writeRows(cache.keys, reshape(transpose(newKeys, [0, 2, 1, 3]), [batch, steps, e]), past, 0);
      writeRows(cache.values, reshape(transpose(newValues, [0, 2, 1, 3]), [batch, steps, e]), past, 0);
      cache.length = past + steps;
    }
    let scores = mul(matmul(q, keys, { transB: true }), 1 / Math.sqrt(this.headDim)); // [N, heads, S, T+S]
    if (steps > 1) scores = add(scores, offsetCausalMask(steps, past, x.dtype)); // a single new position sees everything
    let weights = softmax(scores, -1);
    if (this.training && this.dropout > 0) weights = invertedDropout(weights, this.dropout, this.rng);
    const context = matmul(apply('probs', weights), values); // [N, heads, S, d]
    return this.proj.forward(reshape(transpose(context, [0, 2, 1, 3]), [batch, steps, e]));
  }

  override extraRepr(): string {
    return `embedDim=${this.embedDim}, numHeads=${this.numHeads}${this.dropout ? `, dropout=${this.dropout}` : ''}`;
  }
}

/** MLP nonlinearities of a {@link TransformerBlock}. */
export const TRANSFORMER_ACTIVATIONS = ['gelu', 'gelu-tanh', 'relu'] as const;
export type TransformerActivation = (typeof TRANSFORMER_ACTIVATIONS)[number];

export interface TransformerBlockOptions {
  /** MLP width (default 4·E). */
  readonly mlpDim?: number;
  /** MLP nonlinearity: 'gelu' (default, the exact erf form), 'gelu-tanh' (the tanh approximation) or 'relu'. */
  readonly activation?: TransformerActivation;
  /** Dropout on the attention weights and after each residual branch, in training mode (default 0). */
  readonly dropout?: number;
  readonly rng?: Rng;
}

/**
 * A pre-LayerNorm Transformer decoder block on [N, C, E]:
 * x ← x + attn(ln1(x)); x ← x + fc2(act(fc1(ln2(x)))) with fc1: E → mlpDim, fc2: mlpDim → E.
 */
export class TransformerBlock extends Module {
  readonly embedDim: number;
  readonly mlpDim: number;
  readonly dropout: number;
  readonly ln1: Module & TensorModule;
  readonly attn: CausalSelfAttention;
  readonly ln2: Module & TensorModule;
  readonly fc1: Module & TensorModule;
  readonly act: Module & TensorModule;
  readonly fc2: Module & TensorModule;
  private readonly rng: Rng;

  constructor(embedDim: number, numHeads: number, options: TransformerBlockOptions = {}) {
    super();
    const mlpDim = options.mlpDim ?? 4 * embedDim;
    if (!Number.isInteger(mlpDim) || mlpDim < 1) throw new RangeError(`TransformerBlock: mlpDim must be a positive integer, got ${mlpDim}`);
    const activation = options.activation ?? 'gelu';
    if (!(TRANSFORMER_ACTIVATIONS as readonly string[]).includes(activation)) throw new RangeError(`TransformerBlock: activation must be one of ${TRANSFORMER_ACTIVATIONS.join(', ')}, got ${JSON.stringify(activation)}`);
    const dropout = options.dropout ?? 0;
    this.embedDim = embedDim;
    this.mlpDim = mlpDim;
    this.dropout = dropout;
    this.rng = options.rng ?? globalRng;
    this.ln1 = this.registerModule('ln1', new LayerNorm(embedDim));
    this.attn = this.registerModule('attn', new CausalSelfAttention(embedDim, numHeads, { dropout, rng: options.rng }));
    this.ln2 = this.registerModule('ln2', new LayerNorm(embedDim));
    this.fc1 = this.registerModule('fc1', new Linear(embedDim, mlpDim, { rng: options.rng }));
    this.act = this.registerModule('act', activation === 'gelu' ? new GELU() : activation === 'gelu-tanh' ? new GELU({ approximate: 'tanh' }) : new ReLU());
    this.fc2 = this.registerModule('fc2', new Linear(mlpDim, embedDim, { rng: options.rng }));
  }

  forward(x: Tensor): Tensor {
    return this.run(x, (t) => this.attn.forward(t), true);
  }

  /** `forward` at S new positions [N, S, E] after the ones in `cache` (see {@link CausalSelfAttention.forwardCached}). */
  forwardCached(x: Tensor, cache: AttentionCache): Tensor {
    return this.run(x, (t) => this.attn.forwardCached(t, cache), false);
  }

  /** With `release`, under no-grad the intermediates' buffers go back to the pool once the block no longer reads them. */
  private run(x: Tensor, attend: (t: Tensor) => Tensor, release: boolean): Tensor {
    const drop = (t: Tensor): Tensor => (this.training && this.dropout > 0 ? invertedDropout(t, this.dropout, this.rng) : t);
    const a = this.ln1.forward(x);
    const attended = attend(a);
    const dropped = drop(attended);
    const h = add(x, dropped);
    if (release) releaseIntermediates([a, attended, dropped], [x, h]);
    const n = this.ln2.forward(h);
    const up = this.fc1.forward(n);
    const active = this.act.forward(up);
    const down = this.fc2.forward(active);
    const droppedDown = drop(down);
    const y = add(h, droppedDown);
    if (release) releaseIntermediates([n, up, active, down, droppedDown, h], [x, y]);
    return y;
  }
}

/** The KV cache of a whole {@link TransformerLM}: one {@link AttentionCache} per block and the positions seen. */
export interface TransformerCache {
  readonly layers: AttentionCache[];
  /** Positions already fed (the next one fed is at this position). */
  length: number;
}

export interface TransformerLMOptions {
  /** Vocabulary size V. */
  readonly vocabSize: number;
  /** Longest context C the position table covers (default 64). */
  readonly maxContext?: number;
  /** Model width E (default 64). */
  readonly embedDim?: number;
  /** Blocks (default 2). */
  readonly numLayers?: number;
  /** Attention heads per block, dividing E (default 4). */
  readonly numHeads?: number;
  /** MLP width (default 4·E). */
  readonly mlpDim?: number;
  /** MLP nonlinearity (default 'gelu'; see {@link TransformerBlockOptions}). */
  readonly activation?: TransformerActivation;
  /** Dropout (attention weights, residual branches, embeddings), training mode only (default 0). */
  readonly dropout?: number;
  /** Use the token table as the head's weight (no `head` Linear; default false). */
  readonly tieWeights?: boolean;
  readonly rng?: Rng;
}

/**
 * Decoder-only Transformer LM: x = tokenEmbedding(ids) + positionEmbedding(0..C−1) [N, C, E] →
 * `numLayers` pre-LN {@link TransformerBlock}s (causal) → final LayerNorm → head Linear(E, V)
 * (or xᵀ of the token table with `tieWeights`). `forward` gives the logits of the word after the
 * last position, [N, V], as {@link NextWordModel}; `forwardAll` those of every position, [N, C, V].
 *
 * The token table is initialised N(0, 0.02²) and the position table N(0, 0.01²)
 * (the nn.Embedding N(0, 1) default is far too large beside a LayerNorm'd residual stream);
 * the Linear layers keep nn.Linear's init.
 */
export class TransformerLM extends Module implements TensorModule {
  readonly vocabSize: number;
  readonly maxContext: number;
  readonly embedDim: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly tieWeights: boolean;
  readonly dropout: number;
  readonly tokenEmbedding: Module & TensorModule & { readonly weight: Tensor };
  readonly positionEmbedding: Module & TensorModule;
  readonly blocks: Sequential;
  readonly lnFinal: Module & TensorModule;
  /** Linear(E, V); null with `tieWeights`. */
  readonly head: (Module & TensorModule) | null;
  private readonly rng: Rng;

  constructor(options: TransformerLMOptions) {
    super();
    const { vocabSize } = options;
    const maxContext = options.maxContext ?? 64;
    const embedDim = options.embedDim ?? 64;
    const numLayers = options.numLayers ?? 2;
    const numHeads = options.numHeads ?? 4;
    const mlpDim = options.mlpDim ?? 4 * embedDim;
    for (const [name, v] of [['vocabSize', vocabSize], ['maxContext', maxContext], ['embedDim', embedDim], ['numLayers', numLayers], ['numHeads', numHeads], ['mlpDim', mlpDim]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`TransformerLM: ${name} must be a positive integer, got ${String(v)}`);
    }
    if (vocabSize < 2) throw new RangeError(`TransformerLM: vocabSize must be at least 2, got ${vocabSize}`);
    if (embedDim % numHeads !== 0) throw new RangeError(`TransformerLM: embedDim ${embedDim} must be divisible by numHeads ${numHeads}`);
    const dropout = options.dropout ?? 0;
    if (!(dropout >= 0 && dropout < 1)) throw new RangeError(`TransformerLM: dropout must be in [0, 1), got ${dropout}`);
    this.vocabSize = vocabSize;
    this.maxContext = maxContext;
    this.embedDim = embedDim;
    this.numLayers = numLayers;
    this.numHeads = numHeads;
    this.tieWeights = options.tieWeights ?? false;
    this.dropout = dropout;
    const rng = options.rng;
    this.rng = rng ?? globalRng;
    const tokens = new Embedding(vocabSize, embedDim, { rng });
    scaleInPlace(tokens.weight, 0.02);
    const positions = new Embedding(maxContext, embedDim, { rng });
    scaleInPlace(positions.weight, 0.01);
    this.tokenEmbedding = this.registerModule('tokenEmbedding', tokens);
    this.positionEmbedding = this.registerModule('positionEmbedding', positions);
    this.blocks = this.registerModule('blocks', new Sequential());
    for (let i = 0; i < numLayers; i++) this.blocks.append(new TransformerBlock(embedDim, numHeads, { mlpDim, activation: options.activation, dropout, rng }));
    this.lnFinal = this.registerModule('lnFinal', new LayerNorm(embedDim));
    this.head = this.tieWeights ? null : this.registerModule('head', new Linear(embedDim, vocabSize, { rng }));
  }

  /** ids [N, C] int32 → the final hidden states [N, C, E] (after lnFinal). */
  hidden(ids: Tensor): Tensor {
    if (ids.rank !== 2 || ids.dtype !== 'int32') throw new RangeError(`TransformerLM: expected int32 ids [N, C], got ${ids.dtype} [${ids.shape.join(', ')}]`);
    const steps = ids.shape[1]!;
    if (steps < 1 || steps > this.maxContext) throw new RangeError(`TransformerLM: context length ${steps} is outside [1, ${this.maxContext}] (maxContext)`);
    const positions = arange(0, steps, 1, 'int32');
    let x = add(this.tokenEmbedding.forward(ids), this.positionEmbedding.forward(positions));
    if (this.training && this.dropout > 0) x = invertedDropout(x, this.dropout, this.rng);
    // Block by block (as the Sequential would), so that under no-grad each block's input buffer
    // goes back to the pool once the next block has read it.
    x = chainReleasing(this.blocks, x);
    const h = this.lnFinal.forward(x);
    releaseIntermediates([x], [h]);
    return h;
  }

  /** ids [N, C] int32 → logits [N, C, V]: at position t, of the word after ids[:, t]. */
  forwardAll(ids: Tensor): Tensor {
    const h = this.hidden(ids);
    const logits = this.logits(h);
    releaseIntermediates([h], [logits]);
    return logits;
  }

  /** ids [N, C] int32 → logits [N, V] of the word after each row's last id. */
  forward(ids: Tensor): Tensor {
    const h = this.hidden(ids);
    const [n, steps] = ids.shape as [number, number];
    const last = reshape(narrow(h, 1, steps - 1, 1), [n, this.embedDim]);
    const logits = this.logits(last);
    releaseIntermediates([h], [logits, last]);
    return logits;
  }

  /** An empty KV cache for {@link forwardCached}. */
  createCache(): TransformerCache {
    return { layers: Array.from({ length: this.numLayers }, () => createAttentionCache(this.maxContext)), length: 0 };
  }

  /**
   * Incremental decoding: ids [N, S] are the next S positions after the `cache.length` ones fed
   * before (at positions cache.length .. cache.length + S − 1, at most maxContext in all); returns
   * their logits [N, S, V], equal to those positions' logits of `forwardAll` on the whole sequence,
   * and extends `cache`. Feed the prompt at once (S = its length), then one id at a time (S = 1).
   * Without a tape on the native backend, a plain float32 model runs the whole step as one native
   * call (transformer-decode.ts; equal to the composed path to float32 rounding); else composed ops.
   */
  forwardCached(ids: Tensor, cache: TransformerCache): Tensor {
    if (ids.rank !== 2 || ids.dtype !== 'int32') throw new RangeError(`TransformerLM.forwardCached: expected int32 ids [N, S], got ${ids.dtype} [${ids.shape.join(', ')}]`);
    if (cache.layers.length !== this.numLayers) throw new RangeError(`TransformerLM.forwardCached: the cache has ${cache.layers.length} layers, the model ${this.numLayers} (make it with createCache())`);
    const steps = ids.shape[1]!;
    if (steps < 1 || cache.length + steps > this.maxContext) throw new RangeError(`TransformerLM.forwardCached: positions ${cache.length}..${cache.length + steps - 1} are outside [0, ${this.maxContext - 1}] (maxContext ${this.maxContext}; start a new cache for a longer text)`);
    for (const [i, id] of (ids.data as Int32Array).entries()) {
      if (id < 0 || id >= this.vocabSize) throw new RangeError(`TransformerLM.forwardCached: word id ${id} at index ${i} is outside [0, ${this.vocabSize}) (the vocabulary)`);
    }
    const blocks = this.blocks.children();
    for (let i = 0; i < blocks.length; i++) {
      const block = blocks[i];
      if (!(block instanceof TransformerBlock)) throw new Error(`TransformerLM.forwardCached: block ${i} is a ${block?.constructor.name}, not a TransformerBlock`);
    }
    // One native call for the whole step when the model is the plain float32 one (transformer-decode.ts).
    const plainBlocks = (blocks as TransformerBlock[]).every((b) => b.constructor === TransformerBlock && b.attn.constructor === CausalSelfAttention);
    if (plainBlocks) {
      const layers = (blocks as TransformerBlock[]).map((b) => ({ ln1: b.ln1, qkv: b.attn.qkv, proj: b.attn.proj, ln2: b.ln2, fc1: b.fc1, act: b.act, fc2: b.fc2, operandQuantized: Object.keys(b.attn.operandQuantizers()).length > 0 }));
      const logits = fusedDecodeStep(this, layers, ids, cache.layers, cache.length, this.training && this.dropout > 0);
      if (logits) {
        cache.length += steps;
        return logits;
      }
    }
    const positions = arange(cache.length, cache.length + steps, 1, 'int32');
    let x = add(this.tokenEmbedding.forward(ids), this.positionEmbedding.forward(positions));
    if (this.training && this.dropout > 0) x = invertedDropout(x, this.dropout, this.rng);
    for (let i = 0; i < blocks.length; i++) x = (blocks[i] as TransformerBlock).forwardCached(x, cache.layers[i]!);
    cache.length += steps;
    return this.logits(this.lnFinal.forward(x));
  }

  private logits(h: Tensor): Tensor {
    return this.head ? this.head.forward(h) : linear(h, this.tokenEmbedding.weight, null);
  }

  override extraRepr(): string {
    return `vocabSize=${this.vocabSize}, embedDim=${this.embedDim}, numLayers=${this.numLayers}, numHeads=${this.numHeads}, maxContext=${this.maxContext}${this.tieWeights ? ', tieWeights=true' : ''}`;
  }
}

/**
 * Copies columns `column`..`column`+E of rows [N, S, ·] of `source` into rows past..past+S−1 of
 * `buffer` [N, capacity, E], in place (the KV cache write; not recorded on a tape).
 */
function writeRows(buffer: Tensor, source: Tensor, past: number, column: number): void {
  const [n, capacity, e] = buffer.shape as [number, number, number];
  const [, steps, width] = source.shape as [number, number, number];
  const from = source.data;
  const to = buffer.data;
  for (let b = 0; b < n; b++) {
    for (let s = 0; s < steps; s++) {
      const start = (b * steps + s) * width + column;
      to.set(from.subarray(start, start + e), (b * capacity + past + s) * e);
    }
  }
}

function scaleInPlace(t: Tensor, factor: number): void {
  for (let i = 0; i < t.size; i++) t.data[i] = t.data[i]! * factor;
}
