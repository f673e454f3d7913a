/**
 * The layer chain of a prunable model and its surgery: which layers carry unit gates, removing
 * units (rebuilding the gated layer and the next weight layer smaller, weights inherited exactly),
 * the final deterministic network, and its size (units, parameters, multiply-accumulates).
 */
import { noGrad } from '../../autograd/engine.ts';
import { Rng, Tensor, zeros } from '../../tensor/index.ts';
import { typedArrayFor } from '../../backend/primitives.ts';
import type { Module, TensorModule } from '../module.ts';
import { Sequential } from '../sequential.ts';
import { Linear } from '../linear.ts';
import { Conv2d } from '../conv.ts';
import { ReLU } from '../activation.ts';
import { AdaptiveAvgPool2d, AvgPool2d, MaxPool2d } from '../pooling.ts';
import { Flatten } from '../flatten.ts';
import { Dropout } from '../dropout.ts';
import { GatedUnits, unitsOf, type GateableLayer } from './gate.ts';

/** A pruning error: the model or an option does not fit the method (message says which). */
export class PruneError extends Error {
  override name = 'PruneError';
}

/** One layer of the forward chain, by its dotted path in the model. */
export interface ChainEntry {
  readonly path: string;
  readonly module: TensorModule;
}

/**
 * The model's layers in forward order: the children of the root in registration order, nested
 * Sequentials expanded. Valid for Sequential models and for models like LeNet5 whose forward runs
 * its children in the order they were registered; `checkChain` verifies that on a sample.
 */
export function layerChain(model: Module): ChainEntry[] {
  const out: ChainEntry[] = [];
  const visit = (m: Module, prefix: string): void => {
    for (const [name, child] of m.namedChildren()) {
      const path = prefix === '' ? name : `${prefix}.${name}`;
      if (child instanceof Sequential) visit(child, path);
      else out.push({ path, module: child as TensorModule });
    }
  };
  visit(model, '');
  return out;
}

/** Runs the chain layer by layer on `x` (no graph); the per-layer outputs, last = the model output. */
export function runChain(chain: readonly ChainEntry[], x: Tensor): Tensor[] {
  return noGrad(() => {
    const outs: Tensor[] = [];
    let y = x;
    for (const { module } of chain) {
      y = module.forward(y);
      outs.push(y);
    }
    return outs;
  });
}

/** Throws a PruneError unless the model's forward equals its layer chain on a zero-input sample. */
export function checkChain(model: TensorModule, inputShape: readonly number[]): void {
  const chain = layerChain(model);
  if (chain.length === 0) throw new PruneError('the model has no layers to prune');
  const x = zeros([1, ...inputShape]);
  for (let i = 0; i < x.size; i++) x.data[i] = Math.sin(i + 1);
  const wasTraining = model.training;
  model.eval();
  try {
    const direct = noGrad(() => model.forward(x));
    const chained = runChain(chain, x).at(-1)!;
    const same = direct.size === chained.size && direct.data.every((v, i) => Math.abs(v - chained.data[i]!) <= 1e-5 * (1 + Math.abs(v)));
    if (!same) throw new PruneError(`${model.constructor.name}.forward is not the chain of its layers (${chain.map((e) => e.path).join(', ')}); pruning needs a Sequential-like model`);
  } finally {
    model.train(wasTraining);
  }
}

/** Layers allowed between a gated layer and the next weight layer (ξ·f(z) = f(ξ·z) for ξ in [0, 1]). */
function passesGate(m: Module): boolean {
  return m instanceof ReLU || m instanceof MaxPool2d || m instanceof AvgPool2d || m instanceof AdaptiveAvgPool2d || m instanceof Flatten || m instanceof Dropout;
}

function innerLayer(m: Module): GateableLayer | null {
  if (m instanceof GatedUnits) return m.layer;
  if ((m.constructor === Linear || m.constructor === Conv2d) && !Object.prototype.hasOwnProperty.call(m, 'forward')) return m as GateableLayer;
  return null;
}

/** A gateable layer and the weight layer that consumes its units. */
export interface PrunablePair {
  /** Index in the chain of the gated (or gateable) layer. */
  readonly index: number;
  /** Index in the chain of the next Linear / Conv2d. */
  readonly nextIndex: number;
  /** A Flatten lies between them (conv channels become blocks of Linear inputs). */
  readonly flattened: boolean;
}

/**
 * Every Linear / Conv2d of the chain except the last weight layer, with the weight layer that
 * consumes it. Throws a PruneError naming the layer when something other than ReLU, pooling,
 * Flatten or Dropout lies between the two (BatchNorm, other activations, unknown modules), or
 * when `names` asks for a layer that is not prunable.
 */
