/**
 * Cross-layer equalization and BatchNorm folding for float models, before post-training
 * quantization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
 * Correction", §4.1 — the method AIMET and NNCF apply to depthwise-separable nets).
 *
 * Per-tensor weight quantization uses one scale for a whole layer, so a layer whose output channels
 * have very different weight ranges (typical of depthwise convolutions after BatchNorm folding)
 * loses the small channels to rounding. For two layers in a row, y = W2 f(W1 x + b1) + b2, with f
 * positively homogeneous per channel (ReLU, max/avg pooling, dropout, identity: f(s·z) = s·f(z) for
 * s > 0), scaling output channel c of the first layer by 1/s_c and input channel c of the second
 * by s_c leaves the function unchanged. Choosing
 *   s_c = √(r1_c / r2_c),   r1_c = max |W1[c, …]|,  r2_c = max |W2[:, c, …]|
 * makes both ranges √(r1_c · r2_c): each channel gets the same share of both layers' ranges
 * (the optimum of DFQ's precision objective). Chains (conv → depthwise → pointwise) share layers
 * between pairs, so the pairs are equalized in turn until the scales stop moving.
 *
 * ReLU6 is not positively homogeneous (the clip at 6 moves with the scale); like DFQ, `equalize`
 * replaces a ReLU6 between a pair by ReLU (`replaceRelu6`, default true), which changes the float
 * function only where an activation exceeded 6 — the result reports which modules were replaced,
 * and the caller can measure the float accuracy after.
 *
 * A pair is a Conv2d / Conv1d / Linear, then any run of ReLU, ReLU6 (when replaced), Identity,
 * Dropout, MaxPool / AvgPool, then a Conv2d / Conv1d / Linear whose input channels are the first
 * one's outputs. With a `sample` input they are found in the graph of the model's forward (the
 * module calls `convert` captures), where every output along the way must go to the next module
 * only (so a residual branch is never rescaled); without one, inside `Sequential`s. BatchNorms
 * between them are folded first (`foldBatchNorms`, which `equalizeCrossLayer` runs by default).
 * Explicit pairs can be given by name too.
 */
import { Module } from '../../nn/module.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Conv1d } from '../../nn/conv1d.ts';
import { Linear } from '../../nn/linear.ts';
import { BatchNorm1d, BatchNorm2d } from '../../nn/batchnorm.ts';
import { Identity, ReLU, ReLU6 } from '../../nn/activation.ts';
import { Dropout } from '../../nn/dropout.ts';
import { AvgPool2d, MaxPool2d } from '../../nn/pooling.ts';
import { Sequential } from '../../nn/sequential.ts';
import { Rng } from '../../tensor/random.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { findConvBnPairs } from '../config/plan.ts';
import { captureGraph } from '../../runtime/capture.ts';
import { captureLeaves } from '../../runtime/convert.ts';

type WeightLayer = Conv2d | Conv1d | Linear;

export interface FoldedBatchNorm {
  readonly conv: string;
  readonly batchNorm: string;
}

/**
 * Folds every BatchNorm that directly follows a Conv2d / Conv1d in a Sequential (and the explicit
 * `pairs`) into the conv, using the running statistics (eval-mode BN):
 *   W'[c] = W[c] · γ_c / √(σ²_c + ε),  b'[c] = (b[c] − μ_c) · γ_c / √(σ²_c + ε) + β_c,
 * then replaces the BN by an Identity. A conv without a bias is replaced by a copy with one. With
 * a `sample` input, pairs are also found in the graph of the model's forward (a conv whose output
 * goes only to a BatchNorm), for models that are not Sequentials.
 * The model computes the same function in eval mode; in training mode the folded layers no longer
 * normalize by batch statistics. Returns the folded pairs.
 */
export function foldBatchNorms(model: Module, pairs: readonly (readonly [string, string])[] = [], sample?: Tensor): FoldedBatchNorm[] {
  const found = findConvBnPairs(model, pairs);
  if (sample) for (const [conv, bn] of graphConvBnPairs(model, sample)) found.set(conv, bn);
  const out: FoldedBatchNorm[] = [];
  for (const [convName, bnName] of found) {
    const conv = model.getSubmodule(convName);
    const bn = model.getSubmodule(bnName);
    if (!(conv instanceof Conv2d || conv instanceof Conv1d) || !(bn instanceof BatchNorm2d || bn instanceof BatchNorm1d)) continue;
    if (bn.runningMean === null || bn.runningVar === null) throw new Error(`foldBatchNorms: '${bnName}' tracks no running statistics, so it cannot be folded`);
    const target = conv.bias === null ? withBias(conv) : conv;
    const C = target.outChannels;
    const per = target.weight.size / C;
    const w = target.weight.data as Float32Array;
    const b = target.bias!.data as Float32Array;
    const mean = bn.runningMean.data, variance = bn.runningVar.data;
    for (let c = 0; c < C; c++) {
      const gamma = bn.weight ? bn.weight.data[c]! : 1;
      const beta = bn.bias ? bn.bias.data[c]! : 0;
      const scale = gamma / Math.sqrt(variance[c]! + bn.eps);
      for (let k = 0; k < per; k++) w[c * per + k] = w[c * per + k]! * scale;
      b[c] = (b[c]! - mean[c]!) * scale + beta;
    }
    if (target !== conv) model.setSubmodule(convName, target);
    model.setSubmodule(bnName, new Identity());
    out.push({ conv: convName, batchNorm: bnName });
  }
  return out;
}

