import type { Rng, Tensor } from '../../tensor/index.ts';
import { noGrad } from '../../autograd/index.ts';
import { Module } from '../module.ts';
import { LSTM } from '../rnn.ts';
import { TransducerJoint } from './joint.ts';
import { transducerLoss, type Lengths, type TransducerLossOptions } from './loss.ts';
import { LstmPredictor, type PredictorModule } from './predictor.ts';
import { greedyDecode, type GreedyOptions, type TransducerScorer } from './greedy.ts';
import { beamSearch, type BeamSearchOptions, type TransducerHypothesis } from './beam.ts';

/** Options of {@link Transducer}. */
export interface TransducerOptions {
  /** Features per frame F. */
  readonly inputSize: number;
  /** Number of labels V (0..V−1); the joint has V + 1 outputs and blank is index V. */
  readonly numLabels: number;
  /** Encoder LSTM hidden size (default 128). */
  readonly encoderSize?: number;
  /** Encoder LSTM layers (default 1). */
  readonly encoderLayers?: number;
  /**
   * Bidirectional encoder (default false: streaming). A backward direction reads padding frames
   * before the real ones, so with padded batches its outputs depend on the padding.
   */
  readonly bidirectional?: boolean;
  /** The prediction network (default: `new LstmPredictor(V + 1, { embeddingSize, hiddenSize: predictorSize })`). */
  readonly predictor?: PredictorModule;
  /** Default predictor's embedding width (default 32). */
  readonly embeddingSize?: number;
  /** Default predictor's LSTM size (default 64). */
  readonly predictorSize?: number;
  /** Joint network width (default 128). */
  readonly jointSize?: number;
  readonly rng?: Rng;
}

/**
 * An RNN transducer (Graves 2012): encoder LSTM over the frames (batchFirst), a prediction network
 * over the previous labels and a joint network giving logits [N, T, U+1, V+1] for every (frame,
 * label position) pair. Blank is the last output index, V.
 */
export class Transducer extends Module {
  readonly inputSize: number;
  readonly numLabels: number;
  readonly blank: number;
  readonly encoder: LSTM;
  readonly predictor: PredictorModule;
  readonly joint: TransducerJoint;

  constructor(options: TransducerOptions) {
    super();
    const { inputSize, numLabels } = options;
    if (!Number.isInteger(inputSize) || inputSize < 1) throw new RangeError(`Transducer: inputSize must be a positive integer, got ${inputSize}`);
    if (!Number.isInteger(numLabels) || numLabels < 1) throw new RangeError(`Transducer: numLabels must be a positive integer, got ${numLabels}`);
    this.inputSize = inputSize;
    this.numLabels = numLabels;
    this.blank = numLabels;
    const encoderSize = options.encoderSize ?? 128;
    const bidirectional = options.bidirectional ?? false;
    this.encoder = this.registerModule('encoder', new LSTM(inputSize, encoderSize, { numLayers: options.encoderLayers ?? 1, batchFirst: true, bidirectional, rng: options.rng }));
    const predictor = options.predictor ?? new LstmPredictor(numLabels + 1, { embeddingSize: options.embeddingSize, hiddenSize: options.predictorSize, rng: options.rng });
    this.predictor = this.registerModule('predictor', predictor);
    const encoderOut = encoderSize * (bidirectional ? 2 : 1);
    this.joint = this.registerModule('joint', new TransducerJoint(encoderOut, predictor.outputSize, options.jointSize ?? 128, numLabels + 1, { rng: options.rng }));
  }

  /** features [N, T, F] -> encoder outputs [N, T, H] (2H when bidirectional). */
  encode(features: Tensor): Tensor {
    if (features.rank !== 3 || features.shape[2] !== this.inputSize) {
      throw new RangeError(`Transducer: features must be [N, T, ${this.inputSize}], got [${features.shape.join(', ')}]`);
    }
    const [output] = this.encoder.forward(features);
    return output;
  }

  /** features [N, T, F], labels [N, U] int32 -> logits [N, T, U+1, V+1]. */
  forward(features: Tensor, labels: Tensor): Tensor {
    return this.joint.forward(this.encode(features), this.predictor.forward(labels));
  }

  /** {@link transducerLoss} of `forward(features, labels)` with blank = V (default reduction: batch mean). */
  loss(features: Tensor, featureLengths: Lengths, labels: Tensor, labelLengths: Lengths, options: Omit<TransducerLossOptions, 'blank'> = {}): Tensor {
    return transducerLoss(this.forward(features, labels), labels, featureLengths, labelLengths, { ...options, blank: this.blank });
  }

  /** The decoders' view of this model, given the encoder outputs projected by the joint. */
  scorer(): TransducerScorer {
    return {
      predictor: this.predictor,
      blank: this.blank,
      joint: (frames, predictorOutputs) => this.joint.combine(frames, this.joint.projectPredictor(predictorOutputs)),
    };
  }

  /** Encoder outputs projected into the joint space, [N, T, J] (what `scorer().joint` reads). */
  encodeForDecoding(features: Tensor): Tensor {
    return this.joint.projectEncoder(this.encode(features));
  }

  /** Greedy decoding of a batch (see {@link greedyDecode}); call `eval()` first. */
  greedyDecode(features: Tensor, featureLengths: Lengths, options: GreedyOptions = {}): number[][] {
    return greedyDecode(this.scorer(), noGrad(() => this.encodeForDecoding(features)), featureLengths, options);
  }

  /** Beam search of a batch (see {@link beamSearch}): n-best lists, best first; call `eval()` first. */
  beamSearch(features: Tensor, featureLengths: Lengths, options: BeamSearchOptions = {}): TransducerHypothesis[][] {
    return beamSearch(this.scorer(), noGrad(() => this.encodeForDecoding(features)), featureLengths, options);
  }
}
