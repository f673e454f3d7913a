/**
 * A conv2d / linear node of an IntModel prepared for the fast TypeScript executor: weights packed
 * once into lane doubles (./gemm.ts) or, with the 'wasm' kernels, as int16 for the WebAssembly
 * SIMD128 GEMM (../wasm/gemm.ts, when the engine has it), per-channel requantization constants (./requantize.ts),
 * reusable scratch buffers. Gives the same integers (and float logits) as the reference executor
 * (IntModel's `layer` with the kernels of ../kernels), including its int8/uint8 wrapping of
 * out-of-range inputs and its int32 wrapping of accumulators; layers it cannot reproduce exactly
 * with doubles (wider than 8-bit inputs, dot products that could reach 2^52, binary weights with
 * stray padding bits) are refused with a reason, and the executor runs them the reference way.
 * @internal
 */
import type { LayerNode } from '../intmodel.ts';
import { layerOutput } from '../ops.ts';
import { gemmLanes, laneChunk, laneLayout, packLaneWeights, type LaneWeights } from './gemm.ts';
import { requantPlan, requantizeBlock, type RequantPlan } from './requantize.ts';
import { packInt16Weights, REQUANT_CONST_BYTES, REQUANT_UNSURE, requantConstants, WasmGemm, type Int16Weights } from '../wasm/gemm.ts';
import { requantizeScalar } from '../requantize.ts';

/**
 * The GEMM kernels of the fast executor: 'wasm' = WebAssembly SIMD128 (../wasm/gemm.ts) where the
 * engine validates it and the layer's operands fit int16, else 'double' = lane-packed doubles.
 */
export type TsKernels = 'wasm' | 'double';

/** How the layer reads its integer input (as the reference kernels store it before the GEMM). */
type InputMode = 'uint8' | 'int8' | 'sign';

export interface FastLayerTensors {
  int32(name: string): Int32Array;
  float32(name: string): Float32Array;
  /** Raw bytes of a `bits` weight tensor (rows of ceil(K/64)·8 bytes). */
  bytes(name: string): Uint8Array;
}

/** Samples per GEMM of a linear layer (bounds the scratch buffers for large batches). */
const LINEAR_CHUNK = 256;

/**
 * Direct convolutions with fewer input channels per group fold the kernel columns into the GEMM's
 * K (one tap per kernel row); with more, each (ky, kx) is a tap (see FastLayer.directConv).
 */
const FOLD_BELOW_CHANNELS = 8;


type Output =
  | { readonly mode: 'requantize'; readonly plan: RequantPlan }
  | { readonly mode: 'sign'; readonly threshold: Int32Array; readonly direction: Int32Array }
  | { readonly mode: 'dequantize'; readonly scale: Float32Array; readonly bias: Float32Array };

/** Scratch arrays shared by the layers of one model (grown on demand, never shrunk). */
export class Scratch {
  private f64 = new Float64Array(0);
  private f64b = new Float64Array(0);
  private i32 = new Int32Array(0);
  private i32b = new Int32Array(0);
  /** The WebAssembly kernel instance (null: not created yet; false: unavailable). */
  private gemm: WasmGemm | null | false = null;

  /** The WebAssembly GEMM of this model's layers, or null when the engine has no SIMD128. */
  wasm(): WasmGemm | null {
    if (this.gemm === null) this.gemm = WasmGemm.create() ?? false;
    return this.gemm === false ? null : this.gemm;
  }

  /** Transformed input values. */
  input(n: number): Float64Array {
    if (this.f64.length < n) this.f64 = new Float64Array(n);
    return this.f64;
  }

  /** Patch matrix [K, Pp]. */
  patches(n: number): Float64Array {
    if (this.f64b.length < n) this.f64b = new Float64Array(n);
    return this.f64b;
  }

  accumulators(n: number): Int32Array {
    if (this.i32.length < n) this.i32 = new Int32Array(n);
    return this.i32;
  }

  /** Partial sums of one K chunk (see gemmChunks). */
  partial(n: number): Int32Array {
    if (this.i32b.length < n) this.i32b = new Int32Array(n);
    return this.i32b;
  }
}

