import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { contextIdBatches, DataLoader, loadLanguageModelCorpus, take } from '../../data/index.ts';
import { NextWordModel } from '../../nn/models/next-word.ts';
import { TransformerLM } from '../../nn/models/transformer-lm.ts';
import { Adam } from '../../optim/adam.ts';
import { crossEntropy, manualSeed, Rng } from '../../tensor/index.ts';
import { StaticQuantizer } from '../ptq/static.ts';
import { LsqQuantizer } from '../quantizers/lsq.ts';
import { quantizers } from '../qat/prepare.ts';
import { sizeCost, totalCost, uniformAssignment } from './costs.ts';
import { describeLmLayers, exactErrorSearch, lmPtqEvaluator, lmScore, nsga2ErrorSearch, prepareLmAssignment, type SearchableLm } from './lm.ts';
import type { BitAssignment, LayerInfo } from './types.ts';

function tinyTransformer(vocabSize: number, seed = 0): TransformerLM {
  return new TransformerLM({ vocabSize, maxContext: 4, embedDim: 16, mlpDim: 32, numLayers: 2, numHeads: 2, activation: 'gelu-tanh', rng: new Rng(seed) });
}

describe('describeLmLayers', () => {
  it('TransformerLM: the token table, Q/K/V, out projection, MLP and head with hand-counted weights and MACs per token', () => {
    const layers = describeLmLayers(new TransformerLM({ vocabSize: 12, maxContext: 4, embedDim: 8, mlpDim: 20, numLayers: 2, numHeads: 2 }));
    const rows = layers.map((l) => [l.name, l.type, l.weightCount, l.macs]);
    const E = 8, H = 20, V = 12;
    const block = (i: number) => [
      [`blocks.${i}.attn.qkv`, 'Linear', E * 3 * E, E * 3 * E], [`blocks.${i}.attn.proj`, 'Linear', E * E, E * E],
      [`blocks.${i}.fc1`, 'Linear', E * H, E * H], [`blocks.${i}.fc2`, 'Linear', H * E, H * E],
    ];
    assert.deepEqual(rows, [['tokenEmbedding', 'Embedding', V * E, 0], ...block(0), ...block(1), ['head', 'Linear', E * V, E * V]]);
  });

  it('LSTM / GRU next-word models: embedding, the recurrent layer (gates·H·(E+H)), head', () => {
    const E = 6, H = 10, V = 15;
    for (const [cell, gates, type] of [['lstm', 4, 'LSTM'], ['gru', 3, 'GRU']] as const) {
      const layers = describeLmLayers(new NextWordModel({ vocabSize: V, embeddingDim: E, hiddenSize: H, cell }));
      assert.deepEqual(layers.map((l) => [l.name, l.type, l.weightCount, l.macs]), [
        ['embedding', 'Embedding', V * E, 0], ['rnn', type, gates * H * (E + H), gates * H * (E + H)], ['head', 'Linear', H * V, H * V],
      ]);
    }
  });

  it('refuses tied weights and a model already prepared', () => {
    assert.throws(() => describeLmLayers(new TransformerLM({ vocabSize: 12, maxContext: 4, embedDim: 8, numLayers: 1, numHeads: 2, tieWeights: true })), /tieWeights/);
    const m = tinyTransformer(12);
    prepareLmAssignment(m, { head: { w: 4, a: 8 } }, { kind: 'lsq' });
    assert.throws(() => describeLmLayers(m), /already prepared/);
  });
});

