/**
 * prepareQat: turns a float model into a fake-quant model in place, following a resolved plan,
 * plus the helpers QAT training loops call (progress, fake-quant switches, listing).
 */
import { Module } from '../../nn/module.ts';
import { Conv2d } from '../../nn/conv.ts';
import { Conv1d } from '../../nn/conv1d.ts';
import { Linear } from '../../nn/linear.ts';
import { BatchNorm1d, BatchNorm2d } from '../../nn/batchnorm.ts';
import { Identity } from '../../nn/activation.ts';
import { Add } from '../../nn/merge.ts';
import { createQuantizer, Quantizer, type QuantizerSpec } from '../quantizers/quantizer.ts';
import type { QConfig } from '../config/qconfig.ts';
import { describeSpec } from '../config/qconfig.ts';
import { resolvePlan, validateTable, type LayerType, type QuantPlan, type ResolvedLayer, type ResolveOptions } from '../config/plan.ts';
import { QuantConv1d, QuantConv2d, QuantConvBn1d, QuantConvBn2d, QuantLayer, QuantLinear } from './layers.ts';
import { QuantAdd } from './add.ts';
import { checkActivationGradients, type ActivationGradientOptions } from './activation-gradients.ts';
import { BINARY_KINDS } from '../config/qconfig.ts';
import { int8PerTensorAffine } from '../config/presets.ts';

/** What prepareQat accepts: a plan, a single QConfig for every layer (plan defaults apply), or a resolved table. */
export type QatTarget = QuantPlan | QConfig | readonly ResolvedLayer[];

export interface PrepareQatOptions extends ResolveOptions {
  /**
   * Quantizer of both inputs of every `nn.Add` (per tensor; signed, since a residual branch ends
   * in a BatchNorm without ReLU). Default: the plan's default activation spec with `signed: true`
   * (for a resolved table, or a plan whose default leaves activations float but whose overrides
   * quantize them, like a searched plan: the last quantized layer's input spec), int8PerTensorAffine when that is a
   * sign-valued kind; null leaves the adds float (the integer runtime then refuses them).
   */
  readonly addActivation?: QuantizerSpec | null;
  /**
   * Quantize the gradient entering each quantized layer's output during training (DoReFa / QNN
   * W·A·G training; see quantizeActivationGradients). Default: float activation gradients.
   */
  readonly activationGradients?: ActivationGradientOptions;
}

/** @internal The spec of the `nn.Add` inputs when `PrepareQatOptions.addActivation` is not given (see there). */
export function defaultAddSpec(target: QatTarget, table: readonly ResolvedLayer[]): QuantizerSpec | null {
  const lastInput = (): QuantizerSpec | null => [...table].reverse().find((r) => r.activationSpec !== null)?.activationSpec ?? null;
  let base: QuantizerSpec | null;
  if (Array.isArray(target)) base = lastInput();
  // A plan whose layers all come from overrides (a searched plan: default { weight: null,
  // activation: null }) still quantizes activations: its adds take the last layer's input spec.
  else base = ('default' in target ? target.default : (target as QConfig)).activation ?? ('default' in target ? lastInput() : null);
  if (base === null) return null;
  if (BINARY_KINDS.includes(base.kind) || base.bits === 1) return int8PerTensorAffine;
  return { ...base, signed: true };
}

/** The resolved table of a target on `model`. */
export function resolveTarget(model: Module, target: QatTarget, options: ResolveOptions = {}): ResolvedLayer[] {
  if (Array.isArray(target)) return validateTable(model, target);
  const plan: QuantPlan = 'default' in target ? target : { default: target as QConfig };
  return resolvePlan(model, plan, options);
}

/**
 * Prepares `model` for quantization-aware training and returns it (the same object, still a
 * plain Module): every Conv2d, Conv1d and Linear the resolved plan quantizes is replaced
 * (`setSubmodule`) by QuantConv2d / QuantConv1d / QuantLinear, or, when a BatchNorm2d follows the
 * Conv2d (a BatchNorm1d the Conv1d), by QuantConvBn2d / QuantConvBn1d with the BN folded in (the
 * BN's place then holds Identity). The new layers keep the original weight
 * and bias tensors; quantizers are built by `createQuantizer(spec, { role, shape, channelAxis })`.
 *
 * Build optimizers after this call: quantizers may add trainable parameters (LSQ steps, PACT α).
 * Layers resolved to float on both sides are left untouched.
 */
