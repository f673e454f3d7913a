/**
 * The layer chain of a feed-forward model: its leaf modules in forward order, checked against the
 * model's own forward, with each leaf's output shape. Channel expansion works on this chain (a
 * widened layer changes the input width of the next weighted layer, and everything per-channel
 * in between).
 */
import { noGrad } from '../../autograd/engine.ts';
import { ReLU, Identity } from '../../nn/activation.ts';
import { BatchNorm1d, BatchNorm2d } from '../../nn/batchnorm.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Dropout } from '../../nn/dropout.ts';
import { Flatten } from '../../nn/flatten.ts';
import { Linear } from '../../nn/linear.ts';
import type { Module, TensorModule } from '../../nn/module.ts';
import { AvgPool2d, MaxPool2d } from '../../nn/pooling.ts';
import { Sequential } from '../../nn/sequential.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { QuantLayer } from '../qat/layers.ts';

/** Leaf module classes a chain may hold (what `resizeChain` knows how to rebuild). */
export type ChainModule = Conv2d | Linear | BatchNorm1d | BatchNorm2d | ReLU | MaxPool2d | AvgPool2d | Flatten | Dropout | Identity;

/** One leaf of a chain. */
export interface ChainLayer {
  /** Dotted name in the source model (e.g. 'conv1', 'features.3'). */
  readonly name: string;
  readonly module: ChainModule;
  /** Per-sample input shape (no batch dim). */
  readonly inShape: readonly number[];
  /** Per-sample output shape (no batch dim). */
  readonly outShape: readonly number[];
}

/** Error of the channel-expansion code on a model it cannot handle. */
export class NceError extends Error {
  override name = 'NceError';
}

function isChainModule(m: Module): m is ChainModule {
  const classes = [Conv2d, Linear, BatchNorm1d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout, Identity];
  return classes.some((c) => m.constructor === c);
}

function leaves(module: Module, prefix: string, out: { name: string; module: Module }[]): void {
  const children = module.namedChildren();
  if (children.length === 0) {
    out.push({ name: prefix, module });
    return;
  }
  for (const [name, child] of children) leaves(child, prefix === '' ? name : `${prefix}.${name}`, out);
}

/**
 * The leaves of a float feed-forward `model` (registration order, recursing into containers), as a
 * chain whose composition is checked to equal `model.forward` on a pseudo-random probe batch of two
 * samples of `inputShape` (eval mode, no gradient; the model's mode is restored). Refuses (NceError)
 * prepared (fake-quant) models, grouped convolutions, leaf classes outside `ChainModule`, and models
 * whose forward is not the chain of their leaves (residual adds, functional ops, reordering).
 */
export function modelChain(model: TensorModule, inputShape: readonly number[]): ChainLayer[] {
  if (!Array.isArray(inputShape) || inputShape.length === 0 || inputShape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new NceError(`modelChain: inputShape must list positive integers (one sample, no batch dim), got ${JSON.stringify(inputShape)}`);
  }
  if (model.modules().some((m) => m instanceof QuantLayer)) throw new NceError('modelChain: the model is prepared for QAT; pass the float model');
  const found: { name: string; module: Module }[] = [];
  leaves(model, '', found);
  for (const { name, module } of found) {
    if (!isChainModule(module)) throw new NceError(`modelChain: layer '${name}' is a ${module.constructor.name}; supported: Conv2d, Linear, BatchNorm1d/2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout, Identity`);
    if (module instanceof Conv2d && module.groups !== 1) throw new NceError(`modelChain: conv '${name}' has groups = ${module.groups}; only groups = 1 can change width`);
  }
  const rng = new Rng(12345);
  const size = 2 * inputShape.reduce((p, d) => p * d, 1);
  const probe = new Tensor(Float32Array.from({ length: size }, () => rng.normal()), [2, ...inputShape]);
  const wasTraining = model.training;
  model.eval();
  const chain: ChainLayer[] = [];
  try {
    noGrad(() => {
      const expected = model.forward(probe);
      let y = probe;
      for (const { name, module } of found) {
        const x = y;
        try {
          y = (module as ChainModule).forward(x);
        } catch (error) {
          throw new NceError(`modelChain: the forward of ${model.constructor.name} is not the chain of its leaves (layer '${name}' fails on [${x.shape.join(', ')}]: ${(error as Error).message})`);
        }
        chain.push({ name, module: module as ChainModule, inShape: x.shape.slice(1), outShape: y.shape.slice(1) });
      }
      const same = y.shape.length === expected.shape.length && y.shape.every((d, i) => d === expected.shape[i]) &&
        y.data.every((v, i) => Math.abs(v - expected.data[i]!) <= 1e-5 * (1 + Math.abs(expected.data[i]!)));
      if (!same) throw new NceError(`modelChain: the forward of ${model.constructor.name} is not the chain of its leaves in registration order (outputs differ on a probe)`);
    });
  } finally {
    model.train(wasTraining);
  }
  return chain;
}

/** A Sequential running the chain's modules (the same instances) in order. */
export function chainToSequential(chain: readonly ChainLayer[]): Sequential {
  return new Sequential(...chain.map((l) => l.module));
}

/** The weighted (Conv2d / Linear) layers of a chain with their chain indices. */
export function weightedLayers(chain: readonly ChainLayer[]): { index: number; layer: ChainLayer & { module: Conv2d | Linear } }[] {
  const out: { index: number; layer: ChainLayer & { module: Conv2d | Linear } }[] = [];
  chain.forEach((layer, index) => {
    if (layer.module instanceof Conv2d || layer.module instanceof Linear) out.push({ index, layer: layer as ChainLayer & { module: Conv2d | Linear } });
  });
  return out;
}
