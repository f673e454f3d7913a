/**
 * Generation speed of the integer-only Transformer LM (quant.irnn.IntTransformerLM through nn.generate):
 * integer KV cache vs recompute every step, native loops vs TypeScript loops, and the fake-quant
 * TransformerLM (float kernels, its float KV cache) it was converted from, all in one process.
 *
 *  1. the w8a8 run of bench/lm/transformer-table.ts (--run-dir, default /tmp/lowbit-tlm; context 8):
 *     a prompt of 1 word and 7 generated words (all inside the context: the cache is never rebuilt).
 *  2. a converted model of the same width with maxContext 128 (untrained QAT steps: speed only, its
 *     text means nothing): prompt of 1 word, 127 generated words.
 * Greedy decoding (temperature 0); the cached and the recomputed ids are checked equal. When the addon
 * has the AVX-512 loops, the native cases also run as before them ('Before': scalar native loops and
 * per-op calls, `addon.intTfLoops(false)`, `setIntTransformerFusedCalls(false)`).
 * Writes bench/results/int-transformer-generate.json.
 *
 *   nice -n 10 node --import tsx bench/irnn/transformer-generate.ts [--run-dir /tmp/lowbit-tlm] [--repeat 5]
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { noGrad } from '../../src/autograd/index.ts';
import { INT_TRANSFORMER_CALIBRATION_WINDOWS } from '../../src/cli/lm-int-transformer.ts';
import { readLmCheckpoint } from '../../src/cli/lm-run.ts';
import { contextIdBatches, DataLoader, take } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { generate, TransformerLM, type CachedLanguageModel } from '../../src/nn/index.ts';
import { convertTransformerLM, type IntTransformerLM } from '../../src/quant/irnn/index.ts';
import { setIntTransformerFusedCalls } from '../../src/quant/irnn/transformer.ts';
import { loadAddon } from '../../src/backend/native/load.ts';
import { prepareTransformerQat, transformerQatConfig } from '../../src/quant/transformer/qat.ts';
import { intKernelsBackend } from '../../src/runtime/kernels/index.ts';
import { Rng, Tensor } from '../../src/tensor/index.ts';
import { flag } from '../flags.ts';

const runDir = flag('run-dir') ?? '/tmp/lowbit-tlm';
const repeat = Number(flag('repeat') ?? 5);

const addon = loadAddon();
const compareBefore = addon?.intTfLoops?.(true) === 'avx512';

/** Runs `body` with the native forward as before the AVX-512 loops (scalar loops, per-op calls). */
function asBefore<T>(body: () => T): T {
  addon!.intTfLoops!(false);
  setIntTransformerFusedCalls(false);
  try {
    return body();
  } finally {
    addon!.intTfLoops!(true);
    setIntTransformerFusedCalls(true);
  }
}

/** The IntTransformerLM as nn.generate's model, with the TypeScript loops forced when `native` is false. */
function decoder(int: IntTransformerLM, native: boolean): CachedLanguageModel<ReturnType<IntTransformerLM['createCache']>> {
  return {
    vocabSize: int.vocabSize, maxContext: int.maxContext,
    createCache: () => int.createCache(),
    nextLogitsCached: (ids, cache) => int.logitsCached(ids, cache, { native }),
    nextLogits: (ids) => int.logits(ids, 1, { native }),
  };
}

/** Best-of-`repeat` seconds of one generate call, and its ids. */
function timeGenerate(run: () => number[]): { seconds: number; ids: number[] } {
  let best = Infinity;
  let ids: number[] = [];
  for (let r = 0; r < repeat; r++) {
    const start = performance.now();
    ids = run();
    best = Math.min(best, (performance.now() - start) / 1000);
  }
  return { seconds: best, ids };
}

