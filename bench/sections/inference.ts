/**
 * LeNet-5 fp32 inference throughput at batch 256 (images/s): lowbit on each backend, PyTorch, and
 * onnxruntime-node on the ONNX export of the PyTorch peer's LeNet-5 (opset 13, dynamic batch).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../../src/autograd/index.ts';
import { measured, skippedMeasurement, type Measurement, type Section, type SectionContext, type SectionOutput } from '../lib.ts';
import { ortInference } from '../peers/ort.ts';
import { repeatsOf, runTorch } from '../peers/torch.ts';
import { tfjsRows } from '../peers/tfjs.ts';
import { batchPool, benchBackends, buildModel, contenders, implName, backendMissingReason, prepareWasmThreads, rateOn } from '../workloads.ts';

const BATCH = 256;

async function run(ctx: SectionContext): Promise<SectionOutput> {
  const measurements: Measurement[] = [];
  const group = `LeNet-5 fp32 inference, batch ${BATCH}`;
  const torchId = 'lenet5-b256/torch';
  const pool = batchPool(BATCH, 1, 'test');
  const input = pool.batches[0]!.x;
  const backends = benchBackends();
  const wasmNote = backends.includes('wasm') ? await prepareWasmThreads(ctx.threads) : '';

  // With a pool of several wasm threads, wasm also runs on one thread: the TF.js wasm backend runs
  // one thread in Node, so that row is the like-for-like comparison.
  const rows = contenders(backends);
  const oneThreadRow = rows.some((c) => c.oneThread);
  for (const c of rows) {
    const { backend, oneThread } = c;
    // the wasm and reference rows also read against TensorFlow.js's wasm and JavaScript backends
    const tfjsPeers = backend === 'wasm' ? ['lenet5-b256/tfjs-wasm', 'lenet5-b256/tfjs-cpu'] : backend === 'reference' ? ['lenet5-b256/tfjs-cpu'] : [];
    const id = oneThread ? 'lenet5-b256/lowbit-wasm-1-thread' : `lenet5-b256/lowbit-${backend}`;
    const base = { id, group, impl: oneThread ? 'lowbit (wasm, 1 thread)' : implName(backend), unit: 'images/s', higherIsBetter: true, peers: [torchId, 'lenet5-b256/ort', ...tfjsPeers] };
    if (!backends.includes(backend)) {
      measurements.push(skippedMeasurement(base, backendMissingReason(backend)));
      continue;
    }
    ctx.log(`${base.impl}`);
    const r = await rateOn(ctx, c, () => {
      const model = buildModel('lenet5');
      model.eval();
      return () => void noGrad(() => model.forward(input));
    }, BATCH);
    measurements.push(measured({ ...base, details: { callsPerRepeat: r.steps, data: pool.source } }, r.repeats));
  }

  ctx.log('PyTorch');
  const t = await runTorch({ task: 'infer', model: 'lenet5', batch: BATCH, steps: 0, repeats: ctx.repeats, warmup: 5, targetSeconds: ctx.targetSeconds, threads: ctx.threads });
  const tbase = { id: torchId, group, impl: t.ok ? `PyTorch ${String(t.json.torch)}` : 'PyTorch', unit: 'images/s', higherIsBetter: true };
  measurements.push(t.ok ? measured({ ...tbase, details: { callsPerRepeat: t.json.steps, data: t.json.data } }, repeatsOf(t.json)) : skippedMeasurement(tbase, t.reason));

  const tf = await tfjsRows(ctx, group, 'images/s', (b) => `lenet5-b256/tfjs-${b}`, { task: 'infer', model: 'lenet5', batch: BATCH });
  measurements.push(...tf.measurements);
  const tfjsThreads = tf.wasmThreads;

  ctx.log('onnxruntime-node');
  const obase = { id: 'lenet5-b256/ort', group, impl: 'onnxruntime-node', unit: 'images/s', higherIsBetter: true };
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-bench-'));
  let ortNote = '';
  try {
    const modelPath = join(dir, 'lenet5.onnx');
    const ex = await runTorch({ task: 'export', model: 'lenet5', out: modelPath, threads: ctx.threads });
    if (!ex.ok) {
      measurements.push(skippedMeasurement(obase, `no ONNX model: export by the PyTorch peer failed (${ex.reason})`));
    } else {
      const o = await ortInference({ modelPath, batch: BATCH, repeats: ctx.repeats, targetSeconds: ctx.targetSeconds, threads: ctx.threads, input: input.data as Float32Array });
      if (o.ok) {
        measurements.push(measured({ ...obase, impl: `onnxruntime-node ${o.version}`, details: { callsPerRepeat: o.steps, onnxBytes: ex.json.bytes, opset: 13 } }, o.repeats));
        ortNote = `onnxruntime-node: CPU execution provider, intraOpNumThreads ${ctx.threads}, interOpNumThreads 1, graph optimisation 'all', on LeNet-5 exported by \`torch.onnx.export\` (opset 13, dynamic batch, ${String(ex.json.bytes)} bytes).`;
      } else measurements.push(skippedMeasurement(obase, o.reason));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const notes = [
    `Forward pass only, eval mode, no gradient recording (lowbit \`noGrad\`, PyTorch \`torch.no_grad()\`). Calls per repeat calibrated to ~${ctx.targetSeconds} s.`,
    `lowbit and onnxruntime input: ${pool.source}, one batch of ${BATCH}. PyTorch input: random MNIST-shaped tensors (fp32 speed does not depend on values).`,
  ];
  if (wasmNote) notes.push(wasmNote);
  if (oneThreadRow) notes.push('lowbit (wasm, 1 thread): the same wasm kernels with the worker pool set to one thread (`setWasmThreads(1)`) for that row only.');
  if (ortNote) notes.push(ortNote);
  notes.push(`TensorFlow.js peers (bench/peers/tfjs-bench.ts, a child Node process): the same LeNet-5 written with @tensorflow/tfjs-core ops (channels-last), random inputs of the same shape, logits read back after each call; wasm = @tensorflow/tfjs-backend-wasm (XNNPACK in WebAssembly SIMD${tfjsThreads > 0 ? `, ${tfjsThreads} thread${tfjsThreads === 1 ? '' : 's'} in Node` : ''}), cpu = @tensorflow/tfjs-backend-cpu (plain JavaScript).`);
  notes.push(`PyTorch peer: ${ctx.machine.torch}; ${ctx.machine.torchBlas || 'BLAS unknown'}.`);
  return { measurements, notes };
}

export const inference: Section = {
  name: 'inference',
  title: 'Inference throughput (fp32)',
  run,
};
