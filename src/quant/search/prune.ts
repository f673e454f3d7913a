/**
 * Channel pruning as a width of 0 bits: a search choice (w, keep ratio) per layer keeps the
 * `round(keep·O)` output channels of highest sensitivity at w bits and sets the others to 0 bits
 * (`wPerChannel` entries 0), which the fake-quant model holds at exactly 0 and `convert` removes
 * from the IntModel together with the next layer's matching inputs — the only way, on an int8
 * runtime where every width from 2 to 8 bits runs at one speed, to make a plan faster.
 * Pruning each layer's precision to 0 is CSQ's bit-level view taken to the whole channel, as in
 * the subgroup-wise precision-and-pruning work; here the exact allocator chooses it per layer.
 */
import { BatchNorm, BatchNorm1d, BatchNorm2d } from '../../nn/batchnorm.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Conv1d } from '../../nn/conv1d.ts';
import { Linear } from '../../nn/linear.ts';
import type { Module, TensorModule } from '../../nn/module.ts';
import { captureLeaves } from '../../runtime/convert.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import type { Batch } from '../../train/fit.ts';
import { findConvBnPairs, quantizableLayers } from '../config/plan.ts';
import { allocateExact, paretoFront, type Allocation, type LayerChoices } from './allocate.ts';
import { layerChoiceCost } from './costs.ts';
import { logProbs, type LayerSensitivity } from './sensitivity.ts';
import { Adam } from '../../optim/adam.ts';
import { crossEntropy } from '../../tensor/ops.ts';
import { manualSeed } from '../../tensor/random.ts';
import type { LatencyCostModel } from './latency.ts';
import type { BitChoice, CostModel, LayerInfo } from './types.ts';

/**
 * Per-output-channel pruning scores of a weight [O, ...] (lowest = pruned first): with a
 * per-channel Hessian (or Fisher) sensitivity, the second-order loss increase of zeroing the
 * channel, ½·(H_c/n_c)·‖w_c‖² (H_c the channel's diagonal sum, n_c its weight count — HAWQ-v2's Ω
 * with Q(w) = 0); without one, the squared L2 norm ‖w_c‖².
 */
export function channelPruneScores(weight: Tensor, sensitivity?: LayerSensitivity): Float64Array {
  const channels = weight.shape[0]!;
  const per = weight.size / channels;
  const h = sensitivity?.perChannel;
  if (sensitivity && (!h || h.length !== channels)) throw new Error(`channelPruneScores: '${sensitivity.name}' needs per-channel sensitivities for ${channels} channels (run hessianTrace / fisherInformation with perChannel: true)`);
  const out = new Float64Array(channels);
  for (let c = 0; c < channels; c++) {
    let sq = 0;
    for (let i = c * per; i < (c + 1) * per; i++) sq += weight.data[i]! ** 2;
    out[c] = h ? 0.5 * (h[c]! / per) * sq : sq;
  }
  return out;
}

/** Channels kept at keep ratio `keep` of `channels`: round(keep·channels), at least 1. */
export function keptChannels(channels: number, keep: number): number {
  if (!(keep > 0 && keep <= 1)) throw new Error(`keep ratio must be in (0, 1], got ${keep}`);
  return Math.max(1, Math.min(channels, Math.round(keep * channels)));
}

/**
 * The choice keeping the `kept` channels of highest `scores` at w bits, the others at 0 bits
 * (ties: the lower index is kept). Keeping every channel gives the plain { w, a }.
 */
export function pruneChoice(layer: LayerInfo, scores: ArrayLike<number>, kept: number, w: number, a: number): BitChoice {
  const O = layer.outChannels;
  if (scores.length !== O) throw new Error(`pruneChoice: '${layer.name}' has ${O} channels, ${scores.length} scores`);
  if (!Number.isInteger(kept) || kept < 1 || kept > O) throw new Error(`pruneChoice: '${layer.name}' must keep 1..${O} channels, got ${kept}`);
  if (kept === O) return { w, a };
  const order = [...Array(O).keys()].sort((x, y) => scores[y]! - scores[x]! || x - y);
  const widths = new Array<number>(O).fill(0);
  for (const c of order.slice(0, kept)) widths[c] = w;
  return { w, a, wPerChannel: widths };
}

/**
 * Names of the layers whose output channels may be pruned: not the last layer (logits), not a
 * layer followed by a BatchNorm that is not folded into it (its pruned channels would output the
 * BN's shift), not a layer feeding a grouped conv.
 */
