/**
 * IntModel: an integer-only inference graph. A list of JSON-serialisable nodes plus named tensors
 * (packed weights, int32 biases, requantization multipliers). Activations flow between nodes as
 * integers in the input quantization domain of the NEXT quantized layer; the last layer
 * dequantizes its int32 accumulator to float logits.
 *
 * Per layer (conv2d / linear), with x the integer input, z_x its zero point, w the integer weight:
 *   acc[c] = Σ_k (x_k − z_x)·w[c,k]                       (int32; padding is x = z_x, i.e. 0 centred)
 *   requantize:  q = clamp(round((acc·2^k + bias[c])·M0[c]·2^−n[c]) + z_out, lo, hi)
 *                (one rounding of the exact product, half away from zero; ReLU/ReLU6 fused as
 *                lo/hi; bias[c] = round(B[c]/(s_in·s_w[c])·2^k), int32, where k ≥ 0 is chosen per
 *                layer so that |acc·2^k + bias| < 2^37 — k = 0 is the textbook int32 bias, a
 *                larger k keeps the bias's rounding error far below an output LSB when
 *                s_in·s_w/s_out is large, as in 4-bit layers)
 *   sign:        b = +1 if d[c]·acc ≥ t[c] else −1      (next layer binarizes its input)
 *   dequantize:  y = acc·S[c] + B[c] (float logits, S = s_in·s_w[·BN scale], B the float bias)
 * Binary weights with sign inputs use XNOR-popcount (K − 2·popcount(a xor w)) when the layer has
 * no padding; everything else uses the centred int32 GEMM.
 *
 * Per-group weights (graph version 3, a linear node with `weightGroupSize` G): row c has one weight
 * scale s[c,g] per group g of G consecutive inputs. With s_max[c] = max_g s[c,g], R = `groupShift`
 * and the int32 relative multipliers r[c,g] = round(s[c,g]/s_max[c]·2^R) ∈ [0, 2^R] (tensor
 * `groupMultipliers`, [O, K/G]):
 *   acc[c,g] = Σ_{k∈g} (x_k − z_x)·w[c,k]                  (int32 per group)
 *   A[c]     = Σ_g r[c,g]·acc[c,g]                           (int64, exact)
 * and A[c] takes the place of acc[c] in the output stage above, the layer's accumulator scale being
 * s_in·s_max[c]·2^−R: the requantize multiplier M0·2^−n ≈ s_in·s_max·2^−R/s_out (2^−R folded into
 * n), bias[c] = round(B[c]/(s_in·s_max[c]·2^−R)·2^k), dequantize S = s_in·s_max·2^−R. Bound (checked
 * on load): |A·2^k + bias| ≤ K·max|x − z_x|·2^(b_w−1)·2^(R+k) + 2^31 < 2^53, so A, the sum and
 * every partial sum are exact in int64 and in float64 (convert picks R ≤ 16, smaller when the
 * bound needs it, and k as for any layer). A sign output is not allowed. The
 * only difference from the fake-quant weights q·s[c,g] is the rounding of r: a relative error of at
 * most 2^−(R+1)·s_max/s[c,g] on group g's contribution.
 *
 * Graph shape. Version 1: a chain, each node takes the previous node's output (the first, a
 * quantize node, the model input). Version 2: a DAG, every node lists the names of the earlier
 * nodes it takes in `inputs` (a quantize node lists none and takes the model input); the last
 * node's output is the model's. Version 2 adds the integer `add` node (a residual sum):
 *   add:  q = clamp(z + round(((a − z_a)·M_a + (b − z_b)·M_b)·2^−n), lo, hi)
 *         (one rounding, half away from zero; M_a, M_b int32 with M·2^−n ≈ s_a/s and s_b/s, the
 *         larger one in [2^30, 2^31); a following ReLU is the bound lo = z)
 *   add with `output: 'sign'` (the sum feeds a binary layer's sign input):
 *         q = +1 if (a − z_a)·M_a + (b − z_b)·M_b ≥ 0 else −1
 *         (no rounding, shift, zero point or clamp: M_a : M_b = s_a : s_b, exactly when convert
 *         could represent both scales as int32 multiples of one power of two; sign(0) = +1 as the
 *         fake-quant sign)
 */
import { Tensor } from '../tensor/tensor.ts';
import { packBinaryRows, packBits, unpackBinaryRows, unpackBits } from '../quant/core/packing.ts';
import { requantizeScalar } from './requantize.ts';
import { roundHalfEven } from '../backend/reference/elementwise.ts';
import { avgPoolInt, gemmInt32, im2col, layerOutput, maxPoolInt, type ConvGeometry } from './ops.ts';
import { validateIntGraph, type IntGraphSize } from './validate.ts';
import { gemmBinary, gemmInt8, nativeIntAddon, packInt8Weights, type PackedWeights } from './kernels/index.ts';
import type { NativeIntPlan } from '../backend/native/addon.ts';
import { compileNativePlan } from './native-plan.ts';
import { FastLayer, Scratch, type TsKernels } from './ts-kernels/layer.ts';
import { ResidentExecutor } from './ts-kernels/resident.ts';
import { addInts, addIntsWasm } from './ts-kernels/add.ts';
import { maxPoolValues, quantizeValues } from './ts-kernels/elementwise.ts';
import type { AgreementReport } from './convert.ts';

/** Logical dtypes of stored tensors (packed ones hold bytes). */
export type IntTensorDtype = 'int8' | 'int4' | 'int2' | 'bits' | 'int32' | 'float32';