/** A copy of `conv` with a zero bias (same geometry and weights). */
function withBias(conv: Conv2d | Conv1d): Conv2d | Conv1d {
  const rng = new Rng(0); // the initial values are overwritten: leave the global generator alone
  const copy = conv instanceof Conv2d
    ? new Conv2d(conv.inChannels, conv.outChannels, conv.kernelSize, { stride: conv.stride, padding: conv.padding, dilation: conv.dilation, groups: conv.groups, bias: true, rng })
    : new Conv1d(conv.inChannels, conv.outChannels, conv.kernelSize, { stride: conv.stride, padding: conv.padding, dilation: conv.dilation, groups: conv.groups, bias: true, rng });
  (copy.weight.data as Float32Array).set(conv.weight.data as Float32Array);
  (copy.bias!.data as Float32Array).fill(0);
  copy.training = conv.training;
  return copy;
}

export interface EqualizePair {
  readonly first: string;
  readonly second: string;
  /** Modules between them (activations, pooling...). */
  readonly between: readonly string[];
}

export interface EqualizeOptions {
  /**
   * An input batch (one sample is enough): pairs are then found in the graph of the model's forward
   * (`captureGraph`: the model must be a chain of module calls, as `convert` needs), so custom
   * modules (LeNet-5's fields, residual blocks) are covered; without it, only Sequentials.
   */
  sample?: Tensor;
  /** Fold Conv + BatchNorm pairs first (default true; pairs across an unfolded BN are not found). */
  foldBatchNorm?: boolean;
  /** Replace a ReLU6 between a pair by ReLU (default true); false skips such pairs. */
  replaceRelu6?: boolean;
  /** Explicit pairs for layers outside Sequentials: the activation between them must be positively homogeneous. */
  pairs?: readonly (readonly [string, string])[];
  /** Sweeps over all pairs at most (default 50). */
  maxIterations?: number;
  /** Stop when no scale in a sweep differs from 1 by more than this (default 1e-4). */
  tolerance?: number;
}

export interface EqualizeResult {
  readonly folded: readonly FoldedBatchNorm[];
  readonly pairs: readonly EqualizePair[];
  readonly replacedRelu6: readonly string[];
  readonly iterations: number;
  /** Per weight layer touched: max over channels / min over channels of the output-channel weight range, before and after. */
  readonly rangeRatio: Readonly<Record<string, { before: number; after: number }>>;
}

/** Positively homogeneous per channel: f(s·x) = s·f(x) for s > 0. */
function homogeneous(m: Module): boolean {
  return m instanceof ReLU || m instanceof Identity || m instanceof Dropout || m instanceof MaxPool2d || m instanceof AvgPool2d;
}

function weightLayer(m: Module): m is WeightLayer {
  // exact classes only: a quantized replacement (a subclass) must not be rescaled behind its quantizers
  return m.constructor === Conv2d || m.constructor === Conv1d || m.constructor === Linear;
}

function outChannels(l: WeightLayer): number {
  return l instanceof Linear ? l.outFeatures : l.outChannels;
}

function inChannels(l: WeightLayer): number {
  return l instanceof Linear ? l.inFeatures : l.inChannels;
}

/** Weight entries of layer `l` reading input channel c: calls `visit(index)` for each. */
function forInput(l: WeightLayer, c: number, visit: (i: number) => void): void {
  if (l instanceof Linear) {
    for (let o = 0; o < l.outFeatures; o++) visit(o * l.inFeatures + c);
    return;
  }
  const cg = l.inChannels / l.groups, og = l.outChannels / l.groups;
  const g = Math.floor(c / cg), local = c % cg;
  const taps = l.weight.size / (l.outChannels * cg);
  for (let o = g * og; o < (g + 1) * og; o++) {
    const base = (o * cg + local) * taps;
    for (let k = 0; k < taps; k++) visit(base + k);
  }
}

function outputRanges(l: WeightLayer): Float64Array {
  const C = outChannels(l), per = l.weight.size / C, w = l.weight.data;
  const r = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let m = 0;
    for (let k = 0; k < per; k++) m = Math.max(m, Math.abs(w[c * per + k]!));
    r[c] = m;
  }
  return r;
}

