/**
 * The 'wasm' backend's kernels: adapters from RawTensors to the SIMD128 module of ./module.ts
 * (./matmul.ts, ./conv.ts, ./pool.ts, ./quant.ts, ./broadcast.ts, ./norm.ts, ./depthwise.ts) and float32 TypeScript loops (./elementwise.ts).
 * Operands are copied into one growable WebAssembly.Memory (packed into the GEMM's panel layouts
 * on the way in: ./pack.ts), the module runs, results are copied out into fresh Float32Arrays.
 * Every kernel declines (returns undefined: the reference kernel runs) on anything but float32
 * and on shapes it does not handle.
 * @internal
 */
import type { PrimitiveName } from '../primitives.ts';

export { matmulKernel, linearKernel } from './matmul.ts';
export { conv2dKernel, conv2dFusedKernel, conv2dBackwardInputKernel, conv2dBackwardWeightKernel, setCanvasPaths } from './conv.ts';
export { maxPool2dKernel, maxPool2dBackwardKernel, maxPool2dGatherKernel, setPool2x2 } from './pool.ts';
export { sumKernel, maxKernel, addKernel, reluKernel, reluBackwardKernel, tanhKernel, expKernel, logKernel, sigmoidKernel } from './elementwise.ts';
export { fakeQuantizeKernel, fakeQuantizeGradKernel } from './quant.ts';
export { broadcastKernel, unaryKernel, setDirectMin } from './broadcast.ts';
export { depthwiseConv2dKernel, depthwiseConv2dBackwardInputKernel, depthwiseConv2dBackwardWeightKernel } from './depthwise.ts';
export { batchNormKernel, batchNormBackwardKernel, batchNormStatsKernel, clampKernel, clampBackwardKernel } from './norm.ts';
export { convGeometry, setParallelMinMacs, type ConvGeometry } from './util.ts';

/** Ops the wasm backend has a kernel for (the rest run on the reference backend). */
export const WASM_OPS: readonly PrimitiveName[] = [
  'matmul', 'linear', 'conv2d', 'conv2dFused', 'conv2dBackwardInput', 'conv2dBackwardWeight', 'maxPool2d', 'maxPool2dBackward', 'maxPool2dGather', 'sum',
  'add', 'relu', 'reluBackward', 'fakeQuantize', 'fakeQuantizeGrad',
  'sub', 'mul', 'div', 'maximum', 'minimum', 'greater', 'greaterEqual', 'equal', 'where', 'broadcastTo',
  'neg', 'abs', 'sign', 'floor', 'sqrt', 'round', 'roundSte', 'signSte', 'max',
  'tanh', 'exp', 'log', 'sigmoid',
  'batchNorm', 'batchNormBackward', 'batchNormStats', 'clamp', 'clampBackward',
];
