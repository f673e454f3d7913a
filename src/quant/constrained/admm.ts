/**
 * ADMM training of low-bit weights (Leng et al. 2018, "Extremely low bit neural network: squeeze
 * the last bit out with ADMM"; tied low-bit tables as in the ADMM-quantized RNNLMs of Yu et al.).
 *
 * Problem: min f(W) s.t. every chosen tensor W_l ∈ C_l = {α·B : α ≥ 0, B ∈ Tⁿ}. With an auxiliary
 * copy G ∈ C and the scaled dual U, the augmented Lagrangian is
 *     L_ρ(W, G, U) = f(W) + Σ_l ρ/2·‖W_l − G_l + U_l‖² − ρ/2·‖U_l‖²,
 * and ADMM alternates
 *     W ← a few optimizer steps on f(W) + ρ/2·‖W − G + U‖²     (ordinary training + penalty),
 *     G ← Π_C(W + U)                                            (every `projectEvery` steps),
 *     U ← U + W − G.
 * Π_C fits α per group (tensor, output channel, or one tied α over all tensors) and the codes
 * B = nearest(V/α) — exactly by default (`fitScaleExact`), or by warm-started alternating
 * minimisation (α = ⟨V, B⟩/⟨B, B⟩ ↔ nearest codes). ρ grows by `rhoGrowth` per `epochEnd()`, capped
 * at `rhoMax`.
 *
 * The penalty enters training in ONE of two equivalent ways (never both):
 *  - `admm.penalty()`: a scalar Tensor ρ/2·Σ‖W − G + U‖² to add to the loss before `backward()`;
 *  - `admm.addGradients()`: after `backward()`, adds ρ(W − G + U) to each W.grad (no graph; this is
 *    what `admmOptimizer` / `trainAdmm` use, so reported losses stay the task loss).
 *
 * Usage:
 *     const admm = new AdmmQuantizer(model, { table: 'ternary', perChannel: true });
 *     for each batch: loss.backward(); admm.addGradients(); opt.step(); opt.zeroGrad(); admm.step();
 *     per epoch: admm.epochEnd();
 *     const layers = admm.finalize(); // W := α·B exactly; per-layer {alpha, index, codes}
 */
import { Tensor } from '../../tensor/tensor.ts';
import { add, mul, sub, sum } from '../../tensor/ops.ts';
import type { Module } from '../../nn/module.ts';
import { fitScaleAlternating, fitScaleExact, nearestIndex, toTable, type LevelTable, type ScaleFit, type TableSpec } from './tables.ts';

/** Which parameters to constrain (default: `*.weight` of rank >= 2, i.e. Conv2d / Linear / Embedding weights). */
export type ParamSelector = (name: string, param: Tensor) => boolean;

export const defaultWeightSelector: ParamSelector = (name, param) => (name === 'weight' || name.endsWith('.weight')) && param.rank >= 2;

export interface AdmmOptions {
  /** Level table (default 'ternary'). */
  table?: TableSpec | LevelTable;
  /** One α per output channel (axis 0) (default true). Ignored when `tied`. */
  perChannel?: boolean;
  /** One α shared by every constrained tensor (a single tied table, as for RNNLMs) (default false). */
  tied?: boolean;
  /** Initial penalty ρ (default 1e-3). */
  rho?: number;
  /** ρ ← min(ρ·rhoGrowth, rhoMax) at every `epochEnd()` (default 1.1). */
  rhoGrowth?: number;
  /** Cap of ρ (default 100·rho). */
  rhoMax?: number;
  /** G/U updates every this many `step()` calls (default 1). */
  projectEvery?: number;
  /** 'exact' (default): global optimum of each group's fit; 'alternating': warm-started alternating minimisation. */
  solver?: 'exact' | 'alternating';
  /** Rounds of the alternating solver (default 5). */
  iterations?: number;
  /** Parameter filter (default `defaultWeightSelector`). */
  select?: ParamSelector;
}

/** One constrained tensor as exported by `finalize()`: W = alpha[c] · levels[index[i]]. */
export interface QuantizedTensorExport {
  readonly name: string;
  readonly shape: readonly number[];
  /** Table name and levels. */
  readonly table: string;
  readonly levels: readonly number[];
  /** 0 when α is per output channel, null when per tensor or tied. */
  readonly axis: 0 | null;
  /** float32 scales (one per channel, or one). */
  readonly alpha: Float32Array;
  /** Index into `levels` of every element. */
  readonly index: Uint16Array;
  /** The integer level of every element (null if the table has non-integer levels). */
  readonly codes: Int32Array | null;
}

interface Entry {
  readonly name: string;
  readonly param: Tensor;
  /** G and U, in the parameter's float dtype. */
  readonly g: Float32Array | Float64Array;
  readonly u: Float32Array | Float64Array;
  readonly index: Uint16Array;
  /** Scales, one per channel (perChannel) or one. */
  readonly alpha: Float64Array;
  /** Elements per channel (perChannel) or the tensor size. */
  readonly inner: number;
}

