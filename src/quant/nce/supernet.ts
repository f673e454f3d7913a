/**
 * The channel-expansion supernet: the model's chain at the widest candidate width of every searched
 * layer, with a ChannelMask after each searched layer's per-channel tail (BN, ReLU, pooling). A
 * width c is realised by the mask keeping the first c channels; the search mixes the candidate masks
 * with the softmax of its architecture logits (FBNetV2-style channel masking).
 */
import { BatchNorm1d, BatchNorm2d } from '../../nn/batchnorm.ts';
import { Identity, ReLU } from '../../nn/activation.ts';
import { Dropout } from '../../nn/dropout.ts';
import { Module, type TensorModule } from '../../nn/module.ts';
import { AvgPool2d, MaxPool2d } from '../../nn/pooling.ts';
import { Sequential } from '../../nn/sequential.ts';
import { add, log, mul, neg, reshape, softmax, sum, div } from '../../tensor/ops.ts';
import type { Rng } from '../../tensor/random.ts';
import { Tensor, tensor, zeros } from '../../tensor/tensor.ts';
import { modelChain, NceError, weightedLayers, type ChainLayer } from './chain.ts';
import { resizeChain, outWidth } from './resize.ts';

/**
 * Multiplies channel c of its input (axis 1; [N, C] or [N, C, H, W]) by mask[c]. The mask is a
 * tensor the search sets before each forward (it may carry gradient to the architecture logits);
 * null (the default) makes the module the identity.
 */
export class ChannelMask extends Module {
  readonly channels: number;
  mask: Tensor | null = null;

  constructor(channels: number) {
    super();
    if (!Number.isInteger(channels) || channels < 1) throw new NceError(`ChannelMask: channels must be a positive integer, got ${channels}`);
    this.channels = channels;
  }

  forward(x: Tensor): Tensor {
    if (this.mask === null) return x;
    if (x.rank < 2 || x.shape[1] !== this.channels) throw new NceError(`ChannelMask: expected ${this.channels} channels on axis 1, got [${x.shape.join(', ')}]`);
    if (this.mask.size !== this.channels) throw new NceError(`ChannelMask: mask has ${this.mask.size} entries for ${this.channels} channels`);
    const view = x.shape.map((d, i) => (i === 1 ? d : 1));
    return mul(x, reshape(this.mask, view));
  }

  override extraRepr(): string {
    return `channels=${this.channels}`;
  }
}

/** One searched layer of the supernet. */
export interface SearchedLayer {
  /** Name in the source model. */
  readonly name: string;
  /** Width in the source model. */
  readonly baseWidth: number;
  /** Candidate widths, increasing. */
  readonly widths: readonly number[];
  readonly mask: ChannelMask;
  /** Architecture logits α [K], one per candidate (requires grad). */
  readonly logits: Tensor;
  /** Mask of each candidate: [K, maxWidth], row k = 1 on the first widths[k] channels. */
  readonly candidateMasks: Tensor;
}

export interface SupernetOptions {
  /** Width multipliers of each searched layer (default [0.5, 0.75, 1, 1.5, 2]); widths round to integers ≥ 1. */
  readonly ratios?: readonly number[];
  /** Names of the layers to search (default every Conv2d / Linear but the output layer). */
  readonly layers?: readonly string[];
  /** Generator of the supernet's initial weights (default: the global one). */
  readonly rng?: Rng;
}

/** Candidate widths of a layer of `base` channels under `ratios`: round(r·base), at least 1, deduplicated, increasing. */
export function candidateWidths(base: number, ratios: readonly number[]): number[] {
  if (ratios.length === 0 || ratios.some((r) => !(r > 0 && Number.isFinite(r)))) throw new NceError(`candidate ratios must be finite and > 0, got [${ratios.join(', ')}]`);
  return [...new Set(ratios.map((r) => Math.max(1, Math.round(r * base))))].sort((x, y) => x - y);
}

const PER_CHANNEL_TAIL = [BatchNorm1d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, Dropout, Identity];

/**
 * The supernet of a float feed-forward model (see the module comment). `net` is an ordinary
 * Sequential (plus ChannelMask layers), so prepareQat applies to it as to any model.
 */
export class Supernet {
  /** The widest network with masks: train it (after prepareQat) with masks set by `setMixture` / `setChoice`. */
  readonly net: Sequential;
  /** The source model's chain (base widths). */
  readonly chain: readonly ChainLayer[];
  /** The widest network's chain (the modules inside `net`, masks left out) as built. */
  readonly wideChain: readonly ChainLayer[];
  readonly layers: readonly SearchedLayer[];

