/**
 * Bit assignments ↔ QuantPlans: a searched assignment becomes an ordinary `QuantPlan` (one
 * exact-name override per layer) that prepareQat, calibrate and convert accept; a plan file holds
 * that plan with the assignment and what the search measured.
 */
import type { Module } from '../../nn/module.ts';
import { writeFileAtomic } from '../../format/files.ts';
import type { QuantPlan, PlanOverride } from '../config/plan.ts';
import { BINARY_KINDS, TERNARY_KINDS } from '../config/qconfig.ts';
import { resolveTarget, type QatTarget } from '../qat/prepare.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import type { BitAssignment, BitChoice } from './types.ts';
import { readTextLimited } from '../../format/files.ts';

/** How a plan built from an assignment quantizes (the bit widths come from the assignment). */
export interface PlanBase {
  /**
   * Quantizer kind of multi-bit weights: 'static' (PTQ: calibrated, frozen scales; default),
   * or a QAT kind such as 'ste' or 'lsq'. 1-bit weights use 'binary' (sign, per-channel α).
   */
  readonly weightKind?: string;
  /** Quantizer kind of activations (default 'static'). */
  readonly activationKind?: string;
  /** Weight granularity (default 'channel'). */
  readonly weightGranularity?: 'tensor' | 'channel';
  /** Observer of 'static' weights (default 'mse' below 8 bits, 'minmax' at 8 and above). */
  readonly weightMethod?: string;
  /** Observer of 'static' activations (default 'minmax'). */
  readonly activationMethod?: string;
  /**
   * The layer whose input is the model input (normalised pixels, may be negative): its activation
   * is signed and asymmetric. Give `describeLayers(...)[0].name`.
   */
  readonly firstLayer?: string;
  /** 1-bit activations: 'unsigned' {0, s} (default, for ReLU networks) or 'sign' ±1 (XNOR layers). */
  readonly oneBitActivations?: 'unsigned' | 'sign';
}

/** @internal The weight spec of `bits` (and per-channel bits) under `base`. */
export function weightSpecFor(choice: Pick<BitChoice, 'w' | 'wPerChannel'>, base: PlanBase = {}): QuantizerSpec {
  const w = choice.w;
  if (!Number.isInteger(w) || w < 1 || w > 16) throw new Error(`weight bits must be an integer in [1, 16], got ${w}`);
  const granularity = base.weightGranularity ?? 'channel';
  if (w === 1) {
    if (choice.wPerChannel) throw new Error('per-channel bits need a multi-bit weight container (w >= 2)');
    return { kind: 'binary', bits: 1, granularity };
  }
  const kind = base.weightKind ?? 'static';
  const spec: Record<string, unknown> = { kind, bits: w, signed: true, symmetric: true, granularity };
  if (kind === 'static') spec['method'] = base.weightMethod ?? (w >= 8 ? 'minmax' : 'mse');
  if (choice.wPerChannel) {
    if (kind !== 'static') throw new Error(`per-channel bits are supported by the 'static' weight quantizer only (weightKind '${kind}')`);
    if (granularity !== 'channel') throw new Error("per-channel bits need weightGranularity 'channel'");
    spec['channelBits'] = [...choice.wPerChannel];
  }
  return spec as QuantizerSpec;
}

/** @internal The input-activation spec of `a` bits under `base`. */
export function activationSpecFor(a: number, first: boolean, base: PlanBase = {}): QuantizerSpec {
  if (!Number.isInteger(a) || a < 1 || a > 16) throw new Error(`activation bits must be an integer in [1, 16], got ${a}`);
  if (a === 1 && (base.oneBitActivations ?? 'unsigned') === 'sign') return { kind: 'binary', bits: 1, granularity: 'tensor' };
  const kind = base.activationKind ?? 'static';
  const signed = first && a > 1;
  const spec: Record<string, unknown> = { kind, bits: a, signed, symmetric: false, granularity: 'tensor' };
  if (kind === 'static') spec['method'] = base.activationMethod ?? 'minmax';
  if (kind === 'ste' || kind === 'clippedSte') spec['observer'] = 'movingAverage';
  if (kind === 'lsq' && !signed) spec['symmetric'] = true;
  return spec as QuantizerSpec;
}

/**
 * The QuantPlan of a bit assignment: every assigned layer gets an exact-name override with a
 * weight spec of `w` bits (per-channel `channelBits` when `wPerChannel` is set) and an input
 * spec of `a` bits, of the kinds in `base`; unassigned layers stay float (default: no
 * quantization). No implicit rules: `keepFirstLast8bit` is false and the model input is
 * quantized by the first layer's own spec (signed when `base.firstLayer` names it).
 */
export function planFromAssignment(assignment: BitAssignment, base: PlanBase = {}): QuantPlan {
  checkAssignment(assignment);
  const overrides: PlanOverride[] = Object.entries(assignment).map(([name, choice]) => ({
    match: name,
    config: { weight: weightSpecFor(choice, base), activation: activationSpecFor(choice.a, name === base.firstLayer, base) },
  }));
  return { default: { weight: null, activation: null }, overrides, keepFirstLast8bit: false, inputActivation: 'layer' };
}

