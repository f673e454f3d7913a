/**
 * ONNX import: an fp32 ONNX graph becomes a lowbit Module (`OnnxModule`) that evaluates, trains,
 * calibrates and converts like a hand-written one.
 *
 * Steps (each failure is an OnnxError; nothing is built before the checks pass):
 * 1. the default-domain opset must be 11..21;
 * 2. every node's op must have a handler in `ONNX_OPS` (src/onnx/ops.ts) — otherwise one
 *    `OnnxUnsupportedOpsError` lists every unsupported op type with its node count;
 * 3. names are checked (unique initializers, inputs and node outputs; every input defined) and the
 *    nodes sorted topologically (a cycle is an error);
 * 4. nodes whose inputs are all constants (integer initializers, Constant nodes, folded values —
 *    e.g. Shape arithmetic on constants) are folded at import;
 * 5. Conv / Gemm / MatMul with initializer weights become lowbit Conv2d / Linear layers, and
 *    BatchNormalization, LayerNormalization, Relu, Clip(0, 6), pooling, Flatten... their lowbit
 *    layers, each registered under the ONNX node's name in topological order; other nodes run
 *    through their handler (an `OnnxOp` leaf); float initializers not owned by a layer become
 *    parameters of the root module. All of them are trainable.
 *
 * The module starts in eval mode; call `train()` before training it.
 *
 * An Add of two tensors computed at run time becomes an `nn.Add` leaf (a residual sum; operands of
 * different shapes still broadcast, as ONNX Add, outside the leaf).
 *
 * prepareQat / calibrate find the Conv2d / Linear layers by name. `convert` (src/runtime) captures
 * the graph of leaf calls, so it handles imported graphs built of the layers it knows and their
 * residual sums (LeNet, VGG-like CNNs, MLPs, ResNets); a graph with ops it does not know between
 * the layers is refused by convert with an error naming the module.
 */
import { Module } from '../nn/module.ts';
import { Conv2d } from '../nn/conv.ts';
import { BatchNorm2d } from '../nn/batchnorm.ts';
import { Add } from '../nn/merge.ts';
import { Tensor } from '../tensor/index.ts';
import {
  OnnxError,
  decodeModel,
  readOnnx,
  type OnnxGraph,
  type OnnxModel,
  type OnnxNode,
  type ReadOnnxOptions,
} from './proto.ts';
import { ONNX_OPS, shapeOutput, type BuildContext, type NodeContext, type OpHandler } from './ops.ts';
import { Attributes, IntValue, MAX_FOLD_ELEMENTS, MAX_VALUE_ELEMENTS, isIntType, valueFromTensor, type OnnxValue } from './values.ts';

/** Default-domain opsets the importer accepts. */
export const MIN_ONNX_OPSET = 11;
export const MAX_ONNX_OPSET = 21;

/** Import refused because of op types without a handler: `ops` maps each (domain:)type to its node count. */
export class OnnxUnsupportedOpsError extends OnnxError {
  override name = 'OnnxUnsupportedOpsError';
  readonly ops: Readonly<Record<string, number>>;
  constructor(ops: Record<string, number>) {
    const list = Object.entries(ops).map(([op, n]) => `${op} ×${n}`).join(', ');
    const total = Object.values(ops).reduce((a, b) => a + b, 0);
    super('unsupported-op', `unsupported ONNX ops (${total} node${total === 1 ? '' : 's'}): ${list}`);
    this.ops = ops;
  }
}

/** Options of `importOnnx`. */
export interface ImportOnnxOptions extends ReadOnnxOptions {
  /** Folder for external data when importing bytes (a path import uses the file's folder). */
  baseDir?: string;
}

/** A node that runs through its ONNX handler (no lowbit layer of its own). */
export class OnnxOp extends Module {
  constructor(readonly opType: string, private readonly handler: OpHandler, private readonly context: NodeContext) {
    super();
  }

  /** Outputs of the op from its inputs (absent optional inputs undefined). */
  forward(inputs: readonly (OnnxValue | undefined)[]): OnnxValue[] {
    return this.handler.run(inputs, this.context);
  }

  override extraRepr(): string {
    return this.opType;
  }
}

