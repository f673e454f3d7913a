import { add, tanh, unsqueeze, type Rng, type Tensor } from '../../tensor/index.ts';
import { Module } from '../module.ts';
import { Linear } from '../linear.ts';

/** Options of {@link TransducerJoint}. */
export interface TransducerJointOptions {
  readonly rng?: Rng;
}

/**
 * The joint network: logits(t, u) = W_out·tanh(W_enc·enc_t + b_enc + W_pred·pred_u) + b_out.
 * `forward` broadcasts enc [N, T, E] against pred [N, U+1, P] to logits [N, T, U+1, numOutputs];
 * decoders project once (`projectEncoder`, `projectPredictor`) and `combine` per step.
 */
export class TransducerJoint extends Module {
  readonly jointSize: number;
  readonly numOutputs: number;
  readonly encoderProjection: Linear;
  /** No bias: the encoder projection's covers it. */
  readonly predictorProjection: Linear;
  readonly output: Linear;

  constructor(encoderSize: number, predictorSize: number, jointSize: number, numOutputs: number, options: TransducerJointOptions = {}) {
    super();
    for (const [name, v] of [['encoderSize', encoderSize], ['predictorSize', predictorSize], ['jointSize', jointSize], ['numOutputs', numOutputs]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`TransducerJoint: ${name} must be a positive integer, got ${v}`);
    }
    this.jointSize = jointSize;
    this.numOutputs = numOutputs;
    this.encoderProjection = this.registerModule('encoderProjection', new Linear(encoderSize, jointSize, { rng: options.rng }));
    this.predictorProjection = this.registerModule('predictorProjection', new Linear(predictorSize, jointSize, { bias: false, rng: options.rng }));
    this.output = this.registerModule('output', new Linear(jointSize, numOutputs, { rng: options.rng }));
  }

  /** enc [..., E] -> [..., J]. */
  projectEncoder(encoded: Tensor): Tensor {
    return this.encoderProjection.forward(encoded);
  }

  /** pred [..., P] -> [..., J]. */
  projectPredictor(predicted: Tensor): Tensor {
    return this.predictorProjection.forward(predicted);
  }

  /** Projected encoder and predictor activations (broadcasting shapes, last dim J) -> logits. */
  combine(encoderProjected: Tensor, predictorProjected: Tensor): Tensor {
    return this.output.forward(tanh(add(encoderProjected, predictorProjected)));
  }

  /** enc [N, T, E], pred [N, U+1, P] -> logits [N, T, U+1, numOutputs]. */
  forward(encoded: Tensor, predicted: Tensor): Tensor {
    if (encoded.rank !== 3 || predicted.rank !== 3 || encoded.shape[0] !== predicted.shape[0]) {
      throw new RangeError(`TransducerJoint: expected encoder [N, T, E] and predictor [N, U+1, P] outputs, got [${encoded.shape.join(', ')}] and [${predicted.shape.join(', ')}]`);
    }
    return this.combine(unsqueeze(this.projectEncoder(encoded), 2), unsqueeze(this.projectPredictor(predicted), 1));
  }
}
