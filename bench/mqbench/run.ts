/**
 * MQBench-style benchmark on lowbit (docs/mqbench.md): algorithms × backends × bit widths, each
 * fine-tuned from the same fp32 checkpoint with one fixed recipe, then evaluated as the fake-quant
 * model and as the deployed IntModel.
 *
 *   nice -n 10 node --import tsx bench/mqbench/run.ts [--model lenet5|cnn] [--bits 4,8]
 *     [--backends academic,tensorrt,fbgemm,snpe,tvm] [--algorithms ste,lsq,pact,noise,dorefa,lqnet]
 *     [--train N] [--test N] [--epochs E] [--seed S] [--lr LR] [--tag NAME] [--allow-reference]
 *     [--onnx-bias default|standard|intmodel]   (the ONNX export's int32 bias, docs/onnx.md)
 *
 * Defaults: the first 4,000 training images (1 epoch), the first 5,000 test images, seed 0.
 *
 * Writes bench/results/mqbench-<model>[-<tag>].json (after every cell, atomically) and the tables
 * to docs/results/mqbench-<model>[-<tag>].md. Starting weights: runs/qat/ckpt/<table>_fp32.safetensors
 * (the QAT matrix's fp32 run), else an fp32 model trained here for 2 epochs (runs/mqbench/).
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { flagOr, numberFlag } from '../flags.ts';
import { gitCommit, writeAtomic } from '../lib.ts';

process.env.LOWBIT_THREADS ??= '1';

// Another engineer's `npm run build:native` removes the addon for a while: wait for it instead of
// silently running on the (much slower) reference backend.
{
  const addon = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'build', 'Release', 'lowbit_native.node');
  for (let waited = 0; !existsSync(addon) && waited < 600 && process.env.LOWBIT_BACKEND !== 'reference'; waited += 2) {
    if (waited === 0) process.stderr.write(`waiting for ${addon} (native rebuild in progress?)\n`);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

const { getBackend } = await import('../../src/backend/index.ts');
const { DATASET_STATS, DataLoader, loadDataset, take } = await import('../../src/data/index.ts');
const { createModel } = await import('../../src/nn/models/index.ts');
const { Adam } = await import('../../src/optim/index.ts');
const { manualSeed } = await import('../../src/tensor/index.ts');
const { fit, evaluate } = await import('../../src/train/fit.ts');
const { loadCheckpoint, saveCheckpoint } = await import('../../src/train/checkpoint.ts');
const { benchmarkQuantization, backendProfile, BACKENDS, ALGORITHMS } = await import('../../src/quant/mqbench/index.ts');
const { exportOnnx } = await import('../../src/onnx/export.ts');
const { verifyOnnx } = await import('../../src/onnx/verify.ts');
import type { MqbenchResult } from '../../src/quant/mqbench/index.ts';
import type { IntModel } from '../../src/runtime/index.ts';

/** A cell's ONNX check: the exported QDQ model run by onnxruntime-node against the IntModel on the test set. */
interface OnnxCheck {
  readonly cell: string;
  readonly status: 'ok' | 'skipped' | 'error';
  readonly reason?: string;
  readonly argmaxAgreement?: number;
  readonly maxAbsDiff?: number;
}

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
if (getBackend() !== 'native' && !process.argv.includes('--allow-reference')) {
  throw new Error(`the native backend is not loaded (backend '${getBackend()}'): rebuild it (npm run build:native) or pass --allow-reference`);
}
const modelFlag = flagOr('model', 'lenet5');
if (modelFlag !== 'lenet5' && modelFlag !== 'cnn') throw new Error(`--model must be lenet5 or cnn, got '${modelFlag}'`);
const modelName: 'lenet5' | 'cnn' = modelFlag;
const datasetName = modelName === 'lenet5' ? 'mnist' : 'fashion-mnist';
const table = modelName === 'lenet5' ? 'lenet5-mnist' : 'cnn-fashion';
const list = (name: string, fallback: readonly string[]): string[] => flagOr(name, fallback.join(',')).split(',').filter((s) => s !== '');
const bits = list('bits', ['4', '8']).map(Number);
const backends = list('backends', BACKENDS);
const algorithms = list('algorithms', ALGORITHMS);
const trainSamples = numberFlag('train', 4000, { integer: true, min: 1 });
const testSamples = numberFlag('test', 5000, { integer: true, min: 1 });
const epochs = numberFlag('epochs', 1, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const lr = numberFlag('lr', 2e-4);
const tag = flagOr('tag', '');
const onnxBias = flagOr('onnx-bias', 'default') as 'default' | 'standard' | 'intmodel';
if (!['default', 'standard', 'intmodel'].includes(onnxBias)) throw new Error(`--onnx-bias must be default, standard or intmodel (got ${onnxBias})`);
const suffix = `${modelName}${tag ? `-${tag}` : ''}`;
const jsonPath = join(ROOT, 'bench', 'results', `mqbench-${suffix}.json`);
const mdPath = join(ROOT, 'docs', 'results', `mqbench-${suffix}.md`);

const normalize = DATASET_STATS[datasetName];
const fullTrain = loadDataset(datasetName, 'train');
const train = take(fullTrain, Math.min(trainSamples, fullTrain.length));
const fullTest = loadDataset(datasetName, 'test');
const test = take(fullTest, Math.min(testSamples, fullTest.length));
const testLoader = new DataLoader(test, { batchSize: 500, normalize });

/** The fp32 starting checkpoint (trained here when the QAT matrix's one is missing). */
function fp32Checkpoint(): string {
  const shared = join(ROOT, 'runs', 'qat', 'ckpt', `${table}_fp32.safetensors`);
  if (existsSync(shared)) return shared;
  const own = join(ROOT, 'runs', 'mqbench', `${table}_fp32.safetensors`);
  if (existsSync(own)) return own;
  process.stderr.write(`no fp32 checkpoint: training ${modelName} on ${datasetName} for 2 epochs -> ${own}\n`);
  manualSeed(0);
  const model = createModel(modelName);
  fit(model, { trainLoader: new DataLoader(fullTrain, { batchSize: 64, shuffle: true, seed: 0, normalize }), optimizer: new Adam(model.parameters(), { lr: 1e-3 }), epochs: 2, seed: 0 });
  saveCheckpoint(own, { model: model.stateDict(), epoch: 2 });
  return own;
}

const ckpt = fp32Checkpoint();
const weights = loadCheckpoint(ckpt).model;
const fresh = () => {
  const model = createModel(modelName);
  model.loadStateDict(weights);
  return model;
};
const fp32Accuracy = evaluate(fresh(), testLoader).accuracy;
process.stderr.write(`fp32 ${modelName} (${ckpt}): ${(fp32Accuracy * 100).toFixed(2)} % on ${test.length} test images\n`);

const recipe = { epochs, batchSize: 64, lr, quantLrScale: 0.5, seed };
const commit = gitCommit();
const results: MqbenchResult[] = [];
const intModels: [string, IntModel][] = [];
const onnx: OnnxCheck[] = [];
const record = () => ({
  model: modelName, dataset: datasetName, trainSamples: train.length, testSamples: test.length, fp32Checkpoint: ckpt.replace(`${ROOT}/`, ''),
  fp32Accuracy, recipe: { ...recipe, optimizer: 'adam', schedule: 'none' }, bits, backends, algorithms, commit, backend: getBackend(),
  command: `nice -n 10 node --import tsx bench/mqbench/run.ts ${process.argv.slice(2).join(' ')}`.trim(),
  date: new Date().toISOString(), results, onnx,
});
const t0 = performance.now();
benchmarkQuantization({
  createModel: fresh, train, test, normalize, algorithms, backends, bits, recipe, verifySamples: 128,
  onIntModel: (c, im) => intModels.push([`${c.backend}/${c.algorithm}/W${c.bits}A${c.bits}`, im]),
  onResult: (r) => {
    results.push(r);
    writeAtomic(jsonPath, `${JSON.stringify(record(), null, 1)}\n`);
    const acc = r.status === 'ok' ? `sim ${(r.simulatedAccuracy! * 100).toFixed(2)} %, int ${r.deployedAccuracy === null ? '—' : `${(r.deployedAccuracy! * 100).toFixed(2)} %`}` : r.status;
    process.stderr.write(`\n${r.backend}/${r.algorithm}/W${r.bits}A${r.bits}: ${acc}${r.seconds ? ` (${r.seconds.toFixed(0)} s)` : ''}${r.status !== 'ok' ? ` — ${r.reason}` : ''}\n`);
  },
});
// ONNX: every deployed IntModel exported as QDQ ONNX and run by onnxruntime-node on the whole test set.
const testData = new Float32Array(test.images.length);
{
  let at = 0;
  for (const { x } of testLoader) {
    testData.set(x.data as Float32Array, at);
    at += x.size;
  }
}
for (const [cell, im] of intModels) {
  try {
    const { bytes } = exportOnnx(im, onnxBias === 'default' ? {} : { bias: onnxBias });
    const report = await verifyOnnx(bytes, (x, n) => im.run(x, n), { data: testData, shape: [...test.sampleShape], count: test.length });
    onnx.push(report.status === 'ok' ? { cell, status: 'ok', argmaxAgreement: report.argmaxAgreement, maxAbsDiff: report.maxAbsDiff } : { cell, status: 'skipped', reason: report.reason });
  } catch (error) {
    onnx.push({ cell, status: 'error', reason: (error as Error).message.split('\n')[0] });
  }
  process.stderr.write(`onnx ${cell}: ${JSON.stringify(onnx[onnx.length - 1])}\n`);
}
writeAtomic(jsonPath, `${JSON.stringify(record(), null, 1)}\n`);
writeAtomic(mdPath, markdown());
process.stderr.write(`done in ${((performance.now() - t0) / 1000).toFixed(0)} s: ${jsonPath}, ${mdPath}\n`);

function pct(x: number | null | undefined): string {
  return x === null || x === undefined ? '—' : (x * 100).toFixed(2);
}

/** The accuracy table (rows: algorithm, columns: backend) per bit width, and the agreement table. */
function markdown(): string {
  const lines: string[] = [];
  const r = record();
  lines.push(`# MQBench-style benchmark: ${modelName} on ${datasetName}`, '');
  lines.push(`Generated by \`${r.command}\` at commit ${commit} (${r.date}, backend ${r.backend}).`);
  lines.push(`fp32 start: ${(fp32Accuracy * 100).toFixed(2)} % (${r.fp32Checkpoint}). Recipe for every cell: Adam lr ${lr}, quantizer parameters ×0.5, batch 64, ${epochs} epoch(s) on the first ${train.length} training images, seed ${seed}; test on the first ${test.length} test images; IntModel verification (logit LSB columns) on the first 128.`, '');
  const cell = (x: MqbenchResult | undefined): string => {
    if (!x) return '';
    if (x.status === 'unsupported') return 'n/a';
    if (x.status === 'error') return 'error';
    return x.deployedAccuracy === null || x.deployedAccuracy === undefined ? `${pct(x.simulatedAccuracy)} (sim only)` : `${pct(x.simulatedAccuracy)} / ${pct(x.deployedAccuracy)}`;
  };
  for (const b of bits) {
    lines.push(`## W${b}A${b}: test accuracy %, simulated / deployed (IntModel)`, '');
    lines.push(`| algorithm | ${backends.join(' | ')} |`, `| --- | ${backends.map(() => '---').join(' | ')} |`);
    for (const a of algorithms) {
      lines.push(`| ${a} | ${backends.map((k) => cell(results.find((x) => x.algorithm === a && x.backend === k && x.bits === b))).join(' | ')} |`);
    }
    lines.push('');
  }
  lines.push('## Deployed vs simulated', '');
  lines.push('| cell | IntModel vs fake-quant argmax agreement (test set) | max logit Δ to float64 simulation (LSB, 128 samples) | float32 Δ / tolerance | ONNX (onnxruntime) vs IntModel argmax agreement | ONNX max abs Δ |', '| --- | --- | --- | --- | --- | --- |');
  for (const x of results) {
    if (x.status !== 'ok' || x.deployedAccuracy === null || x.deployedAccuracy === undefined) continue;
    const id = `${x.backend}/${x.algorithm}/W${x.bits}A${x.bits}`;
    const o = onnx.find((c) => c.cell === id);
    const onnxCells = !o ? '— | —' : o.status === 'ok' ? `${pct(o.argmaxAgreement)} % | ${o.maxAbsDiff!.toExponential(2)}` : `${o.status}: ${o.reason ?? ''} | —`;
    lines.push(`| ${id} | ${pct(x.argmaxAgreement)} % | ${x.maxLogitLsb?.toFixed(2) ?? '—'} | ${x.float32ToleranceRatio?.toFixed(3) ?? '—'} | ${onnxCells} |`);
  }
  lines.push('', '## Not run', '');
  const seen = new Set<string>();
  for (const x of results) {
    const why = x.status === 'ok' ? (x.deployReason ? `deployment: ${x.deployReason}` : null) : x.reason ?? x.status;
    if (!why) continue;
    const key = `${x.backend}/${x.algorithm}: ${why}`;
    if (seen.has(key)) continue;
    seen.add(key);
    lines.push(`- ${key}`);
  }
  lines.push('', '## Backend schemes', '');
  for (const k of backends) {
    const p = backendProfile(k);
    lines.push(`- ${k} (${p.hardware}): weights ${p.weight.symmetric ? 'symmetric' : 'asymmetric'} per ${p.weight.granularity}; activations ${p.activation.signed ? 'signed' : 'unsigned'} ${p.activation.symmetric ? 'symmetric' : 'asymmetric'} per tensor; ${p.powerOfTwo ? 'power-of-two scales; ' : ''}first/last layer ${p.keepFirstLast8bit ? '8-bit' : 'at the target width'}; BN ${p.foldBatchNorm ? 'folded in QAT' : 'not folded'}`);
  }
  return `${lines.join('\n')}\n`;
}
