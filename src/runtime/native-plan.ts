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
 * A DAG (graph version 2: residual adds, a value read twice) compiles to ops with value slots
 * (meta src / src2 / dst, assigned by liveness: a slot is reused after the last reader of its value)
 * and the integer add op (an add with `output: 'sign'`, a binary ResNet's sum feeding a sign input,
 * becomes the sign add: int8 ±1, native/signadd.h); a chain (version 1) compiles to the slot-less
 * chain plan as before.
 *
 * The two inputs of an add can sit in different native layouts (e.g. a flattened NHWC map and a
 * Linear's output, or two flattened maps of different [C, H, W]): the compiler then emits a permute
 * op (a per-sample gather) that puts the second input into the first one's order; the sum keeps the
 * first input's layout.
 *
 * A per-group Linear (graph version 3) is a linear op with meta groupSize = G, its weights in the
 * TypeScript column order, the relative multipliers (groupMult) and, after a permuted flatten, the
 * gather `index` of its inputs (native/intmodel.cc runGroupLinear).
 *
 * Unsupported graphs (a layer input wider than 8 bits, a non-final float value, flattening other
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

const KIND = { quantize: 0, conv: 1, linear: 2, maxpool: 3, avgpool: 4, clamp: 5, add: 6, permute: 7 } as const;
const OUT_MODE = { requantize: 0, sign: 1, dequantize: 2 } as const;

interface ValueState {
  type: number;
  C: number;
  H: number;
  W: number;
  /** Set after flattening an NHWC map with C > 1 and H·W > 1: the next Linear permutes its columns. */
  permute: { C: number; H: number; W: number } | null;
  rank4: boolean;
  /** A Conv1d's map [N, C, L] (rank 3), held as H = 1, W = L (rank4 is true too). */
  length1d: boolean;
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
  const m = new Int32Array(34);
  m[M.kh] = 1; m[M.kw] = 1; m[M.sh] = 1; m[M.sw] = 1; m[M.dh] = 1; m[M.dw] = 1; m[M.groups] = 1;
  for (const [k, v] of Object.entries(meta)) m[M[k as keyof typeof M]] = v!;
  return { meta: m, f64: Float64Array.from(f64), ...tensors };
}

/** Field positions of `meta` (native/binding.cc IntPlanCreate). */
const M = {
  kind: 0, in: 1, out: 2, C: 3, H: 4, W: 5, OC: 6, OH: 7, OW: 8, kh: 9, kw: 10, sh: 11, sw: 12, ph: 13, pw: 14, dh: 15, dw: 16,
  groups: 17, zero: 18, qmin: 19, qmax: 20, mode: 21, z: 22, lo: 23, hi: 24, biasShift: 25, fracBits: 26, K: 27,
  slots: 28, src: 29, src2: 30, dst: 31, signInput: 32, groupSize: 33,
} as const;

/**
 * The native order of a value's elements per sample: order[p] = the TypeScript (NCHW, row-major)
 * index of the element at native position p, or null when the two coincide. A feature map, and a
 * flattened one (`permute`), is NHWC: p = (h W + w) C + c holds index c H W + h W + w.
 */
function nativeOrder(s: ValueState): Int32Array | null {
  const d = s.rank4 ? { C: s.C, H: s.H, W: s.W } : s.permute;
  if (!d || d.C === 1 || d.H * d.W === 1) return null;
  const HW = d.H * d.W;
  const order = new Int32Array(d.C * HW);
  for (let sp = 0; sp < HW; sp++) for (let c = 0; c < d.C; c++) order[sp * d.C + c] = c * HW + sp;
  return order;
}

/**
 * The gather that puts value b into value a's native order (index[p] = b's native position of the
 * element at a's position p), or null when both orders are the same.
 */
function layoutGather(a: ValueState, b: ValueState): Int32Array | null {
  const oa = nativeOrder(a);
  const ob = nativeOrder(b);
  if (oa === null && ob === null) return null;
  if (oa !== null && ob !== null && oa.length === ob.length && oa.every((v, k) => v === ob[k])) return null;
  const n = (oa ?? ob)!.length;
  const positionInB = new Int32Array(n);
  for (let p = 0; p < n; p++) positionInB[ob ? ob[p]! : p] = p;
  return Int32Array.from({ length: n }, (_, p) => positionInB[oa ? oa[p]! : p]!);
}

/** Whether a sign-output Linear feeds (through flattens only) binary Linears with sign input only (`readers`: its readers past flattens). */
function feedsXnorLinear(nodes: readonly IntNode[], readers: readonly number[]): boolean {
  return readers.length > 0 && readers.every((j) => {
    const n = nodes[j]!;
    return n.op === 'linear' && n.weightFormat === 'binary' && n.input.mode === 'sign';
  });
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
  const refs = model.size.inputRefs;
  if (shape.length !== 3 && shape.length !== 2 && shape.length !== 1) return `input shape [${shape.join(', ')}] is neither [C, H, W], [C, L] nor [F]`;
  const first = nodes[0]!;
  if (first.op !== 'quantize') return 'the graph does not start with quantize';
  const input: ValueState = shape.length === 3
    ? { type: F32, C: shape[0]!, H: shape[1]!, W: shape[2]!, permute: null, rank4: true, length1d: false }
    : shape.length === 2
      ? { type: F32, C: shape[0]!, H: 1, W: shape[1]!, permute: null, rank4: true, length1d: true }
      : { type: F32, C: shape[0]!, H: 1, W: 1, permute: null, rank4: false, length1d: false };
  // Per node: the state of its output and the node that owns the buffer (a flatten emits no op: its
  // output is its input's buffer), and per buffer owner the last node that reads it.
  const states: ValueState[] = [];
  const owner = new Int32Array(nodes.length);
  const lastRead = new Int32Array(nodes.length).fill(-1);
  const consumers: number[][] = nodes.map(() => []);
  for (let i = 0; i < nodes.length; i++) {
    owner[i] = nodes[i]!.op === 'flatten' && refs[i]![0]! >= 0 ? owner[refs[i]![0]!]! : i;
    for (const k of refs[i]!) if (k >= 0) lastRead[owner[k]!] = i;
    if (nodes[i]!.op !== 'flatten') for (const k of refs[i]!) if (k >= 0) consumers[owner[k]!]!.push(i);
  }
  // Value slots by liveness: a node's output takes a free slot (never one of its own inputs', which
  // are still live while it runs); a slot is free again after the last reader of its value.
  let lastOp = nodes.length - 1;  // the last node that emits an op (writes the model output)
  while (lastOp > 0 && nodes[lastOp]!.op === 'flatten') lastOp--;
  const slotOf = new Int32Array(nodes.length).fill(-1);
  const free: number[] = [];
  let slotCount = 0;
  const ops: NativeIntOp[] = [];
  const takeSlot = (): number => {
    free.sort((a, b) => a - b);
    return free.length > 0 ? free.shift()! : slotCount++;
  };
  // `src2`: the second input's slot when it is not the producer's (a permuted copy)
  const emit = (i: number, op: NativeIntOp, src2?: number): void => {
    const srcs = refs[i]!.map((k) => (k < 0 ? -1 : slotOf[owner[k]!]!));
    if (src2 !== undefined) srcs[1] = src2;
    let dst = -1;
    if (i !== lastOp) {
      dst = takeSlot();
      slotOf[i] = dst;
    }
    op.meta[M.slots] = 1;
    op.meta[M.src] = srcs[0]!;
    op.meta[M.src2] = srcs.length > 1 ? srcs[1]! : -1;
    op.meta[M.dst] = dst;
    ops.push(op);
    for (const k of new Set(refs[i]!.map((r) => (r < 0 ? -1 : owner[r]!)))) if (k >= 0 && lastRead[k] === i) free.push(slotOf[k]!);
    if (lastRead[i] < 0 && dst >= 0) free.push(dst);
  };
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!;
    const last = i === nodes.length - 1;
    const ins = refs[i]!.map((k) => (k < 0 ? input : states[k]!));
    const v: ValueState = { ...ins[0]! };
    const dims = (): { C: number; H: number; W: number } => ({ C: v.C, H: v.H, W: v.W });
    if (ins.some((s) => s.type === F32) && i > 0) {
      if (node.op === 'flatten') {
        states.push(v);
        continue;
      }
      return `'${node.name}' follows the float output`;
    }
    switch (node.op) {
      case 'add': {
        const b = ins[1]!;
        if (v.type === BITS || b.type === BITS) return `'${node.name}' adds sign bits`;
        if (v.C * v.H * v.W !== b.C * b.H * b.W || v.rank4 !== b.rank4 || v.length1d !== b.length1d || (v.rank4 && (v.C !== b.C || v.H !== b.H || v.W !== b.W))) {
          return `'${node.name}' adds values of different shapes`;
        }
        // b in another native order (e.g. a flattened NHWC map + a Linear output): a permute op
        // copies it into a's order into a temporary slot, free again after the add
        const gather = layoutGather(v, b);
        let src2: number | undefined;
        if (gather) {
          const count = gather.length;
          src2 = takeSlot();
          const perm = opOf({ kind: KIND.permute, in: b.type, out: b.type, C: count, H: 1, W: 1, OC: count, OH: 1, OW: 1 }, [1, 0, 0], { index: gather });
          perm.meta[M.slots] = 1;
          perm.meta[M.src] = slotOf[owner[refs[i]![1]!]!]!;
          perm.meta[M.src2] = -1;
          perm.meta[M.dst] = src2;
          ops.push(perm);
        }
        // a sign add (binary ResNet: the sum feeds a sign input) writes int8 ±1, mode 1
        const sign = node.output === 'sign';
        const outType = sign ? S8 : rangeType(node.lo, node.hi);
        emit(i, opOf({
          kind: KIND.add, in: v.type, out: outType, ...dims(), OC: v.C, OH: v.H, OW: v.W, zero: node.inputZeroPoints[0], qmin: node.inputZeroPoints[1], qmax: b.type,
          ...(sign ? { mode: 1 } : { biasShift: node.shift, z: node.zeroPoint, lo: node.lo, hi: node.hi }),
        }, [1, node.multipliers[0], node.multipliers[1]]), src2);
        if (src2 !== undefined) free.push(src2);
        v.type = outType;
        break;
      }
      case 'quantize': {
        if (i !== 0) return 'a second quantize node';
        const inp = node.input;
        const type = inp.mode === 'sign' ? S8 : rangeType(inp.qmin, inp.qmax);
        emit(i, opOf(inp.mode === 'sign'
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
        else if (out.mode === 'sign') outType = node.op === 'linear' && feedsXnorLinear(nodes, consumers[i]!) ? BITS : S8;
        else {
          outType = F32;
          const rest = nodes.slice(i + 1);
          if (!rest.every((n) => n.op === 'flatten')) return `'${node.name}' dequantizes before the end`;
        }
        const stage = outputStage(model, node, out, outType);
        if (node.op === 'conv2d') {
          const g = node.conv!;
          if (!v.rank4 || v.C !== g.inChannels) return `'${node.name}' expects [${g.inChannels}, H, W]`;
          if ((g.conv1d === true) !== v.length1d) return `'${node.name}' expects a ${g.conv1d === true ? '[C, L]' : '[C, H, W]'} map`;
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
          emit(i, opOf({
            kind: KIND.conv, in: v.type, out: outType, ...dims(), OC: O, OH, OW, kh, kw, sh: g.stride[0], sw: g.stride[1], ph: g.padding[0], pw: g.padding[1],
            dh: g.dilation[0], dw: g.dilation[1], groups: g.groups, zero, K, ...stage.meta,
            // ±1 inputs: with ±1 (binary) weights the native side runs XNOR-popcount (native/xnorconv.h)
            signInput: inp.mode === 'sign' ? 1 : 0,
          }, [1, 0, 0], { w, ...stage.tensors }));
          v.C = O; v.H = OH; v.W = OW;
        } else {
          const K = node.inFeatures;
          if (v.rank4 || v.C !== K) return `'${node.name}' expects [${K}] features`;
          let tensors: Omit<NativeIntOp, 'meta' | 'f64'>;
          if (node.weightGroupSize !== undefined) {
            // per-group weights: kept in the TS column order (groups contiguous); after a permuted
            // flatten the kernel gathers its inputs instead (index[TS column] = native position)
            if (xnor) return `'${node.name}': per-group weights with a bit input`;
            const p = v.permute;
            let index: Int32Array | undefined;
            if (p) {
              const HW = p.H * p.W;
              index = new Int32Array(K);
              for (let c = 0; c < p.C; c++) for (let s = 0; s < HW; s++) index[c * HW + s] = s * p.C + c;
            }
            tensors = { w: model.weightValues(node), groupMult: model.tensor(node.groupMultipliers!).data as Int32Array, ...(index ? { index } : {}) };
            emit(i, opOf({ kind: KIND.linear, in: v.type, out: outType, C: K, H: 1, W: 1, OC: O, OH: 1, OW: 1, zero, K, groupSize: node.weightGroupSize, ...stage.meta }, [1, 0, 0], { ...tensors, ...stage.tensors }));
            v.C = O; v.permute = null; v.type = outType;
            if (last && outType !== F32) return 'the graph does not end in a dequantizing layer';
            break;
          }
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
          emit(i, opOf({ kind: KIND.linear, in: v.type, out: outType, C: K, H: 1, W: 1, OC: O, OH: 1, OW: 1, zero, K, ...stage.meta }, [1, 0, 0], { ...tensors, ...stage.tensors }));
          v.C = O; v.permute = null;
        }
        v.type = outType;
        if (last && outType !== F32) return 'the graph does not end in a dequantizing layer';
        break;
      }
      case 'maxpool2d':
      case 'avgpool2d':
      case 'adaptiveavgpool2d': {
        if (!v.rank4 || v.type === BITS || v.length1d) return `'${node.name}' needs a 2-D feature map`;
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
        emit(i, opOf({
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
        emit(i, opOf({ kind: KIND.clamp, in: v.type, out: outType, ...dims(), OC: v.C, OH: v.H, OW: v.W }, [1, lo, hi]));
        v.type = outType;
        break;
      }
      case 'flatten': {
        const rank = v.rank4 ? (v.length1d ? 3 : 4) : 2;
        const start = node.startDim < 0 ? node.startDim + rank : node.startDim;
        const end = node.endDim < 0 ? node.endDim + rank : node.endDim;
        if (start !== 1 || end !== rank - 1) return `'${node.name}' flattens other dimensions than all but the batch`;
        if (v.rank4) {
          if (v.C > 1 && v.H * v.W > 1) v.permute = { C: v.C, H: v.H, W: v.W };
          v.C = v.C * v.H * v.W; v.H = 1; v.W = 1; v.rank4 = false; v.length1d = false;
        }
        break;
      }
    }
    states.push(v);
  }
  const out = states[nodes.length - 1]!;
  if (out.type !== F32) return 'the graph does not end in a dequantizing layer';
  // A chain (version 1) keeps the native chain semantics: no slot fields.
  if (model.graph.version === 1) for (const op of ops) op.meta.fill(0, M.slots, M.dst + 1);
  return { ops, outputSize: out.C * out.H * out.W };
}
