/**
 * The TensorFlow.js peer: runs in its own Node process (started by bench/peers/tfjs.ts) so that
 * TF.js's global engine and its WebAssembly module stay out of the bench process. Prints one JSON
 * object on stdout: `{ tfjs, backend, threads, steps, repeats: [items/s...], ... }`, or
 * `{ skipped: reason }` when TF.js or the backend cannot load.
 *
 * Tasks (same models, batch shapes and optimizer as the lowbit and PyTorch rows):
 * - `train`: one training step = forward, softmax cross-entropy, backward, SGD with momentum
 *   (`--lr`, `--momentum`; default 0.01, 0.9), loss read back (`dataSync`), like lowbit's `trainStepper`;
 * - `infer`: forward of one batch, logits read back.
 * Models and step: bench/peers/tfjs-model.ts. Inputs are random (fp32 speed does not depend on
 * the values), 8 batches cycled.
 *
 * Backends: `cpu` (@tensorflow/tfjs-backend-cpu: plain JavaScript kernels, what TF.js runs on when
 * neither WebGL nor WASM is available) and `wasm` (@tensorflow/tfjs-backend-wasm: XNNPACK compiled
 * to WebAssembly with SIMD; its multi-threaded build needs cross-origin isolation in a browser, and in
 * Node this script reports the thread count the backend ended up with).
 */
import { parseArgs } from 'node:util';

import * as tfCore from '@tensorflow/tfjs-core';
// the gradients of the core ops live in a side-effect module (the @tensorflow/tfjs bundle imports it)
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import '@tensorflow/tfjs-backend-cpu';
import * as tfWasm from '@tensorflow/tfjs-backend-wasm';

import { buildNet, makeStep } from './tfjs-model.ts';

type Tf = typeof tfCore;

interface Options {
  task: 'train' | 'infer';
  model: 'lenet5' | 'mlp';
  backend: 'cpu' | 'wasm';
  batch: number;
  repeats: number;
  warmup: number;
  targetSeconds: number;
  threads: number;
  lr: number;
  momentum: number;
  /** Directory of @tensorflow/tfjs-backend-wasm's .wasm files. */
  wasmDir: string;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      task: { type: 'string', default: 'train' },
      model: { type: 'string', default: 'lenet5' },
      backend: { type: 'string', default: 'wasm' },
      batch: { type: 'string', default: '64' },
      repeats: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '5' },
      'target-seconds': { type: 'string', default: '1.2' },
      threads: { type: 'string', default: '2' },
      'wasm-dir': { type: 'string', default: '' },
      lr: { type: 'string', default: '0.01' },
      momentum: { type: 'string', default: '0.9' },
    },
  });
  const int = (name: string, v: string | undefined, lo: number, hi: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`--${name} must be an integer in [${lo}, ${hi}], got '${String(v)}'`);
    return n;
  };
  const pick = <T extends string>(name: string, v: string | undefined, allowed: readonly T[]): T => {
    if (!allowed.includes(v as T)) throw new Error(`--${name} must be one of ${allowed.join(', ')}, got '${String(v)}'`);
    return v as T;
  };
  const target = Number(values['target-seconds']);
  const lr = Number(values.lr);
  const momentum = Number(values.momentum);
  if (!(lr > 0 && lr < 10)) throw new Error('--lr must be in (0, 10)');
  if (!(momentum >= 0 && momentum < 1)) throw new Error('--momentum must be in [0, 1)');
  if (!(target > 0 && target <= 60)) throw new Error(`--target-seconds must be in (0, 60]`);
  return {
    task: pick('task', values.task, ['train', 'infer'] as const),
    model: pick('model', values.model, ['lenet5', 'mlp'] as const),
    backend: pick('backend', values.backend, ['cpu', 'wasm'] as const),
    batch: int('batch', values.batch, 1, 4096),
    repeats: int('repeats', values.repeats, 1, 100),
    warmup: int('warmup', values.warmup, 0, 100),
    targetSeconds: target,
    threads: int('threads', values.threads, 1, 64),
    wasmDir: values['wasm-dir'] ?? '',
    lr,
    momentum,
  };
}

/** Sets the requested backend; a string is the reason it cannot run. */
async function loadTf(o: Options): Promise<{ tf: Tf; threads: number } | string> {
  const tf = tfCore;
  try {
    if (o.backend === 'cpu') {
      if (!(await tf.setBackend('cpu'))) return 'TF.js cpu backend did not initialise';
      return { tf, threads: 1 };
    }
    // the .wasm binaries are read from the installed package (the bundle that runs this has none)
    if (o.wasmDir) tfWasm.setWasmPaths(o.wasmDir.endsWith('/') ? o.wasmDir : `${o.wasmDir}/`);
    tfWasm.setThreadsCount(o.threads);
    if (!(await tf.setBackend('wasm'))) return 'TF.js wasm backend did not initialise';
    await tf.ready();
    return { tf, threads: tfWasm.getThreadsCount() };
  } catch (e) {
    return `TF.js ${o.backend} backend failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`;
  }
}


async function main(): Promise<void> {
  const o = options();
  const loaded = await loadTf(o);
  if (typeof loaded === 'string') {
    process.stdout.write(`${JSON.stringify({ skipped: loaded })}\n`);
    return;
  }
  const { tf, threads } = loaded;
  const net = buildNet(tf, o.model);
  const step = makeStep(tf, net, o.task, o.batch, o.lr, o.momentum);
  const now = (): number => performance.now() / 1000;
  for (let i = 0; i < o.warmup; i++) step();
  const t0 = now();
  let probe = 0;
  while (probe < 2 || (now() - t0 < 0.25 && probe < 50)) {
    step();
    probe++;
  }
  const steps = Math.max(2, Math.min(2000, Math.round(o.targetSeconds / ((now() - t0) / probe))));
  const repeats: number[] = [];
  for (let r = 0; r < o.repeats; r++) {
    const start = now();
    for (let i = 0; i < steps; i++) step();
    repeats.push((steps * o.batch) / (now() - start));
  }
  const leaked = tf.memory().numTensors;
  process.stdout.write(`${JSON.stringify({ tfjs: tf.version_core, backend: o.backend, threads, task: o.task, model: o.model, batch: o.batch, steps, repeats, tensorsAlive: leaked })}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
