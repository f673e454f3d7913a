/**
 * The models of the executor benches: LeNet-5, the Fashion CNN and ResNet-8, W8A8 or W4A4 (untrained
 * weights: speed does not depend on them), prepared for QAT, quantizers initialised on a few random
 * train-mode batches, converted to IntModels.
 */
import { noGrad } from '../../src/autograd/engine.ts';
import { cnn, lenet5, resnet8, type Module } from '../../src/nn/index.ts';
import { manualSeed, randn, Rng, type Tensor } from '../../src/tensor/index.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { qconfigFor } from '../../src/quant/config/qconfig.ts';
import { convert, IntModel, type IntTensor } from '../../src/runtime/index.ts';
import { packWeightTensor } from '../../src/runtime/intmodel.ts';

export interface BenchModel {
  readonly label: string;
  readonly model: Module & { forward(x: Tensor): Tensor };
  readonly im: IntModel;
}

/**
 * `fullRange`: the IntModel's int4 weights replaced by seeded random values in [−7, 7] (the range a
 * trained W4A4 model uses; the untrained one's int4 weights are mostly within ±1, which gives the
 * TypeScript executor more lanes than a trained model gets). Its logits are then no longer the
 * float model's; only its speed is meant.
 */
export function buildBenchModel(kind: 'lenet5' | 'resnet8' | 'cnn', scheme: 'w8a8' | 'w4a4', seed = 0, fullRange = false): BenchModel {
  manualSeed(seed);
  const model = (kind === 'lenet5' ? lenet5() : kind === 'cnn' ? cnn() : resnet8()) as unknown as BenchModel['model'];
  prepareQat(model, { default: qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq') });
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => model.forward(randn([32, 1, 28, 28])));
  model.eval();
  let im = convert(model, { sample: randn([32, 1, 28, 28]) });
  if (fullRange) {
    const rng = new Rng(seed + 1);
    const tensors = new Map<string, IntTensor>(im.tensors);
    for (const node of im.nodes) {
      if ((node.op !== 'conv2d' && node.op !== 'linear') || node.weightFormat !== 'int4') continue;
      const t = im.tensor(node.weight);
      const count = t.shape.reduce((p, d) => p * d, 1);
      tensors.set(node.weight, packWeightTensor('int4', Array.from({ length: count }, () => Math.floor(rng.uniform() * 15) - 7), t.shape));
    }
    im = new IntModel(im.graph, tensors);
  }
  const label = `${kind === 'lenet5' ? 'LeNet-5' : kind === 'cnn' ? 'CNN' : 'ResNet-8'} ${scheme.toUpperCase()}${fullRange ? ' (int4 weights in [-7, 7])' : ''}`;
  return { label, model, im };
}