export function prunablePairs(chain: readonly ChainEntry[], names?: readonly string[]): PrunablePair[] {
  const weightIdx = chain.flatMap((e, i) => (innerLayer(e.module) ? [i] : []));
  if (weightIdx.length < 2) throw new PruneError('pruning needs at least two Linear / Conv2d layers (the last one is the output and is never pruned)');
  const pairs: PrunablePair[] = [];
  for (let k = 0; k + 1 < weightIdx.length; k++) {
    const index = weightIdx[k]!;
    const nextIndex = weightIdx[k + 1]!;
    const path = chain[index]!.path;
    if (names && !names.includes(path)) continue;
    const layer = innerLayer(chain[index]!.module)!;
    if (layer instanceof Conv2d && layer.groups !== 1) throw new PruneError(`layer '${path}': grouped convolutions cannot be pruned`);
    let flattened = false;
    for (let j = index + 1; j < nextIndex; j++) {
      const m = chain[j]!.module;
      if (!passesGate(m)) throw new PruneError(`layer '${path}' is followed by ${m.constructor.name} ('${chain[j]!.path}'): only ReLU, pooling, Flatten and Dropout may lie between a pruned layer and the next weight layer`);
      if (m instanceof Flatten) flattened = true;
    }
    const next = innerLayer(chain[nextIndex]!.module)!;
    if (next instanceof Conv2d && next.groups !== 1) throw new PruneError(`layer '${chain[nextIndex]!.path}': grouped convolutions cannot follow a pruned layer`);
    pairs.push({ index, nextIndex, flattened });
  }
  if (names) {
    const known = new Set(pairs.map((p) => chain[p.index]!.path));
    const bad = names.filter((n) => !known.has(n));
    if (bad.length > 0) throw new PruneError(`not prunable: ${bad.join(', ')} (prunable: ${weightIdx.slice(0, -1).map((i) => chain[i]!.path).join(', ')})`);
  }
  return pairs;
}

/** A parameter replaced by a smaller one: new[i] = old[gather[i]] (flat indices). */
export interface ParamReplacement {
  readonly old: Tensor;
  readonly replacement: Tensor;
  readonly gather: Int32Array;
}

const quietRng = (): Rng => new Rng(0);

/** Flat indices of the kept rows (axis 0) of a tensor with `rowSize` elements per row. */
function rowIndices(keep: readonly number[], rowSize: number): Int32Array {
  const out = new Int32Array(keep.length * rowSize);
  keep.forEach((r, k) => {
    for (let j = 0; j < rowSize; j++) out[k * rowSize + j] = r * rowSize + j;
  });
  return out;
}

/** Flat indices of the kept columns (axis 1) of a [rows, cols, inner] tensor. */
function columnIndices(rows: number, cols: readonly number[], colCount: number, inner: number): Int32Array {
  const out = new Int32Array(rows * cols.length * inner);
  let k = 0;
  for (let r = 0; r < rows; r++) {
    for (const c of cols) {
      for (let j = 0; j < inner; j++) out[k++] = (r * colCount + c) * inner + j;
    }
  }
  return out;
}

function gatherInto(target: Tensor, source: Tensor, gather: Int32Array): void {
  const t = target.data;
  const s = source.data;
  for (let i = 0; i < gather.length; i++) t[i] = s[gather[i]!]!;
}

/** A copy of `layer` with only the output units `keep` (rows of weight and bias). */
function keepOutputs(layer: GateableLayer, keep: readonly number[], replaced: ParamReplacement[]): GateableLayer {
  const bias = layer.bias !== null;
  const fresh = layer instanceof Linear
    ? new Linear(layer.inFeatures, keep.length, { bias, rng: quietRng() })
    : new Conv2d(layer.inChannels, keep.length, layer.kernelSize, { stride: layer.stride, padding: layer.padding, dilation: layer.dilation, bias, rng: quietRng() });
  const rowSize = layer.weight.size / layer.weight.shape[0]!;
  const wGather = rowIndices(keep, rowSize);
  gatherInto(fresh.weight, layer.weight, wGather);
  replaced.push({ old: layer.weight, replacement: fresh.weight, gather: wGather });
  if (layer.bias && fresh.bias) {
    const bGather = Int32Array.from(keep);
    gatherInto(fresh.bias, layer.bias, bGather);
    replaced.push({ old: layer.bias, replacement: fresh.bias, gather: bGather });
  }
  return fresh;
}

