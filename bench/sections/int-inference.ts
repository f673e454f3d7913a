/**
 * Integer-only inference (src/runtime IntModel, native executor native/intmodel.cc) at batch 256:
 *   - LeNet-5 W8A8 vs the fastest peer path (onnxruntime-node fp32 on the PyTorch export,
 *     onnxruntime-node int8 on the QDQ export of the same IntModel, PyTorch fp32, PyTorch int8 =
 *     torch.ao eager static quantization) and vs lowbit's own fp32 forward;
 *   - MobileNet (nn.mobilenet, depthwise-separable, residual adds) W8A8 vs onnxruntime-node fp32 on
 *     lowbit's float export, onnxruntime-node int8 on the QDQ export of the same IntModel, lowbit fp32
 *     and PyTorch fp32 (bench/peers/torch_mobilenet.py, the same weights);
 *   - a binary MLP 784-1024-1024-10 (first Linear int8 on the int8 image, hidden Linear ±1 weights on
 *     ±1 inputs = XNOR-popcount with packed sign activations, last Linear int8 on ±1 inputs) vs
 *     lowbit's fp32 MLP of the same widths (with BatchNorm and ReLU).
 * The in-process contenders are measured interleaved (each repeat runs every contender once, in
 * turn) so that a busy machine slows them alike; wall-time images/s is the figure, images per
 * CPU-second of the process (all threads) is in the details. PyTorch runs in a child process after.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../../src/autograd/index.ts';
import * as nn from '../../src/nn/index.ts';
import { manualSeed } from '../../src/tensor/index.ts';
import { qconfigFor } from '../../src/quant/config/qconfig.ts';
import { convert, type IntModel } from '../../src/runtime/index.ts';
import { compileNativePlan } from '../../src/runtime/native-plan.ts';
import { intKernelsBackend } from '../../src/runtime/kernels/index.ts';
import { saveOnnx } from '../../src/onnx/index.ts';
import { loadAddon } from '../../src/backend/native/load.ts';
import { median, measured, skippedMeasurement, tick, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { ortRunner } from '../peers/ort.ts';
import { repeatsOf, runTorch } from '../peers/torch.ts';
import { runTorchMobilenet, writeMobilenetWeights } from '../peers/torch-mobilenet.ts';
import { binaryMlpIntModel, preparedQat } from '../binary-mlp.ts';
import { batchPool, benchBackends, nativeMissingReason, withBackend } from '../workloads.ts';

const BATCH = 256;
const ACCEPT_PEER = 1.5;
const ACCEPT_FP32 = 2;
const ACCEPT_BINARY = 8;

interface Contender {
  readonly id: string;
  readonly group: string;
  readonly impl: string;
  readonly peers?: string[];
  readonly run: () => void | Promise<void>;
  readonly details?: Record<string, unknown>;
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Interleaved repeats: every repeat runs each contender for ~targetSeconds, in turn. */
async function interleaved(cs: readonly Contender[], repeats: number, targetSeconds: number): Promise<Measurement[]> {
  const steps: number[] = [];
  for (const c of cs) {
    for (let i = 0; i < 3; i++) await c.run();
    const t0 = performance.now();
    let n = 0;
    while (n < 3 || performance.now() - t0 < 150) {
      await c.run();
      n++;
    }
    steps.push(Math.max(2, Math.round((targetSeconds * 1000 * n) / (performance.now() - t0))));
  }
  const wall: number[][] = cs.map(() => []);
  const cpu: number[][] = cs.map(() => []);
  for (let r = 0; r < repeats; r++) {
    for (let i = 0; i < cs.length; i++) {
      await tick();
      const c0 = cpuSeconds();
      const w0 = performance.now();
      for (let s = 0; s < steps[i]!; s++) await cs[i]!.run();
      const w = (performance.now() - w0) / 1000;
      const c = cpuSeconds() - c0;
      wall[i]!.push((steps[i]! * BATCH) / w);
      cpu[i]!.push((steps[i]! * BATCH) / c);
    }
  }
  return cs.map((c, i) => measured(
    { id: c.id, group: c.group, impl: c.impl, unit: 'images/s', higherIsBetter: true, ...(c.peers ? { peers: c.peers } : {}), details: { callsPerRepeat: steps[i], imagesPerCpuSecond: median(cpu[i]!), cpuRepeats: cpu[i], ...c.details } },
    wall[i]!,
  ));
}

