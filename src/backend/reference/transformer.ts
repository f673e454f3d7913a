/**
 * Reference kernels of the fused Transformer primitives (layerNorm, gelu, attention and their
 * backward primitives): the specification the native kernels are tested against. Every sum runs in
 * float64 whatever the dtype; the result is rounded to the input's dtype once, at the store.
 */
import type { Kernel, RawTensor } from '../primitives.ts';
import { alloc, raw } from './util.ts';
import { erf } from './elementwise.ts';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);
const GELU_TANH_A = 0.044715;

/** Mean and 1/√(var + eps) of row r of x (rows of `width`), in float64. */
function rowStats(x: RawTensor['data'], r: number, width: number, eps: number): [number, number] {
  const base = r * width;
  let sum = 0;
  for (let i = 0; i < width; i++) sum += x[base + i]!;
  const mean = sum / width;
  let sq = 0;
  for (let i = 0; i < width; i++) {
    const c = x[base + i]! - mean;
    sq += c * c;
  }
  return [mean, 1 / Math.sqrt(sq / width + eps)];
}

/** x [..., D], weight [D], bias [D] -> (x − mean)·rstd·weight + bias per row of D (D = weight.size). */
export const layerNormKernel: Kernel<'layerNorm'> = ([x, w, b], { eps }) => {
  const width = w!.data.length;
  const rows = width === 0 ? 0 : x!.data.length / width;
  const y = alloc(x!.dtype, x!.shape);
  for (let r = 0; r < rows; r++) {
    const [mean, rstd] = rowStats(x!.data, r, width, eps);
    const base = r * width;
    for (let i = 0; i < width; i++) y[base + i] = (x!.data[base + i]! - mean) * rstd * w!.data[i]! + b!.data[i]!;
  }
  return raw(y, x!.shape, x!.dtype);
};

/** g, x [..., D], weight [D] -> flat [dx (x.size), dweight (D), dbias (D)]. */
export const layerNormBackwardKernel: Kernel<'layerNormBackward'> = ([g, x, w], { eps }) => {
  const width = w!.data.length;
  const n = x!.data.length;
  const rows = width === 0 ? 0 : n / width;
  const out = alloc(x!.dtype, [n + 2 * width]);
  const dw = new Float64Array(width);
  const db = new Float64Array(width);
  const xhat = new Float64Array(width);
  const gh = new Float64Array(width);
  for (let r = 0; r < rows; r++) {
    const [mean, rstd] = rowStats(x!.data, r, width, eps);
    const base = r * width;
    let meanG = 0;
    let meanGX = 0;
    for (let i = 0; i < width; i++) {
      const gi = g!.data[base + i]!;
      xhat[i] = (x!.data[base + i]! - mean) * rstd;
      gh[i] = gi * w!.data[i]!;
      meanG += gh[i]!;
      meanGX += gh[i]! * xhat[i]!;
      dw[i] += gi * xhat[i]!;
      db[i] += gi;
    }
    meanG /= width;
    meanGX /= width;
    for (let i = 0; i < width; i++) out[base + i] = rstd * (gh[i]! - meanG - xhat[i]! * meanGX);
  }
  for (let i = 0; i < width; i++) {
    out[n + i] = dw[i]!;
    out[n + width + i] = db[i]!;
  }
  return raw(out, [n + 2 * width], x!.dtype);
};

/** GELU(x) in float64 ('none': x·Φ(x); 'tanh': ½x(1 + tanh(√(2/π)(x + 0.044715x³)))). */
export function geluValue(x: number, approximate: 'none' | 'tanh'): number {
  if (approximate === 'tanh') return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_A * x * x * x)));
  return 0.5 * x * (1 + erf(x * Math.SQRT1_2));
}

