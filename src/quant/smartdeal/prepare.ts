/**
 * prepareSmartDeal: decomposes every selected Conv2d / Linear of a model and swaps in the
 * SmartDeal layer (the module swap of qat/prepare.ts: build all replacements, then
 * `setSubmodule`), plus the packed storage count `compactSize`.
 */
import { Module } from '../../nn/module.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Linear } from '../../nn/linear.ts';
import { noGrad } from '../../autograd/engine.ts';
import { decomposeWeight } from './decompose.ts';
import { SmartDealConv2d, SmartDealLayer, SmartDealLinear, type SmartDealFormat } from './layers.ts';
import { pow2Range } from './pow2.ts';

/** Options of `prepareSmartDeal` (all optional). */
export interface SmartDealOptions {
  /** Fraction of Ce rows (pieces of K weights) removed per layer, in [0, 1) (default 0.5). */
  sparsity?: number;
  /** Exponent bits per nonzero coefficient (default 3: exponents maxExponent−7 … maxExponent). */
  exponentBits?: number;
  /** Largest exponent (default 0: coefficients in ±{2^−7, …, 1} with 3 bits). */
  maxExponent?: number;
  /** 8 (int8 basis, one float32 scale per basis; default) or 32 (float32 basis). */
  basisBits?: 8 | 32;
  /** K of Linear layers (input pieces of K values; default 3 as in the paper). Conv2d uses the kernel width. */
  linearBasisSize?: number;
  /** Ce rows sharing one basis (default: all rows of an output channel, one basis per channel). */
  rowsPerBasis?: number;
  /** Alternating rounds of the decomposition (default 10). */
  iterations?: number;
  /** Layer names to convert (default: every Conv2d and Linear). */
  layers?: readonly string[];
  /** Layer names to leave dense. */
  skip?: readonly string[];
  /** Per-layer overrides of sparsity / rowsPerBasis / linearBasisSize. */
  overrides?: Readonly<Record<string, Pick<SmartDealOptions, 'sparsity' | 'rowsPerBasis' | 'linearBasisSize'>>>;
}

/**
 * Decomposes the selected Conv2d and Linear layers of `model` (trained float weights) into
 * W ≈ Ĉ·B (decompose.ts) and replaces them in place by SmartDealConv2d / SmartDealLinear, which
 * train Ĉ's values through straight-through power-of-two rounding with the row mask fixed and B
 * normally. Returns the model. Build the optimizer after this call (the parameters are new).
 * Throws, leaving the model untouched, when a named layer is missing or not a Conv2d / Linear, or
 * when nothing would be converted (no Conv2d / Linear left, e.g. a model already prepared for QAT).
 */
export function prepareSmartDeal<M extends Module>(model: M, options: SmartDealOptions = {}): M {
  const existing = smartDealLayers(model);
  if (existing.length > 0) throw new Error(`prepareSmartDeal: the model already has SmartDeal layers (${existing.map((l) => l.name).join(', ')})`);
  const exponentBits = options.exponentBits ?? 3;
  const format: SmartDealFormat = { range: pow2Range(exponentBits, options.maxExponent ?? 0), exponentBits, basisBits: options.basisBits ?? 8 };
  if (format.basisBits !== 8 && format.basisBits !== 32) throw new Error(`prepareSmartDeal: basisBits must be 8 or 32, got ${String(format.basisBits)}`);
  const skip = new Set(options.skip ?? []);
  const names = options.layers
    ? [...options.layers]
    : model.namedModules().filter(([name, m]) => name !== '' && (m instanceof Conv2d || m instanceof Linear)).map(([name]) => name);
  for (const name of skip) {
    if (!names.includes(name)) throw new Error(`prepareSmartDeal: skip lists '${name}', which is not a Conv2d or Linear to convert (candidates: ${names.join(', ')})`);
  }
  for (const name of Object.keys(options.overrides ?? {})) {
    if (!names.includes(name)) throw new Error(`prepareSmartDeal: override for '${name}', which is not a converted layer (converted: ${names.join(', ')})`);
    if (skip.has(name)) throw new Error(`prepareSmartDeal: override for '${name}', which skip leaves dense`);
  }
  const swaps: { name: string; layer: SmartDealLayer }[] = [];
  for (const name of names) {
    if (skip.has(name)) continue;
    const layer = model.getSubmodule(name);
    if (!(layer instanceof Conv2d) && !(layer instanceof Linear)) throw new Error(`prepareSmartDeal: '${name}' is a ${layer.constructor.name}, not a Conv2d or Linear`);
    const own = options.overrides?.[name] ?? {};
    const basisSize = layer instanceof Conv2d ? layer.kernelSize[1] : own.linearBasisSize ?? options.linearBasisSize ?? 3;
    const rowsPerBasis = own.rowsPerBasis ?? options.rowsPerBasis;
    const decomposition = noGrad(() => decomposeWeight(layer.weight.data, layer.weight.shape, basisSize, {
      sparsity: own.sparsity ?? options.sparsity ?? 0.5,
      range: format.range,
      basisBits: format.basisBits,
      ...(options.iterations !== undefined ? { iterations: options.iterations } : {}),
      ...(rowsPerBasis !== undefined ? { rowsPerBasis } : {}),
    }));
    swaps.push({ name, layer: layer instanceof Conv2d ? new SmartDealConv2d(layer, decomposition, format) : new SmartDealLinear(layer, decomposition, format) });
  }
  if (swaps.length === 0) {
    throw new Error(`prepareSmartDeal: nothing to convert in ${model.constructor.name}: ${names.length === 0 ? 'it has no Conv2d or Linear layer (already prepared for QAT?)' : 'every selected layer is skipped'}`);
  }
  for (const { name, layer } of swaps) model.setSubmodule(name, layer);
  return model;
}

