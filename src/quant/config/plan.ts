/**
 * QuantPlan: a default QConfig plus per-layer overrides by module-name glob or layer type, and the
 * rules for the first and last layers. `resolvePlan` turns a plan and a model into the explicit
 * per-layer table that `prepareQat` consumes; the table is plain JSON, so a mixed-precision search
 * can emit it (or `planFromTable` of it) and a run can record it.
 */
import { Module } from '../../nn/module.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Conv1d } from '../../nn/conv1d.ts';
import { Linear } from '../../nn/linear.ts';
import { BatchNorm1d, BatchNorm2d } from '../../nn/batchnorm.ts';
import { Sequential } from '../../nn/sequential.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import { BINARY_KINDS, qconfig, TERNARY_KINDS, UNIFORM_KINDS, type QConfig, type QuantRole } from './qconfig.ts';
import { int8PerChannelSym, int8PerTensorAffine, uint8Ema } from './presets.ts';

/** Layer types a plan quantizes. */
export type LayerType = 'Conv2d' | 'Conv1d' | 'Linear';
export const LAYER_TYPES: readonly LayerType[] = ['Conv2d', 'Conv1d', 'Linear'];

/**
 * Which layers an override applies to: a glob on the dotted module name (`*` and `?` stay within
 * one name part, `**` crosses dots: 'features.*', 'classifier.**', exact 'fc3'), or a layer type.
 */
export type PlanMatch = string | { readonly type: LayerType };

export interface PlanOverride {
  readonly match: PlanMatch;
  /** A full QConfig, a partial one merged over the config so far, or null (keep the layer float). */
  readonly config: QConfig | Partial<QConfig> | null;
}

export interface QuantPlan {
  /** Config of every Conv2d, Conv1d and Linear not changed by an override. */
  readonly default: QConfig;
  /** Applied in order; a later match wins. Each must match at least one layer. */
  readonly overrides?: readonly PlanOverride[];
  /**
   * Keep the first and last quantized layers (in definition order) at 8 bits (default true):
   * binary / ternary / LQ-Nets specs and DoReFa weights become int8PerChannelSym weights and
   * uint8Ema activations, every other kind keeps its spec with `bits: 8`. A layer named exactly (no wildcard) by an override is
   * left as the override says.
   */
  readonly keepFirstLast8bit?: boolean;
  /**
   * Quantizer of the model input (the image entering the first layer), used when that layer's
   * activation is quantized: default int8PerTensorAffine (signed, since normalised pixels can be
   * negative); null keeps the input float; 'layer' uses the first layer's own activation spec.
   * Like the 8-bit rule, it does not touch a layer named exactly by an override.
   */
  readonly inputActivation?: QuantizerSpec | null | 'layer';
}

/** One row of a resolved plan: what `prepareQat` does to one layer. Plain JSON. */
export interface ResolvedLayer {
  /** Dotted module name, e.g. 'features.0'. */
  readonly name: string;
  readonly type: LayerType;
  readonly weightSpec: QuantizerSpec | null;
  readonly activationSpec: QuantizerSpec | null;
  /** Name of the BatchNorm2d (BatchNorm1d for a Conv1d) folded into this conv (QuantConvBn2d / QuantConvBn1d), or null. */
  readonly fusedBatchNorm: string | null;
}

export interface ResolveOptions {
  /** Fold a Conv2d's following BatchNorm2d (a Conv1d's following BatchNorm1d) into it (default true). */
  readonly fuseBatchNorm?: boolean;
  /**
   * Extra [conv, batchNorm] name pairs to fold, for models whose forward chains a conv and a BN
   * outside a Sequential (e.g. fields conv1 / bn1): only the caller knows the forward order.
   */
  readonly fusePairs?: readonly (readonly [string, string])[];
}

/**
 * Kinds the 8-bit rule replaces instead of widening: sign-valued ones, LQ-Nets (a 256-level learned
 * basis), and DoReFa weights (rescaled to [−1, 1], which changes a layer without a BN after it).
 */
const REPLACED_AT_8_BITS = [...BINARY_KINDS, ...TERNARY_KINDS, 'lqnet', 'dorefa'];