async function run(ctx: SectionContext): Promise<SectionOutput> {
  const addon = loadAddon();
  if (!benchBackends().includes('native') || !addon?.intPlanRun) {
    return { status: 'skipped', reason: `native IntModel executor unavailable (${nativeMissingReason()})`, measurements: [] };
  }
  const pool = batchPool(BATCH, 2, 'test');
  const input = pool.batches[0]!.x;
  const calib = pool.batches[1]!.x;
  const data = input.data as Float32Array;
  const ms: Measurement[] = [];
  const notes: string[] = [];
  const lenetGroup = `LeNet-5 inference, batch ${BATCH}`;
  const mlpGroup = `MLP 784-1024-1024-10 inference, batch ${BATCH}`;

  return withBackend('native', async () => {
    manualSeed(0);
    const lenetQ = preparedQat(nn.lenet5(), { default: qconfigFor('w8a8', 'ste') }, calib);
    const lenetInt: IntModel = convert(lenetQ, { inputShape: [1, 28, 28] });
    const bnnInt: IntModel = binaryMlpIntModel(calib);
    manualSeed(0);
    const mobileQ = preparedQat(nn.mobilenet(), { default: qconfigFor('w8a8', 'ste') }, calib);
    const mobileInt: IntModel = convert(mobileQ, { inputShape: [1, 28, 28] });
    for (const [name, m] of [['LeNet-5', lenetInt], ['binary MLP', bnnInt], ['MobileNet', mobileInt]] as const) {
      const why = m.nativeUnavailableReason();
      if (why) throw new Error(`${name} IntModel does not run natively: ${why}`);
      ctx.log(`${name}: ${m.layers().filter((l) => l.bits !== '-').map((l) => `${l.name} ${l.bits}`).join(', ')}`);
      const spec = compileNativePlan(m);
      if (typeof spec !== 'string' && addon.intPlanKernels) {
        const kernels = addon.intPlanKernels(addon.intPlanCreate!(spec.ops)).join(', ');
        ctx.log(`${name} native kernels: ${kernels}`);
        notes.push(`${name} native kernels (AMX: ${intKernelsBackend().amx}): ${kernels}.`);
      }
    }
    manualSeed(0);
    const lenetFp = nn.lenet5();
    lenetFp.eval();
    manualSeed(0);
    const mlpFp = nn.mlp({ hidden: [1024, 1024], batchNorm: true });
    mlpFp.eval();
    manualSeed(0);
    const mobileFp = nn.mobilenet();
    mobileFp.train();
    noGrad(() => mobileFp.forward(calib)); // BatchNorm statistics
    mobileFp.eval();
    const mobileGroup = `MobileNet (${mobileFp.numParameters().toLocaleString('en-US')} parameters) inference, batch ${BATCH}`;

    // ONNX export of the PyTorch peer's LeNet-5 for onnxruntime
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-bench-int-'));
    const contenders: Contender[] = [];
    let release: (() => Promise<void>) | null = null;
    const peerIds = ['lenet5-int/ort-fp32', 'lenet5-int/ort-int8', 'lenet5-int/torch-fp32', 'lenet5-int/torch-int8', 'lenet5-int/lowbit-fp32'];
    const releases: (() => Promise<void>)[] = [];
    try {
      contenders.push({
        id: 'lenet5-int/lowbit-int8', group: lenetGroup, impl: 'lowbit IntModel W8A8 (native executor)', peers: peerIds,
        run: () => void lenetInt.run(data, BATCH), details: { layers: lenetInt.layers().map((l) => `${l.name} ${l.bits}`) },
      });
      contenders.push({ id: 'lenet5-int/lowbit-fp32', group: lenetGroup, impl: 'lowbit fp32 (native backend)', run: () => void noGrad(() => lenetFp.forward(input)) });
      const ex = await runTorch({ task: 'export', model: 'lenet5', out: join(dir, 'lenet5.onnx'), threads: ctx.threads });
      if (ex.ok) {
        const o = await ortRunner({ modelPath: join(dir, 'lenet5.onnx'), batch: BATCH, threads: ctx.threads, input: data });
        if (o.ok) {
          release = o.release;
          contenders.push({ id: 'lenet5-int/ort-fp32', group: lenetGroup, impl: `onnxruntime-node ${o.version} fp32`, run: o.run });
        } else ms.push(skippedMeasurement({ id: 'lenet5-int/ort-fp32', group: lenetGroup, impl: 'onnxruntime-node fp32', unit: 'images/s', higherIsBetter: true }, o.reason));
      } else ms.push(skippedMeasurement({ id: 'lenet5-int/ort-fp32', group: lenetGroup, impl: 'onnxruntime-node fp32', unit: 'images/s', higherIsBetter: true }, `export failed: ${ex.reason}`));
      // onnxruntime int8: the same IntModel exported as a QDQ graph (src/onnx), fused by onnxruntime into QLinearConv / QLinearMatMul
      const qdqPath = join(dir, 'lenet5-w8a8-qdq.onnx');
      let qdqReason = '';
      try {
        saveOnnx(qdqPath, lenetInt);
      } catch (e) {
        qdqReason = `QDQ export failed: ${e instanceof Error ? e.message : String(e)}`;
      }
      const q = qdqReason ? { ok: false as const, reason: qdqReason } : await ortRunner({ modelPath: qdqPath, batch: BATCH, threads: ctx.threads, input: data });
      if (q.ok) {
        releases.push(q.release);
        contenders.push({ id: 'lenet5-int/ort-int8', group: lenetGroup, impl: `onnxruntime-node ${q.version} int8 (QDQ export of the same IntModel)`, run: q.run });
      } else ms.push(skippedMeasurement({ id: 'lenet5-int/ort-int8', group: lenetGroup, impl: 'onnxruntime-node int8 (QDQ)', unit: 'images/s', higherIsBetter: true }, q.reason));
      contenders.push({
        id: 'mlp-int/lowbit-binary', group: mlpGroup, impl: 'lowbit IntModel binary W1A1 (native executor)', peers: ['mlp-int/lowbit-fp32'],
        run: () => void bnnInt.run(data, BATCH), details: { layers: bnnInt.layers().map((l) => `${l.name} ${l.bits}`) },
      });
      contenders.push({ id: 'mlp-int/lowbit-fp32', group: mlpGroup, impl: 'lowbit fp32 MLP with BatchNorm (native backend)', run: () => void noGrad(() => mlpFp.forward(input)) });
      contenders.push({
        id: 'mobilenet-int/lowbit-int8', group: mobileGroup, impl: 'lowbit IntModel W8A8 (native executor)',
        peers: ['mobilenet-int/ort-fp32', 'mobilenet-int/ort-int8', 'mobilenet-int/torch-fp32', 'mobilenet-int/lowbit-fp32'],
        run: () => void mobileInt.run(data, BATCH), details: { layers: mobileInt.layers().filter((l) => l.bits !== '-').length },
      });
      contenders.push({ id: 'mobilenet-int/lowbit-fp32', group: mobileGroup, impl: 'lowbit fp32 (native backend)', run: () => void noGrad(() => mobileFp.forward(input)) });
      for (const [kind, model] of [['fp32', mobileFp], ['int8', mobileInt]] as const) {
        const id = `mobilenet-int/ort-${kind}`;
        const path = join(dir, `mobilenet-${kind}.onnx`);
        let reason = '';
        try {
          saveOnnx(path, model, kind === 'fp32' ? { inputShape: [1, 28, 28] } : {});
        } catch (e) {
          reason = `export failed: ${e instanceof Error ? e.message : String(e)}`;
        }
        const o = reason ? { ok: false as const, reason } : await ortRunner({ modelPath: path, batch: BATCH, threads: ctx.threads, input: data });
        if (o.ok) {
          releases.push(o.release);
          contenders.push({ id, group: mobileGroup, impl: `onnxruntime-node ${o.version} ${kind === 'fp32' ? 'fp32 (lowbit\'s float export)' : 'int8 (QDQ export of the same IntModel)'}`, run: o.run });
        } else ms.push(skippedMeasurement({ id, group: mobileGroup, impl: `onnxruntime-node ${kind}`, unit: 'images/s', higherIsBetter: true }, o.reason));
      }
      // The PyTorch peer's weights: the fp32 model's state dict, written before `dir` is removed.
      writeMobilenetWeights(join(dir, 'mobilenet.safetensors'), mobileFp);
      ctx.log(`interleaved: ${contenders.map((c) => c.id).join(', ')}`);
      ms.push(...await interleaved(contenders, ctx.repeats, ctx.targetSeconds));
      ms.push(await torchMobilenet(ctx, join(dir, 'mobilenet.safetensors'), mobileFp, mobileGroup));
    } finally {
      if (release) await release();
      for (const r of releases) await r();
      rmSync(dir, { recursive: true, force: true });
    }

    for (const int8 of [false, true]) {
      const id = `lenet5-int/torch-${int8 ? 'int8' : 'fp32'}`;
      ctx.log(`PyTorch ${int8 ? 'int8' : 'fp32'}`);
      const t = await runTorch({ task: 'infer', model: 'lenet5', batch: BATCH, steps: 0, repeats: ctx.repeats, warmup: 5, targetSeconds: ctx.targetSeconds, threads: ctx.threads, int8 });
      const base = { id, group: lenetGroup, impl: t.ok ? `PyTorch ${String(t.json.torch)} ${int8 ? `int8 (${String(t.json.quantization)})` : 'fp32'}` : `PyTorch ${int8 ? 'int8' : 'fp32'}`, unit: 'images/s', higherIsBetter: true };
      ms.push(t.ok ? measured({ ...base, details: { callsPerRepeat: t.json.steps, data: t.json.data } }, repeatsOf(t.json)) : skippedMeasurement(base, t.reason));
    }

    const get = (id: string): number | null => ms.find((m) => m.id === id)?.median ?? null;
    const int8 = get('lenet5-int/lowbit-int8');
    const peers = ['lenet5-int/ort-fp32', 'lenet5-int/ort-int8', 'lenet5-int/torch-fp32', 'lenet5-int/torch-int8'].map((id) => [id, get(id)] as const).filter((p): p is readonly [string, number] => p[1] !== null);
    const best = peers.reduce<readonly [string, number] | null>((a, p) => (a === null || p[1] > a[1] ? p : a), null);
    const fp32 = get('lenet5-int/lowbit-fp32');
    const bin = get('mlp-int/lowbit-binary');
    const mobile = get('mobilenet-int/lowbit-int8');
    if (mobile !== null) {
      const others = ['mobilenet-int/ort-fp32', 'mobilenet-int/ort-int8', 'mobilenet-int/torch-fp32', 'mobilenet-int/lowbit-fp32'].map((id) => [id, get(id)] as const).filter((p): p is readonly [string, number] => p[1] !== null);
      notes.push(`MobileNet W8A8 IntModel: ${mobile.toFixed(0)} images/s; ${others.map(([id, v]) => `${(mobile / v).toFixed(2)}× ${id}`).join(', ')}. The native kernel list (log) shows how its depthwise convs ran.`);
    }
    const mlp32 = get('mlp-int/lowbit-fp32');
    const verdict = (ratio: number, need: number): string => `${ratio.toFixed(2)}× — ${ratio >= need ? 'meets' : 'misses'} the ${need}× target`;
    if (int8 !== null && best) notes.push(`LeNet-5 W8A8 IntModel vs the fastest peer path (${best[0]}, ${best[1].toFixed(0)} images/s): ${verdict(int8 / best[1], ACCEPT_PEER)}.`);
    if (int8 !== null && fp32 !== null) notes.push(`LeNet-5 W8A8 IntModel vs lowbit fp32: ${verdict(int8 / fp32, ACCEPT_FP32)}.`);
    if (bin !== null && mlp32 !== null) notes.push(`Binary MLP IntModel vs lowbit fp32 MLP: ${verdict(bin / mlp32, ACCEPT_BINARY)}.`);
    notes.push(
      `In-process contenders measured interleaved (${ctx.repeats} repeats of ~${ctx.targetSeconds} s each, in turn); figures are wall-time images/s, details hold images per CPU-second of the process. PyTorch runs afterwards in a child process (not interleaved). Input: ${pool.source}, one batch of ${BATCH}; threads ${ctx.threads} everywhere.`,
      'IntModel weights: LeNet-5 prepared with the w8a8 scheme (per-channel int8 weights, uint8 activations) and quantizers initialised on a real batch (speed does not depend on training); binary MLP with sign activations, first Linear int8 on the int8 image, last Linear int8 on ±1 inputs. The native executor gives the same logits as the TypeScript executor bit for bit (src/runtime/native.test.ts).',
      'onnxruntime int8: the LeNet-5 IntModel exported as a QDQ ONNX graph by src/onnx (saveOnnx), run with the same session options as fp32 (graph optimisation \'all\' fuses QDQ into integer kernels).',
    );
    return { measurements: ms, notes };
  });
}

/** PyTorch fp32 on the MobileNet weights (bench/peers/torch_mobilenet.py), in a child process after the interleaved repeats. */
async function torchMobilenet(ctx: SectionContext, weights: string, model: nn.MobileNet, group: string): Promise<Measurement> {
  const base = { id: 'mobilenet-int/torch-fp32', group, impl: 'PyTorch fp32', unit: 'images/s', higherIsBetter: true };
  const r = await runTorchMobilenet({ task: 'infer', weights, model, batch: BATCH, threads: ctx.threads, repeats: ctx.repeats, seconds: ctx.targetSeconds });
  if (!r.ok) return skippedMeasurement(base, r.reason);
  return measured({ ...base, impl: `PyTorch ${String(r.json.torch)} fp32` }, repeatsOf(r.json));
}

export const intInference: Section = {
  name: 'int-inference',
  title: 'Integer inference (IntModel native executor) vs peers',
  run,
};