function rangeRatio(l: WeightLayer): number {
  const r = outputRanges(l);
  let lo = Infinity, hi = 0;
  for (const v of r) {
    if (v > 0) lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return lo === Infinity ? 1 : hi / lo;
}

/** Leaf calls and who reads each one's output (`consumers[i]`: the nodes taking node i's output). */
interface LeafGraph {
  readonly nodes: readonly { readonly name: string; readonly module: Module; readonly inputs: readonly number[] }[];
  readonly consumers: readonly (readonly number[])[];
}

function withConsumers(nodes: LeafGraph['nodes']): LeafGraph {
  const consumers: number[][] = nodes.map(() => []);
  nodes.forEach((n, j) => n.inputs.forEach((i) => i >= 0 && consumers[i]!.push(j)));
  return { nodes, consumers };
}

/** Each Sequential as a chain: child i reads child i − 1. */
function sequentialChains(model: Module): LeafGraph[] {
  const chains: LeafGraph[] = [];
  for (const [name, module] of model.namedModules()) {
    if (!(module instanceof Sequential)) continue;
    const prefix = name === '' ? '' : `${name}.`;
    chains.push(withConsumers([...module].map((m, i) => ({ name: `${prefix}${i}`, module: m, inputs: [i - 1] }))));
  }
  return chains;
}

/** The forward's graph of leaf calls on `sample` (captured in eval mode, no gradient). */
function forwardGraph(model: Module, sample: Tensor): LeafGraph {
  const wasTraining = model.training;
  model.eval();
  try {
    return withConsumers(captureGraph(model, captureLeaves(model), sample).nodes);
  } finally {
    model.train(wasTraining);
  }
}

/** Conv → BatchNorm pairs of the forward graph: the conv's output feeds the BN only. */
function graphConvBnPairs(model: Module, sample: Tensor): Map<string, string> {
  const { nodes, consumers } = forwardGraph(model, sample);
  const out = new Map<string, string>();
  nodes.forEach((n, i) => {
    const only = consumers[i]!.length === 1 ? nodes[consumers[i]![0]!]! : null;
    if (!only) return;
    if ((n.module.constructor === Conv2d && only.module instanceof BatchNorm2d) || (n.module.constructor === Conv1d && only.module instanceof BatchNorm1d)) {
      if ((only.module as BatchNorm2d | BatchNorm1d).numFeatures === (n.module as Conv2d | Conv1d).outChannels) out.set(n.name, only.name);
    }
  });
  return out;
}

/**
 * Pairs of a graph: a weight layer whose output, through a chain of single-consumer homogeneous
 * leaves (and ReLU6 when replaced, which is then swapped for ReLU), reaches exactly one weight
 * layer and nothing else (a residual branch that also reads it would see the rescaled channels).
 */
function pairsOf(graph: LeafGraph, model: Module, replaceRelu6: boolean, replaced: string[]): EqualizePair[] {
  const { nodes, consumers } = graph;
  const pairs: EqualizePair[] = [];
  nodes.forEach((n, i) => {
    if (!weightLayer(n.module)) return;
    const between: number[] = [];
    let cur = i;
    for (;;) {
      // the last node (the model's output) has no consumers
      if (consumers[cur]!.length !== 1) return;
      const j = consumers[cur]![0]!;
      const next = nodes[j]!;
      if (next.inputs.length !== 1) return;
      if (weightLayer(next.module)) {
        if (inChannels(next.module) !== outChannels(n.module as WeightLayer)) return;
        for (const k of between) {
          const b = nodes[k]!;
          if (b.module instanceof ReLU6) {
            model.setSubmodule(b.name, new ReLU());
            replaced.push(b.name);
          }
        }
        pairs.push({ first: n.name, second: next.name, between: between.map((k) => nodes[k]!.name) });
        return;
      }
      if (!(homogeneous(next.module) || (replaceRelu6 && next.module instanceof ReLU6))) return;
      between.push(j);
      cur = j;
    }
  });
  return pairs;
}

/**
 * Cross-layer equalization (see the module comment): folds BatchNorms (by default), finds the
 * pairs, and rescales them in sweeps until every scale is within `tolerance` of 1. The model's
 * float function is unchanged (up to float32 rounding), except where a ReLU6 was replaced.
 */
export function equalizeCrossLayer(model: Module, options: EqualizeOptions = {}): EqualizeResult {
  const folded = options.foldBatchNorm ?? true ? foldBatchNorms(model, [], options.sample) : [];
  const replaced: string[] = [];
  const graphs = options.sample ? [forwardGraph(model, options.sample)] : sequentialChains(model);
  const pairs = graphs.flatMap((g) => pairsOf(g, model, options.replaceRelu6 ?? true, replaced));
  for (const [first, second] of options.pairs ?? []) {
    const a = model.getSubmodule(first), b = model.getSubmodule(second);
    if (!weightLayer(a) || !weightLayer(b)) throw new Error(`equalizeCrossLayer: pair ('${first}', '${second}') must be two Conv2d / Conv1d / Linear layers`);
    if (inChannels(b) !== outChannels(a)) throw new Error(`equalizeCrossLayer: '${second}' takes ${inChannels(b)} input channels, '${first}' gives ${outChannels(a)}`);
    pairs.push({ first, second, between: [] });
  }
  const layers = new Map<string, WeightLayer>();
  for (const p of pairs) for (const n of [p.first, p.second]) layers.set(n, model.getSubmodule(n) as WeightLayer);
  const before = new Map([...layers].map(([n, l]) => [n, rangeRatio(l)]));
  const maxIterations = options.maxIterations ?? 50;
  const tolerance = options.tolerance ?? 1e-4;
  let iterations = 0;
  for (; iterations < maxIterations && pairs.length > 0; ) {
    iterations++;
    let worst = 0;
    for (const p of pairs) worst = Math.max(worst, equalizePair(layers.get(p.first)!, layers.get(p.second)!));
    if (worst <= tolerance) break;
  }
  const rangeRatioOut: Record<string, { before: number; after: number }> = {};
  for (const [n, l] of layers) rangeRatioOut[n] = { before: before.get(n)!, after: rangeRatio(l) };
  return { folded, pairs, replacedRelu6: replaced, iterations, rangeRatio: rangeRatioOut };
}

/** One pair's rescale; returns max_c |s_c − 1|. */
function equalizePair(first: WeightLayer, second: WeightLayer): number {
  const C = outChannels(first);
  const r1 = outputRanges(first);
  const w1 = first.weight.data as Float32Array, w2 = second.weight.data as Float32Array;
  const b1 = first.bias ? (first.bias.data as Float32Array) : null;
  const per = first.weight.size / C;
  let worst = 0;
  for (let c = 0; c < C; c++) {
    let r2 = 0;
    forInput(second, c, (i) => (r2 = Math.max(r2, Math.abs(w2[i]!))));
    // a dead channel on either side carries nothing to balance
    if (!(r1[c]! > 0) || !(r2 > 0)) continue;
    const s = Math.sqrt(r1[c]! / r2);
    if (!Number.isFinite(s)) continue;
    worst = Math.max(worst, Math.abs(s - 1));
    for (let k = 0; k < per; k++) w1[c * per + k] = w1[c * per + k]! / s;
    if (b1) b1[c] = b1[c]! / s;
    forInput(second, c, (i) => (w2[i] = w2[i]! * s));
  }
  return worst;
}

/** What `equalizeCrossLayer` changed in the model's structure (the rest is parameter values). */
export interface EqualizedStructure {
  /** [conv, batchNorm] pairs folded. */
  readonly folded: readonly (readonly [string, string])[];
  /** ReLU6 modules replaced by ReLU. */
  readonly replacedRelu6: readonly string[];
}

/** The structural record of an equalization result (for a saved state to be loaded into). */
export function equalizedStructure(result: EqualizeResult): EqualizedStructure {
  return { folded: result.folded.map((f) => [f.conv, f.batchNorm] as const), replacedRelu6: [...result.replacedRelu6] };
}

/**
 * Gives a fresh model the structure an equalized one has (BatchNorms folded into their convs,
 * convs with a bias, ReLU6 → ReLU), so that the equalized model's state dict loads into it. The
 * record is checked (it may come from a file): every name must exist with the expected class.
 */
export function applyEqualizedStructure(model: Module, structure: unknown): void {
  const s = structure as { folded?: unknown; replacedRelu6?: unknown } | null;
  const isNames = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (typeof s !== 'object' || s === null || !Array.isArray(s.folded) || !s.folded.every((p) => isNames(p) && p.length === 2) || !isNames(s.replacedRelu6)) {
    throw new Error('an equalization record must be { folded: [[conv, batchNorm], ...], replacedRelu6: [name, ...] }');
  }
  const pairs = s.folded as [string, string][];
  const known = new Set(model.namedModules().map(([n]) => n));
  for (const n of [...pairs.flat(), ...s.replacedRelu6]) if (!known.has(n)) throw new Error(`the equalization record names '${n}', which the model does not have`);
  for (const n of s.replacedRelu6) if (!(model.getSubmodule(n) instanceof ReLU6)) throw new Error(`the equalization record replaces '${n}', which is a ${model.getSubmodule(n).constructor.name}, not a ReLU6`);
  foldBatchNorms(model, pairs);
  for (const n of s.replacedRelu6) model.setSubmodule(n, new ReLU());
}
