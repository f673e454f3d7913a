/**
 * Cross-check of the dispatched integer kernels against the TypeScript reference (exact
 * equality) on random odd shapes. Used by kernels.test.ts, in-process and in child processes
 * with LOWBIT_ISA=avx2 / scalar (the native ISA is fixed when the addon loads).
 * Run directly: `node --import tsx src/runtime/kernels/cross-check.ts [quick]` (exit code 1 on a mismatch).
 */
import { fileURLToPath } from 'node:url';
import { loadAddon } from '../../backend/native/load.ts';
import { packBinaryRows, packBits } from '../../quant/core/packing.ts';
import { IntModel, type IntGraph, type IntNode, type IntTensor, type LayerInput, type LayerNode, type LayerOutput } from '../intmodel.ts';
import { compileNativePlan } from '../native-plan.ts';
import { convOutputSize } from '../ops.ts';
import { quantizeMultiplier } from '../requantize.ts';
import {
  gemmBinary, gemmBinaryRef, gemmInt2, gemmInt2Ref, gemmInt4, gemmInt4Ref, gemmInt8, gemmInt8Ref, intKernelsBackend,
  packInt8Weights, packLowBitWeights, requantize, requantizeRef,
} from './index.ts';

export const SIZES = [1, 3, 17, 64, 65, 129, 400] as const;

/** Deterministic xorshift32 generator. */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** Shapes covering every size on every axis: each (M, N, K) from a Latin-square walk plus extremes. */
export function shapes(quick: boolean): [number, number, number][] {
  const out: [number, number, number][] = [];
  const n = SIZES.length;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < (quick ? 2 : n); j++) out.push([SIZES[i]!, SIZES[(i + j) % n]!, SIZES[(i + 2 * j + 1) % n]!]);
  }
  out.push([400, 400, 400], [1, 1, 1], [129, 65, 17]);
  return out;
}

function randBytes(next: () => number, n: number, signed: boolean): Int8Array | Uint8Array {
  const out = signed ? new Int8Array(n) : new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = next() & 0xff;
  return out;
}

function firstDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  if (x.length !== y.length) return -2;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}

