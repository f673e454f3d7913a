/**
 * The fake-quant simulation of a prepared model evaluated in float64: the same graph `convert`
 * captures (its leaf calls, see ./capture.ts), the same quantizers, weights, biases and BatchNorm
 * statistics, but every product, sum, division and rounding done in double precision.
 *
 * Why: the model's own forward runs in float32, whose rounding error (≈ 2^−24 of each partial sum)
 * flips the input quantizer's `round(y/s)` whenever y/s lies that close to a rounding boundary;
 * one flipped hidden integer moves a logit by |w| output LSB. The IntModel computes the same value
 * in exact integers with a 2^−31-accurate fixed-point multiplier, so it rounds as the real-number
 * simulation does. This evaluator is the reference for the "at most 1 output LSB apart" check; the
 * float32 forward stays the reference for argmax agreement (see `compareWithFakeQuant`).
 *
 * Layouts: NCHW activations, OIHW conv weights, [out, in] linear weights, all row-major.
 */
import type { Module } from '../nn/module.ts';
import { ReLU, ReLU6, Identity } from '../nn/activation.ts';
import { AdaptiveAvgPool2d, AvgPool2d, MaxPool2d } from '../nn/pooling.ts';
import { Flatten } from '../nn/flatten.ts';
import { Dropout } from '../nn/dropout.ts';
import { BatchNorm } from '../nn/batchnorm.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { roundHalfEven } from '../backend/reference/elementwise.ts';
import { QuantConv2d, QuantConvBn2d, QuantLinear } from '../quant/qat/layers.ts';
import type { ExportedQuant } from '../quant/quantizers/quantizer.ts';
import { captureLeaves } from './convert.ts';
import type { CapturedGraph, CapturedNode } from './capture.ts';
import { QuantAdd } from '../quant/qat/add.ts';
import { Add } from '../nn/merge.ts';
import type { Quantizer } from '../quant/quantizers/quantizer.ts';
import { convOutputSize } from './ops.ts';
import { paramIndex } from '../quant/core/qparams.ts';

export interface Float64Simulation {
  /** Output of the last leaf (logits), float64, shape [N, ...]. */
  readonly output: Float64Array;
  readonly shape: number[];
  /** Per quantized layer: its input as integers of its input quantizer (affine q, or ±1 for sign). */
  readonly layerInputs: Map<string, Int32Array>;
}

interface Value {
  data: Float64Array;
  shape: number[];
}

/** Fake-quantizes `x` in place with an input quantizer's export; returns the integers. */
function quantizeInput(q: ExportedQuant, x: Float64Array, layerName: string): Int32Array {
  const ints = new Int32Array(x.length);
  if (q.type === 'affine') {
    const qp = q.qparams;
    if (qp.scale.length !== 1) throw new Error(`simulate: layer '${layerName}': per-channel input quantization is not supported`);
    const s = qp.scale[0]!;
    const z = qp.zeroPoint[0]!;
    for (let i = 0; i < x.length; i++) {
      let v = roundHalfEven(x[i]! / s) + z;
      v = v < qp.qmin ? qp.qmin : v > qp.qmax ? qp.qmax : v;
      ints[i] = v;
      x[i] = (v - z) * s;
    }
    return ints;
  }
  if (q.type === 'binary') {
    if (q.alpha.length !== 1) throw new Error(`simulate: layer '${layerName}': per-channel binary input`);
    const a = q.alpha[0]!;
    for (let i = 0; i < x.length; i++) {
      const v = x[i]! >= 0 ? 1 : -1;
      ints[i] = v;
      x[i] = v * a;
    }
    return ints;
  }
  throw new Error(`simulate: layer '${layerName}': ${q.type} input activations are not supported`);
}

/**
 * The fake-quant weight in float64: integer level × scale, both exact (the float32 tensor the
 * model computes with holds fl32(level × scale), rounded once more).
 */
