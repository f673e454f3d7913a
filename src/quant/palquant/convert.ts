/**
 * toPalQuant: builds the PalQuant version of a chain model (PalQuant, ECCV 2022, §3): every layer
 * between the first and the last weight layer becomes G parallel low-bit groups, widening the
 * network G times; the first weight layer stays float and feeds all G groups (output widened G
 * times), the last stays float and combines them (input widened G times), as in the paper, and a
 * `CyclicShuffle` module is inserted at every pooling layer that a quantized layer follows.
 * PalQuant learns the parallel representation from scratch, so the result has fresh weights.
 */
import { Module, type TensorModule } from '../../nn/module.ts';
import { Sequential } from '../../nn/sequential.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Linear } from '../../nn/linear.ts';
import { BatchNorm, BatchNorm1d, BatchNorm2d } from '../../nn/batchnorm.ts';
import { Identity, ReLU } from '../../nn/activation.ts';
import { AvgPool2d, MaxPool2d } from '../../nn/pooling.ts';
import { Flatten } from '../../nn/flatten.ts';
import { Dropout } from '../../nn/dropout.ts';
import { noGrad } from '../../autograd/engine.ts';
import type { Tensor } from '../../tensor/index.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import { QuantLayer } from '../qat/layers.ts';
import { CyclicShuffle, PalQuantConv2d, PalQuantLayer, PalQuantLinear, type PalQuantSpecs } from './layers.ts';

/** Options of `toPalQuant`. */
export interface PalQuantOptions {
  /** Parallel groups G (integer >= 1; G = 1 is a plain b-bit network with the same first/last layers). */
  readonly groups: number;
  /** Weight bits of every group (2 … 8). */
  readonly wBits: number;
  /** Activation (layer input) bits of every group (1 … 8). */
  readonly aBits: number;
  /** 'cyclic' (default when groups > 1) inserts CyclicShuffle modules; 'none' keeps the groups apart. */
  readonly shuffle?: 'cyclic' | 'none';
  /** Weight quantizer spec (default LSQ, signed full range [−2^(b−1), 2^(b−1)−1], per output channel); its bits must equal wBits. */
  readonly weightSpec?: QuantizerSpec;
  /** Activation quantizer spec per group (default unsigned LSQ per tensor); its bits must equal aBits. */
  readonly activationSpec?: QuantizerSpec;
  /**
   * An input batch: when given, the model is first checked to be a chain (its leaf layers run in
   * registration order give the same output as model.forward); without it that is assumed.
   */
  readonly probe?: Tensor;
}

/** The model `toPalQuant` returns: a Sequential with its configuration. */
export class PalQuantNet extends Sequential {
  readonly groups: number;
  readonly wBits: number;
  readonly aBits: number;
  readonly shuffle: 'cyclic' | 'none';

  constructor(layers: TensorModule[], config: { groups: number; wBits: number; aBits: number; shuffle: 'cyclic' | 'none' }) {
    super(...layers);
    this.groups = config.groups;
    this.wBits = config.wBits;
    this.aBits = config.aBits;
    this.shuffle = config.shuffle;
  }
}

/** Default weight spec of a PalQuant group: LSQ, signed full range, per output channel. */
export function palQuantWeightSpec(bits: number): QuantizerSpec {
  return { kind: 'lsq', bits, signed: true, symmetric: false, granularity: 'channel' };
}

/** Default activation spec of a PalQuant group: unsigned LSQ, per tensor (inputs follow a ReLU). */
export function palQuantActivationSpec(bits: number): QuantizerSpec {
  return { kind: 'lsq', bits, signed: false, granularity: 'tensor' };
}

