import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manualSeed, scalar } from '../tensor/index.ts';
import { crossEntropy } from '../tensor/ops.ts';
import { DataLoader } from '../data/index.ts';
import { rowClassDataset } from '../data/testing.ts';
import { mlp, type Module } from '../nn/index.ts';
import { SGD } from '../optim/sgd.ts';
import { ReduceLROnPlateau } from '../optim/schedules.ts';
import { fit, type FitOptions, type History } from './fit.ts';
import { loadCheckpoint } from './checkpoint.ts';
import { EarlyStopping } from './early-stopping.ts';

/**
 * A tiny MLP run whose validation loss is scripted: evaluation (model in eval mode) returns
 * `valLosses[epoch − 1]`, training uses cross-entropy, so the weights really change each epoch.
 */
function scripted(valLosses: number[], options: Partial<FitOptions> & { firstEpoch?: number; model?: Module; lr?: number } = {}) {
  manualSeed(1);
  const model = mlp({ inputSize: 16, hidden: [8], numClasses: 3 });
  if (options.model) model.loadStateDict(options.model.stateDict());
  const trainLoader = new DataLoader(rowClassDataset(32, 1, 0.3), { batchSize: 16 });
  const testLoader = new DataLoader(rowClassDataset(8, 2, 0.3), { batchSize: 8 });
  const optimizer = new SGD(model.parameters(), { lr: options.lr ?? 0.1 });
  let evaluations = options.firstEpoch ?? 0;
  const lossFn = (logits: Parameters<typeof crossEntropy>[0], y: Parameters<typeof crossEntropy>[1]) => (model.training ? crossEntropy(logits, y) : scalar(valLosses[evaluations++]!));
  const snapshots = new Map<number, Float32Array>();
  const { firstEpoch: _first, model: _model, lr: _lr, ...rest } = options;
  const history = fit(model, {
    trainLoader,
    testLoader,
    optimizer,
    epochs: valLosses.length,
    lossFn,
    progress: false,
    onEpochEnd: (record) => snapshots.set(record.epoch, Float32Array.from(model.parameters()[0]!.data)),
    ...rest,
  });
  return { model, optimizer, history, snapshots };
}

const epochsRun = (h: History): number[] => h.epochs.map((e) => e.epoch);

