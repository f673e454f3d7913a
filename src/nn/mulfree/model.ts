/**
 * Multiplication-reduced models: swap a model's Conv2d / Linear layers for shift or adder layers
 * by name (a plan), count the operations each layer then needs, and estimate their energy.
 *
 * Progressive pretraining (NASA, after its PGP idea): train the multiplication model first, then
 * `toMulFree(trained, plan)` initialises each shift layer from the trained weights (rounded to
 * powers of two) and each adder layer with the trained filters, and the result is fine-tuned.
 * From scratch: the same call on an untrained model.
 */
import type { Tensor } from '../../tensor/tensor.ts';
import { noGrad } from '../../autograd/engine.ts';
import { Module, type TensorModule } from '../module.ts';
import { zeros } from '../../tensor/index.ts';
import { Conv2d } from '../conv.ts';
import { Linear } from '../linear.ts';
import { LeNet5 } from '../models/lenet5.ts';
import { BatchNorm } from '../batchnorm.ts';
import { ShiftConv2d, ShiftLinear, type ShiftOptions } from './shift.ts';
import { AdderConv2d, AdderLinear, type AdderOptions } from './adder.ts';

/** What a layer multiplies with: 'mult' (float / int8 multiply), 'shift' (DeepShift) or 'adder' (AdderNet). */
export type LayerKind = 'mult' | 'shift' | 'adder';

/** Layer name -> kind; layers not named keep their multiplications. */
export type MulFreePlan = Readonly<Record<string, LayerKind>>;

/** The weight layers of LeNet-5 in order. */
export const LENET5_WEIGHT_LAYERS = ['conv1', 'conv2', 'fc1', 'fc2', 'fc3'] as const;

function uniformPlan(kind: LayerKind): MulFreePlan {
  return Object.fromEntries(LENET5_WEIGHT_LAYERS.map((name) => [name, kind]));
}

/**
 * LeNet-5 variants: all-mult, all-shift, all-adder, and hybrid (first and last layer keep their
 * multiplications, conv2 is an adder layer, fc1 and fc2 are shift layers).
 */
export const LENET5_MULFREE_PLANS = {
  'all-mult': uniformPlan('mult'),
  'all-shift': uniformPlan('shift'),
  'all-adder': uniformPlan('adder'),
  hybrid: { conv1: 'mult', conv2: 'adder', fc1: 'shift', fc2: 'shift', fc3: 'mult' },
} as const satisfies Record<string, MulFreePlan>;

export type LeNet5MulFreeVariant = keyof typeof LENET5_MULFREE_PLANS;

export interface ToMulFreeOptions {
  shift?: Omit<ShiftOptions, 'bias' | 'rng'>;
  adder?: Omit<AdderOptions, 'rng'>;
}

/**
 * Replaces the named Conv2d / Linear submodules of `model` (in place) with shift or adder layers
 * initialised from their current weights (see the module doc); returns the model. Names must be
 * direct or dotted submodule paths of float layers; 'mult' entries are left alone.
 */
export function toMulFree<M extends Module>(model: M, plan: MulFreePlan, options: ToMulFreeOptions = {}): M {
  for (const [name, kind] of Object.entries(plan)) {
    if (kind !== 'mult' && kind !== 'shift' && kind !== 'adder') throw new Error(`toMulFree: layer '${name}' has unknown kind '${String(kind)}' (known: mult, shift, adder)`);
    const layer = model.getSubmodule(name);
    if (kind === 'mult') {
      if (!(layer instanceof Conv2d || layer instanceof Linear)) throw new Error(`toMulFree: '${name}' is a ${layer.constructor.name}, not a Conv2d or Linear`);
      continue;
    }
    let replacement: Module;
    if (layer instanceof Conv2d) replacement = kind === 'shift' ? ShiftConv2d.fromConv2d(layer, options.shift) : AdderConv2d.fromConv2d(layer, options.adder);
    else if (layer instanceof Linear) replacement = kind === 'shift' ? ShiftLinear.fromLinear(layer, options.shift) : AdderLinear.fromLinear(layer, options.adder);
    else throw new Error(`toMulFree: '${name}' is a ${layer.constructor.name}, not a Conv2d or Linear`);
    model.setSubmodule(name, replacement);
  }
  return model;
}

