/**
 * A long-lived python peer driven one JSON object per line over stdin/stdout (the PyTorch peers of
 * the `rnn` and `seq-inference` sections): it prints a ready line first, then one answer per
 * request, and idles on stdin in between, so that a section can interleave the peer's timed
 * repeats with lowbit's in the same run. Python is the one `pythonPath()` names; BLAS threads are
 * pinned to 1 and torch to `threads` (`torchPeerEnv`).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { torchPeerEnv } from '../lib.ts';
import { pythonPath } from './torch.ts';

export type PeerAnswer = Record<string, unknown>;

export class JsonLinePeer {
  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly lines: AsyncIterator<string>,
    private readonly stderr: string[],
    /** The peer's ready line. */
    readonly ready: PeerAnswer,
    private readonly timeoutSeconds: number,
  ) {}

  /**
   * Starts `script --threads <threads>` and waits for its ready line. Never throws: a missing
   * python or torch (the script answers {"skipped": reason}), a crash or a timeout comes back as a
   * string (the reason to print as "skipped").
   */
  static async start(script: string, threads: number, timeoutSeconds = 120): Promise<JsonLinePeer | string> {
    const py = pythonPath();
    if (!existsSync(py)) return `python not found at ${py}`;
    const child = spawn(py, [script, '--threads', String(threads)], { env: torchPeerEnv(threads), stdio: ['pipe', 'pipe', 'pipe'] });
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
    return new JsonLinePeer(child, lines, stderr, first, timeoutSeconds);
  }

  /** Sends one request and returns its answer; an {"error"} answer, a timeout or an exit throws. */
  async request(req: Record<string, unknown>): Promise<PeerAnswer> {
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

  /** Ends the peer (closes its stdin; kills it if it has not exited a few seconds later). */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/** The next JSON line; null at end of output; a string on timeout or a line that is not JSON. */
async function nextAnswer(lines: AsyncIterator<string>, timeoutSeconds: number): Promise<PeerAnswer | null | string> {
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
      return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as PeerAnswer) : `not a JSON object: ${r.value.slice(0, 200)}`;
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
