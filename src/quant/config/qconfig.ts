/**
 * QConfig: which quantizer a layer's weight and its input activation get (torch.ao's qconfig,
 * but holding serializable specs instead of factories: `createQuantizer(spec, context)` is the
 * factory). `null` keeps that tensor in float. Configs are validated when built by `qconfig()`.
 */
// Registers the shipped quantizer kinds, so that specs validate against them.
import '../quantizers/index.ts';
import { quantizerKinds, type QuantizerSpec } from '../quantizers/quantizer.ts';
import { applicableKinds, QUANTIZER_KINDS } from '../quantizers/kinds.ts';
import * as p from './presets.ts';

export interface QConfig {
  readonly weight: QuantizerSpec | null;
  readonly activation: QuantizerSpec | null;
}

export type QuantRole = 'weight' | 'activation';

/** Kinds whose values are ±α (bits must be 1). */
export const BINARY_KINDS: readonly string[] = ['binary', 'irnet', 'smoothBinary', 'adaste'];
/** Kinds whose values are {−α, 0, +α} (stored in 2 bits). */
export const TERNARY_KINDS: readonly string[] = ['ternary'];
/** Kinds that quantize onto an affine integer grid (with a zero level). */
export const UNIFORM_KINDS: readonly string[] = ['ste', 'clippedSte', 'lsq', 'lsqPlus', 'pact', 'noise'];

const GRANULARITIES = ['tensor', 'channel', 'group'];

/**
 * Throws a clear error unless `spec` is a valid quantizer spec for `role`: a registered kind,
 * an integer bit width its kind supports, and no contradictory options. Returns the spec.
 */
export function validateSpec(spec: QuantizerSpec, role: QuantRole, where: string = role): QuantizerSpec {
  const fail = (message: string): never => {
    throw new Error(`invalid ${where} quantizer ${describeSpecJson(spec)}: ${message}`);
  };
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) fail('expected an object {kind, bits, ...} or null');
  if (typeof spec.kind !== 'string' || spec.kind === '') fail("'kind' must be a non-empty string");
  const kinds = quantizerKinds();
  if (!kinds.includes(spec.kind)) {
    fail(`unknown kind '${spec.kind}' (registered: ${kinds.join(', ') || 'none — import quant/quantizers to register them'})`);
  }
  const bits = spec.bits;
  if (typeof bits !== 'number' || !Number.isInteger(bits)) fail(`'bits' must be an integer, got ${String(bits)}`);
  const isBinary = BINARY_KINDS.includes(spec.kind);
  const isTernary = TERNARY_KINDS.includes(spec.kind);
  if (isBinary && bits !== 1) fail(`kind '${spec.kind}' is binary: bits must be 1, got ${bits}`);
  if (isTernary && bits !== 2) fail(`kind '${spec.kind}' is ternary (values −α, 0, +α stored in 2 bits): bits must be 2, got ${bits}`);
  if (!isBinary && !isTernary) {
    if (bits < 1 || bits > 16) fail(`bits must be in [1, 16], got ${bits}`);
    if (bits === 1 && spec.signed !== false && UNIFORM_KINDS.includes(spec.kind)) {
      fail("a signed 1-bit uniform grid does not exist: use a binary kind ('binary', 'irnet', 'smoothBinary', 'adaste') or signed: false");
    }
  }
  if ((QUANTIZER_KINDS as readonly string[]).includes(spec.kind)) {
    const applicable: readonly string[] = applicableKinds(role, bits);
    if (!applicable.includes(spec.kind)) {
      fail(`kind '${spec.kind}' does not quantize ${role}s at ${bits} bit${bits === 1 ? '' : 's'} (kinds that do: ${applicable.join(', ') || 'none'})`);
    }
  }
  checkOptions(spec, role, isBinary || isTernary, fail);
  return spec;
}