/**
 * A copy of `layer` reading only the input units `keep` of the previous layer (Conv2d input
 * channels, Linear input features; with `flattened`, each kept channel c is the block of Linear
 * inputs c·P .. c·P + P − 1, P = inFeatures / channels).
 */
function keepInputs(layer: GateableLayer, keep: readonly number[], units: number, flattened: boolean, replaced: ParamReplacement[]): GateableLayer {
  const bias = layer.bias !== null;
  let fresh: GateableLayer;
  let wGather: Int32Array;
  if (layer instanceof Linear) {
    const per = flattened ? layer.inFeatures / units : 1;
    if (!Number.isInteger(per) || (!flattened && layer.inFeatures !== units)) throw new PruneError(`a Linear with ${layer.inFeatures} inputs cannot follow a layer with ${units} units`);
    fresh = new Linear(keep.length * per, layer.outFeatures, { bias, rng: quietRng() });
    wGather = columnIndices(layer.outFeatures, keep, units, per);
  } else {
    if (layer.inChannels !== units) throw new PruneError(`a Conv2d with ${layer.inChannels} input channels cannot follow a layer with ${units} units`);
    fresh = new Conv2d(keep.length, layer.outChannels, layer.kernelSize, { stride: layer.stride, padding: layer.padding, dilation: layer.dilation, bias, rng: quietRng() });
    wGather = columnIndices(layer.outChannels, keep, units, layer.kernelSize[0] * layer.kernelSize[1]);
  }
  gatherInto(fresh.weight, layer.weight, wGather);
  replaced.push({ old: layer.weight, replacement: fresh.weight, gather: wGather });
  if (layer.bias && fresh.bias) {
    fresh.bias.data.set(layer.bias.data);
    replaced.push({ old: layer.bias, replacement: fresh.bias, gather: Int32Array.from({ length: layer.bias.size }, (_, i) => i) });
  }
  return fresh;
}

/** Rebuilds a gated layer around `layer`, keeping the gate settings and (a gather of) θ. */
function regate(gated: GatedUnits, layer: GateableLayer, keep: readonly number[] | null, replaced: ParamReplacement[]): GatedUnits {
  let theta = gated.theta;
  if (keep) {
    const data = typedArrayFor(theta.dtype, keep.length);
    keep.forEach((u, k) => (data[k] = gated.theta.data[u]!));
    theta = new Tensor(data, [keep.length]);
    replaced.push({ old: gated.theta, replacement: theta, gather: Int32Array.from(keep) });
  }
  return new GatedUnits(layer, { theta, temperature: gated.temperature, rng: gated.rng });
}

/**
 * Removes the output units of chain entry `pair.index` not in `keep` (sorted unit indices):
 * the layer becomes a smaller one holding exactly the kept rows of its weight and bias (its gate
 * keeps the kept θ), and the next weight layer a smaller one without the inputs those units fed.
 * Returns the replaced parameters (old → new with the gather map) so optimizer state can follow.
 * At least one unit is always kept.
 */
export function removeUnits(model: Module, chain: readonly ChainEntry[], pair: PrunablePair, keep: readonly number[]): ParamReplacement[] {
  if (keep.length === 0) throw new PruneError(`cannot remove every unit of '${chain[pair.index]!.path}'`);
  const replaced: ParamReplacement[] = [];
  const entry = chain[pair.index]!;
  const layer = innerLayer(entry.module)!;
  const units = unitsOf(layer);
  const smaller = keepOutputs(layer, keep, replaced);
  model.setSubmodule(entry.path, entry.module instanceof GatedUnits ? regate(entry.module, smaller, keep, replaced) : smaller);
  const nextEntry = chain[pair.nextIndex]!;
  const next = innerLayer(nextEntry.module)!;
  const narrower = keepInputs(next, keep, units, pair.flattened, replaced);
  model.setSubmodule(nextEntry.path, nextEntry.module instanceof GatedUnits ? regate(nextEntry.module, narrower, null, replaced) : narrower);
  return replaced;
}

/**
 * The final deterministic network, in place: in every gated layer the units with θ < 0.5 are
 * removed and the gate wrappers are replaced by their plain Linear / Conv2d (the kept units'
 * gates are exactly 1), so the result is an ordinary model (prepareQat / convert / export work on
 * it) computing the same function as the gated model in eval mode. A layer whose gates are all
 * off keeps one unit with zero weights (its eval output). Returns the model.
 */
