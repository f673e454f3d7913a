/**
 * Integer-only Transformer LM (quant.irnn.IntTransformerLM) against the QAT run it was converted
 * from, in-process: for each transformer-lm run under --run-dir (default /tmp/lowbit-tlm, the runs of
 * bench/lm/transformer-table.ts: transformer-lm-w8a8-qlr0.01, transformer-lm-w4a8-qlr0.01, ...),
 * convert it as `lowbit export RUN --format irnn` does (residual scale on the first 4096 train
 * windows), save and reload the .irnn file, then run every test window (batch 256) through the
 * fake-quant model (`model.forward`, float kernels) and the integer model, batch by batch
 * alternately, timing each: perplexity of both, argmax agreement, max |Δlogit|, context tokens/s.
 * When the addon has the AVX-512 loops, the integer model also runs every batch as it did before
 * them ('before': scalar native loops, per-op calls: `addon.intTfLoops(false)`,
 * `setIntTransformerFusedCalls(false)`), in the same alternation, its logits checked equal bit for bit.
 * Tokens/s: all tokens over the summed seconds, and the median of the batches' tokens/s.
 * Writes bench/results/int-transformer-lm.json.
 *
 *   nice -n 10 node --import tsx bench/irnn/transformer-lm.ts [--run-dir /tmp/lowbit-tlm] [--only w8a8-qlr0.01] [--limit N]
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../../src/autograd/index.ts';
import { INT_TRANSFORMER_CALIBRATION_WINDOWS } from '../../src/cli/lm-int-transformer.ts';
import { lmTestBatches, readLmCheckpoint } from '../../src/cli/lm-run.ts';
import { contextIdBatches, DataLoader, take } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { TransformerLM } from '../../src/nn/index.ts';
import { convertTransformerLM, loadIntTransformer, saveIntTransformer } from '../../src/quant/irnn/index.ts';
import { setIntTransformerFusedCalls } from '../../src/quant/irnn/transformer.ts';
import { loadAddon } from '../../src/backend/native/load.ts';
import { loadavg } from 'node:os';
import { intKernelsBackend } from '../../src/runtime/kernels/index.ts';
import { PerplexityMeter } from '../../src/train/index.ts';
import { flag } from '../flags.ts';

const runDir = flag('run-dir') ?? '/tmp/lowbit-tlm';
const only = flag('only')?.split(',');
const limitFlag = flag('limit');
const limit = limitFlag === undefined ? undefined : Number(limitFlag);
const names = ['w8a8-qlr0.01', 'w4a8-qlr0.01', 'w8a8', 'w4a8'];
const addon = loadAddon();
/** Whether this machine runs the AVX-512 loops (then the loops of before are timed too). */
const compareBefore = addon?.intTfLoops?.(true) === 'avx512';

