/**
 * MQBench-style deployment profiles (Li et al. 2021, "MQBench: Towards Reproducible and Deployable
 * Model Quantization Benchmark", Table 1): each backend fixes the quantization SCHEME a chip can run
 * (weight symmetry and granularity, activation signedness and zero point, power-of-two scales,
 * which layers stay at 8 bits, BatchNorm folding); an algorithm fixes only the ESTIMATOR (how the
 * scale is found and how gradients pass). `backendPlan(backend, algorithm, bits)` combines both into
 * a validated QuantPlan on the config system of quant/config, plus the resolve options (BN folding).
 */
import { qconfig, type QConfig } from '../config/qconfig.ts';
import type { QuantPlan, ResolveOptions } from '../config/plan.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import './pow2.ts';

/** Backends with a profile: the academic setting and four hardware schemes. */
export const BACKENDS = ['academic', 'tensorrt', 'fbgemm', 'snpe', 'tvm'] as const;
export type BackendName = (typeof BACKENDS)[number];

/** Algorithms (estimator families of quant/quantizers) the benchmark trains. */
export const ALGORITHMS = ['ste', 'lsq', 'pact', 'noise', 'dorefa', 'lqnet'] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** The quantization scheme of a backend. */
export interface BackendProfile {
  readonly name: BackendName;
  /** Hardware class and the product it models. */
  readonly hardware: string;
  /** Weights: signed; symmetric (z = 0, narrow range) or affine; one scale per tensor or per output channel. */
  readonly weight: { readonly symmetric: boolean; readonly granularity: 'tensor' | 'channel' };
  /** Layer-input activations (per tensor): signed int or unsigned uint; symmetric (z = 0) or affine. */
  readonly activation: { readonly signed: boolean; readonly symmetric: boolean };
  /** The model input (the normalised image, which is negative in places), always 8-bit. */
  readonly input: { readonly signed: boolean; readonly symmetric: boolean };
  /** Every scale is a power of two (shift-only requantization). */
  readonly powerOfTwo: boolean;
  /** First and last quantized layers kept at 8 bits (the academic convention) or at the target width. */
  readonly keepFirstLast8bit: boolean;
  /** A Conv2d's following BatchNorm2d is folded into its weight during QAT (QuantConvBn2d). */
  readonly foldBatchNorm: boolean;
  /** Why lowbit's integer runtime cannot run this scheme, or null when it can. */
  readonly notDeployable: string | null;
}

const PROFILES: Readonly<Record<BackendName, BackendProfile>> = Object.freeze({
  academic: {
    name: 'academic', hardware: 'none (the academic setting: simulation only)',
    weight: { symmetric: true, granularity: 'tensor' }, activation: { signed: false, symmetric: true },
    input: { signed: true, symmetric: false }, powerOfTwo: false, keepFirstLast8bit: true, foldBatchNorm: false, notDeployable: null,
  },
  tensorrt: {
    name: 'tensorrt', hardware: 'GPU (NVIDIA TensorRT)',
    weight: { symmetric: true, granularity: 'channel' }, activation: { signed: true, symmetric: true },
    input: { signed: true, symmetric: true }, powerOfTwo: false, keepFirstLast8bit: false, foldBatchNorm: true, notDeployable: null,
  },
  fbgemm: {
    name: 'fbgemm', hardware: 'x86 CPU (FBGEMM)',
    weight: { symmetric: true, granularity: 'channel' }, activation: { signed: false, symmetric: false },
    input: { signed: false, symmetric: false }, powerOfTwo: false, keepFirstLast8bit: false, foldBatchNorm: true, notDeployable: null,
  },
  snpe: {
    name: 'snpe', hardware: 'DSP (Qualcomm SNPE / Hexagon)',
    weight: { symmetric: false, granularity: 'tensor' }, activation: { signed: false, symmetric: false },
    input: { signed: false, symmetric: false }, powerOfTwo: false, keepFirstLast8bit: false, foldBatchNorm: true,
    notDeployable: 'asymmetric (zero-point) weights: the integer runtime only runs symmetric weights',
  },
  tvm: {
    name: 'tvm', hardware: 'ARM CPU / FPGA with shift requantization (TVM, Vitis, NNIE-like)',
    weight: { symmetric: true, granularity: 'tensor' }, activation: { signed: true, symmetric: true },
    input: { signed: true, symmetric: true }, powerOfTwo: true, keepFirstLast8bit: false, foldBatchNorm: true, notDeployable: null,
  },
});

/** A backend name or algorithm that does not exist, or a combination the scheme cannot express. */
export class MqbenchError extends Error {
  override name = 'MqbenchError';
  constructor(
    readonly reason: 'unknown-backend' | 'unknown-algorithm' | 'unsupported',
    message: string,
  ) {
    super(message);
  }
}

/** The profile of `name`; an unknown name throws `MqbenchError` listing the known ones. */
export function backendProfile(name: string): BackendProfile {
  if (!(BACKENDS as readonly string[]).includes(name)) {
    throw new MqbenchError('unknown-backend', `unknown backend '${String(name)}' (known: ${BACKENDS.join(', ')})`);
  }
  return PROFILES[name as BackendName];
}

function checkAlgorithm(name: string): Algorithm {
  if (!(ALGORITHMS as readonly string[]).includes(name)) {
    throw new MqbenchError('unknown-algorithm', `unknown algorithm '${String(name)}' (known: ${ALGORITHMS.join(', ')})`);
  }
  return name as Algorithm;
}

