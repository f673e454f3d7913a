/**
 * Client of the long-lived PyTorch RNN peer (`bench/peers/torch_rnn.py`): one python process,
 * one JSON request per line on its stdin and one JSON answer per line on its stdout, so that a
 * section can interleave PyTorch repeats with lowbit's in the same run. Python is the one
 * `pythonPath()` names; BLAS threads are pinned to 1 and torch to `threads`.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { pythonPath } from './torch.ts';
import { torchPeerEnv } from '../lib.ts';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'torch_rnn.py');

/** The model and data of one RNN training-step workload (see torch_rnn.py). */
export interface TorchRnnSpec {
  readonly kind: 'LSTM' | 'GRU';
  readonly input: number;
  readonly hidden: number;
  readonly classes: number;
  readonly batch: number;
  readonly seq: number;
  readonly lr: number;
  readonly warmup: number;
  readonly seed?: number;
}

/** Wall and process-CPU milliseconds per step of one timed repeat. */
export interface TorchRepeat {
  readonly ms: number;
  readonly cpuMs: number;
}

type Answer = Record<string, unknown>;

export class TorchRnnPeer {
  /** torch.__version__, the BLAS library mapped and torch's thread count, from the ready line. */
  readonly info: { torch: string; blas: string; threads: number };
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterator<string>;
  private readonly stderr: string[];
  private readonly timeoutSeconds: number;

  private constructor(child: ChildProcessWithoutNullStreams, lines: AsyncIterator<string>, stderr: string[], info: TorchRnnPeer['info'], timeoutSeconds: number) {
    this.child = child;
    this.lines = lines;
    this.stderr = stderr;
    this.info = info;
    this.timeoutSeconds = timeoutSeconds;
  }

  /**
   * Starts the peer and waits for its ready line. Never throws: a missing python or torch, a crash
   * or a timeout comes back as a string (the reason to print as "skipped").
   */
  static async start(threads: number, timeoutSeconds = 120): Promise<TorchRnnPeer | string> {
    const py = pythonPath();
    if (!existsSync(py)) return `python not found at ${py}`;
    const env = torchPeerEnv(threads);
    const child = spawn(py, [SCRIPT, '--threads', String(threads)], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const stderr: string[] = [];
    child.stderr.on('data', (d: Buffer) => {
      stderr.push(d.toString());
      if (stderr.length > 50) stderr.shift();
    });
    const spawnError = new Promise<string>((resolve) => child.on('error', (e) => resolve(`cannot run ${py}: ${e.message}`)));
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const first = await Promise.race([nextAnswer(lines, timeoutSeconds), spawnError]);
    if (typeof first === 'string' || first === null) {
      child.kill('SIGKILL');
      const why = typeof first === 'string' ? first : lastLine(stderr) || 'no answer';
      return `PyTorch peer failed to start: ${why}`;
    }
    if (typeof first.skipped === 'string') {
      child.stdin.end();
      return first.skipped;
    }
    const info = { torch: String(first.torch), blas: String(first.blas), threads: Number(first.threads) };
    return new TorchRnnPeer(child, lines, stderr, info, timeoutSeconds);
  }

  /** Builds the model, optimizer and data of `id` in the peer and runs its untimed warm-up steps. */
  async init(id: string, spec: TorchRnnSpec): Promise<void> {
    await this.request({ op: 'init', id, ...spec });
  }

  /** Times `steps` training steps of `id`. */
  async repeat(id: string, steps: number): Promise<TorchRepeat> {
    const a = await this.request({ op: 'repeat', id, steps });
    if (typeof a.ms !== 'number' || typeof a.cpu_ms !== 'number') throw new Error(`PyTorch peer: malformed answer ${JSON.stringify(a)}`);
    return { ms: a.ms, cpuMs: a.cpu_ms };
  }

  /** Ends the peer (closes its stdin; kills it if it has not exited a few seconds later). */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  private async request(req: Record<string, unknown>): Promise<Answer> {
    this.child.stdin.write(JSON.stringify(req) + '\n');
    const a = await nextAnswer(this.lines, this.timeoutSeconds);
    if (typeof a === 'string') {
      this.child.kill('SIGKILL');
      throw new Error(`PyTorch peer: ${a}`);
    }
    if (a === null) throw new Error(`PyTorch peer exited: ${lastLine(this.stderr) || 'no message'}`);
    if (typeof a.error === 'string') throw new Error(`PyTorch peer: ${a.error}`);
    return a;
  }
}

/** The next JSON line; null at end of output; a string on timeout or a line that is not JSON. */
async function nextAnswer(lines: AsyncIterator<string>, timeoutSeconds: number): Promise<Answer | null | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`no answer within ${timeoutSeconds} s`), timeoutSeconds * 1000);
  });
  try {
    const r = await Promise.race([lines.next(), timeout]);
    if (typeof r === 'string') return r;
    if (r.done) return null;
    try {
      const v: unknown = JSON.parse(r.value);
      return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Answer) : `not a JSON object: ${r.value.slice(0, 200)}`;
    } catch {
      return `not JSON: ${r.value.slice(0, 200)}`;
    }
  } finally {
    clearTimeout(timer);
  }
}

function lastLine(chunks: readonly string[]): string {
  return chunks.join('').trim().split('\n').pop()?.slice(0, 200) ?? '';
}
