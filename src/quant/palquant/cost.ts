/**
 * Cost of a PalQuantNet on a low-precision accelerator, with the search package's cost models
 * (src/quant/search/costs.ts: `bitSerialCost`, `bitOpsCost`, ...). Each quantized layer (PalQuant
 * layers and the convs inside CyclicShuffle modules) is described as a search `LayerInfo` with
 * its MACs per sample (all G groups) and priced at its wBits/aBits; the float first and last
 * layers cannot run on a low-bit unit and are reported apart (their MACs), as in the paper.
 */
import { noGrad } from '../../autograd/engine.ts';
import { zeros } from '../../tensor/index.ts';
import type { Tensor } from '../../tensor/index.ts';
import type { TensorModule } from '../../nn/module.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Linear } from '../../nn/linear.ts';
import { Quantizer } from '../quantizers/quantizer.ts';
import { bitSerialCost } from '../search/costs.ts';
import type { CostModel, LayerInfo } from '../search/types.ts';
import { CyclicShuffle, PalQuantLayer } from './layers.ts';
import type { PalQuantNet } from './convert.ts';
import { cyclicPermuteGroups } from './permute.ts';

/** One layer of the cost table. */
export interface PalQuantLayerCost {
  readonly name: string;
  /** 'palquant' (quantized groups), 'shuffle' (the quantized conv of a CyclicShuffle) or 'float'. */
  readonly role: 'palquant' | 'shuffle' | 'float';
  /** Multiply-accumulates per sample, all groups. */
  readonly macs: number;
  readonly wBits: number | null;
  readonly aBits: number | null;
  /** Cost under the model (null for float layers). */
  readonly cost: number | null;
}

/** The cost table of a PalQuantNet. */
export interface PalQuantCost {
  readonly model: string;
  readonly unit: string;
  readonly layers: readonly PalQuantLayerCost[];
  /** Σ cost of the quantized layers. */
  readonly total: number;
  /** Σ MACs of the quantized layers and of the float ones. */
  readonly quantizedMacs: number;
  readonly floatMacs: number;
}

function layerInfo(name: string, layer: PalQuantLayer, inShape: readonly number[], outShape: readonly number[]): LayerInfo {
  const geo = layer.geometry();
  const reduction = (geo.inChannels / geo.innerGroups) * geo.kernelSize[0] * geo.kernelSize[1];
  const outElements = outShape.reduce((p, d) => p * d, 1);
  return {
    name, type: layer.kind === 'conv2d' ? 'Conv2d' : 'Linear', weightCount: layer.weight.size, outChannels: layer.weight.shape[0]!,
    macs: outElements * reduction, inShape, outShape, reduction,
  };
}

function floatMacs(layer: Conv2d | Linear, outShape: readonly number[]): number {
  const outElements = outShape.reduce((p, d) => p * d, 1);
  if (layer instanceof Linear) return outElements * layer.inFeatures;
  return outElements * (layer.inChannels / layer.groups) * layer.kernelSize[0] * layer.kernelSize[1];
}

/**
 * Per-layer and total cost of `net` on one sample of shape `inputShape` (no batch dim) under
 * `costModel` (default: `bitSerialCost()`, a BitFusion-like array of 2-bit bricks, where a w×a MAC
 * takes ⌈w/2⌉·⌈a/2⌉ brick operations, so a 4-bit layer costs 4× the 2-bit one; unit: cycles).
 * Shapes are traced with one zero sample in eval mode with fake quantization off (both restored).
 */
export function palQuantCost(net: PalQuantNet, inputShape: readonly number[], costModel: CostModel = bitSerialCost()): PalQuantCost {
  const rows: PalQuantLayerCost[] = [];
  const wasTraining = net.training;
  // Fake quantization off while tracing: a zero sample must not initialise LSQ steps.
  const quantizers = net.modules().filter((m): m is Quantizer => m instanceof Quantizer);
  const enabled = quantizers.map((q) => q.fakeQuantEnabled);
  for (const q of quantizers) q.fakeQuantEnabled = false;
  net.eval();
  try {
    noGrad(() => {
      let x: Tensor = zeros([1, ...inputShape]);
      [...net].forEach((layer: TensorModule, i: number) => {
        const y = layer.forward(x);
        const name = String(i);
        if (layer instanceof PalQuantLayer) {
          rows.push(priced(name, 'palquant', layer, x.shape.slice(1), y.shape.slice(1), net, costModel));
        } else if (layer instanceof CyclicShuffle) {
          const inner = cyclicPermuteGroups(x, layer.groups, layer.shift);
          const convOut = layer.conv.forward(inner);
          rows.push(priced(`${name}.conv`, 'shuffle', layer.conv, inner.shape.slice(1), convOut.shape.slice(1), net, costModel));
        } else if (layer instanceof Conv2d || layer instanceof Linear) {
          rows.push({ name, role: 'float', macs: floatMacs(layer, y.shape.slice(1)), wBits: null, aBits: null, cost: null });
        }
        x = y;
      });
    });
  } finally {
    net.train(wasTraining);
    quantizers.forEach((q, i) => { q.fakeQuantEnabled = enabled[i]!; });
  }
  const quantized = rows.filter((r) => r.role !== 'float');
  return {
    model: costModel.name,
    unit: costModel.unit,
    layers: rows,
    total: quantized.reduce((p, r) => p + r.cost!, 0),
    quantizedMacs: quantized.reduce((p, r) => p + r.macs, 0),
    floatMacs: rows.filter((r) => r.role === 'float').reduce((p, r) => p + r.macs, 0),
  };
}

function priced(name: string, role: 'palquant' | 'shuffle', layer: PalQuantLayer, inShape: readonly number[], outShape: readonly number[], net: PalQuantNet, costModel: CostModel): PalQuantLayerCost {
  const info = layerInfo(name, layer, inShape, outShape);
  return { name, role, macs: info.macs, wBits: net.wBits, aBits: net.aBits, cost: costModel.layerCost(info, net.wBits, net.aBits) };
}
