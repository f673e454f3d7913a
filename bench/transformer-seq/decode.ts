/**
 * Greedy decoding speed of the float Transformer LM, shared by the standalone script
 * (decode-vs-torch.ts) and the bench section `decode`: lowbit's `generate` (batch 1) and
 * `generateBatch` (batch 16) with the KV cache in one native call per step (`cachedStep`:
 * native/decode-step.cc, the default path), with the KV cache on the per-layer primitives
 * (`cached`: the decodeAttention primitive on preallocated buffers, one-call step off), with the
 * KV cache but composed ops (fused layers off: head split, concat of the cached
 * keys, matmul, softmax -- the path before decodeAttention), and without the cache (full forward
 * over the window every step), against PyTorch 1.13 fp32 running the same weights with a
 * hand-written KV cache (bench/peers/torch_decode.py). Prompt 8 ids, 64 new ids, the CLI-sized
 * transformer-lm (2000 words, width 80, MLP 320, 2 blocks, 4 heads, tanh GELU) with a 72-position
 * table, untrained (speed does not depend on the weights). Each repeat runs every row once,
 * interleaved. tokens/s = batch × new ids / wall time (prompt included).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setNativeThreads } from '../../src/backend/index.ts';
import { generate, generateBatch, type TransformerLM } from '../../src/nn/index.ts';
import { withFusedTransformerLayers } from '../../src/nn/fused-layers.ts';
import { setFusedDecodeStep } from '../../src/nn/models/transformer-decode.ts';
import { Rng, Tensor } from '../../src/tensor/index.ts';
import { median } from '../lib.ts';
import { JsonLinePeer } from '../peers/json-line-peer.ts';
import { LAYER_NORM_EPS, peerFiles, SEQ_SHAPES, TRANSFORMER_ACTIVATION, transformerLm } from '../seq-inference/models.ts';

const PROMPT = 8;
const TOKENS = 64;
export const DECODE_BATCHES = [1, 16] as const;
export const DECODE_MODES = ['cachedStep', 'cached', 'cachedComposed', 'uncached', 'torchCached'] as const;
export type DecodeMode = (typeof DECODE_MODES)[number];
const BATCHES = DECODE_BATCHES;
const MODES = DECODE_MODES;
type Mode = DecodeMode;

interface Run {
  readonly ids: number[][];
  /** Wall seconds. */
  readonly seconds: number;
  /** Process CPU seconds (every thread of the process). */
  readonly cpuSeconds: number;
}

/** lowbit's greedy ids [batch][TOKENS], wall and CPU seconds. */
function runLowbit(model: TransformerLM, prompts: number[][], batch: number, mode: Exclude<Mode, 'torchCached'>): Run {
  const rows = prompts.slice(0, batch);
  const options = { tokens: TOKENS, temperature: 0, cache: mode !== 'uncached' };
  const previous = setFusedDecodeStep(mode === 'cachedStep');
  try {
    return withFusedTransformerLayers(mode !== 'cachedComposed', () => {
      const cpu = process.cpuUsage();
      const start = performance.now();
      const ids = batch === 1 ? [generate(model, rows[0]!, options)] : generateBatch(model, rows, options);
      const seconds = (performance.now() - start) / 1000;
      const used = process.cpuUsage(cpu);
      return { ids, seconds, cpuSeconds: (used.user + used.system) / 1e6 };
    });
  } finally {
    setFusedDecodeStep(previous);
  }
}

/** One batch size's results: medians per mode (null: PyTorch skipped) and every repeat. */
export interface DecodeRow {
  readonly batch: number;
  readonly promptLength: number;
  readonly newTokens: number;
  readonly tokensPerSecond: Record<string, number | null>;
  readonly tokensPerCpuSecond: Record<string, number | null>;
  readonly cachedOverUncached: number;
  readonly cachedOverComposed: number;
  readonly cachedOverTorch: number | null;
  /** The one-call step over the per-layer primitives (both with the KV cache). */
  readonly stepOverCached: number;
  readonly stepOverTorch: number | null;
  readonly sameIdsAsCached: Record<string, number | null>;
  readonly secondsPerRepeat: Record<string, number[] | null>;
}

export interface DecodeReport {
  readonly torch: unknown;
  readonly model: Record<string, unknown>;
  readonly reps: number;
  readonly loadAverage1m: { min: number; median: number; max: number };
  readonly rows: DecodeRow[];
}

