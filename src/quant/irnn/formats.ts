/**
 * The fixed-point formats of the integer-only LSTM (iRNN), shared by the QAT model (which
 * simulates them with fake quantization) and the integer runtime (which computes in them):
 *
 * | value                         | integers            | real value            |
 * | ----------------------------- | ------------------- | --------------------- |
 * | input x_t, hidden h_t         | int8 [−127, 127]    | q·s_x, q·s_h          |
 * | weights W_ih, W_hh            | int8 [−127, 127]    | q·s_w[row] (per row)  |
 * | gate pre-activation z, bias   | int16 (Q3.12)       | q·2^−12, range [−8, 8)|
 * | gate i, f, g, o and tanh(c)   | int16 (Q0.15)       | q·2^−15, |q| ≤ 32767  |
 * | cell state c_t                | int16 (Q4.11)       | q·2^−11, range [−16, 16) |
 */
import { Tensor } from '../../tensor/tensor.ts';
import { add, mul } from '../../tensor/ops.ts';
import { fakeQuantize } from '../core/quantize.ts';

/** Fractional bits of the gate pre-activations (PWL input): Q3.12. */
export const GATE_FRAC = 12;
/** Fractional bits of the PWL outputs (gates, tanh(c)): Q0.15. */
export const ACT_FRAC = 15;
/** Fractional bits of the cell state: Q4.11. */
export const CELL_FRAC = 11;
/** Fractional bits of W·x and W·h on their way into the layer norms of an LN-LSTM (int32, |q| ≤ 2^24). */
export const LN_INPUT_FRAC = 16;
export const INT16_MIN = -32768;
export const INT16_MAX = 32767;
/** Symmetric int8 range of x, h and the weights. */
export const Q8_MAX = 127;
/** Clamp of the PWL outputs. */
export const ACT_MAX = 32767;
/** Range used where the runtime keeps an int32 (the requantized partial sums), wide enough never to clamp in practice. */
export const WIDE = 2 ** 24;

/** Smallest and largest weight bit width (`QuantLSTMOptions.weightBits`). */
export const MIN_WEIGHT_BITS = 2;
export const MAX_WEIGHT_BITS = 8;

/**
 * Largest weight code of a symmetric (narrow-range) b-bit weight: 2^(b−1) − 1 (127 at 8 bits, 7 at
 * 4, 1 at 2). Throws a RangeError naming the bad width outside [2, 8].
 */
export function weightMax(bits: number): number {
  if (!Number.isInteger(bits) || bits < MIN_WEIGHT_BITS || bits > MAX_WEIGHT_BITS) throw new RangeError(`weightBits must be an integer in [${MIN_WEIGHT_BITS}, ${MAX_WEIGHT_BITS}], got ${bits}`);
  return 2 ** (bits - 1) - 1;
}

/**
 * How b-bit weight codes are stored in a file: 'int2' (four per byte) for b = 2, 'int4' (two per
 * byte) for b = 3, 4, 'int8' (one per byte) for b = 5..8.
 */
export function weightStorage(bits: number): 'int2' | 'int4' | 'int8' {
  weightMax(bits);
  return bits <= 2 ? 'int2' : bits <= 4 ? 'int4' : 'int8';
}

/** Bytes of `count` b-bit weight codes packed as `weightStorage(b)` (the last byte zero-filled). */
export function packedWeightBytes(count: number, bits: number): number {
  const storage = weightStorage(bits);
  return storage === 'int2' ? Math.ceil(count / 4) : storage === 'int4' ? Math.ceil(count / 2) : count;
}

/**
 * Per-row symmetric scales of a [rows, cols] weight at `bits` (default 8): max|row|/(2^(b−1)−1) as
 * float32 (1 for an all-zero row). The QAT model and the converter both call this, so they agree
 * bit for bit.
 */