/** One SmartDeal layer of a model. */
export interface SmartDealLayerInfo {
  readonly name: string;
  readonly layer: SmartDealLayer;
}

/** The SmartDeal layers of `model` in definition order. */
export function smartDealLayers(model: Module): SmartDealLayerInfo[] {
  return model.namedModules().filter((e): e is [string, SmartDealLayer] => e[1] instanceof SmartDealLayer).map(([name, layer]) => ({ name, layer }));
}

/** Packed storage of one SmartDeal layer, each term in bits. */
export interface SmartDealLayerSize {
  readonly name: string;
  /** Basis: G·K²·basisBits (+ G·32 for the per-basis float32 scales of an int8 basis). */
  readonly basisBits: number;
  /** Nonzero coefficients: nnz·(1 sign bit + exponentBits). */
  readonly coefficientBits: number;
  /** Sparsity index: one bit per real Ce row (kept / removed); padded rows cost nothing. */
  readonly indexBits: number;
  /** Bias: 32 bits per output. */
  readonly biasBits: number;
  /** Nonzero coefficients. */
  readonly nonzeros: number;
  /** Bytes: the four terms, each rounded up to whole bytes. */
  readonly bytes: number;
  /** The same layer dense in float32 (weight + bias). */
  readonly denseBytes: number;
}

/** `compactSize` result. */
export interface CompactSize {
  /** All SmartDeal layers plus every other parameter and persistent float buffer at 4 bytes. */
  readonly totalBytes: number;
  readonly layers: readonly SmartDealLayerSize[];
  /** Parameters and buffers outside SmartDeal layers (float32). */
  readonly otherBytes: number;
  /** The whole model dense in float32. */
  readonly denseBytes: number;
}

/** Packed size of one SmartDeal layer (see SmartDealLayerSize). */
export function smartDealLayerSize(name: string, layer: SmartDealLayer): SmartDealLayerSize {
  const { groups: G, basisSize: K, rowsPerChannel, outChannels, fanIn } = layer.layout;
  const basisBits = G * K * K * layer.format.basisBits + (layer.format.basisBits === 8 ? G * 32 : 0);
  let keptRows = 0;
  for (let i = 0; i < layer.mask.size; i += K) keptRows += layer.mask.data[i]!;
  const nonzeros = keptRows * K;
  const coefficientBits = nonzeros * (1 + layer.format.exponentBits);
  const indexBits = rowsPerChannel * outChannels;
  const biasBits = layer.bias ? 32 * layer.bias.size : 0;
  const bytes = [basisBits, coefficientBits, indexBits, biasBits].reduce((s, b) => s + Math.ceil(b / 8), 0);
  return { name, basisBits, coefficientBits, indexBits, biasBits, nonzeros, bytes, denseBytes: 4 * (outChannels * fanIn + (layer.bias?.size ?? 0)) };
}

/**
 * Storage in bytes of `model` with its SmartDeal layers packed (basis + sign/exponent codes of
 * the nonzero coefficients + the row bitmap + float32 bias, see SmartDealLayerSize) and every
 * other parameter or persistent buffer at 4 bytes (SmartDeal layers' own training state — latent
 * C, the float mask, the basis quantizer's buffers — is not stored: it is what the packed terms
 * encode). A model without SmartDeal layers gives its float32 size.
 */
export function compactSize(model: Module): CompactSize {
  const layers = smartDealLayers(model);
  const prefixes = layers.map(({ name }) => `${name}.`);
  const sizes = layers.map(({ name, layer }) => smartDealLayerSize(name, layer));
  let otherBytes = 0;
  for (const [name, t] of model.stateDict()) {
    if (!prefixes.some((p) => name.startsWith(p))) otherBytes += 4 * t.size;
  }
  const sdBytes = sizes.reduce((s, l) => s + l.bytes, 0);
  return {
    totalBytes: sdBytes + otherBytes,
    layers: sizes,
    otherBytes,
    denseBytes: otherBytes + sizes.reduce((s, l) => s + l.denseBytes, 0),
  };
}
