import { MultiheadAttention } from '../../nn/attention.ts';
import { Embedding } from '../../nn/embedding.ts';
import { LayerNorm } from '../../nn/layernorm.ts';
import { Linear } from '../../nn/linear.ts';
import { Module } from '../../nn/module.ts';
import { add, gelu, matmul } from '../../tensor/ops.ts';
import type { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { causalMask, SubgroupAttention } from './attention.ts';
import { SubgroupLinear } from './linear.ts';

export interface TinyTransformerOptions {
  vocabSize: number;
  /** Longest context (positions learned up to it). */
  context: number;
  /** Embedding width E (default 64). */
  embedDim?: number;
  /** Blocks (default 2). */
  layers?: number;
  /** Heads (default 4). */
  heads?: number;
  /** Feed-forward width (default 128). */
  ffnDim?: number;
  rng?: Rng;
}

export interface SearchableOptions {
  /** Precision choices of every subgroup (default {0, 2, 4, 8}). */
  choices?: readonly number[];
  /** Hidden units per feed-forward subgroup (fc1 row blocks, fc2 column blocks; default 32). */
  ffnGroupSize?: number;
  sampler?: 'softmax' | 'gumbel';
  rng?: Rng;
}

/** One pre-LayerNorm block: x + attn(ln1(x)), then x + fc2(gelu(fc1(ln2(x)))). */
export class TransformerBlock extends Module {
  readonly ln1: LayerNorm;
  readonly ln2: LayerNorm;
  attn: MultiheadAttention | SubgroupAttention;
  fc1: Linear | SubgroupLinear;
  fc2: Linear | SubgroupLinear;

  constructor(embedDim: number, heads: number, ffnDim: number, rng?: Rng) {
    super();
    this.ln1 = this.registerModule('ln1', new LayerNorm(embedDim));
    this.attn = this.registerModule('attn', new MultiheadAttention(embedDim, heads, { batchFirst: true, rng }));
    this.ln2 = this.registerModule('ln2', new LayerNorm(embedDim));
    this.fc1 = this.registerModule('fc1', new Linear(embedDim, ffnDim, { rng }));
    this.fc2 = this.registerModule('fc2', new Linear(ffnDim, embedDim, { rng }));
  }

  forward(x: Tensor): Tensor {
    const h = this.ln1.forward(x);
    const attended =
      this.attn instanceof SubgroupAttention
        ? this.attn.forward(h, { causal: true })
        : this.attn.forward(h, h, h, { attnMask: causalMask(x.shape[1]!), needWeights: false })[0];
    const y = add(x, attended);
    return add(y, this.fc2.forward(gelu(this.fc1.forward(this.ln2.forward(y)))));
  }

  /** Replaces the attention and feed-forward layers by searchable copies (weights kept). */
  makeSearchable(options: SearchableOptions): void {
    if (this.attn instanceof SubgroupAttention) return;
    const common = { choices: options.choices, sampler: options.sampler, rng: options.rng };
    const group = options.ffnGroupSize ?? 32;
    // setSubmodule also updates the fields that held the float layers.
    this.setSubmodule('attn', SubgroupAttention.fromMultiheadAttention(this.attn, common));
    if (this.fc1 instanceof Linear) this.setSubmodule('fc1', SubgroupLinear.fromLinear(this.fc1, { ...common, axis: 0, groupSize: group }));
    if (this.fc2 instanceof Linear) this.setSubmodule('fc2', SubgroupLinear.fromLinear(this.fc2, { ...common, axis: 1, groupSize: group }));
  }
}

/**
 * A tiny causal transformer language model: token + learned position embeddings, pre-LN blocks,
 * a final LayerNorm and logits against the (tied) token embedding. ids [N, L] (int32, L ≤ context)
 * → logits [N, L, vocab]. Float at first; {@link makeSearchable} swaps the attention and
 * feed-forward layers for subgroup-searchable ones (the embeddings and LayerNorms stay float).
 */
export class TinyTransformerLm extends Module {
  readonly vocabSize: number;
  readonly context: number;
  readonly embedDim: number;
  readonly tokens: Embedding;
  readonly positions: Embedding;
  readonly blocks: TransformerBlock[];
  readonly norm: LayerNorm;

  constructor(options: TinyTransformerOptions) {
    super();
    const embedDim = options.embedDim ?? 64;
    const layers = options.layers ?? 2;
    for (const [name, v] of [['vocabSize', options.vocabSize], ['context', options.context], ['layers', layers]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`TinyTransformerLm: ${name} must be a positive integer, got ${v}`);
    }
    this.vocabSize = options.vocabSize;
    this.context = options.context;
    this.embedDim = embedDim;
    this.tokens = this.registerModule('tokens', new Embedding(options.vocabSize, embedDim, { rng: options.rng }));
    this.positions = this.registerModule('positions', new Embedding(options.context, embedDim, { rng: options.rng }));
    // Token rows N(0, 0.02²)-like scale keeps the tied logits moderate at the start.
    for (const table of [this.tokens.weight, this.positions.weight]) for (let i = 0; i < table.size; i++) table.data[i] = table.data[i]! * 0.1;
    this.blocks = [];
    for (let i = 0; i < layers; i++) this.blocks.push(this.registerModule(`block${i}`, new TransformerBlock(embedDim, options.heads ?? 4, options.ffnDim ?? 128, options.rng)));
    this.norm = this.registerModule('norm', new LayerNorm(embedDim));
  }

  forward(ids: Tensor): Tensor {
    if (ids.dtype !== 'int32' || ids.rank !== 2) throw new Error(`TinyTransformerLm: ids must be int32 [N, L], got ${ids.dtype} [${ids.shape.join(', ')}]`);
    const length = ids.shape[1]!;
    if (length > this.context) throw new Error(`TinyTransformerLm: sequence length ${length} exceeds the context ${this.context}`);
    let x = add(this.tokens.forward(ids), this.positions.forward(arangeInt(length)));
    for (const block of this.blocks) x = block.forward(x);
    return matmul(this.norm.forward(x), this.tokens.weight, { transB: true });
  }

  /** Swaps every block's attention and feed-forward layers for searchable copies. */
  makeSearchable(options: SearchableOptions = {}): this {
    for (const block of this.blocks) block.makeSearchable(options);
    return this;
  }
}

/** int32 [0, 1, ..., n − 1]. */
function arangeInt(n: number): Tensor {
  return new Tensor(Int32Array.from({ length: n }, (_, i) => i), [n]);
}
