/**
 * A/B of resolvePlan's signed-input rule on a trained MobileNet: the same W4A4 LSQ QAT fine-tune
 * (1 epoch, Adam 5e-4 on every parameter, batch 64, seed 0, library `fit`) from a float run's
 * checkpoint, once with the rule (the expand convs and the head read signed 4-bit inputs) and once
 * with those layers' unsigned LSQ inputs restored by exact-name overrides (which the rule leaves).
 *
 *   node --import tsx bench/probes/mobilenet-signed-ab.ts RUN_DIR signed|unsigned [mnist|fashion-mnist]
 */
import { join } from 'node:path';
import { mobilenet } from '../../src/nn/index.ts';
import { manualSeed } from '../../src/tensor/index.ts';
import { loadCheckpoint } from '../../src/train/checkpoint.ts';
import { evaluate, fit } from '../../src/train/fit.ts';
import { DataLoader } from '../../src/data/loader.ts';
import { DATASET_STATS, isDatasetName, loadDataset } from '../../src/data/index.ts';
import { Adam } from '../../src/optim/index.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { qatFromCliOptions } from '../../src/quant/qat/cli.ts';

const [run, variant, dataset = 'mnist'] = process.argv.slice(2);
if (!run || (variant !== 'signed' && variant !== 'unsigned') || !isDatasetName(dataset)) throw new Error('usage: mobilenet-signed-ab.ts RUN_DIR signed|unsigned [mnist|fashion-mnist]');
manualSeed(0);
const model = mobilenet();
model.loadStateDict(loadCheckpoint(join(run, 'checkpoint.safetensors')).model);
const plan = qatFromCliOptions({ quant: 'w4a4' })!;
const unsigned = { ...plan, overrides: model.signedInputLayers().map((name) => ({ match: name, config: { activation: plan.default.activation } })) };
prepareQat(model, variant === 'signed' ? plan : unsigned);
const normalize = DATASET_STATS[dataset];
const train = new DataLoader(loadDataset(dataset, 'train'), { batchSize: 64, shuffle: true, seed: 0, normalize });
const test = new DataLoader(loadDataset(dataset, 'test'), { batchSize: 256, normalize });
const t0 = performance.now();
fit(model, { trainLoader: train, testLoader: test, optimizer: new Adam(model.parameters(), { lr: 5e-4 }), epochs: 1, seed: 0, progress: false });
console.log(JSON.stringify({ variant, dataset, testAccuracy: evaluate(model, test).accuracy, seconds: (performance.now() - t0) / 1000 }));