export class AdmmQuantizer {
  readonly table: LevelTable;
  readonly perChannel: boolean;
  readonly tied: boolean;
  readonly rhoGrowth: number;
  readonly rhoMax: number;
  readonly projectEvery: number;
  readonly solver: 'exact' | 'alternating';
  readonly iterations: number;
  /** Current penalty. */
  rho: number;
  /** `step()` calls so far. */
  steps = 0;
  /** `epochEnd()` calls so far. */
  epochs = 0;
  private readonly entries: Entry[];

  constructor(model: Module | Iterable<readonly [string, Tensor]>, options: AdmmOptions = {}) {
    this.table = toTable(options.table ?? 'ternary');
    this.tied = options.tied ?? false;
    this.perChannel = !this.tied && (options.perChannel ?? true);
    this.rho = options.rho ?? 1e-3;
    this.rhoGrowth = options.rhoGrowth ?? 1.1;
    this.rhoMax = options.rhoMax ?? 100 * this.rho;
    this.projectEvery = options.projectEvery ?? 1;
    this.solver = options.solver ?? 'exact';
    this.iterations = options.iterations ?? 5;
    if (!(this.rho >= 0 && Number.isFinite(this.rho))) throw new Error(`AdmmQuantizer: invalid rho ${this.rho}`);
    if (!(this.rhoGrowth >= 1)) throw new Error(`AdmmQuantizer: rhoGrowth must be >= 1, got ${this.rhoGrowth}`);
    if (!(this.rhoMax >= this.rho)) throw new Error(`AdmmQuantizer: rhoMax ${this.rhoMax} below rho ${this.rho}`);
    if (!Number.isInteger(this.projectEvery) || this.projectEvery < 1) throw new Error(`AdmmQuantizer: projectEvery must be a positive integer, got ${this.projectEvery}`);
    const select = options.select ?? defaultWeightSelector;
    const named = isModule(model) ? model.namedParameters() : [...model];
    this.entries = named
      .filter(([name, p]) => select(name, p))
      .map(([name, p]) => {
        if (p.dtype === 'int32') throw new Error(`AdmmQuantizer: parameter '${name}' is int32`);
        const channels = this.perChannel && p.rank >= 1 ? p.shape[0]! : 1;
        return {
          name,
          param: p,
          g: p.dtype === 'float64' ? new Float64Array(p.size) : new Float32Array(p.size),
          u: p.dtype === 'float64' ? new Float64Array(p.size) : new Float32Array(p.size),
          index: new Uint16Array(p.size),
          alpha: new Float64Array(channels),
          inner: channels > 0 ? p.size / channels : 0,
        };
      });
    if (this.entries.length === 0) throw new Error('AdmmQuantizer: no parameter matches the selector');
    this.project(false);
  }

  /** Names of the constrained parameters, in order. */
  get names(): string[] {
    return this.entries.map((e) => e.name);
  }

  /** Copies of G (the current quantized copy) by parameter name. */
  quantized(): Map<string, Tensor> {
    return new Map(this.entries.map((e) => [e.name, new Tensor(e.g.slice(), e.param.shape)]));
  }

  /** Copies of the scaled dual U by parameter name. */
  duals(): Map<string, Tensor> {
    return new Map(this.entries.map((e) => [e.name, new Tensor(e.u.slice(), e.param.shape)]));
  }

  /** Current scales by parameter name (one per channel, or one). */
  scales(): Map<string, Float64Array> {
    return new Map(this.entries.map((e) => [e.name, e.alpha.slice()]));
  }

  /** ρ/2·Σ‖W − G + U‖² as a differentiable scalar (add it to the loss; do not also call `addGradients`). */
  penalty(): Tensor {
    let total: Tensor | null = null;
    for (const e of this.entries) {
      const w = e.param;
      const c = e.g.slice();
      for (let i = 0; i < c.length; i++) c[i] = e.g[i]! - e.u[i]!;
      const target = new Tensor(c, w.shape);
      const d = sub(w, target);
      const term = mul(sum(mul(d, d)), this.rho / 2);
      total = total ? add(total, term) : term;
    }
    return total!;
  }

  /** Adds ρ(W − G + U) to every constrained W.grad (creating it when null). Call after `backward()`. */
  addGradients(): void {
    const rho = this.rho;
    for (const e of this.entries) {
      const w = e.param.data;
      const old = e.param.grad?.data;
      const g = e.param.dtype === 'float64' ? new Float64Array(w.length) : new Float32Array(w.length);
      for (let i = 0; i < w.length; i++) g[i] = (old ? old[i]! : 0) + rho * (w[i]! - e.g[i]! + e.u[i]!);
      e.param.grad = new Tensor(g, e.param.shape);
    }
  }

