/** RNN transducer (RNN-T): loss, model (encoder, prediction and joint networks), decoding and the label error rate. */
export { transducerLoss, transducerLossValues, logAddExp, type TransducerLossOptions, type TransducerLossValues, type Lengths } from './loss.ts';
export { LstmPredictor, type TransducerPredictor, type PredictorModule, type LstmPredictorState, type LstmPredictorOptions } from './predictor.ts';
export { TransducerJoint, type TransducerJointOptions } from './joint.ts';
export { Transducer, type TransducerOptions } from './model.ts';
export { greedyDecode, type GreedyOptions, type TransducerScorer } from './greedy.ts';
export { beamSearch, type BeamSearchOptions, type BeamMerge, type TransducerHypothesis, type AlternativeHypothesis } from './beam.ts';
export { editDistance, labelErrorRate } from './metrics.ts';