function weightValues64(q: ExportedQuant | null, wfq: Tensor, layerName: string): Float64Array {
  const data = wfq.data;
  const out = Float64Array.from(data as ArrayLike<number>);
  if (q === null) return out;
  const O = wfq.shape[0]!;
  const K = wfq.size / O;
  if (q.type === 'affine') {
    const qp = q.qparams;
    if (qp.groupSize !== null) {
      // per-group scales (one per row and per G inputs): the level × its group's scale
      const index = paramIndex(wfq.shape, qp);
      for (let i = 0; i < out.length; i++) {
        const c = index(i);
        const s = qp.scale[c]!;
        const z = qp.zeroPoint[c]!;
        out[i] = (roundHalfEven(data[i]! / s + z) - z) * s;
      }
      return out;
    }
    if (qp.axis !== null && qp.axis !== 0) throw new Error(`simulate: layer '${layerName}': only per-tensor, per-output-channel or per-group weight scales`);
    for (let i = 0; i < out.length; i++) {
      const c = qp.scale.length === 1 ? 0 : Math.floor(i / K);
      const s = qp.scale[c]!;
      const z = qp.zeroPoint[c]!;
      out[i] = (roundHalfEven(data[i]! / s + z) - z) * s;
    }
    return out;
  }
  if (q.type === 'binary' || q.type === 'ternary') {
    for (let i = 0; i < out.length; i++) {
      const a = q.alpha[q.alpha.length === 1 ? 0 : Math.floor(i / K)]!;
      out[i] = q.type === 'binary' ? (data[i]! >= 0 ? a : -a) : a === 0 ? 0 : roundHalfEven(data[i]! / a) * a;
    }
    return out;
  }
  throw new Error(`simulate: layer '${layerName}': ${q.type} weights are not supported`);
}

function linear64(x: Value, w: Float64Array, bias: Float64Array | null, O: number, name: string): Value {
  const K = x.shape[x.shape.length - 1]!;
  if (w.length !== O * K) throw new Error(`simulate: layer '${name}': input has ${K} features, weight ${w.length / O}`);
  const rows = x.data.length / K;
  const out = new Float64Array(rows * O);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < O; o++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x.data[r * K + k]! * w[o * K + k]!;
      out[r * O + o] = s + (bias ? bias[o]! : 0);
    }
  }
  return { data: out, shape: [...x.shape.slice(0, -1), O] };
}

interface ConvSpec {
  inChannels: number; outChannels: number; kernelSize: readonly [number, number]; stride: readonly [number, number];
  padding: readonly [number, number]; dilation: readonly [number, number]; groups: number; conv1d?: boolean;
}

function conv64(x: Value, w: Float64Array, bias: Float64Array | null, g: ConvSpec): Value {
  // a Conv1d's [N, C, L] is the height-1 map [N, C, 1, L] of its conv2d geometry
  const [n, c, h, wd] = (g.conv1d === true ? [x.shape[0], x.shape[1], 1, x.shape[2]] : x.shape) as [number, number, number, number];
  const [oh, ow] = convOutputSize(h, wd, g);
  const O = g.outChannels;
  const cg = c / g.groups;
  const og = O / g.groups;
  const [kh, kw] = g.kernelSize;
  const out = new Float64Array(n * O * oh * ow);
  for (let b = 0; b < n; b++) {
    for (let o = 0; o < O; o++) {
      const gi = Math.floor(o / og);
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          let s = 0;
          for (let ci = 0; ci < cg; ci++) {
            const plane = (b * c + gi * cg + ci) * h * wd;
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * g.stride[0] - g.padding[0] + ky * g.dilation[0];
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * g.stride[1] - g.padding[1] + kx * g.dilation[1];
                if (ix < 0 || ix >= wd) continue;
                s += x.data[plane + iy * wd + ix]! * w[((o * cg + ci) * kh + ky) * kw + kx]!;
              }
            }
          }
          out[((b * O + o) * oh + oy) * ow + ox] = s + (bias ? bias[o]! : 0);
        }
      }
    }
  }
  return { data: out, shape: g.conv1d === true ? [n, O, ow] : [n, O, oh, ow] };
}

function pool64(x: Value, k: readonly [number, number], s: readonly [number, number], p: readonly [number, number], max: boolean): Value {
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const oh = Math.floor((h + 2 * p[0] - k[0]) / s[0]) + 1;
  const ow = Math.floor((w + 2 * p[1] - k[1]) / s[1]) + 1;
  const out = new Float64Array(n * c * oh * ow);
  let o = 0;
  for (let plane = 0; plane < n * c; plane++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let acc = max ? -Infinity : 0;
        for (let ky = 0; ky < k[0]; ky++) {
          const iy = oy * s[0] - p[0] + ky;
          if (iy < 0 || iy >= h) continue;
          for (let kx = 0; kx < k[1]; kx++) {
            const ix = ox * s[1] - p[1] + kx;
            if (ix < 0 || ix >= w) continue;
            const v = x.data[plane * h * w + iy * w + ix]!;
            acc = max ? (v > acc ? v : acc) : acc + v;
          }
        }
        out[o++] = max ? acc : acc / (k[0] * k[1]);
      }
    }
  }
  return { data: out, shape: [n, c, oh, ow] };
}