describe('fit earlyStopping (Keras EarlyStopping semantics)', () => {
  it('stops after `patience` epochs without improvement; minDelta decides what improves', () => {
    const losses = [1.0, 0.9, 0.95, 0.885, 0.89, 0.9, 0.5, 0.4];
    // minDelta 0.02: 0.885 + 0.02 is not below 0.9 -> epochs 3 and 4 wait, stop after 4.
    const strict = scripted(losses, { earlyStopping: { patience: 2, minDelta: 0.02 } }).history;
    assert.deepEqual(epochsRun(strict), [1, 2, 3, 4]);
    assert.deepEqual(strict.earlyStopping, { monitor: 'val_loss', mode: 'min', patience: 2, minDelta: 0.02, best: Math.fround(0.9), bestEpoch: 2, wait: 2, stoppedEpoch: 4, restoredEpoch: null });
    // minDelta 0: 0.885 improves, then 0.89 and 0.9 wait -> stop after 6.
    const loose = scripted(losses, { earlyStopping: { patience: 2 } }).history;
    assert.deepEqual(epochsRun(loose), [1, 2, 3, 4, 5, 6]);
    assert.equal(loose.earlyStopping!.bestEpoch, 4);
    // A negative minDelta is taken by its size, as Keras does.
    assert.deepEqual(epochsRun(scripted(losses, { earlyStopping: { patience: 2, minDelta: -0.02 } }).history), [1, 2, 3, 4]);
  });

  it('patience 0 stops at the first epoch without improvement, but never after the first epoch', () => {
    assert.deepEqual(epochsRun(scripted([1, 1, 0.5], { earlyStopping: {} }).history), [1, 2]);
    assert.deepEqual(epochsRun(scripted([NaN, 1, 0.5, 0.6, 0.1], { earlyStopping: { patience: 0 } }).history), [1, 2, 3, 4]);
  });

  it('a NaN metric never improves: it counts toward the patience', () => {
    const h = scripted([NaN, 1, NaN, NaN, 0.1], { earlyStopping: { patience: 2 } }).history;
    assert.deepEqual(epochsRun(h), [1, 2, 3, 4]);
    assert.equal(h.earlyStopping!.best, 1);
    assert.equal(h.earlyStopping!.bestEpoch, 2);
    // All NaN: nothing is ever best (null), and it stops after epoch 1 + patience.
    const never = scripted([NaN, NaN, NaN, NaN], { earlyStopping: { patience: 1 } }).history;
    assert.deepEqual(epochsRun(never), [1, 2]);
    assert.equal(never.earlyStopping!.best, null);
  });

  it('val_accuracy is maximised (mode auto); loss and accuracy monitor the training metrics', () => {
    const unit = new EarlyStopping({ monitor: 'val_accuracy', patience: 1 }, true, undefined);
    assert.equal(unit.state.mode, 'max');
    assert.deepEqual([0.5, 0.6, 0.6].map((v, i) => unit.update(i + 1, v)), ['improved', 'improved', 'stop']);
    const patient = new EarlyStopping({ monitor: 'val_accuracy', patience: 2 }, true, undefined);
    assert.deepEqual([0.5, 0.6, 0.6, 0.7, 0.69, 0.7].map((v, i) => patient.update(i + 1, v)), ['improved', 'improved', 'wait', 'improved', 'wait', 'stop']);
    const byLoss = new EarlyStopping({ monitor: 'loss', minDelta: 0.1 }, false, undefined);
    assert.equal(byLoss.state.mode, 'min');
    assert.deepEqual([1, 0.85, 0.8].map((v, i) => byLoss.update(i + 1, v)), ['improved', 'improved', 'stop']);
    // Training loss in fit: with lr 0 the weights never change, so the training loss repeats exactly.
    const frozen = scripted([1, 1, 1, 1], { earlyStopping: { monitor: 'loss', patience: 1 }, testLoader: undefined, lr: 0 }).history;
    assert.deepEqual(epochsRun(frozen), [1, 2]);
    assert.equal(frozen.epochs[0]!.trainLoss, frozen.epochs[1]!.trainLoss);
    assert.equal(frozen.earlyStopping!.best, frozen.epochs[0]!.trainLoss);
    // Learning (lr 0.1): the training loss falls every epoch on this toy task, so nothing stops it.
    assert.deepEqual(epochsRun(scripted([1, 1, 1, 1], { earlyStopping: { monitor: 'loss', patience: 1 }, testLoader: undefined }).history), [1, 2, 3, 4]);
  });

  it('refuses a val_* monitor without a test loader, and bad settings', () => {
    assert.throws(() => scripted([1, 1], { earlyStopping: { monitor: 'val_loss' }, testLoader: undefined }), /monitor 'val_loss' is measured on the validation data: pass testLoader/);
    assert.throws(() => scripted([1, 1], { earlyStopping: { monitor: 'val_acc' as 'val_loss' } }), /monitor must be one of val_loss, val_accuracy, loss, accuracy/);
    assert.throws(() => scripted([1, 1], { earlyStopping: { patience: 1.5 } }), /patience must be a non-negative integer/);
  });

  it('restoreBestWeights loads the best epoch back when stopping (and at the end); the checkpoint holds them', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-es-'));
    try {
      const path = join(dir, 'ck.safetensors');
      const run = scripted([1, 0.5, 0.7, 0.8, 0.1], { earlyStopping: { patience: 2, restoreBestWeights: true }, checkpoint: { path, every: 10 } });
      assert.deepEqual(epochsRun(run.history), [1, 2, 3, 4]);
      assert.equal(run.history.earlyStopping!.restoredEpoch, 2);
      const first = run.model.parameters()[0]!.data;
      assert.deepEqual(Float32Array.from(first), run.snapshots.get(2));
      assert.notDeepEqual(run.snapshots.get(2), run.snapshots.get(3), 'training changed the weights after epoch 2');
      // Written at the stopping epoch although every = 10.
      const ck = loadCheckpoint(path);
      assert.equal(ck.epoch, 4);
      assert.deepEqual(ck.model['1.weight']!.data, Float32Array.from(first));
      assert.deepEqual(ck.bestWeights!['1.weight']!.data, Float32Array.from(first));
      assert.equal((ck.history as History).earlyStopping!.stoppedEpoch, 4);
      // Not stopped: the best weights are still restored at the end (Keras 3).
      const full = scripted([1, 0.5, 0.7], { earlyStopping: { patience: 5, restoreBestWeights: true } });
      assert.equal(full.history.earlyStopping!.stoppedEpoch, null);
      assert.equal(full.history.earlyStopping!.restoredEpoch, 2);
      assert.deepEqual(Float32Array.from(full.model.parameters()[0]!.data), full.snapshots.get(2));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('resuming from a checkpoint continues the counters and the best weights exactly', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-es-'));
    try {
      const losses = [1, 0.5, 0.7, 0.8, 0.6, 0.9, 0.1];
      const settings = { patience: 3, restoreBestWeights: true } as const;
      const whole = scripted(losses, { earlyStopping: settings });
      assert.deepEqual(epochsRun(whole.history), [1, 2, 3, 4, 5]);
      // The same run in two parts: 3 epochs with a checkpoint, then resumed to the end.
      const path = join(dir, 'ck.safetensors');
      scripted(losses.slice(0, 3), { earlyStopping: settings, checkpoint: { path } });
      const ck = loadCheckpoint(path);
      assert.equal(ck.epoch, 3);
      const resumedModel = mlp({ inputSize: 16, hidden: [8], numClasses: 3 });
      resumedModel.loadStateDict(ck.model);
      // The first part restored epoch 2's weights at its end (restoreBestWeights acts at the end of
      // every fit call, as in Keras), so the weights after that differ from the single run's: the
      // counters and the stopping epoch are what must continue exactly.
      const resumed = scripted(losses, {
        firstEpoch: 3, model: resumedModel, initialEpoch: 3, history: ck.history as History,
        earlyStopping: { ...settings, bestWeights: ck.bestWeights! },
      });
      assert.deepEqual(epochsRun(resumed.history), [1, 2, 3, 4, 5]);
      assert.deepEqual({ ...resumed.history.earlyStopping }, { ...whole.history.earlyStopping });
      assert.deepEqual(Float32Array.from(resumed.model.parameters()[0]!.data), Float32Array.from(ck.bestWeights!['1.weight']!.data));
      // Without the best weights a resumed restoreBestWeights run cannot restore epoch 2's.
      assert.throws(() => scripted(losses, { firstEpoch: 3, initialEpoch: 3, history: ck.history as History, earlyStopping: settings }), /needs the weights of epoch 2: pass earlyStopping.bestWeights/);
      assert.throws(() => scripted(losses, { firstEpoch: 3, initialEpoch: 3, history: ck.history as History, earlyStopping: { ...settings, patience: 4 } }), /other settings: patience 3 \(now 4\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('fit with ReduceLROnPlateau', () => {
  it('is stepped with the validation loss each epoch; its state goes into the checkpoint', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-plateau-'));
    try {
      const path = join(dir, 'ck.safetensors');
      manualSeed(1);
      const model = mlp({ inputSize: 16, hidden: [8], numClasses: 3 });
      const optimizer = new SGD(model.parameters(), { lr: 0.1 });
      const scheduler = new ReduceLROnPlateau(optimizer, { patience: 1, factor: 0.5 });
      const valLosses = [1, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6];
      let e = 0;
      const history = fit(model, {
        trainLoader: new DataLoader(rowClassDataset(16, 1, 0.3), { batchSize: 16 }),
        testLoader: new DataLoader(rowClassDataset(8, 2, 0.3), { batchSize: 8 }),
        optimizer, scheduler, epochs: valLosses.length, progress: false, checkpoint: { path },
        lossFn: (logits, y) => (model.training ? crossEntropy(logits, y) : scalar(valLosses[e++]!)),
      });
      // Bad epochs 3, 4 -> reduce after epoch 4 (lr of epoch 5 = 0.05); epoch 5 bad, 6 improves; 7 bad.
      assert.deepEqual(history.epochs.map((r) => r.lr), [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05]);
      assert.deepEqual(loadCheckpoint(path).scheduler, { lastStep: 7, best: 0.5, numBadSteps: 1, cooldownCounter: 0 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('schedulerMonitor picks the metric; val_* needs a test loader', () => {
    manualSeed(1);
    const model = mlp({ inputSize: 16, hidden: [8], numClasses: 3 });
    const optimizer = new SGD(model.parameters(), { lr: 0.1 });
    const trainLoader = new DataLoader(rowClassDataset(16, 1, 0.3), { batchSize: 16 });
    const scheduler = new ReduceLROnPlateau(optimizer, { mode: 'max', patience: 0 });
    assert.throws(() => fit(model, { trainLoader, optimizer, scheduler, epochs: 1, progress: false }), /schedulerMonitor: monitor 'val_loss' is measured on the validation data/);
    // Training accuracy of a constant-output model never rises: patience 0 reduces after every epoch but the first.
    optimizer.paramGroups[0]!.lr = 0;
    const steps: number[] = [];
    const h = fit(model, { trainLoader, optimizer, scheduler: { stepsOnMetric: true, step: (m: number) => void steps.push(m) }, schedulerMonitor: 'accuracy', epochs: 2, progress: false });
    assert.deepEqual(steps, h.epochs.map((r) => r.trainAccuracy));
    assert.throws(() => fit(model, { trainLoader, optimizer, schedulerMonitor: 'loss', epochs: 1, progress: false }), /schedulerMonitor applies to a scheduler stepped on a metric/);
  });
});