/** GELU'(x) in float64. */
export function geluDerivative(x: number, approximate: 'none' | 'tanh'): number {
  if (approximate === 'tanh') {
    const t = Math.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_A * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_A * x * x);
  }
  return 0.5 * (1 + erf(x * Math.SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}

export const geluKernel: Kernel<'gelu'> = ([x], { approximate }) => {
  const y = alloc(x!.dtype, x!.shape);
  for (let i = 0; i < y.length; i++) y[i] = geluValue(x!.data[i]!, approximate);
  return raw(y, x!.shape, x!.dtype);
};

export const geluBackwardKernel: Kernel<'geluBackward'> = ([g, x], { approximate }) => {
  const y = alloc(x!.dtype, x!.shape);
  for (let i = 0; i < y.length; i++) y[i] = g!.data[i]! * geluDerivative(x!.data[i]!, approximate);
  return raw(y, x!.shape, x!.dtype);
};

/** [N, L, E] and the head width d of an attention call on qkv [N, L, 3E]. */
function attentionDims(qkv: RawTensor, heads: number): [number, number, number, number] {
  const [n, l, e3] = qkv.shape as [number, number, number];
  const e = e3 / 3;
  return [n, l, e, e / heads];
}

/**
 * The attention weights A [L, L] of batch row n, head h (row i: softmax over the keys it sees;
 * masked entries 0), in float64.
 */
function attentionWeights(qkv: RawTensor['data'], n: number, h: number, l: number, e: number, d: number, causal: boolean, a: Float64Array): void {
  const scale = 1 / Math.sqrt(d);
  const row = 3 * e;
  for (let i = 0; i < l; i++) {
    const seen = causal ? i + 1 : l;
    let m = -Infinity;
    for (let j = 0; j < seen; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += qkv[(n * l + i) * row + h * d + k]! * qkv[(n * l + j) * row + e + h * d + k]!;
      a[i * l + j] = s * scale;
      m = Math.max(m, a[i * l + j]!);
    }
    let sum = 0;
    for (let j = 0; j < seen; j++) {
      a[i * l + j] = Math.exp(a[i * l + j]! - m);
      sum += a[i * l + j]!;
    }
    for (let j = 0; j < l; j++) a[i * l + j] = j < seen ? a[i * l + j]! / sum : 0;
  }
}

/** qkv [N, L, 3E] -> [N, L, E]: per (n, h), softmax(Q·Kᵀ/√d (+ causal mask))·V into columns h·d.. */
export const attentionKernel: Kernel<'attention'> = ([qkv], { heads, causal }) => {
  const [n, l, e, d] = attentionDims(qkv!, heads);
  const out = alloc(qkv!.dtype, [n, l, e]);
  const a = new Float64Array(l * l);
  const src = qkv!.data;
  for (let b = 0; b < n; b++) {
    for (let h = 0; h < heads; h++) {
      attentionWeights(src, b, h, l, e, d, causal, a);
      for (let i = 0; i < l; i++) {
        for (let k = 0; k < d; k++) {
          let s = 0;
          for (let j = 0; j < l; j++) s += a[i * l + j]! * src[(b * l + j) * 3 * e + 2 * e + h * d + k]!;
          out[(b * l + i) * e + h * d + k] = s;
        }
      }
    }
  }
  return raw(out, [n, l, e], qkv!.dtype);
};

/**
 * (g [N, L, E], qkv [N, L, 3E]) -> dqkv [N, L, 3E]: with A recomputed, dV = Aᵀ·G, dA = G·Vᵀ,
 * dS = A ⊙ (dA − rowsum(dA ⊙ A)), dQ = dS·K/√d, dK = dSᵀ·Q/√d, per (n, h).
 */
export const attentionBackwardKernel: Kernel<'attentionBackward'> = ([g, qkv], { heads, causal }) => {
  const [n, l, e, d] = attentionDims(qkv!, heads);
  const out = alloc(qkv!.dtype, qkv!.shape);
  const a = new Float64Array(l * l);
  const ds = new Float64Array(l * l);
  const src = qkv!.data;
  const gd = g!.data;
  const scale = 1 / Math.sqrt(d);
  const row = 3 * e;
  const at = (b: number, t: number, part: number, h: number, k: number): number => (b * l + t) * row + part * e + h * d + k;
  for (let b = 0; b < n; b++) {
    for (let h = 0; h < heads; h++) {
      attentionWeights(src, b, h, l, e, d, causal, a);
      for (let i = 0; i < l; i++) {
        let dot = 0;
        for (let j = 0; j < l; j++) {
          let s = 0;
          for (let k = 0; k < d; k++) s += gd[(b * l + i) * e + h * d + k]! * src[at(b, j, 2, h, k)]!;
          ds[i * l + j] = s;
          dot += s * a[i * l + j]!;
        }
        for (let j = 0; j < l; j++) ds[i * l + j] = a[i * l + j]! * (ds[i * l + j]! - dot);
      }
      for (let t = 0; t < l; t++) {
        for (let k = 0; k < d; k++) {
          let dq = 0;
          let dk = 0;
          let dv = 0;
          for (let j = 0; j < l; j++) {
            dq += ds[t * l + j]! * src[at(b, j, 1, h, k)]!;
            dk += ds[j * l + t]! * src[at(b, j, 0, h, k)]!;
            dv += a[j * l + t]! * gd[(b * l + j) * e + h * d + k]!;
          }
          out[at(b, t, 0, h, k)] = dq * scale;
          out[at(b, t, 1, h, k)] = dk * scale;
          out[at(b, t, 2, h, k)] = dv;
        }
      }
    }
  }
  return raw(out, qkv!.shape, qkv!.dtype);
};

/** Checks targets:int32 [N] against C classes; throws on an index out of range. */
function checkTargets(targets: RawTensor, rows: number, classes: number): void {
  if (targets.data.length !== rows) throw new Error(`crossEntropyLoss: ${targets.data.length} targets for ${rows} rows`);
  for (let n = 0; n < rows; n++) {
    const t = targets.data[n]!;
    if (!(t >= 0 && t < classes)) throw new Error(`crossEntropyLoss: target ${t} out of range [0, ${classes})`);
  }
}

/** max and logsumexp of row n of logits [N, C], in float64. */
function logSumExp(x: RawTensor['data'], n: number, classes: number): number {
  let m = -Infinity;
  for (let c = 0; c < classes; c++) m = Math.max(m, x[n * classes + c]!);
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (let c = 0; c < classes; c++) s += Math.exp(x[n * classes + c]! - m);
  return m + Math.log(s);
}

/** (logits [N, C], targets [N]) -> [N]: logsumexp(row) − row[target]. */
export const crossEntropyLossKernel: Kernel<'crossEntropyLoss'> = ([x, t]) => {
  const [rows, classes] = x!.shape as [number, number];
  checkTargets(t!, rows, classes);
  const out = alloc(x!.dtype, [rows]);
  for (let n = 0; n < rows; n++) out[n] = logSumExp(x!.data, n, classes) - x!.data[n * classes + t!.data[n]!]!;
  return raw(out, [rows], x!.dtype);
};

/** (g [N], logits [N, C], targets [N]) -> g[n]·(softmax(row n) − onehot(target n)). */
export const crossEntropyLossBackwardKernel: Kernel<'crossEntropyLossBackward'> = ([g, x, t]) => {
  const [rows, classes] = x!.shape as [number, number];
  checkTargets(t!, rows, classes);
  const out = alloc(x!.dtype, [rows, classes]);
  for (let n = 0; n < rows; n++) {
    const lse = logSumExp(x!.data, n, classes);
    const gn = g!.data[n]!;
    const target = t!.data[n]!;
    for (let c = 0; c < classes; c++) out[n * classes + c] = gn * (Math.exp(x!.data[n * classes + c]! - lse) - (c === target ? 1 : 0));
  }
  return raw(out, [rows, classes], x!.dtype);
};

/**
 * (qkv [N, S, 3E], keys [N, C, E], values [N, C, E]) -> [N, S, E]: query s of row n (position
 * past + s, the Q third of qkv[n, s]) against cache rows 0..past+s, per head, in float64.
 */
export const decodeAttentionKernel: Kernel<'decodeAttention'> = ([qkv, keys, values], { heads, past }) => {
  const [n, steps, e3] = qkv!.shape as [number, number, number];
  const e = e3 / 3;
  const capacity = keys!.shape[1]!;
  const d = e / heads;
  const scale = 1 / Math.sqrt(d);
  const out = alloc(qkv!.dtype, [n, steps, e]);
  const p = new Float64Array(past + steps);
  const [q, k, v] = [qkv!.data, keys!.data, values!.data];
  for (let b = 0; b < n; b++) {
    for (let h = 0; h < heads; h++) {
      for (let s = 0; s < steps; s++) {
        const seen = past + s + 1;
        const qBase = (b * steps + s) * e3 + h * d;
        let m = -Infinity;
        for (let j = 0; j < seen; j++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += q[qBase + c]! * k[(b * capacity + j) * e + h * d + c]!;
          p[j] = dot * scale;
          m = Math.max(m, p[j]!);
        }
        let sum = 0;
        for (let j = 0; j < seen; j++) {
          p[j] = Math.exp(p[j]! - m);
          sum += p[j]!;
        }
        for (let c = 0; c < d; c++) {
          let acc = 0;
          for (let j = 0; j < seen; j++) acc += p[j]! * v[(b * capacity + j) * e + h * d + c]!;
          out[(b * steps + s) * e + h * d + c] = acc / sum;
        }
      }
    }
  }
  return raw(out, [n, steps, e], qkv!.dtype);
};