export function prepareQat<M extends Module>(model: M, target: QatTarget, options: PrepareQatOptions = {}): M {
  const already = quantizedLayers(model);
  if (already.length > 0) throw new Error(`prepareQat: the model is already prepared (quantized layers: ${already.map((l) => l.name).join(', ')})`);
  const { addActivation, activationGradients, ...resolveOptions } = options;
  const table = resolveTarget(model, target, resolveOptions);
  // Build every replacement first, so that a failing quantizer leaves the model untouched.
  const swaps: { name: string; replacement: QuantLayer; batchNorm: BatchNorm2d | BatchNorm1d | null; batchNormName: string | null }[] = [];
  for (const row of table) {
    if (row.weightSpec === null && row.activationSpec === null) continue;
    const layer = model.getSubmodule(row.name);
    if (!(layer instanceof Conv2d) && !(layer instanceof Conv1d) && !(layer instanceof Linear)) throw new Error(`prepareQat: '${row.name}' is a ${layer.constructor.name}, not a Conv2d, Conv1d or Linear`);
    const weightQuantizer = row.weightSpec === null ? null : buildQuantizer(row.weightSpec, 'weight', layer.weight.shape, row.name);
    const inputQuantizer = row.activationSpec === null ? null : buildQuantizer(row.activationSpec, 'activation', undefined, row.name);
    if (layer instanceof Linear) {
      swaps.push({ name: row.name, replacement: new QuantLinear(layer, weightQuantizer, inputQuantizer), batchNorm: null, batchNormName: null });
    } else if (row.fusedBatchNorm !== null) {
      const bn = model.getSubmodule(row.fusedBatchNorm);
      const batchNormName = row.fusedBatchNorm;
      if (layer instanceof Conv1d && bn instanceof BatchNorm1d) swaps.push({ name: row.name, replacement: new QuantConvBn1d(layer, bn, weightQuantizer, inputQuantizer), batchNorm: bn, batchNormName });
      else if (layer instanceof Conv2d && bn instanceof BatchNorm2d) swaps.push({ name: row.name, replacement: new QuantConvBn2d(layer, bn, weightQuantizer, inputQuantizer), batchNorm: bn, batchNormName });
      else throw new Error(`prepareQat: '${batchNormName}' is a ${bn.constructor.name}, which a ${layer.constructor.name} does not fold (Conv2d + BatchNorm2d, Conv1d + BatchNorm1d)`);
    } else if (layer instanceof Conv1d) {
      swaps.push({ name: row.name, replacement: new QuantConv1d(layer, weightQuantizer, inputQuantizer), batchNorm: null, batchNormName: null });
    } else {
      swaps.push({ name: row.name, replacement: new QuantConv2d(layer, weightQuantizer, inputQuantizer), batchNorm: null, batchNormName: null });
    }
  }
  const gradients = activationGradients === undefined ? null : checkActivationGradients(activationGradients, swaps.map((s) => s.name), 'prepareQat');
  if (gradients) for (const { name, replacement } of swaps) if (gradients.wanted.includes(name)) replacement.activationGradientQuantizer = gradients.quantizer;
  const addSpec = addActivation === undefined ? defaultAddSpec(target, table) : addActivation;
  const adds: { name: string; replacement: QuantAdd }[] = [];
  for (const [name, m] of model.namedModules()) {
    if (!(m instanceof Add)) continue;
    const quantizer = (): Quantizer | null => (addSpec === null ? null : buildQuantizer(addSpec, 'activation', undefined, name));
    const replacement = new QuantAdd(quantizer(), quantizer());
    replacement.training = m.training;
    adds.push({ name, replacement });
  }
  for (const { name, replacement } of adds) model.setSubmodule(name, replacement);
  for (const { name, replacement, batchNorm, batchNormName } of swaps) {
    model.setSubmodule(name, replacement);
    if (batchNorm && batchNormName !== null) {
      const identity = new Identity();
      identity.training = batchNorm.training;
      model.setSubmodule(batchNormName, identity);
    }
  }
  return model;
}