/** A LeNet-5 variant (fresh weights: the from-scratch start). */
export function mulFreeLeNet5(variant: LeNet5MulFreeVariant, options: ToMulFreeOptions = {}): LeNet5 {
  const plan: MulFreePlan | undefined = LENET5_MULFREE_PLANS[variant];
  if (!plan) throw new Error(`unknown LeNet-5 variant '${String(variant)}' (known: ${Object.keys(LENET5_MULFREE_PLANS).join(', ')})`);
  return toMulFree(new LeNet5(), plan, options);
}

/** Operations of one layer per sample. */
export interface LayerOps {
  readonly name: string;
  readonly kind: LayerKind;
  /** Weight positions per output times outputs (multiply-accumulates of the float layer). */
  readonly macs: number;
  readonly mults: number;
  readonly shifts: number;
  readonly adds: number;
  /** Weights, and bits each would be stored with (mult 8, shift exponent bits + 2-bit sign, adder 8). */
  readonly weights: number;
  readonly weightBits: number;
}

/**
 * Counts each weight layer's operations for one sample of shape `inputShape` (without the batch
 * dim), by running the model once (in eval mode, no gradients) and recording every layer's output size. Rules per
 * multiply-accumulate of the float layer:
 * - mult:  1 multiply + 1 add;
 * - shift: 1 shift + 1 add (weights with sign 0 cost nothing);
 * - adder: 2 adds (the subtraction x − w and the accumulation; |·| is a sign flip, not counted);
 *   plus the batch norm after it, at inference a per-output scale and shift: 1 multiply + 1 add per output.
 * Every layer with a bias adds 1 add per output.
 */
export function countMulFreeOps(model: TensorModule, inputShape: readonly number[]): LayerOps[] {
  const outputs = new Map<Module, number>();
  const layers: [string, WeightLayer][] = [];
  for (const [name, m] of model.namedModules()) if (isWeightLayer(m)) layers.push([name, m]);
  const wasTraining = model.training;
  try {
    for (const [, m] of layers) {
      const forward = m.forward;
      const hook = (x: Tensor): Tensor => {
        const y = forward.call(m, x);
        outputs.set(m, y.size / y.shape[0]!);
        return y;
      };
      Object.defineProperty(m, 'forward', { configurable: true, writable: true, value: hook });
    }
    model.eval();
    noGrad(() => model.forward(zeros([1, ...inputShape])));
  } finally {
    for (const [, m] of layers) Reflect.deleteProperty(m, 'forward');
    model.train(wasTraining);
  }
  return layers.map(([name, m]) => {
    const outPerSample = outputs.get(m);
    if (outPerSample === undefined) throw new Error(`countMulFreeOps: layer '${name}' did not run`);
    return layerOps(name, m, outPerSample);
  });
}

type WeightLayer = Conv2d | Linear | ShiftConv2d | ShiftLinear | AdderConv2d | AdderLinear;

function isWeightLayer(m: Module): m is WeightLayer {
  return m instanceof Conv2d || m instanceof Linear || m instanceof ShiftConv2d || m instanceof ShiftLinear || m instanceof AdderConv2d || m instanceof AdderLinear;
}

function kindOf(m: WeightLayer): LayerKind {
  if (m instanceof ShiftConv2d || m instanceof ShiftLinear) return 'shift';
  if (m instanceof AdderConv2d || m instanceof AdderLinear) return 'adder';
  return 'mult';
}

function layerOps(name: string, m: WeightLayer, outPerSample: number): LayerOps {
  const kind = kindOf(m);
  let weights: number;
  let nonZero: number;
  let weightBits = 8;
  if (m instanceof ShiftConv2d || m instanceof ShiftLinear) {
    weights = m.shift.size;
    nonZero = m.codes().signs.reduce((n, s) => n + (s !== 0 ? 1 : 0), 0);
    weightBits = Math.ceil(Math.log2(m.range[1] - m.range[0] + 1)) + 2;
  } else {
    weights = m.weight.size;
    nonZero = weights;
  }
  const hasBias = !(m instanceof AdderConv2d || m instanceof AdderLinear) && m.bias !== null;
  const outChannels = m instanceof Conv2d || m instanceof ShiftConv2d || m instanceof AdderConv2d ? m.outChannels : m.outFeatures;
  const macs = (weights / outChannels) * outPerSample;
  const biasAdds = hasBias ? outPerSample : 0;
  switch (kind) {
    case 'mult':
      return { name, kind, macs, mults: macs, shifts: 0, adds: macs + biasAdds, weights, weightBits };
    case 'shift': {
      const used = (nonZero / weights) * macs;
      return { name, kind, macs, mults: 0, shifts: used, adds: used + biasAdds, weights, weightBits };
    }
    case 'adder': {
      const bn = (m as AdderConv2d | AdderLinear).bn ? outPerSample : 0;
      return { name, kind, macs, mults: bn, shifts: 0, adds: 2 * macs + bn, weights, weightBits };
    }
  }
}

