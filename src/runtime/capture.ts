/**
 * What a prepared model's forward actually does, checked before `convert` builds the IntModel
 * from its leaf modules: the IntModel is a graph (DAG) of those leaves, so the forward must be
 * exactly a set of leaf calls wired by tensor identity: each leaf called once, in registration
 * order, each input the model input or an earlier leaf's output, residual sums as `nn.Add`
 * leaves. Any other data flow (a tensor op between or after the modules, a residual add written
 * as a tensor op, a module output never used, a module called twice or never, a subclass of a
 * known module whose forward computes something else) is refused with a `ConvertError` naming
 * what was found.
 *
 * How: every leaf's `forward` (a leaf as `captureLeaves` lists it) is shadowed for one forward
 * pass on a probe batch by an own property that records its input and output tensor objects
 * (identity, not values) and a copy of their data (to see in-place edits). An own `forward` also
 * keeps `forwardChain` from fusing conv → ReLU → max pooling, so every leaf is called as a module.
 * The model's buffers (observer ranges, counters) and parameters (a quantizer that initializes
 * from its first batch, like LSQ's step, writes one) are restored afterwards: the probe leaves no
 * trace in the model.
 */
import type { Module } from '../nn/module.ts';
import { ReLU, ReLU6, Identity } from '../nn/activation.ts';
import { AdaptiveAvgPool2d, AvgPool2d, MaxPool2d } from '../nn/pooling.ts';
import { Flatten } from '../nn/flatten.ts';
import { Dropout } from '../nn/dropout.ts';
import { BatchNorm } from '../nn/batchnorm.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { TypedArray } from '../backend/primitives.ts';
import { noGrad } from '../autograd/engine.ts';
import { keepingIntermediates } from '../autograd/release.ts';
import { QuantConv2d, QuantConvBn2d, QuantLinear } from '../quant/qat/layers.ts';
import { QuantAdd } from '../quant/qat/add.ts';
import { Add } from '../nn/merge.ts';

/** Why `convert` refused a model. */
export type ConvertErrorReason =
  /** model.forward is not the chain of its leaf modules `convert` represents. */
  | 'capture'
  /** With a sample: the IntModel's logits are farther from the model's float32 forward than quantization explains. */
  | 'float32-logits'
  /** With a sample: argmax agreement with the model's float32 forward below `minAgreement`. */
  | 'agreement';

/** A model `convert` cannot turn into an IntModel that computes what its forward computes. */
export class ConvertError extends Error {
  override name = 'ConvertError';
  constructor(readonly reason: ConvertErrorReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A node of the captured graph: one leaf call. */
export interface CapturedNode {
  /** The leaf's name (as `captureLeaves` lists it). */
  readonly name: string;
  readonly module: Module;
  /** Where each input comes from: −1 the model input, k ≥ 0 the output of node k (an earlier node). */
  readonly inputs: readonly number[];
}

/** The graph `captureGraph` found. */
export interface CapturedGraph {
  /** Leaf names in the order forward called them (equal to their registration order). */
  readonly called: readonly string[];
  /** Identity / Dropout leaves forward never called (no-ops in eval mode, so nothing is lost). */
  readonly skipped: readonly string[];
  /** One node per call, in call order (a topological order); the last one's output is the model's result. */
  readonly nodes: readonly CapturedNode[];
}

type TensorForward = (...x: Tensor[]) => Tensor;

/**
 * Classes convert knows, each with the forward convert assumes; a subclass is checked against
 * it (see `checkOverride`). Most derived first.
 */
const KNOWN: readonly (abstract new (...args: never[]) => Module)[] = [
  QuantLinear, QuantConvBn2d, QuantConv2d, QuantAdd, Add, ReLU6, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Identity, Dropout, BatchNorm,
];

/** Leaves that take two tensors (merge modules); every other leaf takes one. */
function arityOf(m: Module): number {
  return m instanceof Add || m instanceof QuantAdd ? 2 : 1;
}

interface Call {
  readonly module: Module;
  /** The forward the module ran (its own, before the recording hook). */
  readonly forward: TensorForward;
  /** Index into `leaves` (the k-th call of a module shared under several names takes its k-th name). */
  leaf: number;
  readonly inputs: readonly Tensor[];
  readonly inputCopies: readonly TypedArray[];
  readonly output: Tensor;
  readonly outputCopy: TypedArray;
}

function label(name: string): string {
  return name === '' ? '<root>' : name;
}

function sameData(a: TypedArray, b: TypedArray): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y && !(Number.isNaN(x) && Number.isNaN(y))) return false;
  }
  return true;
}

/** Index of the last call before `before` that returned `t`, or −1. */
function lastProducer(calls: readonly Call[], t: Tensor, before = calls.length): number {
  for (let k = before - 1; k >= 0; k--) if (calls[k]!.output === t) return k;
  return -1;
}

const ONLY = 'convert captures graphs of module calls only';

