/**
 * Running and verifying an exported sequence model (`exportRnnOnnx`) in onnxruntime-node: feeds
 * are lowbit tensors (int32 ids or float32 features, states), outputs come back as tensors, and
 * `verifyRnnOnnx` compares ORT's logits with lowbit's forward of the same chain.
 */
import { noGrad } from '../autograd/engine.ts';
import type { Module } from '../nn/module.ts';
import { Tensor } from '../tensor/index.ts';
import { compareLogits } from './compare.ts';
import { rnnChain, runRnnChain, type RnnChainStates, type RnnOnnxExportOptions } from './rnn.ts';
import { createOrtSession, type OnnxRunOptions } from './verify.ts';

/** An open onnxruntime session over a sequence model. */
export interface RnnOnnxRunner {
  readonly version: string;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Runs the model on named inputs (int32 or float32 tensors); returns every output by name (float32). */
  run(feeds: Readonly<Record<string, Tensor>>): Promise<Record<string, Tensor>>;
  release(): Promise<void>;
}

/**
 * Opens `bytes` with onnxruntime-node (CPU). Resolves to a runner, or to `{ skipped }` when
 * onnxruntime-node is not available; throws when onnxruntime rejects the model.
 */
export interface RnnOnnxOpenOptions extends Omit<OnnxRunOptions, 'batchSize' | 'progress'> {
  /**
   * onnxruntime's `session.qdq_matmulnbits_accuracy_level` (0..4). At graph optimization level
   * 'extended' or higher onnxruntime fuses DequantizeLinear(int8 weight) → MatMul with a float
   * input into com.microsoft MatMulNBits, whose default accuracy level 4 quantizes that input to
   * int8 on the fly — no longer the fake-quant model. 0 (or 1) keeps the float input. Default:
   * onnxruntime's own (4). See docs/onnx-rnn.md.
   */
  readonly matMulNBitsAccuracyLevel?: 0 | 1 | 2 | 3 | 4;
}

export async function openRnnOnnx(bytes: Uint8Array, options: RnnOnnxOpenOptions = {}): Promise<RnnOnnxRunner | { readonly skipped: string }> {
  const opened = await createOrtSession(bytes, options, options.matMulNBitsAccuracyLevel === undefined ? undefined : { qdq_matmulnbits_accuracy_level: String(options.matMulNBitsAccuracyLevel) });
  if ('skipped' in opened) return opened;
  const { ort, session } = opened;
  return {
    version: opened.version,
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    async run(feeds: Readonly<Record<string, Tensor>>): Promise<Record<string, Tensor>> {
      const ortFeeds: Record<string, ReturnType<typeof toOrt>> = {};
      for (const name of session.inputNames) {
        const t = feeds[name];
        if (!t) throw new Error(`onnx run: missing input '${name}' (the model reads ${session.inputNames.join(', ')})`);
        ortFeeds[name] = toOrt(t);
      }
      const unknown = Object.keys(feeds).filter((k) => !session.inputNames.includes(k));
      if (unknown.length > 0) throw new Error(`onnx run: unknown inputs ${unknown.join(', ')} (the model reads ${session.inputNames.join(', ')})`);
      const out = await session.run(ortFeeds);
      const result: Record<string, Tensor> = {};
      for (const name of session.outputNames) {
        const y = out[name];
        if (!y || !(y.data instanceof Float32Array)) throw new Error(`onnx run: output '${name}' is not float32`);
        result[name] = new Tensor(Float32Array.from(y.data), [...y.dims]);
      }
      return result;
    },
    async release(): Promise<void> {
      await session.release?.();
    },
  };

  function toOrt(t: Tensor): InstanceType<typeof ort.Tensor> {
    if (t.data instanceof Int32Array) return new ort.Tensor('int32', t.data, t.shape);
    if (t.data instanceof Float32Array) return new ort.Tensor('float32', t.data, t.shape);
    throw new TypeError(`onnx run: inputs must be int32 or float32 tensors, got ${t.dtype}`);
  }
}

