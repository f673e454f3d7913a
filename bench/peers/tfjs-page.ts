/**
 * The TensorFlow.js side of bench/browser-train.ts's Chromium page (bundled for the browser by
 * esbuild): LeNet-5 training at batch 64 with SGD momentum on each TF.js backend the page can start
 * — webgl (@tensorflow/tfjs-backend-webgl; on a machine without a GPU, Chromium's software WebGL if
 * it offers one), wasm (@tensorflow/tfjs-backend-wasm, XNNPACK in WebAssembly SIMD; the threaded
 * build when the page is cross-origin isolated) and cpu (@tensorflow/tfjs-backend-cpu, plain
 * JavaScript). Exposes `globalThis.__tf.setup(backend)` → `{ ok, threads?, reason? }` and
 * `globalThis.__tf.steps(backend, n)` → `{ ms, loss }`.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-webgl';
import * as tfWasm from '@tensorflow/tfjs-backend-wasm';
import { buildNet, makeStep } from './tfjs-model.ts';

const steppers = new Map<string, () => number>();

async function setup(backend: 'webgl' | 'wasm' | 'cpu', threads: number): Promise<{ ok: boolean; threads?: number; reason?: string }> {
  try {
    if (backend === 'wasm') {
      tfWasm.setWasmPaths('./'); // the page serves the three .wasm files next to index.html
      tfWasm.setThreadsCount(threads);
    }
    if (!(await tf.setBackend(backend))) return { ok: false, reason: `TF.js ${backend} backend did not initialise` };
    await tf.ready();
    if (!steppers.has(backend)) {
      const step = makeStep(tf, buildNet(tf, 'lenet5'), 'train', 64, 0.01, 0.9);
      step(); // the first step finds a missing kernel (TF.js throws naming it)
      steppers.set(backend, step);
    }
    return { ok: true, ...(backend === 'wasm' ? { threads: tfWasm.getThreadsCount() } : backend === 'cpu' ? { threads: 1 } : {}) };
  } catch (e) {
    return { ok: false, reason: `TF.js ${backend} backend: ${e instanceof Error ? e.message.split('\n')[0]! : String(e)}` };
  }
}

async function steps(backend: string, n: number): Promise<{ ms: number; loss: number }> {
  if (tf.getBackend() !== backend) await tf.setBackend(backend);
  const step = steppers.get(backend);
  if (!step) throw new Error(`TF.js ${backend}: not set up`);
  const t = performance.now();
  let loss = 0;
  for (let s = 0; s < n; s++) loss = step();
  return { ms: performance.now() - t, loss };
}

(globalThis as unknown as { __tf: object }).__tf = { setup, steps, version: tf.version_core };
