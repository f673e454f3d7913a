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

/** Fractional bits of the gate pre-activations (PWL input): Q3.12. */
export const GATE_FRAC = 12;
/** Fractional bits of the PWL outputs (gates, tanh(c)): Q0.15. */
export const ACT_FRAC = 15;
/** Fractional bits of the cell state: Q4.11. */
export const CELL_FRAC = 11;
export const INT16_MIN = -32768;
export const INT16_MAX = 32767;
/** Symmetric int8 range of x, h and the weights. */
export const Q8_MAX = 127;
/** Clamp of the PWL outputs. */
export const ACT_MAX = 32767;
/** Range used where the runtime keeps an int32 (the requantized partial sums), wide enough never to clamp in practice. */
export const WIDE = 2 ** 24;

/**
 * Per-row symmetric int8 scales of a [rows, cols] weight: max|row|/127 as float32 (1 for an
 * all-zero row). The QAT model and the converter both call this, so they agree bit for bit.
 */
export function rowScales(weight: Tensor): Float32Array {
  const [rows, cols] = weight.shape as [number, number];
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let j = 0; j < cols; j++) {
      const a = Math.abs(weight.data[r * cols + j]!);
      if (a > m) m = a;
    }
    scales[r] = m > 0 ? m / Q8_MAX : 1;
  }
  return scales;
}

/** The float32 int8 scale of an observed absolute maximum (1/127 when nothing was observed). */
export function absMaxScale(absMax: number): number {
  return Math.fround((absMax > 0 && Number.isFinite(absMax) ? absMax : 1) / Q8_MAX);
}
