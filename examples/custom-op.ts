/**
 * A custom op and a custom layer, gradient-checked.
 *
 * lowbit has a closed set of primitive ops, each with one gradient rule; a new op is a function
 * composed of public tensor ops, so autograd differentiates it for free (second derivatives too).
 * This example
 *   1. defines swish_β(x) = x · sigmoid(β·x) with a learnable β per feature,
 *   2. checks its forward against the closed form and its gradients (w.r.t. x and β) against
 *      float64 central differences with `gradcheck`,
 *   3. wraps it in an nn.Module (a registered parameter, so optimizers and state dicts see it),
 *   4. adds a straight-through rounding op built with `detach()` (forward: round, backward:
 *      identity), the trick behind quantization-aware training,
 *   5. trains a small MLP using both on MNIST for a moment.
 *
 *   npx tsx examples/custom-op.ts
 *   LOWBIT_EXAMPLE_QUICK=1 npx tsx examples/custom-op.ts   # tiny settings (what the tests run)
 */
import {
  add, data, evaluate, fit, formatPercent, gradcheck, manualSeed, mul, nn, optim, randn, round, sigmoid, sub, Tensor, tensor,
} from 'lowbit';

const quick = process.env.LOWBIT_EXAMPLE_QUICK === '1';

// ---- 1. the op: x [N, F], beta [F] (broadcast over the batch)
function swish(x: Tensor, beta: Tensor): Tensor {
  return mul(x, sigmoid(mul(x, beta)));
}

// ---- 2. forward against the closed form, gradients against finite differences (float64)
manualSeed(0);
const x64 = randn([4, 3], { dtype: 'float64' }).requiresGrad_();
const beta64 = tensor([0.5, 1, 2], [3], 'float64').requiresGrad_();
const y = swish(x64, beta64);
let forwardError = 0;
for (let i = 0; i < 4 * 3; i++) {
  const xi = x64.data[i]!;
  const b = beta64.data[i % 3]!;
  forwardError = Math.max(forwardError, Math.abs(y.data[i]! - xi / (1 + Math.exp(-b * xi))));
}
console.log(`swish forward vs closed form: max |error| ${forwardError.toExponential(2)}`);
if (forwardError > 1e-12) throw new Error('swish forward is wrong');

// gradcheck compares autograd's vector–Jacobian product with float64 central differences.
const check = gradcheck(swish, [x64, beta64]);
console.log(`swish gradcheck (x, beta): max relative error ${check.maxRelativeError.toExponential(2)}`);
if (!(check.maxRelativeError < 1e-6)) throw new Error('swish gradient does not match finite differences');

// ---- 3. a layer around it
class LearnedSwish extends nn.Module {
  readonly beta: Tensor;

  constructor(features: number) {
    super();
    // Parameters are leaves that require gradients; registering names them 'beta' in stateDict().
    this.beta = this.registerParameter('beta', tensor(new Array<number>(features).fill(1), [features]).requiresGrad_());
  }

  forward(x: Tensor): Tensor {
    return swish(x, this.beta);
  }
}

// ---- 4. straight-through rounding: forward rounds to a grid of `step`, backward passes the
// gradient through unchanged (round's own gradient is zero, so it must not be on the tape).
function roundSte(x: Tensor, step: number): Tensor {
  const rounded = mul(round(mul(x, 1 / step)), step);
  return add(x, sub(rounded, x).detach()); // value: rounded; gradient: d/dx x = 1
}
const probe = tensor([0.26, -0.74, 1.1], [3]).requiresGrad_();
const steRounded = roundSte(probe, 0.5);
steRounded.backward(tensor([1, 2, 3], [3]));
console.log(`roundSte([0.26, -0.74, 1.1], 0.5) = [${steRounded.toArray().join(', ')}], gradient [${probe.grad!.toArray().join(', ')}]`);

/** A layer that rounds its input to a grid of `step`, with the straight-through gradient. */
class RoundedInput extends nn.Module {
  constructor(readonly step: number) {
    super();
  }

  forward(x: Tensor): Tensor {
    return roundSte(x, this.step);
  }
}

// ---- 5. train an MLP with both
const stats = data.DATASET_STATS.mnist;
const train = data.take(data.loadDataset('mnist', 'train'), quick ? 3000 : 60000);
const test = data.take(data.loadDataset('mnist', 'test'), quick ? 1000 : 10000);
const trainLoader = new data.DataLoader(train, { batchSize: 64, shuffle: true, seed: 0, normalize: stats });
const testLoader = new data.DataLoader(test, { batchSize: 256, normalize: stats });

const activation = new LearnedSwish(128);
const model = new nn.Sequential(new nn.Flatten(), new nn.Linear(784, 128), activation, new RoundedInput(1 / 16), new nn.Linear(128, 10));
fit(model, { trainLoader, optimizer: new optim.Adam(model.parameters(), { lr: 2e-3 }), epochs: 1, progress: false });
const beta = activation.beta.toArray();
const meanBeta = beta.reduce((s, b) => s + b, 0) / beta.length;
console.log(`beta after training: mean ${meanBeta.toFixed(3)}, range [${Math.min(...beta).toFixed(3)}, ${Math.max(...beta).toFixed(3)}]`);
console.log(`state dict keys: ${[...model.stateDict().keys()].join(', ')}`);
console.log(`MLP with LearnedSwish and roundSte: test accuracy ${formatPercent(evaluate(model, testLoader).accuracy)}`);
