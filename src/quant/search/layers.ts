/**
 * describeLayers: the quantizable layers of a model with the shapes and MAC counts the cost
 * models need, found by one forward pass of a zero sample.
 */
import { noGrad } from '../../autograd/engine.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Conv1d } from '../../nn/conv1d.ts';
import { Linear } from '../../nn/linear.ts';
import type { Module } from '../../nn/module.ts';
import { zeros, type Tensor } from '../../tensor/tensor.ts';
import { quantizableLayers } from '../config/plan.ts';
import type { LayerInfo } from './types.ts';

type Forward = Module & { forward(x: Tensor): Tensor };

/**
 * The Conv2d, Conv1d and Linear layers of a float `model` in forward order (a Conv1d's `conv` is
 * its conv2d geometry on height 1: kernelSize [1, k], stride [1, s], padding [0, p], dilation [1, d]), each with its weight count,
 * output channels, MACs per sample and per-sample input/output shapes. `inputShape` is one
 * sample's shape without the batch dimension (e.g. [1, 28, 28]). The model runs once on a zero
 * batch of one sample in eval mode, without gradient; its train/eval mode is restored. Layers the
 * forward never reaches are refused (a search would allocate bits to a layer that costs nothing).
 */
export function describeLayers(model: Module, inputShape: readonly number[]): LayerInfo[] {
  if (!Array.isArray(inputShape) || inputShape.length === 0 || inputShape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`describeLayers: inputShape must list positive integers (one sample, no batch dim), got ${JSON.stringify(inputShape)}`);
  }
  const forward = model as Forward;
  if (typeof forward.forward !== 'function') throw new Error('describeLayers: the model has no forward(x)');
  const layers = quantizableLayers(model);
  if (layers.length === 0) throw new Error(`describeLayers: ${model.constructor.name} has no Conv2d, Conv1d or Linear layer (already prepared for QAT?)`);
  const seen: { name: string; inShape: number[]; outShape: number[] }[] = [];
  const patched: Module[] = [];
  for (const { name, module } of layers) {
    const original = module.forward.bind(module);
    // An own property shadows the class method for this one pass; deleted in `finally`.
    Object.defineProperty(module, 'forward', {
      configurable: true,
      writable: true,
      value: (x: Tensor): Tensor => {
        const y = original(x);
        seen.push({ name, inShape: x.shape.slice(1), outShape: y.shape.slice(1) });
        return y;
      },
    });
    patched.push(module);
  }
  const wasTraining = model.training;
  model.eval();
  try {
    noGrad(() => forward.forward(zeros([1, ...inputShape])));
  } finally {
    for (const m of patched) delete (m as unknown as Record<string, unknown>)['forward'];
    model.train(wasTraining);
  }
  const byName = new Map(layers.map((l) => [l.name, l]));
  const out: LayerInfo[] = [];
  const done = new Set<string>();
  for (const s of seen) {
    if (done.has(s.name)) throw new Error(`describeLayers: layer '${s.name}' runs twice in one forward (weight sharing is not supported by the search)`);
    done.add(s.name);
    const { module, type } = byName.get(s.name)!;
    const outElements = s.outShape.reduce((p, d) => p * d, 1);
    if (module instanceof Conv2d) {
      const reduction = (module.inChannels / module.groups) * module.kernelSize[0] * module.kernelSize[1];
      out.push({
        name: s.name, type, weightCount: module.weight.size, outChannels: module.outChannels, macs: outElements * reduction,
        inShape: s.inShape, outShape: s.outShape, reduction,
        conv: {
          inChannels: module.inChannels, kernelSize: [...module.kernelSize], stride: [...module.stride],
          padding: [...module.padding], dilation: [...module.dilation], groups: module.groups,
        },
      });
    } else if (module instanceof Conv1d) {
      const reduction = (module.inChannels / module.groups) * module.kernelSize;
      out.push({
        name: s.name, type, weightCount: module.weight.size, outChannels: module.outChannels, macs: outElements * reduction,
        inShape: s.inShape, outShape: s.outShape, reduction,
        conv: {
          inChannels: module.inChannels, kernelSize: [1, module.kernelSize], stride: [1, module.stride],
          padding: [0, module.padding], dilation: [1, module.dilation], groups: module.groups,
        },
      });
    } else if (module instanceof Linear) {
      out.push({
        name: s.name, type, weightCount: module.weight.size, outChannels: module.outFeatures, macs: outElements * module.inFeatures,
        inShape: s.inShape, outShape: s.outShape, reduction: module.inFeatures,
      });
    }
  }
  const missing = layers.filter((l) => !done.has(l.name)).map((l) => l.name);
  if (missing.length > 0) throw new Error(`describeLayers: layers ${missing.join(', ')} are not used by the forward pass`);
  return out;
}
