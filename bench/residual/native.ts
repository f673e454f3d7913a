/**
 * ResNet-8 IntModel speed: the TypeScript executor against the native executor (a DAG plan with
 * value slots and add ops), batches of 64, and the float fake-quant forward for reference. Weights
 * are untrained (speed does not depend on them): the model is prepared, its quantizers observe a few
 * random batches, then it is converted. Also checks that both executors give the same logits.
 *
 *   nice -n 10 node --import tsx bench/residual/native.ts [--batch 64] [--batches 4] [--seed 0]
 *
 * Writes bench/results/residual-native.json.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { noGrad } from '../../src/autograd/engine.ts';
import { resnet8 } from '../../src/nn/index.ts';
import { manualSeed, randn } from '../../src/tensor/index.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { qconfigFor } from '../../src/quant/config/qconfig.ts';
import { convert } from '../../src/runtime/index.ts';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const batch = arg('batch', 64);
const batches = arg('batches', 4);
const seed = arg('seed', 0);
const log = (s: string): void => console.log(`[residual-native] ${s}`);

/** Images per second of `run` over `batches` calls on `batch` images (after one warm-up call). */
function imagesPerSecond(run: () => void): number {
  run();
  const t0 = performance.now();
  for (let b = 0; b < batches; b++) run();
  return (batch * batches) / ((performance.now() - t0) / 1000);
}

const rows: Record<string, unknown>[] = [];
for (const scheme of ['w8a8', 'w4a4'] as const) {
  manualSeed(seed);
  const model = resnet8();
  prepareQat(model, { default: qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq') });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => model.forward(randn([32, 1, 28, 28])));
  model.eval();
  const x = randn([batch, 1, 28, 28]);
  const im = convert(model, { sample: randn([32, 1, 28, 28]) });
  const data = x.data as Float32Array;
  log(`${scheme}: graph version ${im.graph.version}, ${im.nodes.length} nodes; native: ${im.nativeUnavailableReason() ?? 'yes'}`);
  const fakeQuant = imagesPerSecond(() => noGrad(() => model.forward(x)));
  im.useNative = false;
  const tsLogits = im.run(data, batch);
  const ts = imagesPerSecond(() => im.run(data, batch));
  im.useNative = true;
  const nativeLogits = im.run(data, batch);
  const native = imagesPerSecond(() => im.run(data, batch));
  const identical = tsLogits.length === nativeLogits.length && tsLogits.every((v, i) => Object.is(v, nativeLogits[i]));
  log(`${scheme}: fake-quant float forward ${fakeQuant.toFixed(0)} images/s, TS executor ${ts.toFixed(0)}, native executor ${native.toFixed(0)} (x${(native / ts).toFixed(1)}); logits identical: ${identical}`);
  rows.push({ scheme, batch, batches, fakeQuantImagesPerSecond: fakeQuant, tsImagesPerSecond: ts, nativeImagesPerSecond: native, identicalLogits: identical });
}

mkdirSync('bench/results', { recursive: true });
const out = 'bench/results/residual-native.json';
writeFileSync(`${out}.tmp`, JSON.stringify({ bench: 'residual-native', seed, rows }, null, 2));
renameSync(`${out}.tmp`, out);
log(`wrote ${out}`);
