/**
 * Cost models of the mixed-precision search behind one interface (`CostModel`): model size,
 * BitOps, a bit-serial (BitFusion-like) accelerator, an energy model with stated constants, and
 * (in ./latency.ts) latency measured on lowbit's integer runtime. `costModel(name)` builds one by
 * name; `totalCost` adds a model's cost over the layers of an assignment.
 */
import type { BitAssignment, BitChoice, CostModel, LayerInfo } from './types.ts';
import { latencyCost, type LatencyCostOptions } from './latency.ts';

function checkBits(model: string, w: number, a: number): void {
  if (!Number.isInteger(w) || w < 1 || w > 32 || !Number.isInteger(a) || a < 1 || a > 32) {
    throw new Error(`cost model '${model}': bit widths must be integers in [1, 32], got w=${w} a=${a}`);
  }
}

/**
 * Model size: weightCount·w bits per layer (weights only; biases, scales and zero points are
 * per-channel side data the same for every bit width and are left out). Unit: bits.
 * Per-channel bits: Σ_c (weightCount/outChannels)·w_c.
 */
export function sizeCost(): CostModel {
  return {
    name: 'size',
    unit: 'bits',
    layerCost(layer, w, a) {
      checkBits('size', w, a);
      return layer.weightCount * w;
    },
  };
}

/**
 * BitOps (as in HAQ / DNAS papers): MACs per sample × w × a. Unit: bit-operations per sample.
 */
export function bitOpsCost(): CostModel {
  return {
    name: 'bitops',
    unit: 'bitops',
    layerCost(layer, w, a) {
      checkBits('bitops', w, a);
      return layer.macs * w * a;
    },
  };
}

export interface BitSerialOptions {
  /** Bits a processing brick multiplies per pass (BitFusion: 2). */
  readonly brickBits?: number;
  /** Fusion units working in parallel (BitFusion's 512 = 32×16 array). */
  readonly fusionUnits?: number;
  /** BitBricks per fusion unit (16: one 8×8-bit MAC or sixteen 2×2-bit MACs per cycle). */
  readonly bricksPerUnit?: number;
}

/**
 * A bit-serial / bit-fused accelerator in the manner of BitFusion (Sharma et al., ISCA 2018):
 * a w×a multiply takes ⌈w/b⌉·⌈a/b⌉ b×b-bit brick operations (b = 2); the array does
 * fusionUnits·bricksPerUnit brick operations per cycle. Cycles per sample of a layer:
 *   macs · ⌈w/b⌉ · ⌈a/b⌉ / (fusionUnits · bricksPerUnit)
 * (an ideal-utilisation model: no memory stalls, no tiling loss). Unit: cycles per sample.
 * Per-channel bits: the mean over channels (each channel's MACs run at its own width).
 */
export function bitSerialCost(options: BitSerialOptions = {}): CostModel {
  const b = options.brickBits ?? 2;
  const units = options.fusionUnits ?? 512;
  const bricks = options.bricksPerUnit ?? 16;
  for (const [k, v] of Object.entries({ brickBits: b, fusionUnits: units, bricksPerUnit: bricks })) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`bitSerialCost: ${k} must be a positive integer, got ${v}`);
  }
  return {
    name: 'bitserial',
    unit: 'cycles',
    layerCost(layer, w, a) {
      checkBits('bitserial', w, a);
      return (layer.macs * Math.ceil(w / b) * Math.ceil(a / b)) / (units * bricks);
    },
  };
}

/**
 * Energy constants (pJ) of the energy model. Defaults: Horowitz, "Computing's energy problem",
 * ISSCC 2014, 45 nm: 8-bit integer multiply 0.2 pJ, 32-bit integer add 0.1 pJ, 64-bit read of an
 * 8 KB SRAM 10 pJ (0.15625 pJ/bit), 64-bit DRAM read 1.3–2.6 nJ (taken 1.95 nJ: 30.47 pJ/bit).
 */
export interface EnergyConstants {
  /** Energy of one 8×8-bit integer multiply (pJ); a w×a multiply costs mult8·w·a/64 (array multiplier area ∝ w·a). */
  readonly mult8: number;
  /** Energy of one 32-bit accumulator add (pJ), the same for every bit width. */
  readonly add32: number;
  /** Energy per bit read from on-chip SRAM (pJ/bit): each input activation is read once per layer. */
  readonly sramPerBit: number;
  /** Energy per bit read from DRAM (pJ/bit): each weight is fetched once per sample (no reuse across samples). */
  readonly dramPerBit: number;
}

