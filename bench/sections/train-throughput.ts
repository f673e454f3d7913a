/**
 * Training throughput (samples/s): LeNet-5 at batch 64 and MLP 784-512-512-10 at batch 128, SGD
 * with momentum, on every lowbit backend (native, wasm = WebAssembly SIMD128 under Node's V8,
 * reference) and on PyTorch (same models, batches, optimizer); and the default `lowbit train` job
 * (LeNet-5 W4A4 LSQ QAT, Adam, batch 64) on every lowbit backend, each against the reference
 * backend (no PyTorch peer for this one: its QAT is another algorithm; the `qat-epoch` section
 * compares QAT overheads). The
 * process runs with the GC policy of a lowbit training job (`preferThroughputGc`, as
 * `lowbit train` and the epoch-time section): without it V8's incremental marking keeps starting
 * on the steps' short-lived buffers and competes with the pool's second thread.
 */
import { measured, measureRate, skippedMeasurement, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { repeatsOf, runTorch } from '../peers/torch.ts';
import { tfjsRows, type TfjsBackend } from '../peers/tfjs.ts';
import { runTorchMobilenet, writeMobilenetWeights } from '../peers/torch-mobilenet.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mobilenet } from '../../src/nn/index.ts';
import { manualSeed } from '../../src/tensor/index.ts';
import { preferThroughputGc } from '../../src/train/gc.ts';
import { wasmThreadsInfo } from '../../src/backend/wasm/index.ts';
import { MODEL_LABEL, QAT_JOB, SGD_CONFIG, batchPool, benchBackends, buildModel, implName, backendMissingReason, contenders, prepareWasmThreads, adamStepper, qatTrainStepper, rateOn, trainStepper, withBackend, type BenchModel } from '../workloads.ts';

/** Adam's learning rate in the MobileNet rows (the CLI default). */
const MOBILENET_LR = 0.002;

const CASES: readonly { model: BenchModel; batch: number }[] = [
  { model: 'lenet5', batch: 64 },
  { model: 'mlp', batch: 128 },
];

async function run(ctx: SectionContext): Promise<SectionOutput> {
  preferThroughputGc();
  const measurements: Measurement[] = [];
  const notes: string[] = [];
  const backends = benchBackends();
  const wasmNote = backends.includes('wasm') ? await prepareWasmThreads(ctx.threads) : '';
  // With a pool of several wasm threads, the fp32 cases also run wasm on one thread, so the gain of
  // the worker pool is measured in the same run.
  const rows = contenders(backends);
  const oneThreadRow = rows.some((c) => c.oneThread);
  let source = '';
  let torchData = '';
  let tfjsThreads = 0;
  for (const { model, batch } of CASES) {
    const group = `${MODEL_LABEL[model]} training, batch ${batch}`;
    const key = `${model}-b${batch}`;
    const torchId = `${key}/torch`;
    const pool = batchPool(batch, 8);
    source = pool.source;
    const wasmOneId = `${key}/lowbit-wasm-1-thread`;
    for (const c of rows) {
      const { backend, oneThread } = c;
      const id = oneThread ? wasmOneId : `${key}/lowbit-${backend}`;
      // The pool's row also reads against the same backend on one thread (does splitting pay?); the
      // wasm and reference rows against TensorFlow.js's wasm and JavaScript backends (the browser peers).
      const tfjsPeers = backend === 'wasm' ? [tfjsId(key, 'wasm'), tfjsId(key, 'cpu')] : backend === 'reference' ? [tfjsId(key, 'cpu')] : [];
      const peers = [torchId, ...tfjsPeers, ...(backend === 'wasm' && !oneThread && oneThreadRow ? [wasmOneId] : [])];
      const base = { id, group, impl: oneThread ? 'lowbit (wasm, 1 thread)' : implName(backend), unit: 'samples/s', higherIsBetter: true, peers };
      if (!backends.includes(backend)) {
        measurements.push(skippedMeasurement(base, backendMissingReason(backend)));
        continue;
      }
      ctx.log(`${group}: ${base.impl}`);
      const r = await rateOn(ctx, c, () => trainStepper(buildModel(model), pool.batches), batch);
      measurements.push(measured({ ...base, details: { stepsPerRepeat: r.steps, data: pool.source } }, r.repeats));
    }
    ctx.log(`${group}: PyTorch`);
    const t = await runTorch({ task: 'train', model, batch, steps: 0, repeats: ctx.repeats, warmup: 5, targetSeconds: ctx.targetSeconds, threads: ctx.threads });
    const tbase = { id: torchId, group, impl: t.ok ? `PyTorch ${String(t.json.torch)}` : 'PyTorch', unit: 'samples/s', higherIsBetter: true };
    if (t.ok) {
      torchData = String(t.json.data);
      measurements.push(measured({ ...tbase, details: { stepsPerRepeat: t.json.steps, data: t.json.data, blas: t.json.blas } }, repeatsOf(t.json)));
    } else measurements.push(skippedMeasurement(tbase, t.reason));
    const tf = await tfjsRows(ctx, group, 'samples/s', (b) => tfjsId(key, b), { task: 'train', model, batch, lr: SGD_CONFIG.lr, momentum: SGD_CONFIG.momentum });
    measurements.push(...tf.measurements);
    if (tf.wasmThreads > 0) tfjsThreads = tf.wasmThreads;
  }
  // MobileNet (depthwise-separable, residual adds, BatchNorm, ReLU6), Adam: lowbit native and wasm
  // against PyTorch on the same initial weights (bench/peers/torch_mobilenet.py, strict load by name).
  {
    const batch = 64;
    manualSeed(0);
    const model = mobilenet();
    const params = model.parameters().reduce((n, p) => n + p.size, 0);
    const group = `MobileNet (\`lowbit train --model mobilenet\`, ${params.toLocaleString('en-US')} parameters) training, batch ${batch}, Adam lr ${MOBILENET_LR}`;
    const key = `mobilenet-b${batch}`;
    const pool = batchPool(batch, 8);
    const wasmOneId = `${key}/lowbit-wasm-1-thread`;
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-bench-mobilenet-'));
    try {
      // the peer starts from the same weights (written before lowbit's steps change them)
      writeMobilenetWeights(join(dir, 'w.safetensors'), model);
      // native and wasm (the browser's backend; on one thread too when the pool has more), not the
      // reference backend (minutes per measurement); each row trains the one model further
      for (const c of rows.filter((r) => r.backend !== 'reference')) {
        const { backend, oneThread } = c;
        const id = oneThread ? wasmOneId : `${key}/lowbit-${backend}`;
        const peers = [`${key}/torch`, ...(backend === 'wasm' && !oneThread && oneThreadRow ? [wasmOneId] : [])];
        const base = { id, group, impl: oneThread ? 'lowbit (wasm, 1 thread)' : implName(backend), unit: 'samples/s', higherIsBetter: true, peers };
        if (!backends.includes(backend)) {
          measurements.push(skippedMeasurement(base, backendMissingReason(backend)));
          continue;
        }
        ctx.log(`${group}: ${base.impl}`);
        const r = await rateOn(ctx, c, () => adamStepper(model, pool.batches, MOBILENET_LR), batch);
        measurements.push(measured({ ...base, details: { stepsPerRepeat: r.steps, data: pool.source } }, r.repeats));
      }
      ctx.log(`${group}: PyTorch`);
      const t = await runTorchMobilenet({ task: 'train', weights: join(dir, 'w.safetensors'), model, batch, threads: ctx.threads, repeats: ctx.repeats, seconds: ctx.targetSeconds, extra: ['--lr', String(MOBILENET_LR)] });
      const tbase = { id: `${key}/torch`, group, impl: t.ok ? `PyTorch ${String(t.json.torch)}` : 'PyTorch', unit: 'samples/s', higherIsBetter: true };
      measurements.push(t.ok ? measured(tbase, repeatsOf(t.json)) : skippedMeasurement(tbase, t.reason));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    notes.push(`MobileNet rows: the CLI's \`mobilenet\` (nn.mobilenet(): stem conv 3×3 stride 2, six inverted residual blocks with depthwise 3×3 convs, head 1×1 conv, average pool, Linear), train mode (BatchNorm batch statistics), Adam lr ${MOBILENET_LR}, cross-entropy, loss read back; lowbit native and wasm (its BatchNorm, clamp and depthwise 3×3 kernels: src/backend/wasm/norm.ts, depthwise.ts) on MNIST batches, PyTorch (bench/peers/torch_mobilenet.py: lowbit's initial weights loaded strictly by name, the same strides) on random batches of the same shape.`);
  }
  // The default `lowbit train` job: W4A4 LSQ QAT with Adam, each backend against the reference one.
  {
    const batch = 64;
    const group = `LeNet-5 W4A4 LSQ QAT training (\`lowbit train\` default), batch ${batch}, Adam`;
    const key = `lenet5-w4a4-lsq-b${batch}`;
    const referenceId = `${key}/lowbit-reference`;
    const pool = batchPool(batch, 8);
    for (const backend of ['native', 'wasm', 'reference'] as const) {
      const base = { id: `${key}/lowbit-${backend}`, group, impl: implName(backend), unit: 'samples/s', higherIsBetter: true, ...(backend === 'reference' ? {} : { peers: [referenceId] }) };
      if (!backends.includes(backend)) {
        measurements.push(skippedMeasurement(base, backendMissingReason(backend)));
        continue;
      }
      ctx.log(`${group}: lowbit ${backend}`);
      const r = await withBackend(backend, () =>
        measureRate(qatTrainStepper(pool.batches), {
          warmup: backend === 'reference' ? 1 : 10,
          repeats: ctx.repeats,
          targetSeconds: ctx.targetSeconds,
          itemsPerCall: batch,
        }),
      );
      measurements.push(measured({ ...base, details: { stepsPerRepeat: r.steps, data: pool.source } }, r.repeats));
    }
    notes.push(`QAT rows: the default \`lowbit train\` job (LeNet-5, W4A4 LSQ, first / last layers and the input at 8 bit; Adam lr ${QAT_JOB.lr}, quantizer parameters at ${QAT_JOB.quantLrScale}x; bench/workloads.ts qatTrainStepper), same step and data as above; ratios are to the reference backend. On wasm, fakeQuantize and its gradients run as wasm kernels (src/backend/wasm/quant.ts), bit-exact with the reference.`);
  }
  notes.push('lowbit runs with the GC policy of its training jobs (`preferThroughputGc()`: no incremental marking), as `lowbit train` does.');
  notes.push(`Each step: forward, softmax cross-entropy, backward, SGD step (lr ${SGD_CONFIG.lr}, momentum ${SGD_CONFIG.momentum}), zero grad, loss read back. Steps per repeat are calibrated to ~${ctx.targetSeconds} s; samples/s = steps × batch / time.`);
  notes.push(`lowbit data: ${source}, 8 batches cycled. PyTorch data: ${torchData || 'n/a'} (8 batches cycled) — fp32 throughput does not depend on pixel values.`);
  if (wasmNote) notes.push(wasmNote);
  if (oneThreadRow) notes.push(`lowbit (wasm, 1 thread): the same wasm kernels with the worker pool set to one thread (\`setWasmThreads(1)\`) for that row only, so the pool's gain is the ratio of the ${wasmThreadsInfo().active}-thread row to it, measured in the same run.`);
  notes.push(`TensorFlow.js peers (bench/peers/tfjs-bench.ts, a child Node process): the same models written with @tensorflow/tfjs-core ops (convolutions channels-last, PyTorch's init ranges), the same step (softmax cross-entropy, \`tf.train.momentum(${SGD_CONFIG.lr}, ${SGD_CONFIG.momentum})\`, loss read back), random inputs of the same shapes, 8 batches cycled. Backends: wasm = @tensorflow/tfjs-backend-wasm (XNNPACK compiled to WebAssembly SIMD${tfjsThreads > 0 ? `; it ran ${tfjsThreads} thread${tfjsThreads === 1 ? '' : 's'} in Node` : ''}), cpu = @tensorflow/tfjs-backend-cpu (plain JavaScript). A TF.js backend without a kernel the step needs is listed as skipped with TF.js's own error. @tensorflow/tfjs-node (native TensorFlow) is not a peer: its install downloads a TensorFlow binary from outside the npm registry.`);
  notes.push(`PyTorch peer: ${ctx.machine.torch}; ${ctx.machine.torchBlas || 'BLAS unknown'}. Linear layers go through that BLAS; convolutions through oneDNN.`);
  return { measurements, notes };
}

function tfjsId(key: string, backend: TfjsBackend): string {
  return `${key}/tfjs-${backend}`;
}

export const trainThroughput: Section = {
  name: 'train-throughput',
  title: 'Training throughput',
  run,
};