export interface IntTensor {
  readonly dtype: IntTensorDtype;
  /** Logical shape (elements, not bytes). */
  readonly shape: readonly number[];
  /** Packed bytes for int8/int4/int2/bits, Int32Array for int32, Float32Array for float32. */
  readonly data: Uint8Array | Int32Array | Float32Array;
}

/**
 * A weight tensor of `dtype` packed from integer values [rows, cols] (row-major, cols = the rest of
 * `shape`): the layouts `IntModel.weightValues` unpacks (int8 bytes, int4/int2 packed signed,
 * `bits` = sign rows).
 */
export function packWeightTensor(dtype: IntTensor['dtype'], values: ArrayLike<number>, shape: readonly number[]): IntTensor {
  if (dtype === 'int8') return { dtype, shape, data: new Uint8Array(Int8Array.from(values).buffer) };
  if (dtype === 'int4' || dtype === 'int2') return { dtype, shape, data: packBits(values, dtype === 'int4' ? 4 : 2, true) };
  if (dtype === 'bits') return { dtype, shape, data: packBinaryRows(values, shape[0]!, values.length / shape[0]!) };
  throw new Error(`packWeightTensor: weight dtype ${dtype} is not a packed weight layout`);
}

export type WeightFormat = 'int8' | 'int4' | 'int2' | 'ternary' | 'binary';

export type LayerInput =
  | { readonly mode: 'affine'; readonly scale: number; readonly zeroPoint: number; readonly bits: number; readonly qmin: number; readonly qmax: number }
  | { readonly mode: 'sign'; readonly scale: number };

export type LayerOutput =
  | {
    readonly mode: 'requantize'; readonly bias: string; readonly multiplier: string; readonly shift: string;
    /** k: the bias is stored as round(B/S·2^k) and added to acc·2^k; the shift tensor already includes k. */
    readonly biasShift: number;
    readonly scale: number; readonly zeroPoint: number; readonly lo: number; readonly hi: number;
  }
  | { readonly mode: 'sign'; readonly threshold: string; readonly direction: string }
  | { readonly mode: 'dequantize'; readonly scale: string; readonly bias: string };

export interface LayerNode {
  readonly op: 'conv2d' | 'linear';
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** conv2d only. */
  readonly conv?: ConvGeometry;
  readonly weight: string;
  /** Version 2: the name of the node whose output this layer takes. */
  readonly inputs?: readonly string[];
  readonly weightFormat: WeightFormat;
  readonly weightBits: number;
  readonly input: LayerInput;
  output: LayerOutput;
  /** Name of the BatchNorm folded into the output stage, if any. */
  readonly foldedBatchNorm?: string;
  /**
   * Graph version 3, linear only: G, the inputs per weight group (divides inFeatures); with
   * `groupMultipliers` (int32 [O, inFeatures/G], r[c,g] in [0, 2^groupShift]) and `groupShift` R
   * (see the module comment). Absent: one weight scale per row, as before.
   */
  readonly weightGroupSize?: number;
  readonly groupMultipliers?: string;
  readonly groupShift?: number;
}

/**
 * The integer sum of two values (graph version 2): a in the domain (s_a, z_a), b in (s_b, z_b),
 * the result in (scale, zeroPoint) clamped to [lo, hi] (see the module comment for the formula).
 */
export interface AddNode {
  readonly op: 'add';
  readonly name: string;
  readonly inputs?: readonly string[];
  /** Zero points z_a, z_b of the two inputs. */
  readonly inputZeroPoints: readonly [number, number];
  /** Scales s_a, s_b of the two inputs (documentation and ONNX export; the integers use the multipliers). */
  readonly inputScales: readonly [number, number];
  /** M_a, M_b: int32 with M·2^−shift ≈ s_in/scale. */
  readonly multipliers: readonly [number, number];
  readonly shift: number;
  readonly scale: number;
  readonly zeroPoint: number;
  lo: number;
  hi: number;
  /**
   * 'sign': the node emits ±1, the sign of the sum (+1 at 0), instead of the requantized sum;
   * `shift`, `scale`, `zeroPoint`, `lo`, `hi` are then unused (stored as 0, 1, 0, −1, 1).
   */
  readonly output?: 'sign';
}

/** The node kinds (version 2 adds `inputs` to every node and the `add` node). */
export type IntNode = (
  | { readonly op: 'quantize'; readonly name: string; readonly input: LayerInput }
  | LayerNode
  | AddNode
  /**
   * Pooling. Average pooling: out = z + round(Σ (q − z·2^F) / (count·2^F)), half to even, where
   * F = fracBits (the producing layer kept F extra fractional bits; padded cells count as 0).
   */
  | { readonly op: 'maxpool2d' | 'avgpool2d'; readonly name: string; readonly kernelSize: readonly [number, number]; readonly stride: readonly [number, number]; readonly padding: readonly [number, number]; readonly zeroPoint: number; readonly fracBits?: number }
  | { readonly op: 'adaptiveavgpool2d'; readonly name: string; readonly outputSize: readonly [number, number]; readonly zeroPoint: number; readonly fracBits?: number }
  | { readonly op: 'clamp'; readonly name: string; lo: number | null; hi: number | null }
  | { readonly op: 'flatten'; readonly name: string; readonly startDim: number; readonly endDim: number }
) & {
  /** Version 2: names of the earlier nodes whose outputs this node takes (none for quantize: the model input). */
  readonly inputs?: readonly string[];
};