export class FastLayer {
  readonly node: LayerNode;
  /** The node's output stage this layer was prepared for (a replaced `node.output` needs a new one). */
  readonly outputSpec: LayerNode['output'];
  private readonly mode: InputMode;
  private readonly zx: number;
  /** Value of a padded cell after centring (wrap(z) − z, as the reference im2col stores z in the byte type). */
  private readonly padValue: number;
  /** The input range the tight packing assumes ([qmin, qmax] of the input quantizer, or ±1). */
  private readonly inLo: number;
  private readonly inHi: number;
  private readonly weights: Int8Array;
  private readonly maxAbsW: number;
  private readonly K: number;
  private readonly groups: number;
  private readonly output: Output;
  /**
   * Packed weights per group and K chunk (usually one: see `laneChunk`) for inputs in
   * [inLo, inHi] / anywhere in the byte type.
   */
  private tight: LaneWeights[][] | null = null;
  private wide: LaneWeights[][] | null = null;
  /** int16 weights per group uploaded to a WasmGemm, with their byte addresses there. */
  private int16: { gemm: WasmGemm; weights: Int16Weights[]; at: number[] } | null = null;
  /** Per channel the constants of `wasmRequant` for WasmGemm.requantize (`requantConstants`), uploaded (byte address). */
  private requantConsts: { gemm: WasmGemm; at: number } | null = null;
  /** The same per group and kernel row ky, K = (channel, kx) pairs (direct convolution). */
  private int16Taps: { gemm: WasmGemm; weights: Int16Weights[][]; at: number[][] } | null = null;
  /** Why the wasm kernels cannot run this layer exactly (null: they can). */
  readonly wasmFallback: string | null;
  /** The requantization the wasm kernels apply to each GEMM's output (null: the JS output stage runs). */
  private readonly wasmRequant: RequantPlan | null;

  private constructor(node: LayerNode, mode: InputMode, weights: Int8Array, output: Output) {
    this.node = node;
    this.outputSpec = node.output;
    this.mode = mode;
    this.weights = weights;
    this.output = output;
    const inp = node.input;
    this.zx = inp.mode === 'affine' ? inp.zeroPoint : 0;
    this.inLo = inp.mode === 'affine' ? inp.qmin : -1;
    this.inHi = inp.mode === 'affine' ? inp.qmax : 1;
    this.padValue = mode === 'sign' ? 0 : wrap(mode, this.zx) - this.zx;
    let m = 0;
    for (let i = 0; i < weights.length; i++) {
      const a = Math.abs(weights[i]!);
      if (a > m) m = a;
    }
    this.maxAbsW = m;
    // the wasm GEMM multiplies int16 operands with exact int32 pair sums: |w| ≤ 128, |x| ≤ 32767
    const maxX = mode === 'sign' ? 1 : Math.max(Math.abs((mode === 'uint8' ? 0 : -128) - this.zx), Math.abs((mode === 'uint8' ? 255 : 127) - this.zx), Math.abs(this.padValue));
    const plan = output.mode === 'requantize' ? output.plan : null;
    // (the kernel clamps values below 2^29 in int32, so any int32 clamp offsets lo − z, hi − z will do)
    const offsets = plan ? [plan.lo - plan.zeroPoint, plan.hi - plan.zeroPoint] : [];
    this.wasmRequant = plan && plan.fast.every((f) => f === 1) && offsets.every((v) => v >= -(2 ** 31) && v <= 2 ** 31 - 1) && plan.lo > REQUANT_UNSURE ? plan : null;
    this.wasmFallback = m > 128 ? `weights up to ${m} do not fit the int16 GEMM` : maxX > 32767 ? `centred inputs up to ${maxX} do not fit int16` : null;
    if (node.op === 'linear') {
      this.K = node.inFeatures;
      this.groups = 1;
    } else {
      const g = node.conv!;
      this.groups = g.groups;
      this.K = (g.inChannels / g.groups) * g.kernelSize[0] * g.kernelSize[1];
    }
  }