/** ORT vs lowbit on one batch of sequences. */
export type RnnVerifyReport =
  | { readonly status: 'skipped'; readonly reason: string }
  | {
    readonly status: 'ok';
    readonly ortVersion: string;
    /** Output vectors compared (positions × batch, or batch with lastStep). */
    readonly positions: number;
    readonly maxAbsDiff: number;
    /** maxAbsDiff / max |lowbit output|. */
    readonly maxRelDiff: number;
    /** Largest |Δ| over the final states (0 without states). */
    readonly stateMaxAbsDiff: number;
    /** Fraction of output vectors (over the last axis) whose argmax is the same. */
    readonly argmaxAgreement: number;
  };

export interface RnnVerifyOptions extends Pick<RnnOnnxExportOptions, 'lastStep' | 'inputName' | 'outputName'>, RnnOnnxOpenOptions {
  /** Initial states, by recurrent layer (chain name) — only for a model exported with `states`. */
  readonly initial?: RnnChainStates;
  /** Graph input names of the initial states, by layer and part (as `exportRnnOnnx` reported them in `inputs`). */
  readonly stateInputs?: Readonly<Record<string, readonly string[]>>;
  /** Graph output names of the final states, by layer and part. */
  readonly stateOutputs?: Readonly<Record<string, readonly string[]>>;
}

/**
 * Runs `bytes` on `input` in onnxruntime-node and lowbit's chain forward (`runRnnChain` on
 * `model`, in eval mode) and compares: max |Δ| (absolute and relative to the largest output),
 * argmax agreement over the last axis, and the final states when their names are given.
 */
export async function verifyRnnOnnx(bytes: Uint8Array, model: Module | readonly Module[], input: Tensor, options: RnnVerifyOptions = {}): Promise<RnnVerifyReport> {
  const runner = await openRnnOnnx(bytes, options);
  if ('skipped' in runner) return { status: 'skipped', reason: runner.skipped };
  try {
    const feeds: Record<string, Tensor> = { [options.inputName ?? 'input']: input };
    for (const [layer, names] of Object.entries(options.stateInputs ?? {})) {
      names.forEach((n, p) => {
        const s = options.initial?.[layer]?.[p];
        if (!s) throw new Error(`verifyRnnOnnx: no initial state ${p} for layer '${layer}'`);
        feeds[n] = s;
      });
    }
    const got = await runner.run(feeds);
    const chain = rnnChain(model);
    const modules = chain.map(([, m]) => m);
    const training = modules.map((m) => m.training);
    modules.forEach((m) => m.eval());
    let reference: ReturnType<typeof runRnnChain>;
    try {
      reference = noGrad(() => runRnnChain(chain, input, { lastStep: options.lastStep, initial: options.initial }));
    } finally {
      modules.forEach((m, i) => m.train(training[i]));
    }
    const y = got[options.outputName ?? 'logits'];
    const r = reference.output;
    if (!y || y.size !== r.size) throw new Error(`verifyRnnOnnx: onnxruntime gave ${y?.size ?? 0} outputs, lowbit ${r.size}`);
    const width = r.shape[r.rank - 1]!;
    const positions = r.size / width;
    const c = compareLogits(y.data, r.data, width);
    // A NaN anywhere reports as an infinite difference.
    const maxAbs = Number.isNaN(c.maxAbsDiff) ? Infinity : c.maxAbsDiff;
    let stateMax = 0;
    for (const [layer, names] of Object.entries(options.stateOutputs ?? {})) {
      names.forEach((n, part) => {
        const s = got[n];
        const ref = reference.states[layer]?.[part];
        if (!s || !ref || s.size !== ref.size) throw new Error(`verifyRnnOnnx: final state '${n}' missing or of the wrong size`);
        for (let i = 0; i < s.size; i++) stateMax = Math.max(stateMax, Math.abs(s.data[i]! - ref.data[i]!));
      });
    }
    return {
      status: 'ok', ortVersion: runner.version, positions, maxAbsDiff: maxAbs, maxRelDiff: maxAbs / Math.max(c.maxAbsRef, Number.MIN_VALUE),
      stateMaxAbsDiff: stateMax, argmaxAgreement: c.argmaxAgreement,
    };
  } finally {
    await runner.release();
  }
}