export function prunableLayers(model: Module, layers: readonly LayerInfo[]): string[] {
  const folded = findConvBnPairs(model);
  const leaves = captureLeaves(model);
  const out: string[] = [];
  layers.forEach((l, i) => {
    const next = layers[i + 1];
    if (!next) return;
    if (next.conv && next.conv.groups !== 1) return;
    const at = leaves.findIndex(([n]) => n === l.name);
    const after = leaves[at + 1]?.[1];
    if (after instanceof BatchNorm && folded.get(l.name) !== leaves[at + 1]![0]) return;
    out.push(l.name);
  });
  return out;
}

/**
 * The output of `channels` of float layer `name` set to exactly 0 while `fn` runs: weight rows
 * and bias entries zeroed, and γ, β of a BatchNorm2d (BatchNorm1d after a Conv1d) folded into it (so the BN outputs 0 too);
 * `fn` gets a function that zeroes them again (after an optimizer step). Every parameter and
 * buffer of the model is restored afterwards.
 */
function withChannelsZeroed<T>(model: Module, name: string | null, channels: readonly number[], fn: (rezero: () => void) => T): T {
  let rowSized: Tensor[] = [];
  if (name !== null) {
    const layer = quantizableLayers(model).find((l) => l.name === name)?.module;
    if (!(layer instanceof Conv2d || layer instanceof Conv1d || layer instanceof Linear)) throw new Error(`prune: no Conv2d, Conv1d or Linear '${name}'`);
    const bnName = findConvBnPairs(model).get(name);
    const bn = bnName ? model.getSubmodule(bnName) : null;
    rowSized = [layer.weight, ...(layer.bias ? [layer.bias] : []), ...(bn instanceof BatchNorm2d || bn instanceof BatchNorm1d ? [bn.weight, bn.bias].filter((t): t is Tensor => t !== null) : [])];
  }
  const saved = [...new Set([...model.parameters(), ...model.buffers()])].map((t) => [t, t.data.slice()] as const);
  const rezero = (): void => {
    for (const t of rowSized) {
      const per = t.size / t.shape[0]!;
      for (const c of channels) t.data.fill(0, c * per, (c + 1) * per);
    }
  };
  const training = model.training;
  try {
    rezero();
    return fn(rezero);
  } finally {
    for (const [t, data] of saved) t.data.set(data);
    model.train(training);
  }
}

/** A short fine-tune after pruning, so that the error reflects what QAT can recover. */
export interface PruneRecovery {
  /** Training batches (the first `steps` are used, in order; pass the same list for every option). */
  readonly batches: readonly Batch[];
  /** Adam steps (default: every batch). */
  readonly steps?: number;
  /** Adam learning rate (default 1e-3), constant. */
  readonly lr?: number;
  /** Seed of in-model randomness (dropout), the same for every option (default 0). */
  readonly seed?: number;
}

/** `steps` Adam steps on the float model, calling `after` after each (re-zeroing pruned channels). */
function recoverySteps(model: TensorModule, recovery: PruneRecovery, after: () => void): void {
  const steps = Math.min(recovery.steps ?? recovery.batches.length, recovery.batches.length);
  manualSeed(recovery.seed ?? 0);
  const optimizer = new Adam(model.parameters(), { lr: recovery.lr ?? 1e-3 });
  model.train();
  for (let i = 0; i < steps; i++) {
    const { x, y } = recovery.batches[i]!;
    const loss = crossEntropy(model.forward(x), y);
    loss.backward();
    optimizer.step();
    optimizer.zeroGrad();
    after();
  }
  for (const p of model.parameters()) p.grad = null;
  model.eval();
}

/**
 * Output KL divergence KL(p_ref ‖ p_pruned) (mean per sample) and loss increase of the float
 * model when the channels at 0 bits in `choice.wPerChannel` of layer `name` output exactly 0
 * (weights, bias and a folded BN's γ, β zeroed); activations and other layers stay float. With
 * `recovery`, the pruned model is first fine-tuned (`recovery.steps` Adam steps, the channels
 * held at 0), and the reference `base` should be the same fine-tune without pruning
 * (`recoveredReference`), so the error measures what fine-tuning does not win back. The model is
 * restored.
 */