function checkOptions(spec: QuantizerSpec, role: QuantRole, isSignValued: boolean, fail: (message: string) => never): void {
  const { signed, symmetric, granularity, groupSize, axis } = spec;
  if (signed !== undefined && typeof signed !== 'boolean') fail(`'signed' must be a boolean, got ${String(signed)}`);
  if (symmetric !== undefined && typeof symmetric !== 'boolean') fail(`'symmetric' must be a boolean, got ${String(symmetric)}`);
  if (granularity !== undefined && !GRANULARITIES.includes(granularity as string)) {
    fail(`'granularity' must be one of ${GRANULARITIES.join(', ')}, got ${String(granularity)}`);
  }
  if (granularity === 'group') {
    if (typeof groupSize !== 'number' || !Number.isInteger(groupSize) || groupSize < 1) fail(`granularity 'group' needs a positive integer 'groupSize', got ${String(groupSize)}`);
  } else if (groupSize !== undefined) {
    fail(`'groupSize' conflicts with granularity '${String(granularity ?? 'tensor')}' (set granularity: 'group')`);
  }
  if (axis !== undefined && (granularity ?? 'tensor') === 'tensor') fail("'axis' conflicts with granularity 'tensor'");
  if (role === 'activation' && (granularity === 'channel' || granularity === 'group')) {
    fail(`activations are quantized per tensor; granularity '${String(granularity)}' needs a channel axis the layer input does not fix`);
  }
  if (isSignValued) {
    if (signed === false) fail(`kind '${spec.kind}' has signed values (±α): 'signed: false' conflicts`);
    if (symmetric === false) fail(`kind '${spec.kind}' is symmetric by definition: 'symmetric: false' conflicts`);
    return;
  }
  if (role === 'weight' && signed === false) fail("weights are signed: 'signed: false' would clip every negative weight to 0");
  if (spec.kind === 'lsqPlus' && symmetric === true) fail("LSQ+ learns an offset: 'symmetric: true' conflicts (use kind 'lsq')");
  if (signed === true && symmetric === false && spec.bits === 1) fail('a 1-bit asymmetric signed grid does not exist');
}

/** Validates and returns a frozen QConfig; unknown keys and invalid specs throw. */
export function qconfig(config: QConfig, where = 'qconfig'): QConfig {
  if (typeof config !== 'object' || config === null) throw new Error(`${where}: expected {weight, activation}, got ${String(config)}`);
  const extra = Object.keys(config).filter((k) => k !== 'weight' && k !== 'activation');
  if (extra.length > 0) throw new Error(`${where}: unknown keys ${extra.join(', ')} (a QConfig has 'weight' and 'activation')`);
  if (!('weight' in config) || !('activation' in config)) {
    throw new Error(`${where}: both 'weight' and 'activation' must be given (null keeps that tensor in float)`);
  }
  const weight = config.weight === null ? null : Object.freeze({ ...validateSpec(config.weight, 'weight', `${where}.weight`) });
  const activation = config.activation === null ? null : Object.freeze({ ...validateSpec(config.activation, 'activation', `${where}.activation`) });
  return Object.freeze({ weight, activation });
}

// ------------------------------------------------------------------ QConfig presets
/** No quantization: both tensors float. */
export const float32: QConfig = Object.freeze({ weight: null, activation: null });
/** int8 per-channel symmetric weights, uint8 EMA-ranged activations (the deployment default). */
export const w8a8: QConfig = Object.freeze({ weight: p.int8PerChannelSym, activation: p.uint8Ema });
/** 4-bit LSQ weights and activations. */
export const w4a4: QConfig = Object.freeze({ weight: p.int4Lsq, activation: p.uint4Lsq });
/** 2-bit LSQ weights and activations. */
export const w2a2: QConfig = Object.freeze({ weight: p.int2Lsq, activation: p.uint2Lsq });
/**
 * Binary weights (sign, per-channel α) and 1-bit activations {0, s} with a learned step
 * (uint1Lsq). Not sign activations: the layer inputs of ReLU networks (every model in nn/models)
 * are ≥ 0, where sign(x) is +1 everywhere. For networks whose layer inputs are sign-valued
 * (Hardtanh, BN outputs) use `qconfigFor('w1a1', e, { signActivations: true })`.
 */
