/**
 * The view of a model that the attacks work on: pixels in, logits out, with the dataset's
 * normalization inside so that perturbation budgets (eps) are in pixel units, and the model held
 * in eval mode with its parameters out of the graph while an attack runs.
 */
import { grad } from '../autograd/index.ts';
import type { NormalizeStats } from '../data/index.ts';
import type { Module, TensorModule } from '../nn/index.ts';
import { div, sub, Tensor } from '../tensor/index.ts';

/** A classifier as the attacks see it: x [N, C, H, W] in pixel space -> logits [N, classes]. */
export type Classify = (x: Tensor) => Tensor;

/** `model` behind the dataset normalization `(x - mean) / std` (per channel or scalar). */
export function classifierOf(model: TensorModule, normalize?: NormalizeStats): Classify {
  if (!normalize) return (x) => model.forward(x);
  let cached: { channels: number; mean: Tensor; std: Tensor } | null = null;
  return (x) => {
    if (x.rank !== 4) throw new Error(`attack: expected images [N, C, H, W], got shape [${x.shape.join(', ')}]`);
    const channels = x.shape[1]!;
    if (!cached || cached.channels !== channels) {
      cached = { channels, mean: channelTensor(normalize.mean, channels, 'mean'), std: channelTensor(normalize.std, channels, 'std') };
    }
    return model.forward(div(sub(x, cached.mean), cached.std));
  };
}

function channelTensor(value: number | readonly number[], channels: number, what: string): Tensor {
  const values = typeof value === 'number' ? new Array<number>(channels).fill(value) : [...value];
  if (values.length !== channels) throw new Error(`attack: normalize.${what} has ${values.length} values for ${channels} channels`);
  if (values.some((v) => !Number.isFinite(v)) || (what === 'std' && values.some((v) => !(v > 0)))) {
    throw new Error(`attack: normalize.${what} must be finite${what === 'std' ? ' and positive' : ''}, got [${values.join(', ')}]`);
  }
  return new Tensor(Float32Array.from(values), [1, channels, 1, 1]);
}

/**
 * Runs `fn` with `model` in eval mode and none of its parameters requiring gradients, then puts
 * back every module's training flag, every parameter's `requiresGrad` and the values of every
 * parameter and buffer: an attack needs the input gradient only, accumulates nothing in `.grad`
 * and leaves the model as it found it, also when its forward initializes state lazily (the LSQ
 * step and the observers of a fake-quant model that never ran).
 */
export function withFrozenModel<T>(model: Module, fn: () => T): T {
  const modes = model.modules().map((m) => [m, m.training] as const);
  const flags = model.parameters().map((p) => [p, p.requiresGrad] as const);
  const values = [...model.parameters(), ...model.buffers()].map((t) => [t.data, t.data.slice()] as const);
  model.eval();
  for (const [p] of flags) p.requiresGrad = false;
  try {
    return fn();
  } finally {
    for (const [data, saved] of values) data.set(saved as never);
    for (const [p, flag] of flags) p.requiresGrad = flag;
    for (const [m, mode] of modes) m.training = mode;
  }
}

/**
 * Logits of `x` and the per-sample logit-to-input Jacobians (by the model's backward pass, so
 * straight-through estimators count as the attack sees them): `jacobian[i]` holds sample i's
 * `classes × D` matrix row-major (D = values per sample), in float64. One forward, `classes`
 * backward passes. @internal used by the temperature rules.
 */
export function logitJacobians(classify: Classify, x: Tensor): { logits: Float32Array; classes: number; jacobians: Float64Array[] } {
  const input = new Tensor(x.data.slice(), x.shape, true);
  const logits = classify(input);
  if (logits.rank !== 2 || logits.shape[0] !== x.shape[0]) throw new Error(`attack: the model must return logits [N, classes], got [${logits.shape.join(', ')}]`);
  const n = logits.shape[0]!;
  const classes = logits.shape[1]!;
  const per = x.size / Math.max(1, n);
  const jacobians = Array.from({ length: n }, () => new Float64Array(classes * per));
  for (let c = 0; c < classes; c++) {
    const pick = new Float32Array(n * classes);
    for (let i = 0; i < n; i++) pick[i * classes + c] = 1;
    const [g] = grad(logits, [input], { gradOutputs: [new Tensor(pick, [n, classes])] });
    const data = g!.data;
    for (let i = 0; i < n; i++) {
      const row = jacobians[i]!;
      for (let k = 0; k < per; k++) row[c * per + k] = data[i * per + k]!;
    }
  }
  return { logits: Float32Array.from(logits.data), classes, jacobians };
}