function measure(name: string, int: IntTransformerLM, fakeQuant: TransformerLM, tokens: number): Record<string, unknown> {
  const options = { tokens, temperature: 0 };
  const prompt = [1];
  const cases: Record<string, { seconds: number; ids: number[] }> = {
    integerNativeCached: timeGenerate(() => generate(decoder(int, true), prompt, { ...options, cache: true })),
    integerNativeRecompute: timeGenerate(() => generate(decoder(int, true), prompt, { ...options, cache: false })),
    ...(compareBefore ? {
      integerNativeBeforeCached: timeGenerate(() => asBefore(() => generate(decoder(int, true), prompt, { ...options, cache: true }))),
      integerNativeBeforeRecompute: timeGenerate(() => asBefore(() => generate(decoder(int, true), prompt, { ...options, cache: false }))),
    } : {}),
    integerTypescriptCached: timeGenerate(() => generate(decoder(int, false), prompt, { ...options, cache: true })),
    integerTypescriptRecompute: timeGenerate(() => generate(decoder(int, false), prompt, { ...options, cache: false })),
    fakeQuantCached: timeGenerate(() => generate(fakeQuant, prompt, { ...options, cache: true })),
    fakeQuantRecompute: timeGenerate(() => generate(fakeQuant, prompt, { ...options, cache: false })),
  };
  const reference = cases['integerNativeCached']!.ids;
  for (const key of ['integerNativeRecompute', 'integerTypescriptCached', 'integerTypescriptRecompute', ...(compareBefore ? ['integerNativeBeforeCached', 'integerNativeBeforeRecompute'] : [])]) {
    if (cases[key]!.ids.join() !== reference.join()) throw new Error(`${name}: ${key} generated other ids than integerNativeCached`);
  }
  const row: Record<string, unknown> = { model: name, maxContext: int.maxContext, promptWords: 1, generatedWords: tokens };
  for (const [key, c] of Object.entries(cases)) row[`${key}WordsPerSecond`] = tokens / c.seconds;
  row['cachedOverRecomputeNative'] = cases['integerNativeRecompute']!.seconds / cases['integerNativeCached']!.seconds;
  if (compareBefore) {
    row['nativeOverBeforeCached'] = cases['integerNativeBeforeCached']!.seconds / cases['integerNativeCached']!.seconds;
    row['nativeOverBeforeRecompute'] = cases['integerNativeBeforeRecompute']!.seconds / cases['integerNativeRecompute']!.seconds;
  }
  row['nativeOverTypescriptCached'] = cases['integerTypescriptCached']!.seconds / cases['integerNativeCached']!.seconds;
  row['integerOverFakeQuantCached'] = cases['fakeQuantCached']!.seconds / cases['integerNativeCached']!.seconds;
  row['fakeQuantSameGreedyIds'] = cases['fakeQuantCached']!.ids.join() === reference.join();
  console.log(row);
  return row;
}

const rows: Record<string, unknown>[] = [];
const checkpoint = join(runDir, 'transformer-lm-w8a8-qlr0.01', 'checkpoint.safetensors');
let width = { embed: 80, hidden: 320, vocabSize: 2000 };
if (existsSync(checkpoint)) {
  const run = readLmCheckpoint(checkpoint, 'bench')!;
  const model = run.model;
  if (!(model instanceof TransformerLM)) throw new Error(`${checkpoint} is not a transformer-lm run`);
  width = { embed: run.settings.embed, hidden: run.settings.hidden, vocabSize: run.settings.vocabSize };
  const calibration = [...contextIdBatches(new DataLoader(take(run.corpus.train, INT_TRANSFORMER_CALIBRATION_WINDOWS), { batchSize: 256 }))].map((b) => b.x);
  const int = convertTransformerLM(model, calibration);
  console.log(`w8a8-qlr0.01 (context ${int.maxContext}): ${int.loopsBackend} loops`);
  rows.push(measure('transformer-lm w8a8-qlr0.01', int, model, int.maxContext - 1));
} else {
  console.log(`skip ${checkpoint}: no checkpoint`);
}

{
  // Same width, 2 blocks, 4 heads, maxContext 128; QAT steps from one training-mode forward on random ids.
  const C = 128;
  const model = new TransformerLM({ vocabSize: width.vocabSize, maxContext: C, embedDim: width.embed, mlpDim: width.hidden, numLayers: 2, numHeads: 4, activation: 'gelu-tanh', rng: new Rng(1) });
  prepareTransformerQat(model, transformerQatConfig('w8a8')!);
  const rng = new Rng(2);
  const ids = (n: number): Tensor => new Tensor(Int32Array.from({ length: n * C }, () => Math.floor(rng.uniform() * width.vocabSize)), [n, C]);
  model.train();
  noGrad(() => model.forward(ids(8)));
  model.eval();
  const int = convertTransformerLM(model, [ids(8)]);
  rows.push(measure(`untrained w8a8, width ${width.embed}, MLP ${width.hidden}, context ${C}`, int, model, C - 1));
}

const out = join(import.meta.dirname, '..', 'results', 'int-transformer-generate.json');
const result = {
  bench: 'irnn/transformer-generate', date: new Date().toISOString(), seed: 0, repeat,
  note: `best of ${repeat} runs per case, greedy decoding, batch 1, on a shared 2-core machine`,
  intKernels: intKernelsBackend(), command: `nice -n 10 node --import tsx bench/irnn/transformer-generate.ts${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(' ')}` : ''}`, rows,
};
writeFileAtomic(out, new TextEncoder().encode(`${JSON.stringify(result, null, 2)}\n`));
console.log(`wrote ${out}`);