function fail(message: string, cause?: unknown): never {
  throw new ConvertError('capture', `convert: ${message}`, cause === undefined ? undefined : { cause });
}

/**
 * Runs `model.forward(probe)` once (no gradient; call it in eval mode) with every leaf of
 * `leaves` (from `captureLeaves(model)`) recorded, and returns the graph of leaf calls: each leaf
 * called once, in registration order (Identity / Dropout may be skipped), each input of each call
 * the model input or an earlier leaf's output object, unmodified, every leaf output used by a
 * later leaf or returned, and the forward returning the last leaf's output unmodified. A merge
 * leaf (`nn.Add` / `QuantAdd`) takes two tensors, every other leaf one. A leaf whose class
 * overrides the forward of the class convert converts it as (e.g. a ReLU subclass) must give the
 * same values as that class's forward on its captured input (relative 1e-5). Throws
 * `ConvertError` (reason 'capture') naming the first deviation. The model's buffers and
 * parameters are restored afterwards.
 */
export function captureGraph(model: Module, leaves: readonly (readonly [string, Module])[], probe: Tensor): CapturedGraph {
  const byModule = new Map<Module, number[]>();
  leaves.forEach(([, m], i) => {
    const list = byModule.get(m);
    if (list) list.push(i);
    else byModule.set(m, [i]);
  });
  const calls: Call[] = [];
  const originals = new Map<Module, { own: PropertyDescriptor | undefined; forward: TensorForward }>();
  // Parameters too: a quantizer that initializes from its first batch (LSQ's step) writes a parameter.
  const buffers = [...model.namedBuffers(), ...model.namedParameters()].map(([, t]) => [t, t.data.slice()] as const);
  const wasTraining = model.training;
  let result: unknown;
  try {
    for (const m of byModule.keys()) {
      const own = Object.getOwnPropertyDescriptor(m, 'forward');
      const forward = m.forward as TensorForward;
      originals.set(m, { own, forward });
      const arity = arityOf(m);
      const hook = (...args: unknown[]): Tensor => {
        const name = leaves[byModule.get(m)![0]!]![0];
        if (args.length !== arity || !args.every((a) => a instanceof Tensor)) {
          fail(`model.forward calls '${label(name)}' (${m.constructor.name}) with ${args.length} argument(s), not ${arity === 1 ? 'one tensor' : `${arity} tensors`}: ${ONLY}`);
        }
        const inputs = args as Tensor[];
        const inputCopies = inputs.map((x) => x.data.slice());
        const y: unknown = forward.call(m, ...inputs);
        if (!(y instanceof Tensor)) fail(`'${label(name)}' (${m.constructor.name}) returned ${typeof y}, not a tensor: ${ONLY}`);
        calls.push({ module: m, forward, leaf: -1, inputs, inputCopies, output: y, outputCopy: y.data.slice() });
        return y;
      };
      Object.defineProperty(m, 'forward', { configurable: true, writable: true, value: hook });
    }
    model.eval();
    const forward = model.forward as (x: Tensor) => unknown;
    try {
      // Intermediates stay alive: the calls recorded hold them, and a reused buffer would look like an in-place edit.
      result = keepingIntermediates(() => noGrad(() => forward.call(model, probe)));
    } catch (error) {
      if (error instanceof ConvertError) throw error;
      fail(`model.forward failed on a probe batch [${probe.shape.join(', ')}]: ${(error as Error).message}`, error);
    }
    return checkGraph(leaves, byModule, calls, probe, result);
  } finally {
    for (const [m, { own }] of originals) {
      if (own) Object.defineProperty(m, 'forward', own);
      else Reflect.deleteProperty(m, 'forward');
    }
    for (const [t, copy] of buffers) t.data.set(copy);
    model.train(wasTraining);
  }
}

