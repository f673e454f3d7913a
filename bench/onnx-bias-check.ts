/**
 * The two int32 bias scales of a QDQ export (`--bias standard|intmodel`, docs/onnx.md) on one
 * .lowbit integer model: for each bias (default: per layer, intmodel for int4 weights and standard
 * for int8 weights; standard; intmodel) and each weight container (default: int4 where the weights
 * fit; weightBits 8: int8 everywhere), the export runs in onnxruntime-node (graph optimization
 * `all`, 1 thread) on the test set and is compared with the IntModel: test accuracy of both, same
 * argmax, and the process CPU time of onnxruntime's session runs (process.cpuUsage, so the figure
 * holds on a loaded machine better than wall time; onnxruntime fuses QDQ Conv/Gemm into integer
 * kernels only with int8 weights and the standard bias).
 *
 *   node --import tsx bench/onnx-bias-check.ts MODEL.lowbit [--samples 10000] [--dataset NAME]
 */
import { parseArgs } from 'node:util';
import { DATASET_STATS, isDatasetName, loadDataset, take, type NormalizeStats } from '../src/data/index.ts';
import { normalizeInPlace } from '../src/data/dataset.ts';
import { exportOnnx } from '../src/onnx/export.ts';
import { openOnnx } from '../src/onnx/verify.ts';
import { loadIntModel } from '../src/runtime/io.ts';
import { argmaxRows } from '../src/eval/attack.ts';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: { samples: { type: 'string', default: '10000' }, dataset: { type: 'string' } },
});
const file = positionals[0];
if (file === undefined) throw new Error('usage: bench/onnx-bias-check.ts MODEL.lowbit [--samples N] [--dataset NAME]');
const samples = Number(args.samples);
if (!Number.isInteger(samples) || samples < 1) throw new Error('--samples must be a positive integer');

const model = loadIntModel(file);
const meta = model.graph.metadata ?? {};
const datasetName = args.dataset ?? (typeof meta.dataset === 'string' ? meta.dataset : 'mnist');
if (!isDatasetName(datasetName)) throw new Error(`unknown dataset '${datasetName}'`);
const test = take(loadDataset(datasetName, 'test'), samples);
const x = new Float32Array(test.images);
normalizeInPlace(x, test.sampleShape, (meta.normalize as NormalizeStats | undefined) ?? DATASET_STATS[datasetName]);
const per = test.sampleShape.reduce((p, d) => p * d, 1);
const BATCH = 500;

/** argmax of each of the n rows of `logits`. */
const argmaxes = (logits: Float32Array, n: number): Int32Array => argmaxRows(logits, logits.length / n);

function accuracy(predicted: Int32Array): string {
  let correct = 0;
  for (let i = 0; i < predicted.length; i++) if (predicted[i] === test.labels[i]) correct++;
  return `${((100 * correct) / predicted.length).toFixed(2)} %`;
}

const reference = new Int32Array(test.length);
for (let from = 0; from < test.length; from += BATCH) {
  const n = Math.min(BATCH, test.length - from);
  reference.set(argmaxes(model.run(x.subarray(from * per, (from + n) * per), n), n), from);
}
console.log(`${file}: ${test.name}, ${test.length} images; IntModel test accuracy ${accuracy(reference)}`);

for (const weightBits of [undefined, 8] as const) {
  for (const bias of [undefined, 'standard', 'intmodel'] as const) {
    const exported = exportOnnx(model, { weightBits, bias });
    const runner = await openOnnx(exported.bytes, test.sampleShape);
    if ('skipped' in runner) {
      console.log(`skipped: ${runner.skipped}`);
      process.exit(0);
    }
    const predicted = new Int32Array(test.length);
    const cpu0 = process.cpuUsage();
    for (let from = 0; from < test.length; from += BATCH) {
      const n = Math.min(BATCH, test.length - from);
      predicted.set(argmaxes(await runner.run(x.slice(from * per, (from + n) * per), n), n), from);
    }
    const cpu = process.cpuUsage(cpu0);
    await runner.release();
    let same = 0;
    for (let i = 0; i < test.length; i++) if (predicted[i] === reference[i]) same++;
    const weights = [...new Set(Object.values(exported.weightTypes))].join('+');
    console.log(`bias ${(bias ?? 'default').padEnd(8)} weights ${weights.padEnd(9)} opset ${exported.opset}: test accuracy ${accuracy(predicted)}, same argmax as the IntModel ${((100 * same) / test.length).toFixed(2)} % (${same}/${test.length}), onnxruntime CPU ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s`);
  }
}
