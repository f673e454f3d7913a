/**
 * Binary elementwise ops, `where` and the exact unary ops on the wasm backend: adapters to the
 * functions of ./elementwise-module.ts, bit-exact with the reference kernels. A numpy broadcast is
 * collapsed to at most three dims [d0, d1, d2] (adjacent dims merged where every operand is
 * contiguous or broadcast across both); an operand that broadcasts along d2 is expanded to full rows
 * in the arena, so the module reads every operand as rows of d2 floats. Declines (the reference
 * runs) on anything but float32, on shapes that do not broadcast, on empty outputs, on broadcasts
 * that stay above three dims after collapsing, when the memory does not fit, and on small inputs the
 * reference computes with a plain loop (see DIRECT_MIN).
 * @internal
 */
import type { Kernel, RawTensor } from '../primitives.ts';
import { sizeOf, stridesOf } from '../primitives.ts';
import type { EwBinary, EwUnary } from './elementwise-module.ts';
import type { WasmRuntime } from './runtime.ts';
import { allF32, copyOut } from './util.ts';

/**
 * Below this many output elements, an op the reference kernel computes with a plain loop (unary,
 * same shapes, scalar operands) stays there: measured (mul, Node 20) reference 1.4 µs against wasm
 * 3.8 µs at 256 elements, 31 µs against 12 µs at 25,600.
 */
let DIRECT_MIN = 2048;

/** @internal Sets the size below which direct cases decline (tests set 0 to run every size in wasm); returns the previous one. */
export function setDirectMin(n: number): number {
  const previous = DIRECT_MIN;
  DIRECT_MIN = n;
  return previous;
}

/** The broadcast shape of `shapes`, or null when they do not broadcast. */
function broadcastAll(shapes: readonly (readonly number[])[]): number[] | null {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const e = s[s.length - rank + i] ?? 1;
      if (e === 1) continue;
      if (d !== 1 && d !== e) return null;
      d = e;
    }
    out.push(d);
  }
  return out;
}

/** Strides (in elements) of `shape`'s data read over `out` (0 where it broadcasts). */
function stridesOver(shape: readonly number[], out: readonly number[]): number[] {
  const own = stridesOf(shape);
  const lead = out.length - shape.length;
  return out.map((_, d) => (d < lead || shape[d - lead] === 1 ? 0 : own[d - lead]!));
}

/** The collapsed broadcast: dims [d0, d1, d2] and per operand its strides over them; null above three dims. */
export function collapseBroadcast(out: readonly number[], shapes: readonly (readonly number[])[]): { dims: [number, number, number]; strides: [number, number, number][] } | null {
  const all = shapes.map((s) => stridesOver(s, out));
  const dims: number[] = [];
  const strides: number[][] = shapes.map(() => []);
  for (let d = 0; d < out.length; d++) {
    const e = out[d]!;
    if (e === 1) continue;
    const last = dims.length - 1;
    // merge into the previous dim when every operand walks both as one: stride(prev) = stride(d)·e
    if (last >= 0 && all.every((st, k) => strides[k]![last] === st[d]! * e)) {
      dims[last] = dims[last]! * e;
      all.forEach((st, k) => (strides[k]![last] = st[d]!));
    } else {
      dims.push(e);
      all.forEach((st, k) => strides[k]!.push(st[d]!));
    }
  }
  if (dims.length > 3) return null;
  while (dims.length < 3) {
    dims.unshift(1);
    strides.forEach((st) => st.unshift(0));
  }
  return { dims: dims as [number, number, number], strides: strides as [number, number, number][] };
}

/**
 * Binary op (a, b) -> op(a, b), or where (cond, a, b) -> cond ≠ 0 ? a : b, with numpy broadcasting;
 * copy (x) -> x broadcast to attrs.shape (broadcastTo).
 */
export function broadcastKernel(rt: WasmRuntime, op: EwBinary): Kernel {
  const arity = op === 'where' ? 3 : op === 'copy' ? 1 : 2;
  const direct = op !== 'where' && op !== 'copy';
  return (inputs, attrs) => {
    if (inputs.length !== arity || !allF32(inputs)) return undefined;
    // small operands the reference kernel reads directly (same sizes, or a scalar against the
    // other) are faster there than the ~2 µs of copying in and out of wasm memory
    if (direct) {
      const a = inputs[0]!.data.length;
      const b = inputs[1]!.data.length;
      if (Math.max(a, b) < DIRECT_MIN && (a === b || a === 1 || b === 1)) return undefined;
    }
    let shape = broadcastAll(inputs.map((t) => t.shape));
    if (op === 'copy') {
      const target = (attrs as { shape?: readonly number[] }).shape;
      if (!shape || !target) return undefined;
      const full = broadcastAll([shape, target]);
      if (!full || full.length !== target.length || full.some((d, i) => d !== target[i])) return undefined;
      shape = [...target];
    }
    if (!shape) return undefined;
    const n = sizeOf(shape);
    if (n === 0) return undefined;

    const plan = collapseBroadcast(shape, inputs.map((t) => t.shape));
    if (!plan) return undefined;
    const [d0, d1, d2] = plan.dims;
    const arena = rt.arena;
    arena.reset();
    // per operand: where its rows go, how many floats, rows per i0 and per i1, and whether it is expanded
    const layout = inputs.map((t, k) => {
      const [t0, t1, t2] = plan.strides[k]!;
      if (t2 === 1) return { at: arena.reserve(t.data.length), floats: t.data.length, r0: t0 / d2, r1: t1 / d2, expand: false };
      const r1 = t1 ? 1 : 0;
      const r0 = t0 ? (t1 ? d1 : 1) : 0;
      const floats = (t0 ? d0 : 1) * (t1 ? d1 : 1) * d2;
      return { at: arena.reserve(floats), floats, r0, r1, expand: true };
    });
    const yp = arena.reserve(n);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    inputs.forEach((t, k) => {
      const l = layout[k]!;
      if (!l.expand) {
        mem.set(t.data, l.at);
        return;
      }
      // a value per (i0, i1) repeated along d2
      const [t0, t1] = plan.strides[k]!;
      const src = t.data;
      for (let i0 = 0; i0 < (t0 ? d0 : 1); i0++) {
        for (let i1 = 0; i1 < (t1 ? d1 : 1); i1++) {
          const start = l.at + (i0 * l.r0 + i1 * l.r1) * d2;
          mem.fill(src[i0 * t0 + i1 * t1]!, start, start + d2);
        }
      }
    });
    const args: number[] = [];
    for (const l of layout) args.push(l.at * 4, l.r0, l.r1);
    rt.binary[op](...args, yp * 4, d0, d1, d2);
    return { data: copyOut(mem, yp, n), shape, dtype: 'float32' };
  };
}

/** (x) -> op(x) for the exact unary ops (neg, abs, sign, floor, sqrt, round) and the forwards of roundSte and signSte. */
export function unaryKernel(rt: WasmRuntime, op: EwUnary): Kernel {
  return (inputs) => {
    const [x] = inputs as [RawTensor];
    if (inputs.length !== 1 || !allF32(inputs) || x.data.length < DIRECT_MIN) return undefined;
    const n = x.data.length;
    const arena = rt.arena;
    arena.reset();
    const xp = arena.reserve(n);
    const yp = arena.reserve(n);
    if (!arena.fits()) return undefined;
    const mem = arena.view();
    mem.set(x.data, xp);
    rt.unary[op](xp * 4, yp * 4, n);
    return { data: copyOut(mem, yp, n), shape: [...x.shape], dtype: 'float32' };
  };
}
