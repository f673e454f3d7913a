/**
 * The fake-quant machinery QuantLSTM (./qlstm.ts) and QuantGRU (./qgru.ts) share: the PWL options
 * and their pwl_config buffer, the abs-max observers of x and h, the b-bit per-row weights and the
 * int8 codes of x the integer side of a step runs on. Each function takes the model's name
 * (`owner`) so its errors name the class the caller used.
 * @internal
 */
import { Tensor } from '../../tensor/tensor.ts';
import { fq, maxAbs, observeAbsMax, rowScales, weightMax } from './formats.ts';
import type { PwlObjective } from './pwl.ts';

/** Objective codes of the pwl_config buffer (0 = 'maxError', 1 = 'mse'). @internal */
export const PWL_OBJECTIVES: readonly PwlObjective[] = ['maxError', 'mse'];
/** Largest segment count (a table's segment index is a byte in the runtime; io.ts's MAX_PWL_SEGMENTS). @internal */
export const QAT_MAX_PWL_SEGMENTS = 256;

/**
 * Checks the PWL options and returns the pwl_config buffer [segments, objective code]. Throws a
 * RangeError naming `owner` and the bad value. @internal
 */
export function pwlConfigTensor(owner: string, segments: number, objective: PwlObjective): Tensor {
  if (!Number.isInteger(segments) || segments < 1 || segments > QAT_MAX_PWL_SEGMENTS) throw new RangeError(`${owner}: segments must be an integer in [1, ${QAT_MAX_PWL_SEGMENTS}], got ${segments}`);
  if (!PWL_OBJECTIVES.includes(objective)) throw new RangeError(`${owner}: objective must be 'maxError' or 'mse', got ${String(objective)}`);
  return new Tensor(Float32Array.from([segments, PWL_OBJECTIVES.indexOf(objective)]), [2]);
}

/**
 * The `checkLoadedState` problems of an incoming state dict whose pwl_config differs from the
 * model's PWL options (none when it matches or has no pwl_config). @internal
 */
export function pwlConfigProblems(owner: string, incoming: ReadonlyMap<string, Tensor>, segments: number, objective: PwlObjective): string[] {
  const config = incoming.get('pwl_config');
  if (!config) return [];
  const [savedSegments, code] = [config.data[0]!, config.data[1]!];
  if (savedSegments === segments && code === PWL_OBJECTIVES.indexOf(objective)) return [];
  const saved = PWL_OBJECTIVES[code] ?? `unknown objective code ${code}`;
  return [`pwl_config: the state dict was saved by a ${owner} with ${savedSegments} PWL segments and objective '${saved}', this one has ${segments} and '${objective}'; construct it with { segments: ${savedSegments}, objective: '${saved}' } (the PWL tables are fitted from these options, not loaded)`];
}

/**
 * Training-mode observer update of x's range; refuses NaN and ±Infinity (one Inf would pin the
 * running range at Infinity for good, and the scale silently at 1/127). @internal
 */
export function observeInput(owner: string, buffer: Tensor, x: Tensor): void {
  const m = maxAbs(x.data);
  if (Number.isNaN(m)) throw new RangeError(`${owner}: the input holds NaN or ±Infinity; the int8 range of x is observed in training mode and needs finite values`);
  observeAbsMax(buffer, m);
}

/**
 * The running maximum of |h| over the steps so far, updated with step t's real-valued h; refuses
 * NaN and ±Infinity (`hint` is appended to the step in the message). @internal
 */
export function hiddenMaxAfter(owner: string, hiddenMax: number, hReal: Tensor, t: number, hint = ''): number {
  const m = maxAbs(hReal.data);
  if (Number.isNaN(m)) throw new RangeError(`${owner}: h is NaN or ±Infinity at step ${t}${hint}; the int8 range of h needs finite values`);
  return Math.max(hiddenMax, m);
}

/** W_ih and W_hh fake-quantized at `bits` per row (differentiable, straight-through). @internal */
export function rowQuantizedWeights(weightIh: Tensor, weightHh: Tensor, bits: number): [Tensor, Tensor] {
  const top = weightMax(bits);
  return [fq(weightIh, rowScales(weightIh, bits), -top, top), fq(weightHh, rowScales(weightHh, bits), -top, top)];
}

/**
 * The int8 codes of a fake-quantized x ([L, N, I], or [N, L, I] with batchFirst, on the grid sx),
 * time-major [L, N, I] as the integer runtime's GEMM takes them. @internal
 */
export function timeMajorCodes(xq: Tensor, steps: number, batch: number, inputSize: number, batchFirst: boolean, sx: number): Int8Array {
  const codes = new Int8Array(steps * batch * inputSize);
  for (let t = 0; t < steps; t++) {
    for (let n = 0; n < batch; n++) {
      const from = (batchFirst ? n * steps + t : t * batch + n) * inputSize;
      for (let j = 0; j < inputSize; j++) codes[(t * batch + n) * inputSize + j] = Math.round(xq.data[from + j]! / sx);
    }
  }
  return codes;
}
