/**
 * Verification of an exported ONNX model: run it with onnxruntime-node (an optional dependency,
 * loaded with a dynamic import) on sample inputs and compare its outputs with lowbit's own
 * (the float model's forward, or the IntModel's integer simulation).
 */
import { ProgressBar, type ProgressStream } from '../train/progress.ts';
import { noGrad } from '../autograd/engine.ts';
import type { TensorModule } from '../nn/module.ts';
import { Tensor } from '../tensor/tensor.ts';

/** The subset of onnxruntime-node's API used here. */
export interface OrtTensor {
  readonly dims: readonly number[];
  readonly data: unknown;
}
export interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release?(): Promise<void>;
}
export interface OrtModule {
  Tensor: new (type: 'float32' | 'int32', data: Float32Array | Int32Array, dims: readonly number[]) => OrtTensor;
  /** From model bytes or a file path. */
  InferenceSession: { create(model: Uint8Array | string, options?: Record<string, unknown>): Promise<OrtSession> };
  env?: { versions?: Record<string, string | undefined> };
}

/** onnxruntime-node when it loads, or why it does not. */
export type OnnxRuntimeLoad = { readonly ok: true; readonly ort: OrtModule; readonly version: string } | { readonly ok: false; readonly reason: string };

let cached: Promise<OnnxRuntimeLoad> | null = null;

/** Loads onnxruntime-node once (dynamic import); a missing package is a reason, not an error. */
export function loadOnnxRuntime(): Promise<OnnxRuntimeLoad> {
  cached ??= (async (): Promise<OnnxRuntimeLoad> => {
    const name = 'onnxruntime-node';
    try {
      const mod = (await import(name)) as OrtModule & { default?: OrtModule };
      const ort = mod.InferenceSession ? mod : mod.default;
      if (!ort?.InferenceSession) return { ok: false, reason: 'onnxruntime-node loaded without InferenceSession' };
      return { ok: true, ort, version: ort.env?.versions?.node ?? ort.env?.versions?.common ?? 'unknown' };
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') return { ok: false, reason: 'onnxruntime-node not installed' };
      return { ok: false, reason: `onnxruntime-node failed to load (${(e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 200)})` };
    }
  })();
  return cached;
}

/** Options of `runOnnx` / `verifyOnnx`. */
export interface OnnxRunOptions {
  /** Samples per session.run call (default 256). */
  readonly batchSize?: number;
  /** onnxruntime graph optimization level (default 'all', as deployed). */
  readonly graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Intra-op threads (default 1). */
  readonly threads?: number;
  /** Show a progress bar on this stream (default: none). */
  readonly progress?: ProgressStream;
}

/** An open session over model bytes: `run(x, n)` gives the first output for n samples. */
export interface OnnxRunner {
  readonly version: string;
  run(x: Float32Array, n: number): Promise<Float32Array>;
  release(): Promise<void>;
}

/**
 * A CPU session of onnxruntime-node over `model` (bytes or a path) with lowbit's settings (sequential,
 * `threads` intra-op threads, default optimization level 'all'; `extra` session config entries), or
 * `{ skipped }` when onnxruntime-node is not available. Throws when onnxruntime rejects the model.
 * @internal
 */
export async function createOrtSession(
  model: Uint8Array | string,
  options: Pick<OnnxRunOptions, 'graphOptimizationLevel' | 'threads'> = {},
  extra?: Readonly<Record<string, string>>,
): Promise<{ readonly ort: OrtModule; readonly version: string; readonly session: OrtSession } | { readonly skipped: string }> {
  const loaded = await loadOnnxRuntime();
  if (!loaded.ok) return { skipped: loaded.reason };
  try {
    const session = await loaded.ort.InferenceSession.create(model, {
      executionProviders: ['cpu'],
      intraOpNumThreads: options.threads ?? 1,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: options.graphOptimizationLevel ?? 'all',
      ...(extra === undefined ? {} : { extra: { session: { ...extra } } }),
    });
    return { ort: loaded.ort, version: loaded.version, session };
  } catch (e) {
    throw new Error(`onnxruntime-node ${loaded.version} rejected the model: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`);
  }
}

/**
 * Opens `bytes` with onnxruntime-node (CPU). Resolves to a runner, or to `{ skipped }` when
 * onnxruntime-node is not available. Throws when onnxruntime rejects the model.
 */
export async function openOnnx(bytes: Uint8Array, sampleShape: readonly number[], options: OnnxRunOptions = {}): Promise<OnnxRunner | { readonly skipped: string }> {
  const opened = await createOrtSession(bytes, options);
  if ('skipped' in opened) return opened;
  const { ort, session } = opened;
  const per = sampleShape.reduce((p, d) => p * d, 1);
  return {
    version: opened.version,
    async run(x: Float32Array, n: number): Promise<Float32Array> {
      if (x.length !== n * per) throw new Error(`onnx run: ${x.length} values are not ${n} samples of shape [${sampleShape.join(', ')}]`);
      const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x, [n, ...sampleShape]) });
      const y = out[session.outputNames[0]!];
      if (!y || !(y.data instanceof Float32Array)) throw new Error('onnx run: the model\'s first output is not float32');
      return y.data;
    },
    async release(): Promise<void> {
      await session.release?.();
    },
  };
}

