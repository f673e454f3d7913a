/**
 * The reference backend: a pure-TypeScript kernel for every primitive. It is the executable
 * specification the native backend is tested against, and the backend of the browser path.
 * Importing this module registers its kernels.
 */
import { BINARY_PRIMITIVES, UNARY_PRIMITIVES } from '../primitives.ts';
import { registerKernel } from '../registry.ts';
import { batchNormBackwardKernel, batchNormKernel, batchNormStatsBackwardKernel, batchNormStatsKernel, clampBackwardKernel, clampKernel } from './batchnorm.ts';
import { conv2dBackwardInputKernel, conv2dBackwardWeightKernel, conv2dKernel } from './conv.ts';
import { conv2dFusedKernel } from './fused.ts';
import { adderConv2dGradKernel, adderConv2dKernel } from './adder.ts';
import { binaryKernel, castKernel, unaryKernel, whereKernel } from './elementwise.ts';
import { linearKernel, matmulKernel } from './matmul.ts';
import { castFloatKernel } from './lowp.ts';
import { quantizeGradientKernel, stochasticQuantizeKernel } from './stochastic.ts';
import { fakeQuantizeGradKernel, fakeQuantizeKernel, roundSteKernel, scaleGradKernel, signSteKernel } from './quant.ts';
import {
  avgPool2dBackwardKernel, avgPool2dKernel, maxPool2dBackwardKernel, maxPool2dGatherKernel, maxPool2dKernel,
} from './pool.ts';
import { gruSequenceBackwardKernel, gruSequenceKernel, lstmSequenceBackwardKernel, lstmSequenceKernel } from './recurrent.ts';
import {
  attentionBackwardKernel, attentionKernel, decodeAttentionKernel, crossEntropyLossBackwardKernel, crossEntropyLossKernel, geluBackwardKernel, geluKernel, layerNormBackwardKernel, layerNormKernel,
} from './transformer.ts';
import { argmaxKernel, logSoftmaxKernel, maxKernel, softmaxKernel, sumKernel } from './reduce.ts';
import {
  broadcastToKernel, concatKernel, gatherKernel, padKernel, reshapeKernel, scatterAddKernel, sliceKernel, transposeKernel,
} from './shape.ts';

let registered = false;

/** Registers every reference kernel (idempotent). */
export function registerReferenceBackend(): void {
  if (registered) return;
  registered = true;
  for (const op of UNARY_PRIMITIVES) registerKernel('reference', op, unaryKernel(op));
  for (const op of BINARY_PRIMITIVES) registerKernel('reference', op, binaryKernel(op));
  registerKernel('reference', 'where', whereKernel);
  registerKernel('reference', 'clamp', clampKernel);
  registerKernel('reference', 'clampBackward', clampBackwardKernel);
  registerKernel('reference', 'batchNorm', batchNormKernel);
  registerKernel('reference', 'batchNormBackward', batchNormBackwardKernel);
  registerKernel('reference', 'batchNormStats', batchNormStatsKernel);
  registerKernel('reference', 'batchNormStatsBackward', batchNormStatsBackwardKernel);
  registerKernel('reference', 'cast', castKernel);
  registerKernel('reference', 'sum', sumKernel);
  registerKernel('reference', 'max', maxKernel);
  registerKernel('reference', 'argmax', argmaxKernel);
  registerKernel('reference', 'softmax', softmaxKernel);
  registerKernel('reference', 'logSoftmax', logSoftmaxKernel);
  registerKernel('reference', 'layerNorm', layerNormKernel);
  registerKernel('reference', 'layerNormBackward', layerNormBackwardKernel);
  registerKernel('reference', 'gelu', geluKernel);
  registerKernel('reference', 'geluBackward', geluBackwardKernel);
  registerKernel('reference', 'attention', attentionKernel);
  registerKernel('reference', 'attentionBackward', attentionBackwardKernel);
  registerKernel('reference', 'decodeAttention', decodeAttentionKernel);
  registerKernel('reference', 'crossEntropyLoss', crossEntropyLossKernel);
  registerKernel('reference', 'crossEntropyLossBackward', crossEntropyLossBackwardKernel);
  registerKernel('reference', 'reshape', reshapeKernel);
  registerKernel('reference', 'transpose', transposeKernel);
  registerKernel('reference', 'broadcastTo', broadcastToKernel);
  registerKernel('reference', 'slice', sliceKernel);
  registerKernel('reference', 'pad', padKernel);
  registerKernel('reference', 'concat', concatKernel);
  registerKernel('reference', 'gather', gatherKernel);
  registerKernel('reference', 'scatterAdd', scatterAddKernel);
  registerKernel('reference', 'matmul', matmulKernel);
  registerKernel('reference', 'linear', linearKernel);
  registerKernel('reference', 'conv2d', conv2dKernel);
  registerKernel('reference', 'conv2dBackwardInput', conv2dBackwardInputKernel);
  registerKernel('reference', 'conv2dBackwardWeight', conv2dBackwardWeightKernel);
  registerKernel('reference', 'conv2dFused', conv2dFusedKernel);
  registerKernel('reference', 'maxPool2d', maxPool2dKernel);
  registerKernel('reference', 'maxPool2dBackward', maxPool2dBackwardKernel);
  registerKernel('reference', 'maxPool2dGather', maxPool2dGatherKernel);
  registerKernel('reference', 'avgPool2d', avgPool2dKernel);
  registerKernel('reference', 'avgPool2dBackward', avgPool2dBackwardKernel);
  registerKernel('reference', 'lstmSequence', lstmSequenceKernel);
  registerKernel('reference', 'lstmSequenceBackward', lstmSequenceBackwardKernel);
  registerKernel('reference', 'gruSequence', gruSequenceKernel);
  registerKernel('reference', 'gruSequenceBackward', gruSequenceBackwardKernel);
  registerKernel('reference', 'adderConv2d', adderConv2dKernel);
  registerKernel('reference', 'adderConv2dGrad', adderConv2dGradKernel);
  registerKernel('reference', 'fakeQuantize', fakeQuantizeKernel);
  registerKernel('reference', 'fakeQuantizeGrad', fakeQuantizeGradKernel);
  registerKernel('reference', 'roundSte', roundSteKernel);
  registerKernel('reference', 'scaleGrad', scaleGradKernel);
  registerKernel('reference', 'signSte', signSteKernel);
  registerKernel('reference', 'castFloat', castFloatKernel);
  registerKernel('reference', 'quantizeGradient', quantizeGradientKernel);
  registerKernel('reference', 'stochasticQuantize', stochasticQuantizeKernel);
}

registerReferenceBackend();
