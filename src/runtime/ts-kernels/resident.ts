/**
 * The fast TypeScript executor with activations resident in WebAssembly memory: one arena per
 * model run (WasmGemm's `arena`, above the weights) holds every node's integer output at an offset
 * planned once per batch size, so a layer reads its input where the previous node wrote it and
 * writes its output in the layout the next kernel reads (NCHW int32), with no copy in or out and no
 * array allocated per node. Kernels: layers (FastLayer.runWasm), the residual add, max / average
 * pooling, the input quantizer; the rest (clamp, flatten, sign adds, layers the wasm kernels cannot
 * run exactly) runs in TypeScript on views of the same memory or on copies, through the host
 * executor. Same integers and logits as the other executors (the kernels are each exact).
 * @internal
 */
import type { AddNode, IntGraph, IntNode, LayerNode } from '../intmodel.ts';
import { addRescaled } from '../intmodel.ts';
import type { IntGraphSize } from '../validate.ts';
import { REQUANT_UNSURE, type WasmGemm } from '../wasm/gemm.ts';
import type { FastLayer } from './layer.ts';

/** A node's output as the host executor passes it around. */
export interface HostValue {
  shape: number[];
  ints: Int32Array | null;
  floats: Float32Array | null;
}

/** What the resident executor needs from IntModel. */
export interface ResidentHost {
  readonly graph: IntGraph;
  readonly size: IntGraphSize;
  /** The layer prepared for the fast executor, or null (the host's reference path runs it). */
  fastLayer(node: LayerNode): FastLayer | null;
  /** The host's own executor step on JS arrays (nodes the wasm kernels do not take). */
  step(node: Exclude<IntNode, AddNode>, v: HostValue): HostValue;
  add(node: AddNode, a: HostValue, b: HostValue): HostValue;
}

/** Where each node's output lives for one batch size (int32 offsets from the arena's start). */
export interface ArenaPlan {
  readonly batch: number;
  /** Per node, its output shape with the batch dimension. */
  readonly shapes: readonly (readonly number[])[];
  /** Per node, the offset of its output (a flatten shares its input's). */
  readonly offsets: readonly number[];
  /** Arena size in int32 values. */
  readonly size: number;
}

/** A value during a resident run: integers at an int32 element index of wasm memory, or floats. */
interface Resident {
  readonly shape: readonly number[];
  readonly at: number;
  readonly floats: Float32Array | null;
}

const count = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);

/**
 * Offsets for every node's output: nodes in order, each output placed (first fit) in space no
 * live value holds — live from its node to its last consumer, a flatten's output being its input's
 * storage — and freed after its last consumer ran (so an output never shares space with the
 * inputs of its own node). Each slot holds the values rounded up to 4 plus 4 more (kernels run on
 * whole v128s and `compact` may write 3 values past its output).
 */
export function planArena(graph: { readonly nodes: readonly { readonly op: string }[] }, size: Pick<IntGraphSize, 'inputRefs' | 'shapes'>, batch: number): ArenaPlan {
  const nodes = graph.nodes;
  const refs = size.inputRefs;
  const shapes = size.shapes.map((s) => [batch, ...s]);
  // storage of each node's output: its own, or (flatten) its input's
  const storage = nodes.map((_, i) => i);
  for (let i = 0; i < nodes.length; i++) if (nodes[i]!.op === 'flatten' && refs[i]![0]! >= 0) storage[i] = storage[refs[i]![0]!]!;
  const lastUse = new Int32Array(nodes.length).fill(-1);
  for (let i = 0; i < nodes.length; i++) {
    lastUse[storage[i]!] = Math.max(lastUse[storage[i]!]!, i);
    for (const k of refs[i]!) if (k >= 0) lastUse[storage[k]!] = Math.max(lastUse[storage[k]!]!, i);
  }
  lastUse[storage[nodes.length - 1]!] = nodes.length; // the output outlives the run
  const offsets = new Array<number>(nodes.length).fill(0);
  const slots: { start: number; end: number; owner: number }[] = []; // live slots, sorted by start
  let end = 0;
  for (let i = 0; i < nodes.length; i++) {
    if (storage[i] === i) {
      const need = Math.ceil(count(shapes[i]!) / 4) * 4 + 4;
      // first gap between live slots that fits
      let at = 0, pos = 0;
      for (; pos < slots.length && slots[pos]!.start - at < need; pos++) at = slots[pos]!.end;
      slots.splice(pos, 0, { start: at, end: at + need, owner: i });
      end = Math.max(end, at + need);
      offsets[i] = at;
    } else offsets[i] = offsets[storage[i]!]!;
    for (let s = slots.length - 1; s >= 0; s--) if (lastUse[slots[s]!.owner] === i) slots.splice(s, 1);
  }
  return { batch, shapes, offsets, size: end };
}