export const DEFAULT_ENERGY_CONSTANTS: EnergyConstants = Object.freeze({
  mult8: 0.2,
  add32: 0.1,
  sramPerBit: 10 / 64,
  dramPerBit: 1950 / 64,
});

/**
 * Energy per sample of a layer (pJ):
 *   macs·(mult8·w·a/64 + add32) + weightCount·w·dramPerBit + inputElements·a·sramPerBit
 * with the constants of `EnergyConstants` (defaults stated there). Unit: pJ per sample.
 */
export function energyCost(constants: Partial<EnergyConstants> = {}): CostModel {
  const c: EnergyConstants = { ...DEFAULT_ENERGY_CONSTANTS, ...constants };
  for (const [k, v] of Object.entries(c)) if (!(typeof v === 'number' && Number.isFinite(v) && v >= 0)) throw new Error(`energyCost: constant ${k} must be a finite number >= 0, got ${String(v)}`);
  return {
    name: 'energy',
    unit: 'pJ',
    layerCost(layer, w, a) {
      checkBits('energy', w, a);
      const inputs = layer.inShape.reduce((p, d) => p * d, 1);
      return layer.macs * ((c.mult8 * w * a) / 64 + c.add32) + layer.weightCount * w * c.dramPerBit + inputs * a * c.sramPerBit;
    },
  };
}

/** The multiply widths of a SiLago-like datapath: one 16-bit, two 8-bit or four 4-bit MACs per unit and cycle. */
export const SILAGO_MODES = [4, 8, 16] as const;
export type SiLagoMode = (typeof SILAGO_MODES)[number];

/**
 * The datapath mode a w-bit weight × a-bit activation multiply runs in: the narrowest of 4, 8, 16
 * bits holding both operands (2-bit weights run as 4-bit). Widths above 16 bits are refused (the
 * datapath has no wider mode; keep such layers out of the assignment).
 */
export function siLagoMode(w: number, a: number): SiLagoMode {
  checkBits('silago', w, a);
  const width = Math.max(w, a);
  const mode = SILAGO_MODES.find((m) => m >= width);
  if (mode === undefined) throw new Error(`cost model 'silago': the datapath multiplies at most 16 bits, got w=${w} a=${a}`);
  return mode;
}

/** MACs one 16-bit unit does per cycle in a mode: 1 (16-bit), 2 (8-bit), 4 (4-bit). */
export function siLagoLanes(mode: SiLagoMode): number {
  return 16 / mode;
}

export interface SiLagoOptions {
  /** 16-bit MAC units working in parallel (default 16). Speedups are ratios and do not depend on it. */
  readonly macUnits?: number;
  /**
   * Energy of one unit-cycle in each mode, in units of one 16-bit unit-cycle (= one 16-bit MAC).
   * Default { 16: 1, 8: 1.15, 4: 1.3 }: a MODELLED assumption (not a measurement) that a split
   * datapath spends a little more per cycle (extra partial-product adders and shifters) while
   * doing 2 or 4 MACs, so the energy per MAC is 1, 0.575 and 0.325. It makes the largest energy
   * saving (67.5 % at all-4-bit) smaller than the largest speedup (4×), as MOHAQ reports for SiLago
   * (its abstract: 80 % of the possible speedup but 64 % of the possible energy saving).
   */
  readonly energyPerCycle?: Readonly<Record<SiLagoMode, number>>;
}

export const DEFAULT_SILAGO_ENERGY_PER_CYCLE: Readonly<Record<SiLagoMode, number>> = Object.freeze({ 16: 1, 8: 1.15, 4: 1.3 });

function siLagoSettings(options: SiLagoOptions): { units: number; energy: Readonly<Record<SiLagoMode, number>> } {
  const units = options.macUnits ?? 16;
  if (!Number.isInteger(units) || units < 1) throw new Error(`siLagoCost: macUnits must be a positive integer, got ${units}`);
  const energy = { ...DEFAULT_SILAGO_ENERGY_PER_CYCLE, ...options.energyPerCycle };
  for (const m of SILAGO_MODES) {
    const e = energy[m];
    if (!(typeof e === 'number' && Number.isFinite(e) && e > 0)) throw new Error(`siLagoCost: energyPerCycle[${m}] must be a finite number > 0, got ${String(e)}`);
  }
  return { units, energy };
}

