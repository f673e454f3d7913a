/**
 * Client of the long-lived PyTorch sequence-model peer (`bench/peers/torch_seq.py`): lowbit's
 * next-word LSTM / GRU and Transformer language models rebuilt in torch (fp32, or dynamic int8 via
 * `torch.quantization.quantize_dynamic`) from a safetensors file of lowbit's own state dict, run on
 * one batch of word ids, timed in repeats the section interleaves with lowbit's.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonLinePeer } from './json-line-peer.ts';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'torch_seq.py');

/** One model of the peer (see torch_seq.py). */
export interface TorchSeqSpec {
  readonly kind: 'lstm' | 'gru' | 'transformer';
  /** A safetensors file of the lowbit model's stateDict(). */
  readonly weights: string;
  /** Raw little-endian int32 word ids [batch, seq]. */
  readonly ids: string;
  readonly batch: number;
  readonly seq: number;
  /** torch.quantization.quantize_dynamic on LSTM / GRU / Linear (qint8). */
  readonly int8: boolean;
  readonly warmup?: number;
  /** Transformer only: attention heads, MLP nonlinearity, LayerNorm eps. */
  readonly heads?: number;
  readonly activation?: 'gelu' | 'gelu-tanh' | 'relu';
  readonly eps?: number;
}

/** One timed repeat: forward calls made, wall and process-CPU milliseconds per call. */
export interface TorchSeqRepeat {
  readonly calls: number;
  readonly ms: number;
  readonly cpuMs: number;
}

export class TorchSeqPeer {
  /** torch.__version__, BLAS library, thread count, the quantized engine in use and those available, from the ready line. */
  readonly info: { torch: string; blas: string; threads: number; engine: string; engines: string[] };

  private constructor(private readonly peer: JsonLinePeer) {
    const r = peer.ready;
    this.info = { torch: String(r.torch), blas: String(r.blas), threads: Number(r.threads), engine: String(r.engine), engines: Array.isArray(r.engines) ? r.engines.map(String) : [] };
  }

  /** Starts the peer; a missing python or torch, a crash or a timeout comes back as a string. */
  static async start(threads: number, timeoutSeconds = 120): Promise<TorchSeqPeer | string> {
    const peer = await JsonLinePeer.start(SCRIPT, threads, timeoutSeconds);
    return typeof peer === 'string' ? peer : new TorchSeqPeer(peer);
  }

  /** Builds model `id` from `spec` (weights loaded strictly) and runs its untimed warm-up calls. */
  async init(id: string, spec: TorchSeqSpec): Promise<void> {
    await this.peer.request({ op: 'init', id, ...spec });
  }

  /** The logits of model `id` on its ids (float32, row-major), passed through the file `scratch`. */
  async logits(id: string, scratch: string): Promise<{ data: Float32Array; shape: number[] }> {
    const a = await this.peer.request({ op: 'logits', id, out: scratch });
    const shape = Array.isArray(a.shape) && a.shape.every((d) => Number.isInteger(d) && (d as number) > 0) ? (a.shape as number[]) : null;
    if (!shape) throw new Error(`PyTorch peer: malformed logits answer ${JSON.stringify(a)}`);
    const bytes = readFileSync(scratch);
    const count = shape.reduce((p, d) => p * d, 1);
    if (bytes.length !== count * 4) throw new Error(`PyTorch peer: ${scratch} holds ${bytes.length} bytes for logits [${shape.join(', ')}]`);
    const data = new Float32Array(count);
    new Uint8Array(data.buffer).set(bytes);
    return { data, shape };
  }

  /** Runs forward calls of model `id` for `seconds` (at least one call) and times them. */
  async repeat(id: string, seconds: number): Promise<TorchSeqRepeat> {
    const a = await this.peer.request({ op: 'repeat', id, seconds });
    if (typeof a.ms !== 'number' || typeof a.cpu_ms !== 'number' || !Number.isInteger(a.calls) || (a.calls as number) < 1) throw new Error(`PyTorch peer: malformed answer ${JSON.stringify(a)}`);
    return { calls: a.calls as number, ms: a.ms, cpuMs: a.cpu_ms };
  }

  close(): Promise<void> {
    return this.peer.close();
  }
}
