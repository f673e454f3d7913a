/**
 * Time per training step of LeNet-5 W4A4 (lowbit train --quant w4a4's plan) on MNIST batches of 64
 * with float activation gradients and with k-bit ones (per tensor and per sample), measured in the
 * same process, interleaved in rounds so that the machine's load hits every setting alike. Reports
 * the median ms per step of each setting and its ratio to float.
 *
 *   nice -n 10 node --import tsx bench/grad-quant/overhead.ts [--steps 20] [--rounds 5]
 *
 * Writes bench/results/grad-quant-overhead.json.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import '../../src/backend/index.ts';
import { getBackend } from '../../src/backend/index.ts';
import { DATASET_STATS, DataLoader, loadDataset, take } from '../../src/data/index.ts';
import { createModel } from '../../src/nn/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { crossEntropy, manualSeed } from '../../src/tensor/index.ts';
import { makeDirs, writeFileAtomic } from '../../src/format/index.ts';
import { prepareQat, qatFromCliOptions, qatParamGroups, quantizeActivationGradients, type ActivationGradientOptions } from '../../src/quant/qat/index.ts';
import type { Tensor } from '../../src/tensor/index.ts';

const { values: args } = parseArgs({ options: { steps: { type: 'string', default: '20' }, rounds: { type: 'string', default: '5' } } });
const steps = Number(args.steps);
const rounds = Number(args.rounds);

manualSeed(0);
const model = createModel('lenet5', { numClasses: 10 });
prepareQat(model, qatFromCliOptions({ quant: 'w4a4' })!);
const optimizer = new Adam(qatParamGroups(model, { lr: 2e-3, quantLrScale: 0.1 }), { lr: 2e-3 });
const loader = new DataLoader(take(loadDataset('mnist', 'train'), 64 * steps), { batchSize: 64, shuffle: false, normalize: DATASET_STATS.mnist });
const batches = [...loader];

const settings: { readonly name: string; readonly options: ActivationGradientOptions | null }[] = [
  { name: 'float', options: null },
  { name: '8-bit, per tensor', options: { bits: 8 } },
  { name: '4-bit, per tensor', options: { bits: 4 } },
  { name: '4-bit, per sample', options: { bits: 4, granularity: 'sample' } },
];
const times = new Map<string, number[]>(settings.map((s) => [s.name, []]));

function step(x: Tensor, y: Tensor): void {
  optimizer.zeroGrad();
  const loss = crossEntropy(model.forward(x), y);
  loss.backward();
  optimizer.step();
}

// Warm-up (JIT, first-batch observer initialisation), not timed.
for (const { options } of settings) {
  quantizeActivationGradients(model, options);
  for (const { x, y } of batches.slice(0, 3)) step(x, y);
}
for (let round = 0; round < rounds; round++) {
  for (const { name, options } of settings) {
    quantizeActivationGradients(model, options);
    const start = performance.now();
    for (const { x, y } of batches) step(x, y);
    times.get(name)!.push((performance.now() - start) / batches.length);
  }
  process.stdout.write(`round ${round + 1}/${rounds}: ${settings.map((s) => `${s.name} ${times.get(s.name)!.at(-1)!.toFixed(1)} ms`).join(', ')}\n`);
}
const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const floatMs = median(times.get('float')!);
const rows = settings.map(({ name }) => ({ setting: name, msPerStep: median(times.get(name)!), ratioToFloat: median(times.get(name)!) / floatMs, rounds: times.get(name)! }));
for (const row of rows) process.stdout.write(`${row.setting.padEnd(18)} ${row.msPerStep.toFixed(1)} ms/step  ×${row.ratioToFloat.toFixed(2)}\n`);
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const outPath = join(root, 'bench', 'results', 'grad-quant-overhead.json');
makeDirs(dirname(outPath));
writeFileAtomic(outPath, new TextEncoder().encode(`${JSON.stringify({ model: 'lenet5 w4a4', batchSize: 64, steps, rounds, backend: getBackend(), rows, command: `nice -n 10 node --import tsx bench/grad-quant/overhead.ts --steps ${steps} --rounds ${rounds}` }, null, 2)}\n`));
