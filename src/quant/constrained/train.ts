/**
 * Convenience training entry points for the constrained methods, built on `train/fit`.
 *
 * `fit` has no per-step hook, but it only talks to the optimizer through `step()` / `zeroGrad()`,
 * so ADMM plugs in as an optimizer wrapper (`admmOptimizer`): each `step()` adds the penalty
 * gradient ρ(W − G + U), steps the inner optimizer, then runs the ADMM G/U update. ρ grows in
 * `onEpochEnd`. AskewSGD is an optimizer already.
 */
import type { Module, TensorModule } from '../../nn/module.ts';
import { SGD } from '../../optim/sgd.ts';
import { Adam } from '../../optim/adam.ts';
import { evaluate, fit, type BatchSource, type EpochRecord, type History, type LossFn, type TrainOptimizer } from '../../train/fit.ts';
import { AdmmQuantizer, type AdmmOptions, type QuantizedTensorExport } from './admm.ts';
import { AskewSGD, askewParamGroups, decayFor, type AskewOptions } from './askew.ts';

/** An optimizer that runs ADMM around `inner` (see the file comment). */
export function admmOptimizer(inner: TrainOptimizer, admm: AdmmQuantizer): TrainOptimizer & { readonly lr?: number } {
  return {
    step(): void {
      admm.addGradients();
      inner.step();
      admm.step();
    },
    zeroGrad(): void {
      inner.zeroGrad();
    },
    stateDict(): unknown {
      return inner.stateDict?.();
    },
    get lr(): number | undefined {
      const lr = (inner as { lr?: unknown }).lr;
      return typeof lr === 'number' ? lr : undefined;
    },
  };
}

export interface ConstrainedLoaders {
  readonly train: BatchSource;
  readonly test?: BatchSource;
}

export interface ConstrainedTrainOptions {
  epochs: number;
  /** Default 0.01 (SGD) / 1e-3 (Adam). */
  lr?: number;
  /** SGD momentum (default 0.9). */
  momentum?: number;
  weightDecay?: number;
  seed?: number;
  progress?: boolean;
  log?: (line: string) => void;
  lossFn?: LossFn;
  onEpochEnd?: (record: EpochRecord, history: History) => void;
}

export interface ConstrainedTrainResult {
  history: History;
  /** Per-layer quantized weights after `finalize()` (the model is then exactly quantized). */
  layers: QuantizedTensorExport[];
  /** Test accuracy of the (still continuous) weights at the end of training, if a test loader was given. */
  accuracyBeforeFinalize?: number;
  /** Test accuracy of the exactly quantized model. */
  accuracy?: number;
  /** Per epoch: ADMM Σ‖W − G‖/‖W‖, or AskewSGD's RMS distance to the grid (units of α). */
  violation: number[];
}

/**
 * Trains `model` with ADMM low-bit constraints (inner optimizer SGD with momentum, or Adam), then
 * hard-projects the weights and evaluates.
 */
export function trainAdmm(
  model: TensorModule,
  loaders: ConstrainedLoaders,
  options: ConstrainedTrainOptions & { admm?: AdmmOptions; optimizer?: 'sgd' | 'adam' },
): ConstrainedTrainResult & { admm: AdmmQuantizer } {
  const admm = new AdmmQuantizer(model as Module, options.admm ?? {});
  const inner = options.optimizer === 'adam'
    ? new Adam(model.parameters(), { lr: options.lr ?? 1e-3, weightDecay: options.weightDecay ?? 0 })
    : new SGD(model.parameters(), { lr: options.lr ?? 0.01, momentum: options.momentum ?? 0.9, weightDecay: options.weightDecay ?? 0 });
  const violation: number[] = [];
  const history = fit(model, {
    trainLoader: loaders.train,
    ...(loaders.test ? { testLoader: loaders.test } : {}),
    optimizer: admmOptimizer(inner, admm),
    epochs: options.epochs,
    ...common(options),
    onEpochEnd: (record, h) => {
      violation.push(admm.constraintViolation());
      admm.epochEnd();
      options.onEpochEnd?.(record, h);
    },
  });
  return { ...finish(model, loaders, options.lossFn, () => admm.finalize()), history, violation, admm };
}

/**
 * Trains `model` with AskewSGD (weights of rank >= 2 constrained, the rest plain SGD): the first
 * `warmupFraction` of the steps (default 0.25; 0 for a pretrained model) are unconstrained SGD,
 * then α is fitted and, unless `askew.decay` is given, ε decays geometrically from `epsilon0` to
 * `epsilonMin` over `annealFraction` (default 0.8) of the remaining steps and is 0 afterwards;
 * finally the weights are snapped to the grid and evaluated.
 */
export function trainAskew(
  model: TensorModule,
  loaders: ConstrainedLoaders,
  options: ConstrainedTrainOptions & { askew?: AskewOptions; annealFraction?: number; warmupFraction?: number },
): ConstrainedTrainResult & { optimizer: AskewSGD } {
  const askew = options.askew ?? {};
  const epsilon0 = askew.epsilon0 ?? 0.5;
  const epsilonMin = askew.epsilonMin ?? 1e-3;
  const total = (loaders.train.length ?? 0) * options.epochs;
  const warmupSteps = askew.warmupSteps ?? Math.floor(total * (options.warmupFraction ?? 0.25));
  const steps = total - warmupSteps;
  const decay = askew.decay ?? (steps > 0 ? decayFor(Math.max(1, Math.floor(steps * (options.annealFraction ?? 0.8))), epsilon0, epsilonMin) : 0.999);
  const optimizer = new AskewSGD(askewParamGroups(model as Module), {
    bits: 2,
    ...askew,
    epsilon0,
    epsilonMin,
    decay,
    warmupSteps,
    lr: options.lr ?? askew.lr ?? 0.01,
    momentum: options.momentum ?? askew.momentum ?? 0.9,
    weightDecay: options.weightDecay ?? askew.weightDecay ?? 0,
  });
  const violation: number[] = [];
  const history = fit(model, {
    trainLoader: loaders.train,
    ...(loaders.test ? { testLoader: loaders.test } : {}),
    optimizer,
    epochs: options.epochs,
    ...common(options),
    onEpochEnd: (record, h) => {
      violation.push(optimizer.distanceToGrid().rms);
      options.onEpochEnd?.(record, h);
    },
  });
  return { ...finish(model, loaders, options.lossFn, () => optimizer.finalize(model as Module)), history, violation, optimizer };
}

function common(options: ConstrainedTrainOptions): { seed?: number; progress: boolean; log?: (line: string) => void; lossFn?: LossFn } {
  return {
    progress: options.progress ?? false,
    ...(options.seed !== undefined ? { seed: options.seed } : {}),
    ...(options.log ? { log: options.log } : {}),
    ...(options.lossFn ? { lossFn: options.lossFn } : {}),
  };
}

function finish(
  model: TensorModule,
  loaders: ConstrainedLoaders,
  lossFn: LossFn | undefined,
  finalize: () => QuantizedTensorExport[],
): { layers: QuantizedTensorExport[]; accuracyBeforeFinalize?: number; accuracy?: number } {
  const before = loaders.test ? evaluate(model, loaders.test, lossFn).accuracy : undefined;
  const layers = finalize();
  const after = loaders.test ? evaluate(model, loaders.test, lossFn).accuracy : undefined;
  return {
    layers,
    ...(before !== undefined ? { accuracyBeforeFinalize: before } : {}),
    ...(after !== undefined ? { accuracy: after } : {}),
  };
}