export function prunePerturbation(model: TensorModule, data: Iterable<Batch>, name: string, choice: BitChoice, base?: ReturnType<typeof logProbs>, recovery?: PruneRecovery): { kl: number; deltaLoss: number } {
  const batches = [...data];
  if (batches.length === 0) throw new Error('prunePerturbation: the data yielded no batch');
  const ref = base ?? (recovery ? recoveredReference(model, batches, recovery) : logProbs(model, batches));
  const pruned = (choice.wPerChannel ?? []).flatMap((b, c) => (b === 0 ? [c] : []));
  if (pruned.length === 0) return { kl: 0, deltaLoss: 0 };
  const r = withChannelsZeroed(model, name, pruned, (rezero) => {
    if (recovery) recoverySteps(model, recovery, rezero);
    return logProbs(model, batches);
  });
  let sum = 0;
  let rows = 0;
  r.lp.forEach((q, k) => {
    const p = ref.lp[k]!;
    for (let i = 0; i < p.length; i++) sum += Math.exp(p[i]!) * (p[i]! - q[i]!);
    rows += batches[k]!.y.shape[0]!;
  });
  return { kl: sum / rows, deltaLoss: r.loss - ref.loss };
}

/** `logProbs` of the model after the recovery fine-tune without pruning (the reference of recovered errors); the model is restored. */
export function recoveredReference(model: TensorModule, data: Iterable<Batch>, recovery: PruneRecovery): ReturnType<typeof logProbs> {
  const batches = [...data];
  return withChannelsZeroed(model, null, [], (rezero) => {
    recoverySteps(model, recovery, rezero);
    return logProbs(model, batches);
  });
}

export interface PruneOptionsConfig {
  /** Keep ratios per layer (default [1, 0.75, 0.5, 0.375, 0.25]); 1 = no pruning. */
  readonly ratios?: readonly number[];
  /** Weight widths of the kept channels (default [8]). */
  readonly widths?: readonly number[];
  /** Input-activation bits (default 8). */
  readonly a?: number;
  /** Channel scores per layer (`channelPruneScores`; default: squared L2 norms of the weights). */
  readonly scores?: ReadonlyMap<string, ArrayLike<number>>;
  /** Layers that may prune (default `prunableLayers`). */
  readonly prunable?: readonly string[];
  /** Error of a layer at width w (e.g. a PTQ perturbation); default 0. Added to the pruning error. */
  readonly widthError?: (layer: LayerInfo, w: number) => number;
  /** Which pruning error to use (default 'kl'). */
  readonly error?: 'kl' | 'deltaLoss';
  /** Fine-tune each pruned model briefly before measuring its error (see `prunePerturbation`). */
  readonly recovery?: PruneRecovery;
  readonly onProgress?: (done: number, total: number) => void;
}

/**
 * The options of an exact allocation over (width, keep ratio) per layer: each prunable layer gets
 * every width × ratio (duplicate channel counts merged), the others every width at keep 1. The
 * kept channels are those of highest score (`pruneChoice`); the error is the pruning
 * perturbation (`prunePerturbation` on `data`: output KL or Δloss, clamped at 0) plus
 * `widthError(layer, w)`; the cost is `layerChoiceCost(cost, layer, choice)`. For the in-model
 * latency model (`latencyCost({ context })`, measured with the layer compacted) the costs are its
 * signed measured changes spread without clamping: cost = m_L + max(0, T₈ − Σ m)/n + change, m_L
 * the layer's largest saving, so every option costs ≥ 0 and no saving is cut off at 0 as
 * `layerCost`'s T₈/n share would. W8A8 then costs max(T₈, Σ m): the savings of consecutive layers
 * overlap (each counts the next layer's narrower input), so Σ m can exceed T₈; `costOffset` =
 * max(0, Σ m − T₈) is what an estimate carries over the predicted latency (T₈ + Σ change):
 * allocate at budget + costOffset. Other cost models: `costOffset` = 0.
 */