/** Runs all checks; returns a list of failure messages (empty = all equal); `kernels` as crossCheckIntModels. */
export function crossCheck(quick = false, seed = 1234, kernels?: Set<string>): string[] {
  const fails: string[] = [];
  const next = rng(seed);
  const addon = loadAddon();
  // the AMX GEMM (native/amx.cc) where the CPU has it and LOWBIT_AMX is not 0
  const amxAddon = addon?.gemmInt8Amx && intKernelsBackend().amx === 'amx-int8' ? addon : null;
  const report = (what: string, shape: number[], x: ArrayLike<number>, y: ArrayLike<number>): void => {
    const d = firstDiff(x, y);
    if (d !== -1) fails.push(`${what} ${shape.join('x')}: first difference at ${d}: ${x[d]} vs ${y[d]}`);
  };
  for (const [M, N, K] of shapes(quick)) {
    for (const signed of [false, true]) {
      const a = randBytes(next, M * K, signed);
      const w = randBytes(next, N * K, true) as Int8Array;
      const zero = signed ? (next() % 256) - 128 : next() % 256;
      const want = new Int32Array(M * N);
      gemmInt8Ref(M, N, K, a, zero, w, want);
      const got = new Int32Array(M * N).fill(7);
      gemmInt8(M, N, K, a, zero, w, got);
      report(`gemmInt8 (${signed ? 'int8' : 'uint8'} a, z=${zero})`, [M, N, K], got, want);
      const got2 = new Int32Array(M * N).fill(-3);
      gemmInt8(M, N, K, a, zero, packInt8Weights(w, N, K), got2);
      report('gemmInt8 (packed handle)', [M, N, K], got2, want);
      if (amxAddon) {
        const packed = new Int8Array(amxAddon.amxPackedBytes!(N, K));
        amxAddon.packInt8Amx!(w, N, K, packed);
        const rowSums = new Int32Array(N);
        for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) rowSums[n]! += w[n * K + k]!;
        const got3 = new Int32Array(M * N).fill(9);
        amxAddon.gemmInt8Amx!(M, N, K, a, zero, packed, rowSums, got3);
        report(`gemmInt8Amx (${signed ? 'int8' : 'uint8'} a, z=${zero})`, [M, N, K], got3, want);
      }
      for (const bits of [4, 2] as const) {
        const wp = randBytes(next, N * Math.ceil((K * bits) / 8), false) as Uint8Array;
        const want4 = new Int32Array(M * N);
        (bits === 4 ? gemmInt4Ref : gemmInt2Ref)(M, N, K, a, zero, wp, want4);
        const got4 = new Int32Array(M * N).fill(11);
        (bits === 4 ? gemmInt4 : gemmInt2)(M, N, K, a, zero, wp, got4);
        report(`gemmInt${bits}`, [M, N, K], got4, want4);
        const got5 = new Int32Array(M * N);
        gemmInt8(M, N, K, a, zero, packLowBitWeights(wp, bits, N, K), got5);
        report(`gemmInt8 (int${bits} handle)`, [M, N, K], got5, want4);
      }
    }
    // binary: K in bits, padding bits zero
    const rowBytes = Math.ceil(K / 64) * 8;
    const bits = (rows: number): Uint8Array => {
      const out = new Uint8Array(rows * rowBytes);
      for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) if (next() & 1) out[r * rowBytes + (k >> 3)]! |= 1 << (k & 7);
      return out;
    };
    for (const Kb of [K, K * 13]) {
      const KK = Kb;
      const rb = Math.ceil(KK / 64) * 8;
      const mk = (rows: number): Uint8Array => {
        const out = new Uint8Array(rows * rb);
        for (let r = 0; r < rows; r++) for (let k = 0; k < KK; k++) if (next() & 1) out[r * rb + (k >> 3)]! |= 1 << (k & 7);
        return out;
      };
      const ab = KK === K ? bits(M) : mk(M);
      const wb = KK === K ? bits(N) : mk(N);
      const wantB = new Int32Array(M * N);
      gemmBinaryRef(M, N, KK, ab, wb, wantB);
      const gotB = new Int32Array(M * N).fill(5);
      gemmBinary(M, N, KK, ab, wb, gotB);
      report('gemmBinary', [M, N, KK], gotB, wantB);
    }
    // requantize on random accumulators, including extremes
    const acc = new Int32Array(M * N);
    for (let i = 0; i < acc.length; i++) {
      const r = next() % 8;
      acc[i] = r === 0 ? -2147483648 : r === 1 ? 2147483647 : r < 4 ? (next() | 0) : (next() % 200001) - 100000;
    }
    const mult = new Int32Array(N);
    const shift = new Int32Array(N);
    for (let n = 0; n < N; n++) {
      const r = next() % 6;
      mult[n] = r === 0 ? -2147483648 : r === 1 ? (next() | 0) : 1073741824 + (next() % 1073741823);
      shift[n] = (next() % 40) - 8;
      if (shift[n]! > 31) shift[n] = 31;
    }
    for (const signed of [true, false]) {
      const zOut = signed ? (next() % 21) - 10 : next() % 256;
      const qmin = signed ? -127 : 0;
      const qmax = signed ? 127 : 255;
      const want = signed ? new Int8Array(M * N) : new Uint8Array(M * N);
      const got = signed ? new Int8Array(M * N) : new Uint8Array(M * N);
      requantizeRef(acc, M, N, mult, shift, zOut, qmin, qmax, want);
      requantize(acc, M, N, mult, shift, zOut, qmin, qmax, got);
      report(`requantize (${signed ? 'int8' : 'uint8'})`, [M, N], got, want);
    }
  }
  fails.push(...crossCheckIntModels(quick, seed + 1, kernels));
  return fails;
}

// ---------------------------------------------------------------- whole IntModels, native vs TS

type Rand = () => number;

