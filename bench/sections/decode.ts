/**
 * Greedy text generation with the float Transformer LM (bench/transformer-seq/decode.ts):
 * lowbit with its KV cache in one native call per step (native/decode-step.cc), with the cache on
 * per-layer primitives (decodeAttention on preallocated buffers), with the cache on composed
 * ops, and without the cache, against PyTorch fp32 with a hand-written KV cache on the same
 * weights; every repeat runs every row once, interleaved; tokens/s = batch × 64 new ids / wall time.
 */
import { measured, skippedMeasurement, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { DECODE_MODES, measureDecode, type DecodeMode } from '../transformer-seq/decode.ts';

const IMPL: Readonly<Record<DecodeMode, string>> = {
  cachedStep: 'lowbit float (native), KV cache, one native call per step',
  cached: 'lowbit float (native), KV cache on per-layer primitives',
  cachedComposed: 'lowbit float (native), KV cache on composed ops',
  uncached: 'lowbit float (native), no cache (full forward per token)',
  torchCached: 'PyTorch fp32, KV cache',
};

async function run(ctx: SectionContext): Promise<SectionOutput> {
  const reps = Math.max(ctx.repeats, ctx.quick ? 3 : 7);
  const report = await measureDecode({ reps, threads: ctx.threads, log: (line) => ctx.log(line) });
  const torchSkipped = typeof report.torch === 'object' && report.torch !== null && 'skipped' in report.torch ? String((report.torch as { skipped: unknown }).skipped) : null;
  const measurements: Measurement[] = [];
  for (const row of report.rows) {
    const group = `Transformer LM greedy generation (width 80, 2 blocks, 4 heads, vocabulary 2000), prompt ${row.promptLength} + ${row.newTokens} new tokens, batch ${row.batch}`;
    const key = `decode-b${row.batch}`;
    for (const mode of DECODE_MODES) {
      const impl = mode === 'torchCached' && typeof report.torch === 'object' && report.torch !== null && 'torch' in report.torch
        ? `PyTorch ${String((report.torch as { torch: unknown }).torch)} fp32, KV cache` : IMPL[mode];
      const base = {
        id: `${key}/${mode}`, group, impl, unit: 'tokens/s', higherIsBetter: true,
        ...(mode === 'torchCached' ? {} : { peers: [`${key}/torchCached`] }),
        details: { tokensPerCpuSecond: row.tokensPerCpuSecond[mode], sameIdsAsCached: mode === 'cached' ? 1 : row.sameIdsAsCached[mode] },
      };
      const seconds = row.secondsPerRepeat[mode];
      if (!seconds) {
        measurements.push(skippedMeasurement(base, mode === 'torchCached' ? `PyTorch: ${torchSkipped ?? 'not run'}` : 'not run'));
        continue;
      }
      measurements.push(measured(base, seconds.map((s) => (row.batch * row.newTokens) / s)));
    }
  }
  const same = report.rows.map((r) => `batch ${r.batch}: ${Object.entries(r.sameIdsAsCached).map(([m, v]) => `${m} ${v === null ? 'n/a' : `${(v * 100).toFixed(1)} %`}`).join(', ')}`);
  return {
    measurements,
    notes: [
      'Greedy decoding (temperature 0) of the CLI-sized `transformer-lm` (2000 words, width 80, MLP 320, 2 blocks, 4 heads, tanh GELU, 72-position table), untrained weights (speed does not depend on them); prompt 8 random ids; lowbit `nn.generate` (batch 1) / `nn.generateBatch` (batch 16). PyTorch (bench/peers/torch_decode.py) loads the same weights (strict) and decodes with a hand-written KV cache, one step per new token.',
      `Same greedy ids as lowbit's cached run, per row: ${same.join('; ')}.`,
      `Threads: lowbit native ${ctx.threads}; PyTorch torch.set_num_threads(${ctx.threads}), OPENBLAS_NUM_THREADS=1. ${reps} interleaved repeats; load average (1 min) over them: median ${report.loadAverage1m.median.toFixed(2)} (min ${report.loadAverage1m.min.toFixed(2)}, max ${report.loadAverage1m.max.toFixed(2)}).`,
    ],
    raw: report,
  };
}

export const decode: Section = {
  name: 'decode',
  title: 'Text generation with a KV cache (Transformer LM) vs PyTorch',
  run,
};
