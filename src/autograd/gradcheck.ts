import type { Tensor } from '../tensor/tensor.ts';
import { Tensor as TensorClass } from '../tensor/tensor.ts';
import { mul, sum } from '../tensor/ops.ts';
import { Rng } from '../tensor/random.ts';
import { grad } from './engine.ts';

export interface GradcheckResult {
  /** Largest relative error over inputs: ‖analytic − numeric‖ / max(‖analytic‖, ‖numeric‖, 1e-12). */
  maxRelativeError: number;
  /** Per input, the same measure. */
  relativeErrors: number[];
  analytic: Float64Array[];
  numeric: Float64Array[];
}

/**
 * Compares the autograd gradient of `f` with float64 central differences.
 * The scalar checked is Σ f(x)·R for a fixed random R, so one backward pass exercises the whole
 * vector–Jacobian product. Inputs must be float64 tensors; those with `requiresGrad` are checked.
 */
export function gradcheck(f: (...xs: Tensor[]) => Tensor, inputs: readonly Tensor[], options: { eps?: number; seed?: number } = {}): GradcheckResult {
  const eps = options.eps ?? 1e-6;
  for (const x of inputs) {
    if (x.requiresGrad && x.dtype !== 'float64') throw new Error('gradcheck needs float64 inputs');
  }
  const probe = f(...inputs);
  const rng = new Rng(options.seed ?? 1234);
  const r = new Float64Array(probe.size);
  for (let i = 0; i < r.length; i++) r[i] = rng.uniform() * 2 - 1;
  const weights = new TensorClass(r, probe.shape);
  // Grad mode stays on: f may itself differentiate (double-backward checks).
  const objective = (): number => {
    const y = f(...inputs);
    let s = 0;
    for (let i = 0; i < r.length; i++) s += y.data[i]! * r[i]!;
    return s;
  };

  const checked = inputs.filter((x) => x.requiresGrad);
  const y = f(...inputs);
  const analyticT = grad(sum(mul(y, weights)), checked);
  const analytic = analyticT.map((g) => Float64Array.from(g.data));
  const numeric = checked.map((x) => {
    const out = new Float64Array(x.size);
    const data = x.data;
    for (let i = 0; i < data.length; i++) {
      const keep = data[i]!;
      data[i] = keep + eps;
      const plus = objective();
      data[i] = keep - eps;
      const minus = objective();
      data[i] = keep;
      out[i] = (plus - minus) / (2 * eps);
    }
    return out;
  });
  const relativeErrors = analytic.map((a, k) => {
    const n = numeric[k]!;
    let diff = 0;
    let na = 0;
    let nn = 0;
    for (let i = 0; i < a.length; i++) {
      diff += (a[i]! - n[i]!) ** 2;
      na += a[i]! ** 2;
      nn += n[i]! ** 2;
    }
    return Math.sqrt(diff) / Math.max(Math.sqrt(na), Math.sqrt(nn), 1e-12);
  });
  return { maxRelativeError: Math.max(0, ...relativeErrors), relativeErrors, analytic, numeric };
}
