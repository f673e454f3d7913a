/**
 * Per-group vs per-channel weight scales in post-training quantization (docs/ptq.md, "Per-group
 * weights"): every layer quantized (keepFirstLast8bit false, so the first and last layers are at
 * the low width too), 'mse' weight observer, min-max activations at 8 bits, 1000 calibration
 * samples, the full test set. Linear weights get one scale per row and per G inputs (`calibrate`'s
 * weightGroupSize); convolutions stay per output channel. Bits per weight count the float32 scales.
 *
 *   node --import tsx bench/ptq/group.ts --runs /tmp/ptqg [--models mlp,lenet5] [--schemes w4a8,w3a8,w2a8] [--groups 0,64,32,16,8]
 *
 * `--runs DIR` holds fp32 runs DIR/<model> (lowbit train --quant fp32 --model <model> --out DIR/<model>);
 * missing ones are trained with the CLI's defaults (MNIST) first; a run's own dataset is used
 * (e.g. DIR/cnn from `lowbit train --quant fp32 --model cnn --dataset fashion-mnist --epochs 3 --out DIR/cnn`). Writes docs/results/ptq-group.json.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DATASET_STATS, DataLoader, isDatasetName, loadDataset } from '../../src/data/index.ts';
import { evaluate } from '../../src/train/index.ts';
import { calibrate } from '../../src/quant/ptq/index.ts';
import { quantizedLayers } from '../../src/quant/qat/prepare.ts';
import { modelOfCheckpoint } from '../../src/cli/checkpoint-model.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { manualSeed } from '../../src/tensor/index.ts';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const runs = arg('runs', '/tmp/ptqg');
const models = arg('models', 'mlp,lenet5').split(',');
const schemes = arg('schemes', 'w4a8,w3a8,w2a8').split(',');
const groups = arg('groups', '0,64,32,16,8').split(',').map(Number);

const rows: Record<string, unknown>[] = [];
for (const name of models) {
  const dir = join(runs, name);
  if (!existsSync(join(dir, 'checkpoint.safetensors'))) {
    execFileSync('npx', ['tsx', 'src/cli/main.ts', 'train', '--quant', 'fp32', '--model', name, '--out', dir, '--no-progress'], { stdio: 'inherit' });
  }
  const checkpoint = join(dir, 'checkpoint.safetensors');
  const dataset = modelOfCheckpoint(checkpoint, 'bench').dataset ?? 'mnist';
  if (!isDatasetName(dataset)) throw new Error(`${checkpoint}: unknown dataset ${dataset}`);
  const normalize = DATASET_STATS[dataset];
  const trainSet = loadDataset(dataset, 'train');
  const testLoader = new DataLoader(loadDataset(dataset, 'test'), { batchSize: 256, normalize });
  const fp32 = evaluate(modelOfCheckpoint(checkpoint, 'bench').model, testLoader).accuracy;
  console.log(`${name} (${dataset}): fp32 ${(fp32 * 100).toFixed(2)} %`);
  for (const scheme of schemes) {
    for (const g of groups) {
      manualSeed(0);
      const model = modelOfCheckpoint(checkpoint, 'bench').model;
      const start = performance.now();
      const notes: string[] = [];
      // A fresh loader per row: every row calibrates on the same 1000 samples (a loader reshuffles on each pass).
      const calibLoader = new DataLoader(trainSet, { batchSize: 100, shuffle: true, seed: 0, normalize });
      calibrate(model, calibLoader, {
        scheme, samples: 1000, weightMethod: 'mse', keepFirstLast8bit: false,
        ...(g > 0 ? { weightGroupSize: g } : {}), progress: (m) => notes.push(m),
      });
      const seconds = (performance.now() - start) / 1000;
      const accuracy = evaluate(model, testLoader).accuracy;
      // Bits per weight over every quantized weight, with one float32 scale per parameter set.
      let bits = 0;
      let weights = 0;
      for (const { layer } of quantizedLayers(model)) {
        const q = layer.weightQuantizer!;
        const exported = q.exportQuant();
        if (exported.type !== 'affine') continue;
        bits += layer.weight.size * exported.qparams.bits + 32 * exported.qparams.scale.length;
        weights += layer.weight.size;
      }
      const grouped = quantizedLayers(model).filter(({ layer }) => layer.weightQuantizer?.exportQuant().type === 'affine' && (layer.weightQuantizer.exportQuant() as { qparams: { groupSize: number | null } }).qparams.groupSize !== null).map(({ name: n }) => n);
      const row = { model: name, dataset, scheme, grouped, groupSize: g || null, fp32, accuracy, bitsPerWeight: bits / weights, seconds, notes: notes.filter((n) => !n.startsWith('calibrated')) };
      rows.push(row);
      console.log(`${name} ${scheme} ${g ? `g${g}` : 'per-channel'}: ${(accuracy * 100).toFixed(2)} % (${((accuracy - fp32) * 100).toFixed(2)} pt), ${(bits / weights).toFixed(3)} bits/weight, ${seconds.toFixed(1)} s; grouped: ${grouped.join(', ') || 'none'}`);
    }
  }
}
writeFileAtomic('docs/results/ptq-group.json', new TextEncoder().encode(`${JSON.stringify({ date: new Date().toISOString(), command: process.argv.slice(1).join(' '), rows }, null, 2)}\n`));
