/**
 * IntModel speed without the native addon (the browser path): the old TypeScript executor
 * (`tsExecutor = 'reference'`, reference kernels), the new one (ts-kernels), the native executor,
 * and the float fake-quant forward on the reference backend (what a browser user compares
 * against) and on the native backend, for LeNet-5 W8A8 and ResNet-8 W8A8 / W4A4 at batch 64.
 * Untrained weights (speed does not depend on them), random inputs.
 *
 *   nice -n 10 node --import tsx bench/runtime-ts/executor.ts [--batch 64] [--rounds 5] [--seed 0]
 *       [--models lenet5-w8a8,resnet8-w8a8,resnet8-w4a4] [--out bench/results/runtime-ts.json]
 *
 * A model spec `resnet8-w4a4-full` has its int4 weights redrawn in [−7, 7] (see buildBenchModel).
 *
 * The variants of one model run interleaved, one batch each per round, after one warm-up round;
 * per variant the best (min) and median wall and process-CPU time of a batch are kept, reported
 * as images/s (the machine is shared, so the best round is the least disturbed one; CPU time
 * excludes waiting for a core but the native executor's CPU time adds its threads). The
 * logits of the old and new TypeScript executors and of the native executor are compared bit for
 * bit. Writes bench/results/runtime-ts.json.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { noGrad } from '../../src/autograd/engine.ts';
import { getBackend, setBackend } from '../../src/backend/index.ts';
import { randn, Tensor } from '../../src/tensor/index.ts';
import { intKernelsBackend, setIntKernelsReference } from '../../src/runtime/kernels/index.ts';
import { flagOr, numberFlag } from '../flags.ts';
import { buildBenchModel } from './models.ts';

const batch = numberFlag('batch', 64, { integer: true, min: 1 });
const rounds = numberFlag('rounds', 5, { integer: true, min: 1 });
const seed = numberFlag('seed', 0, { integer: true });
const models = flagOr('models', 'lenet5-w8a8,resnet8-w8a8,resnet8-w4a4').split(',');
const outFile = flagOr('out', 'bench/results/runtime-ts.json');
const log = (s: string): void => console.log(`[runtime-ts] ${s}`);

interface Variant {
  readonly name: string;
  readonly run: () => Float32Array;
  wall: number[];
  cpu: number[];
  out?: Float32Array;
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
const nativeBackend = getBackend() === 'native';
log(`kernels ${JSON.stringify(intKernelsBackend())}, default backend ${getBackend()}, batch ${batch}, ${rounds} rounds`);
const rows: Record<string, unknown>[] = [];
for (const spec of models) {
  const [kind, scheme, variant] = spec.split('-') as ['lenet5' | 'resnet8', 'w8a8' | 'w4a4', string | undefined];
  const { label, model, im } = buildBenchModel(kind, scheme, seed, variant === 'full');
  const x = randn([batch, 1, 28, 28]);
  const data = x.data as Float32Array;
  const ts = (mode: 'fast' | 'reference') => (): Float32Array => {
    setIntKernelsReference(true);
    im.useNative = false;
    im.tsExecutor = mode;
    try {
      return im.run(data, batch);
    } finally {
      setIntKernelsReference(false);
      im.useNative = true;
      im.tsExecutor = 'fast';
    }
  };
  const float = (backend: 'reference' | 'native') => (): Float32Array => {
    const before = getBackend();
    setBackend(backend);
    try {
      return noGrad(() => model.forward(new Tensor(data, x.shape)).data as Float32Array);
    } finally {
      setBackend(before);
    }
  };
  const variants: Variant[] = [
    { name: 'ts-old', run: ts('reference'), wall: [], cpu: [] },
    { name: 'ts-new', run: ts('fast'), wall: [], cpu: [] },
    { name: 'float-fakequant-reference', run: float('reference'), wall: [], cpu: [] },
  ];
  if (im.nativeUnavailableReason() === null) variants.push({ name: 'native', run: () => im.run(data, batch), wall: [], cpu: [] });
  if (nativeBackend) variants.push({ name: 'float-fakequant-native', run: float('native'), wall: [], cpu: [] });
  for (let r = 0; r <= rounds; r++) {
    for (const v of variants) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const out = v.run();
      const wall = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(c0);
      if (r === 0) v.out = out;
      else {
        v.wall.push(wall);
        v.cpu.push((c.user + c.system) / 1e6);
      }
    }
    if (r > 0) log(`${label} round ${r}/${rounds}: ${variants.map((v) => `${v.name} ${(batch / v.wall.at(-1)!).toFixed(0)}`).join(', ')} images/s (wall)`);
  }
  const byName = new Map(variants.map((v) => [v.name, v]));
  const same = (a: string, b: string): boolean | null => {
    const va = byName.get(a)?.out;
    const vb = byName.get(b)?.out;
    return va && vb ? va.length === vb.length && va.every((y, i) => Object.is(y, vb[i])) : null;
  };
  const result: Record<string, unknown> = { model: label, batch, macsPerSample: im.size.macs };
  for (const v of variants) {
    result[v.name] = {
      imagesPerSecondBestWall: batch / Math.min(...v.wall),
      imagesPerSecondMedianWall: batch / median(v.wall),
      imagesPerSecondBestCpu: batch / Math.min(...v.cpu),
    };
  }
  const best = (name: string): number => batch / Math.min(...byName.get(name)!.wall);
  result.newOverOld = best('ts-new') / best('ts-old');
  result.newOverFloatReference = best('ts-new') / best('float-fakequant-reference');
  result.identicalNewOld = same('ts-new', 'ts-old');
  result.identicalNewNative = same('ts-new', 'native');
  log(`${label}: best wall images/s ${variants.map((v) => `${v.name} ${best(v.name).toFixed(0)}`).join(', ')}; new/old x${(result.newOverOld as number).toFixed(2)}, new/float-reference x${(result.newOverFloatReference as number).toFixed(2)}; logits new==old ${result.identicalNewOld}, new==native ${result.identicalNewNative}`);
  rows.push(result);
}

mkdirSync('bench/results', { recursive: true });
const out = outFile;
writeFileSync(`${out}.tmp`, JSON.stringify({ bench: 'runtime-ts', seed, batch, rounds, kernels: intKernelsBackend(), rows }, null, 2));
renameSync(`${out}.tmp`, out);
log(`wrote ${out}`);
