/**
 * ResNet-8 on Fashion-MNIST through the integer runtime: float32 training, then W8A8 (STE) and
 * W4A4 (LSQ) QAT fine-tuning from the float weights (and the same fine-tuning in float32, the fair
 * reference), `convert` to an IntModel DAG (residual adds
 * as integer add nodes), its accuracy and argmax agreement with the fake-quant model, its .lowbit
 * file size, and the QDQ ONNX export run in onnxruntime-node. One seed; a training subset.
 *
 *   nice -n 10 node --import tsx bench/residual/resnet8.ts [--train 10000] [--test 2000] [--epochs 2] [--qat-epochs 1] [--compare 256] [--seed 0]
 *
 * Writes bench/results/residual-resnet8.json.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { DATASET_STATS, DataLoader, loadDataset, type Dataset } from '../../src/data/index.ts';
import { normalizeInPlace } from '../../src/data/dataset.ts';
import { resnet8, type ResNet } from '../../src/nn/index.ts';
import { manualSeed, Tensor } from '../../src/tensor/index.ts';
import { noGrad } from '../../src/autograd/engine.ts';
import { evaluate } from '../../src/train/fit.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { qconfigFor } from '../../src/quant/config/index.ts';
import { convert, type IntModel } from '../../src/runtime/index.ts';
import { loadIntModel, saveIntModel } from '../../src/runtime/io.ts';
import { exportOnnx } from '../../src/onnx/export.ts';
import { openOnnx } from '../../src/onnx/verify.ts';
import { getBackend } from '../../src/backend/index.ts';
import { trainAdam } from '../train-loop.ts';
import { gitCommit, writeAtomic } from '../lib.ts';
import { argmaxRows } from '../../src/eval/attack.ts';

const args = process.argv.slice(2);
const opt = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const TRAIN = opt('train', 10000);
const TEST = opt('test', 2000);
const EPOCHS = opt('epochs', 2);
const QAT_EPOCHS = opt('qat-epochs', 1);
const COMPARE = opt('compare', 256);
const SEED = opt('seed', 0);
const OUT = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'residual-resnet8.json');

function normalized(ds: Dataset): Dataset {
  const images = ds.images.slice();
  normalizeInPlace(images, ds.sampleShape, DATASET_STATS['fashion-mnist']);
  return { ...ds, images };
}

const train = normalized(loadDataset('fashion-mnist', 'train', { limit: TRAIN }));
const test = normalized(loadDataset('fashion-mnist', 'test', { limit: TEST }));
const testX = new Tensor(test.images, [test.length, ...test.sampleShape]);
const log = (s: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);
log(`backend ${getBackend()}; Fashion-MNIST train ${train.length}, test ${test.length}; seed ${SEED}`);

/** argmax of each of the n rows of `logits`. */
const argmaxes = (logits: Float32Array, n: number): Int32Array => argmaxRows(logits, logits.length / n);

const accuracy = (pred: Int32Array): number => pred.reduce((s, p, i) => s + (p === test.labels[i] ? 1 : 0), 0) / pred.length;
const agreement = (a: Int32Array, b: Int32Array): number => a.reduce((s, p, i) => s + (p === b[i] ? 1 : 0), 0) / a.length;

/** Batched forward of the model (eval, no grad) over the test set. */
function moduleLogits(model: ResNet): Float32Array {
  model.eval();
  const out: number[] = [];
  for (let s = 0; s < test.length; s += 256) {
    const n = Math.min(256, test.length - s);
    const x = new Tensor(test.images.subarray(s * 784, (s + n) * 784), [n, 1, 28, 28]);
    out.push(...(noGrad(() => model.forward(x)).data as Float32Array));
  }
  return Float32Array.from(out);
}

function intLogits(im: IntModel): { logits: Float32Array; seconds: number } {
  const start = performance.now();
  const parts: Float32Array[] = [];
  for (let s = 0; s < test.length; s += 256) parts.push(im.run(test.images.subarray(s * 784, (s + Math.min(256, test.length - s)) * 784), Math.min(256, test.length - s)));
  const seconds = (performance.now() - start) / 1000;
  const logits = new Float32Array(test.length * 10);
  parts.forEach((p, k) => logits.set(p, k * 256 * 10));
  return { logits, seconds };
}

async function ortLogits(bytes: Uint8Array): Promise<Float32Array | string> {
  const runner = await openOnnx(bytes, [1, 28, 28]);
  if ('skipped' in runner) return runner.skipped;
  try {
    return await runner.run(test.images, test.length);
  } finally {
    await runner.release();
  }
}

const commit = gitCommit();
manualSeed(SEED);
const float = resnet8();
const started = performance.now();
trainAdam(float, train, { rounds: EPOCHS, lr: 2e-3, label: 'fp32', batchSize: 64, seed: SEED });
const floatTrainSeconds = (performance.now() - started) / 1000;
const floatPred = argmaxes(moduleLogits(float), test.length);
const floatAcc = accuracy(floatPred);
log(`fp32: test accuracy ${(floatAcc * 100).toFixed(2)} % (${EPOCHS} epochs, ${floatTrainSeconds.toFixed(0)} s)`);
const floatState = new Map([...float.stateDict()].map(([k, t]) => [k, new Tensor(t.data.slice(), t.shape)]));
// The fair float reference for the fine-tuned quantized models: the same extra epoch(s), lr and seed, in float32.
trainAdam(float, train, { rounds: QAT_EPOCHS, lr: 5e-4, label: 'fp32 fine-tune', batchSize: 64, seed: SEED + 1 });
const floatTunedAcc = accuracy(argmaxes(moduleLogits(float), test.length));
log(`fp32 + ${QAT_EPOCHS} fine-tuning epoch(s) at lr 5e-4: test accuracy ${(floatTunedAcc * 100).toFixed(2)} %`);