type Step =
  | { kind: 'layer'; module: string; input: string; output: string }
  | { kind: 'op'; module: string; inputs: string[]; outputs: string[] }
  /** An Add of two runtime tensors as an `nn.Add` leaf (a residual sum convert can take). */
  | { kind: 'merge'; module: string; inputs: [string, string]; output: string; fallback: OnnxOp };

interface GraphInput {
  readonly name: string;
  readonly integer: boolean;
  /** Declared dims: a number for a fixed size, null for a symbolic or unknown one. */
  readonly dims: readonly (number | null)[] | null;
}

/**
 * An imported ONNX graph as a lowbit Module. `forward(x)` runs a one-input, one-output graph;
 * `run({name: value})` any graph. Layers are children named after their ONNX nodes.
 */
export class OnnxModule extends Module {
  /** Runtime inputs (graph inputs that are not initializers), in graph order. */
  readonly inputs: readonly GraphInput[];
  /** Graph output names. */
  readonly outputNames: readonly string[];
  /** Default-domain opset of the model. */
  readonly opset: number;
  /** ONNX node name -> child module name. */
  readonly nodeModules: ReadonlyMap<string, string>;
  private readonly steps: readonly Step[];
  private readonly constants: ReadonlyMap<string, OnnxValue>;
  private readonly rootParams: ReadonlyMap<string, Tensor>;
  private readonly pairs: readonly [string, string][];

  /** @internal Built by `importOnnx`. */
  constructor(parts: {
    inputs: GraphInput[];
    outputNames: string[];
    opset: number;
    steps: Step[];
    constants: Map<string, OnnxValue>;
    modules: [string, Module][];
    params: [string, string, Tensor][];
    nodeModules: Map<string, string>;
    pairs: [string, string][];
  }) {
    super();
    this.inputs = parts.inputs;
    this.outputNames = parts.outputNames;
    this.opset = parts.opset;
    this.steps = parts.steps;
    this.constants = parts.constants;
    this.nodeModules = parts.nodeModules;
    this.pairs = parts.pairs;
    for (const [name, module] of parts.modules) this.registerModule(name, module);
    const rootParams = new Map<string, Tensor>();
    for (const [valueName, paramName, t] of parts.params) rootParams.set(valueName, this.registerParameter(paramName, t));
    this.rootParams = rootParams;
  }

  /** Conv2d -> BatchNorm pairs (child names) for `prepareQat(..., { fusePairs })` / calibrate's `prepare`. */
  convBnPairs(): [string, string][] {
    return this.pairs.map(([a, b]) => [a, b]);
  }

  /** Runs the graph on named inputs; returns every graph output by name. */
  run(feeds: Readonly<Record<string, OnnxValue>>): Record<string, OnnxValue> {
    const values = new Map<string, OnnxValue>();
    for (const input of this.inputs) {
      const v = feeds[input.name];
      if (v === undefined) throw new OnnxError('bad-input', `missing graph input '${input.name}'`);
      values.set(input.name, this.checkInput(input, v));
    }
    const lookup = (name: string): OnnxValue | undefined => {
      if (name === '') return undefined;
      const v = values.get(name) ?? this.constants.get(name) ?? this.rootParams.get(name);
      if (v === undefined) throw new OnnxError('bad-graph', `value '${name}' is not available`);
      return v;
    };
    for (const step of this.steps) {
      const module = this.getSubmodule(step.module);
      if (step.kind === 'layer') {
        const x = lookup(step.input);
        if (!(x instanceof Tensor)) throw new OnnxError('bad-graph', `layer '${step.module}' needs a float tensor input`);
        const y = (module as unknown as { forward(t: Tensor): Tensor }).forward(x);
        values.set(step.output, y);
        continue;
      }
      if (step.kind === 'merge') {
        const a = lookup(step.inputs[0]);
        const b = lookup(step.inputs[1]);
        // Same-shape float tensors through the module (nn.Add, or the QuantAdd prepareQat puts in its
        // place); anything else (broadcasting, integer values) as ONNX Add computes it.
        const same = a instanceof Tensor && b instanceof Tensor && a.rank === b.rank && a.shape.every((d, i) => d === b.shape[i]);
        const y = same
          ? (module as unknown as { forward(x: Tensor, y: Tensor): Tensor }).forward(a, b)
          : step.fallback.forward([a, b])[0]!;
        values.set(step.output, y);
        continue;
      }
      if (!(module instanceof OnnxOp)) throw new OnnxError('bad-graph', `module '${step.module}' was replaced by a ${module.constructor.name}; only layer nodes can be swapped`);
      const outs = module.forward(step.inputs.map(lookup));
      step.outputs.forEach((name, i) => {
        if (name === '') return;
        const v = outs[i];
        if (v === undefined) throw new OnnxError('bad-graph', `node '${step.module}' produced no output ${i}`);
        values.set(name, v);
      });
    }
    const out: Record<string, OnnxValue> = {};
    for (const name of this.outputNames) out[name] = lookup(name)!;
    return out;
  }

