/**
 * Client of the long-lived PyTorch RNN peer (`bench/peers/torch_rnn.py`): one python process,
 * one JSON request per line on its stdin and one JSON answer per line on its stdout, so that a
 * section can interleave PyTorch repeats with lowbit's in the same run. Python is the one
 * `pythonPath()` names; BLAS threads are pinned to 1 and torch to `threads`.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonLinePeer } from './json-line-peer.ts';

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

/**
 * The Transformer LM training-step workload (see torch_rnn.py): lowbit's weights, ids and
 * every-position targets as files, loaded by the peer into torch modules with lowbit's names.
 */
export interface TorchTransformerSpec {
  readonly kind: 'transformer';
  readonly weights: string;
  readonly ids: string;
  readonly targets: string;
  readonly batch: number;
  readonly seq: number;
  readonly heads: number;
  readonly activation: string;
  readonly eps: number;
  readonly lr: number;
  readonly warmup: number;
}

/** Wall and process-CPU milliseconds per step of one timed repeat. */
export interface TorchRepeat {
  readonly ms: number;
  readonly cpuMs: number;
}

export class TorchRnnPeer {
  /** torch.__version__, the BLAS library mapped and torch's thread count, from the ready line. */
  readonly info: { torch: string; blas: string; threads: number };

  private constructor(private readonly peer: JsonLinePeer) {
    this.info = { torch: String(peer.ready.torch), blas: String(peer.ready.blas), threads: Number(peer.ready.threads) };
  }

  /**
   * Starts the peer and waits for its ready line. Never throws: a missing python or torch, a crash
   * or a timeout comes back as a string (the reason to print as "skipped").
   */
  static async start(threads: number, timeoutSeconds = 120): Promise<TorchRnnPeer | string> {
    const peer = await JsonLinePeer.start(SCRIPT, threads, timeoutSeconds);
    return typeof peer === 'string' ? peer : new TorchRnnPeer(peer);
  }

  /**
   * Builds the model, optimizer and data of `id` in the peer and runs its untimed warm-up steps;
   * for a Transformer, returns the loss of its first forward (before any step), else null.
   */
  async init(id: string, spec: TorchRnnSpec | TorchTransformerSpec): Promise<number | null> {
    const a = await this.peer.request({ op: 'init', id, ...spec });
    return typeof a.loss === 'number' ? a.loss : null;
  }

  /** Times `steps` training steps of `id`. */
  async repeat(id: string, steps: number): Promise<TorchRepeat> {
    const a = await this.peer.request({ op: 'repeat', id, steps });
    if (typeof a.ms !== 'number' || typeof a.cpu_ms !== 'number') throw new Error(`PyTorch peer: malformed answer ${JSON.stringify(a)}`);
    return { ms: a.ms, cpuMs: a.cpu_ms };
  }

  /** Ends the peer (closes its stdin; kills it if it has not exited a few seconds later). */
  close(): Promise<void> {
    return this.peer.close();
  }
}
