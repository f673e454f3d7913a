/**
 * Shared types of the mixed-precision search (quant/search): the layers a search allocates bits
 * to, a bit assignment, and the cost-model interface. Every search algorithm (exact allocation,
 * NSGA-II, SDQ), every cost model and the plan conversion speak these types.
 */
import type { LayerType } from '../config/plan.ts';

/** Convolution geometry of a Conv2d layer (what a latency microbenchmark rebuilds). */
export interface ConvInfo {
  readonly inChannels: number;
  readonly kernelSize: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
  readonly dilation: readonly [number, number];
  readonly groups: number;
}

/** What a searchable layer is: a QuantPlan layer type, or a language model's table or recurrent layer (quant/search/lm.ts). */
export type SearchLayerType = LayerType | 'Embedding' | 'LSTM' | 'GRU';

/** One quantizable layer (Conv2d or Linear; in a language model also Embedding, LSTM, GRU) of a model, as the cost models see it. */
export interface LayerInfo {
  /** Dotted module name, e.g. 'features.0' or 'fc1'. */
  readonly name: string;
  readonly type: SearchLayerType;
  /** Number of weight elements (bias excluded). */
  readonly weightCount: number;
  readonly outChannels: number;
  /** Multiply-accumulates per sample (output elements × reduction length). */
  readonly macs: number;
  /** Input shape of one sample (no batch dim), e.g. [6, 14, 14] or [400]. */
  readonly inShape: readonly number[];
  /** Output shape of one sample. */
  readonly outShape: readonly number[];
  /** Reduction length per output element: inChannels/groups·kh·kw (conv) or inFeatures (linear). */
  readonly reduction: number;
  /** Conv2d only. */
  readonly conv?: ConvInfo;
}

/** Weight and input-activation bit widths of one layer. */
export interface BitChoice {
  /** Weight bits (1 = binary ±α). With `wPerChannel`, the widest channel (the storage container). */
  readonly w: number;
  /** Input-activation bits. */
  readonly a: number;
  /**
   * Per-output-channel weight bits (length = outChannels, each ≤ w); absent = all channels at `w`.
   * 0 prunes the channel: its weights and output are exactly 0 and `convert` removes it (and the
   * matching inputs of the next layer) from the IntModel.
   */
  readonly wPerChannel?: readonly number[];
}

/** Layer name → its bit widths. Layers not listed are not quantized by a plan built from it. */
export type BitAssignment = Record<string, BitChoice>;

/**
 * A cost model: the cost of one layer at (weight bits, activation bits). Costs add over layers
 * (`totalCost`). Per-channel weight bits: `channelCost` when the model defines it, otherwise the
 * mean of `layerCost` over the channels' bit widths (exact for costs linear in the channel count:
 * size, BitOps, bit-serial cycles, energy).
 */
export interface CostModel {
  /** Registry name: 'size', 'bitops', 'latency', 'bitserial', 'energy'. */
  readonly name: string;
  /** Unit of a cost value: 'bits', 'bitops', 'ms', 'cycles', 'pJ'. */
  readonly unit: string;
  layerCost(layer: LayerInfo, w: number, a: number): number;
  /** Cost of a layer whose channels have different weight bits (optional, see above). */
  channelCost?(layer: LayerInfo, wPerChannel: readonly number[], a: number): number;
}

/** A candidate bit width of one layer with its cost and estimated error (sensitivity). */
export interface LayerOption {
  readonly choice: BitChoice;
  readonly cost: number;
  /** Estimated loss increase (or any additive error proxy) of the layer at `choice`. */
  readonly error: number;
}
