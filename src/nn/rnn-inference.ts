/**
 * The inference path of nn.LSTM / nn.GRU: when nothing needs a gradient (inside `noGrad()`, or no
 * operand requires one), the native backend is active and every operand is float32, one native call
 * per layer-direction (native/recurrent.cc: lstmInference / gruInference) runs the input projection
 * and the recurrence together, step by step, without the gate activations the training primitives
 * (lstmSequence / gruSequence) keep for their backward pass. Its results equal the training path's
 * forward to float32 rounding (the sums are ordered differently; tested in rnn-inference.test.ts).
 * @internal used by nn/rnn.ts only.
 */
import { isGradEnabled } from '../autograd/index.ts';
import { nativeAddon } from '../backend/native/index.ts';
import { getBackend } from '../backend/registry.ts';
import { autocastFormat } from '../lowp/context.ts';
import { Tensor, type RecurrentOptions } from '../tensor/index.ts';

/** One layer-direction's weights, as nn/rnn.ts holds them. */
export interface InferenceWeights {
  readonly weightIh: Tensor;
  readonly weightHh: Tensor;
  readonly biasIh: Tensor | null;
  readonly biasHh: Tensor | null;
}

let enabled = true;

/**
 * Turns the inference path off (false) or back on; returns the previous setting.
 * @internal for benchmarks and tests that time or compare the training path's forward.
 */
export function setRecurrentInference(on: boolean): boolean {
  const previous = enabled;
  enabled = on;
  return previous;
}

/** A float32 array of `size` elements without zero-filling (the addon writes every element). */
function uninitialised(size: number): Float32Array {
  const bytes = Buffer.allocUnsafeSlow(size * 4);
  return new Float32Array(bytes.buffer, bytes.byteOffset, size);
}

/** Whether the inference path may run on these operands: no gradient wanted, native float32, no autocast. */
function applies(operands: readonly (Tensor | null)[]): boolean {
  if (!enabled || getBackend() !== 'native' || autocastFormat() !== null) return false;
  if (!operands.every((t) => t === null || t.data instanceof Float32Array)) return false;
  return !isGradEnabled() || !operands.some((t) => t !== null && t.requiresGrad);
}

/**
 * The native call of one layer-direction: `input` [L, N, E] ([N, L, E] with batchFirst), `start`
 * [h0] (GRU) or [h0, c0] (LSTM), each [N, H]. Returns the addon's output ([h per step | h_N | c_N],
 * without the per-step h when `finalOnly`) with its sizes, or null when the training path has to run.
 */
function runNative(kind: 'lstm' | 'gru', input: Tensor, cell: InferenceWeights, start: readonly Tensor[], { batchFirst = false, reverse = false }: RecurrentOptions, finalOnly: boolean): { out: Float32Array; plane: number; state: number; batch: number; hidden: number } | null {
  const { weightIh, weightHh, biasIh, biasHh } = cell;
  if (!applies([input, weightIh, weightHh, biasIh, biasHh, ...start])) return null;
  const addon = nativeAddon();
  if (!addon || input.rank !== 3) return null;
  const [a, b, inputSize] = input.shape as [number, number, number];
  const hidden = weightHh.shape[1]!;
  const rows = weightHh.shape[0]!;
  const steps = batchFirst ? b : a;
  const batch = batchFirst ? a : b;
  if (steps === 0 || batch === 0 || inputSize === 0) return null;
  const plane = finalOnly ? 0 : steps * batch * hidden;
  const state = batch * hidden;
  const out = uninitialised(plane + (kind === 'lstm' ? 2 : 1) * state);
  const dims = Int32Array.from([steps, batch, hidden, batchFirst ? 1 : 0, reverse ? 1 : 0, inputSize, finalOnly ? 1 : 0]);
  const f32 = (t: Tensor | null): Float32Array => (t ? (t.data as Float32Array) : new Float32Array(rows));
  if (kind === 'lstm') {
    const bias = new Float32Array(rows);
    if (biasIh && biasHh) {
      const bi = f32(biasIh), bh = f32(biasHh);
      for (let i = 0; i < rows; i++) bias[i] = bi[i]! + bh[i]!;
    }
    addon.lstmInference(f32(input), f32(weightIh), f32(weightHh), bias, f32(start[0]!), f32(start[1]!), out, dims);
  } else {
    addon.gruInference(f32(input), f32(weightIh), f32(weightHh), f32(biasIh), f32(biasHh), f32(start[0]!), out, dims);
  }
  return { out, plane, state, batch, hidden };
}

/**
 * Runs one layer-direction for inference: `input` [L, N, E] ([N, L, E] with batchFirst), `start`
 * [h0] (GRU) or [h0, c0] (LSTM), each [N, H]. Returns h_t for every step (input's layout, width H)
 * and the final state parts, or null when the training path has to run instead.
 */
export function recurrentInference(kind: 'lstm' | 'gru', input: Tensor, cell: InferenceWeights, start: readonly Tensor[], options: RecurrentOptions): { output: Tensor; final: Tensor[] } | null {
  const r = runNative(kind, input, cell, start, options, false);
  if (!r) return null;
  const { out, plane, state, batch, hidden } = r;
  const output = new Tensor(out.subarray(0, plane), [input.shape[0]!, input.shape[1]!, hidden]);
  const final = Array.from({ length: start.length }, (_, p) => new Tensor(out.slice(plane + p * state, plane + (p + 1) * state), [batch, hidden]));
  return { output, final };
}

/**
 * As recurrentInference, but only the final hidden state h_N [N, H] comes back: the per-step
 * outputs stay in the addon's per-thread scratch (what a next-word LM needs from its last step).
 */
export function finalHiddenInference(kind: 'lstm' | 'gru', input: Tensor, cell: InferenceWeights, start: readonly Tensor[], options: RecurrentOptions): Tensor | null {
  const r = runNative(kind, input, cell, start, options, true);
  return r ? new Tensor(r.out.subarray(0, r.state), [r.batch, r.hidden]) : null;
}

/**
 * The next-word head on the last step for inference: `out` [N, L, H] (batch-first per-step
 * outputs, or the last step's [N, H]) → logits [N, V] = out[:, L − 1] · Wᵀ + b in one native SGEMM that reads the last step's
 * rows in place and starts from the bias (C = b, beta 1: no separate bias pass, no copy of the
 * last step). Null when the training path has to run (a gradient is wanted, another backend, not
 * float32, autocast).
 */
export function lastStepLinearInference(out: Tensor, weight: Tensor, bias: Tensor | null): Tensor | null {
  if ((out.rank !== 3 && out.rank !== 2) || !applies([out, weight, bias])) return null;
  const addon = nativeAddon();
  if (!addon) return null;
  // [N, H] is one step.
  const [n, steps, hidden] = (out.rank === 3 ? out.shape : [out.shape[0]!, 1, out.shape[1]!]) as [number, number, number];
  const vocab = weight.shape[0]!;
  if (weight.shape[1] !== hidden || n === 0 || steps === 0 || hidden === 0) return null;
  const logits = uninitialised(n * vocab);
  if (bias) for (let r = 0; r < n; r++) logits.set(bias.data as Float32Array, r * vocab);
  const x = (out.data as Float32Array).subarray((steps - 1) * hidden);
  addon.sgemm(false, true, n, vocab, hidden, x, steps * hidden, weight.data as Float32Array, hidden, bias ? 1 : 0, logits, vocab, 1, 0, 0, 0);
  return new Tensor(logits, [n, vocab]);
}