  /**
   * The prepared layer, or why the fast executor cannot reproduce it (the caller then runs the
   * reference path). `weights` are the layer's int8 values [O, K] (IntModel.weightValues).
   */
  static prepare(node: LayerNode, weights: Int8Array, tensors: FastLayerTensors): FastLayer | string {
    if (node.weightGroupSize !== undefined) return `per-group weights (groups of ${node.weightGroupSize}) run on the reference per-group loop`;
    const inp = node.input;
    const inLo = inp.mode === 'affine' ? inp.qmin : -1;
    const inHi = inp.mode === 'affine' ? inp.qmax : 1;
    const byteType: InputMode | null = inLo >= 0 && inHi <= 255 ? 'uint8' : inLo >= -128 && inHi <= 127 ? 'int8' : null;
    const xnorCapable = node.weightFormat === 'binary' && inp.mode === 'sign';
    const conv = node.conv;
    const xnor = xnorCapable && (node.op === 'linear' || (conv!.padding[0] === 0 && conv!.padding[1] === 0));
    if (!xnor && !byteType) return `input range [${inLo}, ${inHi}] is wider than 8 bits`;
    const mode: InputMode = xnor ? 'sign' : byteType!;
    if (xnor && !paddingBitsClear(tensors.bytes(node.weight), node.outFeatures, node.op === 'linear' ? node.inFeatures : (conv!.inChannels / conv!.groups) * conv!.kernelSize[0] * conv!.kernelSize[1])) {
      return 'binary weight rows have padding bits set';
    }
    const o = node.output;
    let output: Output;
    if (o.mode === 'requantize') {
      output = { mode: 'requantize', plan: requantPlan(tensors.int32(o.bias), tensors.int32(o.multiplier), tensors.int32(o.shift), o.biasShift, o.zeroPoint, o.lo, o.hi) };
    } else if (o.mode === 'sign') output = { mode: 'sign', threshold: tensors.int32(o.threshold), direction: tensors.int32(o.direction) };
    else output = { mode: 'dequantize', scale: tensors.float32(o.scale), bias: tensors.float32(o.bias) };
    const layer = new FastLayer(node, mode, weights, output);
    if (laneLayout(layer.bound(false)).lanes === 0) return `dot products of up to ${layer.bound(false)} do not stay exact in doubles`;
    return layer;
  }

  /** Largest |x_k·w_k| for inputs in the quantizer's range (tight) or anywhere in the byte type. */
  private productBound(tight: boolean): number {
    let maxX: number;
    if (this.mode === 'sign') maxX = 1;
    else {
      const [lo, hi] = tight ? [this.inLo, this.inHi] : this.mode === 'uint8' ? [0, 255] : [-128, 127];
      maxX = Math.max(Math.abs(lo - this.zx), Math.abs(hi - this.zx), Math.abs(this.padValue));
    }
    return maxX * this.maxAbsW;
  }

  /** Largest |Σ_k x_k·w_k| (see `productBound`). */
  private bound(tight: boolean): number {
    return this.K * this.productBound(tight);
  }

  private packed(tight: boolean): LaneWeights[][] {
    const cached = tight ? this.tight : this.wide;
    if (cached) return cached;
    const K = this.K;
    const og = this.node.outFeatures / this.groups;
    const perK = this.productBound(tight);
    const chunk = laneChunk(K, perK);
    const groups: LaneWeights[][] = [];
    for (let gi = 0; gi < this.groups; gi++) {
      const chunks: LaneWeights[] = [];
      for (let k0 = 0; k0 < K; k0 += chunk) {
        const kc = Math.min(chunk, K - k0);
        chunks.push(packLaneWeights(this.weights, gi * og * K + k0, og, kc, kc * perK, undefined, K));
      }
      groups.push(chunks);
    }
    if (tight) this.tight = groups;
    else this.wide = groups;
    return groups;
  }

  /**
   * Runs the layer on integer input `x` of `shape`: the next node's integers, or float logits.
   * `kernels` 'wasm' runs it on the WebAssembly kernels when available and exact for this layer
   * (the input copied into wasm memory, `runWasm`, the output copied out).
   */
  run(shape: readonly number[], x: Int32Array, scratch: Scratch, kernels: TsKernels = 'double'): { shape: number[]; ints: Int32Array | null; floats: Float32Array | null } {
    const node = this.node;
    const n = shape[0]!;
    const O = node.outFeatures;
    const { P, outShape } = layerOutput(node, shape);
    const gemm = kernels === 'wasm' && this.wasmFallback === null ? scratch.wasm() : null;
    if (gemm) {
      this.uploadWasm(gemm);
      const inLength = Math.ceil(x.length / 4) * 4;
      const inAt = gemm.arena(inLength + n * O * P + 4); // (+ the 3 values `compact` may write past the output)
      const outAt = inAt + inLength;
      gemm.int32View().set(x, inAt);
      const floats = this.runWasm(shape, inAt, outAt, gemm);
      return { shape: outShape, ints: floats ? null : gemm.int32View().slice(outAt, outAt + n * O * P), floats };
    }
    return this.outputStage(this.accumulateDouble(shape, x, scratch), n, O, P, outShape);
  }

