/**
 * Where one MobileNet training step (forward, cross-entropy, backward, Adam) goes on the native
 * backend: per-primitive kernel time from `profileOps` (summed over `--steps` steps after warm-up),
 * the step's wall and CPU time, and the time outside kernels (autograd bookkeeping, allocation, GC).
 *
 *   node --import tsx bench/mobilenet-step-profile.ts [--batch 64] [--steps 20] [--conv-shapes] [--eval] [--quant w4a4]
 *
 * With --eval, the step is an eval-mode forward under noGrad (running BatchNorm statistics), the
 * fp32 inference of the int-inference section. With --quant P, the model is first prepared for QAT
 * with the CLI's plan P (`lowbit train --model mobilenet --quant P`: BatchNorm folded into the
 * fake-quantized convs); the step is the same Adam step (one learning rate for every parameter).
 *
 * Prints a table sorted by time and one JSON line. With --conv-shapes, also the time inside the
 * addon's conv2d / conv2dBackwardInput / conv2dBackwardWeight / conv2dFused per geometry (N, C, H, W, O, KH, KW,
 * OH, OW, stride, padding, dilation, groups) and inside its BatchNorm calls per (N, C, S, ...), per step.
 */
import { parseArgs } from 'node:util';
import { profileOps, setBackend } from '../src/backend/index.ts';
import { loadNative, nativeAddon } from '../src/backend/native/index.ts';
import { mobilenet } from '../src/nn/index.ts';
import { noGrad } from '../src/autograd/engine.ts';
import { manualSeed } from '../src/tensor/index.ts';
import { prepareQat, qatFromCliOptions, QUANT_CHOICES, type QuantChoice } from '../src/quant/qat/index.ts';
import { adamStepper, batchPool } from './workloads.ts';

const { values } = parseArgs({ options: { batch: { type: 'string', default: '64' }, steps: { type: 'string', default: '20' }, 'conv-shapes': { type: 'boolean', default: false }, eval: { type: 'boolean', default: false }, quant: { type: 'string' } } });
const batch = Number(values.batch);
const steps = Number(values.steps);
setBackend('native');
manualSeed(0);
const model = mobilenet();
if (values.quant) {
  const quant = values.quant as QuantChoice;
  const plan = QUANT_CHOICES.includes(quant) ? qatFromCliOptions({ quant }) : null;
  if (!plan) throw new Error(`--quant ${values.quant}: not one of the CLI's QAT plans (${QUANT_CHOICES.filter((q) => q !== 'fp32').join(', ')})`);
  prepareQat(model, plan);
}
const pool = batchPool(batch, 8).batches;
let step = adamStepper(model, pool, 2e-3);
if (values.eval) {
  step(); // BatchNorm running statistics from one training batch
  model.eval();
  let k = 0;
  step = () => noGrad(() => { model.forward(pool[k++ % pool.length]!.x); });
}
for (let w = 0; w < 5; w++) step();
// Plain timing first (no profiler overhead), then the profiled steps.
const cpu0 = process.cpuUsage();
const t0 = performance.now();
for (let s = 0; s < steps; s++) step();
const wallMs = (performance.now() - t0) / steps;
const cpu = process.cpuUsage(cpu0);
const cpuMs = (cpu.user + cpu.system) / 1000 / steps;
const t1 = performance.now();
const prof = profileOps(() => { for (let s = 0; s < steps; s++) step(); });
const profWallMs = (performance.now() - t1) / steps;
const rows = [...prof].map(([op, e]) => ({ op, calls: e.calls / steps, ms: e.ms / steps })).sort((a, b) => b.ms - a.ms);
const kernelMs = rows.reduce((s, r) => s + r.ms, 0);
for (const r of rows) console.log(`${r.op.padEnd(36)} ${r.calls.toFixed(0).padStart(5)} calls ${r.ms.toFixed(2).padStart(8)} ms ${((100 * r.ms) / profWallMs).toFixed(1).padStart(5)} %`);
console.log(`kernels ${kernelMs.toFixed(2)} ms of ${profWallMs.toFixed(2)} ms profiled step; outside kernels ${(profWallMs - kernelMs).toFixed(2)} ms`);
console.log(JSON.stringify({ batch, steps, wallMsPerStep: wallMs, cpuMsPerStep: cpuMs, samplesPerS: (batch * 1000) / wallMs, profiledWallMs: profWallMs, kernelMs, rows }));

if (values['conv-shapes']) {
  if (!loadNative().ok) throw new Error('--conv-shapes needs the native addon');
  const addon = nativeAddon() as unknown as Record<string, (...args: unknown[]) => void>;
  const times = new Map<string, number>();
  for (const op of ['conv2d', 'conv2dBackwardInput', 'conv2dBackwardWeight', 'conv2dFused', 'batchNorm', 'batchNormBackward', 'batchNormStats']) {
    const f = addon[op]!.bind(addon);
    addon[op] = (...args: unknown[]) => {
      const t = performance.now();
      f(...args);
      // The call's geometry: its Int32Array (convs) or its number arguments (BatchNorm's n, c, s, ...).
      const geom = args.flatMap((a) => (a instanceof Int32Array ? [Array.from(a).join(',')] : typeof a === 'number' ? [String(a)] : []));
      const key = `${op} ${geom.join(',')}`;
      times.set(key, (times.get(key) ?? 0) + performance.now() - t);
    };
  }
  for (let s = 0; s < steps; s++) step();
  const shapes = [...times].map(([k, ms]) => ({ call: k, ms: ms / steps })).sort((a, b) => b.ms - a.ms);
  for (const r of shapes) console.log(`${r.ms.toFixed(3).padStart(7)} ms  ${r.call}`);
  console.log(JSON.stringify({ convAddonMsPerStep: shapes.reduce((t, r) => t + r.ms, 0), shapes }));
}
