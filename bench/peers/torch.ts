/**
 * Runs the PyTorch peer (`bench/peers/torch_bench.py`) in a child process and parses the one JSON
 * object it prints. Python is `/usr/bin/python3` (Debian's, with torch) unless
 * `LOWBIT_BENCH_PYTHON` names another; BLAS threads are pinned to 1 and torch to `threads`.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { torchPeerEnv } from '../lib.ts';
import { runChildJson, type ChildJsonResult } from './child-json.ts';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'torch_bench.py');

export function pythonPath(): string {
  return process.env.LOWBIT_BENCH_PYTHON ?? '/usr/bin/python3';
}

export type TorchResult = ChildJsonResult;

export interface TorchArgs {
  task: 'train' | 'infer' | 'export' | 'epoch' | 'info';
  model?: 'lenet5' | 'mlp';
  batch?: number;
  /** 0 = let the script calibrate to `targetSeconds`. */
  steps?: number;
  repeats?: number;
  warmup?: number;
  targetSeconds?: number;
  threads?: number;
  out?: string;
  samples?: number;
  optimizer?: 'sgd' | 'adam';
  lr?: number;
  momentum?: number;
  /** task 'infer': torch.ao static int8 quantization (fbgemm) before timing. */
  int8?: boolean;
}

/** Runs the peer; never throws: a missing python, a crash or a timeout becomes `{ok: false}`. */
export function runTorch(args: TorchArgs, timeoutSeconds = 300): Promise<TorchResult> {
  const py = pythonPath();
  if (!existsSync(py)) return Promise.resolve({ ok: false, reason: `python not found at ${py}` });
  const argv = [SCRIPT, '--task', args.task];
  const opt = (flag: string, v: string | number | undefined): void => {
    if (v !== undefined) argv.push(flag, String(v));
  };
  opt('--model', args.model);
  opt('--batch', args.batch);
  opt('--steps', args.steps);
  opt('--repeats', args.repeats);
  opt('--warmup', args.warmup);
  opt('--target-seconds', args.targetSeconds);
  opt('--threads', args.threads ?? 2);
  opt('--out', args.out);
  opt('--samples', args.samples);
  opt('--optimizer', args.optimizer);
  opt('--lr', args.lr);
  opt('--momentum', args.momentum);
  if (args.int8) argv.push('--int8');
  return runChildJson(py, argv, {
    name: 'PyTorch peer',
    env: torchPeerEnv(args.threads ?? 2),
    timeoutSeconds,
    failure: (code, err) => `PyTorch peer failed (exit ${String(code)}): ${(err.trim().split('\n').pop() ?? '').slice(0, 200)}`,
  });
}

/** Numbers of a peer result's `repeats` field. */
export function repeatsOf(json: Record<string, unknown>): number[] {
  const r = json.repeats;
  return Array.isArray(r) ? r.filter((v): v is number => typeof v === 'number') : [];
}
