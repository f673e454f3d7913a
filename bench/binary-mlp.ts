/**
 * The binary MLP 784-1024-1024-10 IntModel of the `int-inference` section (and of
 * bench/intmodel-profile.ts --model bnn-mlp): the QAT results' Linear–BN–sign network, first Linear
 * int8 on the int8 image, hidden Linear ±1 weights on sign inputs (XNOR-popcount), last Linear int8
 * on ±1 inputs. Quantizers are initialised by three train-mode forwards on `calib`, then eval
 * (speed does not depend on training).
 */
import { noGrad } from '../src/autograd/index.ts';
import * as nn from '../src/nn/index.ts';
import type { Module } from '../src/nn/module.ts';
import { manualSeed, type Tensor } from '../src/tensor/index.ts';
import { prepareQat } from '../src/quant/qat/index.ts';
import { qconfigFor } from '../src/quant/config/qconfig.ts';
import { int8PerChannelSym } from '../src/quant/config/presets.ts';
import { convert, type IntModel } from '../src/runtime/index.ts';

/** Quantizers initialised by three train-mode forwards on real images, then eval. */
export function preparedQat(model: Module, plan: Parameters<typeof prepareQat>[1], x: Tensor): Module {
  prepareQat(model, plan);
  model.train();
  for (let i = 0; i < 3; i++) noGrad(() => (model as unknown as { forward(t: Tensor): Tensor }).forward(x));
  model.eval();
  return model;
}

/** The fp32 network: Flatten, Linear 784→1024, BN, Linear 1024→1024, BN, Linear 1024→10. */
export function binaryMlpModule(): Module {
  return new nn.Sequential(
    new nn.Flatten(),
    new nn.Linear(784, 1024, { bias: false }), new nn.BatchNorm1d(1024),
    new nn.Linear(1024, 1024, { bias: false }), new nn.BatchNorm1d(1024),
    new nn.Linear(1024, 10),
  );
}

/** The binary MLP IntModel (seed 0), quantizers initialised on `calib` [B, 1, 28, 28]. */
export function binaryMlpIntModel(calib: Tensor): IntModel {
  manualSeed(0);
  const signConfig = qconfigFor('w1a1', 'binary', { signActivations: true });
  const q = preparedQat(binaryMlpModule(), {
    default: signConfig,
    overrides: [{ match: '5', config: { weight: int8PerChannelSym, activation: signConfig.activation } }],
  }, calib);
  return convert(q, { inputShape: [1, 28, 28] });
}
