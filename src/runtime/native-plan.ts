/**
 * Compiles an IntModel graph into the op list of the native executor (native/intmodel.h), which
 * runs the whole integer forward pass in one call and gives the same logits as the TypeScript
 * executor bit for bit.
 *
 * Layout: the native side keeps activations per sample in NHWC order ([H, W, C]) as bytes (uint8
 * or int8, whichever holds the producer's range), int32 (wide ranges, e.g. before an average
 * pooling) or packed sign bits (rows of ceil(F/64) words, bit 1 = +1: a Linear with a sign output
 * that feeds a binary Linear with sign input, so the activations stay in the bit domain). So that
 * the integers equal the NCHW reference, conv weights go from OIHW to (O, kh, kw, C/groups) order
 * and a Linear after flattening an [C, H, W] map gets its columns permuted from (c, h, w) to (h, w, c).
 *
 * Unsupported graphs (a DAG of graph version 2, a layer input wider than 8 bits, a non-final float value, flattening other
 * than all-but-batch, a 4-D dequantized output) compile to a reason string and run in TypeScript.
 */
import type { NativeIntOp } from '../backend/native/addon.ts';
import type { IntModel, IntNode, LayerNode, LayerOutput } from './intmodel.ts';
import { convOutputSize } from './ops.ts';

/** Value types of native/intmodel.h (IType). */
const U8 = 0;
const S8 = 1;
const I32 = 2;
const BITS = 3;
const F32 = 4;

const KIND = { quantize: 0, conv: 1, linear: 2, maxpool: 3, avgpool: 4, clamp: 5 } as const;
const OUT_MODE = { requantize: 0, sign: 1, dequantize: 2 } as const;

interface ValueState {
  type: number;
  C: number;
  H: number;
  W: number;
  /** Set after flattening an NHWC map with C > 1 and H·W > 1: the next Linear permutes its columns. */
  permute: { C: number; H: number; W: number } | null;
  rank4: boolean;
}

export interface NativePlanSpec {
  readonly ops: NativeIntOp[];
  readonly outputSize: number;
}

function rangeType(lo: number, hi: number): number {
  if (lo >= 0 && hi <= 255) return U8;
  if (lo >= -128 && hi <= 127) return S8;
  return I32;
}

function opOf(meta: Partial<Record<keyof typeof M, number>>, f64: [number, number, number] = [1, 0, 0], tensors: Omit<NativeIntOp, 'meta' | 'f64'> = {}): NativeIntOp {
  const m = new Int32Array(32);
  m[M.kh] = 1; m[M.kw] = 1; m[M.sh] = 1; m[M.sw] = 1; m[M.dh] = 1; m[M.dw] = 1; m[M.groups] = 1;
  for (const [k, v] of Object.entries(meta)) m[M[k as keyof typeof M]] = v!;
  return { meta: m, f64: Float64Array.from(f64), ...tensors };
}

/** Field positions of `meta` (native/binding.cc IntPlanCreate). */
const M = {
  kind: 0, in: 1, out: 2, C: 3, H: 4, W: 5, OC: 6, OH: 7, OW: 8, kh: 9, kw: 10, sh: 11, sw: 12, ph: 13, pw: 14, dh: 15, dw: 16,
  groups: 17, zero: 18, qmin: 19, qmax: 20, mode: 21, z: 22, lo: 23, hi: 24, biasShift: 25, fracBits: 26, K: 27,
} as const;

/** Whether a sign-output Linear at `index` feeds (through flattens only) a binary Linear with sign input. */
function feedsXnorLinear(nodes: readonly IntNode[], index: number): boolean {
  for (let j = index + 1; j < nodes.length; j++) {
    const n = nodes[j]!;
    if (n.op === 'flatten') continue;
    return n.op === 'linear' && n.weightFormat === 'binary' && n.input.mode === 'sign';
  }
  return false;
}

function outputStage(model: IntModel, node: LayerNode, out: LayerOutput, outType: number): { meta: Partial<Record<keyof typeof M, number>>; tensors: Omit<NativeIntOp, 'meta' | 'f64'> } {
  if (out.mode === 'requantize') {
    return {
      meta: { mode: OUT_MODE.requantize, z: out.zeroPoint, lo: out.lo, hi: out.hi, biasShift: out.biasShift },
      tensors: { mult: model.tensor(out.multiplier).data as Int32Array, shift: model.tensor(out.shift).data as Int32Array, bias: model.tensor(out.bias).data as Int32Array },
    };
  }
  if (out.mode === 'sign') {
    return { meta: { mode: OUT_MODE.sign }, tensors: { threshold: model.tensor(out.threshold).data as Int32Array, direction: model.tensor(out.direction).data as Int32Array } };
  }
  void node;
  void outType;
  return { meta: { mode: OUT_MODE.dequantize }, tensors: { S: model.tensor(out.scale).data as Float32Array, B: model.tensor(out.bias).data as Float32Array } };
}