  /** Int32 accumulators [N, O, P] with the lane-packed double GEMM. */
  private accumulateDouble(shape: readonly number[], x: Int32Array, scratch: Scratch): Int32Array {
    const node = this.node;
    const n = shape[0]!;
    const O = node.outFeatures;
    // The values the reference GEMM multiplies: byte-wrapped (only needed for inputs outside the
    // declared range, which also need the wider packing) and centred, or ±1.
    let inRange = true;
    if (this.mode !== 'sign') {
      const { inLo, inHi } = this;
      for (let i = 0; i < x.length; i++) {
        const v = x[i]!;
        if (v < inLo || v > inHi) inRange = false;
      }
    }
    const packed = this.packed(inRange);
    const { P, h, w, oh, ow } = layerOutput(node, shape);
    let acc: Int32Array;
    if (node.op === 'linear') {
      const K = node.inFeatures;
      acc = scratch.accumulators(n * O);
      // samples in chunks (bounded scratch), each transposed to [K, chunk]
      const xt = scratch.input(LINEAR_CHUNK * K);
      for (let s0 = 0; s0 < n; s0 += LINEAR_CHUNK) {
        const m = Math.min(LINEAR_CHUNK, n - s0);
        this.transform(x, s0 * K, m * K, inRange, xt);
        const Pp = Math.ceil(m / 4) * 4;
        const col = scratch.patches(K * Pp);
        for (let s = 0; s < m; s++) for (let k = 0; k < K; k++) col[k * Pp + s] = xt[s * K + k]!;
        gemmChunks(packed[0]!, col, Pp, m, acc, s0 * O, 1, O, m * O, scratch);
      }
    } else {
      const g = node.conv!;
      acc = scratch.accumulators(n * O * P);
      const K = this.K;
      const Pp = Math.ceil(P / 4) * 4;
      const col = scratch.patches(K * Pp);
      const og = O / g.groups;
      const per = g.inChannels * h * w;
      const xt = scratch.input(per);
      for (let b = 0; b < n; b++) {
        this.transform(x, b * per, per, inRange, xt);
        for (let gi = 0; gi < g.groups; gi++) {
          im2colRows(xt, 0, h, w, oh, ow, g, gi, this.padValue, col, Pp);
          gemmChunks(packed[gi]!, col, Pp, P, acc, (b * O + gi * og) * P, P, 1, og * P, scratch);
        }
      }
    }
    return acc;
  }

  /**
   * Uploads the int16 weights `runWasm` uses to `gemm` unless they are there already (uploads drop
   * gemm's arena: call this before reserving one). Returns true when it uploaded.
   */
  uploadWasm(gemm: WasmGemm): boolean {
    const plan = this.wasmRequant;
    let uploaded = false;
    if (plan && this.requantConsts?.gemm !== gemm) {
      this.requantConsts = { gemm, at: gemm.uploadF64(requantConstants(plan.bias, plan.ratio, plan.up)) };
      uploaded = true;
    }
    return this.uploadWeights(gemm) || uploaded;
  }

  private uploadWeights(gemm: WasmGemm): boolean {
    const conv = this.node.conv;
    if (conv && conv.stride[0] === 1 && conv.stride[1] === 1) {
      const had = this.int16Taps?.gemm === gemm;
      this.weightTaps(gemm, conv.inChannels / conv.groups < FOLD_BELOW_CHANNELS ? conv.kernelSize[1] : 1);
      return !had;
    }
    const had = this.int16?.gemm === gemm;
    this.weights16(gemm);
    return !had;
  }

  /** The int16 weights of each group, uploaded to `gemm` once. */
  private weights16(gemm: WasmGemm): { weights: Int16Weights[]; at: number[] } {
    if (this.int16 && this.int16.gemm === gemm) return this.int16;
    const og = this.node.outFeatures / this.groups;
    const weights: Int16Weights[] = [];
    for (let gi = 0; gi < this.groups; gi++) weights.push(packInt16Weights(this.weights, gi * og * this.K, og, this.K));
    this.int16 = { gemm, weights, at: weights.map((w) => gemm.upload(w)) };
    return this.int16;
  }

