import { Tensor } from '../tensor/index.ts';
import { typedArrayFor, type TypedArray } from '../backend/primitives.ts';

/** A hyperparameter value: what param groups hold besides their params. */
export type HyperValue = number | boolean | readonly number[];

/** Hyperparameters every optimizer has. */
export interface BaseHyper {
  lr: number;
}

/** A group of parameters sharing hyperparameters; `initialLr` is set by LR schedulers. */
export type ParamGroup<H extends BaseHyper> = H & { params: Tensor[]; initialLr?: number };

/** A group as given to a constructor: its params plus overrides of the optimizer's defaults. */
export type ParamGroupInput<H extends BaseHyper> = Partial<H> & { params: Iterable<Tensor> };

/** Parameters to optimize: a flat list (one group) or several groups. */
export type ParamsInput<H extends BaseHyper> = Iterable<Tensor> | readonly ParamGroupInput<H>[];

/** Per-parameter state as a plain record: step counts (numbers) and buffers (TypedArrays). */
export type ParamState = { [key: string]: number | TypedArray | undefined };

/** Serializable optimizer state, for checkpoints. */
export interface OptimizerStateDict {
  /** Per-parameter state keyed by the parameter's index over all groups (in order); buffers as Tensors. */
  state: Map<number, Record<string, number | Tensor>>;
  /** Each group's hyperparameters with the indices of its parameters. */
  paramGroups: (Record<string, HyperValue> & { params: number[] })[];
}

/**
 * Base of all optimizers. `step()` reads each parameter's `.grad` and updates `.data` in place
 * (plain loops over TypedArrays, no graph); parameters whose grad is null are skipped.
 * Parameters keep their identity, so modules and optimizers can share them.
 */
export abstract class Optimizer<H extends BaseHyper, S extends ParamState> {
  readonly defaults: Readonly<H>;
  readonly paramGroups: ParamGroup<H>[];
  /** Per-parameter state, created lazily by the first `step()` that sees a gradient. */
  protected readonly state = new Map<Tensor, S>();

  constructor(params: ParamsInput<H>, defaults: H) {
    this.defaults = { ...defaults };
    this.paramGroups = toGroups(params, defaults);
    if (this.paramGroups.length === 0) throw new Error(`${this.constructor.name}: no parameters to optimize`);
    const seen = new Set<Tensor>();
    this.paramGroups.forEach((group, g) => {
      for (const p of group.params) {
        if (!(p instanceof Tensor)) throw new Error(`${this.constructor.name}: group ${g} holds a non-tensor parameter`);
        if (p.node) throw new Error(`${this.constructor.name}: parameters must be leaf tensors`);
        if (seen.has(p)) throw new Error(`${this.constructor.name}: a parameter appears in more than one place`);
        seen.add(p);
      }
    });
    for (const group of this.paramGroups) this.validate(group);
  }

  /** Throws on invalid hyperparameters of a group (called at construction). */
  protected abstract validate(group: ParamGroup<H>): void;

  /** Applies one update to every parameter that has a gradient. */
  abstract step(): void;

  /** Rebuilds typed per-parameter state from a state dict entry (buffers already copied to `param`'s dtype). */
  protected abstract restoreState(record: ParamState, param: Tensor): S;

  /** Drops every parameter's gradient (`grad = null`), as torch's `zero_grad(set_to_none=True)`. */
  zeroGrad(): void {
    for (const group of this.paramGroups) for (const p of group.params) p.grad = null;
  }

  /** Learning rate of the first group. */
  get lr(): number {
    return this.paramGroups[0]!.lr;
  }

  /** Sets the learning rate of every group (set `paramGroups[i].lr` for one group). */
  set lr(value: number) {
    for (const group of this.paramGroups) group.lr = value;
  }

  /** The state of one parameter, if a step has created it (for inspection and tests). */
  stateOf(param: Tensor): Readonly<S> | undefined {
    return this.state.get(param);
  }