describe('prepareLmAssignment', () => {
  it('quantizes each planned layer at its width (weights and inputs), attention operands at the widest a, the rest float', () => {
    for (const kind of ['static', 'lsq'] as const) {
      const m = tinyTransformer(12);
      const plan: BitAssignment = { tokenEmbedding: { w: 3, a: 8 }, 'blocks.0.attn.qkv': { w: 2, a: 6 }, 'blocks.1.fc2': { w: 8, a: 8 }, head: { w: 4, a: 4 } };
      prepareLmAssignment(m, plan, { kind });
      const bits = Object.fromEntries(m.namedModules().filter(([, q]) => q instanceof StaticQuantizer || q instanceof LsqQuantizer).map(([n, q]) => [n, (q as StaticQuantizer | LsqQuantizer).spec.bits]));
      const Kind = kind === 'static' ? StaticQuantizer : LsqQuantizer;
      assert.ok(quantizers(m).every((q) => q instanceof Kind));
      assert.deepEqual(bits, {
        'tokenEmbedding.weightQuantizer': 3,
        'blocks.0.attn.qkv.weightQuantizer': 2, 'blocks.0.attn.qkv.inputQuantizer': 6,
        'blocks.0.attn.quant_query': 8, 'blocks.0.attn.quant_key': 8, 'blocks.0.attn.quant_value': 8, 'blocks.0.attn.quant_probs': 8,
        'blocks.1.attn.quant_query': 8, 'blocks.1.attn.quant_key': 8, 'blocks.1.attn.quant_value': 8, 'blocks.1.attn.quant_probs': 8,
        'blocks.1.fc2.weightQuantizer': 8, 'blocks.1.fc2.inputQuantizer': 8,
        'head.weightQuantizer': 4, 'head.inputQuantizer': 4,
      }, kind);
    }
  });

  it('refuses names that are not searchable layers and per-channel widths', () => {
    assert.throws(() => prepareLmAssignment(tinyTransformer(12), { 'blocks.0.ln1': { w: 4, a: 8 } }, { kind: 'lsq' }), /not searchable layers/);
    assert.throws(() => prepareLmAssignment(tinyTransformer(12), { head: { w: 4, a: 8, wPerChannel: Array(12).fill(4) } }, { kind: 'lsq' }), /per-channel/);
  });
});

/** A tiny LM trained briefly on the first 3000 words of Moby Dick (context 4, 300-word vocabulary). */
function trainedLm(make: (vocabSize: number) => SearchableLm, steps: number) {
  const corpus = loadLanguageModelCorpus('moby-dick', { context: 4, vocabSize: 300, limitWords: 3000 });
  manualSeed(0);
  const model = make(corpus.vocab.size);
  const optimizer = new Adam(model.parameters(), { lr: 1e-2 });
  const train = contextIdBatches(new DataLoader(corpus.train, { batchSize: 64, shuffle: true, seed: 0 }));
  let step = 0;
  model.train();
  while (step < steps) {
    for (const { x, y } of train) {
      if (step++ >= steps) break;
      crossEntropy(model.forward(x), y).backward();
      optimizer.step();
      optimizer.zeroGrad();
    }
  }
  model.eval();
  const weights = model.stateDict();
  const build = (): SearchableLm => {
    const m = make(corpus.vocab.size);
    m.loadStateDict(weights);
    m.eval();
    return m;
  };
  const calibration = [...contextIdBatches(new DataLoader(take(corpus.train, 256), { batchSize: 128 }))].map((b) => b.x);
  const evaluator = lmPtqEvaluator(build, { calibration, eval: contextIdBatches(new DataLoader(corpus.valid, { batchSize: 200 })) });
  return { model, build, evaluator, corpus };
}

describe('lmPtqEvaluator', () => {
  for (const [label, make, steps] of [
    ['TransformerLM', (v: number) => tinyTransformer(v), 150],
    ['LSTM next-word model', (v: number) => new NextWordModel({ vocabSize: v, embeddingDim: 16, hiddenSize: 24, cell: 'lstm', rng: new Rng(0) }), 150],
  ] as const) {
    it(`${label}: uniform W8A8 PTQ is within 0.02 nats of the float cross-entropy, W2A8 clearly worse (> 0.05 nats, > 20x the W8A8 change)`, () => {
      const { evaluator, build, corpus } = trainedLm(make, steps);
      const float = evaluator({});
      // The float score against a float64 log-softmax of the model's logits.
      const model = build();
      let nll = 0, n = 0;
      for (const { x, y } of contextIdBatches(new DataLoader(corpus.valid, { batchSize: 200 }))) {
        const logits = model.forward(x);
        const V = logits.shape[1]!;
        for (let i = 0; i < x.shape[0]!; i++) {
          let max = -Infinity;
          for (let v = 0; v < V; v++) max = Math.max(max, logits.data[i * V + v]!);
          let sum = 0;
          for (let v = 0; v < V; v++) sum += Math.exp(logits.data[i * V + v]! - max);
          nll -= logits.data[i * V + y.data[i]!]! - max - Math.log(sum);
          n++;
        }
      }
      assert.ok(Math.abs(float.loss - nll / n) < 1e-4, `float ${float.loss} vs float64 ${nll / n}`);
      assert.ok(float.loss < Math.log(300) - 0.5, `trained: ${float.loss} below the uniform guess ${Math.log(300)}`);
      const layers = describeLmLayers(build());
      const w8 = evaluator(uniformAssignment(layers, 8, 8));
      const w2 = evaluator(uniformAssignment(layers, 2, 8));
      assert.ok(Math.abs(w8.loss - float.loss) < 0.02, `W8A8 ${w8.loss} vs float ${float.loss}`);
      // Measured: +0.29 nats (Transformer) and +0.085 (LSTM) at W2A8, |W8A8 − float| < 0.001.
      assert.ok(w2.loss > float.loss + 0.05 && w2.loss - float.loss > 20 * Math.abs(w8.loss - float.loss), `W2A8 ${w2.loss} vs W8A8 ${w8.loss} vs float ${float.loss}`);
      assert.ok(Math.abs(w8.perplexity - Math.exp(w8.loss)) < 1e-9);
    });
  }
});