/** lowbit's own output for the `n` samples `x` (row-major [n, ...]), samples `from`..`from + n − 1`. */
export type ReferenceFn = (x: Float32Array, n: number, from: number) => Float32Array;

/** The ReferenceFn of a float module: its forward (no tape) on [n, ...sampleShape], as float32. */
export function moduleReference(module: TensorModule, sampleShape: readonly number[]): ReferenceFn {
  return (x, n) => {
    const y = noGrad(() => module.forward(new Tensor(x, [n, ...sampleShape])));
    return y.data instanceof Float32Array ? y.data : Float32Array.from(y.data as ArrayLike<number>);
  };
}

/** Sample inputs: `count` samples of `shape`, row-major. */
export interface VerifySamples {
  readonly data: Float32Array;
  readonly shape: readonly number[];
  readonly count: number;
}

export type VerifyReport =
  | { readonly status: 'skipped'; readonly reason: string }
  | {
    readonly status: 'ok';
    readonly ortVersion: string;
    readonly samples: number;
    /** Outputs per sample (e.g. classes). */
    readonly outputs: number;
    readonly maxAbsDiff: number;
    readonly meanAbsDiff: number;
    /** Fraction of samples whose argmax over the outputs is the same. */
    readonly argmaxAgreement: number;
    /** Seconds spent in onnxruntime (wall clock; not a benchmark). */
    readonly ortSeconds: number;
  };

/**
 * Runs the ONNX model `bytes` with onnxruntime-node on `samples` and compares with `reference`:
 * max and mean |Δ| of the outputs and argmax agreement. When onnxruntime-node is missing the
 * report says `skipped` (not an error); when it rejects the model this throws.
 */
export async function verifyOnnx(bytes: Uint8Array, reference: ReferenceFn, samples: VerifySamples, options: OnnxRunOptions = {}): Promise<VerifyReport> {
  const per = samples.shape.reduce((p, d) => p * d, 1);
  if (samples.count < 1 || samples.data.length !== samples.count * per) {
    throw new Error(`verifyOnnx: ${samples.data.length} values are not ${samples.count} samples of shape [${samples.shape.join(', ')}]`);
  }
  const runner = await openOnnx(bytes, samples.shape, options);
  if ('skipped' in runner) return { status: 'skipped', reason: runner.skipped };
  const batch = options.batchSize ?? 256;
  const bar = options.progress ? new ProgressBar({ total: samples.count, label: 'verify', rateUnit: 'samples', stream: options.progress }) : null;
  let maxAbs = 0;
  let sumAbs = 0;
  let agree = 0;
  let outputs = 0;
  let ortSeconds = 0;
  try {
    for (let from = 0; from < samples.count; from += batch) {
      const n = Math.min(batch, samples.count - from);
      const x = samples.data.subarray(from * per, (from + n) * per);
      const t0 = performance.now();
      const y = await runner.run(x, n);
      ortSeconds += (performance.now() - t0) / 1000;
      const r = reference(x, n, from);
      if (y.length !== r.length || y.length % n !== 0) throw new Error(`verifyOnnx: onnxruntime gave ${y.length} outputs for ${n} samples, lowbit ${r.length}`);
      outputs = y.length / n;
      for (let i = 0; i < n; i++) {
        let a = 0;
        let b = 0;
        for (let c = 0; c < outputs; c++) {
          const j = i * outputs + c;
          const d = Math.abs(y[j]! - r[j]!);
          if (!(d <= maxAbs)) maxAbs = Number.isNaN(d) ? Infinity : d;
          sumAbs += d;
          if (y[j]! > y[i * outputs + a]!) a = c;
          if (r[j]! > r[i * outputs + b]!) b = c;
        }
        if (a === b) agree++;
      }
      bar?.tick(n, { agree: `${((agree / (from + n)) * 100).toFixed(2)}%` });
    }
  } finally {
    bar?.done();
    await runner.release();
  }
  return {
    status: 'ok', ortVersion: runner.version, samples: samples.count, outputs,
    maxAbsDiff: maxAbs, meanAbsDiff: sumAbs / (samples.count * outputs), argmaxAgreement: agree / samples.count, ortSeconds,
  };
}

/** One line per report, as `lowbit export --verify` prints it. */
export function formatVerifyReport(r: VerifyReport): string {
  if (r.status === 'skipped') return `verify: skipped: ${r.reason}`;
  return `verify: onnxruntime-node ${r.ortVersion}, ${r.samples} samples: argmax agreement ${(r.argmaxAgreement * 100).toFixed(2)} %, max |diff| ${r.maxAbsDiff.toExponential(3)}, mean |diff| ${r.meanAbsDiff.toExponential(3)}`;
}
