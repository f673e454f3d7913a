/**
 * Training objectives of a next-word language model on context windows (ids [N, C], the word
 * after each window y [N]):
 *
 * - `'last'`: one prediction per window, the loss of the word after the last position
 *   (what `fit` does with a model whose `forward(ids)` gives logits [N, V]).
 * - `'all'`: every position predicts its next word, as a causal Transformer LM is trained: the
 *   targets of window n are ids[n, 1..C−1] followed by y[n] (the window shifted by one), and the
 *   loss is the mean cross-entropy over all N·C positions. Needs a model with `forwardAll(ids)` →
 *   logits [N, C, V] whose position t sees positions ≤ t only (nn.TransformerLM).
 *
 * `fit` trains 'all' unchanged through {@link EveryPositionObjective} (a module whose training
 * forward flattens the every-position logits to [N·C, V]) and {@link everyPositionBatches} (the
 * shifted targets [N·C]); evaluation (eval mode) stays the last position's, so validation and test
 * perplexities are over the same predicted words under both objectives.
 */
import { Module, type StateDict, type StateDictInput, type LoadStateDictResult, type TensorModule } from '../nn/module.ts';
import { crossEntropy, reshape } from '../tensor/ops.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { Batch, BatchSource } from './fit.ts';

/** The training objectives of a language model (see the module comment). */
export const LM_OBJECTIVES = ['last', 'all'] as const;
export type LmObjective = (typeof LM_OBJECTIVES)[number];

export function isLmObjective(name: string): name is LmObjective {
  return (LM_OBJECTIVES as readonly string[]).includes(name);
}

/** A causal LM that gives the logits of every position: ids [N, C] → [N, C, V] (and the last one's, [N, V], by `forward`). */
export interface AllPositionsModel extends TensorModule {
  forwardAll(ids: Tensor): Tensor;
}

/**
 * The every-position targets of windows `ids` [N, C] (int32) whose next words are `next` [N]:
 * int32 [N·C], row n = ids[n, 1], …, ids[n, C−1], next[n] (the window shifted left by one).
 */
export function shiftedTargets(ids: Tensor, next: Tensor): Tensor {
  if (ids.rank !== 2 || ids.dtype !== 'int32') throw new RangeError(`shiftedTargets: ids must be int32 [N, C], got ${ids.dtype} [${ids.shape.join(', ')}]`);
  const [n, c] = ids.shape as [number, number];
  if (next.rank !== 1 || next.dtype !== 'int32' || next.shape[0] !== n) throw new RangeError(`shiftedTargets: next must be int32 [${n}], got ${next.dtype} [${next.shape.join(', ')}]`);
  const out = new Int32Array(n * c);
  for (let row = 0; row < n; row++) {
    out.set(ids.data.subarray(row * c + 1, (row + 1) * c), row * c);
    out[row * c + c - 1] = next.data[row]!;
  }
  return new Tensor(out, [n * c]);
}

/** `source`'s batches with y replaced by the every-position targets [N·C] ({@link shiftedTargets}); x unchanged. */
export function everyPositionBatches(source: BatchSource): BatchSource {
  return {
    length: source.length,
    *[Symbol.iterator](): Iterator<Batch> {
      for (const { x, y } of source) yield { x, y: shiftedTargets(x, y) };
    },
  };
}

/**
 * The every-position loss of `model` on windows `ids` [N, C] with next words `next` [N]: the mean
 * softmax cross-entropy over the N·C positions, position t of window n scored against
 * `shiftedTargets(ids, next)[n·C + t]`.
 */
export function everyPositionLoss(model: AllPositionsModel, ids: Tensor, next: Tensor): Tensor {
  return everyPositionCrossEntropy(flatLogits(model, ids), shiftedTargets(ids, next));
}

/**
 * The loss of the every-position objective: cross-entropy of the flattened logits [N·C, V] against
 * the shifted targets [N·C], as the fused `crossEntropyLoss` primitive (one pass over the large
 * logits forward and one backward; `crossEntropy(…, { fused: true })`). `fit`'s `lossFn` for 'all'.
 */
export function everyPositionCrossEntropy(logits: Tensor, targets: Tensor): Tensor {
  return crossEntropy(logits, targets, 'mean', { fused: true });
}

/** `model.forwardAll(ids)` [N, C, V] as [N·C, V], row n·C + t = position t of window n (the order of {@link shiftedTargets}). */
function flatLogits(model: AllPositionsModel, ids: Tensor): Tensor {
  const logits = model.forwardAll(ids);
  return reshape(logits, [logits.shape[0]! * logits.shape[1]!, logits.shape[2]!]);
}

/**
 * Wraps a causal LM for `fit` with the every-position objective: in training mode `forward(ids)` is
 * `model.forwardAll(ids)` flattened to [N·C, V] (pair it with {@link everyPositionBatches}); in eval
 * mode it is `model.forward(ids)`, the last position's logits [N, V], so `fit`'s validation pass and
 * `evaluatePerplexity` score the same words as a 'last' run. Parameters, state dict and modes are
 * the wrapped model's (same names: a checkpoint of the wrapper is a checkpoint of the model).
 */
export class EveryPositionObjective extends Module implements TensorModule {
  readonly model: AllPositionsModel;

  constructor(model: AllPositionsModel) {
    super();
    this.model = model;
    this.training = model.training;
  }

  forward(ids: Tensor): Tensor {
    return this.training ? flatLogits(this.model, ids) : this.model.forward(ids);
  }

  override train(mode = true): this {
    this.training = mode;
    this.model.train(mode);
    return this;
  }

  override namedParameters(options: { recurse?: boolean } = {}): [string, Tensor][] {
    return this.model.namedParameters(options);
  }

  override namedBuffers(options: { recurse?: boolean } = {}): [string, Tensor][] {
    return this.model.namedBuffers(options);
  }

  override stateDict(): StateDict {
    return this.model.stateDict();
  }

  override loadStateDict(stateDict: StateDictInput, options: { strict?: boolean } = {}): LoadStateDictResult {
    return this.model.loadStateDict(stateDict, options);
  }

  override extraRepr(): string {
    return `objective=all, model=${this.model.constructor.name}`;
  }
}