const rows: Record<string, unknown>[] = [];
const dir = mkdtempSync(join(tmpdir(), 'lowbit-resnet8-'));
try {
  for (const [scheme, estimator] of [['w8a8', 'ste'], ['w4a4', 'lsq']] as const) {
    manualSeed(SEED);
    const model = resnet8();
    model.loadStateDict(floatState);
    prepareQat(model, { default: qconfigFor(scheme, estimator) });
    const t0 = performance.now();
    trainAdam(model, train, { rounds: QAT_EPOCHS, lr: 5e-4, label: `${scheme} QAT`, batchSize: 64, seed: SEED + 1 });
    const qatSeconds = (performance.now() - t0) / 1000;
    const fqLogits = moduleLogits(model);
    const fqPred = argmaxes(fqLogits, test.length);
    const fqAcc = accuracy(fqPred);
    log(`${scheme}: fake-quant accuracy ${(fqAcc * 100).toFixed(2)} % (QAT ${qatSeconds.toFixed(0)} s)`);
    const sample = new Tensor(test.images.slice(0, COMPARE * 784), [COMPARE, 1, 28, 28]);
    const t1 = performance.now();
    const im = convert(model, { sample });
    const convertSeconds = (performance.now() - t1) / 1000;
    const v = im.verification!;
    const { logits, seconds } = intLogits(im);
    const intPred = argmaxes(logits, test.length);
    const intAcc = accuracy(intPred);
    const intAgree = agreement(intPred, fqPred);
    log(`${scheme}: IntModel accuracy ${(intAcc * 100).toFixed(2)} %, argmax agreement with fake quant ${(intAgree * 100).toFixed(2)} %, ${(test.length / seconds).toFixed(0)} images/s (${im.nativeUnavailableReason() ?? 'native'})`);
    const path = join(dir, `${scheme}.lowbit`);
    const fileBytes = saveIntModel(path, im);
    const reloaded = loadIntModel(path);
    const before = im.run(sample);
    const reloadSame = reloaded.run(sample).every((x, i) => Object.is(x, before[i]));
    const onnx: Record<string, unknown> = {};
    // 'default': the exporter's default bias (standard for int8-weight layers, the IntModel's exact bias for int4 ones).
    for (const bias of ['default', 'intmodel'] as const) {
      const e = exportOnnx(im, bias === 'default' ? {} : { bias });
      const y = await ortLogits(e.bytes);
      if (typeof y === 'string') { onnx[bias] = { skipped: y }; continue; }
      const pred = argmaxes(y, test.length);
      onnx[bias] = { bytes: e.bytes.length, opset: e.opset, weightTypes: [...new Set(Object.values(e.weightTypes))], accuracy: accuracy(pred), argmaxAgreementWithIntModel: agreement(pred, intPred) };
      log(`${scheme}: ONNX (${bias} bias) ${e.bytes.length} bytes, accuracy ${(accuracy(pred) * 100).toFixed(2)} %, agreement with the IntModel ${(agreement(pred, intPred) * 100).toFixed(2)} %`);
    }
    rows.push({
      scheme, estimator, qatEpochs: QAT_EPOCHS, qatSeconds, fakeQuantAccuracy: fqAcc, intModelAccuracy: intAcc, intModelArgmaxAgreement: intAgree,
      convert: {
        seconds: convertSeconds, graphVersion: im.graph.version, nodes: im.nodes.length, addNodes: im.nodes.filter((n) => n.op === 'add').length,
        layerNodes: im.nodes.filter((n) => n.op === 'conv2d' || n.op === 'linear').length, macsPerSample: im.size.macs,
        sample: COMPARE, argmaxAgreement: v.argmaxAgreement, maxLogitLsbFloat64: v.maxLogitLsb, logitWithin1LsbFloat64: v.logitWithin1Lsb,
        float32MaxLogitLsb: v.float32MaxLogitLsb, float32BeyondTolerance: v.float32BeyondTolerance, layerMaxDiff: v.layerMaxDiff,
      },
      intModelImagesPerSecondWall: test.length / seconds, executor: im.nativeUnavailableReason() ?? 'native',
      lowbitFileBytes: fileBytes, reloadIdenticalLogits: reloadSame, onnx,
    });
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const result = {
  bench: 'residual-resnet8', commit, date: new Date().toISOString(), backend: getBackend(), seed: SEED,
  command: `nice -n 10 node --import tsx bench/residual/resnet8.ts --train ${TRAIN} --test ${TEST} --epochs ${EPOCHS} --qat-epochs ${QAT_EPOCHS} --compare ${COMPARE} --seed ${SEED}`,
  data: { dataset: 'fashion-mnist', train: train.length, test: test.length },
  model: { name: 'resnet8', parameters: float.numParameters() },
  fp32: { epochs: EPOCHS, trainSeconds: floatTrainSeconds, accuracy: floatAcc, fineTunedEpochs: QAT_EPOCHS, fineTunedAccuracy: floatTunedAcc },
  quantized: rows,
};
writeAtomic(OUT, `${JSON.stringify(result, null, 2)}\n`);
log(`wrote ${OUT}`);
