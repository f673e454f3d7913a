/**
 * Vector-quantized recurrent states (VQ-T, Shi et al. 2022): the VQ-VAE quantizer, VQ-LSTM
 * (discrete, mergeable LSTM states), its RNN-T prediction network, lattice generation by
 * state-merged beam search, and the lattice oracle error and density.
 */
export { VectorQuantizer, nearestCodes, type VectorQuantizerOptions, type VectorQuantized } from './quantizer.ts';
export { VQLSTM, START_CODE, type VQLSTMOptions, type VQLSTMResult, type VQLSTMStep } from './vq-lstm.ts';
export { VqLstmPredictor, type VqPredictorState, type VqLstmPredictorOptions } from './predictor.ts';
export {
  checkLattice, oracleErrors, latticeDensity, latticePaths, LatticeError,
  type Lattice, type LatticeArc, type OracleResult, type LatticeDensity,
} from './lattice.ts';
export { beamLattice, type BeamLatticeOptions, type DecodedLattice } from './lattice-search.ts';
