/**
 * A one-shot peer process that prints one JSON object as its last stdout line (the PyTorch peer
 * bench/peers/torch_bench.py, the TensorFlow.js peer bench/peers/tfjs-bench.ts). Never throws: a
 * missing program, a crash, a timeout or an answer `{ skipped: reason }` comes back as
 * `{ ok: false, reason }`.
 */
import { spawn } from 'node:child_process';

export type ChildJsonResult = { ok: true; json: Record<string, unknown> } | { ok: false; reason: string };

export interface ChildJsonOptions {
  /** The peer's name in messages ("PyTorch peer"). */
  name: string;
  env?: NodeJS.ProcessEnv;
  timeoutSeconds: number;
  /** The reason of a failed run (non-zero exit or no JSON line) from its exit code and stderr. */
  failure: (code: number | null, stderr: string) => string;
}

export function runChildJson(program: string, argv: readonly string[], o: ChildJsonOptions): Promise<ChildJsonResult> {
  return new Promise((resolve) => {
    const child = spawn(program, argv, { ...(o.env ? { env: o.env } : {}), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ ok: false, reason: `${o.name} timed out after ${o.timeoutSeconds} s` });
    }, o.timeoutSeconds * 1000);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ ok: false, reason: `cannot run ${program}: ${e.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      let json: Record<string, unknown> | null = null;
      try {
        json = JSON.parse(line) as Record<string, unknown>;
      } catch {
        json = null;
      }
      if (json && typeof json.skipped === 'string') return resolve({ ok: false, reason: json.skipped });
      if (code !== 0 || !json) return resolve({ ok: false, reason: o.failure(code, err) });
      resolve({ ok: true, json });
    });
  });
}