  /** x -> the graph's only output (the graph must have one runtime input and one output). */
  forward(x: Tensor): Tensor {
    if (this.inputs.length !== 1 || this.outputNames.length !== 1) {
      throw new OnnxError('bad-input', `forward(x) needs a graph with one input and one output (this one has ${this.inputs.length} and ${this.outputNames.length}); use run()`);
    }
    const input = this.inputs[0]!;
    const feed: OnnxValue = input.integer ? new IntValue(x.shape, Array.from(x.data)) : x;
    const y = this.run({ [input.name]: feed })[this.outputNames[0]!]!;
    return y instanceof Tensor ? y : new Tensor(Float64Array.from(y.data), y.shape);
  }

  private checkInput(input: GraphInput, v: OnnxValue): OnnxValue {
    if (input.integer !== v instanceof IntValue) {
      throw new OnnxError('bad-input', `graph input '${input.name}' expects ${input.integer ? 'integer' : 'float'} data`);
    }
    if (v instanceof Tensor && v.dtype !== 'float32') throw new OnnxError('bad-input', `graph input '${input.name}' expects float32, got ${v.dtype}`);
    const dims = input.dims;
    if (dims && (dims.length !== v.rank || dims.some((d, i) => d !== null && d !== v.shape[i]))) {
      throw new OnnxError('bad-input', `graph input '${input.name}' expects shape [${dims.map((d) => d ?? '?').join(', ')}], got [${v.shape.join(', ')}]`);
    }
    return v;
  }

  override extraRepr(): string {
    return `opset=${this.opset}, inputs=[${this.inputs.map((i) => i.name).join(', ')}], outputs=[${this.outputNames.join(', ')}]`;
  }
}

