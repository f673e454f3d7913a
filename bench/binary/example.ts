/**
 * The docs/binary.md API example: Bi-Real two-stage training of a binary ResNet-8 on 512
 * Fashion-MNIST images (one epoch per stage, ~30 s; no accuracy claim).
 *
 *   node --import tsx bench/binary/example.ts
 */
import { nn, quant, optim, data, DataLoader, crossEntropy } from 'lowbit';

const trainSet = data.loadDataset('fashion-mnist', 'train', { limit: 512 });
const train = (model: nn.BiRealResNet, epochs: number): void => {
  const optimizer = new optim.Adam(model.parameters(), { lr: 2e-3 });
  model.train();
  for (let e = 0; e < epochs; e++) {
    for (const { x, y } of new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed: e })) {
      optimizer.zeroGrad();
      crossEntropy(model.forward(x), y).backward();
      optimizer.step();
    }
  }
};

// Stage 1: the real-valued network, clip(x, -1, 1) where the sign will be.
const real = nn.biRealResnet8({ clip: true }); // double residual, real-valued downsampling
train(real, 1);

// Stage 2: the same layout without the clip, binarized: sign inputs (approxSign gradient), ±α
// weights (magnitude-aware gradient); stem, fc and downsampling 1×1 convs 8-bit on signed inputs.
const model = nn.biRealResnet8();
model.loadStateDict(real.stateDict());
const int8 = { weight: quant.int8PerChannelSym, activation: quant.int8PerTensorAffine };
quant.prepareQat(model, {
  default: {
    weight: { kind: 'binary', bits: 1, granularity: 'channel', magnitudeAware: true },
    activation: { kind: 'binary', bits: 1, granularity: 'tensor', gradient: 'approxSign' },
  },
  overrides: [{ match: 'fc', config: int8 }, ...model.downsampleConvNames().map((match) => ({ match, config: int8 }))],
});
train(model, 1);
console.log(quant.formatQuantTable(quant.quantizedLayers(model)));