  /**
   * The int16 weights of each group and tap of a direct convolution, uploaded to `gemm` once:
   * with `fold` = kw the taps are the kernel rows ky and the GEMM rows r = c·kw + kx; with `fold`
   * = 1 the taps are (ky, kx) and the rows the channels (see `directConv`).
   */
  private weightTaps(gemm: WasmGemm, fold: number): { weights: Int16Weights[][]; at: number[][] } {
    if (this.int16Taps && this.int16Taps.gemm === gemm) return this.int16Taps;
    const g = this.node.conv!;
    const og = this.node.outFeatures / this.groups;
    const cg = g.inChannels / g.groups;
    const [kh, kw] = g.kernelSize;
    const R = cg * fold;
    const weights: Int16Weights[][] = [];
    const rows = new Int8Array(og * R);
    for (let gi = 0; gi < this.groups; gi++) {
      const taps: Int16Weights[] = [];
      for (let ky = 0; ky < kh; ky++) {
        for (let kx0 = 0; kx0 < kw; kx0 += fold) {
          // rows[o, c·fold + f] = w[o, c, ky, kx0 + f]
          for (let o = 0; o < og; o++) {
            for (let c = 0; c < cg; c++) {
              const src = (gi * og + o) * this.K + (c * kh + ky) * kw + kx0;
              for (let f = 0; f < fold; f++) rows[o * R + c * fold + f] = this.weights[src + f]!;
            }
          }
          taps.push(packInt16Weights(rows, 0, og, R));
        }
      }
      weights.push(taps);
    }
    this.int16Taps = { gemm, weights, at: weights.map((row) => row.map((w) => gemm.upload(w))) };
    return this.int16Taps;
  }

  /**
   * Direct convolution for stride 1 (no patch matrix). On the padded image (Hp × Wp, border = the
   * padding value, pixel q = y·Wp + x), GEMM row r = c·fold + f of x holds channel c shifted by
   * f·dw: x[r, q] = padded_c[q + f·dw], in pairs of rows [R2, S, 2], written in wasm (`WasmGemm.pad`)
   * from the int32 image at element index `src` of wasm memory. Output position
   * q = oy·Wp + ox is a sum over taps (ky, kx0) of GEMMs on the view of x shifted by
   * ky·dh·Wp + kx0·dw, accumulated in the kernel. fold = kw (few channels: one tap per kernel row,
   * long GEMMs) or 1 (many channels: x is the padded image itself). Positions with ox ≥ ow (and
   * the cells past the image they read) are computed and dropped: `compact` packs the valid ones
   * (requantized or not) to element index `dst` as [og, oh, ow].
   */
  private directConv(src: number, h: number, w: number, oh: number, ow: number, gi: number, gemm: WasmGemm, dst: number, requantize: boolean): void {
    const g = this.node.conv!;
    const cg = g.inChannels / g.groups;
    const og = this.node.outFeatures / this.groups;
    const [kh, kw] = g.kernelSize;
    const [ph, pw] = g.padding;
    const [dh, dw] = g.dilation;
    const fold = cg < FOLD_BELOW_CHANNELS ? kw : 1;
    const Hp = h + 2 * ph, Wp = w + 2 * pw;
    const Pp = Math.ceil((oh * Wp) / 8) * 8;
    const N = Pp + (kh - 1) * dh * Wp + (kw - fold) * dw;
    const R = cg * fold;
    const R2 = Math.ceil(R / 2);
    // S cells per row (the taps read cells up to N − 1; the shift f·dw is in the row itself)
    const S = Math.max(Hp * Wp, N);
    const taps = this.weightTaps(gemm, fold);
    const { i32, out: raw, list } = gemm.operands(R2, Pp, taps.weights[gi]![0]!.blocks, S);
    gemm.pad(this.mode, src + gi * cg * h * w, cg, fold, dw, h, w, Wp, ph, pw, S, this.padValue, this.zx);
    let t = 0;
    for (let ky = 0; ky < kh; ky++) {
      for (let kx0 = 0; kx0 < kw; kx0 += fold, t++) {
        gemm.gemm(taps.weights[gi]![t]!, taps.at[gi]![t]!, Pp, { xStride: S, xShift: ky * dh * Wp + kx0 * dw, accumulate: t > 0, K2: R2 });
      }
    }
    if (requantize) this.requantCompact(gemm, i32, raw, dst, list, og, oh, ow, Wp, Pp, gi * og);
    else gemm.compact(raw, dst, og, oh, ow, Wp, Pp);
  }

