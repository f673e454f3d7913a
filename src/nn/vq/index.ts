/** Vector-quantized recurrent states: the VQ-VAE quantizer and VQ-LSTM (discrete, mergeable LSTM states). */
export { VectorQuantizer, nearestCodes, type VectorQuantizerOptions, type VectorQuantized } from './quantizer.ts';
export { VQLSTM, START_CODE, type VQLSTMOptions, type VQLSTMResult, type VQLSTMStep } from './vq-lstm.ts';
