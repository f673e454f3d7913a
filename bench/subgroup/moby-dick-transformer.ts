/**
 * Subgroup-wise mixed precision + pruning by differentiable search on a tiny causal transformer LM
 * (Moby Dick next word). Compares, on held-out perplexity and stored size of the searchable weights
 * (attention Q/K/V/out per head and feed-forward blocks, codes + float32 scales):
 *   fp32 | uniform W4 | uniform W2 | subgroup search at the W4 size | subgroup search at the W2 size.
 *
 *   nice -n 10 node --import tsx bench/subgroup/moby-dick-transformer.ts [--epochs 3] [--search-steps 150]
 *        [--finetune-steps 150] [--context 32] [--batch 32] [--vocab 2000] [--seed 0] [--eval-limit N]
 *        [--search-budgets W4,W2] [--skip-uniform] [--out subgroup-moby-dick]
 *
 * Model (src/quant/subgroup/transformer.ts): embedding 64 (+ learned positions), 2 pre-LN blocks,
 * 4 heads, FFN 128 (GELU), logits against the tied token embedding; causal, loss on every position.
 * Data: the first 90 % of the novel's words train (its last 5 % are the held-out batches of the
 * architecture steps), the last 10 % test; sequences are non-overlapping windows of `context`
 * tokens. Perplexity = exp(mean cross-entropy over every position of every test window).
 * Float training: Adam 3e-3, `epochs` passes (and a copy trained the same extra steps as the quantized
 * variants, Adam 1e-3, as the fair float reference). Every quantized variant starts from the same float
 * weights: the uniform ones are QAT fine-tuned (LSQ steps, Adam 1e-3) for search + fine-tune steps,
 * the searched ones run `search-steps` search steps (weights on train batches, architecture logits
 * on held-out batches, size penalty at the uniform variant's bytes), take the argmax plan fitted to
 * that budget, then fine-tune `finetune-steps` steps — the same number of weight updates. The
 * embeddings, LayerNorms and biases stay float32 in every variant (their bytes are reported apart).
 * `--search-budgets W4,W2,W1` picks the searched budgets (W1: one bit per weight + scales, below any
 * uniform width, so only reachable with pruning); `--skip-uniform` leaves out the uniform variants
 * and the float extra steps; `--out name` writes bench/results/<name>.json (default
 * subgroup-moby-dick), atomically.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import '../../src/backend/index.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { getBackend } from '../../src/backend/index.ts';
import { buildVocabulary, encodeTokens, loadMobyDickText, tokenizeWords } from '../../src/data/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import type { Module } from '../../src/nn/index.ts';
import { Adam } from '../../src/optim/index.ts';
import {
  applyPlan,
  packSubgroupModel,
  planBytes,
  searchSubgroups,
  subgroupLayers,
  TinyTransformerLm,
  uniformPlan,
  type SubgroupPlan,
} from '../../src/quant/subgroup/index.ts';
import { crossEntropy, reshape, Rng, Tensor } from '../../src/tensor/index.ts';
import { ProgressBar } from '../../src/train/index.ts';
import { flag, flagOr, numberFlag } from '../flags.ts';

const epochs = numberFlag('epochs', 3, { integer: true, min: 1 });
const searchSteps = numberFlag('search-steps', 150, { integer: true, min: 1 });
const finetuneSteps = numberFlag('finetune-steps', 150, { integer: true, min: 0 });
const context = numberFlag('context', 32, { integer: true, min: 2 });
const batchSize = numberFlag('batch', 32, { integer: true, min: 1 });
const vocabSize = numberFlag('vocab', 2000, { integer: true, min: 2 });
const seed = numberFlag('seed', 0, { integer: true, min: 0 });
const evalLimit = flag('eval-limit') === undefined ? Infinity : numberFlag('eval-limit', 0, { integer: true, min: 1 });
/** Budgets of the searched variants, as uniform widths: W4, W2, or W1 (⌈n/8⌉ + 4 bytes per subgroup: one bit per weight). */
const searchBudgets = flagOr('search-budgets', 'W4,W2').split(',').map((label) => {
  const bits = { W4: 4, W2: 2, W1: 1 }[label.trim()];
  if (bits === undefined) throw new Error(`--search-budgets: expected a list of W4, W2, W1, got '${label}'`);
  return bits;
});
const skipUniform = process.argv.includes('--skip-uniform');
const outName = flagOr('out', 'subgroup-moby-dick');
if (!/^[a-z0-9-]+$/.test(outName)) throw new Error(`--out: a file name of lowercase letters, digits and '-', got '${outName}'`);