  /**
   * Requantizes GEMM output rows (channels channel0…, row o's values raw[o·Pp + oy·Wp + ox]) in
   * wasm straight to their compact layout dst[(o·oh + oy)·ow + ox] (int32 element indices of
   * `i32`; see `WasmGemm.requantize`), the values the fast path is unsure of with requantizeScalar
   * (the reference's own function).
   */
  private requantCompact(gemm: WasmGemm, i32: Int32Array, raw: number, dst: number, list: number, rows: number, oh: number, ow: number, Wp: number, Pp: number, channel0: number): void {
    const plan = this.wasmRequant!;
    const { bias, multiplier, shift, up, zeroPoint: z, lo, hi } = plan;
    const unsure = gemm.requantize(raw, dst, rows, oh, ow, Wp, Pp, this.requantConsts!.at + REQUANT_CONST_BYTES * channel0, lo - z, hi - z, z, list);
    for (let u = 0; u < unsure; u++) {
      const at = i32[list + u]!;
      const o = Math.floor(at / Pp), oy = Math.floor((at - o * Pp) / Wp), ox = at - o * Pp - oy * Wp;
      const c = channel0 + o;
      const v = requantizeScalar(i32[raw + at]! * up + bias[c]!, multiplier[c]!, shift[c]!) + z;
      i32[dst + (o * oh + oy) * ow + ox] = v < lo ? lo : v > hi ? hi : v;
    }
  }

  /**
   * The layer on the WebAssembly kernels, activations in wasm memory: the int32 input of `shape` at
   * element index `inAt`, the output [N, O, P] (integers of the next node) written at `outAt`
   * (room for 3 values more), or, for a dequantizing layer, float logits returned (null otherwise).
   * The two ranges must not overlap. The weights must be uploaded already (`uploadWasm`), and only
   * layers with `wasmFallback` null run here.
   */
  runWasm(shape: readonly number[], inAt: number, outAt: number, gemm: WasmGemm): Float32Array | null {
    if (this.wasmFallback !== null) throw new Error(`FastLayer.runWasm: '${this.node.name}' cannot run on the wasm kernels (${this.wasmFallback})`);
    if (this.uploadWasm(gemm)) throw new Error(`FastLayer.runWasm: the weights of '${this.node.name}' were not uploaded before the arena was reserved`);
    const node = this.node;
    const n = shape[0]!;
    const O = node.outFeatures;
    const K = this.K;
    const fused = this.wasmRequant !== null;
    const { P, h, w, oh, ow } = layerOutput(node, shape);
    if (node.op === 'linear') {
      const { weights, at } = this.weights16(gemm);
      const wt = weights[0]!;
      for (let s0 = 0; s0 < n; s0 += LINEAR_CHUNK) {
        const m = Math.min(LINEAR_CHUNK, n - s0);
        const Pp = Math.ceil(m / 8) * 8;
        const { i32, out: raw, q, list } = gemm.operands(wt.K2, Pp, wt.blocks);
        // x [K2, Pp, 2] (feature k of sample s at (k >> 1)·2Pp + 2s + (k & 1)): the samples [m, K]
        // as one m × K image under a 1 × K kernel, sample s = output row s
        gemm.im2col(this.mode, inAt + s0 * K, 1, m, K, [1, K], [1, 1], [0, 0], [1, 1], m, 1, Pp, this.padValue, this.zx);
        gemm.gemm(wt, at[0]!, Pp);
        // [O, m] (requantized to q, or the accumulators in rows of Pp) to [m, O]
        if (fused) this.requantCompact(gemm, i32, raw, q, list, O, 1, m, Pp, Pp, 0);
        const [res, stride] = fused ? [q, m] : [raw, Pp];
        const dst = outAt + s0 * O;
        for (let o = 0; o < O; o++) {
          const row = res + o * stride;
          for (let s = 0; s < m; s++) i32[dst + s * O + o] = i32[row + s]!;
        }
      }
    } else {
      const g = node.conv!;
      const Pp = Math.ceil(P / 8) * 8;
      const og = O / g.groups;
      const cg = g.inChannels / g.groups;
      const per = g.inChannels * h * w;
      const direct = g.stride[0] === 1 && g.stride[1] === 1;
      for (let b = 0; b < n; b++) {
        for (let gi = 0; gi < g.groups; gi++) {
          const dst = outAt + (b * O + gi * og) * P;
          if (direct) {
            this.directConv(inAt + b * per, h, w, oh, ow, gi, gemm, dst, fused);
            continue;
          }
          const { weights, at } = this.weights16(gemm); // (direct convolutions use weightTaps)
          const wt = weights[gi]!;
          const { i32, out: raw, list } = gemm.operands(wt.K2, Pp, wt.blocks);
          gemm.im2col(this.mode, inAt + b * per + gi * cg * h * w, cg, h, w, g.kernelSize, g.stride, g.padding, g.dilation, oh, ow, Pp, this.padValue, this.zx);
          gemm.gemm(wt, at[gi]!, Pp);
          // rows of P (stride Pp) to [og, P]
          if (fused) this.requantCompact(gemm, i32, raw, dst, list, og, 1, P, P, Pp, gi * og);
          else gemm.compact(raw, dst, og, 1, P, P, Pp);
        }
      }
    }
    if (fused) return null;
    // accumulators at outAt: the output stage in place (sign, a requantization the kernel does not
    // take) or to float logits
    const acc = gemm.int32View().subarray(outAt, outAt + n * O * P);
    return this.outputStage(acc, n, O, P, [], acc).floats;
  }