  /**
   * Call after every `optimizer.step()`: every `projectEvery` calls, G ← Π(W + U) then
   * U ← U + W − G. Returns true when it projected.
   */
  step(): boolean {
    this.steps++;
    if (this.steps % this.projectEvery !== 0) return false;
    this.project(true);
    for (const e of this.entries) {
      const w = e.param.data;
      for (let i = 0; i < w.length; i++) e.u[i] = e.u[i]! + w[i]! - e.g[i]!;
    }
    return true;
  }

  /** End of an epoch: ρ ← min(ρ·rhoGrowth, rhoMax). */
  epochEnd(): void {
    this.epochs++;
    this.rho = Math.min(this.rho * this.rhoGrowth, this.rhoMax);
  }

  /** ‖W_l − G_l‖ / ‖W_l‖ per constrained tensor. */
  violations(): Map<string, number> {
    const out = new Map<string, number>();
    for (const e of this.entries) {
      const w = e.param.data;
      let num = 0;
      let den = 0;
      for (let i = 0; i < w.length; i++) {
        const d = w[i]! - e.g[i]!;
        num += d * d;
        den += w[i]! * w[i]!;
      }
      out.set(e.name, den > 0 ? Math.sqrt(num / den) : Math.sqrt(num));
    }
    return out;
  }

  /** Σ_l ‖W_l − G_l‖ / ‖W_l‖ (monitoring: goes to 0 as W reaches the constraint set). */
  constraintViolation(): number {
    let s = 0;
    for (const v of this.violations().values()) s += v;
    return s;
  }

  /**
   * Makes the model exactly quantized and returns each tensor's {alpha, index, codes}.
   * `from: 'weights'` (default) sets W := Π(W), the nearest point of the constraint set to the
   * trained weights; `from: 'admm'` sets W := Π(W + U) (one last G-update, ADMM's own iterate).
   * At an ADMM fixed point (W = G) both give the same result.
   */
  finalize(options: { from?: 'weights' | 'admm' } = {}): QuantizedTensorExport[] {
    const from = options.from ?? 'weights';
    if (from === 'weights') for (const e of this.entries) e.u.fill(0);
    this.project(true);
    for (const e of this.entries) {
      e.param.data.set(e.g);
      e.u.fill(0);
    }
    const integer = this.table.levels.every(Number.isInteger);
    return this.entries.map((e) => ({
      name: e.name,
      shape: [...e.param.shape],
      table: this.table.name,
      levels: this.table.levels,
      axis: this.perChannel ? 0 : null,
      alpha: Float32Array.from(e.alpha),
      index: e.index.slice(),
      codes: integer ? Int32Array.from(e.index, (k) => this.table.levels[k]!) : null,
    }));
  }

  /** G ← Π(W + U) (or Π(W) when `withDual` is false), refitting every α. */
  private project(withDual: boolean): void {
    const valuesOf = (e: Entry, start: number, end: number, out: Float64Array, at: number): void => {
      const w = e.param.data;
      for (let i = start; i < end; i++) out[at + i - start] = w[i]! + (withDual ? e.u[i]! : 0);
    };
    if (this.tied) {
      const total = this.entries.reduce((n, e) => n + e.param.size, 0);
      const v = new Float64Array(total);
      let at = 0;
      for (const e of this.entries) {
        valuesOf(e, 0, e.param.size, v, at);
        at += e.param.size;
      }
      const alpha = this.fit(v, this.entries[0]!.alpha[0]!).alpha;
      at = 0;
      for (const e of this.entries) {
        e.alpha[0] = alpha;
        this.write(e, v.subarray(at, at + e.param.size), 0, alpha);
        at += e.param.size;
      }
      return;
    }
    for (const e of this.entries) {
      const v = new Float64Array(e.inner);
      for (let c = 0; c < e.alpha.length; c++) {
        const start = c * e.inner;
        valuesOf(e, start, start + e.inner, v, 0);
        const alpha = this.fit(v, e.alpha[c]!).alpha;
        e.alpha[c] = alpha;
        this.write(e, v, start, alpha);
      }
    }
  }

  private fit(values: Float64Array, previous: number): ScaleFit {
    const fit = this.solver === 'exact' ? fitScaleExact(values, this.table) : fitScaleAlternating(values, this.table, previous > 0 ? previous : undefined, this.iterations);
    // Scales are float32 (DESIGN.md), so G = fround(α·level) is exactly what export describes.
    return { alpha: Math.fround(fit.alpha), error: fit.error };
  }

  private write(e: Entry, values: ArrayLike<number>, start: number, alpha: number): void {
    const levels = this.table.levels;
    const zero = nearestIndex(this.table, 0);
    for (let i = 0; i < values.length; i++) {
      const k = alpha > 0 ? nearestIndex(this.table, values[i]! / alpha) : zero;
      e.index[start + i] = k;
      e.g[start + i] = alpha * levels[k]!;
    }
  }
}

function isModule(x: unknown): x is Module {
  return typeof (x as Module).namedParameters === 'function';
}