/** The JSON part of an IntModel. */
export interface IntGraph {
  readonly format: 'lowbit-intmodel';
  /**
   * 1: a chain of nodes; 2: a DAG with explicit node `inputs`; 3: as 2, and linear nodes may have
   * per-group weights (`weightGroupSize`; see the module comment). A reader of versions 1–2
   * refuses 3, so it cannot silently run grouped weights with one scale per row.
   */
  readonly version: 1 | 2 | 3;
  /** Shape of one input sample, e.g. [1, 28, 28]. */
  readonly inputShape: readonly number[];
  readonly nodes: readonly IntNode[];
  readonly metadata?: Record<string, unknown>;
}

export interface LayerSummary {
  readonly name: string;
  readonly op: string;
  /** e.g. 'w8a8', 'w1a1 (xnor)', '-' for non-parametric ops. */
  readonly bits: string;
  readonly params: number;
  readonly packedBytes: number;
}

export interface RunOptions {
  /** Record the integer input of every layer node (name → values and shape). */
  readonly trace?: Map<string, { shape: number[]; data: Int32Array }>;
}

interface Value {
  shape: number[];
  ints: Int32Array | null;
  floats: Float32Array | null;
}

/** Largest activation of one `run` call (elements over the whole batch). */
const MAX_BATCH_ELEMENTS = 2 ** 28;

/** An integer-only inference graph (see the module comment for the arithmetic). */
export class IntModel {
  readonly graph: IntGraph;
  readonly tensors: ReadonlyMap<string, IntTensor>;
  /** Set by `convert` when it verified against the fake-quant model. */
  verification?: AgreementReport;
  private readonly unpacked = new Map<string, Int8Array>();
  private readonly packed = new Map<string, PackedWeights[]>();
  /**
   * GEMM path: true (default) = the kernels of ./kernels for 8-bit-range inputs (native when the
   * addon is loaded; even their TS reference beat the int32 loops: 0.31–0.42 vs 0.55–0.59 s CPU for
   * 256 LeNet-5 images), or, with `tsExecutor` 'fast' (default), the lane-packed GEMM of
   * ./ts-kernels; false = the plain int32 loops of ./ops.ts. All give identical integers.
   */
  useKernels = true;
  /**
   * true (default): `run` uses the native executor (native/intmodel.cc: the whole forward pass in
   * C++, identical logits) when the addon is loaded, `useKernels` is on, no trace is requested
   * and the graph compiles (see native-plan.ts); false: always the TypeScript executor.
   */
  useNative = true;
  /**
   * @internal The TypeScript executor: 'fast' (default: ./ts-kernels, lane-packed double GEMMs,
   * one-multiply requantization, buffers reused) or 'reference' (the original per-element code of
   * this file with the kernels of ./kernels). Both give identical integers and logits; 'fast'
   * applies when `useKernels` is on and runs the layers it cannot reproduce the reference way.
   */
  tsExecutor: 'fast' | 'reference' = 'fast';
  /**
   * @internal GEMM kernels of the 'fast' executor: 'wasm' (default) = WebAssembly SIMD128
   * (./wasm/gemm.ts) when the engine validates it, with every activation resident in wasm memory
   * (./ts-kernels/resident.ts), 'double' = lane-packed doubles. Identical integers.
   */
  tsKernels: TsKernels = 'wasm';
  /** Layers prepared for the fast executor (or why not), by node. */
  private readonly fastLayers = new Map<LayerNode, FastLayer | string>();
  private readonly scratch = new Scratch();
  /** The fast executor with activations in wasm memory (created on first use). */
  private residentExecutor: ResidentExecutor | null = null;
  /** Per-sample largest activation and multiply-accumulates (checked against limits on construction). */
  readonly size: IntGraphSize;
  /** The compiled native plan, or why there is none (undefined until first needed). */
  private nativePlan: { plan: NativeIntPlan; outputSize: number } | string | undefined;

  constructor(graph: IntGraph, tensors: ReadonlyMap<string, IntTensor>) {
    this.graph = graph;
    this.tensors = tensors;
    this.size = validateIntGraph(graph, tensors);
  }

  get nodes(): readonly IntNode[] {
    return this.graph.nodes;
  }