export function rowScales(weight: Tensor, bits = 8): Float32Array {
  const [rows, cols] = weight.shape as [number, number];
  const top = weightMax(bits);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let j = 0; j < cols; j++) {
      const a = Math.abs(weight.data[r * cols + j]!);
      if (a > m) m = a;
    }
    scales[r] = m > 0 ? m / top : 1;
  }
  return scales;
}

/** Updates an abs-max observer buffer ([1]): the first value as is, then an EMA with momentum 0.9. */
export function observeAbsMax(buffer: Tensor, value: number): void {
  const old = buffer.data[0]!;
  buffer.data[0] = old > 0 ? 0.9 * old + 0.1 * value : value;
}

/** The float32 int8 scale of an observed absolute maximum (1/127 when nothing was observed). */
export function absMaxScale(absMax: number): number {
  return Math.fround((absMax > 0 && Number.isFinite(absMax) ? absMax : 1) / Q8_MAX);
}

/**
 * The value of an integer computation with the gradient of a float one (straight-through): the
 * result is fq(F + (V − F)) on the grid `scale`, where V = codes·scale is the integer result and
 * F the differentiable float expression of the same math; V − F enters as a constant. Since V is
 * a grid point and F is close to it, the sum rounds back to exactly codes·scale, so the forward
 * value is the integer runtime's, bit for bit, and the gradient is F's. Where a code sits at
 * `qmin` or `qmax` and F lies beyond it (the clamp bit), the gradient is zero.
 * @internal
 */
export function integerForward(F: Tensor, codes: ArrayLike<number>, scale: number, qmin: number, qmax: number): Tensor {
  const float64 = F.dtype === 'float64';
  const n = F.size;
  if (codes.length !== n) throw new Error(`integerForward: ${codes.length} codes for a tensor of ${n} values`);
  const offset = float64 ? new Float64Array(n) : new Float32Array(n);
  const keep = float64 ? new Float64Array(n) : new Float32Array(n);
  let clamped = false;
  const f = F.data;
  for (let i = 0; i < n; i++) {
    const q = codes[i]!;
    const beyond = (q >= qmax && f[i]! > q * scale) || (q <= qmin && f[i]! < q * scale);
    keep[i] = beyond ? 0 : 1;
    if (beyond) clamped = true;
    offset[i] = q * scale - (beyond ? 0 : f[i]!);
  }
  const source = clamped ? mul(F, new Tensor(keep, F.shape)) : F;
  const make = (v: number): Tensor => new Tensor(float64 ? Float64Array.of(v) : Float32Array.of(v), []);
  return fakeQuantize(add(source, new Tensor(offset, F.shape)), { scale: make(scale), zeroPoint: make(0), qmin, qmax });
}

/**
 * Fake quantization on a fixed grid `scale` (per tensor) or per row ([rows, 1] scales), range
 * [qmin, qmax], in the dtype of `x`.
 */
export function fq(x: Tensor, scale: number | Float32Array, qmin: number, qmax: number): Tensor {
  const float64 = x.dtype === 'float64';
  const make = (values: ArrayLike<number>, shape: number[]): Tensor => new Tensor(float64 ? Float64Array.from(values) : Float32Array.from(values), shape);
  const s = typeof scale === 'number' ? make([scale], []) : make(scale, [scale.length, 1]);
  const z = typeof scale === 'number' ? make([0], []) : make(new Float32Array(scale.length), [scale.length, 1]);
  return fakeQuantize(x, { scale: s, zeroPoint: z, qmin, qmax });
}

/** max |v| over all of `arrays`; NaN when a value is NaN or infinite (the observers refuse those). */
export function maxAbs(...arrays: ArrayLike<number>[]): number {
  let m = 0;
  for (const data of arrays) {
    for (let i = 0; i < data.length; i++) {
      const a = Math.abs(data[i]!);
      if (!(a < Infinity)) return NaN;
      if (a > m) m = a;
    }
  }
  return m;
}