  /** Copies of the per-parameter state and the group hyperparameters. */
  stateDict(): OptimizerStateDict {
    const state = new Map<number, Record<string, number | Tensor>>();
    const paramGroups: OptimizerStateDict['paramGroups'] = [];
    let index = 0;
    for (const group of this.paramGroups) {
      const indices: number[] = [];
      for (const p of group.params) {
        const s = this.state.get(p);
        if (s) state.set(index, exportState(s, p));
        indices.push(index++);
      }
      const hyper: Record<string, HyperValue> = {};
      for (const [key, value] of Object.entries(group)) {
        if (key !== 'params' && isHyperValue(value)) hyper[key] = Array.isArray(value) ? [...value] : value;
      }
      paramGroups.push({ ...hyper, params: indices });
    }
    return { state, paramGroups };
  }

  /** Restores state and hyperparameters saved by `stateDict()` from an optimizer over the same parameters. */
  loadStateDict(stateDict: OptimizerStateDict): void {
    const groups = stateDict.paramGroups;
    if (groups.length !== this.paramGroups.length) {
      throw new Error(`${this.constructor.name}.loadStateDict: ${groups.length} param groups saved, optimizer has ${this.paramGroups.length}`);
    }
    const params = this.paramGroups.flatMap((g) => g.params);
    groups.forEach((saved, g) => {
      const own = this.paramGroups[g]!;
      if (saved.params.length !== own.params.length) {
        throw new Error(`${this.constructor.name}.loadStateDict: group ${g} saved ${saved.params.length} params, optimizer has ${own.params.length}`);
      }
    });
    const restored = new Map<Tensor, S>();
    for (const [index, record] of stateDict.state) {
      const p = params[index];
      if (!p) throw new Error(`${this.constructor.name}.loadStateDict: state for parameter ${index}, optimizer has ${params.length}`);
      restored.set(p, this.restoreState(importState(record, p, index), p));
    }
    groups.forEach((saved, g) => {
      const { params: _indices, ...hyper } = saved;
      Object.assign(this.paramGroups[g]!, hyper);
    });
    this.state.clear();
    for (const [p, s] of restored) this.state.set(p, s);
  }

  /** Per-parameter state, creating it with `init` on first use. */
  protected stateFor(param: Tensor, init: () => S): S {
    let s = this.state.get(param);
    if (!s) {
      s = init();
      this.state.set(param, s);
    }
    return s;
  }
}

/** A zeroed buffer shaped like `param`'s data. */
export function zerosLikeData(param: Tensor): TypedArray {
  return typedArrayFor(param.dtype, param.size);
}

/** Throws unless `value` is a finite number >= 0 (`name` names it in the message). */
export function checkNonNegative(owner: string, name: string, value: number): void {
  if (!(Number.isFinite(value) && value >= 0)) throw new Error(`${owner}: invalid ${name} ${value} (must be >= 0)`);
}

function toGroups<H extends BaseHyper>(params: ParamsInput<H>, defaults: H): ParamGroup<H>[] {
  const list = [...params];
  if (list.length === 0) return [];
  if (list.every((p): p is Tensor => p instanceof Tensor)) return [{ ...defaults, params: list }];
  return list.map((input) => {
    if (input instanceof Tensor) throw new Error('optimizer: mix of tensors and param groups');
    return { ...defaults, ...input, params: [...input.params] };
  });
}

function isHyperValue(value: unknown): value is HyperValue {
  return typeof value === 'number' || typeof value === 'boolean' || (Array.isArray(value) && value.every((v) => typeof v === 'number'));
}

function exportState(state: ParamState, param: Tensor): Record<string, number | Tensor> {
  const out: Record<string, number | Tensor> = {};
  for (const [key, value] of Object.entries(state)) {
    if (value === undefined) continue;
    out[key] = typeof value === 'number' ? value : new Tensor(value.slice(), param.shape);
  }
  return out;
}

function importState(record: Record<string, number | Tensor>, param: Tensor, index: number): ParamState {
  const out: ParamState = {};
  for (const [key, value] of Object.entries(record)) {
    if (typeof value === 'number') {
      out[key] = value;
      continue;
    }
    if (value.size !== param.size) {
      throw new Error(`optimizer state '${key}' of parameter ${index} has ${value.size} elements, parameter has ${param.size}`);
    }
    const buffer = zerosLikeData(param);
    buffer.set(value.data);
    out[key] = buffer;
  }
  return out;
}