  tensor(name: string): IntTensor {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`IntModel: missing tensor '${name}'`);
    return t;
  }

  private int32(name: string): Int32Array {
    const t = this.tensor(name);
    if (!(t.data instanceof Int32Array)) throw new Error(`IntModel: tensor '${name}' should be int32`);
    return t.data;
  }

  private float32(name: string): Float32Array {
    const t = this.tensor(name);
    if (!(t.data instanceof Float32Array)) throw new Error(`IntModel: tensor '${name}' should be float32`);
    return t.data;
  }

  /** Weight values of a layer as int8 [out, K] (unpacked once and cached). */
  weightValues(node: LayerNode): Int8Array {
    let w = this.unpacked.get(node.weight);
    if (w) return w;
    const t = this.tensor(node.weight);
    const [rows, ...rest] = t.shape;
    const cols = rest.reduce((p, d) => p * d, 1);
    const count = rows! * cols;
    const bytes = t.data as Uint8Array;
    if (t.dtype === 'int8') w = new Int8Array(bytes.buffer, bytes.byteOffset, count).slice();
    else if (t.dtype === 'int4' || t.dtype === 'int2') w = Int8Array.from(unpackBits(bytes, count, t.dtype === 'int4' ? 4 : 2, true));
    else if (t.dtype === 'bits') w = Int8Array.from(unpackBinaryRows(bytes, rows!, cols));
    else throw new Error(`IntModel: weight '${node.weight}' has dtype ${t.dtype}`);
    this.unpacked.set(node.weight, w);
    return w;
  }

  /**
   * Runs `batch` samples (float, already normalised as in training) and returns float logits [batch, classes].
   * A Tensor must have the shape [N, ...inputShape] (N = `batch` when given); a Float32Array holds
   * `batch` samples laid out the same way.
   */
  run(x: Float32Array | Tensor, batch?: number, options: RunOptions = {}): Float32Array {
    let data: Float32Array;
    if (x instanceof Tensor) {
      const expected = [x.shape[0], ...this.graph.inputShape];
      if (x.shape.length !== expected.length || x.shape.some((d, i) => d !== expected[i]) || (batch !== undefined && batch !== x.shape[0])) {
        throw new Error(`IntModel.run: input of shape [${x.shape.join(', ')}] is not [${batch ?? 'N'}, ${this.graph.inputShape.join(', ')}] (samples of the model's input shape)`);
      }
      data = x.data instanceof Float32Array ? x.data : Float32Array.from(x.data as ArrayLike<number>);
      batch ??= x.shape[0]!;
    } else data = x;
    const per = this.graph.inputShape.reduce((p, d) => p * d, 1);
    batch ??= data.length / per;
    if (!Number.isInteger(batch) || batch * per !== data.length) {
      throw new Error(`IntModel.run: ${data.length} values are not ${batch} samples of shape [${this.graph.inputShape.join(', ')}]`);
    }
    if (batch * this.size.maxElements > MAX_BATCH_ELEMENTS) {
      throw new Error(`IntModel.run: ${batch} samples need activations of ${batch * this.size.maxElements} elements (limit ${MAX_BATCH_ELEMENTS}); run fewer samples at a time`);
    }
    const native = !options.trace && this.useNative && this.useKernels ? this.native() : null;
    if (native) {
      const out = new Float32Array(batch * native.plan.outputSize);
      native.addon.intPlanRun!(native.plan.plan, data, batch, out);
      return out;
    }
    const gemm = this.tsExecutor === 'fast' && this.useKernels && this.tsKernels === 'wasm' ? this.scratch.wasm() : null;
    if (gemm) {
      // the wasm kernels with every activation resident in wasm memory (ts-kernels/resident.ts)
      this.residentExecutor ??= new ResidentExecutor({
        graph: this.graph,
        size: this.size,
        fastLayer: (node) => this.fastLayer(node),
        step: (node, v) => this.step(node, v, {}),
        add: (node, a, b) => this.add(node, a, b),
      }, gemm);
      return this.residentExecutor.run(data, batch, options.trace);
    }
    const v = this.runGraph({ shape: [batch, ...this.graph.inputShape], ints: null, floats: data }, options);
    if (!v.floats) throw new Error('IntModel.run: the graph does not end in a dequantizing layer');
    return v.floats;
  }

  /**
   * Every node once, in order, each on the outputs of the nodes it takes (`IntGraphSize.inputRefs`);
   * a value is dropped after its last consumer. Returns the last node's output.
   */
  private runGraph(input: Value, options: RunOptions): Value {
    const nodes = this.graph.nodes;
    const refs = this.size.inputRefs;
    const uses = new Int32Array(nodes.length);
    for (const r of refs) for (const k of r) if (k >= 0) uses[k]!++;
    const values: (Value | null)[] = new Array<Value | null>(nodes.length).fill(null);
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i]!;
      const ins = refs[i]!.map((k) => (k < 0 ? input : values[k]!));
      values[i] = node.op === 'add' ? this.add(node, ins[0]!, ins[1]!) : this.step(node, ins[0]!, options);
      for (const k of refs[i]!) if (k >= 0 && --uses[k]! === 0) values[k] = null;
    }
    return values[nodes.length - 1]!;
  }

  /** The integer add (see `AddNode`): one rounding of the exact sum (BigInt when a product could exceed 2^53). */
  private add(node: AddNode, a: Value, b: Value): Value {
    if (!a.ints || !b.ints) throw new Error(`IntModel: '${node.name}' expects integer inputs`);
    if (a.ints.length !== b.ints.length) throw new Error(`IntModel: '${node.name}' adds [${a.shape.join(', ')}] and [${b.shape.join(', ')}]`);
    const [za, zb] = node.inputZeroPoints;
    const [ma, mb] = node.multipliers;
    const out = new Int32Array(a.ints.length);
    if (node.output === 'sign') {
      signOfSum(a.ints, b.ints, za, zb, ma, mb, out);
      return { shape: a.shape, ints: out, floats: null };
    }
    const { zeroPoint: z, lo, hi, shift } = node;
    if (this.tsExecutor === 'fast') {
      const gemm = this.tsKernels === 'wasm' ? this.scratch.wasm() : null;
      if (gemm) addIntsWasm(gemm, a.ints, b.ints, za, zb, ma, mb, shift, z, lo, hi, out);
      else addInts(a.ints, b.ints, za, zb, ma, mb, shift, z, lo, hi, out);
      return { shape: a.shape, ints: out, floats: null };
    }
    for (let i = 0; i < out.length; i++) {
      const r = addRescaled(a.ints[i]! - za, ma, b.ints[i]! - zb, mb, shift) + z;
      out[i] = r < lo ? lo : r > hi ? hi : r;
    }
    return { shape: a.shape, ints: out, floats: null };
  }

  /** Why this model runs in TypeScript rather than natively, or null when the native executor is used. */
  nativeUnavailableReason(): string | null {
    if (!nativeIntAddon()) return 'the native addon (with the IntModel executor) is not loaded';
    const r = this.compiledPlan();
    return typeof r === 'string' ? r : null;
  }

  private compiledPlan(): { plan: NativeIntPlan; outputSize: number } | string {
    if (this.nativePlan === undefined) {
      const addon = nativeIntAddon();
      const spec = compileNativePlan(this);
      this.nativePlan = typeof spec === 'string' || !addon ? (typeof spec === 'string' ? spec : 'no addon') : { plan: addon.intPlanCreate!(spec.ops), outputSize: spec.outputSize };
    }
    return this.nativePlan;
  }

  private native(): { addon: NonNullable<ReturnType<typeof nativeIntAddon>>; plan: { plan: NativeIntPlan; outputSize: number } } | null {
    const addon = nativeIntAddon();
    if (!addon) return null;
    const plan = this.compiledPlan();
    return typeof plan === 'string' ? null : { addon, plan };
  }

  /**
   * Runs one layer node from integer input `data` of `shape` and the non-layer nodes after it, up
   * to the next layer: its output as the next layer's input integers (or the float logits after
   * the last layer). Used to measure each layer's own error on the fake-quant model's inputs.
   */
  runSegment(layerName: string, data: Int32Array, shape: readonly number[]): { shape: number[]; ints: Int32Array | null; floats: Float32Array | null } {
    const nodes = this.graph.nodes;
    if (this.graph.version !== 1) throw new Error('IntModel.runSegment: the graph is a DAG (version 2); segments are defined for chains only');
    const start = nodes.findIndex((n) => (n.op === 'conv2d' || n.op === 'linear') && n.name === layerName);
    if (start < 0) throw new Error(`IntModel.runSegment: no layer '${layerName}'`);
    let v: Value = { shape: [...shape], ints: data, floats: null };
    for (let i = start; i < nodes.length; i++) {
      const node = nodes[i]!;
      if (i > start && (node.op === 'conv2d' || node.op === 'linear')) break;
      if (node.op === 'add') throw new Error(`IntModel.runSegment: '${node.name}' is an add node (graph version 2)`);
      v = this.step(node, v, {});
    }
    return v;
  }

  private step(node: Exclude<IntNode, AddNode>, v: Value, options: RunOptions): Value {
    switch (node.op) {
      case 'quantize': {
        const x = v.floats;
        if (!x) throw new Error(`IntModel: '${node.name}' expects float input`);
        const out = new Int32Array(x.length);
        const inp = node.input;
        if (inp.mode === 'affine' && this.tsExecutor === 'fast') quantizeValues(x, inp.scale, inp.zeroPoint, inp.qmin, inp.qmax, out);
        else if (inp.mode === 'sign') for (let i = 0; i < x.length; i++) out[i] = x[i]! >= 0 ? 1 : -1;
        else {
          for (let i = 0; i < x.length; i++) {
            const q = roundHalfEven(x[i]! / inp.scale) + inp.zeroPoint;
            out[i] = q < inp.qmin ? inp.qmin : q > inp.qmax ? inp.qmax : q;
          }
        }
        return { shape: v.shape, ints: out, floats: null };
      }
      case 'conv2d':
      case 'linear':
        if (!v.ints) throw new Error(`IntModel: '${node.name}' expects integer input`);
        if (options.trace) options.trace.set(node.name, { shape: [...v.shape], data: v.ints });
        {
          const fast = this.fastLayer(node);
          return fast ? fast.run(v.shape, v.ints, this.scratch, this.tsKernels) : this.layer(node, v.shape, v.ints);
        }
      case 'maxpool2d':
      case 'avgpool2d':
      case 'adaptiveavgpool2d': {
        if (!v.ints) throw new Error(`IntModel: '${node.name}' expects integer input`);
        const [n, c, h, w] = v.shape as [number, number, number, number];
        let k: readonly [number, number];
        let s: readonly [number, number];
        let p: readonly [number, number];
        if (node.op === 'adaptiveavgpool2d') {
          const [oh, ow] = node.outputSize;
          if (h % oh !== 0 || w % ow !== 0) throw new Error(`IntModel: '${node.name}' needs input ${h}x${w} to be a multiple of ${oh}x${ow}`);
          k = [h / oh, w / ow];
          s = k;
          p = [0, 0];
        } else ({ kernelSize: k, stride: s, padding: p } = node);
        const maxPool = this.tsExecutor === 'fast' ? maxPoolValues : maxPoolInt;
        const r = node.op === 'maxpool2d' ? maxPool(v.ints, n, c, h, w, k, s, p) : avgPoolInt(v.ints, n, c, h, w, k, s, p, node.zeroPoint, node.fracBits ?? 0);
        return { shape: [n, c, r.oh, r.ow], ints: r.data, floats: null };
      }
      case 'clamp': {
        const src = v.ints ?? v.floats!;
        const out = v.ints ? new Int32Array(src.length) : new Float32Array(src.length);
        const lo = node.lo ?? -Infinity;
        const hi = node.hi ?? Infinity;
        for (let i = 0; i < src.length; i++) {
          const a = src[i]!;
          out[i] = a < lo ? lo : a > hi ? hi : a;
        }
        return v.ints ? { shape: v.shape, ints: out as Int32Array, floats: null } : { shape: v.shape, ints: null, floats: out as Float32Array };
      }
      case 'flatten': {
        const rank = v.shape.length;
        const start = node.startDim < 0 ? node.startDim + rank : node.startDim;
        const end = node.endDim < 0 ? node.endDim + rank : node.endDim;
        let merged = 1;
        for (let d = start; d <= end; d++) merged *= v.shape[d]!;
        return { ...v, shape: [...v.shape.slice(0, start), merged, ...v.shape.slice(end + 1)] };
      }
    }
  }

  /** The layer prepared for the fast TypeScript executor, or null when the reference path runs it. */
  private fastLayer(node: LayerNode): FastLayer | null {
    if (this.tsExecutor !== 'fast' || !this.useKernels) return null;
    let f = this.fastLayers.get(node);
    if (f === undefined || (typeof f !== 'string' && f.outputSpec !== node.output)) {
      f = FastLayer.prepare(node, this.weightValues(node), {
        int32: (name) => this.int32(name),
        float32: (name) => this.float32(name),
        bytes: (name) => this.tensor(name).data as Uint8Array,
      });
      this.fastLayers.set(node, f);
    }
    return typeof f === 'string' ? null : f;
  }

  /**
   * @internal Why the fast TypeScript executor runs a layer the reference way (null when it runs it
   * itself or it is not a layer).
   */
  fastLayerFallback(name: string): string | null {
    const node = this.graph.nodes.find((n) => n.name === name);
    if (!node || (node.op !== 'conv2d' && node.op !== 'linear')) return null;
    if (this.tsExecutor !== 'fast') return "tsExecutor is 'reference'";
    if (!this.useKernels) return 'useKernels is off';
    this.fastLayer(node);
    const f = this.fastLayers.get(node);
    return typeof f === 'string' ? f : null;
  }

  /**
   * @internal Why the fast executor's layer `name` does not run on the wasm kernels (null when it
   * does; a reason also when the fast executor does not run it at all).
   */
  wasmLayerFallback(name: string): string | null {
    const reason = this.fastLayerFallback(name);
    if (reason !== null) return reason;
    const node = this.graph.nodes.find((n) => n.name === name);
    const f = node ? this.fastLayers.get(node as LayerNode) : undefined;
    if (!f || typeof f === 'string') return null;
    if (this.tsKernels !== 'wasm') return "tsKernels is 'double'";
    if (!this.scratch.wasm()) return 'this engine has no WebAssembly SIMD128';
    return f.wasmFallback;
  }

  /**
   * @internal The nodes the last run on the resident wasm executor (tsKernels 'wasm') ran in
   * TypeScript instead of on wasm kernels (empty: all on wasm or on views of wasm memory).
   */
  wasmHostNodes(): readonly string[] {
    return this.residentExecutor?.hostNodes ?? [];
  }

  /** int8 weight handles per group (packed once for the GEMM kernels). */
  private packedGroups(node: LayerNode, groups: number, K: number): PackedWeights[] {
    let p = this.packed.get(node.name);
    if (p) return p;
    const w = this.weightValues(node);
    const og = node.outFeatures / groups;
    p = [];
    for (let gi = 0; gi < groups; gi++) p.push(packInt8Weights(w.subarray(gi * og * K, (gi + 1) * og * K), og, K));
    this.packed.set(node.name, p);
    return p;
  }

  /**
   * Int32 accumulators [N, O, (P)] of a layer, then its output stage. Inputs whose integer range
   * fits 8 bits go through the GEMM kernels of ./kernels (native VNNI / popcount when the addon is
   * loaded, their TS reference otherwise): int8/int4/int2/ternary weights as int8 rows with the
   * input zero point, binary weights with sign inputs as XNOR-popcount on bit rows. Wider inputs
   * use the plain int32 loops of ./ops.ts.
   */
  private layer(node: LayerNode, shape: number[], x: Int32Array): Value {
    if (node.weightGroupSize !== undefined) return this.outputStage(node, this.groupAccumulators(node, shape, x), 1, [shape[0]!, node.outFeatures]);
    const n = shape[0]!;
    const O = node.outFeatures;
    let acc: Int32Array;
    const { P, outShape, h, w, oh, ow } = layerOutput(node, shape); // P: output positions per sample
    const inp = node.input;
    const zx = inp.mode === 'affine' ? inp.zeroPoint : 0;
    const inLo = inp.mode === 'affine' ? inp.qmin : -1;
    const inHi = inp.mode === 'affine' ? inp.qmax : 1;
    const kernels = this.useKernels;
    const ActType = !kernels ? null : inLo >= 0 && inHi <= 255 ? Uint8Array : inLo >= -128 && inHi <= 127 ? Int8Array : null;
    const xnor = node.weightFormat === 'binary' && inp.mode === 'sign';
    if (node.op === 'linear') {
      const K = node.inFeatures;
      acc = new Int32Array(n * O);
      if (xnor) {
        gemmBinary(n, O, K, signRowBytes(x, n, K), this.tensor(node.weight).data as Uint8Array, acc);
      } else if (ActType) {
        gemmInt8(n, O, K, ActType.from(x), zx, this.packedGroups(node, 1, K)[0]!, acc);
      } else {
        const centred = zx === 0 ? x : x.map((v) => v - zx);
        gemmInt32(this.weightValues(node), 0, centred, 0, O, n, K, acc, 0, 1, O);
      }
    } else {
      const g = node.conv!;
      acc = new Int32Array(n * O * P);
      const K = (g.inChannels / g.groups) * g.kernelSize[0] * g.kernelSize[1];
      const og = O / g.groups;
      const useXnor = xnor && g.padding[0] === 0 && g.padding[1] === 0;
      const bitsW = useXnor ? (this.tensor(node.weight).data as Uint8Array) : null;
      const rowBytes = Math.ceil(K / 64) * 8;
      const packed = !useXnor && ActType ? this.packedGroups(node, g.groups, K) : null;
      const col = useXnor ? new Int32Array(P * K) : ActType ? new ActType(P * K) : new Int32Array(P * K);
      const c = new Int32Array(P * og);
      const wv = !useXnor && !ActType ? this.weightValues(node) : null;
      for (let b = 0; b < n; b++) {
        for (let gi = 0; gi < g.groups; gi++) {
          const accOffset = (b * O + gi * og) * P;
          const xOffset = b * g.inChannels * h * w;
          if (wv) {
            im2col(x, xOffset, h, w, g, gi, zx, 0, col);
            gemmInt32(wv, gi * og * K, col as Int32Array, 0, og, P, K, acc, accOffset, P, 1);
            continue;
          }
          if (useXnor) {
            im2col(x, xOffset, h, w, g, gi, 0, 0, col);
            gemmBinary(P, og, K, signRowBytes(col as Int32Array, P, K), bitsW!.subarray(gi * og * rowBytes, (gi + 1) * og * rowBytes), c);
          } else {
            im2col(x, xOffset, h, w, g, gi, 0, zx, col);
            gemmInt8(P, og, K, col as Int8Array | Uint8Array, zx, packed![gi]!, c);
          }
          // c is [P, og]; acc is [O, P] per image
          for (let p = 0; p < P; p++) for (let o = 0; o < og; o++) acc[accOffset + o * P + p] = c[p * og + o]!;
        }
      }
    }
    return this.outputStage(node, acc, P, outShape);
  }

  /**
   * A[b, c] = Σ_g r[c,g]·Σ_{k∈g} (x[b,k] − z_x)·w[c,k] of a per-group linear node (see the module
   * comment), exact in doubles (validate.ts bounds |A| below 2^53).
   */
  private groupAccumulators(node: LayerNode, shape: number[], x: Int32Array): Float64Array {
    const { outShape } = layerOutput(node, shape);
    const n = outShape[0]!;
    const O = node.outFeatures;
    const K = node.inFeatures;
    const G = node.weightGroupSize!;
    const groups = K / G;
    const inp = node.input;
    const zx = inp.mode === 'affine' ? inp.zeroPoint : 0;
    const w = this.weightValues(node);
    const r = this.int32(node.groupMultipliers!);
    const acc = new Float64Array(n * O);
    const xc = new Float64Array(K);
    for (let b = 0; b < n; b++) {
      for (let k = 0; k < K; k++) xc[k] = x[b * K + k]! - zx;
      for (let c = 0; c < O; c++) {
        let total = 0;
        for (let g = 0; g < groups; g++) {
          let part = 0;
          const wo = c * K + g * G;
          for (let j = 0; j < G; j++) part += w[wo + j]! * xc[g * G + j]!;
          total += r[c * groups + g]! * part;
        }
        acc[b * O + c] = total;
      }
    }
    return acc;
  }

  /** The output stage of a layer on its accumulators [N, O, P] (int32, or the exact int64 sums of a per-group layer). */
  private outputStage(node: LayerNode, acc: Int32Array | Float64Array, P: number, outShape: number[]): Value {
    const O = node.outFeatures;
    const out = node.output;
    const total = acc.length;
    if (out.mode === 'dequantize') {
      const S = this.float32(out.scale);
      const B = this.float32(out.bias);
      const y = new Float32Array(total);
      for (let i = 0; i < total; i++) {
        const c = Math.floor(i / P) % O;
        y[i] = acc[i]! * S[c]! + B[c]!;
      }
      return { shape: outShape, ints: null, floats: y };
    }
    const q = new Int32Array(total);
    if (out.mode === 'sign') {
      const t = this.int32(out.threshold);
      const d = this.int32(out.direction);
      for (let i = 0; i < total; i++) {
        const c = Math.floor(i / P) % O;
        q[i] = d[c]! * acc[i]! >= t[c]! ? 1 : -1;
      }
      return { shape: outShape, ints: q, floats: null };
    }
    const bias = this.int32(out.bias);
    const M = this.int32(out.multiplier);
    const sh = this.int32(out.shift);
    const { zeroPoint: z, lo, hi } = out;
    const up = 2 ** out.biasShift;
    for (let i = 0; i < total; i++) {
      const c = Math.floor(i / P) % O;
      const r = requantizeScalar(acc[i]! * up + bias[c]!, M[c]!, sh[c]!) + z;
      q[i] = r < lo ? lo : r > hi ? hi : r;
    }
    return { shape: outShape, ints: q, floats: null };
  }

  /** One row per node: name, op, bits, parameter count, packed bytes (weights + int32/float side tensors). */
  layers(): LayerSummary[] {
    // A layer run twice in a DAG (its output needed in two domains) shares its weight tensor: counted once.
    const counted = new Set<string>();
    return this.graph.nodes.map((node) => {
      if (node.op !== 'conv2d' && node.op !== 'linear') return { name: node.name, op: node.op, bits: '-', params: 0, packedBytes: 0 };
      const w = this.tensor(node.weight);
      const shared = counted.has(node.weight);
      counted.add(node.weight);
      const weightCount = shared ? 0 : w.shape.reduce((p, d) => p * d, 1);
      let bytes = shared ? 0 : w.data.byteLength;
      for (const [k, name] of Object.entries(node.output)) if (k !== 'mode' && typeof name === 'string') bytes += this.tensor(name).data.byteLength;
      if (node.groupMultipliers !== undefined) bytes += this.tensor(node.groupMultipliers).data.byteLength;
      const a = node.input.mode === 'sign' ? '1 (sign)' : String(node.input.bits);
      const wb = node.weightFormat === 'binary' ? '1' : node.weightFormat === 'ternary' ? 't' : String(node.weightBits);
      const xnor = node.weightFormat === 'binary' && node.input.mode === 'sign' ? ' xnor' : '';
      // a Conv1d's conv2d node (conv.conv1d) is listed as 'conv1d'
      const op = node.op === 'conv2d' && node.conv?.conv1d === true ? 'conv1d' : node.op;
      const group = node.weightGroupSize !== undefined ? ` g${node.weightGroupSize}` : '';
      return { name: node.name, op, bits: `w${wb}a${a}${xnor}${group}`, params: shared ? 0 : weightCount + node.outFeatures, packedBytes: bytes };
    });
  }

  /** A text table of `layers()`. */
  formatLayers(): string {
    const rows = this.layers().map((l) => [l.name, l.op, l.bits, l.params ? String(l.params) : '', l.packedBytes ? String(l.packedBytes) : '']);
    const header = ['layer', 'op', 'bits', 'params', 'bytes'];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]): string => cells.map((c, i) => (i >= 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
    return [line(header), ...rows.map(line)].join('\n');
  }

  /** Plain JSON (tensors base64-encoded): `IntModel.fromJSON(JSON.parse(JSON.stringify(m)))` round-trips. */
  toJSON(): { graph: IntGraph; tensors: Record<string, { dtype: IntTensorDtype; shape: number[]; base64: string }> } {
    const tensors: Record<string, { dtype: IntTensorDtype; shape: number[]; base64: string }> = {};
    for (const [name, t] of this.tensors) {
      tensors[name] = { dtype: t.dtype, shape: [...t.shape], base64: bytesToBase64(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)) };
    }
    return { graph: this.graph, tensors };
  }

  static fromJSON(json: { graph: IntGraph; tensors: Record<string, { dtype: IntTensorDtype; shape: number[]; base64: string }> }): IntModel {
    const tensors = new Map<string, IntTensor>();
    for (const [name, t] of Object.entries(json.tensors)) {
      tensors.set(name, { dtype: t.dtype, shape: t.shape, data: tensorData(t.dtype, base64ToBytes(t.base64)) });
    }
    return new IntModel(json.graph, tensors);
  }
}

