/**
 * The 'wasm' backend: fp32 kernels in WebAssembly SIMD128 for the ops that dominate conv-net and
 * MLP training (matmul, conv2d and its two backward passes, the fused conv, max pooling) and
 * quantization-aware training (fakeQuantize and its gradient, bit-exact with the reference; the
 * broadcasting binary ops, where and the exact unary ops that estimators are written with) and
 * MobileNet's BatchNorm (forward, backward, statistics) and clamp / ReLU6 with its gradient, generated
 * at run time with src/runtime/wasm/emitter.ts -- pure web technology, for the browser; plus
 * float32-only TypeScript loops for the small ops of a step (sum to a bias gradient, max, bias add,
 * ReLU and its backward, tanh / exp / log / sigmoid; bit-exact with the reference). Every other op, and any input a kernel
 * declines, runs on the reference backend. `loadWasm()` registers the kernels when the engine
 * validates a SIMD128 module; choosing the default backend is done in ../index.ts.
 */
import type { Kernel, PrimitiveName } from '../primitives.ts';
import { registerKernel } from '../registry.ts';
import {
  conv2dBackwardInputKernel, conv2dBackwardWeightKernel, conv2dFusedKernel, conv2dKernel, matmulKernel, linearKernel,
  maxPool2dBackwardKernel, maxPool2dGatherKernel, maxPool2dKernel, sumKernel, addKernel, reluKernel, reluBackwardKernel,
  fakeQuantizeKernel, fakeQuantizeGradKernel, broadcastKernel, unaryKernel, maxKernel,
  tanhKernel, expKernel, logKernel, sigmoidKernel,
  depthwiseConv2dKernel, depthwiseConv2dBackwardInputKernel, depthwiseConv2dBackwardWeightKernel,
  batchNormKernel, batchNormBackwardKernel, batchNormStatsKernel, clampKernel, clampBackwardKernel,
} from './kernels.ts';
import { EW_BINARY, EW_UNARY } from './elementwise-module.ts';
import { wasmRuntime } from './runtime.ts';

export { WASM_OPS } from './kernels.ts';
export { wasmUnavailableReason, setWasmThreads, wasmThreadsInfo, type WasmThreadsInfo } from './runtime.ts';

const kernels = new Map<PrimitiveName, Kernel>();

/** @internal The registered wasm kernel of `op` (tests call it directly to see that it does not decline). */
export function wasmKernel(op: PrimitiveName): Kernel | undefined {
  return kernels.get(op);
}

function register<P extends PrimitiveName>(op: P, kernel: Kernel<P>): void {
  kernels.set(op, kernel as Kernel);
  registerKernel('wasm', op, kernel);
}

/** Compiles the module and registers the kernels under 'wasm' (once); says why when it cannot. */
export function loadWasm(): { ok: true } | { ok: false; reason: string } {
  const rt = wasmRuntime();
  if (typeof rt === 'string') return { ok: false, reason: rt };
  if (kernels.size === 0) {
    register('matmul', matmulKernel(rt));
    register('linear', linearKernel(rt));
    // depthwise 3×3 convs (MobileNet) take their own path; every other geometry the GEMM one
    const conv = conv2dKernel(rt), dwConv = depthwiseConv2dKernel(rt);
    register('conv2d', (inputs, attrs) => dwConv(inputs, attrs) ?? conv(inputs, attrs));
    register('conv2dFused', conv2dFusedKernel(rt, dwConv));
    const convInput = conv2dBackwardInputKernel(rt), dwInput = depthwiseConv2dBackwardInputKernel(rt);
    register('conv2dBackwardInput', (inputs, attrs) => dwInput(inputs, attrs) ?? convInput(inputs, attrs));
    const convWeight = conv2dBackwardWeightKernel(rt), dwWeight = depthwiseConv2dBackwardWeightKernel(rt);
    register('conv2dBackwardWeight', (inputs, attrs) => dwWeight(inputs, attrs) ?? convWeight(inputs, attrs));
    register('maxPool2d', maxPool2dKernel(rt));
    register('maxPool2dBackward', maxPool2dBackwardKernel(rt));
    register('maxPool2dGather', maxPool2dGatherKernel(rt));
    register('sum', sumKernel);
    register('max', maxKernel);
    register('tanh', tanhKernel);
    register('exp', expKernel);
    register('log', logKernel);
    register('sigmoid', sigmoidKernel);
    // add: the TypeScript loop for same shapes and rows, the wasm broadcast for the rest
    const addBroadcast = broadcastKernel(rt, 'add');
    register('add', (inputs, attrs) => addKernel(inputs, attrs) ?? addBroadcast(inputs, attrs));
    for (const op of EW_BINARY) if (op !== 'add' && op !== 'copy') register(op, broadcastKernel(rt, op));
    register('broadcastTo', broadcastKernel(rt, 'copy'));
    for (const op of EW_UNARY) register(op, unaryKernel(rt, op));
    register('relu', reluKernel);
    register('reluBackward', reluBackwardKernel);
    register('fakeQuantize', fakeQuantizeKernel(rt));
    register('fakeQuantizeGrad', fakeQuantizeGradKernel(rt));
    // A clamped batchNorm (BatchNorm → ReLU6 in training) and its backward run as one BatchNorm
    // kernel each, the clamp's selects (forward) and its mask (backward) inside their passes.
    register('batchNorm', batchNormKernel(rt));
    register('batchNormBackward', batchNormBackwardKernel(rt));
    register('batchNormStats', batchNormStatsKernel(rt));
    register('clamp', clampKernel(rt));
    register('clampBackward', clampBackwardKernel(rt));
  }
  return { ok: true };
}
