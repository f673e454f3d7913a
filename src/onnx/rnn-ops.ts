/**
 * Import handlers of the ONNX recurrent ops LSTM and GRU (registered in `ONNX_OPS`), computed with
 * lowbit's fused lstmSequence / gruSequence primitives, so an imported recurrent graph runs (and
 * trains) like nn.LSTM / nn.GRU.
 *
 * Supported: direction forward / reverse / bidirectional, layout 0 and 1, optional B, initial_h,
 * initial_c; the default activations only (LSTM: Sigmoid, Tanh, Tanh; GRU: Sigmoid, Tanh), GRU with
 * linear_before_reset = 1 (lowbit's and PyTorch's formula). Refused with an OnnxError naming the
 * node: sequence_lens, peepholes (P), clip, input_forget = 1, other activations, GRU with
 * linear_before_reset = 0, and every shape that does not agree with W, R and hidden_size.
 */
import { add, concat, linear, lstmSequence, gruSequence, reshape, slice, stack, transpose, zeros, Tensor } from '../tensor/index.ts';
import { OnnxError } from './proto.ts';
import type { NodeContext, OpHandler } from './ops.ts';
import type { OnnxValue } from './values.ts';

function fail(ctx: NodeContext, message: string): never {
  throw new OnnxError('bad-graph', `${ctx.where}: ${message}`);
}

function floatInput(inputs: readonly (OnnxValue | undefined)[], i: number, name: string, ctx: NodeContext, required: boolean): Tensor | undefined {
  const v = inputs[i];
  if (v === undefined) {
    if (required) fail(ctx, `input ${i} (${name}) is required`);
    return undefined;
  }
  if (!(v instanceof Tensor) || v.dtype !== 'float32') fail(ctx, `input ${i} (${name}) must be a float32 tensor`);
  return v;
}

function dims(t: Tensor): string {
  return `[${t.shape.join(', ')}]`;
}

/** Rows of `w` [G·H, ...] with the gate blocks taken in `order` (ONNX block indices). */
function regate(w: Tensor, order: readonly number[], H: number): Tensor {
  return concat(order.map((b) => slice(w, [b * H], [(b + 1) * H])), 0);
}

/** ONNX block index of each lowbit gate: LSTM [i, f, g, o] from [i, o, f, c]; GRU [r, z, n] from [z, r, h]. */
const LSTM_FROM_ONNX = [0, 2, 3, 1];
const GRU_FROM_ONNX = [1, 0, 2];

