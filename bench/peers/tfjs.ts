/**
 * Runs the TensorFlow.js peer (bench/peers/tfjs-bench.ts) in a child Node process and parses the
 * one JSON object it prints — the browser-side peer of lowbit's wasm and reference backends.
 *
 * TF.js's ES-module build imports directories, which Node's ES-module loader refuses, and its
 * CommonJS build leaves out the gradient registrations; so the peer script is bundled once per
 * process with esbuild (a dev dependency) from the packages' ES-module sources into a CommonJS
 * file in a temporary directory, and that file runs. The WebAssembly backend reads its .wasm
 * binaries from the installed @tensorflow/tfjs-backend-wasm. Missing packages or a failing
 * backend come back as `{ ok: false, reason }`, printed as a skipped row.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runChildJson, type ChildJsonResult } from './child-json.ts';
import { measured, skippedMeasurement, type Measurement, type SectionContext } from '../lib.ts';
import { repeatsOf } from './torch.ts';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'tfjs-bench.ts');
const PACKAGES = ['@tensorflow/tfjs-core', '@tensorflow/tfjs-backend-cpu', '@tensorflow/tfjs-backend-wasm'] as const;

export type TfjsBackend = 'cpu' | 'wasm';

export interface TfjsArgs {
  task: 'train' | 'infer';
  model: 'lenet5' | 'mlp';
  backend: TfjsBackend;
  batch: number;
  repeats: number;
  warmup?: number;
  targetSeconds: number;
  /** Threads asked of the wasm backend (what it got is in the answer's `threads`). */
  threads: number;
  /** SGD with momentum (task 'train'). */
  lr?: number;
  momentum?: number;
}

export type TfjsResult = ChildJsonResult;

interface Bundle {
  file: string;
  wasmDir: string;
  /** @tensorflow/tfjs-core's version. */
  version: string;
}

let bundle: Promise<Bundle | string> | null = null;

/** The bundled peer script (built once per process; removed at exit). */
function bundled(): Promise<Bundle | string> {
  bundle ??= (async () => {
    const require = createRequire(import.meta.url);
    for (const p of PACKAGES) {
      try {
        require.resolve(`${p}/package.json`);
      } catch {
        return `${p} is not installed (npm install --save-dev ${PACKAGES.map((q) => `${q}@4`).join(' ')})`;
      }
    }
    let esbuild: typeof import('esbuild');
    try {
      esbuild = await import('esbuild');
    } catch (e) {
      return `esbuild (needed to bundle the TF.js peer) did not load: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`;
    }
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-tfjs-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'tfjs-bench.cjs');
    try {
      await esbuild.build({ entryPoints: [SCRIPT], bundle: true, platform: 'node', format: 'cjs', mainFields: ['module', 'main'], outfile: file, logLevel: 'silent' });
    } catch (e) {
      return `bundling the TF.js peer failed: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`;
    }
    const version = String((require('@tensorflow/tfjs-core/package.json') as { version?: unknown }).version);
    return { file, version, wasmDir: join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') };
  })();
  return bundle;
}

/** Runs one peer measurement; never throws (a missing package, a crash or a timeout is `{ok: false}`). */
export async function runTfjs(args: TfjsArgs, timeoutSeconds = 300): Promise<TfjsResult> {
  const b = await bundled();
  if (typeof b === 'string') return { ok: false, reason: b };
  const argv = [
    b.file, '--task', args.task, '--model', args.model, '--backend', args.backend, '--batch', String(args.batch),
    '--repeats', String(args.repeats), '--warmup', String(args.warmup ?? 5), '--target-seconds', String(args.targetSeconds),
    '--threads', String(args.threads), '--wasm-dir', b.wasmDir,
    ...(args.lr !== undefined ? ['--lr', String(args.lr)] : []), ...(args.momentum !== undefined ? ['--momentum', String(args.momentum)] : []),
  ];
  return runChildJson(process.execPath, argv, {
    name: 'TF.js peer',
    timeoutSeconds,
    // the first line of the error (TF.js names a missing kernel there), not the stack
    failure: (code, err) => {
      const why = err.trim().split('\n').find((l) => l.trim() !== '' && !l.trimStart().startsWith('at ')) ?? `exit ${String(code)}`;
      return `TF.js ${args.backend} backend: ${why.replace(/^Error: /, '').slice(0, 200)}`;
    },
  });
}

/** Row label of a TF.js peer (with the installed version when there is one). */
export async function tfjsImpl(backend: TfjsBackend): Promise<string> {
  const b = await bundled();
  return `TensorFlow.js${typeof b === 'string' ? '' : ` ${b.version}`} (${backend} backend)`;
}

/**
 * The TF.js rows of a section: `args` on the wasm and the cpu backend in turn, each a measurement
 * `idOf(backend)` in `group` (a skipped row when the backend cannot run it), and the thread count
 * the wasm backend ran (0 when it did not run).
 */
export async function tfjsRows(
  ctx: SectionContext, group: string, unit: string, idOf: (backend: TfjsBackend) => string,
  args: Omit<TfjsArgs, 'backend' | 'repeats' | 'warmup' | 'targetSeconds' | 'threads'>,
): Promise<{ measurements: Measurement[]; wasmThreads: number }> {
  const measurements: Measurement[] = [];
  let wasmThreads = 0;
  for (const backend of ['wasm', 'cpu'] as const) {
    ctx.log(`${group}: TensorFlow.js ${backend}`);
    const r = await runTfjs({ ...args, backend, repeats: ctx.repeats, warmup: backend === 'cpu' ? 1 : 5, targetSeconds: ctx.targetSeconds, threads: ctx.threads });
    const base = { id: idOf(backend), group, impl: await tfjsImpl(backend), unit, higherIsBetter: true };
    if (!r.ok) {
      measurements.push(skippedMeasurement(base, r.reason));
      continue;
    }
    if (backend === 'wasm') wasmThreads = Number(r.json.threads);
    measurements.push(measured({ ...base, details: { stepsPerRepeat: r.json.steps, threads: r.json.threads, tensorsAlive: r.json.tensorsAlive } }, repeatsOf(r.json)));
  }
  return { measurements, wasmThreads };
}
