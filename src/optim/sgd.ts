import type { Tensor } from '../tensor/index.ts';
import type { TypedArray } from '../backend/primitives.ts';
import { checkNonNegative, Optimizer, zerosLikeData, type ParamGroup, type ParamsInput, type ParamState } from './optimizer.ts';
import { nativeSteps } from './native-steps.ts';

/** SGD hyperparameters (PyTorch's names and defaults; like torch.optim.SGD, lr has no default). */
export interface SgdHyper {
  /**
   * Learning rate, required: give it in the options (the default of every group) or in every
   * param group; an SGD without one throws, as torch.optim.SGD does.
   */
  lr: number;
  /** Default 0 (plain SGD); must be >= 0. */
  momentum: number;
  /** Fraction of the new gradient withheld from the momentum buffer, in [0, 1] (default 0). */
  dampening: number;
  /** L2 penalty added to the gradient (default 0). */
  weightDecay: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0). */
  nesterov: boolean;
  /** Ascend instead of descend. */
  maximize: boolean;
}

export type SgdOptions = Partial<SgdHyper>;

/** Momentum buffer, created on the first step with a gradient. */
export type SgdState = { momentumBuffer?: TypedArray };

/**
 * Stochastic gradient descent with PyTorch's semantics. Per step, with g = ∇ (negated if maximize):
 * g ← g + weightDecay·θ; if momentum: b ← g on the first step, else b ← momentum·b + (1 − dampening)·g,
 * and g ← g + momentum·b (nesterov) or g ← b; then θ ← θ − lr·g.
 */
export class SGD extends Optimizer<SgdHyper, SgdState> {
  constructor(params: ParamsInput<SgdHyper>, options: SgdOptions = {}) {
    super(params, {
      // NaN marks "not given": validate() then requires an lr in every group.
      lr: options.lr ?? Number.NaN,
      momentum: options.momentum ?? 0,
      dampening: options.dampening ?? 0,
      weightDecay: options.weightDecay ?? 0,
      nesterov: options.nesterov ?? false,
      maximize: options.maximize ?? false,
    });
  }

  protected validate(group: ParamGroup<SgdHyper>): void {
    if (Number.isNaN(group.lr)) throw new Error('SGD: lr is required (torch.optim.SGD has no default either): give options.lr or an lr in every param group');
    checkNonNegative('SGD', 'lr', group.lr);
    checkNonNegative('SGD', 'momentum', group.momentum);
    checkNonNegative('SGD', 'weightDecay', group.weightDecay);
    if (!(group.dampening >= 0 && group.dampening <= 1)) throw new Error(`SGD: invalid dampening ${group.dampening} (must be in [0, 1])`);
    if (group.nesterov && (group.momentum <= 0 || group.dampening !== 0)) {
      throw new Error('SGD: nesterov momentum requires momentum > 0 and dampening = 0');
    }
  }

  step(): void {
    for (const group of this.paramGroups) {
      const { lr, momentum, dampening, weightDecay, nesterov } = group;
      const sign = group.maximize ? -1 : 1;
      for (const p of group.params) {
        if (!p.grad) continue;
        const w = p.data;
        const g = p.grad.data;
        const n = w.length;
        if (momentum === 0) {
          for (let i = 0; i < n; i++) w[i] = w[i]! - lr * (sign * g[i]! + weightDecay * w[i]!);
          continue;
        }
        const state = this.stateFor(p, () => ({}));
        const first = state.momentumBuffer === undefined;
        const buf = state.momentumBuffer ?? zerosLikeData(p);
        state.momentumBuffer = buf;
        const keep = 1 - dampening;
        const native = nativeSteps(w, g, buf);
        if (native) {
          native.sgdMomentumStep(w as Float32Array, g as Float32Array, buf as Float32Array, lr, momentum, keep, weightDecay, sign, first, nesterov);
          continue;
        }
        for (let i = 0; i < n; i++) {
          const d = sign * g[i]! + weightDecay * w[i]!;
          const b = first ? d : momentum * buf[i]! + keep * d;
          buf[i] = b;
          w[i] = w[i]! - lr * (nesterov ? d + momentum * b : b);
        }
      }
    }
  }

  protected restoreState(record: ParamState, param: Tensor): SgdState {
    const buf = record['momentumBuffer'];
    if (buf !== undefined && typeof buf === 'number') throw new Error('SGD state: momentumBuffer must be a tensor');
    if (buf !== undefined && buf.length !== param.size) throw new Error('SGD state: momentumBuffer size differs from its parameter');
    return buf === undefined ? {} : { momentumBuffer: buf };
  }
}