function checkGraph(leaves: readonly (readonly [string, Module])[], byModule: Map<Module, number[]>, calls: Call[], probe: Tensor, result: unknown): CapturedGraph {
  const nameOf = (i: number): string => `'${label(leaves[i]![0])}'`;
  // Each call takes the next unused name of its module; more calls than names: called twice.
  const used = new Map<Module, number>();
  for (const call of calls) {
    const k = used.get(call.module) ?? 0;
    const names = byModule.get(call.module)!;
    if (k >= names.length) {
      const count = calls.filter((c) => c.module === call.module).length;
      fail(`model.forward calls ${nameOf(names[0]!)} (${call.module.constructor.name}) ${count} times: ${ONLY}, each module applied once (register a second module for a second use)`);
    }
    call.leaf = names[k]!;
    used.set(call.module, k + 1);
  }
  const calledLeaves = new Set(calls.map((c) => c.leaf));
  const skipped: string[] = [];
  leaves.forEach(([name, m], i) => {
    if (calledLeaves.has(i)) return;
    if (m instanceof Identity || m instanceof Dropout) {
      skipped.push(name);
      return;
    }
    fail(`model.forward never calls ${nameOf(i)} (${m.constructor.name}): ${ONLY}, every module applied once (remove the module, or call it)`);
  });
  for (let k = 1; k < calls.length; k++) {
    const a = calls[k - 1]!.leaf;
    const b = calls[k]!.leaf;
    if (b < a) fail(`model.forward calls ${nameOf(b)} after ${nameOf(a)}, but ${nameOf(b)} is registered first: ${ONLY}, in registration order (register the modules in the order forward applies them)`);
  }
  // Data flow: every input is the model input or an earlier call's output, unmodified.
  const nodes: CapturedNode[] = [];
  const consumed = new Set<number>();
  for (let k = 0; k < calls.length; k++) {
    const call = calls[k]!;
    const prev = k > 0 ? calls[k - 1]! : null;
    const here = nameOf(call.leaf);
    const sources: number[] = [];
    call.inputs.forEach((x, i) => {
      const which = call.inputs.length > 1 ? `input ${i + 1} of ${here}` : `the input of ${here}`;
      const producer = lastProducer(calls, x, k);
      if (producer >= 0) {
        if (!sameData(calls[producer]!.outputCopy, call.inputCopies[i]!)) fail(`model.forward modifies the output of ${nameOf(calls[producer]!.leaf)} in place before ${here} takes it: ${ONLY}`);
        sources.push(producer);
        consumed.add(producer);
        return;
      }
      if (x === probe) {
        sources.push(-1);
        return;
      }
      if (!prev) fail(`model.forward applies operations outside its modules before ${here} (${which} is not the model input): ${ONLY}`);
      fail(`model.forward applies operations outside its modules between ${nameOf(prev.leaf)} and ${here} (${which} is not the output of ${nameOf(prev.leaf)} or of any other module, nor the model input: a tensor op, a functional call, a residual add written as a tensor op instead of an nn.Add module, or an unregistered module): ${ONLY}`);
    });
    nodes.push({ name: leaves[call.leaf]![0], module: call.module, inputs: sources });
  }
  const last = calls[calls.length - 1];
  if (!(result instanceof Tensor)) fail(`model.forward returned ${typeof result}, not a tensor: ${ONLY}`);
  if (!last) {
    if (result !== probe) fail(`model.forward calls none of its modules and does not return its input: ${ONLY}`);
  } else if (result !== last.output) {
    const earlier = lastProducer(calls, result);
    if (earlier >= 0) fail(`model.forward returns the output of ${nameOf(calls[earlier]!.leaf)}, not of ${nameOf(last.leaf)}, the last module it calls: ${ONLY}`);
    fail(`model.forward applies operations outside its modules after ${nameOf(last.leaf)} (its result is not the output of ${nameOf(last.leaf)}): ${ONLY}`);
  } else if (!sameData(last.outputCopy, result.data)) {
    fail(`model.forward modifies the output of ${nameOf(last.leaf)} in place before returning it: ${ONLY}`);
  }
  for (let k = 0; k < calls.length - 1; k++) {
    if (!consumed.has(k)) fail(`the output of ${nameOf(calls[k]!.leaf)} (${calls[k]!.module.constructor.name}) is never used by a later module nor returned: ${ONLY}, every output used (remove the call)`);
  }
  for (const call of calls) checkOverride(call, nameOf(call.leaf));
  return { called: calls.map((c) => leaves[c.leaf]![0]), skipped, nodes };
}

/**
 * A leaf convert converts as class K (the first of KNOWN it is an instance of) whose class
 * overrides K's forward must compute the same on its captured input (ONNX import's Flatten and
 * GlobalAveragePool do; a ReLU subclass that doubles its output does not).
 */
function checkOverride(call: Call, name: string): void {
  const m = call.module;
  const known = KNOWN.find((K) => m instanceof K);
  if (!known) return; // not convertible at all: convert's build names it
  const base = (known.prototype as { forward: TensorForward }).forward;
  if (call.forward === base) return;
  const xs = call.inputCopies.map((copy, i) => new Tensor(copy.slice(), call.inputs[i]!.shape));
  const expected = noGrad(() => base.call(m, ...xs));
  const y = call.output;
  const sameShape = expected.shape.length === y.shape.length && expected.shape.every((d, i) => d === y.shape[i]);
  let diff = sameShape ? 0 : Infinity;
  let scale = 1;
  for (let i = 0; sameShape && i < y.size; i++) {
    diff = Math.max(diff, Math.abs(call.outputCopy[i]! - expected.data[i]!));
    scale = Math.max(scale, Math.abs(expected.data[i]!));
  }
  if (!(diff <= 1e-5 * scale)) {
    const what = sameShape ? `max |Δ| ${diff.toPrecision(3)}` : `shape [${y.shape.join(', ')}] instead of [${expected.shape.join(', ')}]`;
    fail(`${name} (${m.constructor.name}) overrides ${known.name}.forward and computes something else on the probe batch (${what}); convert would convert it as a plain ${known.name}: ${ONLY}`);
  }
}
