/**
 * onnxruntime-node peer. The package is an optional dependency: it is loaded with a dynamic import
 * and every failure (not installed, native binding missing, bad model) becomes a skip reason.
 */
import { existsSync } from 'node:fs';
import { measureRate } from '../lib.ts';

/** The subset of onnxruntime-node's API used here. */
interface OrtTensor {
  readonly dims: readonly number[];
}
interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release?(): Promise<void>;
}
interface OrtModule {
  Tensor: new (type: 'float32', data: Float32Array, dims: readonly number[]) => OrtTensor;
  InferenceSession: {
    create(path: string, options: Record<string, unknown>): Promise<OrtSession>;
  };
  env?: { versions?: { node?: string; common?: string } };
}

export type OrtLoad = { ok: true; ort: OrtModule; version: string } | { ok: false; reason: string };

let cached: Promise<OrtLoad> | null = null;

export function loadOrt(): Promise<OrtLoad> {
  cached ??= (async (): Promise<OrtLoad> => {
    try {
      const name = 'onnxruntime-node';
      const mod = (await import(name)) as OrtModule & { default?: OrtModule };
      const ort = mod.InferenceSession ? mod : mod.default;
      if (!ort?.InferenceSession) return { ok: false, reason: 'onnxruntime-node loaded without InferenceSession' };
      return { ok: true, ort, version: ort.env?.versions?.node ?? ort.env?.versions?.common ?? 'unknown' };
    } catch (e) {
      const msg = e instanceof Error ? e.message.split('\n')[0]! : String(e);
      return { ok: false, reason: `onnxruntime-node not available (${msg.slice(0, 160)})` };
    }
  })();
  return cached;
}

export interface OrtInferenceOptions {
  modelPath: string;
  batch: number;
  repeats: number;
  targetSeconds: number;
  threads: number;
  input: Float32Array;
}

/** A CPU session on an fp32 classifier with one prepared batch: `run` does one inference. */
export async function ortRunner(o: Omit<OrtInferenceOptions, 'repeats' | 'targetSeconds'>): Promise<{ ok: true; version: string; run: () => Promise<void>; release: () => Promise<void> } | { ok: false; reason: string }> {
  const loaded = await loadOrt();
  if (!loaded.ok) return loaded;
  if (!existsSync(o.modelPath)) return { ok: false, reason: `no ONNX model at ${o.modelPath}` };
  const { ort } = loaded;
  let session: OrtSession;
  try {
    session = await ort.InferenceSession.create(o.modelPath, {
      executionProviders: ['cpu'],
      intraOpNumThreads: o.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
  } catch (e) {
    return { ok: false, reason: `onnxruntime session failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}` };
  }
  const feeds = { [session.inputNames[0]!]: new ort.Tensor('float32', o.input, [o.batch, 1, 28, 28]) };
  const out = await session.run(feeds);
  const dims = out[session.outputNames[0]!]?.dims ?? [];
  if (dims[0] !== o.batch || dims[1] !== 10) return { ok: false, reason: `unexpected ONNX output shape [${dims.join(', ')}]` };
  return {
    ok: true,
    version: loaded.version,
    run: async () => {
      await session.run(feeds);
    },
    release: async () => {
      await session.release?.();
    },
  };
}

/** Images/s of an fp32 ONNX classifier on `input` ([batch, 1, 28, 28]) with a CPU session. */
export async function ortInference(o: OrtInferenceOptions): Promise<{ ok: true; version: string; median: number; repeats: number[]; steps: number } | { ok: false; reason: string }> {
  const r = await ortRunner(o);
  if (!r.ok) return r;
  const m = await measureRate(r.run, { warmup: 3, repeats: o.repeats, targetSeconds: o.targetSeconds, itemsPerCall: o.batch });
  await r.release();
  return { ok: true, version: r.version, ...m };
}