/** Base64 of `bytes` with btoa (Node.js and browsers alike; no Buffer). */
function bytesToBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** The bytes of a base64 string (atob: throws on characters outside the alphabet). */
function base64ToBytes(text: string): Uint8Array {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** Typed view of raw little-endian bytes for a logical dtype (copied, so alignment never matters). */
export function tensorData(dtype: IntTensorDtype, bytes: Uint8Array): Uint8Array | Int32Array | Float32Array {
  const copy = bytes.slice();
  if (dtype === 'int32') {
    if (copy.byteLength % 4 !== 0) throw new Error(`int32 tensor of ${copy.byteLength} bytes`);
    return new Int32Array(copy.buffer, 0, copy.byteLength / 4);
  }
  if (dtype === 'float32') {
    if (copy.byteLength % 4 !== 0) throw new Error(`float32 tensor of ${copy.byteLength} bytes`);
    return new Float32Array(copy.buffer, 0, copy.byteLength / 4);
  }
  return copy;
}

/**
 * round((da·ma + db·mb)·2^−shift), half away from zero, exactly: in doubles when both products
 * stay below 2^52 (|d| < 2^21 with |m| < 2^31), else in BigInt.
 */
export function addRescaled(da: number, ma: number, db: number, mb: number, shift: number): number {
  if (Math.abs(da) < 2 ** 21 && Math.abs(db) < 2 ** 21) {
    const t = da * ma + db * mb; // |t| < 2^53: exact
    if (shift === 0) return t;
    const p = 2 ** shift;
    const r = Math.floor((Math.abs(t) + p / 2) / p);
    return t < 0 ? 0 - r : r; // 0 − r: never −0
  }
  const t = BigInt(da) * BigInt(ma) + BigInt(db) * BigInt(mb);
  const abs = t < 0n ? -t : t;
  const r = shift === 0 ? abs : (abs + (1n << BigInt(shift - 1))) >> BigInt(shift);
  return Number(t < 0n ? -r : r);
}

/**
 * out[i] = +1 if (a[i] − za)·ma + (b[i] − zb)·mb ≥ 0 else −1, exactly (doubles while both products
 * stay below 2^52, BigInt beyond).
 */
export function signOfSum(a: Int32Array, b: Int32Array, za: number, zb: number, ma: number, mb: number, out: Int32Array): void {
  for (let i = 0; i < out.length; i++) {
    const da = a[i]! - za;
    const db = b[i]! - zb;
    let s: number;
    if (Math.abs(da) < 2 ** 21 && Math.abs(db) < 2 ** 21) s = da * ma + db * mb;
    else {
      const t = BigInt(da) * BigInt(ma) + BigInt(db) * BigInt(mb);
      s = t < 0n ? -1 : 1;
    }
    out[i] = s >= 0 ? 1 : -1;
  }
}

/** ±1 rows [rows, K] as bit rows (bit 1 = +1) of ceil(K/64)·8 bytes, padding bits zero. */
function signRowBytes(values: Int32Array, rows: number, K: number): Uint8Array {
  const rowBytes = Math.ceil(K / 64) * 8;
  const out = new Uint8Array(rows * rowBytes);
  for (let r = 0; r < rows; r++) {
    const o = r * rowBytes;
    const vo = r * K;
    for (let k = 0; k < K; k++) if (values[vo + k]! >= 0) out[o + (k >> 3)]! |= 1 << (k & 7);
  }
  return out;
}