export function pruneLayerOptions(model: TensorModule, layers: readonly LayerInfo[], data: Iterable<Batch>, cost: CostModel, config: PruneOptionsConfig = {}): LayerChoices[] & { readonly costOffset: number } {
  const ratios = config.ratios ?? [1, 0.75, 0.5, 0.375, 0.25];
  const widths = config.widths ?? [8];
  const a = config.a ?? 8;
  const prunable = new Set(config.prunable ?? prunableLayers(model, layers));
  const batches = [...data];
  const base = config.recovery ? recoveredReference(model, batches, config.recovery) : logProbs(model, batches);
  const weights = new Map(quantizableLayers(model).map((l) => [l.name, l.module.weight]));
  const jobs = layers.map((l) => {
    const counts = prunable.has(l.name) ? [...new Set(ratios.map((r) => keptChannels(l.outChannels, r)))] : [l.outChannels];
    return { layer: l, counts };
  });
  const total = jobs.reduce((s, j) => s + j.counts.length, 0);
  let done = 0;
  const built = jobs.map(({ layer, counts }) => {
    const scores = config.scores?.get(layer.name) ?? channelPruneScores(weights.get(layer.name)!);
    const measured = counts.map((kept) => {
      const shape = pruneChoice(layer, scores, kept, widths[0]!, a);
      const p = prunePerturbation(model, batches, layer.name, shape, base, config.recovery);
      config.onProgress?.(++done, total);
      return { kept, error: Math.max(0, config.error === 'deltaLoss' ? p.deltaLoss : p.kl) };
    });
    // Pruning more channels never counts as less error: a measured error below that of a wider
    // choice is noise of the sample (or both are clamped at 0), and would prune channels a budget
    // does not ask for. Fewer kept channels get at least the error of more, plus a tie-breaker.
    const byKept = [...measured].sort((x, y) => y.kept - x.kept);
    for (let i = 1; i < byKept.length; i++) {
      const wider = byKept[i - 1]!.error;
      byKept[i]!.error = Math.max(byKept[i]!.error, wider + Math.max(Math.abs(wider), 1) * 1e-9);
    }
    const options = measured.flatMap(({ kept, error: pruneError }) => {
      return widths.map((w) => {
        const choice = pruneChoice(layer, scores, kept, w, a);
        return { choice, cost: layerChoiceCost(cost, layer, choice), error: pruneError + (config.widthError?.(layer, w) ?? 0) };
      });
    });
    return { name: layer.name, options };
  });
  const latency = cost as LatencyCostModel;
  if (!latency.change || !latency.w8a8Total) return Object.assign(built, { costOffset: 0 });
  const changes = built.map((l, i) => l.options.map((o) => latency.change!(layers[i]!, o.choice)));
  const savings = changes.map((c) => Math.max(0, -Math.min(...c)));
  const t8 = latency.w8a8Total();
  const saved = savings.reduce((x, y) => x + y, 0);
  const spare = Math.max(0, t8 - saved) / layers.length;
  const spread = built.map((l, i) => ({ name: l.name, options: l.options.map((o, k) => ({ ...o, cost: Math.max(0, savings[i]! + spare + changes[i]![k]!) })) }));
  return Object.assign(spread, { costOffset: Math.max(0, saved - t8) });
}

/** An allocation and how it measured. */
export interface MeasuredAllocation {
  readonly allocation: Allocation;
  /** The measured cost of the allocation (same unit as the budget). */
  readonly measured: number;
  /** Whether `measured` ≤ the budget. */
  readonly fits: boolean;
  /** Every allocation measured, in order: its estimated and measured cost and error. */
  readonly rounds: readonly { estimate: number; measured: number; error: number }[];
}

/**
 * Exact allocation checked by measurement: the Pareto front of allocations within the budget
 * (`paretoFront`, by estimated cost) is searched from its most accurate end. Each allocation is
 * measured (e.g. the whole compacted IntModel as a paired ratio to W8A8); when it measures over
 * the budget, the next one tried is the most accurate front allocation whose estimate is at most
 * estimate·budget/measured (the estimate's over-run taken as relative), until one fits or
 * `maxRounds` (default 6) were measured. When none fits, the one that measured cheapest is
 * returned with `fits: false`.
 */
export function allocateMeasured(layers: readonly LayerChoices[], budget: number, measure: (allocation: Allocation) => number, options: { maxRounds?: number } = {}): MeasuredAllocation {
  const front = paretoFront(layers, budget);
  if (front.length === 0) allocateExact(layers, budget); // throws, naming the cheapest cost
  const rounds: { estimate: number; measured: number; error: number }[] = [];
  let best: { allocation: Allocation; measured: number } | null = null;
  let i = front.length - 1;
  while (i >= 0 && rounds.length < (options.maxRounds ?? 6)) {
    const allocation = front[i]!;
    const measured = measure(allocation);
    rounds.push({ estimate: allocation.cost, measured, error: allocation.error });
    if (measured <= budget) return { allocation, measured, fits: true, rounds };
    if (!best || measured < best.measured) best = { allocation, measured };
    const limit = allocation.cost * (budget / measured);
    i--;
    while (i >= 0 && front[i]!.cost > limit) i--;
  }
  return { ...best!, fits: false, rounds };
}
