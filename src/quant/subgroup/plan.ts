import type { Module } from '../../nn/module.ts';
import { add } from '../../tensor/ops.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { packBits } from '../core/packing.ts';
import { SCALE_BYTES, subgroupBytes } from './choices.ts';
import { SubgroupLinear } from './linear.ts';

/** The widths chosen for one searchable layer. */
export interface SubgroupLayerPlan {
  /** Dotted module path, e.g. `block0.attn.q`. */
  readonly name: string;
  /** Elements per subgroup. */
  readonly groupElements: number;
  /** Width per subgroup (0 = pruned). */
  readonly bits: readonly number[];
}

/** A subgroup-wise precision and pruning plan over every {@link SubgroupLinear} of a model. */
export interface SubgroupPlan {
  readonly layers: readonly SubgroupLayerPlan[];
}

/** The model's searchable layers with their dotted names, in module order; throws when there are none. */
export function subgroupLayers(model: Module): [string, SubgroupLinear][] {
  const found = model.namedModules().filter((entry): entry is [string, SubgroupLinear] => entry[1] instanceof SubgroupLinear);
  if (found.length === 0) throw new Error('subgroup search: the model has no SubgroupLinear layers (call makeSearchable or build them first)');
  return found;
}

/** Stored bytes of a plan: Σ over layers and subgroups of ⌈n·b/8⌉ + 4 (0 for pruned subgroups). */
export function planBytes(plan: SubgroupPlan): number {
  let total = 0;
  for (const layer of plan.layers) for (const b of layer.bits) total += subgroupBytes(layer.groupElements, b);
  return total;
}

/** Differentiable expected stored bytes of the model under its architecture weights: Σ_layers E_layer. */
export function expectedModelBytes(model: Module): Tensor {
  let total: Tensor | null = null;
  for (const [, layer] of subgroupLayers(model)) total = total ? add(total, layer.expectedBytes()) : layer.expectedBytes();
  return total!;
}

/** Every subgroup at `bits` (which must be a choice of every layer). */
export function uniformPlan(model: Module, bits: number): SubgroupPlan {
  return {
    layers: subgroupLayers(model).map(([name, layer]) => {
      if (!(layer.choices as readonly number[]).includes(bits)) throw new RangeError(`uniformPlan: ${bits} bits is not a choice of layer '${name}' {${layer.choices.join(', ')}}`);
      return { name, groupElements: layer.groupElements, bits: new Array<number>(layer.groups).fill(bits) };
    }),
  };
}

/** Fixes every searchable layer at the plan's widths (fixed mode); the plan must name exactly the model's layers. */
export function applyPlan(model: Module, plan: SubgroupPlan): void {
  const layers = subgroupLayers(model);
  const byName = new Map(plan.layers.map((l) => [l.name, l]));
  if (byName.size !== plan.layers.length) throw new Error('applyPlan: the plan names a layer twice');
  for (const [name, layer] of layers) {
    const entry = byName.get(name);
    if (!entry) throw new Error(`applyPlan: the plan has no entry for layer '${name}'`);
    if (entry.groupElements !== layer.groupElements) throw new Error(`applyPlan: layer '${name}' has ${layer.groupElements} elements per subgroup, the plan says ${entry.groupElements}`);
    layer.setAssignment(entry.bits);
    byName.delete(name);
  }
  if (byName.size > 0) throw new Error(`applyPlan: the plan names layers the model does not have: ${[...byName.keys()].join(', ')}`);
}

export interface DerivePlanOptions {
  /** Byte budget the plan must fit; without it the plan is the plain argmax. */
  budgetBytes?: number;
  /**
   * After fitting, spend the bytes left under the budget on the upgrades the architecture logits
   * favour most per byte (default true), so that plans compare at (nearly) equal size.
   */
  fill?: boolean;
}

/**
 * Derives the discrete plan from the architecture logits: each subgroup takes its argmax choice.
 * With a budget, a plan over it is repaired greedily — the one-step downgrade with the least logit
 * loss per byte saved, θ_k − θ_{k−1} over bytes_k − bytes_{k−1}, until it fits — and then (fill)
 * the one-step upgrade with the least logit loss per byte added that still fits is applied while
 * one exists. Throws when even the smallest choices exceed the budget.
 */