/**
 * A SiLago-like coarse-grain reconfigurable array (the platform MOHAQ targets, Rezk et al. 2022):
 * `macUnits` 16-bit MAC units, each doing per cycle one 16-bit, two 8-bit or four 4-bit MACs
 * (mode = `siLagoMode(w, a)`). Cycles per sample of a layer:
 *   macs / (macUnits · lanes(mode)),  lanes = 16 / mode
 * (ideal utilisation: no memory stalls, no tiling loss; elementwise recurrence ops are not counted).
 * Unit: cycles per sample. Per-channel bits: the mean over channels.
 */
export function siLagoCost(options: SiLagoOptions = {}): CostModel {
  const { units } = siLagoSettings(options);
  return {
    name: 'silago',
    unit: 'cycles',
    layerCost(layer, w, a) {
      return layer.macs / (units * siLagoLanes(siLagoMode(w, a)));
    },
  };
}

/**
 * Energy of the SiLago-like array's MACs per sample of a layer:
 *   macs · energyPerCycle[mode] / lanes(mode)
 * in units of one 16-bit MAC ('E16'), with the modelled constants of `SiLagoOptions.energyPerCycle`.
 * Memory traffic is not modelled. Unit: E16 per sample.
 */
export function siLagoEnergyCost(options: SiLagoOptions = {}): CostModel {
  const { energy } = siLagoSettings(options);
  return {
    name: 'silagoEnergy',
    unit: 'E16',
    layerCost(layer, w, a) {
      const mode = siLagoMode(w, a);
      return (layer.macs * energy[mode]) / siLagoLanes(mode);
    },
  };
}

/** Names `costModel` knows. */
export const COST_MODEL_NAMES = ['size', 'bitops', 'latency', 'bitserial', 'energy', 'silago', 'silagoEnergy'] as const;
export type CostModelName = (typeof COST_MODEL_NAMES)[number];

export interface CostModelOptions {
  readonly latency?: LatencyCostOptions;
  readonly bitSerial?: BitSerialOptions;
  readonly energy?: Partial<EnergyConstants>;
  readonly siLago?: SiLagoOptions;
}

/** A cost model by name (see `COST_MODEL_NAMES`); unknown names throw listing the known ones. */
export function costModel(name: string, options: CostModelOptions = {}): CostModel {
  switch (name) {
    case 'size':
      return sizeCost();
    case 'bitops':
      return bitOpsCost();
    case 'latency':
      return latencyCost(options.latency);
    case 'bitserial':
      return bitSerialCost(options.bitSerial);
    case 'energy':
      return energyCost(options.energy);
    case 'silago':
      return siLagoCost(options.siLago);
    case 'silagoEnergy':
      return siLagoEnergyCost(options.siLago);
    default:
      throw new Error(`unknown cost model '${name}' (known: ${COST_MODEL_NAMES.join(', ')})`);
  }
}

/** Cost of one layer at `choice`, per-channel bits included (see `CostModel`). */
export function layerChoiceCost(model: CostModel, layer: LayerInfo, choice: BitChoice): number {
  const per = choice.wPerChannel;
  if (per === undefined) return model.layerCost(layer, choice.w, choice.a);
  if (per.length !== layer.outChannels) throw new Error(`'${layer.name}': wPerChannel has ${per.length} entries for ${layer.outChannels} output channels`);
  if (per.some((b) => b > choice.w)) throw new Error(`'${layer.name}': wPerChannel exceeds w = ${choice.w}`);
  if (model.channelCost) return model.channelCost(layer, per, choice.a);
  // Mean over channels: exact for costs linear in the number of channels. A pruned channel (0 bits)
  // costs 0 (its effect on the next layer's input is not modelled here; the latency model measures it).
  const memo = new Map<number, number>();
  let total = 0;
  for (const b of per) {
    if (b === 0) continue;
    let c = memo.get(b);
    if (c === undefined) memo.set(b, (c = model.layerCost(layer, b, choice.a)));
    total += c;
  }
  return total / per.length;
}

/**
 * Σ over `layers` of the layer cost at the assignment's bits. A layer missing from the assignment
 * throws unless `missing` gives its bits (e.g. { w: 32, a: 32 } for a float layer in a size budget).
 */
export function totalCost(model: CostModel, layers: readonly LayerInfo[], assignment: BitAssignment, missing?: BitChoice): number {
  let total = 0;
  for (const layer of layers) {
    const choice = assignment[layer.name] ?? missing;
    if (!choice) throw new Error(`totalCost: the assignment has no bits for layer '${layer.name}'`);
    total += layerChoiceCost(model, layer, choice);
  }
  return total;
}

/** The assignment giving every layer the same bits. */
export function uniformAssignment(layers: readonly LayerInfo[], w: number, a: number): BitAssignment {
  return Object.fromEntries(layers.map((l) => [l.name, { w, a }]));
}