export const w1a1: QConfig = Object.freeze({ weight: p.binarySignPerChannel, activation: p.uint1Lsq });
/** Ternary TWN weights with 8-bit activations (`qconfigFor('ternary', e, { activationBits: 4 })` for 4). */
export const ternary: QConfig = Object.freeze({ weight: p.ternaryTwn, activation: p.uint8Ema });

// ------------------------------------------------------------------ scheme × estimator
export const SCHEMES = ['w8a8', 'w4a4', 'w2a2', 'w1a1', 'ternary'] as const;
export type Scheme = (typeof SCHEMES)[number];

export const ESTIMATORS = [
  'ste', 'clippedSte', 'lsq', 'lsqPlus', 'pact', 'dorefa', 'lqnet', 'noise', 'binary', 'irnet', 'smoothBinary', 'adaste', 'ternary',
] as const;
export type Estimator = (typeof ESTIMATORS)[number];

/** Estimators that quantize onto a b-bit grid (and how weights / activations are built). */
const MULTI_BIT: Partial<Record<Estimator, (bits: number) => QConfig>> = {
  ste: (bits) => ({
    weight: { ...p.int8PerChannelSym, bits },
    activation: { ...p.uint8Ema, bits },
  }),
  clippedSte: (bits) => ({
    weight: { ...p.int8PerChannelSym, kind: 'clippedSte', bits },
    activation: { ...p.uint8Ema, kind: 'clippedSte', bits },
  }),
  lsq: (bits) => ({ weight: { ...p.int8Lsq, bits }, activation: { ...p.uint8Lsq, bits } }),
  lsqPlus: (bits) => ({ weight: { ...p.int4LsqPlus, bits }, activation: { ...p.uint4LsqPlus, bits } }),
  // PACT is an activation quantizer; weights get per-channel min-max STE (its paper used DoReFa
  // weights, whose [−1, 1] rescaling only works with a BatchNorm after every layer).
  pact: (bits) => ({ weight: { ...p.int8PerChannelSym, bits }, activation: { ...p.pactUint4, bits } }),
  dorefa: (bits) => ({ weight: { ...p.dorefaInt4, bits }, activation: { ...p.dorefaUint4, bits } }),
  lqnet: (bits) => ({ weight: { ...p.lqnetInt2, bits }, activation: { ...p.lqnetUint2, bits } }),
  noise: (bits) => ({ weight: { ...p.noiseInt4, bits }, activation: { ...p.noiseUint4, bits } }),
};

/** Binary estimators: weight spec and the sign activation used with `signActivations`. */
const BINARY: Partial<Record<Estimator, { weight: QuantizerSpec; signActivation: QuantizerSpec }>> = {
  binary: { weight: p.binarySignPerChannel, signActivation: p.binarySign },
  irnet: { weight: p.irnetBinary, signActivation: { ...p.irnetBinary, granularity: 'tensor' } },
  // smoothBinary is a weight relaxation; its activations binarize with plain sign.
  smoothBinary: { weight: { ...p.smoothBinarySign, granularity: 'channel' }, signActivation: p.binarySign },
  // AdaSTE is a weight estimator; its activations binarize with plain sign.
  adaste: { weight: p.adasteBinaryPerChannel, signActivation: p.binarySign },
};

/** The estimators `qconfigFor(scheme, ·)` accepts. */
export function estimatorsFor(scheme: Scheme): Estimator[] {
  switch (scheme) {
    case 'w8a8':
      return ESTIMATORS.filter((e) => MULTI_BIT[e] !== undefined && e !== 'lqnet');
    case 'w4a4':
    case 'w2a2':
      return ESTIMATORS.filter((e) => MULTI_BIT[e] !== undefined);
    case 'w1a1':
      return ESTIMATORS.filter((e) => BINARY[e] !== undefined);
    case 'ternary':
      return ['ternary', ...ESTIMATORS.filter((e) => MULTI_BIT[e] !== undefined && e !== 'lqnet')];
  }
}

