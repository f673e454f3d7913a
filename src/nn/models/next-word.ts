import { Module, type TensorModule } from '../module.ts';
import { Embedding } from '../embedding.ts';
import { Linear } from '../linear.ts';
import { GRU, LSTM } from '../rnn.ts';
import { lastStepLinearInference } from '../rnn-inference.ts';
import { narrow, reshape, type Tensor } from '../../tensor/index.ts';
import type { Rng } from '../../tensor/random.ts';

/** Recurrent cores a {@link NextWordModel} can use. */
export const NEXT_WORD_CELLS = ['lstm', 'gru'] as const;
export type NextWordCell = (typeof NEXT_WORD_CELLS)[number];

export interface NextWordModelOptions {
  /** Vocabulary size V (ids 0..V−1; the head has V outputs). */
  readonly vocabSize: number;
  /** Embedding width E (default 64). */
  readonly embeddingDim?: number;
  /** Recurrent width H (default 128). */
  readonly hiddenSize?: number;
  /** 'lstm' (default) or 'gru'. */
  readonly cell?: NextWordCell;
  readonly rng?: Rng;
}

/**
 * A next-word language model: context ids [N, C] (int32) → Embedding [N, C, E] → one
 * batch-first LSTM or GRU [N, C, H] → the hidden state after the last word [N, H] → Linear →
 * logits [N, V] over the next word. `data.contextIdBatches` turns `data.nextWordDataset`
 * batches into such ids for `fit`.
 *
 * Its children (embedding, rnn, head) form the chain `onnx.exportRnnOnnx` exports with
 * `lastStep: true`; `quant.rnn.prepareRnnQat` swaps them for their quantization-aware twins in place.
 */
export class NextWordModel extends Module implements TensorModule {
  readonly cell: NextWordCell;
  readonly vocabSize: number;
  readonly embedding: Module & TensorModule;
  /** An LSTM or GRU (or, after `prepareRnnQat`, a QatLSTM or QatGRU): forward returns [output, states]. */
  readonly rnn: Module & { forward(x: Tensor): [Tensor, unknown] };
  readonly head: Module & TensorModule;
  readonly hiddenSize: number;

  constructor(options: NextWordModelOptions) {
    super();
    const { vocabSize } = options;
    const embeddingDim = options.embeddingDim ?? 64;
    const hiddenSize = options.hiddenSize ?? 128;
    const cell = options.cell ?? 'lstm';
    for (const [name, v] of [['vocabSize', vocabSize], ['embeddingDim', embeddingDim], ['hiddenSize', hiddenSize]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`NextWordModel: ${name} must be a positive integer, got ${String(v)}`);
    }
    if (vocabSize < 2) throw new RangeError(`NextWordModel: vocabSize must be at least 2, got ${vocabSize}`);
    if (!(NEXT_WORD_CELLS as readonly string[]).includes(cell)) throw new RangeError(`NextWordModel: cell must be one of ${NEXT_WORD_CELLS.join(', ')}, got ${JSON.stringify(cell)}`);
    this.cell = cell;
    this.vocabSize = vocabSize;
    this.hiddenSize = hiddenSize;
    const rng = options.rng;
    this.embedding = this.registerModule('embedding', new Embedding(vocabSize, embeddingDim, { rng }));
    const Cell = cell === 'lstm' ? LSTM : GRU;
    this.rnn = this.registerModule('rnn', new Cell(embeddingDim, hiddenSize, { batchFirst: true, rng }));
    this.head = this.registerModule('head', new Linear(hiddenSize, vocabSize, { rng }));
  }

  /** ids [N, C] int32 → logits [N, V] of the word after each row's last id. */
  forward(ids: Tensor): Tensor {
    if (ids.rank !== 2) throw new RangeError(`NextWordModel: expected int32 ids [N, C], got [${ids.shape.join(', ')}]`);
    const [n, steps] = ids.shape as [number, number];
    const x = this.embedding.forward(ids);
    const rnn = this.rnn;
    const head = this.head;
    // Without gradients, a plain LSTM / GRU gives only h after the last word (no per-step outputs)
    // and a plain Linear head is one SGEMM from its bias (rnn-inference.ts).
    const plainRnn = (rnn instanceof LSTM && rnn.constructor === LSTM) || (rnn instanceof GRU && rnn.constructor === GRU);
    const last = plainRnn ? rnn.finalHiddenForInference(x) : null;
    const out = last ?? this.rnn.forward(x)[0];
    const fast = head instanceof Linear && head.constructor === Linear ? lastStepLinearInference(out, head.weight, head.bias) : null;
    if (fast) return fast;
    return head.forward(last ?? reshape(narrow(out, 1, steps - 1, 1), [n, this.hiddenSize]));
  }
}
