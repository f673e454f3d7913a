/**
 * MQBench-style benchmark (Li et al. 2021): hardware backend profiles as QuantPlan builders, power-of-two
 * quantizer kinds, and `benchmarkQuantization` (algorithms × backends × bits under one recipe, simulated
 * vs deployed accuracy). See docs/mqbench.md.
 */
export {
  BACKENDS, ALGORITHMS, MqbenchError, backendProfile, backendPlan, backendQConfig, weightSpecFor, activationSpecFor, inputSpecFor,
  type BackendName, type Algorithm, type BackendProfile, type BackendPlan,
} from './backends.ts';
export { POW2_KINDS, StePow2Quantizer, LsqPow2Quantizer, roundPowerOfTwo } from './pow2.ts';
export {
  benchmarkQuantization, runCell, evaluateSimulatedAndDeployed, MQBENCH_BACKENDS,
  type BenchmarkOptions, type MqbenchRecipe, type MqbenchResult,
} from './runner.ts';