export function finalizePruned<M extends Module>(model: M): M {
  for (let changed = true; changed;) {
    changed = false;
    const chain = layerChain(model);
    for (const pair of prunablePairs(chain)) {
      const gated = chain[pair.index]!.module;
      if (!(gated instanceof GatedUnits)) continue;
      const keep = keptUnits(gated, 0.5);
      if (keep.length === 0) keep.push(argmaxTheta(gated));
      if (keep.length === gated.units) continue;
      removeUnits(model, chain, pair, keep);
      changed = true;
      break;
    }
  }
  for (const { path, module } of layerChain(model)) {
    if (!(module instanceof GatedUnits)) continue;
    // A layer whose every gate is off keeps one unit; its eval gate is 0, so its output must stay 0.
    module.theta.data.forEach((t, i) => {
      if (t >= 0.5) return;
      const w = module.layer.weight;
      const row = w.size / w.shape[0]!;
      w.data.fill(0, i * row, (i + 1) * row);
      if (module.layer.bias) module.layer.bias.data[i] = 0;
    });
    model.setSubmodule(path, module.layer);
  }
  return model;
}

/** Units whose θ is at least `threshold`, in order. */
export function keptUnits(gated: GatedUnits, threshold: number): number[] {
  const keep: number[] = [];
  gated.theta.data.forEach((t, i) => {
    if (t >= threshold) keep.push(i);
  });
  return keep;
}

function argmaxTheta(gated: GatedUnits): number {
  let best = 0;
  gated.theta.data.forEach((t, i) => {
    if (t > gated.theta.data[best]!) best = i;
  });
  return best;
}

/** Size of one weight layer of the chain. */
export interface LayerSize {
  readonly path: string;
  readonly kind: 'Linear' | 'Conv2d';
  /** Output units / filters. */
  readonly units: number;
  readonly params: number;
  /** Multiply-accumulates per sample. */
  readonly macs: number;
}

/**
 * Units, parameters and multiply-accumulates per sample of every Linear / Conv2d of the model
 * (gated or not), measured by running a zero sample of `inputShape` through the chain.
 */
export function layerSizes(model: TensorModule, inputShape: readonly number[]): LayerSize[] {
  const chain = layerChain(model);
  const wasTraining = model.training;
  model.eval();
  try {
    const outs = runChain(chain, zeros([1, ...inputShape]));
    const sizes: LayerSize[] = [];
    chain.forEach((e, i) => {
      const layer = innerLayer(e.module);
      if (!layer) return;
      const params = layer.weight.size + (layer.bias?.size ?? 0);
      const out = outs[i]!;
      const positions = layer instanceof Conv2d ? out.shape[2]! * out.shape[3]! : out.size / unitsOf(layer);
      sizes.push({ path: e.path, kind: layer instanceof Linear ? 'Linear' : 'Conv2d', units: unitsOf(layer), params, macs: layer.weight.size * positions });
    });
    return sizes;
  } finally {
    model.train(wasTraining);
  }
}

/**
 * Shrinks a freshly built model (e.g. `nn.lenet5()`) in place to the layer widths of a pruned
 * checkpoint, so that the checkpoint loads into it: for every prunable layer whose weight in
 * `stateDict` has fewer output units than the model's, the layer keeps its first units and the
 * next weight layer loses the matching inputs (the weights are then overwritten by
 * `loadStateDict`). A pruned network has no other record of its widths; this reads them from the
 * weight shapes. Throws a PruneError when a checkpoint layer is wider than the model's or its weight
 * is missing. Returns the model.
 *
 * ```ts
 * const model = nn.prune.shapeLike(nn.lenet5(), checkpoint);
 * model.loadStateDict(checkpoint);
 * ```
 */
export function shapeLike<M extends Module>(model: M, stateDict: ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>): M {
  const get = (key: string): Tensor | undefined => (stateDict instanceof Map ? stateDict.get(key) : (stateDict as Readonly<Record<string, Tensor>>)[key]);
  for (let changed = true; changed;) {
    changed = false;
    const chain = layerChain(model);
    for (const pair of prunablePairs(chain)) {
      const entry = chain[pair.index]!;
      const key = entry.module instanceof GatedUnits ? `${entry.path}.layer.weight` : `${entry.path}.weight`;
      const weight = get(key);
      if (!weight) throw new PruneError(`shapeLike: the state dict has no '${key}'`);
      const units = unitsOf(innerLayer(entry.module)!);
      const target = weight.shape[0]!;
      if (!Number.isInteger(target) || target < 1 || target > units) {
        throw new PruneError(`shapeLike: '${key}' has ${target} output units, the model's layer has ${units} (a pruned checkpoint can only be narrower)`);
      }
      if (target === units) continue;
      removeUnits(model, chain, pair, Array.from({ length: target }, (_, i) => i));
      changed = true;
      break;
    }
  }
  return model;
}