/** Runs IntModel graphs with their activations in one WasmGemm's arena (see the module comment). */
export class ResidentExecutor {
  private plan: ArenaPlan | null = null;
  /** Names of the nodes the last run handed to the host's TypeScript path. */
  hostNodes: string[] = [];

  constructor(private readonly host: ResidentHost, private readonly gemm: WasmGemm) {}

  /** The arena plan for `batch` samples (the last one is kept). */
  planFor(batch: number): ArenaPlan {
    if (this.plan?.batch !== batch) this.plan = planArena(this.host.graph, this.host.size, batch);
    return this.plan;
  }

  /** The float logits of `input` ([batch, ...inputShape]); `trace` records every layer's input. */
  run(input: Float32Array, batch: number, trace?: Map<string, { shape: number[]; data: Int32Array }>): Float32Array {
    const { host, gemm } = this;
    const nodes = host.graph.nodes;
    const refs = host.size.inputRefs;
    const plan = this.planFor(batch);
    // every layer's weights go to wasm memory before the arena is reserved (an upload drops it)
    const layers = new Map<LayerNode, FastLayer | null>();
    for (const node of nodes) {
      if (node.op !== 'conv2d' && node.op !== 'linear') continue;
      const fast = host.fastLayer(node);
      const wasm = fast && fast.wasmFallback === null ? fast : null;
      wasm?.uploadWasm(gemm);
      layers.set(node, wasm);
    }
    const base = gemm.arena(plan.size);
    this.hostNodes = [];
    const values: (Resident | null)[] = new Array<Resident | null>(nodes.length).fill(null);
    const inputValue: Resident = { shape: [batch, ...host.graph.inputShape], at: -1, floats: input };
    for (let i = 0; i < nodes.length; i++) {
      const node = nodes[i]!;
      const ins = refs[i]!.map((k) => (k < 0 ? inputValue : values[k]!));
      const shape = plan.shapes[i]!;
      const at = base + plan.offsets[i]!;
      values[i] = this.node(node, ins, shape, at, layers, trace);
    }
    const out = values[nodes.length - 1]!;
    if (!out.floats) throw new Error('IntModel.run: the graph does not end in a dequantizing layer');
    return out.floats;
  }