/** Energy per operation (pJ) of `mulFreeEnergy`. */
export interface MulFreeEnergyConstants {
  /** 8×8-bit integer multiply (costs.ts `mult8`: Horowitz, ISSCC 2014, 45 nm). */
  readonly mult: number;
  /** 32-bit integer add (costs.ts `add32`: Horowitz, ISSCC 2014, 45 nm). */
  readonly add: number;
  /**
   * 32-bit barrel shift: 0.13 pJ, the 45 nm ASIC figure of ShiftAddNet (You et al., NeurIPS 2020,
   * Table 1) as quoted there, not in costs.ts; an assumption to replace with your own figure.
   */
  readonly shift: number;
}

/**
 * mult and add are costs.ts' `mult8` and `add32` (written out here, a test checks they agree:
 * importing costs.ts would pull its node-only latency model into the browser build of nn).
 */
export const DEFAULT_MULFREE_ENERGY: MulFreeEnergyConstants = Object.freeze({
  mult: 0.2,
  add: 0.1,
  shift: 0.13,
});

/** Compute energy per sample (pJ): mults·mult + shifts·shift + adds·add (no memory traffic). */
export function mulFreeEnergy(ops: readonly LayerOps[], constants: Partial<MulFreeEnergyConstants> = {}): number {
  const c = { ...DEFAULT_MULFREE_ENERGY, ...constants };
  for (const [k, v] of Object.entries(c)) if (!(Number.isFinite(v) && v >= 0)) throw new Error(`mulFreeEnergy: constant ${k} must be a finite number >= 0, got ${v}`);
  return ops.reduce((e, l) => e + l.mults * c.mult + l.shifts * c.shift + l.adds * c.add, 0);
}

/**
 * Re-estimates every batch norm's running statistics of `model` with its weights fixed: resets
 * them, then runs up to `maxBatches` of `inputs` in training mode without gradients, averaging
 * the batch statistics cumulatively (momentum null for the pass; restored after). Adder layers
 * need it after training with large steps: their outputs (large negative sums) drift faster than a
 * momentum-0.1 running average follows, and evaluation with stale statistics collapses.
 * Returns the number of batches used. Every module keeps its own train/eval mode; with no batch at
 * all it throws and leaves the statistics as they were.
 */
export function reestimateBatchNorm(model: TensorModule, inputs: Iterable<Tensor>, maxBatches = 50): number {
  if (!(Number.isInteger(maxBatches) && maxBatches >= 1)) throw new Error(`reestimateBatchNorm: maxBatches must be a positive integer, got ${maxBatches}`);
  const norms = model.modules().filter((m): m is BatchNorm => m instanceof BatchNorm && m.trackRunningStats);
  if (norms.length === 0) return 0;
  const momenta = norms.map((m) => m.momentum);
  // Every module's own mode and every statistic, to put back as they were (no batch: nothing changes).
  const modes = model.modules().map((m) => [m, m.training] as const);
  const saved = norms.map((m) => m.buffers({ recurse: false }).map((t) => t.data.slice()));
  let used = 0;
  try {
    for (const m of norms) {
      m.resetRunningStats();
      setMomentum(m, null);
    }
    model.train();
    noGrad(() => {
      for (const x of inputs) {
        model.forward(x);
        if (++used === maxBatches) break;
      }
    });
  } finally {
    norms.forEach((m, i) => setMomentum(m, momenta[i]!));
    for (const [m, training] of modes) m.training = training;
    if (used === 0) norms.forEach((m, i) => m.buffers({ recurse: false }).forEach((t, j) => t.data.set(saved[i]![j]!)));
  }
  if (used === 0) throw new Error('reestimateBatchNorm: no input batches (the running statistics are left as they were)');
  return used;
}

function setMomentum(m: BatchNorm, momentum: number | null): void {
  Object.defineProperty(m, 'momentum', { value: momentum, writable: true, configurable: true, enumerable: true });
}