const NO_QUANT: QConfig = Object.freeze({ weight: null, activation: null });

/** Full-match regex of a module-name glob. */
export function globToRegExp(glob: string): RegExp {
  let source = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (c === '*') source += '[^.]*';
    else if (c === '?') source += '[^.]';
    else source += c.replace(/[\\^$.|+()[\]{}]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

function isExactName(match: PlanMatch): match is string {
  return typeof match === 'string' && !/[*?]/.test(match);
}

function describeMatch(match: PlanMatch): string {
  return typeof match === 'string' ? `'${match}'` : `{ type: '${match.type}' }`;
}

/** A layer a plan quantizes. */
export type QuantizableLayer = Conv2d | Conv1d | Linear;

/** The plan's type name of `module`, or null when a plan does not quantize it. */
export function layerTypeOf(module: Module): LayerType | null {
  return module instanceof Conv2d ? 'Conv2d' : module instanceof Conv1d ? 'Conv1d' : module instanceof Linear ? 'Linear' : null;
}

/** @internal Conv2d, Conv1d and Linear layers of `model` in definition order. */
export function quantizableLayers(model: Module): { name: string; type: LayerType; module: QuantizableLayer }[] {
  const out: { name: string; type: LayerType; module: QuantizableLayer }[] = [];
  for (const [name, module] of model.namedModules()) {
    const type = layerTypeOf(module);
    if (type !== null) out.push({ name, type, module: module as QuantizableLayer });
  }
  return out;
}

/**
 * @internal Conv name → BatchNorm name of every conv directly followed by a BatchNorm of matching
 * width in a Sequential (Conv2d → BatchNorm2d, Conv1d → BatchNorm1d), plus the explicit `fusePairs`.
 */
export function findConvBnPairs(model: Module, fusePairs: readonly (readonly [string, string])[] = []): Map<string, string> {
  const pairs = new Map<string, string>();
  for (const [name, module] of model.namedModules()) {
    if (!(module instanceof Sequential)) continue;
    const prefix = name === '' ? '' : `${name}.`;
    for (let i = 0; i + 1 < module.length; i++) {
      const conv = module.at(i);
      const bn = module.at(i + 1);
      if (convBnMatch(conv, bn) === null) pairs.set(`${prefix}${i}`, `${prefix}${i + 1}`);
    }
  }
  for (const [convName, bnName] of fusePairs) {
    const why = convBnMatch(model.getSubmodule(convName), model.getSubmodule(bnName), convName, bnName);
    if (why !== null) throw new Error(`fusePairs: ${why}`);
    pairs.set(convName, bnName);
  }
  return pairs;
}

/**
 * null when `bn` can be folded into `conv` (a Conv2d and a BatchNorm2d, or a Conv1d and a
 * BatchNorm1d, of the same width), else why not.
 */
export function convBnMatch(conv: Module, bn: Module, convName = 'the conv', bnName = 'the BatchNorm'): string | null {
  const c = conv instanceof Conv2d || conv instanceof Conv1d ? conv : null;
  if (c === null) return `'${convName}' is a ${conv.constructor.name}, not a Conv2d or Conv1d`;
  const want = c instanceof Conv2d ? BatchNorm2d : BatchNorm1d;
  if (!(bn instanceof want)) return `'${bnName}' is a ${bn.constructor.name}, not the ${want.name} a ${c.constructor.name} folds`;
  if (bn.numFeatures !== c.outChannels) return `'${bnName}' has ${bn.numFeatures} features, '${convName}' ${c.outChannels} output channels`;
  return null;
}

/** A spec at 8 bits for the first/last-layer rule (see `QuantPlan.keepFirstLast8bit`). */
export function specAt8Bits(spec: QuantizerSpec | null, role: QuantRole): QuantizerSpec | null {
  if (spec === null || spec.bits >= 8) return spec;
  if (REPLACED_AT_8_BITS.includes(spec.kind) && !(spec.kind === 'dorefa' && role === 'activation')) return role === 'weight' ? int8PerChannelSym : uint8Ema;
  return { ...spec, bits: 8 };
}

function checkPlanShape(plan: QuantPlan): void {
  if (typeof plan !== 'object' || plan === null || !('default' in plan)) throw new Error("a QuantPlan needs a 'default' QConfig");
  const known = ['default', 'overrides', 'keepFirstLast8bit', 'inputActivation'];
  const extra = Object.keys(plan).filter((k) => !known.includes(k));
  if (extra.length > 0) throw new Error(`QuantPlan: unknown keys ${extra.join(', ')} (known: ${known.join(', ')})`);
  for (const [i, o] of (plan.overrides ?? []).entries()) {
    const m = o?.match;
    const validMatch = (typeof m === 'string' && m !== '') || (typeof m === 'object' && m !== null && LAYER_TYPES.includes(m.type));
    if (!validMatch) throw new Error(`QuantPlan.overrides[${i}].match must be a name glob or { type: ${LAYER_TYPES.map((t) => `'${t}'`).join(' | ')} }, got ${JSON.stringify(m)}`);
    if (!('config' in o)) throw new Error(`QuantPlan.overrides[${i}] needs 'config' (a QConfig, a partial one, or null)`);
  }
}

/**
 * A model some of whose layers take inputs that can be negative although no ReLU precedes them in
 * a way a plan can see (MobileNetV2's linear bottlenecks: every block's expand conv reads a
 * BatchNorm output or a residual sum). `resolvePlan` makes those layers' zero-point-free unsigned
 * activation specs signed (see `signedInputRule`).
 */
export interface SignedInputLayers {
  /** Dotted names of the Conv2d / Conv1d / Linear layers whose input can be negative. */
  signedInputLayers(): readonly string[];
}

function signedInputNames(model: Module): Set<string> {
  const hook = (model as Partial<SignedInputLayers>).signedInputLayers;
  return typeof hook === 'function' ? new Set(hook.call(model)) : new Set();
}

/**
 * The activation spec of a layer whose input can be negative: an unsigned uniform spec without a
 * zero point (symmetric: LSQ, PACT, the 'static' symmetric ones...) would clip every negative input
 * to 0, so it becomes signed with the same bits (2^(b−1) − 1 positive levels instead of 2^b − 1).
 * Asymmetric specs (a zero point covers negatives), other kinds and 1-bit specs are left as they are.
 */
function signedInputRule(spec: QuantizerSpec | null): QuantizerSpec | null {
  if (spec === null || spec.signed !== false || spec.symmetric === false || spec.bits < 2) return spec;
  if (!UNIFORM_KINDS.includes(spec.kind) && spec.kind !== 'static') return spec;
  return { ...spec, signed: true };
}

/**
 * The explicit per-layer table of `plan` on `model`: every Conv2d, Conv1d and Linear in definition
 * order with the weight and input-activation spec it gets (null = float) and the BatchNorm folded into
 * it. Steps: default → overrides in order → first/last 8-bit rule → model-input rule → signed inputs
 * of the layers a `SignedInputLayers` model names (not those an override names exactly). Every
 * resulting config is validated; an override matching no layer throws.
 */
export function resolvePlan(model: Module, plan: QuantPlan, options: ResolveOptions = {}): ResolvedLayer[] {
  checkPlanShape(plan);
  const layers = quantizableLayers(model);
  if (layers.length === 0) throw new Error(`resolvePlan: ${model.constructor.name} has no Conv2d, Conv1d or Linear layer (already prepared?)`);
  const overrides = plan.overrides ?? [];
  const matchers = overrides.map((o) => (typeof o.match === 'string' ? globToRegExp(o.match) : null));
  const used = overrides.map(() => false);
  const rows = layers.map(({ name, type }) => {
    let config: QConfig = qconfig(plan.default, 'QuantPlan.default');
    let exact = false;
    overrides.forEach((o, i) => {
      const hit = typeof o.match === 'string' ? matchers[i]!.test(name) : o.match.type === type;
      if (!hit) return;
      used[i] = true;
      const where = `QuantPlan.overrides[${i}] (${describeMatch(o.match)}) on '${name}'`;
      config = o.config === null ? NO_QUANT : qconfig({ ...config, ...o.config }, where);
      if (isExactName(o.match)) exact = true;
    });
    return { name, type, weight: config.weight, activation: config.activation, exact };
  });
  const unused = overrides.filter((_, i) => !used[i]).map((o) => describeMatch(o.match));
  if (unused.length > 0) {
    throw new Error(`QuantPlan overrides ${unused.join(', ')} match no layer (layers: ${layers.map((l) => `${l.name} (${l.type})`).join(', ')})`);
  }

  const quantized = rows.filter((r) => r.weight !== null || r.activation !== null);
  if (plan.keepFirstLast8bit ?? true) {
    for (const row of new Set([quantized[0], quantized[quantized.length - 1]])) {
      if (!row || row.exact) continue;
      row.weight = specAt8Bits(row.weight, 'weight');
      row.activation = specAt8Bits(row.activation, 'activation');
    }
  }
  const first = rows[0]!;
  const inputSpec = plan.inputActivation === undefined ? int8PerTensorAffine : plan.inputActivation;
  if (inputSpec !== 'layer' && !first.exact && first.activation !== null) {
    first.activation = inputSpec === null ? null : qconfig({ weight: null, activation: inputSpec }, 'QuantPlan.inputActivation').activation;
  }
  const signedInputs = signedInputNames(model);
  for (const row of rows) {
    if (signedInputs.has(row.name) && !row.exact && row !== first) row.activation = signedInputRule(row.activation);
  }

  const pairs = options.fuseBatchNorm ?? true ? findConvBnPairs(model, options.fusePairs) : new Map<string, string>();
  return rows.map((r) => {
    const isQuantized = r.weight !== null || r.activation !== null;
    return {
      name: r.name,
      type: r.type,
      weightSpec: r.weight === null ? null : { ...r.weight },
      activationSpec: r.activation === null ? null : { ...r.activation },
      fusedBatchNorm: isQuantized ? pairs.get(r.name) ?? null : null,
    };
  });
}

/**
 * A plan that reproduces `table` exactly (one exact-name override per row, no implicit rules):
 * the form a mixed-precision search emits.
 */
export function planFromTable(table: readonly ResolvedLayer[]): QuantPlan {
  return {
    default: NO_QUANT,
    overrides: table.map((row) => ({ match: row.name, config: { weight: row.weightSpec, activation: row.activationSpec } })),
    keepFirstLast8bit: false,
    inputActivation: 'layer',
  };
}

/**
 * Checks a table (e.g. parsed from JSON) against `model`: every row names an existing layer of
 * its type, specs are valid, fused BatchNorms exist. Returns it typed.
 */
export function validateTable(model: Module, table: readonly ResolvedLayer[]): ResolvedLayer[] {
  if (!Array.isArray(table)) throw new Error('a resolved plan table must be an array of {name, type, weightSpec, activationSpec, fusedBatchNorm}');
  const seen = new Set<string>();
  return table.map((row, i) => {
    const where = `table[${i}] ('${row?.name}')`;
    if (typeof row !== 'object' || row === null || typeof row.name !== 'string') throw new Error(`table[${i}]: expected a row object with a 'name'`);
    if (seen.has(row.name)) throw new Error(`${where}: layer listed twice`);
    seen.add(row.name);
    const module = model.getSubmodule(row.name);
    const actual = layerTypeOf(module) ?? module.constructor.name;
    if (actual !== row.type) throw new Error(`${where}: the model has a ${actual} there, the table says ${row.type}`);
    const config = qconfig({ weight: row.weightSpec, activation: row.activationSpec }, where);
    const bnName = row.fusedBatchNorm ?? null;
    if (bnName !== null) {
      if (typeof bnName !== 'string') throw new Error(`${where}: fusedBatchNorm must be a module name or null`);
      if (row.type === 'Linear') throw new Error(`${where}: only a Conv2d or Conv1d can fold a BatchNorm`);
      const why = convBnMatch(module, model.getSubmodule(bnName), row.name, bnName);
      if (why !== null) throw new Error(`${where}: fusedBatchNorm: ${why}`);
    }
    return { name: row.name, type: row.type, weightSpec: config.weight, activationSpec: config.activation, fusedBatchNorm: bnName };
  });
}