/** Random IntModel graphs with odd shapes covering every node kind, input/output mode and weight format. */
export function randomIntModels(seed: number): { name: string; model: IntModel }[] {
  const next = rng(seed);
  const int = (lo: number, hi: number): number => lo + (next() % (hi - lo + 1));
  const out: { name: string; model: IntModel }[] = [];
  const build = (name: string, inputShape: number[], make: (b: GraphBuilder) => void): void => {
    const b = new GraphBuilder(next, inputShape);
    make(b);
    out.push({ name, model: new IntModel({ format: 'lowbit-intmodel', version: 1, inputShape, nodes: b.nodes }, b.tensors) });
  };
  type Affine = Extract<LayerInput, { mode: 'affine' }>;
  const u8 = (z: number): Affine => ({ mode: 'affine', scale: 0.05 + (next() % 100) / 1000, zeroPoint: z, bits: 8, qmin: 0, qmax: 255 });
  const s8 = (z: number): Affine => ({ mode: 'affine', scale: 0.03 + (next() % 100) / 1000, zeroPoint: z, bits: 8, qmin: -128, qmax: 127 });
  const sign: LayerInput = { mode: 'sign', scale: 1 };
  // 1. one-channel image: conv (direct kernel when available) - maxpool - conv groups - avgpool (F bits) - clamp - linear chain
  for (const [pad, stride, k] of [[2, 1, 5], [1, 2, 3], [0, 1, 7]] as const) {
    build(`cnn-1ch k${k} s${stride} p${pad}`, [1, 21, 19], (b) => {
      const in0 = u8(int(0, 60));
      b.quantize(in0);
      const in1 = u8(int(0, 20));
      b.conv('c1', in0, 1, 6, k, stride, pad, 1, 1, 'int8', b.requant(6, in1.zeroPoint, int(0, 30), 255, 150 / (k * 60)));
      b.pool('maxpool2d', in1.zeroPoint, 3, 2, 1);
      const in2 = s8(int(-20, 20));
      // requantized with 8 extra fractional bits into a wide int32 range for the average pooling
      b.conv('c2', in1, 6, 9, 3, 1, 1, 2, 3, 'int4', b.requant(9, in2.zeroPoint * 256, -(2 ** 30), 2 ** 30, (256 * 40) / 300));
      b.pool('avgpool2d', in2.zeroPoint, 2, 2, 0, 8);
      b.nodes.push({ op: 'clamp', name: 'range', lo: -128, hi: 127 });
      b.flatten();
      const in3 = u8(int(0, 10));
      b.linear('f1', in2, b.features, 17, 'ternary', b.requant(17, in3.zeroPoint, in3.zeroPoint, 255, 2));
      b.linear('f2', in3, 17, 5, 'int2', b.dequant(5));
    });
  }
  // 2. three-channel input (im2col path), dilation, int8 input, adaptive pooling, sign output into a conv
  build('cnn-3ch dilated', [3, 12, 9], (b) => {
    const in0 = s8(int(-5, 5));
    b.quantize(in0);
    const in1 = u8(int(0, 30));
    b.conv('c1', in0, 3, 7, 3, 1, 2, 2, 1, 'int8', b.requant(7, in1.zeroPoint, 0, 255, 0.05));
    b.conv('c2', in1, 7, 8, 3, 1, 1, 1, 1, 'int8', b.sign(8));
    b.conv('c3', sign, 8, 4, 3, 1, 1, 1, 2, 'binary', b.requant(4, 0, -128, 127, 0.5));
    b.adaptive(2, 1, 0);
    b.nodes.push({ op: 'clamp', name: 'range', lo: -128, hi: 127 });
    b.flatten();
    b.linear('f', s8(0), b.features, 3, 'int8', b.dequant(3));
  });
  // 3. binary MLP: packed sign bits between XNOR layers, odd widths, exact-tie multipliers
  for (const widths of [[70, 65, 129], [64, 200, 3]]) {
    build(`bnn mlp ${widths.join('-')}`, [1, 5, 7], (b) => {
      const in0 = u8(int(0, 255));
      b.quantize(in0);
      b.flatten();
      b.linear('l1', in0, 35, widths[0]!, 'int8', b.sign(widths[0]!));
      b.linear('l2', sign, widths[0]!, widths[1]!, 'binary', b.sign(widths[1]!));
      b.linear('l3', sign, widths[1]!, widths[2]!, 'binary', b.requant(widths[2]!, 3, -128, 127, 0.5, true));
      b.linear('l4', s8(3), widths[2]!, 4, 'int8', b.dequant(4));
    });
  }
  // 5. max pooling without padding right after a conv (fused into the conv natively: int32
  //    accumulators pooled with max, or min where the multiplier is negative), LeNet-like direct
  //    conv with odd widths, then a wide im2col conv (K = 90, 40 channels: several AMX tiles)
  for (const [H, W, signedOut] of [[23, 21, false], [12, 35, true]] as const) {
    build(`cnn fused pools ${H}x${W}${signedOut ? ' s8' : ''}`, [1, H, W], (b) => {
      // a power-of-two input scale: the inputs that are multiples of 1/16 (see crossCheckIntModels)
      // land exactly on half-integers, the ties of the input quantizer's round-half-even
      const in0: Affine = signedOut ? u8(int(0, 60)) : { mode: 'affine', scale: 0.125, zeroPoint: int(0, 60), bits: 8, qmin: 0, qmax: 255 };
      b.quantize(in0);
      const in1 = signedOut ? s8(int(-10, 10)) : u8(int(0, 20));
      // 10 channels: the direct kernel's blocks of 8 and 2; 6: one block holds every channel
      const c1 = signedOut ? 6 : 10;
      b.conv('c1', in0, 1, c1, 5, 1, 2, 1, 1, 'int8', b.requant(c1, in1.zeroPoint, signedOut ? -128 : int(0, 30), signedOut ? 127 : 255, 150 / (5 * 60)));
      b.pool('maxpool2d', in1.zeroPoint, 2, 2, 0);
      const in2 = u8(int(0, 20));
      // unpadded on uint8 input: AMX reads the activation tiles straight from the input (no im2col)
      b.conv('c2', in1, c1, 40, 3, 1, signedOut ? 1 : 0, 1, 1, 'int8', b.requant(40, in2.zeroPoint, 0, 255, 0.02));
      b.pool('maxpool2d', in2.zeroPoint, 3, 2, 0);
      b.flatten();
      const in3 = u8(int(0, 10));
      b.linear('f1', in2, b.features, 70, 'int8', b.requant(70, in3.zeroPoint, in3.zeroPoint, 255, 0.05));
      b.linear('f2', in3, 70, 5, 'int8', b.dequant(5));
    });
  }
  // 6. small-K convs (K <= 64) on several input channels: AMX gathers their activation tiles from a
  //    padded copy (int8 input, padding) or straight from the input (uint8, unpadded, stride 2),
  //    with a fused 3 x 3 pooling and then 20 channels (two column tiles)
  build('cnn small-K gather', [2, 13, 22], (b) => {
    const in0 = s8(int(-10, 10));
    b.quantize(in0);
    const in1 = u8(int(0, 20));
    b.conv('c1', in0, 2, 3, 3, 1, 1, 1, 1, 'int8', b.requant(3, in1.zeroPoint, int(0, 30), 255, 0.1));
    b.pool('maxpool2d', in1.zeroPoint, 3, 2, 0);
    const in2 = u8(int(0, 20));
    b.conv('c2', in1, 3, 20, 3, 2, 0, 1, 1, 'int8', b.requant(20, in2.zeroPoint, 0, 255, 0.05));
    b.flatten();
    b.linear('f', in2, b.features, 4, 'int8', b.dequant(4));
  });
  // 4. sign input image, binary conv with padding (int8 path), last linear on ±1 inputs
  build('sign-input conv', [2, 9, 10], (b) => {
    b.quantize(sign);
    b.conv('c', sign, 2, 5, 3, 2, 1, 1, 1, 'binary', b.sign(5));
    b.flatten();
    b.linear('f', sign, b.features, 6, 'int8', b.dequant(6));
  });
  return out;
}