function checkOptions(options: PalQuantOptions): { groups: number; wBits: number; aBits: number; shuffle: 'cyclic' | 'none'; specs: PalQuantSpecs } {
  if (typeof options !== 'object' || options === null) throw new Error('toPalQuant: options { groups, wBits, aBits } are required');
  const { groups, wBits, aBits } = options;
  if (!Number.isInteger(groups) || groups < 1 || groups > 64) throw new Error(`toPalQuant: groups must be an integer in [1, 64], got ${String(groups)}`);
  if (!Number.isInteger(wBits) || wBits < 2 || wBits > 8) throw new Error(`toPalQuant: wBits must be an integer in [2, 8], got ${String(wBits)}`);
  if (!Number.isInteger(aBits) || aBits < 1 || aBits > 8) throw new Error(`toPalQuant: aBits must be an integer in [1, 8], got ${String(aBits)}`);
  const shuffle = options.shuffle ?? (groups > 1 ? 'cyclic' : 'none');
  if (shuffle !== 'cyclic' && shuffle !== 'none') throw new Error(`toPalQuant: shuffle must be 'cyclic' or 'none', got ${String(shuffle)}`);
  if (shuffle === 'cyclic' && groups < 2) throw new Error('toPalQuant: the cyclic shuffle needs groups >= 2');
  const weight = options.weightSpec ?? palQuantWeightSpec(wBits);
  const activation = options.activationSpec ?? palQuantActivationSpec(aBits);
  if (weight.bits !== wBits) throw new Error(`toPalQuant: weightSpec.bits ${String(weight.bits)} differs from wBits ${wBits}`);
  if (activation.bits !== aBits) throw new Error(`toPalQuant: activationSpec.bits ${String(activation.bits)} differs from aBits ${aBits}`);
  return { groups, wBits, aBits, shuffle, specs: { weight, activation } };
}

/** Leaf modules of `model` in registration order, with their names. */
function leaves(model: Module): [string, Module][] {
  return model.namedModules().filter(([, m]) => m.children().length === 0 && m !== model);
}

function copyBatchNorm(bn: BatchNorm, width: number): BatchNorm {
  const options = { eps: bn.eps, momentum: bn.momentum, affine: bn.affine, trackRunningStats: bn.trackRunningStats };
  return bn instanceof BatchNorm2d ? new BatchNorm2d(bn.numFeatures * width, options) : new BatchNorm1d(bn.numFeatures * width, options);
}

/**
 * The PalQuant network of a chain `model` (LeNet5, Cnn, any Sequential of the layers below): a new
 * `PalQuantNet` with fresh weights, to be trained from scratch; `model` is only a template and is
 * not changed. With G groups:
 * - the first Conv2d/Linear stays float with G× output channels (one copy per group);
 * - every later Conv2d/Linear but the last becomes a PalQuantConv2d / PalQuantLinear of G
 *   independent wBits/aBits groups (G× input and output channels, grouped);
 * - the last Conv2d/Linear stays float with G× input channels: it sums the groups' contributions;
 * - BatchNorm layers between them get G× features; ReLU, pooling, Flatten and Dropout are copied;
 * - with `shuffle: 'cyclic'` a CyclicShuffle (wBits/aBits 1×1 grouped conv) follows every pooling
 *   layer on the G-wide part that a quantized layer comes after.
 * Supported leaves: Conv2d, Linear, BatchNorm1d/2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout,
 * Identity; anything else, an already quantized model or fewer than 3 weight layers throws.
 */