  /**
   * The output stage on accumulators [n, O, P]: requantized integers (to `target`, which may be
   * `acc` itself, or a new array), signs or float logits.
   */
  private outputStage(acc: Int32Array, n: number, O: number, P: number, outShape: number[], target?: Int32Array): { shape: number[]; ints: Int32Array | null; floats: Float32Array | null } {
    const total = n * O * P;
    const out = this.output;
    if (out.mode === 'dequantize') {
      const y = new Float32Array(total);
      const { scale: S, bias: B } = out;
      let i = 0;
      for (let r = 0; r < n; r++) {
        for (let c = 0; c < O; c++) {
          const s = S[c]!;
          const bc = B[c]!;
          for (let p = 0; p < P; p++, i++) y[i] = acc[i]! * s + bc;
        }
      }
      return { shape: outShape, ints: null, floats: y };
    }
    const q = target ?? new Int32Array(total);
    if (out.mode === 'sign') {
      const { threshold: t, direction: d } = out;
      let i = 0;
      for (let r = 0; r < n; r++) {
        for (let c = 0; c < O; c++) {
          const dc = d[c]!;
          const tc = t[c]!;
          for (let p = 0; p < P; p++, i++) q[i] = dc * acc[i]! >= tc ? 1 : -1;
        }
      }
      return { shape: outShape, ints: q, floats: null };
    }
    requantizeBlock(acc, n, O, P, out.plan, q);
    return { shape: outShape, ints: q, floats: null };
  }

  /** xt[i] = the GEMM operand of x[start + i], i < count (see `run`). */
  private transform(x: Int32Array, start: number, count: number, inRange: boolean, xt: Float64Array): void {
    const zx = this.zx;
    if (this.mode === 'sign') for (let i = 0; i < count; i++) xt[i] = x[start + i]! >= 0 ? 1 : -1;
    else if (inRange) for (let i = 0; i < count; i++) xt[i] = x[start + i]! - zx;
    else {
      const m = this.mode;
      for (let i = 0; i < count; i++) xt[i] = wrap(m, x[start + i]!) - zx;
    }
  }
}

/**
 * gemmLanes over the K chunks of one weight matrix: the first chunk writes the block of `block`
 * values at accOffset (contiguous for both callers' strides), later chunks go to a scratch block
 * that is added in int32 (wrapping, as the reference's accumulators: the chunk sums are exact).
 */
function gemmChunks(
  chunks: readonly LaneWeights[], col: Float64Array, Pp: number, P: number, acc: Int32Array, accOffset: number,
  oStride: number, pStride: number, block: number, scratch: Scratch,
): void {
  gemmLanes(chunks[0]!, col, Pp, P, acc, accOffset, oStride, pStride);
  if (chunks.length === 1) return;
  const part = scratch.partial(block);
  let k0 = chunks[0]!.K;
  for (let c = 1; c < chunks.length; c++) {
    const wp = chunks[c]!;
    gemmLanes(wp, col.subarray(k0 * Pp), Pp, P, part, 0, oStride, pStride);
    for (let i = 0; i < block; i++) acc[accOffset + i] = acc[accOffset + i]! + part[i]!;
    k0 += wp.K;
  }
}