// ---------------------------------------------------------------- data
const words = tokenizeWords(loadMobyDickText());
const cut = Math.round(words.length * 0.9);
const vocab = buildVocabulary(words.slice(0, cut), { minCount: 3, maxSize: vocabSize });
const trainIds = encodeTokens(vocab, words.slice(0, cut));
const testIds = encodeTokens(vocab, words.slice(cut));
const valStart = Math.round(trainIds.length * 0.95);

/** Non-overlapping windows of context + 1 ids (input = first `context`, target = last `context`). */
function windows(ids: Int32Array, from: number, to: number): Int32Array[] {
  const out: Int32Array[] = [];
  for (let i = from; i + context + 1 <= to; i += context) out.push(ids.subarray(i, i + context + 1));
  return out;
}
const trainWindows = windows(trainIds, 0, valStart);
const valWindows = windows(trainIds, valStart, trainIds.length);
const testWindows = windows(testIds, 0, testIds.length).slice(0, evalLimit);

interface Batch {
  input: Tensor;
  target: Tensor;
}

function batchOf(rows: Int32Array[]): Batch {
  const input = new Int32Array(rows.length * context);
  const target = new Int32Array(rows.length * context);
  rows.forEach((w, r) => {
    input.set(w.subarray(0, context), r * context);
    target.set(w.subarray(1, context + 1), r * context);
  });
  return { input: new Tensor(input, [rows.length, context]), target: new Tensor(target, [rows.length * context]) };
}

/** An endless shuffled stream of batches over `pool`. */
function sampler(pool: Int32Array[], streamSeed: number): () => Batch {
  const rng = new Rng(streamSeed);
  let order: number[] = [];
  return () => {
    const rows: Int32Array[] = [];
    while (rows.length < batchSize) {
      if (order.length === 0) {
        order = pool.map((_, i) => i);
        for (let i = order.length - 1; i > 0; i--) {
          const j = Math.floor(rng.uniform() * (i + 1));
          [order[i], order[j]] = [order[j]!, order[i]!];
        }
      }
      rows.push(pool[order.pop()!]!);
    }
    return batchOf(rows);
  };
}

function lossOn(model: TinyTransformerLm, batch: Batch): Tensor {
  const logits = model.forward(batch.input);
  return crossEntropy(reshape(logits, [batch.target.size, vocab.size]), batch.target);
}

function perplexity(model: TinyTransformerLm): number {
  model.eval();
  let total = 0;
  let count = 0;
  noGrad(() => {
    for (let i = 0; i < testWindows.length; i += 128) {
      const batch = batchOf(testWindows.slice(i, i + 128));
      total += lossOn(model, batch).item() * batch.target.size;
      count += batch.target.size;
    }
  });
  model.train();
  return Math.exp(total / count);
}

function trainSteps(model: Module, steps: number, lr: number, next: () => Batch, label: string, lm: TinyTransformerLm): number {
  const archParams = new Set(model.namedParameters().filter(([n]) => n.endsWith('arch_logits')).map(([, p]) => p));
  const optimizer = new Adam(model.parameters().filter((p) => !archParams.has(p)), { lr });
  const bar = new ProgressBar({ total: steps, label });
  let last = Number.NaN;
  model.train();
  for (let s = 0; s < steps; s++) {
    optimizer.zeroGrad();
    const loss = lossOn(lm, next());
    loss.backward();
    optimizer.step();
    last = loss.item();
    bar.tick(1, { loss: last });
  }
  bar.done();
  return last;
}