export function toPalQuant(model: TensorModule, options: PalQuantOptions): PalQuantNet {
  const { groups, wBits, aBits, shuffle, specs } = checkOptions(options);
  for (const [name, m] of model.namedModules()) {
    if (m instanceof QuantLayer || m instanceof PalQuantLayer) throw new Error(`toPalQuant: '${name}' is already quantized (${m.constructor.name}); pass the float model`);
  }
  const list = leaves(model);
  for (const [name, m] of list) {
    const known = m instanceof Conv2d || m instanceof Linear || m instanceof BatchNorm || m instanceof ReLU || m instanceof MaxPool2d
      || m instanceof AvgPool2d || m instanceof Flatten || m instanceof Dropout || m instanceof Identity;
    if (!known) throw new Error(`toPalQuant: layer '${name}' is a ${m.constructor.name}; supported: Conv2d, Linear, BatchNorm1d/2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout, Identity`);
  }
  const weightAt = list.flatMap(([, m], i) => (m instanceof Conv2d || m instanceof Linear ? [i] : []));
  if (weightAt.length < 3) throw new Error(`toPalQuant: the model has ${weightAt.length} Conv2d/Linear layers; PalQuant keeps the first and last float and needs at least one between them`);
  if (options.probe) checkChain(model, list.map(([, m]) => m as TensorModule), options.probe);
  const first = weightAt[0]!;
  const last = weightAt[weightAt.length - 1]!;
  const out: TensorModule[] = [];
  let channels: number | null = null;
  for (let i = 0; i < list.length; i++) {
    const [name, m] = list[i]!;
    const width = i > first && i < last ? groups : 1;
    if (m instanceof Conv2d) {
      if (i === first) out.push(new Conv2d(m.inChannels, m.outChannels * groups, m.kernelSize, { stride: m.stride, padding: m.padding, dilation: m.dilation, groups: m.groups, bias: m.bias !== null }));
      else if (i === last) {
        if (m.groups !== 1) throw new Error(`toPalQuant: the last layer '${name}' must be an ungrouped conv to combine the groups (groups=${m.groups})`);
        out.push(new Conv2d(m.inChannels * groups, m.outChannels, m.kernelSize, { stride: m.stride, padding: m.padding, dilation: m.dilation, bias: m.bias !== null }));
      } else out.push(PalQuantConv2d.fromConv(m, groups, specs));
      channels = m.outChannels * (i === last ? 1 : groups);
    } else if (m instanceof Linear) {
      if (i === first) out.push(new Linear(m.inFeatures, m.outFeatures * groups, { bias: m.bias !== null }));
      else if (i === last) out.push(new Linear(m.inFeatures * groups, m.outFeatures, { bias: m.bias !== null }));
      else out.push(PalQuantLinear.fromLinear(m, groups, specs));
      channels = null;
    } else if (m instanceof BatchNorm) {
      out.push(copyBatchNorm(m, width));
    } else if (m instanceof ReLU) {
      out.push(new ReLU());
    } else if (m instanceof MaxPool2d || m instanceof AvgPool2d) {
      out.push(m instanceof MaxPool2d ? new MaxPool2d(m.kernelSize, { stride: m.stride, padding: m.padding }) : new AvgPool2d(m.kernelSize, { stride: m.stride, padding: m.padding }));
      const quantizedAfter = weightAt.some((w) => w > i && w < last);
      if (shuffle === 'cyclic' && i > first && i < last && quantizedAfter && channels !== null) out.push(new CyclicShuffle(channels, groups, specs));
    } else if (m instanceof Flatten) {
      out.push(new Flatten(m.startDim, m.endDim));
      channels = null;
    } else if (m instanceof Dropout) {
      out.push(new Dropout(m.p));
    }
    // Identity: dropped.
  }
  const net = new PalQuantNet(out, { groups, wBits, aBits, shuffle });
  net.train(model.training);
  return net;
}

/** Throws unless running `layers` in order on `probe` reproduces model.forward(probe) (eval mode). */
function checkChain(model: TensorModule, layers: TensorModule[], probe: Tensor): void {
  const wasTraining = model.training;
  model.eval();
  try {
    noGrad(() => {
      const expected = model.forward(probe);
      let y = probe;
      try {
        for (const layer of layers) y = layer.forward(y);
      } catch (error) {
        throw new Error(`toPalQuant: the model is not a chain (its leaf layers run in registration order fail: ${(error as Error).message}); PalQuant needs a chain model such as a Sequential`);
      }
      const same = y.size === expected.size && y.data.every((v, k) => Math.abs(v - expected.data[k]!) <= 1e-5 * (1 + Math.abs(expected.data[k]!)));
      if (!same) throw new Error('toPalQuant: the model is not a chain (its leaf layers run in registration order do not reproduce its forward); PalQuant needs a chain model such as a Sequential');
    });
  } finally {
    model.train(wasTraining);
  }
}

/** The PalQuant layers of a model (shuffle convs included), with their names. */
export function palQuantLayers(model: Module): { name: string; layer: PalQuantLayer }[] {
  return model.namedModules().flatMap(([name, m]) => (m instanceof PalQuantLayer ? [{ name, layer: m }] : []));
}