/** v as the reference stores it in the layer's byte type (uint8: mod 256; int8: signed mod 256). */
function wrap(mode: InputMode, v: number): number {
  return mode === 'uint8' ? v & 255 : mode === 'int8' ? (v << 24) >> 24 : v;
}

/** True when every bit row of `bytes` ([rows, ceil(K/64)·8 bytes]) has zero bits past K. */
function paddingBitsClear(bytes: Uint8Array, rows: number, K: number): boolean {
  const rowBytes = Math.ceil(K / 64) * 8;
  for (let r = 0; r < rows; r++) {
    for (let k = K; k < rowBytes * 8; k++) if ((bytes[r * rowBytes + (k >> 3)]! >> (k & 7)) & 1) return false;
  }
  return true;
}

/**
 * Patches of one image and group as rows: col[k·Pp + p] = xt[...] for k = (c, ky, kx) in OIHW
 * order and p = oy·ow + ox, `padValue` outside the image; columns P..Pp−1 are zero.
 */
function im2colRows(
  xt: Float64Array, xOffset: number, h: number, w: number, oh: number, ow: number,
  g: NonNullable<LayerNode['conv']>, group: number, padValue: number, col: Float64Array, Pp: number,
): void {
  const cg = g.inChannels / g.groups;
  const [kh, kw] = g.kernelSize;
  const [sh, sw] = g.stride;
  const [ph, pw] = g.padding;
  const [dh, dw] = g.dilation;
  const P = oh * ow;
  const contiguous = sh === 1 && sw === 1 && ow === w;
  let k = 0;
  for (let c = 0; c < cg; c++) {
    const plane = xOffset + (group * cg + c) * h * w;
    for (let ky = 0; ky < kh; ky++) {
      for (let kx = 0; kx < kw; kx++, k++) {
        const row = k * Pp;
        const shiftX = kx * dw - pw;
        // ox with 0 ≤ ox·sw + shiftX < w
        const oxLo = Math.min(ow, Math.max(0, Math.ceil(-shiftX / sw)));
        const oxHi = Math.max(oxLo, Math.min(ow, Math.floor((w - 1 - shiftX) / sw) + 1));
        if (contiguous) {
          // stride 1 and ow = w: the valid rows are one span of the plane; copy it at once, then
          // overwrite the cells of each row that fall in the left / right padding
          const shiftY = ky * dh - ph;
          const oyLo = Math.min(oh, Math.max(0, -shiftY));
          const oyHi = Math.max(oyLo, Math.min(oh, h - shiftY));
          col.fill(padValue, row, row + oyLo * ow);
          col.fill(padValue, row + oyHi * ow, row + P);
          if (oyHi > oyLo && oxHi > oxLo) {
            const src = plane + (oyLo + shiftY) * w + shiftX + oxLo;
            const length = (oyHi - oyLo - 1) * w + (oxHi - oxLo);
            col.set(xt.subarray(src, src + length), row + oyLo * ow + oxLo);
          }
          for (let oy = oyLo; oy < oyHi; oy++) {
            const o = row + oy * ow;
            for (let ox = 0; ox < oxLo; ox++) col[o + ox] = padValue;
            for (let ox = oxHi; ox < ow; ox++) col[o + ox] = padValue;
          }
          if (oxHi <= oxLo) col.fill(padValue, row + oyLo * ow, row + oyHi * ow);
        } else {
          for (let oy = 0; oy < oh; oy++) {
            const iy = oy * sh - ph + ky * dh;
            const o = row + oy * ow;
            if (iy < 0 || iy >= h) {
              for (let ox = 0; ox < ow; ox++) col[o + ox] = padValue;
              continue;
            }
            const src = plane + iy * w + shiftX;
            for (let ox = 0; ox < oxLo; ox++) col[o + ox] = padValue;
            if (sw === 1) for (let ox = oxLo; ox < oxHi; ox++) col[o + ox] = xt[src + ox]!;
            else for (let ox = oxLo; ox < oxHi; ox++) col[o + ox] = xt[src + ox * sw]!;
            for (let ox = oxHi; ox < ow; ox++) col[o + ox] = padValue;
          }
        }
        for (let p = P; p < Pp; p++) col[row + p] = 0;
      }
    }
  }
}