// ---------------------------------------------------------------- runs
const started = performance.now();
const cpuStart = process.cpuUsage();
const build = (): TinyTransformerLm => new TinyTransformerLm({ vocabSize: vocab.size, context, embedDim: 64, layers: 2, heads: 4, ffnDim: 128, rng: new Rng(seed) });
const floatModel = build();
const stepsPerEpoch = Math.ceil(trainWindows.length / batchSize);
console.log(`vocab ${vocab.size}, train windows ${trainWindows.length} (+${valWindows.length} held out for the architecture), test windows ${testWindows.length}, backend ${getBackend()}`);
trainSteps(floatModel, epochs * stepsPerEpoch, 3e-3, sampler(trainWindows, seed + 1), `fp32 train (${epochs} epochs)`, floatModel);
const floatPerplexity = perplexity(floatModel);
console.log(`fp32 perplexity ${floatPerplexity.toFixed(2)}`);
const floatState = new Map([...floatModel.stateDict()].map(([k, t]) => [k, new Tensor(t.data.slice(), t.shape)]));

function quantizedCopy(): TinyTransformerLm {
  const model = build();
  model.loadStateDict(floatState);
  return model.makeSearchable({ ffnGroupSize: 32 });
}

const searchedParams = (() => {
  const m = quantizedCopy();
  return subgroupLayers(m).reduce((s, [, l]) => s + l.groups * l.groupElements, 0);
})();
const otherParams = floatModel.numParameters() - searchedParams;

/** Per layer: the width of each subgroup (heads for attention, 32-unit blocks for the FFN). */
function mapOf(plan: SubgroupPlan): Record<string, number[]> {
  return Object.fromEntries(plan.layers.map((l) => [l.name, [...l.bits]]));
}

interface Row {
  variant: string;
  perplexity: number;
  bytes: number;
  bitsPerWeight: number;
  prunedSubgroups: number;
  map: Record<string, number[]>;
  argmaxBytes?: number;
  finalTrainLoss: number;
}

function finish(variant: string, model: TinyTransformerLm, plan: SubgroupPlan, finalTrainLoss: number, extra: Partial<Row> = {}): Row {
  const bytes = packSubgroupModel(model).bytes;
  if (bytes !== planBytes(plan)) throw new Error(`${variant}: counted ${bytes} B, plan says ${planBytes(plan)} B`);
  const row: Row = {
    variant,
    perplexity: perplexity(model),
    bytes,
    bitsPerWeight: (8 * bytes) / searchedParams,
    prunedSubgroups: plan.layers.reduce((s, l) => s + l.bits.filter((b) => b === 0).length, 0),
    map: mapOf(plan),
    finalTrainLoss,
    ...extra,
  };
  console.log(`${variant}: perplexity ${row.perplexity.toFixed(2)}, ${bytes} B (${row.bitsPerWeight.toFixed(3)} bits/weight incl. scales), pruned subgroups ${row.prunedSubgroups}`);
  return row;
}

// The fair float reference: the same extra weight updates as every quantized variant.
let floatTunedPerplexity = Number.NaN;
if (!skipUniform) {
  const floatTuned = build();
  floatTuned.loadStateDict(floatState);
  trainSteps(floatTuned, searchSteps + finetuneSteps, 1e-3, sampler(trainWindows, seed + 2), 'fp32 extra steps', floatTuned);
  floatTunedPerplexity = perplexity(floatTuned);
  console.log(`fp32 + ${searchSteps + finetuneSteps} steps perplexity ${floatTunedPerplexity.toFixed(2)}`);
}