function buildQuantizer(spec: QuantizerSpec, role: 'weight' | 'activation', shape: readonly number[] | undefined, layerName: string): Quantizer {
  const context = role === 'weight' ? { role, shape, channelAxis: 0 } : { role };
  let quantizer: Quantizer;
  try {
    quantizer = createQuantizer(spec, context);
  } catch (error) {
    throw new Error(`prepareQat: cannot build the ${role} quantizer of '${layerName}' from ${JSON.stringify(spec)}: ${(error as Error).message}`);
  }
  if (!(quantizer instanceof Quantizer)) throw new Error(`prepareQat: the factory of kind '${spec.kind}' did not return a Quantizer`);
  return quantizer;
}

/** One quantized layer of a prepared model. */
export interface QuantizedLayerInfo {
  readonly name: string;
  readonly type: LayerType;
  readonly layer: QuantLayer;
  readonly weightSpec: QuantizerSpec | null;
  readonly activationSpec: QuantizerSpec | null;
  /** True for QuantConvBn2d / QuantConvBn1d (a BatchNorm folded in). */
  readonly foldedBatchNorm: boolean;
}

/** The quantized layers of a prepared model, in definition order, with their specs. */
export function quantizedLayers(model: Module): QuantizedLayerInfo[] {
  const out: QuantizedLayerInfo[] = [];
  for (const [name, module] of model.namedModules()) {
    if (!(module instanceof QuantLayer)) continue;
    out.push({
      name,
      type: module.layerType,
      layer: module,
      weightSpec: module.weightSpec,
      activationSpec: module.activationSpec,
      foldedBatchNorm: module instanceof QuantConvBn2d,
    });
  }
  return out;
}

/** Every quantizer in `model` (weight and input quantizers of all quantized layers, and any other). */
export function quantizers(model: Module): Quantizer[] {
  return model.modules().filter((m): m is Quantizer => m instanceof Quantizer);
}

/** Tells every quantizer the training progress (annealed estimators: noise decay, EDE, temperatures). */
export function setQuantProgress(model: Module, epoch: number, totalEpochs: number): void {
  if (!Number.isFinite(epoch) || !Number.isFinite(totalEpochs) || totalEpochs <= 0) {
    throw new Error(`setQuantProgress: expected epoch >= 0 and totalEpochs > 0, got ${epoch} / ${totalEpochs}`);
  }
  for (const q of quantizers(model)) q.setProgress(epoch, totalEpochs);
}

/** Makes every quantizer the identity (the prepared model then computes in float). */
export function disableFakeQuant(model: Module): void {
  for (const q of quantizers(model)) q.fakeQuantEnabled = false;
}

/** Turns fake quantization back on in every quantizer. */
export function enableFakeQuant(model: Module): void {
  for (const q of quantizers(model)) q.fakeQuantEnabled = true;
}

/** Freezes (true) or unfreezes the folded BatchNorm statistics of every QuantConvBn2d. */
export function freezeBatchNormStats(model: Module, freeze = true): void {
  for (const m of model.modules()) if (m instanceof QuantConvBn2d) m.freezeBatchNormStats = freeze;
}

/** A text table of the quantized layers (name, type, weight, input activation), one line per layer. */
export function formatQuantTable(rows: readonly { name: string; type: string; weightSpec: QuantizerSpec | null; activationSpec: QuantizerSpec | null; foldedBatchNorm?: boolean; fusedBatchNorm?: string | null }[]): string {
  const body = rows.map((r) => [
    r.name,
    r.foldedBatchNorm || r.fusedBatchNorm ? `${r.type}+BN` : r.type,
    describeSpec(r.weightSpec),
    describeSpec(r.activationSpec, 'activation'),
  ]);
  const header = ['layer', 'type', 'weight', 'input'];
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), ...body.map(line)].join('\n');
}
