import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { lenet5 } from '../../nn/models/lenet5.ts';
import { Cnn } from '../../nn/models/cnn.ts';
import { manualSeed, Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { describeLayers } from './layers.ts';
import { latencyCost } from './latency.ts';
import { sizeCost, layerChoiceCost } from './costs.ts';
import { allocateMeasured, channelPruneScores, keptChannels, prunableLayers, pruneChoice, pruneLayerOptions, prunePerturbation, recoveredReference } from './prune.ts';
import { allocateExact, type LayerChoices } from './allocate.ts';
import { logProbs } from './sensitivity.ts';

function batch(n: number, seed: number): { x: Tensor; y: Tensor } {
  const rng = new Rng(seed);
  return {
    x: new Tensor(new Float32Array(n * 784).map(() => rng.normal()), [n, 1, 28, 28]),
    y: new Tensor(Int32Array.from({ length: n }, () => rng.int(10)), [n]),
  };
}

describe('channel pruning (0-bit channels) in the search', () => {
  it('channelPruneScores: ½·(H_c/n_c)·‖w_c‖² with a per-channel sensitivity, ‖w_c‖² without', () => {
    const w = new Tensor(Float32Array.from([1, 2, 0, 3, -1, 1]), [3, 2]);
    assert.deepEqual([...channelPruneScores(w)], [5, 9, 2]);
    const h = { name: 'l', value: 14, mean: 14 / 6, weightCount: 6, perChannel: Float64Array.from([4, 2, 8]) };
    assert.deepEqual([...channelPruneScores(w, h)], [0.5 * 2 * 5, 0.5 * 1 * 9, 0.5 * 4 * 2]);
    assert.throws(() => channelPruneScores(w, { ...h, perChannel: undefined }), /per-channel/);
  });

  it('pruneChoice keeps the highest-scoring channels; keptChannels rounds and keeps ≥ 1', () => {
    const layer = describeLayers(lenet5(), [1, 28, 28])[0]!; // conv1, 6 channels
    const c = pruneChoice(layer, [3, 1, 5, 0, 2, 4], 3, 8, 8);
    assert.deepEqual(c.wPerChannel, [8, 0, 8, 0, 0, 8]);
    assert.deepEqual(pruneChoice(layer, [1, 1, 1, 1, 1, 1], 6, 4, 8), { w: 4, a: 8 });
    assert.equal(keptChannels(6, 0.25), 2);
    assert.equal(keptChannels(6, 0.01), 1);
    assert.equal(keptChannels(120, 0.375), 45);
    // The size of a pruned layer counts its kept channels only.
    assert.equal(layerChoiceCost(sizeCost(), layer, c), 3 * 25 * 8);
    // A custom latency measurement has no channel count, so it refuses pruned choices.
    assert.throws(() => layerChoiceCost(latencyCost({ noCache: true, measure: () => 1 }), layer, c), /pruned/);
  });

  it('prunableLayers: not the logits layer, not a layer feeding an unfolded BatchNorm1d', () => {
    const lenet = lenet5();
    assert.deepEqual(prunableLayers(lenet, describeLayers(lenet, [1, 28, 28])), ['conv1', 'conv2', 'fc1', 'fc2']);
    const cnn = new Cnn({ channels: [4, 8], hidden: 16 });
    assert.deepEqual(prunableLayers(cnn, describeLayers(cnn, [1, 28, 28])), ['features.0', 'features.3', 'features.7', 'features.10']);
  });

  it('prunePerturbation: 0 for a channel that already outputs 0 (BN γ = β = 0), > 0 otherwise; model restored', () => {
    manualSeed(2);
    const model = new Cnn({ channels: [4, 8], hidden: 16 });
    model.eval();
    const data = [batch(16, 1)];
    const layer = describeLayers(model, [1, 28, 28])[1]!; // features.3, BN features.4 folded
    const before = model.stateDict();
    const p = prunePerturbation(model, data, layer.name, pruneChoice(layer, [1, 0, 1, 1], 3, 8, 8));
    assert.ok(p.kl > 0);
    for (const [k, v] of model.stateDict()) assert.deepEqual(v.data, before.get(k)!.data, k);
    // BN γ = β = 0 on channel 1 makes that channel output 0 already: pruning it changes nothing.
    const bn = model.features.at(4) as unknown as { weight: Tensor; bias: Tensor };
    bn.weight.data[1] = 0;
    bn.bias.data[1] = 0;
    assert.equal(prunePerturbation(model, data, layer.name, pruneChoice(layer, [1, 0, 1, 1], 3, 8, 8)).kl, 0);
  });

  it('prunePerturbation with a recovery fine-tune: 0 steps = no recovery; trains against the unpruned reference; model restored', () => {
    manualSeed(8);
    const model = lenet5();
    model.eval();
    const data = [batch(16, 7)];
    const layer = describeLayers(model, [1, 28, 28])[0]!;
    const choice = pruneChoice(layer, [1, 2, 3, 4, 5, 6], 3, 8, 8);
    const before = model.stateDict();
    const plain = prunePerturbation(model, data, layer.name, choice);
    assert.deepEqual(prunePerturbation(model, data, layer.name, choice, undefined, { batches: [], steps: 0 }), plain);
    const train = [batch(32, 9), batch(32, 10), batch(32, 11)];
    const reference = recoveredReference(model, data, { batches: train, lr: 1e-2 });
    const untrained = prunePerturbation(model, data, layer.name, { w: 8, a: 8 });
    assert.deepEqual(untrained, { kl: 0, deltaLoss: 0 });
    const recovered = prunePerturbation(model, data, layer.name, choice, reference, { batches: train, lr: 1e-2 });
    assert.ok(Number.isFinite(recovered.kl) && recovered.kl >= 0 && recovered.kl !== plain.kl);
    // The reference moved: three Adam steps at 1e-2 change the model's loss on the data.
    assert.notEqual(reference.loss, logProbs(model, data).loss);
    for (const [k, v] of model.stateDict()) assert.deepEqual(v.data, before.get(k)!.data, k);
    assert.equal(model.training, false);
  });

  it('pruneLayerOptions: widths × distinct kept counts for prunable layers, keep 1 elsewhere; error grows as channels go', () => {
    manualSeed(4);
    const model = lenet5();
    model.eval();
    const layers = describeLayers(model, [1, 28, 28]);
    const opts = pruneLayerOptions(model, layers, [batch(16, 3)], sizeCost(), { ratios: [1, 0.5, 0.25], widths: [8, 4] });
    assert.deepEqual(opts.map((o) => o.options.length), [6, 6, 6, 6, 2]);
    const conv1 = opts[0]!.options;
    assert.deepEqual(conv1.map((o) => o.choice.wPerChannel?.filter((b) => b !== 0).length ?? 6), [6, 6, 3, 3, 2, 2]);
    assert.deepEqual(conv1.map((o) => o.cost), [6 * 25 * 8, 6 * 25 * 4, 3 * 25 * 8, 3 * 25 * 4, 2 * 25 * 8, 2 * 25 * 4]);
    assert.equal(conv1[0]!.error, 0);
    assert.ok(conv1[4]!.error >= conv1[2]!.error && conv1[2]!.error > 0);
  });

  it('pruneLayerOptions: fewer kept channels never count as less error (a budget that fits the full layer prunes nothing)', () => {
    manualSeed(4);
    const model = lenet5();
    model.eval();
    const layers = describeLayers(model, [1, 28, 28]);
    // Δloss of an untrained model: pruning often lowers the loss on the sample (clamped at 0), so
    // the measured errors of several kept counts tie at 0 or fall as channels go.
    const opts = pruneLayerOptions(model, layers, [batch(16, 3)], sizeCost(), { ratios: [1, 0.75, 0.5, 0.25], error: 'deltaLoss' });
    for (const layer of opts) {
      const kept = (o: (typeof layer.options)[number]) => o.choice.wPerChannel?.filter((b) => b !== 0).length ?? Infinity;
      const byKept = [...layer.options].sort((x, y) => kept(y) - kept(x));
      for (let i = 1; i < byKept.length; i++) assert.ok(byKept[i]!.error > byKept[i - 1]!.error, `${layer.name}: ${kept(byKept[i]!)} kept: ${byKept[i]!.error} vs ${byKept[i - 1]!.error}`);
    }
    // The exact allocation under a size budget the unpruned model meets keeps every channel.
    const full = opts.reduce((sum, l) => sum + l.options[0]!.cost, 0);
    const plan = allocateExact(opts, full);
    assert.deepEqual(plan.choices.map((k, i) => opts[i]!.options[k]!.choice.wPerChannel?.includes(0) ?? false), opts.map(() => false));
  });

  it('pruneLayerOptions with an in-model latency model: costs = m_L + max(0, T₈ − Σ m)/n + change, W8A8 sums to max(T₈, Σ m), nothing clamped', () => {
    manualSeed(6);
    const model = lenet5();
    model.eval();
    const layers = describeLayers(model, [1, 28, 28]);
    // A fake measured model: keeping k of O channels changes the total by −3·(1 − k/O) µs in conv1, −1·(1 − k/O) elsewhere.
    const change = (l: typeof layers[number], c: { wPerChannel?: readonly number[] }): number => {
      const kept = c.wPerChannel ? c.wPerChannel.filter((b) => b !== 0).length : l.outChannels;
      return -(l.name === 'conv1' ? 3 : 1) * (1 - kept / l.outChannels);
    };
    const latency = { name: 'latency', unit: 'µs', layerCost: () => 1, change, w8a8Total: () => 10 };
    const opts = pruneLayerOptions(model, layers, [batch(8, 5)], latency, { ratios: [1, 0.5] });
    // Largest savings: conv1 1.5, conv2/fc1/fc2 0.5, fc3 0 → spare (10 − 3)/5 = 1.4.
    const full = opts.map((o) => o.options[0]!.cost);
    assert.deepEqual(full.map((c) => Number(c.toFixed(9))), [2.9, 1.9, 1.9, 1.9, 1.4]);
    assert.ok(Math.abs(full.reduce((x, y) => x + y, 0) - 10) < 1e-9);
    assert.ok(Math.abs(opts[0]!.options[1]!.cost - 1.4) < 1e-9, 'conv1 at half its channels: 2.9 − 1.5');
    assert.equal(opts.costOffset, 0);
    // Savings that overlap (Σ m = 3 > T₈ = 2): no spare, W8A8 costs Σ m = T₈ + costOffset.
    const smallTotal = { ...latency, w8a8Total: () => 2 };
    const overlapping = pruneLayerOptions(model, layers, [batch(8, 5)], smallTotal, { ratios: [1, 0.5] });
    assert.ok(Math.abs(overlapping.costOffset - 1) < 1e-9);
    assert.ok(Math.abs(overlapping.reduce((sum, o) => sum + o.options[0]!.cost, 0) - 3) < 1e-9);
  });

  it('allocateMeasured searches the estimated front from the most accurate end, scaling by the measured over-run', () => {
    const layers: LayerChoices[] = [0, 1].map((i) => ({
      name: `l${i}`,
      options: [{ choice: { w: 8, a: 8 }, cost: 10, error: 0 }, { choice: { w: 4, a: 8 }, cost: 7, error: 1 }, { choice: { w: 2, a: 8 }, cost: 4, error: 3 }],
    }));
    // Front within 17: 17 (error 1), 14 (2), 11 (4), 8 (6). Measured 25 % over the estimate: 17 → 21.25, so the next
    // estimate may be at most 17·17/21.25 = 13.6: 11 → 13.75 fits.
    const r = allocateMeasured(layers, 17, (a) => a.cost * 1.25);
    assert.equal(r.fits, true);
    assert.deepEqual(r.rounds, [{ estimate: 17, measured: 21.25, error: 1 }, { estimate: 11, measured: 13.75, error: 4 }]);
    assert.equal(r.allocation.cost, 11);
    // 10 % over: 17 → 18.7, limit 15.45: 14 → 15.4 fits.
    assert.deepEqual(allocateMeasured(layers, 17, (a) => a.cost * 1.1).rounds.map((x) => x.estimate), [17, 14]);
    const never = allocateMeasured(layers, 8, (a) => a.cost * 3);
    assert.equal(never.fits, false);
    assert.equal(never.allocation.cost, 8);
    assert.throws(() => allocateMeasured(layers, 7, () => 0), /no allocation fits/);
  });
});