const rows: Row[] = [];
const budgets: Record<string, number> = {};
for (const bits of [4, 2, 1]) {
  const model = quantizedCopy();
  if (bits === 1) {
    budgets.W1 = subgroupLayers(model).reduce((s, [, l]) => s + l.groups * (Math.ceil(l.groupElements / 8) + 4), 0);
    continue;
  }
  const plan = uniformPlan(model, bits);
  budgets[`W${bits}`] = planBytes(plan);
  if (skipUniform) continue;
  applyPlan(model, plan);
  const loss = trainSteps(model, searchSteps + finetuneSteps, 1e-3, sampler(trainWindows, seed + 2), `uniform W${bits} QAT`, model);
  rows.push(finish(`uniform W${bits}`, model, plan, loss));
}
for (const bits of searchBudgets) {
  const model = quantizedCopy();
  const budget = budgets[`W${bits}`]!;
  const train = sampler(trainWindows, seed + 2);
  const held = sampler(valWindows, seed + 3);
  const result = searchSubgroups(model, {
    budgetBytes: budget,
    steps: searchSteps,
    trainLoss: () => lossOn(model, train()),
    archLoss: () => lossOn(model, held()),
    weightLr: 1e-3,
    archLr: 0.05,
    sizeWeight: 2,
    temperature: { start: 1, end: 0.2 },
  });
  applyPlan(model, result.plan);
  const loss = finetuneSteps > 0 ? trainSteps(model, finetuneSteps, 1e-3, train, `search@W${bits} fine-tune`, model) : Number.NaN;
  const last = result.history.at(-1)!;
  rows.push(finish(`search @ W${bits} size`, model, result.plan, loss, { argmaxBytes: result.argmaxBytes }));
  console.log(`  search: argmax plan ${result.argmaxBytes} B, fitted ${result.planBytes} B (budget ${budget} B), final expected ${last.expectedBytes.toFixed(0)} B`);
}

const cpu = process.cpuUsage(cpuStart);
const result = {
  bench: 'subgroup-moby-dick',
  date: new Date().toISOString(),
  backend: getBackend(),
  settings: { epochs, searchSteps, finetuneSteps, context, batchSize, vocab: vocab.size, seed, testWindows: testWindows.length, testTokens: testWindows.length * context },
  params: { searched: searchedParams, other: otherParams, searchedFp32Bytes: 4 * searchedParams, otherFp32Bytes: 4 * otherParams },
  fp32: { perplexity: floatPerplexity, perplexityAfterExtraSteps: floatTunedPerplexity, bytes: 4 * searchedParams },
  budgets,
  rows,
  wallSeconds: (performance.now() - started) / 1000,
  cpuSeconds: (cpu.user + cpu.system) / 1e6,
};
const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', `${outName}.json`);
writeFileAtomic(out, new TextEncoder().encode(`${JSON.stringify(result, null, 2)}\n`));
console.log(`\n| variant | test perplexity | bytes (codes + scales) | bits/weight | pruned subgroups |`);
console.log(`| --- | --- | --- | --- | --- |`);
console.log(`| fp32 | ${floatPerplexity.toFixed(2)} | ${4 * searchedParams} | 32 | 0 |`);
if (!skipUniform) console.log(`| fp32 + ${searchSteps + finetuneSteps} steps | ${floatTunedPerplexity.toFixed(2)} | ${4 * searchedParams} | 32 | 0 |`);
for (const r of rows) console.log(`| ${r.variant} | ${r.perplexity.toFixed(2)} | ${r.bytes} | ${r.bitsPerWeight.toFixed(3)} | ${r.prunedSubgroups} |`);
for (const r of rows.filter((row) => row.variant.startsWith('search'))) {
  console.log(`\n${r.variant} map (attention: one entry per head; fc1/fc2: per 32 hidden units):`);
  for (const [name, bits] of Object.entries(r.map)) console.log(`  ${name.padEnd(16)} ${bits.join(' ')}`);
}
console.log(`\nwrote ${out} (wall ${result.wallSeconds.toFixed(0)} s, cpu ${result.cpuSeconds.toFixed(0)} s)`);
