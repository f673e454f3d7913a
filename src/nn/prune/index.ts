/**
 * Structured pruning during training with variational Bernoulli unit gates (Guenter & Sideris,
 * "Robust Learning of Parsimonious Deep Neural Networks"): gate wrappers, ELBO prior terms, the
 * pruner that removes units while training, and the final deterministic network. See docs/pruning.md.
 */
export { GatedUnits, relaxedBernoulli, bernoulliKl, gaussianKl, unitsOf, THETA_EPS, type GateableLayer } from './gate.ts';
export {
  PruneError, layerChain, runChain, checkChain, prunablePairs, removeUnits, finalizePruned, keptUnits, layerSizes, shapeLike,
  type ChainEntry, type PrunablePair, type ParamReplacement, type LayerSize,
} from './structure.ts';
export { VariationalPruner, PruningOptimizer, moveOptimizerState, isGated, type VariationalPrunerOptions, type PruneEvent } from './pruner.ts';