  constructor(model: TensorModule, inputShape: readonly number[], options: SupernetOptions = {}) {
    this.chain = modelChain(model, inputShape);
    const weighted = weightedLayers(this.chain);
    const output = weighted[weighted.length - 1]!.layer.name;
    const names = options.layers ?? weighted.slice(0, -1).map((w) => w.layer.name);
    if (names.length === 0) throw new NceError('Supernet: no layer to search (the model has a single weighted layer)');
    const ratios = options.ratios ?? [0.5, 0.75, 1, 1.5, 2];
    const byName = new Map(weighted.map((w) => [w.layer.name, w]));
    const plan = names.map((name) => {
      const w = byName.get(name);
      if (!w) throw new NceError(`Supernet: '${name}' is not a Conv2d or Linear of the model (known: ${[...byName.keys()].join(', ')})`);
      if (name === output) throw new NceError(`Supernet: '${name}' is the output layer; its width is the number of outputs`);
      const baseWidth = outWidth(w.layer.module);
      return { name, index: w.index, baseWidth, widths: candidateWidths(baseWidth, ratios) };
    }).sort((a, b) => a.index - b.index);
    if (new Set(names).size !== names.length) throw new NceError(`Supernet: layers listed twice in [${names.join(', ')}]`);
    const wide = resizeChain(this.chain, Object.fromEntries(plan.map((p) => [p.name, p.widths[p.widths.length - 1]!])), { inherit: false, rng: options.rng });
    const wideModules = [...wide];
    this.wideChain = this.chain.map((l, i) => ({ ...l, module: wideModules[i] as ChainLayer['module'] }));
    // A mask goes after the searched layer and the per-channel layers that follow it.
    const maskAfter = new Map<number, number>();
    for (const p of plan) {
      let j = p.index + 1;
      while (j < this.chain.length && PER_CHANNEL_TAIL.some((c) => this.chain[j]!.module.constructor === c)) j++;
      maskAfter.set(j - 1, plan.indexOf(p));
    }
    const layers: SearchedLayer[] = plan.map((p) => {
      const max = p.widths[p.widths.length - 1]!;
      const rows = new Float32Array(p.widths.length * max);
      p.widths.forEach((w, k) => rows.fill(1, k * max, k * max + w));
      const logits = zeros([p.widths.length]).requiresGrad_(true);
      return { name: p.name, baseWidth: p.baseWidth, widths: p.widths, mask: new ChannelMask(max), logits, candidateMasks: new Tensor(rows, [p.widths.length, max]) };
    });
    // The modules move to `net`; `wide` is dropped.
    const modules: TensorModule[] = [];
    wideModules.forEach((m, i) => {
      modules.push(m);
      const l = maskAfter.get(i);
      if (l !== undefined) modules.push(layers[l]!.mask);
    });
    this.net = new Sequential(...modules);
    this.layers = layers;
  }

  /**
   * Architecture probabilities of every searched layer, p = softmax((α + g)/τ), with Gumbel noise g
   * drawn from `gumbel` when given (else g = 0). Differentiable in the logits.
   */
  probabilities(temperature: number, gumbel: Rng | null = null): Tensor[] {
    if (!(temperature > 0)) throw new NceError(`temperature must be > 0, got ${temperature}`);
    return this.layers.map((l) => {
      let z: Tensor = l.logits;
      if (gumbel) {
        const u = Float32Array.from({ length: l.widths.length }, () => Math.min(1 - 1e-7, Math.max(1e-7, gumbel.uniform())));
        z = add(z, neg(log(neg(log(tensor([...u]))))));
      }
      return softmax(div(z, temperature), 0);
    });
  }

  /** Sets every mask to Σ_k p_k·mask_k (the expected mask) for the given probabilities. */
  setMixture(probabilities: readonly Tensor[]): void {
    this.layers.forEach((l, i) => {
      const p = probabilities[i]!;
      l.mask.mask = sum(mul(reshape(p, [l.widths.length, 1]), l.candidateMasks), 0);
    });
  }

  /** Sets every mask to one candidate: `choice[i]` indexes layer i's widths. */
  setChoice(choice: readonly number[]): void {
    if (choice.length !== this.layers.length) throw new NceError(`setChoice: ${choice.length} choices for ${this.layers.length} layers`);
    this.layers.forEach((l, i) => {
      const k = choice[i]!;
      if (!Number.isInteger(k) || k < 0 || k >= l.widths.length) throw new NceError(`setChoice: choice ${k} of '${l.name}' is outside 0..${l.widths.length - 1}`);
      const max = l.widths[l.widths.length - 1]!;
      l.mask.mask = new Tensor(l.candidateMasks.data.slice(k * max, (k + 1) * max), [max]);
    });
  }

  /** Removes the masks (the full widest network). */
  clearMasks(): void {
    for (const l of this.layers) l.mask.mask = null;
  }

  /** Expected width E[c] = Σ_k p_k·c_k of each layer (differentiable). */
  expectedWidths(probabilities: readonly Tensor[]): Tensor[] {
    return this.layers.map((l, i) => sum(mul(probabilities[i]!, tensor(l.widths.map(Number)))));
  }

  /** Widths (source layer name → width) of a choice. */
  widthsOf(choice: readonly number[]): Record<string, number> {
    return Object.fromEntries(this.layers.map((l, i) => [l.name, l.widths[choice[i]!]!]));
  }

  /**
   * The narrower network of `choice` cut out of the float supernet (kept channels' weights and BN
   * statistics copied exactly): an ordinary Sequential without masks. Only before prepareQat.
   */
  extract(choice: readonly number[]): Sequential {
    return resizeChain(this.wideChain, this.widthsOf(choice));
  }
}