/** The default-domain opset version of a model (throws OnnxError outside 11..21). */
export function defaultOpset(model: OnnxModel): number {
  const entries = (model.opsetImport ?? []).filter((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx');
  if (entries.length === 0) throw new OnnxError('unsupported-opset', 'the model imports no default-domain (ai.onnx) opset');
  if (entries.length > 1) throw new OnnxError('bad-model', 'the model imports the default-domain opset more than once');
  const v = entries[0]!.version ?? 0;
  if (!(v >= MIN_ONNX_OPSET && v <= MAX_ONNX_OPSET)) {
    throw new OnnxError('unsupported-opset', `opset ${v} is not supported (supported: ${MIN_ONNX_OPSET} to ${MAX_ONNX_OPSET})`);
  }
  return v;
}

/** Op types of `graph` without a handler at `opset`, with node counts ({} when all are supported). */
export function unsupportedOps(graph: OnnxGraph, opset: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const node of graph.node ?? []) {
    const domain = node.domain ?? '';
    const type = node.opType ?? '';
    const handler = domain === '' || domain === 'ai.onnx' ? ONNX_OPS.get(type) : undefined;
    if (handler && (handler.since ?? 1) <= opset) continue;
    const key = `${domain === '' || domain === 'ai.onnx' ? '' : `${domain}:`}${type || '<empty op_type>'}${handler ? ` (needs opset ${handler.since})` : ''}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

/**
 * Imports an fp32 ONNX model (a decoded model, a .onnx path, or its bytes) as an `OnnxModule`.
 * Throws OnnxError (OnnxUnsupportedOpsError listing every unsupported op).
 */
export function importOnnx(source: OnnxModel | string | Uint8Array, options: ImportOnnxOptions = {}): OnnxModule {
  const model = typeof source === 'string'
    ? readOnnx(source, options)
    : source instanceof Uint8Array
      ? decodeModel(source, options)
      : source;
  try {
    return build(model);
  } catch (e) {
    if (e instanceof OnnxError) throw e;
    throw new OnnxError('bad-model', `cannot import the ONNX model: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

function sanitize(name: string): string {
  const s = name.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 120);
  return s === '' ? '_' : s;
}

function build(model: OnnxModel): OnnxModule {
  const graph = model.graph;
  if (!graph) throw new OnnxError('bad-model', 'the model has no graph');
  const opset = defaultOpset(model);
  const unsupported = unsupportedOps(graph, opset);
  if (Object.keys(unsupported).length > 0) throw new OnnxUnsupportedOpsError(unsupported);

  // ---- names
  const initializers = new Map<string, OnnxValue>();
  for (const t of graph.initializer ?? []) {
    const name = t.name ?? '';
    if (name === '') throw new OnnxError('bad-graph', 'an initializer has no name');
    if (initializers.has(name)) throw new OnnxError('bad-graph', `initializer '${name}' defined twice`);
    initializers.set(name, valueFromTensor(t));
  }
  if ((graph.sparseInitializer ?? []).length > 0) throw new OnnxError('bad-graph', 'sparse initializers are not supported');
  const inputs: GraphInput[] = [];
  const inputNames = new Set<string>();
  const defined = new Set<string>(initializers.keys());
  for (const vi of graph.input ?? []) {
    const name = vi.name ?? '';
    if (name === '') throw new OnnxError('bad-graph', 'a graph input has no name');
    if (inputNames.has(name)) throw new OnnxError('bad-graph', `graph input '${name}' listed twice`);
    inputNames.add(name);
    if (initializers.has(name)) continue; // IR < 4 lists initializers as inputs too
    const tensorType = vi.type?.tensorType;
    if (!tensorType) throw new OnnxError('bad-graph', `graph input '${name}' is not a tensor`);
    const elem = tensorType.elemType ?? 0;
    if (elem !== 1 && !isIntType(elem)) throw new OnnxError('unsupported-data-type', `graph input '${name}' has element type ${elem}; float32 or integer inputs only`);
    const dims = tensorType.shape ? (tensorType.shape.dim ?? []).map((d) => (d.dimValue !== undefined && Number.isSafeInteger(d.dimValue) && d.dimValue >= 0 && d.dimParam === undefined ? d.dimValue : null)) : null;
    inputs.push({ name, integer: elem !== 1, dims });
    defined.add(name);
  }
  // Fully static shapes declared for graph inputs and value_info entries.
  const staticShapes = new Map<string, number[]>();
  for (const vi of [...(graph.input ?? []), ...(graph.valueInfo ?? [])]) {
    const dims = vi.type?.tensorType?.shape?.dim;
    if (!vi.name || !dims || initializers.has(vi.name)) continue;
    const values = dims.map((d) => (d.dimParam === undefined && d.dimValue !== undefined && Number.isSafeInteger(d.dimValue) && d.dimValue >= 0 ? d.dimValue : -1));
    if (values.every((d) => d >= 0) && values.length <= 32) staticShapes.set(vi.name, values);
  }
  const nodes = graph.node ?? [];
  const producer = new Map<string, number>();
  nodes.forEach((node, i) => {
    for (const out of node.output ?? []) {
      if (out === '') continue;
      if (defined.has(out) || producer.has(out)) throw new OnnxError('bad-graph', `value '${out}' is defined more than once`);
      producer.set(out, i);
    }
  });
  const consumers = new Map<string, number>();
  nodes.forEach((node) => {
    for (const name of node.input ?? []) {
      if (name === '') continue;
      if (!defined.has(name) && !producer.has(name)) throw new OnnxError('bad-graph', `node '${node.name ?? ''}' (${node.opType}) reads undefined value '${name}'`);
      consumers.set(name, (consumers.get(name) ?? 0) + 1);
    }
  });
  const outputNames = (graph.output ?? []).map((o) => o.name ?? '');
  for (const name of outputNames) {
    if (!defined.has(name) && !producer.has(name)) throw new OnnxError('bad-graph', `graph output '${name}' is never computed`);
  }
  if (new Set(outputNames).size !== outputNames.length) throw new OnnxError('bad-graph', 'a graph output is listed twice');
  const graphOutputs = new Set(outputNames);

  // ---- topological order (Kahn; stable for already sorted graphs)
  const order = topologicalOrder(nodes, producer);

  // ---- fold, map to layers, or run by handler
  const constants = new Map<string, OnnxValue>();
  const floatInits = new Map<string, Tensor>();
  for (const [name, v] of initializers) {
    if (v instanceof Tensor) floatInits.set(name, v);
    else constants.set(name, v);
  }
  const owned = new Set<string>();
  const used = new Set<string>();
  const nextSuffix = new Map<string, number>();
  const uniqueName = (base: string): string => {
    const clean = sanitize(base);
    let name = clean;
    for (let k = nextSuffix.get(clean) ?? 2; used.has(name); k++) {
      name = `${clean}_${k}`;
      nextSuffix.set(clean, k + 1);
    }
    used.add(name);
    return name;
  };
  const steps: Step[] = [];
  const modules: [string, Module][] = [];
  const nodeModules = new Map<string, string>();
  const layerOf = new Map<string, { module: string; instance: Module }>(); // value name -> layer producing it
  // Folding may create values larger than its inputs (Concat, Pad, Gather...): all folded values
  // together stay within MAX_FOLD_ELEMENTS plus the size of the initializers and Constant nodes.
  let foldBudget = MAX_FOLD_ELEMENTS + [...initializers.values()].reduce((n, v) => n + v.size, 0);

  for (const index of order) {
    const node = nodes[index]!;
    const opType = node.opType ?? '';
    const handler = ONNX_OPS.get(opType)!;
    const label = node.name || `${opType}_${index}`;
    const where = `node '${label}' (${opType})`;
    const attrs = new Attributes(node, where);
    const nodeInputs = node.input ?? [];
    const nodeOutputs = node.output ?? [];
    const context = (maxElements: number): NodeContext => ({ where, opType, opset, attrs, maxElements });

    // Shape of a value whose shape is declared static (graph input or value_info) folds too.
    const known = opType === 'Shape' && nodeInputs.length === 1 ? staticShapes.get(nodeInputs[0]!) : undefined;
    if (known && (nodeOutputs[0] ?? '') !== '') {
      const v = shapeOutput(known, context(MAX_FOLD_ELEMENTS));
      constants.set(nodeOutputs[0]!, v);
      foldBudget -= v.size;
      continue;
    }
    const foldable = nodeInputs.every((n) => n === '' || constants.has(n));
    if (foldable) {
      if (foldBudget <= 0) throw new OnnxError('too-large', `${where}: constant folding exceeds its budget of ${MAX_FOLD_ELEMENTS} elements beyond the model's own data`);
      const outs = handler.run(nodeInputs.map((n) => (n === '' ? undefined : constants.get(n))), context(foldBudget));
      nodeOutputs.forEach((name, i) => {
        if (name === '') return;
        const v = outs[i];
        if (v === undefined) throw new OnnxError('bad-graph', `${where}: has no output ${i}`);
        // A Constant's data is in the file: it adds to the budget what it holds (so that, e.g., a
        // Transpose of constant weights folds); every other folded value spends its size.
        foldBudget += opType === 'Constant' ? v.size : -v.size;
        constants.set(name, v);
      });
      continue;
    }

    const isUsed = (name: string | undefined): boolean => name !== undefined && name !== '' && ((consumers.get(name) ?? 0) > 0 || graphOutputs.has(name));
    const buildContext: BuildContext = {
      ...context(MAX_VALUE_ELEMENTS),
      inputCount: nodeInputs.length,
      hasInput: (i) => (nodeInputs[i] ?? '') !== '',
      constant: (i) => {
        const n = nodeInputs[i] ?? '';
        return n === '' ? undefined : (constants.get(n) ?? floatInits.get(n));
      },
      ownable: (i) => {
        const n = nodeInputs[i] ?? '';
        const t = floatInits.get(n);
        if (!t || owned.has(n) || graphOutputs.has(n) || consumers.get(n) !== 1) return undefined;
        return t;
      },
      outputUsed: (i) => isUsed(nodeOutputs[i]),
    };
    const moduleName = uniqueName(label);
    nodeModules.set(label, moduleName);
    // An Add of two values computed at run time (a residual sum): an nn.Add leaf, so that
    // prepareQat quantizes it (QuantAdd) and convert maps it to the integer add node.
    const runtime = (n: string | undefined): n is string => n !== undefined && n !== '' && !constants.has(n) && !floatInits.has(n);
    if (opType === 'Add' && nodeInputs.length === 2 && runtime(nodeInputs[0]) && runtime(nodeInputs[1]) && (nodeOutputs[0] ?? '') !== '') {
      modules.push([moduleName, new Add()]);
      // The fallback is not registered: not a leaf of the module tree.
      steps.push({ kind: 'merge', module: moduleName, inputs: [nodeInputs[0], nodeInputs[1]], output: nodeOutputs[0]!, fallback: new OnnxOp(opType, handler, context(MAX_VALUE_ELEMENTS)) });
      continue;
    }
    const plan = handler.build?.(buildContext);
    if (plan) {
      for (const i of plan.owns) owned.add(nodeInputs[i]!);
      const inputName = nodeInputs[plan.input] ?? '';
      if (inputName === '') throw new OnnxError('bad-graph', `${where}: input ${plan.input} is required`);
      const output = nodeOutputs[0] ?? '';
      if (nodeOutputs.slice(1).some((o) => isUsed(o))) throw new OnnxError('bad-graph', `${where}: only its first output is supported`);
      modules.push([moduleName, plan.module]);
      steps.push({ kind: 'layer', module: moduleName, input: inputName, output });
      layerOf.set(output, { module: moduleName, instance: plan.module });
      continue;
    }
    modules.push([moduleName, new OnnxOp(opType, handler, context(MAX_VALUE_ELEMENTS))]);
    steps.push({ kind: 'op', module: moduleName, inputs: [...nodeInputs], outputs: [...nodeOutputs] });
  }

  // Float initializers read at run time and not owned by a layer: parameters of the root.
  const params: [string, string, Tensor][] = [];
  const needed = new Set<string>();
  for (const step of steps) {
    if (step.kind === 'layer') needed.add(step.input);
    else for (const n of step.inputs) needed.add(n);
  }
  for (const n of outputNames) needed.add(n);
  for (const [name, t] of floatInits) {
    if (!needed.has(name) || owned.has(name)) continue;
    params.push([name, uniqueName(`init_${name}`), t]);
  }
  for (const [name, t] of floatInits) if (!needed.has(name)) constants.set(name, t);

  // Conv2d -> BatchNorm pairs where the BN is the conv output's only reader.
  const pairs: [string, string][] = [];
  const moduleByName = new Map(modules);
  for (const step of steps) {
    if (step.kind !== 'layer') continue;
    const source = layerOf.get(step.input);
    const module = moduleByName.get(step.module)!;
    if (source && source.instance instanceof Conv2d && module instanceof BatchNorm2d && consumers.get(step.input) === 1 && !graphOutputs.has(step.input)) {
      pairs.push([source.module, step.module]);
    }
  }

  // Graph outputs that are constants still come out of run().
  // An imported graph is an inference graph: start in eval mode (BatchNorm uses its running stats).
  return new OnnxModule({ inputs, outputNames, opset, steps, constants, modules, params, nodeModules, pairs }).eval();
}

function topologicalOrder(nodes: readonly OnnxNode[], producer: ReadonlyMap<string, number>): number[] {
  const pending = new Array<number>(nodes.length).fill(0);
  const readers: number[][] = nodes.map(() => []);
  nodes.forEach((node, i) => {
    const sources = new Set<number>();
    for (const name of node.input ?? []) {
      const p = producer.get(name);
      if (p !== undefined) sources.add(p);
    }
    pending[i] = sources.size;
    for (const p of sources) readers[p]!.push(i);
  });
  // The file's order when it is already topological (as ONNX requires), else Kahn's FIFO order.
  if (pending.every((_, i) => (nodes[i]!.input ?? []).every((name) => (producer.get(name) ?? -1) < i))) return nodes.map((_, i) => i);
  const queue: number[] = [];
  for (let i = 0; i < nodes.length; i++) if (pending[i] === 0) queue.push(i);
  const order: number[] = [];
  for (let head = 0; head < queue.length; head++) {
    const i = queue[head]!;
    order.push(i);
    for (const r of readers[i]!) if (--pending[r]! === 0) queue.push(r);
  }
  if (order.length !== nodes.length) {
    const stuck = nodes.map((n, i) => (pending[i]! > 0 ? n.name || `${n.opType}_${i}` : '')).filter((s) => s !== '');
    throw new OnnxError('bad-graph', `the graph has a cycle through ${stuck.length} node(s): ${stuck.slice(0, 5).join(', ')}${stuck.length > 5 ? ', …' : ''}`);
  }
  return order;
}