/** Three fake layers and an additive error table: the exact optimum is found by enumeration. */
function fakeProblem() {
  const layer = (name: string, weightCount: number): LayerInfo => ({ name, type: 'Linear', weightCount, outChannels: 1, macs: weightCount, inShape: [1], outShape: [1], reduction: 1 });
  const layers = [layer('a', 100), layer('b', 300), layer('c', 50)];
  // error of layer at w bits (float = 0); the evaluator adds the layers' errors to a float error of 1.
  const table: Record<string, Record<number, number>> = {
    a: { 2: 0.9, 3: 0.3, 4: 0.1, 8: 0 }, b: { 2: 0.2, 3: 0.05, 4: 0.02, 8: 0 }, c: { 2: 2.0, 3: 0.6, 4: 0.05, 8: 0 },
  };
  const evaluate = (x: BitAssignment): number => 1 + Object.entries(x).reduce((s, [name, c]) => s + table[name]![c.w]!, 0);
  const cost = sizeCost();
  const widths = [2, 3, 4, 8];
  const all: BitAssignment[] = [];
  for (const wa of widths) for (const wb of widths) for (const wc of widths) all.push({ a: { w: wa, a: 8 }, b: { w: wb, a: 8 }, c: { w: wc, a: 8 } });
  const best = (budget: number) => all.filter((x) => totalCost(cost, layers, x) <= budget).reduce((p, q) => (evaluate(q) < evaluate(p) ? q : p));
  return { layers, evaluate, cost, widths, best };
}

describe('exactErrorSearch / nsga2ErrorSearch', () => {
  it('ilp: the plan fits the budget and is the enumerated optimum of an additive error', async () => {
    const { layers, evaluate, cost, widths, best } = fakeProblem();
    for (const budget of [450 * 3, 450 * 3.5, 1500, 450 * 2 + 100]) {
      const r = await exactErrorSearch({ layers, costs: [cost], budget, wBits: widths, aBits: [8], evaluate, score: (e) => -e });
      assert.ok(r.chosen);
      assert.ok(r.chosen.costs['size']! <= budget);
      assert.deepEqual(r.chosen.assignment, best(budget), `budget ${budget}`);
      assert.equal(-r.chosen.accuracy, evaluate(best(budget)));
      for (const [w, d] of Object.entries({ 2: 2.0, 3: 0.6, 4: 0.05, 8: 0 })) assert.ok(Math.abs(r.deltaError['c']![Number(w)]! - d) < 1e-12);
      assert.deepEqual(r.candidates.filter((c) => c.uniform).map((c) => c.uniform), ['W2A8', 'W3A8', 'W4A8', 'W8A8']);
    }
    // 450·3 bits = uniform W3: the optimum gives a (100 weights) 4 bits, b 2, c 4 — cheaper than uniform and better.
    assert.deepEqual(best(450 * 3), { a: { w: 4, a: 8 }, b: { w: 2, a: 8 }, c: { w: 4, a: 8 } });
  });

  it('nsga2: the best candidate within the budget reaches the optimum of the 64-plan space', async () => {
    const { layers, evaluate, cost, widths, best } = fakeProblem();
    const r = await nsga2ErrorSearch({ layers, costs: [cost], budget: 450 * 3, wBits: widths, aBits: [8], evaluate, populationSize: 12, generations: 15, seed: 1 });
    assert.ok(r.chosen && r.chosen.costs['size']! <= 450 * 3);
    assert.deepEqual(r.chosen.assignment, best(450 * 3));
    assert.ok(r.candidates.some((c) => c.uniform === 'W3A8'));
  });

  it('lmScore is 1/perplexity', () => {
    assert.ok(Math.abs(lmScore(Math.log(80)) - 1 / 80) < 1e-15);
  });
});
