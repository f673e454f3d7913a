/**
 * @internal Test fixtures of the search: a small MLP trained on four Gaussian blobs in 8
 * dimensions, with batches for calibration, evaluation and fine-tuning. Deterministic (seeded).
 */
import '../../backend/index.ts';
import { Sequential } from '../../nn/sequential.ts';
import { Linear } from '../../nn/linear.ts';
import { ReLU } from '../../nn/activation.ts';
import { Adam } from '../../optim/adam.ts';
import { crossEntropy } from '../../tensor/ops.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { Batch } from '../../train/fit.ts';
import type { SearchData } from './evaluate.ts';
import { allocateExact } from './allocate.ts';
import type { HaqEnvironment } from './haq.ts';

/** Four Gaussian blobs in 8 dimensions (centres ±1.2 on two axes, noise σ = `noise`): separable, but not by much. */
export function blobBatches(rng: Rng, batches: number, batchSize: number, noise = 0.7): Batch[] {
  const out: Batch[] = [];
  for (let b = 0; b < batches; b++) {
    const x = new Float32Array(batchSize * 8);
    const y = new Int32Array(batchSize);
    for (let i = 0; i < batchSize; i++) {
      const c = rng.int(4);
      y[i] = c;
      for (let d = 0; d < 8; d++) x[i * 8 + d] = noise * rng.normal();
      x[i * 8] += c & 1 ? 1.2 : -1.2;
      x[i * 8 + 1] += c & 2 ? 1.2 : -1.2;
    }
    out.push({ x: new Tensor(x, [batchSize, 8]), y: new Tensor(y, [batchSize]) });
  }
  return out;
}

/** An 8→24→24→4 MLP (three Linear layers 'l0', 'l2', 'l4' inside a Sequential) trained for `steps` Adam steps. */
export function trainedBlobMlp(seed = 0, steps = 150): { model: Sequential; data: SearchData & { train: Batch[] } } {
  const rng = new Rng(seed);
  const model = new Sequential(new Linear(8, 24, { rng }), new ReLU(), new Linear(24, 24, { rng }), new ReLU(), new Linear(24, 4, { rng }));
  const train = blobBatches(rng, 8, 64);
  const evalData = blobBatches(rng, 4, 128);
  const optimizer = new Adam(model.parameters(), { lr: 0.01 });
  model.train();
  for (let step = 0; step < steps; step++) {
    const { x, y } = train[step % train.length]!;
    optimizer.zeroGrad();
    crossEntropy(model.forward(x), y).backward();
    optimizer.step();
  }
  model.eval();
  return { model, data: { calibration: train.slice(0, 2), eval: evalData, train } };
}

/**
 * A HAQ problem with a known optimum: eight layers of 200–6,400 weights, widths {2, 3, 4, 5, 6, 8},
 * the size budget of uniform 3 bits, reward = −Σ_l s_l·4^−(b_l − 2) (each layer's quantization
 * noise power times a known sensitivity s_l), so that `allocateExact` gives the optimum. Features:
 * layer index and weight count.
 */
export function syntheticHaqProblem(): { env: HaqEnvironment; optimum: number; uniform: number; value: (plan: readonly number[]) => number } {
  const bits = [2, 3, 4, 5, 6, 8];
  const rng = new Rng(123);
  const counts = Array.from({ length: 8 }, () => Math.round(200 * 2 ** (rng.uniform() * 5)));
  const sensitivity = Array.from({ length: 8 }, () => 2 ** (rng.uniform() * 8 - 4));
  const error = (l: number, b: number): number => sensitivity[l]! * 4 ** -(b - 2);
  const budget = counts.reduce((s, c) => s + 3 * c, 0);
  const value = (plan: readonly number[]): number => -plan.reduce((s, k, l) => s + error(l, bits[k]!), 0);
  const env: HaqEnvironment = {
    decisions: counts.map((c, l) => ({ features: [l, c], choices: bits.length, kind: 'weight' })),
    budgets: [budget],
    costs: (plan) => [plan.reduce((s, k, l) => s + counts[l]! * bits[k]!, 0)],
    reward: value,
  };
  const options = counts.map((c, l) => ({ name: `l${l}`, options: bits.map((b) => ({ choice: { w: b, a: 8 }, cost: c * b, error: error(l, b) })) }));
  return { env, optimum: -allocateExact(options, budget).error, uniform: value(counts.map(() => 1)), value };
}
