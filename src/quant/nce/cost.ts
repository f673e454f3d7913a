/**
 * Costs of channel-width architectures, on the cost models of src/quant/search/costs.ts.
 *
 * A Conv2d (groups 1) or Linear layer with input width c_in and output width c_out has
 * weightCount = c_out·c_in·k (k = kh·kw, or the features per channel behind a Flatten) and
 * MACs = c_out·c_in·k·(output positions), so size (weightCount·w) and BitOps (MACs·w·a) are
 * c_in·c_out times a per-layer constant κ. With independent per-layer width distributions the
 * expected cost is then exactly
 *   E[C] = Σ_l κ_l · E[c_in,l] · E[c_out,l]
 * where c_in,l is the output width of the previous weighted layer (fixed for the first layer) and
 * c_out,l fixed for the output layer. Only cost models bilinear in the widths are accepted (checked
 * numerically when the table is built): 'size' and 'bitops'.
 */
import { Conv2d } from '../../nn/conv.ts';
import { totalCost, uniformAssignment } from '../search/costs.ts';
import type { CostModel, LayerInfo } from '../search/types.ts';
import { NceError, weightedLayers, type ChainLayer } from './chain.ts';

/** Weight / activation bits the cost is taken at (default 1 / 1: size = weights, BitOps = MACs). */
export interface CostBits {
  readonly w: number;
  readonly a: number;
}

/**
 * LayerInfo (as describeLayers gives it) of every weighted layer of `chain` when the layers named
 * in `widths` have those output widths (the others keep theirs). Computed from the chain's traced
 * shapes; equals describeLayers on the model resizeChain builds (tested).
 */
export function architectureLayers(chain: readonly ChainLayer[], widths: Readonly<Record<string, number>>): LayerInfo[] {
  const weighted = weightedLayers(chain);
  const out: LayerInfo[] = [];
  // Input width of the current layer, in the architecture and in the chain.
  let cin = chain[0]!.inShape[0]!;
  let baseCin = cin;
  for (const { layer } of weighted) {
    const m = layer.module;
    if (m instanceof Conv2d) {
      const cout = widths[layer.name] ?? m.outChannels;
      const [kh, kw] = m.kernelSize;
      const reduction = cin * kh * kw;
      const positions = layer.outShape.slice(1).reduce((p, d) => p * d, 1);
      out.push({
        name: layer.name, type: 'Conv2d', weightCount: cout * reduction, outChannels: cout, macs: cout * positions * reduction,
        inShape: [cin, ...layer.inShape.slice(1)], outShape: [cout, ...layer.outShape.slice(1)], reduction,
        conv: { inChannels: cin, kernelSize: [kh, kw], stride: [...m.stride], padding: [...m.padding], dilation: [...m.dilation], groups: 1 },
      });
      cin = cout;
      baseCin = m.outChannels;
    } else {
      const fout = widths[layer.name] ?? m.outFeatures;
      // Features per input channel: H·W behind a Flatten of a conv output, else 1.
      const inFeatures = cin * (m.inFeatures / baseCin);
      out.push({
        name: layer.name, type: 'Linear', weightCount: fout * inFeatures, outChannels: fout, macs: fout * inFeatures,
        inShape: [inFeatures], outShape: [fout], reduction: inFeatures,
      });
      cin = fout;
      baseCin = m.outFeatures;
    }
  }
  return out;
}

/** Cost of the architecture `widths` (see architectureLayers) under `model` at uniform `bits`. */
export function architectureCost(model: CostModel, chain: readonly ChainLayer[], widths: Readonly<Record<string, number>>, bits: CostBits = { w: 1, a: 1 }): number {
  const layers = architectureLayers(chain, widths);
  return totalCost(model, layers, uniformAssignment(layers, bits.w, bits.a));
}

/** One weighted layer's term κ·c_in·c_out of the closed-form cost. */
export interface CostTerm {
  readonly name: string;
  /** κ: cost per (input channel × output channel). */
  readonly coefficient: number;
  /** Index (into the searched layers) of the layer whose output width is this layer's input width, or null (fixed). */
  readonly inputFrom: number | null;
  readonly fixedInput: number;
  /** Index of this layer among the searched layers, or null (its width is fixed). */
  readonly outputFrom: number | null;
  readonly fixedOutput: number;
}

/**
 * The closed-form cost table of `chain` with the layers `searched` (names, in chain order) free to
 * change width. Throws NceError when `model` is not bilinear in the widths on this chain.
 */
export function costTerms(model: CostModel, chain: readonly ChainLayer[], searched: readonly string[], bits: CostBits = { w: 1, a: 1 }): CostTerm[] {
  const base = architectureLayers(chain, {});
  const cost = (info: LayerInfo): number => model.layerCost(info, bits.w, bits.a);
  const terms: CostTerm[] = [];
  let previous: number | null = null;
  let previousWidth = chain[0]!.inShape[0]!;
  base.forEach((info, l) => {
    const own = searched.indexOf(info.name);
    const cin = previousWidth;
    const cout = info.outChannels;
    const coefficient = cost(info) / (cin * cout);
    // Bilinearity probe: doubling either width doubles the cost.
    const doubledIn = architectureLayers(chain, Object.fromEntries(l === 0 ? [] : [[base[l - 1]!.name, 2 * cin]]))[l]!;
    const doubledOut = architectureLayers(chain, { [info.name]: 2 * cout })[l]!;
    const close = (x: number, y: number): boolean => Math.abs(x - y) <= 1e-9 * Math.max(1, Math.abs(y));
    if ((l > 0 && !close(cost(doubledIn), 2 * cost(info))) || !close(cost(doubledOut), 2 * cost(info))) {
      throw new NceError(`cost model '${model.name}' is not bilinear in the channel widths of '${info.name}' (use 'size' or 'bitops')`);
    }
    terms.push({ name: info.name, coefficient, inputFrom: previous, fixedInput: cin, outputFrom: own >= 0 ? own : null, fixedOutput: cout });
    previous = own >= 0 ? own : null;
    previousWidth = cout;
  });
  return terms;
}

/**
 * Σ_l κ_l · in_l · out_l with in/out taken from `widths[i]` (searched layer i) where the term says
 * so, else the fixed widths. With expected widths this is the expected cost; with one
 * architecture's widths its cost.
 */
export function costFromWidths(terms: readonly CostTerm[], widths: readonly number[]): number {
  let total = 0;
  for (const t of terms) {
    const cin = t.inputFrom === null ? t.fixedInput : widths[t.inputFrom]!;
    const cout = t.outputFrom === null ? t.fixedOutput : widths[t.outputFrom]!;
    total += t.coefficient * cin * cout;
  }
  return total;
}