export async function measureDecode(options: { reps: number; threads: number; log?: (line: string) => void }): Promise<DecodeReport> {
  const { reps, threads } = options;
  const log = options.log ?? ((line: string) => console.log(line));
  setNativeThreads(threads);
  const model: TransformerLM = transformerLm({ ...SEQ_SHAPES, context: PROMPT + TOKENS });
  const rng = new Rng(11);
  const prompts = Array.from({ length: Math.max(...BATCHES) }, () => Array.from({ length: PROMPT }, () => rng.int(SEQ_SHAPES.vocab)));
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-decode-'));
  const peer = await JsonLinePeer.start(join(dirname(fileURLToPath(import.meta.url)), '..', 'peers', 'torch_decode.py'), threads);
  const torchSkipped = typeof peer === 'string' ? peer : null;
  if (torchSkipped) log(`PyTorch skipped: ${torchSkipped}`);
  try {
    if (typeof peer !== 'string') {
      for (const batch of BATCHES) {
        const files = peerFiles(dir, `b${batch}`, model, new Tensor(Int32Array.from(prompts.slice(0, batch).flat()), [batch, PROMPT]));
        await peer.request({
          op: 'init', id: `b${batch}`, weights: files.weights, prompt: files.ids, batch, promptLength: PROMPT, tokens: TOKENS,
          heads: SEQ_SHAPES.tHeads, activation: TRANSFORMER_ACTIVATION, eps: LAYER_NORM_EPS, warmup: 2,
        });
      }
    }
    for (const batch of BATCHES) for (const mode of ['cachedStep', 'cached', 'cachedComposed', 'uncached'] as const) runLowbit(model, prompts, batch, mode); // warm-up

    const seconds = new Map<string, number[]>();
    const cpuSeconds = new Map<string, number[]>();
    const ids = new Map<string, number[][]>();
    const loads: number[] = [];
    for (let r = 0; r < reps; r++) {
      loads.push(loadavg()[0]!);
      for (const batch of BATCHES) {
        for (const mode of MODES) {
          const key = `${batch}/${mode}`;
          let run: Run | null = null;
          if (mode !== 'torchCached') {
            run = runLowbit(model, prompts, batch, mode);
          } else if (typeof peer !== 'string') {
            const out = join(dir, `b${batch}.out.i32`);
            const answer = await peer.request({ op: 'generate', id: `b${batch}`, out });
            const flat = new Int32Array(new Uint8Array(readFileSync(out)).buffer);
            run = { ids: Array.from({ length: batch }, (_, b) => [...flat.subarray(b * TOKENS, (b + 1) * TOKENS)]), seconds: Number(answer.ms) / 1000, cpuSeconds: Number(answer.cpu_ms) / 1000 };
          }
          if (!run) continue;
          seconds.set(key, [...(seconds.get(key) ?? []), run.seconds]);
          cpuSeconds.set(key, [...(cpuSeconds.get(key) ?? []), run.cpuSeconds]);
          ids.set(key, run.ids);
        }
      }
    }

    const rows = BATCHES.map((batch) => {
      const rate = (mode: Mode): number | null => {
        const s = seconds.get(`${batch}/${mode}`);
        return s ? (batch * TOKENS) / median(s) : null;
      };
      const same = (mode: Mode): number | null => {
        const theirs = ids.get(`${batch}/${mode}`);
        const ours = ids.get(`${batch}/cached`)!;
        if (!theirs) return null;
        let equal = 0;
        ours.forEach((row, b) => row.forEach((id, i) => (equal += id === theirs[b]![i] ? 1 : 0)));
        return equal / (batch * TOKENS);
      };
      const tokensPerSecond = Object.fromEntries(MODES.map((m) => [m, rate(m)]));
      /** Tokens per CPU second of the process (all its threads): less disturbed by waiting for a core on a busy machine. */
      const cpuRate = (mode: Mode): number | null => {
        const s = cpuSeconds.get(`${batch}/${mode}`);
        return s ? (batch * TOKENS) / median(s) : null;
      };
      const tokensPerCpuSecond = Object.fromEntries(MODES.map((m) => [m, cpuRate(m)]));
      const row = {
        batch, promptLength: PROMPT, newTokens: TOKENS, tokensPerSecond, tokensPerCpuSecond,
        cachedOverUncached: rate('cached')! / rate('uncached')!,
        cachedOverComposed: rate('cached')! / rate('cachedComposed')!,
        cachedOverTorch: rate('torchCached') ? rate('cached')! / rate('torchCached')! : null,
        stepOverCached: rate('cachedStep')! / rate('cached')!,
        stepOverTorch: rate('torchCached') ? rate('cachedStep')! / rate('torchCached')! : null,
        sameIdsAsCached: Object.fromEntries(MODES.filter((m) => m !== 'cached').map((m) => [m, same(m)])),
        secondsPerRepeat: Object.fromEntries(MODES.map((m) => [m, seconds.get(`${batch}/${m}`) ?? null])),
      };
      const fmt = (v: number | null): string => (v === null ? 'skipped' : v.toFixed(0));
      log(`batch ${batch}: tokens/s lowbit one-call step ${fmt(rate('cachedStep'))} (×${row.stepOverCached.toFixed(2)} the primitives, PyTorch ${row.stepOverTorch === null ? 'skipped' : `×${row.stepOverTorch.toFixed(2)}`}), cached primitives ${fmt(rate('cached'))}, cached composed ${fmt(rate('cachedComposed'))}, uncached ${fmt(rate('uncached'))}, PyTorch cached ${fmt(rate('torchCached'))}; ` +
        `cached/uncached ×${row.cachedOverUncached.toFixed(2)}, cached/composed ×${row.cachedOverComposed.toFixed(2)}, cached/PyTorch ${row.cachedOverTorch === null ? 'skipped' : `×${row.cachedOverTorch.toFixed(2)}`}; ` +
        `same ids as lowbit cached: ${JSON.stringify(row.sameIdsAsCached)}; tokens per CPU second: ${MODES.map((m) => `${m} ${fmt(cpuRate(m))}`).join(', ')}`);
      return row;
    });
    return {
      torch: typeof peer === 'string' ? { skipped: peer } : peer.ready,
      model: { vocab: SEQ_SHAPES.vocab, embed: SEQ_SHAPES.tEmbed, mlp: SEQ_SHAPES.tMlp, layers: SEQ_SHAPES.tLayers, heads: SEQ_SHAPES.tHeads, maxContext: PROMPT + TOKENS, activation: TRANSFORMER_ACTIVATION },
      reps, loadAverage1m: { min: Math.min(...loads), median: median(loads), max: Math.max(...loads) }, rows,
    };
  } finally {
    if (typeof peer !== 'string') await peer.close();
    rmSync(dir, { recursive: true, force: true });
  }

}