class GraphBuilder {
  readonly nodes: IntNode[] = [];
  readonly tensors = new Map<string, IntTensor>();
  /** [C, H, W] of the current value (features = C·H·W). */
  private dims: [number, number, number];
  private count = 0;

  constructor(private readonly next: Rand, inputShape: readonly number[]) {
    this.dims = [inputShape[0]!, inputShape[1] ?? 1, inputShape[2] ?? 1];
  }

  get features(): number {
    return this.dims[0] * this.dims[1] * this.dims[2];
  }

  private name(prefix: string): string {
    return `${prefix}${this.count++}`;
  }

  quantize(input: LayerInput): void {
    this.nodes.push({ op: 'quantize', name: 'input', input });
  }

  /** Requantization to [lo, hi] around zero point z with per-channel ratios ≈ `ratio` (some negative; `ties`: exact 0.5 ratios, bias 0). */
  requant(O: number, z: number, lo: number, hi: number, ratio: number, ties = false): LayerOutput {
    const id = this.name('rq');
    const k = ties ? 0 : this.next() % 13;
    const bias = new Int32Array(O);
    const mult = new Int32Array(O);
    const shift = new Int32Array(O);
    for (let c = 0; c < O; c++) {
      const r = ties ? (c % 3 === 2 ? -0.5 : 0.5) : ratio * (0.5 + (this.next() % 1000) / 666) * (c % 5 === 4 ? -1 : 1);
      const m = quantizeMultiplier(r);
      mult[c] = m.multiplier;
      shift[c] = m.shift + k;
      bias[c] = ties ? 0 : ((this.next() % 2001) - 1000) * 2 ** Math.max(0, k - 2);
    }
    this.tensors.set(`${id}.bias`, { dtype: 'int32', shape: [O], data: bias });
    this.tensors.set(`${id}.mult`, { dtype: 'int32', shape: [O], data: mult });
    this.tensors.set(`${id}.shift`, { dtype: 'int32', shape: [O], data: shift });
    return { mode: 'requantize', bias: `${id}.bias`, multiplier: `${id}.mult`, shift: `${id}.shift`, biasShift: k, scale: 1, zeroPoint: z, lo, hi };
  }

