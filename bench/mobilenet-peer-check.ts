/**
 * The PyTorch MobileNet peer (bench/peers/torch_mobilenet.py) against lowbit's `mobilenet`: the
 * same weights (lowbit's stateDict() as safetensors, BatchNorm statistics from a few train-mode
 * forwards) give the same eval-mode logits (max |diff| and argmax agreement printed), then fp32
 * inference images/s and training samples/s of both, interleaved per round, medians. A missing
 * python or torch is reported and skipped.
 *
 *   node --import tsx bench/mobilenet-peer-check.ts [--batch 64] [--rounds 3] [--threads 2] [--width 1]
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { noGrad } from '../src/autograd/engine.ts';
import { mobilenet } from '../src/nn/index.ts';
import { Adam } from '../src/optim/index.ts';
import { crossEntropy, manualSeed, randint, randn } from '../src/tensor/index.ts';
import { torchPeerEnv } from './lib.ts';
import { pythonPath } from './peers/torch.ts';
import { mobilenetPeerConfig, writeMobilenetWeights } from './peers/torch-mobilenet.ts';

const { values } = parseArgs({ options: { batch: { type: 'string', default: '64' }, rounds: { type: 'string', default: '3' }, threads: { type: 'string', default: '2' }, width: { type: 'string', default: '1' } } });
const batch = Number(values.batch);
const rounds = Number(values.rounds);
const threads = Number(values.threads);
const script = join(dirname(fileURLToPath(import.meta.url)), 'peers', 'torch_mobilenet.py');

manualSeed(0);
const model = mobilenet({ widthMultiplier: Number(values.width) });
const x = randn([batch, 1, 28, 28]);
model.train();
for (let i = 0; i < 3; i++) noGrad(() => model.forward(x));
model.eval();
const config = mobilenetPeerConfig(model);
const dir = mkdtempSync(join(tmpdir(), 'lowbit-mobilenet-peer-'));
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

function peer(task: string, extra: string[] = []): Record<string, unknown> {
  const r = spawnSync(pythonPath(), [script, '--task', task, '--weights', join(dir, 'w.safetensors'), '--config', JSON.stringify(config), '--batch', String(batch), '--threads', String(threads), ...extra], { env: torchPeerEnv(threads), encoding: 'utf8', cwd: dirname(script) });
  if (r.status !== 0) return { skipped: `python exited ${r.status}: ${(r.stderr || r.error?.message || '').trim().split('\n').slice(-2).join(' ')}` };
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

/** images (or samples) per second of `f` run for about `seconds`. */
function rate(f: () => void, seconds = 1): number {
  f();
  const t0 = performance.now();
  let n = 0;
  while (n < 1 || performance.now() - t0 < seconds * 1000) {
    f();
    n++;
  }
  return (n * batch) / ((performance.now() - t0) / 1000);
}

try {
  writeMobilenetWeights(join(dir, 'w.safetensors'), model);
  writeFileSync(join(dir, 'x.raw'), new Uint8Array((x.data as Float32Array).buffer));
  const check = peer('logits', ['--input', join(dir, 'x.raw'), '--out', join(dir, 'y.raw')]);
  if ('skipped' in check) {
    console.log(JSON.stringify({ skipped: check.skipped }));
  } else {
    const bytes = readFileSync(join(dir, 'y.raw'));
    const theirs = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    const ours = noGrad(() => model.forward(x)).data as Float32Array;
    let maxDiff = 0;
    let same = 0;
    const classes = theirs.length / batch;
    for (let i = 0; i < theirs.length; i++) maxDiff = Math.max(maxDiff, Math.abs(theirs[i]! - ours[i]!));
    for (let n = 0; n < batch; n++) {
      const row = (a: Float32Array): number => { let best = 0; for (let c = 1; c < classes; c++) if (a[n * classes + c]! > a[n * classes + best]!) best = c; return best; };
      if (row(theirs) === row(ours)) same++;
    }
    console.log(JSON.stringify({ check: 'logits', torch: check.torch, maxAbsDiff: maxDiff, argmaxAgreement: same / batch, config }));
    const lowbitInfer: number[] = [];
    const torchInfer: number[] = [];
    const lowbitTrain: number[] = [];
    const torchTrain: number[] = [];
    const trainModel = mobilenet({ widthMultiplier: Number(values.width) });
    const labels = randint(10, [batch]);
    const optimizer = new Adam(trainModel.parameters(), { lr: 0.002 });
    trainModel.train();
    for (let r = 0; r < rounds; r++) {
      lowbitInfer.push(rate(() => { noGrad(() => model.forward(x)); }));
      torchInfer.push(Number(peer('infer', ['--repeats', '1']).median));
      lowbitTrain.push(rate(() => {
        optimizer.zeroGrad();
        const loss = crossEntropy(trainModel.forward(x), labels);
        loss.backward();
        optimizer.step();
        loss.item();
      }, 2));
      torchTrain.push(Number(peer('train', ['--repeats', '1', '--seconds', '2']).median));
    }
    console.log(JSON.stringify({
      batch, threads, rounds,
      inferImagesPerS: { lowbit: median(lowbitInfer), torch: median(torchInfer) },
      trainSamplesPerS: { lowbit: median(lowbitTrain), torch: median(torchTrain) },
      raw: { lowbitInfer, torchInfer, lowbitTrain, torchTrain },
    }));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