function checkBits(bits: number): void {
  if (!Number.isInteger(bits) || bits < 2 || bits > 8) throw new MqbenchError('unsupported', `bits must be an integer in [2, 8], got ${String(bits)}`);
}

function unsupported(profile: BackendProfile, algorithm: Algorithm, why: string): never {
  throw new MqbenchError('unsupported', `algorithm '${algorithm}' on backend '${profile.name}': ${why}`);
}

/** The kind of a uniform estimator on a grid with the profile's symmetry and scale rule. */
function uniformKind(profile: BackendProfile, algorithm: Algorithm, symmetric: boolean): string {
  switch (algorithm) {
    case 'ste':
    case 'pact':
      return profile.powerOfTwo ? 'stePow2' : 'ste';
    case 'lsq':
      return profile.powerOfTwo ? 'lsqPow2' : symmetric ? 'lsq' : 'lsqPlus';
    case 'noise':
      if (profile.powerOfTwo) unsupported(profile, algorithm, 'the noise-injection quantizer has no power-of-two variant');
      if (!symmetric) unsupported(profile, algorithm, 'the noise-injection quantizer has no zero point (symmetric grids only)');
      return 'noise';
    default:
      return unsupported(profile, algorithm, 'a non-uniform (codebook) quantizer: no hardware backend runs it; use the academic backend');
  }
}

/** The weight quantizer spec of `algorithm` at `bits` under `backend`'s scheme. */
export function weightSpecFor(backend: string, algorithm: string, bits: number): QuantizerSpec {
  const profile = backendProfile(backend);
  const algo = checkAlgorithm(algorithm);
  checkBits(bits);
  const { symmetric, granularity } = profile.weight;
  if (algo === 'dorefa' || algo === 'lqnet') {
    if (profile.name !== 'academic') unsupported(profile, algo, 'its weight levels are a codebook, not an integer grid with one scale: no hardware backend runs it; use the academic backend');
    return { kind: algo, bits, signed: true, granularity };
  }
  return { kind: uniformKind(profile, algo, symmetric), bits, signed: true, symmetric, granularity };
}

/** The layer-input (activation) quantizer spec of `algorithm` at `bits` under `backend`'s scheme. */
export function activationSpecFor(backend: string, algorithm: string, bits: number): QuantizerSpec {
  const profile = backendProfile(backend);
  const algo = checkAlgorithm(algorithm);
  checkBits(bits);
  const { signed, symmetric } = profile.activation;
  if (algo === 'dorefa' || algo === 'lqnet') {
    if (profile.name !== 'academic') unsupported(profile, algo, 'its activation quantizer is not one of the hardware grids; use the academic backend');
    return { kind: algo, bits, signed: false, granularity: 'tensor' };
  }
  if (algo === 'pact') {
    if (profile.powerOfTwo) unsupported(profile, algo, 'PACT learns the clipping level α and s = α/n, which is not a power of two');
    // PACT's grid has z = 0: a valid affine (asymmetric) grid for the unsigned backends, the zero point just is 0.
    return { kind: 'pact', bits, signed };
  }
  const kind = uniformKind(profile, algo, symmetric);
  const spec: QuantizerSpec = { kind, bits, signed, symmetric, granularity: 'tensor' };
  return kind === 'ste' || kind === 'stePow2' ? { ...spec, observer: 'movingAverage' } : spec;
}

/** The 8-bit quantizer of the model input under `backend` (min-max EMA range). */
export function inputSpecFor(backend: string): QuantizerSpec {
  const profile = backendProfile(backend);
  const { signed, symmetric } = profile.input;
  return { kind: profile.powerOfTwo ? 'stePow2' : 'ste', bits: 8, signed, symmetric, granularity: 'tensor', observer: 'movingAverage' };
}

/** The validated QConfig of every hidden layer: `algorithm`'s estimators on `backend`'s grids. */
export function backendQConfig(backend: string, algorithm: string, bits: number): QConfig {
  return qconfig({ weight: weightSpecFor(backend, algorithm, bits), activation: activationSpecFor(backend, algorithm, bits) }, `backendQConfig('${backend}', '${algorithm}', ${bits})`);
}

/** A plan and the resolve options that apply it. */
export interface BackendPlan {
  readonly profile: BackendProfile;
  readonly plan: QuantPlan;
  readonly resolve: ResolveOptions;
}

/**
 * The QuantPlan of `algorithm` at `bits` for `backend`: `backendQConfig` on every Conv2d / Linear,
 * the first/last-layer rule and the 8-bit model-input quantizer of the profile; `resolve` folds
 * BatchNorms exactly when the backend does. Unknown names and combinations the scheme cannot
 * express (PACT with power-of-two scales, codebook quantizers on hardware) throw `MqbenchError`.
 */
export function backendPlan(backend: string, algorithm: string, bits: number): BackendPlan {
  const profile = backendProfile(backend);
  const plan: QuantPlan = {
    default: backendQConfig(backend, algorithm, bits),
    keepFirstLast8bit: profile.keepFirstLast8bit,
    inputActivation: inputSpecFor(backend),
  };
  return { profile, plan, resolve: { fuseBatchNorm: profile.foldBatchNorm } };
}