/**
 * Throws unless every entry is `{ w, a, wPerChannel? }` with integer bits (per-channel ≤ w; 0 =
 * the channel is pruned, and at least one channel reaches w, so a layer keeps ≥ 1 channel).
 */
export function checkAssignment(assignment: BitAssignment): BitAssignment {
  if (typeof assignment !== 'object' || assignment === null || Array.isArray(assignment)) throw new Error('a bit assignment must be an object { layerName: { w, a } }');
  for (const [name, c] of Object.entries(assignment)) {
    const bad = (why: string): never => {
      throw new Error(`bit assignment of '${name}': ${why} (got ${JSON.stringify(c)})`);
    };
    if (typeof c !== 'object' || c === null) bad('expected { w, a }');
    if (!Number.isInteger(c.w) || c.w < 1 || c.w > 16) bad('w must be an integer in [1, 16]');
    if (!Number.isInteger(c.a) || c.a < 1 || c.a > 16) bad('a must be an integer in [1, 16]');
    if (c.wPerChannel !== undefined) {
      if (!Array.isArray(c.wPerChannel) || c.wPerChannel.length === 0) bad('wPerChannel must be a non-empty array');
      if (c.wPerChannel.some((b) => !Number.isInteger(b) || (b !== 0 && (b < 2 || b > c.w)))) bad('wPerChannel entries must be 0 (channel pruned) or integers in [2, w]');
      if (Math.max(...c.wPerChannel) !== c.w) bad('w must equal the widest channel of wPerChannel');
    }
  }
  return assignment;
}

/**
 * The bit assignment of a plan (or QConfig / resolved table) on `model`: weight and input bits of
 * every quantized layer (ternary weights count as 2 bits, binary as 1; per-channel `channelBits`
 * come back as `wPerChannel`). Layers float on both sides are omitted; a layer with only one side
 * quantized counts the float side as 32 bits.
 */
export function assignmentFromPlan(model: Module, plan: QatTarget): BitAssignment {
  const out: BitAssignment = {};
  for (const row of resolveTarget(model, plan)) {
    if (row.weightSpec === null && row.activationSpec === null) continue;
    const w = row.weightSpec === null ? 32 : BINARY_KINDS.includes(row.weightSpec.kind) ? 1 : TERNARY_KINDS.includes(row.weightSpec.kind) ? 2 : row.weightSpec.bits;
    const a = row.activationSpec === null ? 32 : row.activationSpec.bits;
    const per = row.weightSpec?.['channelBits'];
    out[row.name] = Array.isArray(per) ? { w, a, wPerChannel: per.map(Number) } : { w, a };
  }
  return out;
}

/** One line for people: 'conv1 w8a8, conv2 w3a8, ...' (per-channel widths show as their widest). */
export function formatAssignment(assignment: BitAssignment): string {
  return Object.entries(assignment).map(([layer, c]) => `${layer} w${c.w}a${c.a}`).join(', ');
}

/** What a plan file holds. */
export interface PlanFile {
  readonly format: 'lowbit-plan';
  readonly version: 1;
  /** The plan prepareQat / calibrate accept. */
  readonly plan: QuantPlan;
  /** The bit widths it encodes. */
  readonly assignment: BitAssignment;
  /** Free-form record of the search (costs, budget, accuracies, command). */
  readonly search?: Record<string, unknown>;
}

/** Writes a plan file atomically (JSON). */
export function savePlanFile(path: string, plan: QuantPlan, assignment: BitAssignment, search?: Record<string, unknown>): void {
  const file: PlanFile = { format: 'lowbit-plan', version: 1, plan, assignment: checkAssignment(assignment), ...(search ? { search } : {}) };
  writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(file, null, 2)}\n`));
}

/**
 * Reads a plan file: either a `PlanFile` or a bare QuantPlan JSON. The shape is checked here; the
 * specs are validated against a model when the plan is resolved (prepareQat / calibrate).
 */
export function loadPlanFile(path: string): { plan: QuantPlan; assignment?: BitAssignment; search?: Record<string, unknown> } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readTextLimited(path));
  } catch (e) {
    throw new Error(`${path}: not a readable JSON plan file: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error(`${path}: a plan file must hold a JSON object`);
  const obj = parsed as Record<string, unknown>;
  if (obj['format'] === 'lowbit-plan') {
    if (obj['version'] !== 1) throw new Error(`${path}: plan file version ${String(obj['version'])} is not supported (expected 1)`);
    const plan = obj['plan'];
    if (typeof plan !== 'object' || plan === null || !('default' in plan)) throw new Error(`${path}: 'plan' must be a QuantPlan with a 'default'`);
    const assignment = obj['assignment'] === undefined ? undefined : checkAssignment(obj['assignment'] as BitAssignment);
    const search = typeof obj['search'] === 'object' && obj['search'] !== null ? (obj['search'] as Record<string, unknown>) : undefined;
    return { plan: plan as QuantPlan, ...(assignment ? { assignment } : {}), ...(search ? { search } : {}) };
  }
  if (!('default' in obj)) throw new Error(`${path}: neither a lowbit-plan file nor a QuantPlan (no 'default')`);
  return { plan: parsed as QuantPlan };
}