/** The native op list of `model`, or the reason it cannot run natively. */
export function compileNativePlan(model: IntModel): NativePlanSpec | string {
  const nodes = model.graph.nodes;
  const shape = model.graph.inputShape;
  // The native executor (native/intmodel.cc) runs chains; a DAG (residual adds, a value used twice)
  // runs in the TypeScript executor, whose layers still use the native GEMM kernels.
  if (model.graph.version !== 1) return 'the graph is a DAG (version 2: residual adds or a value used twice); the native executor runs chains only';
  if (shape.length !== 3 && shape.length !== 1) return `input shape [${shape.join(', ')}] is neither [C, H, W] nor [F]`;
  const first = nodes[0]!;
  if (first.op !== 'quantize') return 'the graph does not start with quantize';
  const v: ValueState = shape.length === 3
    ? { type: F32, C: shape[0]!, H: shape[1]!, W: shape[2]!, permute: null, rank4: true }
    : { type: F32, C: shape[0]!, H: 1, W: 1, permute: null, rank4: false };
  const ops: NativeIntOp[] = [];
  const dims = (): { C: number; H: number; W: number } => ({ C: v.C, H: v.H, W: v.W });
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!;
    const last = i === nodes.length - 1;
    if (v.type === F32 && i > 0) {
      if (node.op === 'flatten') continue;
      return `'${node.name}' follows the float output`;
    }
    switch (node.op) {
      case 'add':
        return `'${node.name}' is an add node`;
      case 'quantize': {
        if (i !== 0) return 'a second quantize node';
        const inp = node.input;
        const type = inp.mode === 'sign' ? S8 : rangeType(inp.qmin, inp.qmax);
        ops.push(opOf(inp.mode === 'sign'
          ? { kind: KIND.quantize, in: F32, out: type, ...dims(), OC: v.C, OH: v.H, OW: v.W, mode: 1 }
          : { kind: KIND.quantize, in: F32, out: type, ...dims(), OC: v.C, OH: v.H, OW: v.W, zero: inp.zeroPoint, qmin: inp.qmin, qmax: inp.qmax },
        [inp.mode === 'sign' ? 1 : inp.scale, 0, 0]));
        v.type = type;
        break;
      }
      case 'conv2d':
      case 'linear': {
        const inp = node.input;
        const xnor = node.op === 'linear' && v.type === BITS;
        if (!xnor && v.type !== U8 && v.type !== S8) return `'${node.name}' has an input wider than 8 bits`;
        const zero = inp.mode === 'affine' ? inp.zeroPoint : 0;
        const out = node.output;
        const O = node.outFeatures;
        let outType: number;
        if (out.mode === 'requantize') outType = rangeType(out.lo, out.hi);
        else if (out.mode === 'sign') outType = node.op === 'linear' && feedsXnorLinear(nodes, i) ? BITS : S8;
        else {
          outType = F32;
          const rest = nodes.slice(i + 1);
          if (!rest.every((n) => n.op === 'flatten')) return `'${node.name}' dequantizes before the end`;
        }
        const stage = outputStage(model, node, out, outType);
        if (node.op === 'conv2d') {
          const g = node.conv!;
          if (!v.rank4 || v.C !== g.inChannels) return `'${node.name}' expects [${g.inChannels}, H, W]`;
          const [OH, OW] = convOutputSize(v.H, v.W, g);
          if (OH <= 0 || OW <= 0) return `'${node.name}' has no output positions`;
          if (outType === F32 && OH * OW !== 1) return `'${node.name}' dequantizes a feature map`;
          const cg = g.inChannels / g.groups;
          const [kh, kw] = g.kernelSize;
          const K = cg * kh * kw;
          const wv = model.weightValues(node);
          const w = new Int8Array(O * K);
          for (let o = 0; o < O; o++) {
            for (let c = 0; c < cg; c++) {
              for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++) w[o * K + (ky * kw + kx) * cg + c] = wv[o * K + (c * kh + ky) * kw + kx]!;
            }
          }
          ops.push(opOf({
            kind: KIND.conv, in: v.type, out: outType, ...dims(), OC: O, OH, OW, kh, kw, sh: g.stride[0], sw: g.stride[1], ph: g.padding[0], pw: g.padding[1],
            dh: g.dilation[0], dw: g.dilation[1], groups: g.groups, zero, K, ...stage.meta,
          }, [1, 0, 0], { w, ...stage.tensors }));
          v.C = O; v.H = OH; v.W = OW;
        } else {
          const K = node.inFeatures;
          if (v.rank4 || v.C !== K) return `'${node.name}' expects [${K}] features`;
          let tensors: Omit<NativeIntOp, 'meta' | 'f64'>;
          if (xnor) {
            if (node.weightFormat !== 'binary' || inp.mode !== 'sign') return `'${node.name}': bit input without binary weights`;
            tensors = { wbits: model.tensor(node.weight).data as Uint8Array };
          } else {
            const wv = model.weightValues(node);
            let w = wv;
            const p = v.permute;
            if (p) {
              const HW = p.H * p.W;
              w = new Int8Array(O * K);
              for (let o = 0; o < O; o++) for (let c = 0; c < p.C; c++) for (let s = 0; s < HW; s++) w[o * K + s * p.C + c] = wv[o * K + c * HW + s]!;
            }
            tensors = { w };
          }
          ops.push(opOf({ kind: KIND.linear, in: v.type, out: outType, C: K, H: 1, W: 1, OC: O, OH: 1, OW: 1, zero, K, ...stage.meta }, [1, 0, 0], { ...tensors, ...stage.tensors }));
          v.C = O; v.permute = null;
        }
        v.type = outType;
        if (last && outType !== F32) return 'the graph does not end in a dequantizing layer';
        break;
      }
      case 'maxpool2d':
      case 'avgpool2d':
      case 'adaptiveavgpool2d': {
        if (!v.rank4 || v.type === BITS) return `'${node.name}' needs a feature map`;
        let k: readonly [number, number];
        let s: readonly [number, number];
        let p: readonly [number, number];
        if (node.op === 'adaptiveavgpool2d') {
          const [oh, ow] = node.outputSize;
          if (v.H % oh !== 0 || v.W % ow !== 0) return `'${node.name}': input not a multiple of the output size`;
          k = [v.H / oh, v.W / ow];
          s = k;
          p = [0, 0];
        } else ({ kernelSize: k, stride: s, padding: p } = node);
        const OH = Math.floor((v.H + 2 * p[0] - k[0]) / s[0]) + 1;
        const OW = Math.floor((v.W + 2 * p[1] - k[1]) / s[1]) + 1;
        if (OH <= 0 || OW <= 0) return `'${node.name}' has no output positions`;
        const max = node.op === 'maxpool2d';
        const outType = max ? v.type : I32;
        ops.push(opOf({
          kind: max ? KIND.maxpool : KIND.avgpool, in: v.type, out: outType, ...dims(), OC: v.C, OH, OW, kh: k[0], kw: k[1], sh: s[0], sw: s[1], ph: p[0], pw: p[1],
          zero: max ? 0 : node.zeroPoint, fracBits: max ? 0 : node.fracBits ?? 0,
        }));
        v.H = OH; v.W = OW; v.type = outType;
        break;
      }
      case 'clamp': {
        if (v.type === BITS) return `'${node.name}' clamps sign bits`;
        const lo = node.lo ?? -Infinity;
        const hi = node.hi ?? Infinity;
        const outType = v.type !== I32 ? v.type : rangeType(lo, hi);
        ops.push(opOf({ kind: KIND.clamp, in: v.type, out: outType, ...dims(), OC: v.C, OH: v.H, OW: v.W }, [1, lo, hi]));
        v.type = outType;
        break;
      }
      case 'flatten': {
        const rank = v.rank4 ? 4 : 2;
        const start = node.startDim < 0 ? node.startDim + rank : node.startDim;
        const end = node.endDim < 0 ? node.endDim + rank : node.endDim;
        if (start !== 1 || end !== rank - 1) return `'${node.name}' flattens other dimensions than all but the batch`;
        if (v.rank4) {
          if (v.C > 1 && v.H * v.W > 1) v.permute = { C: v.C, H: v.H, W: v.W };
          v.C = v.C * v.H * v.W; v.H = 1; v.W = 1; v.rank4 = false;
        }
        break;
      }
    }
  }
  if (v.type !== F32) return 'the graph does not end in a dequantizing layer';
  return { ops, outputSize: v.C * v.H * v.W };
}