/**
 * Runs the fake-quant simulation of `model` (prepared, eval semantics: running BN statistics, no
 * dropout) on `x` in float64. Supports the leaves `convert` supports; throws naming any other.
 * `graph` (from `captureGraph`) gives the data flow; without it the leaves run as a chain in
 * registration order.
 */
export function simulateFloat64(model: Module, x: Tensor, graph?: CapturedGraph): Float64Simulation {
  const input: Value = { data: Float64Array.from(x.data as ArrayLike<number>), shape: [...x.shape] };
  const nodes: readonly CapturedNode[] = graph?.nodes ?? captureLeaves(model).map(([name, module], i) => ({ name, module, inputs: [i - 1] }));
  const layerInputs = new Map<string, Int32Array>();
  const values: Value[] = [];
  for (const { name, module: m, inputs } of nodes) {
    // Copies: quantizing or clamping in place must not change a value another node takes too.
    const ins = inputs.map((k) => {
      const v = k < 0 ? input : values[k]!;
      return { data: v.data.slice(), shape: [...v.shape] };
    });
    values.push(ins.length === 0 ? input : simulateLeaf(name, m, ins, layerInputs));
  }
  const out = values[values.length - 1] ?? input;
  return { output: out.data, shape: out.shape, layerInputs };
}

function quantizeWith(quantizer: Quantizer | null, v: Value, name: string): Value {
  if (quantizer === null) return v;
  quantizeInput(quantizer.exportQuant(), v.data, name);
  return v;
}

function simulateLeaf(name: string, m: Module, ins: Value[], layerInputs: Map<string, Int32Array>): Value {
  let v = ins[0]!;
  if (m instanceof QuantLinear || m instanceof QuantConv2d || m instanceof QuantConvBn2d) {
    const ex = m.exportLayer();
    if (ex.activationQuant) layerInputs.set(name, quantizeInput(ex.activationQuant, v.data, name));
    const w = weightValues64(ex.weightQuant, ex.weightFakeQuant, name);
    const bias = ex.bias ? Float64Array.from(ex.bias.data as ArrayLike<number>) : null;
    const geo = ex.geometry;
    return geo.type === 'linear' ? linear64(v, w, bias, geo.outFeatures, name) : conv64(v, w, bias, geo);
  }
  if (m instanceof QuantAdd || m instanceof Add) {
    const [a, b] = m instanceof QuantAdd ? [quantizeWith(m.inputQuantizerA, ins[0]!, name), quantizeWith(m.inputQuantizerB, ins[1]!, name)] : [ins[0]!, ins[1]!];
    for (let i = 0; i < a.data.length; i++) a.data[i] = a.data[i]! + b.data[i]!;
    return a;
  }
  if (m instanceof BatchNorm) {
    if (!m.runningMean || !m.runningVar) throw new Error(`simulate: '${name}' tracks no running statistics`);
    const C = m.numFeatures;
    const inner = v.shape.length > 2 ? v.shape.slice(2).reduce((p, d) => p * d, 1) : 1;
    for (let i = 0; i < v.data.length; i++) {
      const ch = Math.floor(i / inner) % C;
      const k = (m.weight ? m.weight.data[ch]! : 1) / Math.sqrt(m.runningVar.data[ch]! + m.eps);
      v.data[i] = (v.data[i]! - m.runningMean.data[ch]!) * k + (m.bias ? m.bias.data[ch]! : 0);
    }
  } else if (m instanceof ReLU || m instanceof ReLU6) {
    const six = m instanceof ReLU6;
    for (let i = 0; i < v.data.length; i++) v.data[i] = Math.min(Math.max(v.data[i]!, 0), six ? 6 : Infinity);
  } else if (m instanceof MaxPool2d || m instanceof AvgPool2d) {
    v = pool64(v, m.kernelSize, m.stride, m.padding, m instanceof MaxPool2d);
  } else if (m instanceof AdaptiveAvgPool2d) {
    const [, , h, w] = v.shape as [number, number, number, number];
    const k: [number, number] = [h / m.outputSize[0], w / m.outputSize[1]];
    v = pool64(v, k, k, [0, 0], false);
  } else if (m instanceof Flatten) {
    const rank = v.shape.length;
    const start = m.startDim < 0 ? m.startDim + rank : m.startDim;
    const end = m.endDim < 0 ? m.endDim + rank : m.endDim;
    const merged = v.shape.slice(start, end + 1).reduce((p, d) => p * d, 1);
    v = { data: v.data, shape: [...v.shape.slice(0, start), merged, ...v.shape.slice(end + 1)] };
  } else if (!(m instanceof Identity || m instanceof Dropout)) {
    throw new Error(`simulate: module '${name}' (${m.constructor.name}) is not supported`);
  }
  return v;
}
