/**
 * onnxruntime-node peer. The package is an optional dependency: it is loaded with a dynamic import
 * and every failure (not installed, native binding missing, bad model) becomes a skip reason.
 */
import { existsSync } from 'node:fs';
import { measureRate } from '../lib.ts';
import { loadOnnxRuntime, type OnnxRuntimeLoad, type OrtSession } from '../../src/onnx/verify.ts';

/** onnxruntime-node is loaded by the library's own loader (src/onnx/verify.ts), once per process. */
export type OrtLoad = OnnxRuntimeLoad;
export const loadOrt = loadOnnxRuntime;

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