  sign(O: number): LayerOutput {
    const id = this.name('sg');
    const t = new Int32Array(O);
    const d = new Int32Array(O);
    for (let c = 0; c < O; c++) {
      d[c] = c % 7 === 6 ? 0 : c % 3 === 2 ? -1 : 1;
      t[c] = (this.next() % 401) - 200;
    }
    this.tensors.set(`${id}.t`, { dtype: 'int32', shape: [O], data: t });
    this.tensors.set(`${id}.d`, { dtype: 'int32', shape: [O], data: d });
    return { mode: 'sign', threshold: `${id}.t`, direction: `${id}.d` };
  }

  dequant(O: number): LayerOutput {
    const id = this.name('dq');
    const S = new Float32Array(O).map(() => ((this.next() % 1000) + 1) * 1.37e-5);
    const B = new Float32Array(O).map(() => ((this.next() % 2001) - 1000) * 1e-3);
    this.tensors.set(`${id}.S`, { dtype: 'float32', shape: [O], data: S });
    this.tensors.set(`${id}.B`, { dtype: 'float32', shape: [O], data: B });
    return { mode: 'dequantize', scale: `${id}.S`, bias: `${id}.B` };
  }

  private weights(name: string, format: LayerNode['weightFormat'], shape: number[]): { tensor: string; bits: number } {
    const count = shape.reduce((p, d) => p * d, 1);
    const [lo, hi, bits] = format === 'int8' ? [-127, 127, 8] : format === 'int4' ? [-8, 7, 4] : format === 'int2' ? [-2, 1, 2] : [-1, 1, 2];
    const values = Array.from({ length: count }, () => lo + (this.next() % (hi - lo + 1)));
    let tensor: IntTensor;
    if (format === 'binary') {
      const rows = shape[0]!;
      tensor = { dtype: 'bits', shape, data: packBinaryRows(values.map((v) => (v >= 0 ? 1 : -1)), rows, count / rows) };
    } else if (format === 'int8') tensor = { dtype: 'int8', shape, data: new Uint8Array(Int8Array.from(values).buffer) };
    else tensor = { dtype: format === 'int4' ? 'int4' : 'int2', shape, data: packBits(values, format === 'int4' ? 4 : 2, true) };
    this.tensors.set(`${name}.w`, tensor);
    return { tensor: `${name}.w`, bits: format === 'binary' ? 1 : bits };
  }

  conv(name: string, input: LayerInput, C: number, O: number, k: number, stride: number, pad: number, dilation: number, groups: number, format: LayerNode['weightFormat'], output: LayerOutput): void {
    const w = this.weights(name, format, [O, C / groups, k, k]);
    const conv = { inChannels: C, outChannels: O, kernelSize: [k, k], stride: [stride, stride], padding: [pad, pad], dilation: [dilation, dilation], groups } as const;
    this.nodes.push({ op: 'conv2d', name, inFeatures: C, outFeatures: O, weight: w.tensor, weightFormat: format, weightBits: w.bits, input, output, conv });
    const [oh, ow] = convOutputSize(this.dims[1], this.dims[2], conv);
    this.dims = [O, oh, ow];
  }