  private node(node: IntNode, ins: Resident[], shape: readonly number[], at: number, layers: Map<LayerNode, FastLayer | null>, trace?: Map<string, { shape: number[]; data: Int32Array }>): Resident {
    const { gemm } = this;
    const v = ins[0]!;
    switch (node.op) {
      case 'quantize': {
        const inp = node.input;
        if (inp.mode !== 'affine' || !v.floats) break;
        const n = v.floats.length;
        const src = gemm.scratch(Math.ceil(n / 4) * 16) / 4;
        gemm.float32View().set(v.floats, src);
        gemm.quantize(src, at, n, inp.scale, inp.zeroPoint, inp.qmin, inp.qmax);
        return { shape, at, floats: null };
      }
      case 'conv2d':
      case 'linear': {
        if (v.floats) break;
        if (trace) trace.set(node.name, { shape: [...v.shape], data: this.ints(v) });
        const fast = layers.get(node);
        if (!fast) break;
        const floats = fast.runWasm(v.shape, v.at, at, gemm);
        return { shape, at, floats };
      }
      case 'add': {
        const b = ins[1]!;
        if (node.output === 'sign' || v.floats || b.floats || !this.addWasm(node, v, b, at)) break;
        return { shape, at, floats: null };
      }
      case 'maxpool2d':
      case 'avgpool2d':
      case 'adaptiveavgpool2d': {
        if (v.floats) break;
        const [n, c, h, w] = v.shape as [number, number, number, number];
        const [, , oh, ow] = shape as [number, number, number, number];
        let k: readonly [number, number], s: readonly [number, number], p: readonly [number, number];
        if (node.op === 'adaptiveavgpool2d') {
          k = [h / oh, w / ow];
          s = k;
          p = [0, 0];
        } else ({ kernelSize: k, stride: s, padding: p } = node);
        if (node.op === 'maxpool2d') {
          gemm.pool(v.at, at, n * c, h, w, k, s, p, oh, ow);
          return { shape, at, floats: null };
        }
        const fracBits = node.fracBits ?? 0;
        const inZero = node.zeroPoint * 2 ** fracBits, divisor = k[0] * k[1] * 2 ** fracBits;
        if (!(Math.abs(inZero) < 2 ** 31 && divisor < 2 ** 31 && k[0] * k[1] < 2 ** 21)) break;
        gemm.pool(v.at, at, n * c, h, w, k, s, p, oh, ow, { zero: node.zeroPoint, inZero, divisor });
        return { shape, at, floats: null };
      }
      case 'clamp': {
        if (v.floats) break;
        const lo = node.lo ?? -Infinity, hi = node.hi ?? Infinity;
        const view = gemm.int32View();
        const n = count(shape);
        for (let i = 0; i < n; i++) {
          const a = view[v.at + i]!;
          view[at + i] = a < lo ? lo : a > hi ? hi : a;
        }
        return { shape, at, floats: null };
      }
      case 'flatten':
        return { shape, at: v.at, floats: v.floats };
    }
    // the host's TypeScript path on copies; integer results go back to the node's slot
    this.hostNodes.push(node.name);
    const host = (r: Resident): HostValue => ({ shape: [...r.shape], ints: r.floats ? null : this.ints(r), floats: r.floats });
    const r = node.op === 'add' ? this.host.add(node, host(v), host(ins[1]!)) : this.host.step(node, host(v));
    if (r.ints) gemm.int32View().set(r.ints, at);
    return { shape, at, floats: r.ints ? null : r.floats };
  }

  /** A copy of a resident integer value. */
  private ints(v: Resident): Int32Array {
    return this.gemm.int32View().slice(v.at, v.at + count(v.shape));
  }

  /**
   * The add node on the wasm kernel, in place in the arena; values it leaves unsure by the
   * reference's own `addRescaled`. False when the kernel cannot take the node (the host runs it).
   */
  private addWasm(node: AddNode, a: Resident, b: Resident, at: number): boolean {
    const [za, zb] = node.inputZeroPoints;
    const [ma, mb] = node.multipliers;
    const { zeroPoint: z, lo, hi, shift } = node;
    if (lo <= REQUANT_UNSURE || lo - z < -(2 ** 31) || hi - z > 2 ** 31 - 1) return false;
    const n = count(a.shape);
    const half = shift === 0 ? 0 : 2 ** (shift - 1);
    const inv = 2 ** -shift;
    // whole v128s: the lanes past n read and write the slots' padding
    if (this.gemm.add(Math.ceil(n / 4) * 4, za, zb, ma, mb, half, inv, lo - z, hi - z, z, { a: a.at, b: b.at, out: at })) return true;
    const view = this.gemm.int32View();
    for (let i = 0; i < n; i++) {
      if (view[at + i] !== REQUANT_UNSURE) continue;
      const r = addRescaled(view[a.at + i]! - za, ma, view[b.at + i]! - zb, mb, shift) + z;
      view[at + i] = r < lo ? lo : r > hi ? hi : r;
    }
    return true;
  }
}
