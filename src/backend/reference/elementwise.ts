import type { BinaryPrimitive, Kernel, RawTensor, UnaryPrimitive } from '../primitives.ts';
import { broadcastShapes, typedArrayFor } from '../primitives.ts';
import { alloc, broadcastStrides, offsetMap, raw, sameShape } from './util.ts';

/** Round half to even, the rounding of the quantization conventions. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** erf to ~1e-15: Maclaurin series near 0, Lentz continued fraction for erfc in the tails. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // erf x = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * sum * (2 / Math.sqrt(Math.PI));
  }
  if (ax > 27) return Math.sign(x);
  // erfc x = e^{-x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
  const tiny = 1e-300;
  let f = ax;
  let c = ax;
  let d = 0;
  for (let n = 1; n < 500; n++) {
    const an = n / 2;
    d = ax + an * d;
    d = d === 0 ? tiny : d;
    c = ax + an / c;
    c = c === 0 ? tiny : c;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

const UNARY: Record<UnaryPrimitive, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  abs: Math.abs,
  sign: (x) => (x > 0 ? 1 : x < 0 ? -1 : 0),
  relu: (x) => (x <= 0 ? 0 : x), // NaN stays NaN, as torch.relu
  sigmoid: (x) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x))),
  tanh: Math.tanh,
  erf,
  floor: Math.floor,
  round: roundHalfEven,
};

const BINARY: Record<BinaryPrimitive, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: Math.pow,
  maximum: (a, b) => (a >= b || Number.isNaN(a) ? a : b),
  minimum: (a, b) => (a <= b || Number.isNaN(a) ? a : b),
  reluBackward: (g, y) => (y <= 0 ? 0 : g), // passes g at NaN, as torch's threshold_backward
  greater: (a, b) => (a > b ? 1 : 0),
  greaterEqual: (a, b) => (a >= b ? 1 : 0),
  equal: (a, b) => (a === b ? 1 : 0),
};

/** (x) -> f(x) elementwise, same shape and dtype. */
export function unaryKernel(op: UnaryPrimitive): Kernel {
  const f = UNARY[op];
  return ([x]) => {
    const out = alloc(x!.dtype, x!.shape);
    const src = x!.data;
    for (let i = 0; i < src.length; i++) out[i] = f(src[i]!);
    return raw(out, x!.shape, x!.dtype);
  };
}

/** (a, b) -> f(a, b) with numpy broadcasting; output in a's dtype. */
export function binaryKernel(op: BinaryPrimitive): Kernel {
  const f = BINARY[op];
  return ([a, b]) => {
    const shape = broadcastShapes(a!.shape, b!.shape);
    const out = alloc(a!.dtype, shape);
    const ad = a!.data;
    const bd = b!.data;
    if (sameShape(a!.shape, b!.shape)) {
      for (let i = 0; i < out.length; i++) out[i] = f(ad[i]!, bd[i]!);
    } else if (bd.length === 1 && sameShape(a!.shape, shape)) {
      const bv = bd[0]!;
      for (let i = 0; i < out.length; i++) out[i] = f(ad[i]!, bv);
    } else if (ad.length === 1 && sameShape(b!.shape, shape)) {
      const av = ad[0]!;
      for (let i = 0; i < out.length; i++) out[i] = f(av, bd[i]!);
    } else {
      const ia = offsetMap(shape, broadcastStrides(a!.shape, shape));
      const ib = offsetMap(shape, broadcastStrides(b!.shape, shape));
      for (let i = 0; i < out.length; i++) out[i] = f(ad[ia[i]!]!, bd[ib[i]!]!);
    }
    return raw(out, shape, a!.dtype);
  };
}

/** (cond, a, b) -> cond != 0 ? a : b, broadcasting all three; output in a's dtype. */
export const whereKernel: Kernel<'where'> = ([c, a, b]) => {
  const shape = broadcastShapes(broadcastShapes(c!.shape, a!.shape), b!.shape);
  const out = alloc(a!.dtype, shape);
  const cd = c!.data;
  const ad = a!.data;
  const bd = b!.data;
  // A full-shape condition, each branch full-shape or a single value (clamp, relu6 and their gradients): no index maps.
  const flat = (t: RawTensor): boolean => t.data.length === 1 || sameShape(t.shape, shape);
  if (out.length > 1 && cd.length === out.length && flat(c!) && flat(a!) && flat(b!)) {
    const n = out.length;
    if (ad.length === 1 && bd.length === n) {
      const av = ad[0]!;
      for (let i = 0; i < n; i++) out[i] = cd[i] !== 0 ? av : bd[i]!;
    } else if (bd.length === 1 && ad.length === n) {
      const bv = bd[0]!;
      for (let i = 0; i < n; i++) out[i] = cd[i] !== 0 ? ad[i]! : bv;
    } else if (ad.length === n && bd.length === n) {
      for (let i = 0; i < n; i++) out[i] = cd[i] !== 0 ? ad[i]! : bd[i]!;
    } else {
      const av = ad[0]!;
      const bv = bd[0]!;
      for (let i = 0; i < n; i++) out[i] = cd[i] !== 0 ? av : bv;
    }
    return raw(out, shape, a!.dtype);
  }
  const ic = offsetMap(shape, broadcastStrides(c!.shape, shape));
  const ia = offsetMap(shape, broadcastStrides(a!.shape, shape));
  const ib = offsetMap(shape, broadcastStrides(b!.shape, shape));
  for (let i = 0; i < out.length; i++) out[i] = cd[ic[i]!] !== 0 ? ad[ia[i]!]! : bd[ib[i]!]!;
  return raw(out, shape, a!.dtype);
};

/** (x) -> x converted to `dtype` (int32 truncates toward zero). */
export const castKernel: Kernel<'cast'> = ([x], { dtype }) => {
  const out = typedArrayFor(dtype, x!.data.length);
  if (dtype === 'int32') {
    for (let i = 0; i < out.length; i++) out[i] = Math.trunc(x!.data[i]!);
  } else {
    out.set(x!.data);
  }
  return raw(out, x!.shape, dtype) satisfies RawTensor;
};
