/**
 * Per-group weights in the integer runtime (docs/ptq.md "Per-group weights", docs/runtime.md):
 * for each model, scheme and group size (0 = per output channel), the PTQ of bench/ptq/group.ts
 * (every layer at the low width, 'mse' weight scales, min-max 8-bit activations, the same 1000
 * calibration samples), then on the full test set: the fake-quant accuracy, the IntModel's (native
 * executor when the addon is loaded) and its argmax agreement with the fake-quant model and max
 * logit difference in output LSBs (s_in·s_w of the last layer; s_in·s_max for a grouped one), the
 * ONNX export run by onnxruntime-node (accuracy, agreement with the IntModel), the model.lowbit
 * size; then the IntModel's speed per group size, interleaved (rounds × every model of a
 * scheme, batch 256, median ms per batch).
 *
 *   node --import tsx bench/ptq/group-int.ts --runs /tmp/ptqg [--models mlp,lenet5] [--schemes w4a8,w2a8] [--groups 0,32,16] [--rounds 15]
 *
 * `--runs DIR` holds fp32 runs DIR/<model> (see bench/ptq/group.ts). Writes docs/results/ptq-group-int.json.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, loadavg } from 'node:os';
import { join } from 'node:path';
import { DATASET_STATS, DataLoader, isDatasetName, loadDataset } from '../../src/data/index.ts';
import { evaluate } from '../../src/train/index.ts';
import { calibrate } from '../../src/quant/ptq/index.ts';
import { modelOfCheckpoint } from '../../src/cli/checkpoint-model.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { manualSeed, Tensor } from '../../src/tensor/index.ts';
import { noGrad } from '../../src/autograd/engine.ts';
import { convert } from '../../src/runtime/convert.ts';
import { saveIntModel } from '../../src/runtime/io.ts';
import type { IntModel, LayerNode } from '../../src/runtime/intmodel.ts';
import { exportOnnx } from '../../src/onnx/export.ts';
import { openOnnx } from '../../src/onnx/verify.ts';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const runs = arg('runs', '/tmp/ptqg');
const models = arg('models', 'mlp,lenet5').split(',');
const schemes = arg('schemes', 'w4a8,w2a8').split(',');
const groups = arg('groups', '0,32,16').split(',').map(Number);
const rounds = Number(arg('rounds', '15'));

function argmax(v: ArrayLike<number>, row: number, classes: number): number {
  let best = 0;
  for (let c = 1; c < classes; c++) if (v[row * classes + c]! > v[row * classes + best]!) best = c;
  return best;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

const rows: Record<string, unknown>[] = [];
const speed: Record<string, unknown>[] = [];
const tmp = mkdtempSync(join(tmpdir(), 'ptq-group-int-'));
try {
  for (const name of models) {
    const checkpoint = join(runs, name, 'checkpoint.safetensors');
    const dataset = modelOfCheckpoint(checkpoint, 'bench').dataset ?? 'mnist';
    if (!isDatasetName(dataset)) throw new Error(`${checkpoint}: unknown dataset ${dataset}`);
    const normalize = DATASET_STATS[dataset];
    const trainSet = loadDataset(dataset, 'train');
    const testSet = loadDataset(dataset, 'test');
    const n = testSet.length;
    const all = new DataLoader(testSet, { batchSize: n, normalize })[Symbol.iterator]().next().value!;
    const x = all.x;
    const labels = testSet.labels;
    const per = x.size / n;
    for (const scheme of schemes) {
      const built: { g: number; im: IntModel }[] = [];
      for (const g of groups) {
        manualSeed(0);
        const model = modelOfCheckpoint(checkpoint, 'bench').model;
        const calibLoader = new DataLoader(trainSet, { batchSize: 100, shuffle: true, seed: 0, normalize });
        calibrate(model, calibLoader, { scheme, samples: 1000, weightMethod: 'mse', keepFirstLast8bit: false, ...(g > 0 ? { weightGroupSize: g } : {}) });
        const fake = noGrad(() => model.forward(x)).data;
        const sample = new Tensor(x.data.slice(0, 256 * per), [256, ...x.shape.slice(1)]);
        const im = convert(model, { sample, minAgreement: 0 });
        const mine = new Float32Array(fake.length);
        for (let s = 0; s < n; s += 1000) mine.set(im.run(new Tensor(x.data.slice(s * per, (s + 1000) * per), [Math.min(1000, n - s), ...x.shape.slice(1)])), s * 10);
        const layers = im.nodes.filter((node): node is LayerNode => node.op === 'linear' || node.op === 'conv2d');
        const last = layers[layers.length - 1]!;
        const lsb = last.output.mode === 'dequantize' ? Float32Array.from(im.tensor(last.output.scale).data as Float32Array, (v) => v * 2 ** (last.groupShift ?? 0)) : new Float32Array(10).fill(1);
        let fakeCorrect = 0;
        let intCorrect = 0;
        let agree = 0;
        let maxLsb = 0;
        for (let i = 0; i < n; i++) {
          const a = argmax(fake, i, 10);
          const b = argmax(mine, i, 10);
          if (a === labels[i]) fakeCorrect++;
          if (b === labels[i]) intCorrect++;
          if (a === b) agree++;
          for (let c = 0; c < 10; c++) maxLsb = Math.max(maxLsb, Math.abs(fake[i * 10 + c]! - mine[i * 10 + c]!) / lsb[c]!);
        }
        const file = join(tmp, `${name}-${scheme}-${g}.lowbit`);
        const bytes = saveIntModel(file, im);
        let onnx: Record<string, unknown> = { skipped: 'not run' };
        const exported = exportOnnx(im);
        const runner = await openOnnx(exported.bytes, im.graph.inputShape);
        if ('skipped' in runner) onnx = { skipped: runner.skipped };
        else {
          const ort = await runner.run(x.data as Float32Array, n);
          await runner.release();
          let correct = 0;
          let same = 0;
          for (let i = 0; i < n; i++) {
            if (argmax(ort, i, 10) === labels[i]) correct++;
            if (argmax(ort, i, 10) === argmax(mine, i, 10)) same++;
          }
          onnx = { ortVersion: runner.version, opset: exported.opset, accuracy: correct / n, agreementWithIntModel: same / n, bytes: exported.bytes.length };
        }
        const grouped = layers.filter((l) => l.weightGroupSize !== undefined).map((l) => `${l.name}(R=${l.groupShift})`);
        const row = {
          model: name, scheme, groupSize: g || null, grouped, fakeQuantAccuracy: fakeCorrect / n, intAccuracy: intCorrect / n,
          intVsFakeArgmaxAgreement: agree / n, intVsFakeMaxLogitLsb: maxLsb, convertReport: { argmaxAgreement: im.verification?.argmaxAgreement, maxLogitLsb: im.verification?.maxLogitLsb },
          lowbitBytes: bytes, onnx, executor: im.nativeUnavailableReason() ?? 'native',
        };
        rows.push(row);
        console.log(JSON.stringify(row));
        built.push({ g, im });
      }
      // speed: interleaved rounds over the group sizes of this scheme, batch 256
      const batch = new Tensor(x.data.slice(0, 256 * per), [256, ...x.shape.slice(1)]);
      const times = built.map(() => [] as number[]);
      for (const b of built) b.im.run(batch);
      const loadBefore = loadavg()[0];
      for (let r = 0; r < rounds; r++) {
        for (const [k, b] of built.entries()) {
          const t0 = performance.now();
          b.im.run(batch);
          times[k]!.push(performance.now() - t0);
        }
      }
      const loadAfter = loadavg()[0];
      for (const [k, b] of built.entries()) {
        const s = { model: name, scheme, groupSize: b.g || null, medianMsPerBatch256: median(times[k]!), rounds, load1: [loadBefore, loadAfter], executor: b.im.nativeUnavailableReason() ?? 'native' };
        speed.push(s);
        console.log(JSON.stringify(s));
      }
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
writeFileAtomic('docs/results/ptq-group-int.json', new TextEncoder().encode(`${JSON.stringify({ date: new Date().toISOString(), command: process.argv.slice(1).join(' '), rows, speed }, null, 2)}\n`));
