import type { Tensor } from '../tensor/index.ts';
import type { TypedArray } from '../backend/primitives.ts';
import { checkNonNegative, Optimizer, zerosLikeData, type ParamGroup, type ParamsInput, type ParamState } from './optimizer.ts';
import { nativeSteps } from './native-steps.ts';

/** Adam / AdamW hyperparameters (PyTorch's names). */
export interface AdamHyper {
  /** Default 1e-3. */
  lr: number;
  /** Decay rates of the first and second moment averages (default [0.9, 0.999]). */
  betas: readonly [number, number];
  /** Added to the denominator (default 1e-8). */
  eps: number;
  /** Adam: L2 penalty added to the gradient (default 0). AdamW: decoupled decay (default 0.01). */
  weightDecay: number;
  /** Use the running maximum of the second moment (default false). */
  amsgrad: boolean;
  maximize: boolean;
}

export type AdamOptions = Partial<AdamHyper>;

/** Step count and moment estimates of one parameter. */
export type AdamState = { step: number; expAvg: TypedArray; expAvgSq: TypedArray; maxExpAvgSq?: TypedArray };

/**
 * Adam (Kingma & Ba, 2015) with PyTorch's semantics. Per step t, with g = ∇ (+ weightDecay·θ):
 * m ← β1·m + (1 − β1)·g, v ← β2·v + (1 − β2)·g², v̂ = max(v̂, v) with amsgrad (else v),
 * θ ← θ − lr/(1 − β1ᵗ) · m / (√v̂/√(1 − β2ᵗ) + eps).
 */
export class Adam extends Optimizer<AdamHyper, AdamState> {
  /** AdamW decays weights directly (θ ← θ·(1 − lr·wd)) instead of adding wd·θ to the gradient. */
  protected readonly decoupledWeightDecay: boolean;

  constructor(params: ParamsInput<AdamHyper>, options: AdamOptions = {}) {
    super(params, adamDefaults(options, 0));
    this.decoupledWeightDecay = false;
  }

  protected validate(group: ParamGroup<AdamHyper>): void {
    const name = this.constructor.name;
    checkNonNegative(name, 'lr', group.lr);
    checkNonNegative(name, 'eps', group.eps);
    checkNonNegative(name, 'weightDecay', group.weightDecay);
    const [b1, b2] = group.betas;
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) throw new Error(`${name}: betas must be in [0, 1), got [${b1}, ${b2}]`);
  }

  step(): void {
    for (const group of this.paramGroups) {
      const { lr, eps, weightDecay, amsgrad } = group;
      const [beta1, beta2] = group.betas;
      const sign = group.maximize ? -1 : 1;
      const decay = this.decoupledWeightDecay ? 1 - lr * weightDecay : 1;
      const l2 = this.decoupledWeightDecay ? 0 : weightDecay;
      for (const p of group.params) {
        if (!p.grad) continue;
        const state = this.stateFor(p, () => ({ step: 0, expAvg: zerosLikeData(p), expAvgSq: zerosLikeData(p) }));
        if (amsgrad && !state.maxExpAvgSq) state.maxExpAvgSq = zerosLikeData(p);
        state.step += 1;
        const stepSize = lr / (1 - beta1 ** state.step);
        const bias2Sqrt = Math.sqrt(1 - beta2 ** state.step);
        const w = p.data;
        const g = p.grad.data;
        const m = state.expAvg;
        const v = state.expAvgSq;
        const vMax = amsgrad ? state.maxExpAvgSq! : v;
        const n = w.length;
        const native = nativeSteps(w, g, m, v, amsgrad ? vMax : null);
        if (native) {
          native.adamStep(w as Float32Array, g as Float32Array, m as Float32Array, v as Float32Array, amsgrad ? (vMax as Float32Array) : null, beta1, beta2, l2, decay, stepSize, bias2Sqrt, eps, sign);
          continue;
        }
        for (let i = 0; i < n; i++) {
          const theta = w[i]!;
          const gi = sign * g[i]! + l2 * theta;
          const mi = beta1 * m[i]! + (1 - beta1) * gi;
          const vi = beta2 * v[i]! + (1 - beta2) * gi * gi;
          m[i] = mi;
          v[i] = vi;
          let second = vi;
          if (amsgrad) {
            second = Math.max(vMax[i]!, vi);
            vMax[i] = second;
          }
          w[i] = theta * decay - (stepSize * mi) / (Math.sqrt(second) / bias2Sqrt + eps);
        }
      }
    }
  }

  protected restoreState(record: ParamState, param: Tensor): AdamState {
    const step = record['step'];
    const expAvg = record['expAvg'];
    const expAvgSq = record['expAvgSq'];
    const maxExpAvgSq = record['maxExpAvgSq'];
    if (typeof step !== 'number' || expAvg === undefined || typeof expAvg === 'number' || expAvgSq === undefined || typeof expAvgSq === 'number') {
      throw new Error(`${this.constructor.name} state needs step (number), expAvg and expAvgSq (tensors)`);
    }
    if (expAvg.length !== param.size || expAvgSq.length !== param.size) throw new Error(`${this.constructor.name} state: moment sizes differ from the parameter`);
    if (typeof maxExpAvgSq === 'number') throw new Error(`${this.constructor.name} state: maxExpAvgSq must be a tensor`);
    return maxExpAvgSq ? { step, expAvg, expAvgSq, maxExpAvgSq } : { step, expAvg, expAvgSq };
  }
}

/**
 * AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay, θ ← θ·(1 − lr·wd) before the
 * Adam update, and no L2 term in the gradient. Default weightDecay 0.01.
 */
export class AdamW extends Adam {
  protected override readonly decoupledWeightDecay: boolean;

  constructor(params: ParamsInput<AdamHyper>, options: AdamOptions = {}) {
    super(params, { ...options, weightDecay: options.weightDecay ?? 0.01 });
    this.decoupledWeightDecay = true;
  }
}

function adamDefaults(options: AdamOptions, weightDecay: number): AdamHyper {
  return {
    lr: options.lr ?? 1e-3,
    betas: options.betas ?? [0.9, 0.999],
    eps: options.eps ?? 1e-8,
    weightDecay: options.weightDecay ?? weightDecay,
    amsgrad: options.amsgrad ?? false,
    maximize: options.maximize ?? false,
  };
}