export function derivePlan(model: Module, options: DerivePlanOptions = {}): SubgroupPlan {
  const layers = subgroupLayers(model);
  const chosen = layers.map(([, layer]) => {
    const k = layer.choices.length;
    const picks = new Int32Array(layer.groups);
    for (let g = 0; g < layer.groups; g++) {
      let best = 0;
      for (let j = 1; j < k; j++) if (layer.archLogits.data[g * k + j]! > layer.archLogits.data[g * k + best]!) best = j;
      picks[g] = best;
    }
    return picks;
  });
  const build = (): SubgroupPlan => ({
    layers: layers.map(([name, layer], i) => ({ name, groupElements: layer.groupElements, bits: Array.from(chosen[i]!, (j) => layer.choices[j]!) })),
  });
  const budget = options.budgetBytes;
  if (budget === undefined) return build();
  if (!(budget > 0) || !Number.isFinite(budget)) throw new RangeError(`derivePlan: budgetBytes must be a positive finite number, got ${budget}`);
  const minimum = layers.reduce((s, [, layer]) => s + layer.groups * subgroupBytes(layer.groupElements, layer.choices[0]!), 0);
  if (minimum > budget) throw new RangeError(`derivePlan: the budget ${budget} B is below the smallest plan (${minimum} B, every subgroup at its lowest choice)`);
  let total = planBytes(build());
  // One-step moves: delta = +1 (upgrade) or −1 (downgrade); returns the best [layer, group] by logit loss per byte.
  const bestMove = (delta: 1 | -1, room: number): [number, number, number] | null => {
    let best: [number, number, number] | null = null;
    let bestRatio = Infinity;
    layers.forEach(([, layer], i) => {
      const k = layer.choices.length;
      const bytes = layer.choiceBytes();
      for (let g = 0; g < layer.groups; g++) {
        const from = chosen[i]![g]!;
        const to = from + delta;
        if (to < 0 || to >= k) continue;
        const change = bytes[to]! - bytes[from]!;
        if (delta === 1 && change > room) continue;
        const loss = layer.archLogits.data[g * k + from]! - layer.archLogits.data[g * k + to]!;
        const ratio = loss / Math.abs(change || 1);
        if (ratio < bestRatio) [best, bestRatio] = [[i, g, change], ratio];
      }
    });
    return best;
  };
  while (total > budget) {
    const move = bestMove(-1, 0)!;
    chosen[move[0]]![move[1]]!--;
    total += move[2];
  }
  if (options.fill ?? true) {
    for (let move = bestMove(1, budget - total); move; move = bestMove(1, budget - total)) {
      chosen[move[0]]![move[1]]!++;
      total += move[2];
    }
  }
  return build();
}

/** One stored subgroup: its width, float32 scale and packed codes (empty when pruned). */
export interface PackedSubgroup {
  readonly bits: number;
  readonly scale: Float32Array;
  readonly packed: Uint8Array;
}

/** The packed weights of every searchable layer under its fixed assignment, with the total stored bytes. */
export interface PackedSubgroupModel {
  readonly layers: readonly { readonly name: string; readonly subgroups: readonly PackedSubgroup[] }[];
  /** Σ packed bytes + 4 per stored scale: counted from the buffers, not from the plan. */
  readonly bytes: number;
}

/**
 * Packs the model's searchable weights as stored: for each subgroup at b > 0 bits, its codes packed
 * b bits each (little end first, as `packBits`) and its scale as float32; pruned subgroups store
 * nothing. Every layer must be in fixed mode ({@link applyPlan}).
 */
export function packSubgroupModel(model: Module): PackedSubgroupModel {
  let bytes = 0;
  const layers = subgroupLayers(model).map(([name, layer]) => {
    const subgroups = layer.exportCodes().map((c): PackedSubgroup => {
      if (c.bits === 0) return { bits: 0, scale: new Float32Array(0), packed: new Uint8Array(0) };
      const packed = packBits(c.codes, c.bits as 2 | 4 | 8, true);
      const scale = Float32Array.of(c.scale);
      bytes += packed.byteLength + scale.byteLength;
      return { bits: c.bits, scale, packed };
    });
    return { name, subgroups };
  });
  return { layers, bytes };
}

/** Bytes of the scales alone of a plan (4 per stored subgroup). */
export function planScaleBytes(plan: SubgroupPlan): number {
  let count = 0;
  for (const layer of plan.layers) for (const b of layer.bits) if (b > 0) count++;
  return count * SCALE_BYTES;
}
