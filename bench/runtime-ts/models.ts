/**
 * The models of the TypeScript-executor bench: LeNet-5 W8A8, ResNet-8 W8A8 and W4A4 (untrained
 * weights: speed does not depend on them), prepared for QAT, quantizers initialised on a few random
 * train-mode batches, converted to IntModels.
 */
import { noGrad } from '../../src/autograd/engine.ts';
import { lenet5, resnet8, type Module } from '../../src/nn/index.ts';
import { manualSeed, randn, type Tensor } from '../../src/tensor/index.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { qconfigFor } from '../../src/quant/config/qconfig.ts';
import { convert, type IntModel } from '../../src/runtime/index.ts';

export interface BenchModel {
  readonly label: string;
  readonly model: Module & { forward(x: Tensor): Tensor };
  readonly im: IntModel;
}

export function buildBenchModel(kind: 'lenet5' | 'resnet8', scheme: 'w8a8' | 'w4a4', seed = 0): BenchModel {
  manualSeed(seed);
  const model = (kind === 'lenet5' ? lenet5() : resnet8()) as unknown as BenchModel['model'];
  prepareQat(model, { default: qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq') });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => model.forward(randn([32, 1, 28, 28])));
  model.eval();
  const im = convert(model, { sample: randn([32, 1, 28, 28]) });
  return { label: `${kind === 'lenet5' ? 'LeNet-5' : 'ResNet-8'} ${scheme.toUpperCase()}`, model, im };
}