/** The integer forward as before the AVX-512 loops (true) or as now (false). */
function before(on: boolean): void {
  addon!.intTfLoops!(!on);
  setIntTransformerFusedCalls(!on);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const tmp = mkdtempSync(join(tmpdir(), 'lowbit-int-tlm-bench-'));
const rows: Record<string, unknown>[] = [];
try {
  for (const name of names) {
    if (only && !only.includes(name)) continue;
    const checkpoint = join(runDir, `transformer-lm-${name}`, 'checkpoint.safetensors');
    if (!existsSync(checkpoint)) {
      console.log(`skip ${checkpoint}: no checkpoint`);
      continue;
    }
    const run = readLmCheckpoint(checkpoint, 'bench')!;
    const model = run.model;
    if (!(model instanceof TransformerLM)) throw new Error(`${checkpoint} is not a transformer-lm run`);
    console.log(`${name}: converting (${describe(run.settings)})`);
    const calibration = [...contextIdBatches(new DataLoader(take(run.corpus.train, INT_TRANSFORMER_CALIBRATION_WINDOWS), { batchSize: 256 }))].map((b) => b.x);
    const t0 = performance.now();
    const converted = convertTransformerLM(model, calibration);
    const convertSeconds = (performance.now() - t0) / 1000;
    const file = join(tmp, `${name}.irnn`);
    const fileBytes = saveIntTransformer(file, converted);
    const int = loadIntTransformer(file);
    const fq = new PerplexityMeter();
    const ints = new PerplexityMeter();
    let agree = 0;
    let windows = 0;
    let maxDiff = 0;
    let fqSeconds = 0;
    let intSeconds = 0;
    let beforeSeconds = 0;
    const rates = { fq: [] as number[], int: [] as number[], before: [] as number[] };
    const loadStart = loadavg()[0]!;
    const { batches } = lmTestBatches(run, 256, limit);
    for (const { x, y } of batches) {
      const batchTokens = y.size * run.settings.seqLen;
      let s = performance.now();
      const ref = noGrad(() => model.forward(x)).data;
      let seconds = (performance.now() - s) / 1000;
      fqSeconds += seconds;
      rates.fq.push(batchTokens / seconds);
      s = performance.now();
      const got = int.logits(x.data, y.size);
      seconds = (performance.now() - s) / 1000;
      intSeconds += seconds;
      rates.int.push(batchTokens / seconds);
      if (compareBefore) {
        before(true);
        s = performance.now();
        const old = int.logits(x.data, y.size);
        seconds = (performance.now() - s) / 1000;
        before(false);
        beforeSeconds += seconds;
        rates.before.push(batchTokens / seconds);
        for (let i = 0; i < got.length; i++) if (old[i] !== got[i]) throw new Error(`${name}: the loops of before gave other logits (index ${i})`);
      }
      for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i]! - got[i]!));
      const a = fq.add(ref, y.data, run.settings.vocabSize);
      const b = ints.add(got, y.data, run.settings.vocabSize);
      for (let i = 0; i < a.length; i++) if (a[i] === b[i]) agree++;
      windows += y.size;
      if (windows % 5120 === 0) console.log(`  ${windows} windows`);
    }
    const tokens = windows * run.settings.seqLen;
    const row = {
      run: `transformer-lm ${name}`, checkpoint, windows,
      fakeQuantPerplexity: fq.result().perplexity, integerPerplexity: ints.result().perplexity,
      fakeQuantAccuracy: fq.result().accuracy, integerAccuracy: ints.result().accuracy,
      argmaxAgreement: agree / windows, maxLogitDiff: maxDiff,
      fakeQuantTokensPerSecond: tokens / fqSeconds, integerTokensPerSecond: tokens / intSeconds,
      integerOverFakeQuantSpeed: fqSeconds / intSeconds,
      medianBatchTokensPerSecond: { fakeQuant: median(rates.fq), integer: median(rates.int), integerBefore: compareBefore ? median(rates.before) : null },
      integerBeforeTokensPerSecond: compareBefore ? tokens / beforeSeconds : null,
      integerBeforeOverFakeQuantSpeed: compareBefore ? fqSeconds / beforeSeconds : null,
      integerOverBeforeSpeed: compareBefore ? beforeSeconds / intSeconds : null,
      loadAverage: { start: loadStart, end: loadavg()[0]! },
      fileBytes, modelBytes: int.byteLength, convertSeconds,
    };
    console.log(row);
    rows.push(row);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

function describe(s: { quant: string; embed: number; hidden: number; vocabSize: number; seqLen: number }): string {
  return `${s.quant}, width ${s.embed}, MLP ${s.hidden}, vocabulary ${s.vocabSize}, context ${s.seqLen}`;
}

const out = join(import.meta.dirname, '..', 'results', 'int-transformer-lm.json');
const result = {
  bench: 'irnn/transformer-lm', date: new Date().toISOString(), seed: 0,
  note: 'one seed per run; the models timed batch by batch alternately (batch 256, forward only; the integer model also with the loops of before, integerBefore*) on a shared 2-core machine',
  intKernels: intKernelsBackend(), command: `nice -n 10 node --import tsx bench/irnn/transformer-lm.ts${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(' ')}` : ''}`, rows,
};
writeFileAtomic(out, new TextEncoder().encode(`${JSON.stringify(result, null, 2)}\n`));
console.log(`wrote ${out}`);
