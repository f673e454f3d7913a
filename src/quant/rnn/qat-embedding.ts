/**
 * QatEmbedding: an Embedding whose table is fake-quantized (per row or per tensor) before the
 * lookup, the QAT counterpart of nn.Embedding that `prepareRnnQat` swaps in (for a transducer's
 * prediction network). out[..., :] = Q_W(W)[index, :]; gradients are the weight quantizer's (clipped
 * STE to W, LSQ's to a learned step). The ALPT `QuantEmbedding` (quant.embedding) is a different
 * thing: it stores only integer codes during training.
 */
import { Module } from '../../nn/module.ts';
import type { Embedding } from '../../nn/embedding.ts';
import { gather, type Tensor } from '../../tensor/index.ts';
import { createQuantizer, type Quantizer, type QuantizerSpec } from '../quantizers/quantizer.ts';
import '../quantizers/index.ts';

export class QatEmbedding extends Module {
  readonly numEmbeddings: number;
  readonly embeddingDim: number;
  /** The float table (the same tensor object as the Embedding's it replaced). */
  readonly weight: Tensor;
  readonly weightQuantizer: Quantizer | null;

  /** Wraps `embedding`'s table (kept, not copied) with a weight quantizer built from `spec` (null: float). */
  constructor(embedding: Embedding, spec: QuantizerSpec | null) {
    super();
    if (embedding.paddingIdx !== null) throw new RangeError(`QatEmbedding: embeddings with a paddingIdx are not supported (got paddingIdx ${embedding.paddingIdx})`);
    if (spec !== null) {
      const granularity = spec['granularity'];
      if (granularity !== undefined && granularity !== 'channel' && granularity !== 'tensor') {
        throw new RangeError(`QatEmbedding: weight granularity must be 'channel' (one scale per row) or 'tensor', got ${JSON.stringify(granularity)}`);
      }
    }
    this.numEmbeddings = embedding.numEmbeddings;
    this.embeddingDim = embedding.embeddingDim;
    const flag = embedding.weight.requiresGrad;
    this.weight = this.registerParameter('weight', embedding.weight);
    this.weight.requiresGrad_(flag);
    let quantizer: Quantizer | null = null;
    if (spec !== null) {
      try {
        quantizer = createQuantizer(spec, { role: 'weight', shape: embedding.weight.shape, channelAxis: 0 });
      } catch (error) {
        throw new RangeError(`QatEmbedding: cannot build the weight quantizer from ${JSON.stringify(spec)}: ${(error as Error).message}`);
      }
    }
    this.weightQuantizer = quantizer ? this.registerModule('weightQuantizer', quantizer) : null;
    this.training = embedding.training;
  }

  /** int32 indices [...] -> rows of the fake-quantized table, [..., embeddingDim]. */
  forward(indices: Tensor): Tensor {
    if (indices.dtype !== 'int32') throw new TypeError(`QatEmbedding: indices must be int32, got ${indices.dtype}`);
    for (let i = 0; i < indices.size; i++) {
      const v = indices.data[i]!;
      if (v < 0 || v >= this.numEmbeddings) throw new RangeError(`QatEmbedding: index ${v} at position ${i} is outside [0, ${this.numEmbeddings - 1}]`);
    }
    const q = this.weightQuantizer;
    const table = q && q.fakeQuantEnabled ? q.forward(this.weight) : this.weight;
    return gather(table, indices, 0);
  }

  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}`;
  }
}
