/**
 * MSE observer (e.g. Banner et al. 2019; Nagel et al. 2021, "A White Paper on Neural Network
 * Quantization", §3.5): the range is the clipped min-max range that minimises the quantization
 * error of the observed values,
 *   r* = argmin over r ∈ {1/G, 2/G, …, 1} of ‖x − Q_r(x)‖²,   Q_r with range [r·min, r·max]
 * (min, max the observed extremes widened to contain 0, so symmetric specs search the bound
 * r·max|x|), per tensor or channel, with Q_r the affine fake quantization of the spec
 * (`qparamsFromRange`, float32 scale, round half to even). G = `grid` (default 100). The error is
 * computed on the observed values themselves; past `maxSamples` values per channel a uniform
 * reservoir sample (seeded) stands in for them. The first (smallest) r wins ties.
 */
import { roundHalfEven } from '../../backend/reference/elementwise.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { qparamsFromRange, type QParams, type QuantSpec } from '../core/qparams.ts';
import { checkFinite, checkGranularity, extremes, observerSlots, splitChannels, type Observer, type ObserverOptions } from './observer.ts';

export interface MseOptions extends ObserverOptions {
  /** Number of clipping ratios searched (default 100: r = 0.01, 0.02, …, 1). */
  readonly grid?: number;
  /** Values kept per channel for the error (default 2^21). */
  readonly maxSamples?: number;
  /** Seed of the reservoir sampling (default 0). */
  readonly seed?: number;
}

/** A channel's kept values (reservoir) and extremes. */
interface Reservoir {
  values: Float32Array;
  size: number;
  seen: number;
  min: number;
  max: number;
}

export class MseObserver implements Observer {
  readonly method = 'mse';
  readonly axis: number | null;
  readonly groupSize: number | null;
  readonly grid: number;
  readonly maxSamples: number;
  private channels: Reservoir[] = [];
  private state: number;

  constructor(options: MseOptions = {}) {
    ({ axis: this.axis, groupSize: this.groupSize } = observerSlots(this.method, options));
    this.grid = options.grid ?? 100;
    this.maxSamples = options.maxSamples ?? 2 ** 21;
    if (!Number.isInteger(this.grid) || this.grid < 1) throw new Error(`mse observer: grid must be a positive integer, got ${this.grid}`);
    if (!Number.isInteger(this.maxSamples) || this.maxSamples < 1) throw new Error(`mse observer: maxSamples must be a positive integer, got ${this.maxSamples}`);
    this.state = (options.seed ?? 0) >>> 0 || 0x9e3779b9;
  }

  get observed(): boolean {
    return this.channels.some((c) => c.seen > 0);
  }

  observe(x: Tensor): void {
    checkFinite(this.method, x);
    const parts = splitChannels(x, this.axis, this.groupSize);
    if (this.channels.length === 0) {
      this.channels = parts.map(() => ({ values: new Float32Array(0), size: 0, seen: 0, min: Infinity, max: -Infinity }));
    }
    if (parts.length !== this.channels.length) throw new Error(`mse observer: ${parts.length} channels, earlier batches had ${this.channels.length}`);
    parts.forEach((values, c) => this.add(this.channels[c]!, values));
  }

  private add(r: Reservoir, values: Float32Array): void {
    const { min, max } = extremes(values);
    r.min = Math.min(r.min, min);
    r.max = Math.max(r.max, max);
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      if (!Number.isFinite(v)) continue;
      r.seen++;
      if (r.size < this.maxSamples) {
        if (r.size === r.values.length) {
          const grown = new Float32Array(Math.min(this.maxSamples, Math.max(1024, r.values.length * 2)));
          grown.set(r.values);
          r.values = grown;
        }
        r.values[r.size++] = v;
      } else {
        const j = Math.floor(this.random() * r.seen);
        if (j < this.maxSamples) r.values[j] = v;
      }
    }
  }

  /** xorshift32 in [0, 1). */
  private random(): number {
    let s = this.state;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.state = s >>> 0;
    return this.state / 4294967296;
  }

  /** ‖x − Q_r(x)‖² of channel `c` for every r = k/G (index k − 1). */
  errorCurve(spec: QuantSpec, c = 0): Float64Array {
    const r = this.channels[c];
    if (!r) throw new Error(`mse observer: no channel ${c}`);
    const curve = new Float64Array(this.grid);
    const values = r.values.subarray(0, r.size);
    const lo = Math.min(r.min, 0);
    const hi = Math.max(r.max, 0);
    const one: QuantSpec = { ...spec, granularity: 'tensor', axis: undefined, groupSize: undefined };
    for (let k = 1; k <= this.grid; k++) {
      const ratio = k / this.grid;
      const qp = qparamsFromRange([lo * ratio], [hi * ratio], one);
      curve[k - 1] = squaredError(values, qp.scale[0]!, qp.zeroPoint[0]!, qp.qmin, qp.qmax);
    }
    return curve;
  }

  /** The chosen clipping ratio r* of every channel. */
  ratios(spec: QuantSpec): Float64Array {
    return Float64Array.from(this.channels, (r, c) => {
      if (r.size === 0) return 1;
      const curve = this.errorCurve(spec, c);
      let best = 0;
      for (let k = 1; k < curve.length; k++) if (curve[k]! < curve[best]!) best = k;
      return (best + 1) / this.grid;
    });
  }

  qparams(spec: QuantSpec): QParams {
    checkGranularity(this, spec, this.channels.length);
    const ratios = this.ratios(spec);
    const min = Float64Array.from(this.channels, (r, c) => (r.seen > 0 ? Math.min(r.min, 0) * ratios[c]! : 0));
    const max = Float64Array.from(this.channels, (r, c) => (r.seen > 0 ? Math.max(r.max, 0) * ratios[c]! : 0));
    return qparamsFromRange(min, max, spec);
  }
}

/** Σ (x − x̂)² with x̂ = (clamp(roundHalfEven(x/s) + z, qmin, qmax) − z)·s. */
export function squaredError(values: ArrayLike<number>, scale: number, zeroPoint: number, qmin: number, qmax: number): number {
  let total = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    let q = roundHalfEven(x / scale) + zeroPoint;
    q = q < qmin ? qmin : q > qmax ? qmax : q;
    const d = x - (q - zeroPoint) * scale;
    total += d * d;
  }
  return total;
}
