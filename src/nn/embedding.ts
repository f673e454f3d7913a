import { gather, Tensor, where, zeros, type Rng } from '../tensor/index.ts';
import { Module } from './module.ts';
import { normal } from './init.ts';

export interface EmbeddingOptions {
  /**
   * Row zeroed at initialisation that gets no gradient (e.g. the padding token), as PyTorch's
   * padding_idx: forward uses the row as it is, so a row loaded or set to nonzero values is returned.
   */
  paddingIdx?: number;
  rng?: Rng;
}

/**
 * A lookup table: int32 indices [...] -> rows of `weight` [numEmbeddings, embeddingDim], giving
 * [..., embeddingDim]. Initialised N(0, 1) as PyTorch, with the padding row zeroed.
 */
export class Embedding extends Module {
  readonly numEmbeddings: number;
  readonly embeddingDim: number;
  readonly paddingIdx: number | null;
  readonly weight: Tensor;

  constructor(numEmbeddings: number, embeddingDim: number, options: EmbeddingOptions = {}) {
    super();
    this.numEmbeddings = numEmbeddings;
    this.embeddingDim = embeddingDim;
    const pad = options.paddingIdx;
    if (pad !== undefined && (pad < -numEmbeddings || pad >= numEmbeddings)) {
      throw new Error(`Embedding: paddingIdx ${pad} out of range for ${numEmbeddings} embeddings`);
    }
    this.paddingIdx = pad === undefined ? null : pad < 0 ? pad + numEmbeddings : pad;
    this.weight = this.registerParameter('weight', normal(zeros([numEmbeddings, embeddingDim]), 0, 1, options.rng));
    if (this.paddingIdx !== null) this.weight.data.fill(0, this.paddingIdx * embeddingDim, (this.paddingIdx + 1) * embeddingDim);
  }

  forward(indices: Tensor): Tensor {
    if (indices.dtype !== 'int32') throw new Error(`Embedding: indices must be int32, got ${indices.dtype}`);
    const rows = gather(this.weight, indices, 0);
    if (this.paddingIdx === null || !rows.requiresGrad) return rows;
    const keep = new Float32Array(indices.size);
    let padded = false;
    for (let i = 0; i < keep.length; i++) {
      keep[i] = indices.data[i] === this.paddingIdx ? 0 : 1;
      padded ||= keep[i] === 0;
    }
    if (!padded) return rows;
    // The padding positions read the same row from a detached table: same values, no gradient.
    return where(new Tensor(keep, [...indices.shape, 1]), rows, gather(this.weight.detach(), indices, 0));
  }

  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}${this.paddingIdx === null ? '' : `, paddingIdx=${this.paddingIdx}`}`;
  }
}