function recurrentHandler(kind: 'LSTM' | 'GRU'): OpHandler {
  const G = kind === 'LSTM' ? 4 : 3;
  const defaults = kind === 'LSTM' ? ['Sigmoid', 'Tanh', 'Tanh'] : ['Sigmoid', 'Tanh'];
  return {
    since: 7,
    run: (inputs, ctx) => {
      try {
        return run(inputs, ctx);
      } catch (e) {
        if (e instanceof OnnxError) throw e;
        throw new OnnxError('shape', `${ctx.where}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
    },
  };

  function run(inputs: readonly (OnnxValue | undefined)[], ctx: NodeContext): OnnxValue[] {
    const a = ctx.attrs;
    const direction = a.string('direction', 'forward');
    if (direction !== 'forward' && direction !== 'reverse' && direction !== 'bidirectional') fail(ctx, `direction '${direction}' is not forward, reverse or bidirectional`);
    const D = direction === 'bidirectional' ? 2 : 1;
    const layout = a.int('layout', 0);
    if (layout !== 0 && layout !== 1) fail(ctx, `layout ${layout} is not 0 or 1`);
    const activations = a.strings('activations');
    if (activations !== undefined && (activations.length !== D * defaults.length || activations.some((s, i) => s !== defaults[i % defaults.length]))) {
      fail(ctx, `activations [${activations.join(', ')}] are not supported (only ${defaults.join(', ')} per direction)`);
    }
    if (a.has('activation_alpha') || a.has('activation_beta')) fail(ctx, 'activation_alpha / activation_beta are not supported');
    if (a.has('clip')) fail(ctx, 'clip is not supported');
    if (kind === 'LSTM' && a.int('input_forget', 0) !== 0) fail(ctx, 'input_forget = 1 is not supported');
    if (kind === 'GRU' && a.int('linear_before_reset', 0) !== 1) fail(ctx, 'linear_before_reset = 0 is not supported (lowbit computes r ⊙ (W_hn·h + b_hn), linear_before_reset = 1)');
    const x = floatInput(inputs, 0, 'X', ctx, true)!;
    const W = floatInput(inputs, 1, 'W', ctx, true)!;
    const R = floatInput(inputs, 2, 'R', ctx, true)!;
    const B = floatInput(inputs, 3, 'B', ctx, false);
    if (inputs[4] !== undefined) fail(ctx, 'sequence_lens is not supported (every sequence runs to the end)');
    const h0 = floatInput(inputs, 5, 'initial_h', ctx, false);
    const c0 = kind === 'LSTM' ? floatInput(inputs, 6, 'initial_c', ctx, false) : undefined;
    if (kind === 'LSTM' && inputs[7] !== undefined) fail(ctx, 'peephole weights (P) are not supported');
    if (x.rank !== 3) fail(ctx, `X must have rank 3, got ${dims(x)}`);
    const [L, N, F] = layout === 0 ? [x.shape[0]!, x.shape[1]!, x.shape[2]!] : [x.shape[1]!, x.shape[0]!, x.shape[2]!];
    if (L < 1 || N < 1) fail(ctx, `X ${dims(x)} is empty`);
    if (R.rank !== 3 || R.shape[0] !== D || R.shape[2]! < 1 || R.shape[1] !== G * R.shape[2]!) fail(ctx, `R must be [${D}, ${G}·H, H], got ${dims(R)}`);
    const H = R.shape[2]!;
    if (a.has('hidden_size') && a.int('hidden_size', 0) !== H) fail(ctx, `hidden_size ${a.int('hidden_size', 0)} differs from R's H = ${H}`);
    if (W.rank !== 3 || W.shape[0] !== D || W.shape[1] !== G * H || W.shape[2] !== F) fail(ctx, `W must be [${D}, ${G * H}, ${F}], got ${dims(W)}`);
    if (B && (B.rank !== 2 || B.shape[0] !== D || B.shape[1] !== 2 * G * H)) fail(ctx, `B must be [${D}, ${2 * G * H}], got ${dims(B)}`);
    const stateShape = layout === 0 ? [D, N, H] : [N, D, H];
    for (const [s, name] of [[h0, 'initial_h'], [c0, 'initial_c']] as const) {
      if (s && (s.rank !== 3 || s.shape.some((d, i) => d !== stateShape[i]))) fail(ctx, `${name} must be [${stateShape.join(', ')}], got ${dims(s)}`);
    }
    const order = kind === 'LSTM' ? LSTM_FROM_ONNX : GRU_FROM_ONNX;
    const timeMajor = layout === 0 ? x : transpose(x, [1, 0, 2]);
    /** State part `s` [D, N, H] (or [N, D, H]) of direction d as [N, H]. */
    const stateOf = (s: Tensor | undefined, d: number): Tensor => {
      if (!s) return zeros([N, H]);
      const piece = layout === 0 ? slice(s, [d], [d + 1]) : slice(s, [0, d], [N, d + 1]);
      return reshape(piece, [N, H]);
    };
    const ys: Tensor[] = [];
    const finals: Tensor[][] = [[], []];
    for (let d = 0; d < D; d++) {
      const reverse = direction === 'reverse' || d === 1;
      const w = regate(reshape(slice(W, [d], [d + 1]), [G * H, F]), order, H);
      const r = regate(reshape(slice(R, [d], [d + 1]), [G * H, H]), order, H);
      const bias = B ? reshape(slice(B, [d], [d + 1]), [2 * G * H]) : zeros([2 * G * H]);
      const wb = regate(slice(bias, [0], [G * H]), order, H);
      const rb = regate(slice(bias, [G * H], [2 * G * H]), order, H);
      const gates = linear(timeMajor, w);
      const parts = kind === 'LSTM'
        ? lstmSequence(gates, r, add(wb, rb), stateOf(h0, d), stateOf(c0, d), { reverse })
        : gruSequence(gates, r, wb, rb, stateOf(h0, d), { reverse });
      ys.push(reshape(slice(parts, [0], [1]), [L, N, H]));
      const last = reverse ? 0 : L - 1;
      for (let p = 0; p < (kind === 'LSTM' ? 2 : 1); p++) finals[p]!.push(reshape(slice(parts, [p, last], [p + 1, last + 1]), [N, H]));
    }
    const y = stack(ys, 1); // [L, D, N, H]
    const outs = [layout === 0 ? y : transpose(y, [2, 0, 1, 3])];
    for (const part of kind === 'LSTM' ? finals : [finals[0]!]) {
      const s = stack(part, 0); // [D, N, H]
      outs.push(layout === 0 ? s : transpose(s, [1, 0, 2]));
    }
    return outs;
  }
}

/** ONNX LSTM (opset 7/14) on lowbit's lstmSequence. */
export const lstmHandler: OpHandler = recurrentHandler('LSTM');
/** ONNX GRU (opset 7/14, linear_before_reset = 1) on lowbit's gruSequence. */
export const gruHandler: OpHandler = recurrentHandler('GRU');