  pool(op: 'maxpool2d' | 'avgpool2d', zeroPoint: number, k: number, s: number, p: number, fracBits = 0): void {
    this.nodes.push({ op, name: this.name('pool'), kernelSize: [k, k], stride: [s, s], padding: [p, p], zeroPoint, fracBits });
    this.dims = [this.dims[0], Math.floor((this.dims[1] + 2 * p - k) / s) + 1, Math.floor((this.dims[2] + 2 * p - k) / s) + 1];
  }

  /** Adaptive average pooling to [oh, ow] (the input must be a multiple). */
  adaptive(oh: number, ow: number, zeroPoint: number): void {
    this.nodes.push({ op: 'adaptiveavgpool2d', name: this.name('gap'), outputSize: [oh, ow], zeroPoint, fracBits: 0 });
    this.dims = [this.dims[0], oh, ow];
  }

  flatten(): void {
    this.nodes.push({ op: 'flatten', name: this.name('flat'), startDim: 1, endDim: -1 });
    this.dims = [this.features, 1, 1];
  }

  linear(name: string, input: LayerInput, K: number, O: number, format: LayerNode['weightFormat'], output: LayerOutput): void {
    const w = this.weights(name, format, [O, K]);
    this.nodes.push({ op: 'linear', name, inFeatures: K, outFeatures: O, weight: w.tensor, weightFormat: format, weightBits: w.bits, input, output });
    this.dims = [O, 1, 1];
  }

}

/**
 * The native plan variants compared: every fast path on, then one of them off at a time (the direct
 * one-channel conv, AMX, pooling fused into the conv, integer requantization), then all off.
 */
const PLAN_VARIANTS: readonly { direct: boolean; amx: boolean; fuse: boolean; intRequant: boolean }[] = [
  { direct: true, amx: true, fuse: true, intRequant: true }, { direct: false, amx: true, fuse: true, intRequant: true },
  { direct: true, amx: false, fuse: true, intRequant: true }, { direct: true, amx: true, fuse: false, intRequant: true },
  { direct: true, amx: true, fuse: true, intRequant: false }, { direct: false, amx: false, fuse: false, intRequant: false },
];

/**
 * Native executor vs the TypeScript executor on `randomIntModels` (odd batch sizes, every plan
 * variant); `kernels`, when given, collects the kernel names the native plans used (intPlanKernels).
 */
export function crossCheckIntModels(quick = false, seed = 77, kernels?: Set<string>): string[] {
  const addon = loadAddon();
  if (!addon?.intPlanCreate || !addon.intPlanRun) return [];
  const fails: string[] = [];
  const next = rng(seed);
  for (const { name, model } of randomIntModels(seed)) {
    const spec = compileNativePlan(model);
    if (typeof spec === 'string') {
      fails.push(`${name}: does not compile natively (${spec})`);
      continue;
    }
    const per = model.graph.inputShape.reduce((p, d) => p * d, 1);
    for (const batch of quick ? [1, 37] : [1, 2, 37, 130]) {
      const x = new Float32Array(batch * per);
      for (let i = 0; i < x.length; i++) x[i] = i % 7 === 3 ? ((next() % 401) - 200) / 16 : ((next() % 20001) - 10000) / 1500;
      model.useNative = false;
      const want = model.run(x, batch);
      for (const v of PLAN_VARIANTS) {
        const plan = addon.intPlanCreate(spec.ops, v.direct, v.amx, v.fuse, v.intRequant);
        for (const k of addon.intPlanKernels?.(plan) ?? []) kernels?.add(k);
        const got = new Float32Array(batch * spec.outputSize).fill(Number.NaN);
        addon.intPlanRun(plan, x, batch, got);
        const d = firstDiff(got, want);
        if (d !== -1) fails.push(`IntModel ${name} batch ${batch} (direct ${v.direct}, amx ${v.amx}, fuse ${v.fuse}, int requantize ${v.intRequant}): first difference at ${d}: ${got[d]} vs ${want[d]}`);
      }
      model.useNative = true;
    }
  }
  return fails;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const kernels = new Set<string>();
  const fails = crossCheck(process.argv.includes('quick'), 1234, kernels);
  const backend = intKernelsBackend();
  if (fails.length > 0) {
    console.error(`${backend.int8}/${backend.binary}/${backend.amx}: ${fails.length} mismatches\n${fails.slice(0, 20).join('\n')}`);
    process.exit(1);
  }
  console.log(JSON.stringify({ ok: true, ...backend, kernels: [...kernels].sort() }));
}
