/**
 * Column-balanced targeted dropout (CBTD, Spartus: Gao, Delbruck and Liu, 2021), built on targeted
 * dropout (Gomez et al., 2019). Every column block of a weight matrix (see balanced.ts) is a
 * separate pruning unit: its `round(γ·blockRows)` smallest-magnitude weights are the *targets*.
 * During training each target is dropped (multiplied by 0) with probability α in every forward
 * pass, so the network learns not to rely on them; the targeted fraction γ ramps linearly from 0 to
 * the final sparsity over `rampSteps` optimizer steps. Then `prune()` zeroes the targets for good,
 * leaving exactly `keep = blockRows − round(γ·blockRows)` non-zeros in every column block, and the
 * fixed mask keeps them zero (and their gradient zero) while fine-tuning.
 */
import { mul, Rng, globalRng, Tensor } from '../../tensor/index.ts';
import { balancedTopKMask, checkBlockLayout, packBalanced, type BalancedSparseMatrix } from './balanced.ts';

export interface CbtdOptions {
  /** Final weight sparsity γ in [0, 1): the fraction of every column block that is pruned. */
  sparsity: number;
  /** Rows per column block (must divide every matrix's row count); Spartus uses rows / #PE. */
  blockRows: number;
  /** Probability α that a targeted weight is dropped in a training forward pass (default 0.5). */
  dropRate?: number;
  /** Optimizer steps over which the targeted fraction grows linearly from 0 to `sparsity` (default 0: at once). */
  rampSteps?: number;
  /** Generator for the dropout draws (default: the global one). */
  rng?: Rng;
}

/**
 * CBTD over any number of weight matrices [rows, cols]; use it as a weight transform
 * (`DeltaLSTM.weightTransform = (w, training) => cbtd.apply(w, training)`), call `step()` once
 * per optimizer step, and `prune(weights)` at the end.
 */
export class ColumnBalancedTargetedDropout {
  readonly sparsity: number;
  readonly blockRows: number;
  readonly dropRate: number;
  readonly rampSteps: number;
  private readonly rng: Rng;
  private steps = 0;
  /** Hard-pruning masks (same dtype as the weight) of the matrices pruned so far. */
  private readonly fixed = new Map<Tensor, Tensor>();

  constructor(options: CbtdOptions) {
    const { sparsity, blockRows } = options;
    if (!(sparsity >= 0 && sparsity < 1)) throw new RangeError(`CBTD: sparsity must be in [0, 1), got ${sparsity}`);
    if (!Number.isInteger(blockRows) || blockRows < 1) throw new RangeError(`CBTD: blockRows must be a positive integer, got ${blockRows}`);
    const dropRate = options.dropRate ?? 0.5;
    if (!(dropRate >= 0 && dropRate <= 1)) throw new RangeError(`CBTD: dropRate must be in [0, 1], got ${dropRate}`);
    const rampSteps = options.rampSteps ?? 0;
    if (!Number.isInteger(rampSteps) || rampSteps < 0) throw new RangeError(`CBTD: rampSteps must be a non-negative integer, got ${rampSteps}`);
    this.sparsity = sparsity;
    this.blockRows = blockRows;
    this.dropRate = dropRate;
    this.rampSteps = rampSteps;
    this.rng = options.rng ?? globalRng;
  }

  /** Optimizer steps counted so far. */
  get stepCount(): number {
    return this.steps;
  }

  /** Advances the ramp by one optimizer step. */
  step(): void {
    this.steps++;
  }

  /** The targeted fraction now: sparsity · min(1, steps / rampSteps). */
  get targetFraction(): number {
    return this.rampSteps === 0 ? this.sparsity : this.sparsity * Math.min(1, this.steps / this.rampSteps);
  }

  /** Weights pruned per column block at fraction `fraction` (default: the final sparsity). */
  prunedPerBlock(fraction = this.sparsity): number {
    return Math.round(fraction * this.blockRows);
  }

  /** Weights kept per column block after the hard prune. */
  get keepPerBlock(): number {
    return this.blockRows - this.prunedPerBlock();
  }

  private layout(weight: Tensor): [number, number] {
    if (weight.rank !== 2) throw new Error(`CBTD: expected a weight matrix [rows, cols], got rank ${weight.rank}`);
    const [rows, cols] = weight.shape as [number, number];
    checkBlockLayout('CBTD', rows, cols, this.blockRows, this.keepPerBlock);
    return [rows, cols];
  }

  /**
   * A fresh targeted-dropout mask for `weight` (0/1, weight's shape and dtype): the
   * `round(targetFraction·blockRows)` smallest-|w| entries of each column block are each dropped
   * with probability dropRate; all others are 1.
   */
  dropoutMask(weight: Tensor): Tensor {
    const [rows, cols] = this.layout(weight);
    const keep = this.blockRows - this.prunedPerBlock(this.targetFraction);
    const safe = balancedTopKMask(weight.data, rows, cols, this.blockRows, keep);
    const mask = new Tensor(weight.dtype === 'float64' ? new Float64Array(safe.length) : new Float32Array(safe.length), [rows, cols]);
    for (let i = 0; i < safe.length; i++) mask.data[i] = safe[i] === 1 || this.rng.uniform() >= this.dropRate ? 1 : 0;
    return mask;
  }

  /**
   * The weight a layer should use: w ⊙ fixed mask once `w` is pruned; in training, w ⊙ a fresh
   * targeted-dropout mask; in evaluation before pruning, w itself. Gradients reach w through the
   * product (zero where masked).
   */
  apply(weight: Tensor, training: boolean): Tensor {
    const fixed = this.fixed.get(weight);
    if (fixed) return mul(weight, fixed);
    if (!training || this.targetFraction === 0) return weight;
    return mul(weight, this.dropoutMask(weight));
  }

  /** Whether `prune` has been applied to this tensor. */
  isPruned(weight: Tensor): boolean {
    return this.fixed.has(weight);
  }

  /**
   * Hard prune: zeroes (in place) all but the `keepPerBlock` largest-|w| entries of every column
   * block of each weight and remembers the mask, so `apply` keeps them at zero. Returns the
   * balanced sparse matrices, in the order given.
   */
  prune(weights: readonly Tensor[]): BalancedSparseMatrix[] {
    return weights.map((weight) => {
      const [rows, cols] = this.layout(weight);
      const keepMask = balancedTopKMask(weight.data, rows, cols, this.blockRows, this.keepPerBlock);
      const mask = new Tensor(weight.dtype === 'float64' ? new Float64Array(keepMask.length) : new Float32Array(keepMask.length), [rows, cols]);
      for (let i = 0; i < keepMask.length; i++) {
        mask.data[i] = keepMask[i]!;
        if (keepMask[i] === 0) weight.data[i] = 0;
      }
      this.fixed.set(weight, mask);
      return packBalanced(weight.data, rows, cols, this.blockRows, this.keepPerBlock);
    });
  }
}