export interface QConfigForOptions {
  /** Activation bits of the 'ternary' scheme: 8 (default) or 4. */
  readonly activationBits?: 8 | 4;
  /** w1a1: binarize activations with sign (±1) instead of {0, s} (default false, see `w1a1`). */
  readonly signActivations?: boolean;
}

/**
 * The QConfig of a scheme trained with an estimator, validated:
 * - w8a8 / w4a4 / w2a2: weights signed per channel (range-based kinds) or per tensor (learned
 *   kinds), activations unsigned per tensor, both with the estimator's kind ('pact' pairs PACT
 *   activations with per-channel STE weights). DoReFa weights are rescaled to [−1, 1]: they suit
 *   networks with a BatchNorm after each layer (cnn), not LeNet-5 or a BN-free MLP. 'lqnet' is not offered at 8 bits (a 256-level
 *   learned basis is not what LQ-Nets is for).
 * - w1a1: weights 'binary' (sign, per-channel α), 'irnet', 'smoothBinary' or 'adaste'; activations 1-bit
 *   {0, s} with a learned step (uint1Lsq), or the estimator's sign with `signActivations: true`.
 * - ternary: TWN weights; the estimator picks the activation quantizer ('ternary' = 'ste'),
 *   8-bit activations by default, 4 with `activationBits: 4`.
 * An estimator that does not apply to the scheme throws naming the ones that do.
 */
export function qconfigFor(scheme: Scheme, estimator: Estimator, options: QConfigForOptions = {}): QConfig {
  if (!SCHEMES.includes(scheme)) throw new Error(`unknown scheme '${String(scheme)}' (known: ${SCHEMES.join(', ')})`);
  const valid = estimatorsFor(scheme);
  if (!valid.includes(estimator)) {
    const hint = BINARY[estimator] ? ' (a binary estimator: use scheme w1a1)' : estimator === 'ternary' ? ' (use scheme ternary)' : '';
    throw new Error(`estimator '${String(estimator)}' does not apply to scheme '${scheme}'${hint}; valid: ${valid.join(', ')}`);
  }
  const where = `qconfigFor('${scheme}', '${estimator}')`;
  if (scheme === 'w1a1') {
    const binary = BINARY[estimator]!;
    return qconfig({ weight: binary.weight, activation: options.signActivations ? binary.signActivation : p.uint1Lsq }, where);
  }
  if (scheme === 'ternary') {
    const bits = options.activationBits ?? 8;
    if (bits !== 8 && bits !== 4) throw new Error(`${where}: activationBits must be 8 or 4, got ${String(bits)}`);
    const build = MULTI_BIT[estimator === 'ternary' ? 'ste' : estimator]!;
    return qconfig({ weight: p.ternaryTwn, activation: build(bits).activation }, where);
  }
  const bits = scheme === 'w8a8' ? 8 : scheme === 'w4a4' ? 4 : 2;
  return qconfig(MULTI_BIT[estimator]!(bits), where);
}

// ------------------------------------------------------------------ printing
/**
 * A short human label of a spec: `lsq uint4`, `ste int8/ch`, `binary ±α/ch`, `float`. Without an
 * explicit `signed`, the role's default applies (weights signed, activations unsigned).
 */
export function describeSpec(spec: QuantizerSpec | null, role: QuantRole = 'weight'): string {
  if (spec === null) return 'float';
  const per = spec.granularity === 'channel' ? '/ch' : spec.granularity === 'group' ? `/g${String(spec.groupSize)}` : '';
  if (BINARY_KINDS.includes(spec.kind)) return `${spec.kind} ±α${per}`;
  if (TERNARY_KINDS.includes(spec.kind)) return `${spec.kind} {−α,0,+α}${per}`;
  const signed = typeof spec.signed === 'boolean' ? spec.signed : role === 'weight';
  return `${spec.kind} ${signed ? 'int' : 'uint'}${spec.bits}${per}`;
}

function describeSpecJson(spec: unknown): string {
  try {
    return JSON.stringify(spec) ?? String(spec);
  } catch {
    return String(spec);
  }
}
