/**
 * The RNN quantization recipe: a plan (default config + name-glob / type overrides, as QuantPlan)
 * over a model's LSTMs, GRUs, Linears and Embeddings, resolved to an explicit per-layer table and
 * applied in place — Linears through `prepareQat` (QuantLinear), LSTMs by QatLSTM, GRUs by QatGRU,
 * Embeddings by QatEmbedding. Plus the packed model size a plan gives, for compression ratios.
 */
import { Module } from '../../nn/module.ts';
import { Linear } from '../../nn/linear.ts';
import { GRU, LSTM } from '../../nn/rnn.ts';
import { Embedding } from '../../nn/embedding.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import { Quantizer } from '../quantizers/quantizer.ts';
import { globToRegExp } from '../config/plan.ts';
import { prepareQat } from '../qat/prepare.ts';
import { QuantLayer } from '../qat/layers.ts';
import { checkLstmSpec, QatLSTM } from './qat-lstm.ts';
import { QatGRU } from './qat-gru.ts';
import { QatEmbedding } from './qat-embedding.ts';

/** Layer types the recipe quantizes. */
export type RnnLayerType = 'LSTM' | 'GRU' | 'Linear' | 'Embedding';
const RNN_LAYER_TYPES: readonly RnnLayerType[] = ['LSTM', 'GRU', 'Linear', 'Embedding'];
/** The recurrent layer types (weight, x_t and h_{t−1} quantizers). */
const isRecurrentType = (type: RnnLayerType): boolean => type === 'LSTM' || type === 'GRU';

/**
 * What one layer gets. `weight`: the weight(s) (LSTM / GRU: W_ih and W_hh; Embedding: the table);
 * `activation`: the layer input (Linear's input, LSTM / GRU x_t; unused by Embedding); `hidden`: an
 * LSTM's or GRU's h_{t−1} (default: `activation`). null keeps that operand float.
 */
export interface RnnQatConfig {
  readonly weight: QuantizerSpec | null;
  readonly activation: QuantizerSpec | null;
  readonly hidden?: QuantizerSpec | null;
}

export interface RnnQatPlan {
  readonly default: RnnQatConfig;
  /**
   * Applied in order, a later match wins: `match` is a module-name glob (QuantPlan's: `*` within a
   * name part, `**` across dots) or { type }; `config` a partial config merged over the config so
   * far, or null (keep the layer float). Each must match at least one layer.
   */
  readonly overrides?: readonly { readonly match: string | { readonly type: RnnLayerType }; readonly config: Partial<RnnQatConfig> | null }[];
}

/** One row of a resolved plan (plain JSON). */
export interface RnnQatRow {
  readonly name: string;
  readonly type: RnnLayerType;
  readonly weight: QuantizerSpec | null;
  readonly activation: QuantizerSpec | null;
  readonly hidden: QuantizerSpec | null;
}

/** LSTMs, GRUs, Linears and Embeddings of `model` in definition order (exact classes; recurrent layers unidirectional). */
function rnnLayers(model: Module): { name: string; type: RnnLayerType }[] {
  const out: { name: string; type: RnnLayerType }[] = [];
  for (const [name, m] of model.namedModules()) {
    if (m instanceof LSTM) out.push({ name, type: 'LSTM' });
    else if (m instanceof GRU) out.push({ name, type: 'GRU' });
    else if (m instanceof Linear) out.push({ name, type: 'Linear' });
    else if (m instanceof Embedding) out.push({ name, type: 'Embedding' });
  }
  return out;
}

/** The explicit table of `plan` on `model` (throws on an unknown match type or an override matching nothing). */
export function resolveRnnQatPlan(model: Module, plan: RnnQatPlan): RnnQatRow[] {
  if (typeof plan !== 'object' || plan === null || typeof plan.default !== 'object' || plan.default === null) throw new TypeError("resolveRnnQatPlan: the plan needs a 'default' config { weight, activation, hidden? }");
  const layers = rnnLayers(model);
  if (layers.length === 0) throw new Error(`resolveRnnQatPlan: ${model.constructor.name} has no LSTM, GRU, Linear or Embedding (already prepared?)`);
  const overrides = plan.overrides ?? [];
  overrides.forEach((o, i) => {
    const m = o?.match;
    const ok = (typeof m === 'string' && m !== '') || (typeof m === 'object' && m !== null && RNN_LAYER_TYPES.includes(m.type));
    if (!ok) throw new TypeError(`RnnQatPlan.overrides[${i}].match must be a name glob or { type: 'LSTM' | 'GRU' | 'Linear' | 'Embedding' }, got ${JSON.stringify(m)}`);
  });
  const matchers = overrides.map((o) => (typeof o.match === 'string' ? globToRegExp(o.match) : null));
  const used = overrides.map(() => false);
  const rows = layers.map(({ name, type }) => {
    let config: RnnQatConfig = plan.default;
    overrides.forEach((o, i) => {
      const hit = typeof o.match === 'string' ? matchers[i]!.test(name) : o.match.type === type;
      if (!hit) return;
      used[i] = true;
      config = o.config === null ? { weight: null, activation: null, hidden: null } : { ...config, ...o.config };
    });
    const hidden = isRecurrentType(type) ? (config.hidden === undefined ? config.activation : config.hidden) : null;
    return { name, type, weight: config.weight, activation: type === 'Embedding' ? null : config.activation, hidden };
  });
  const unused = overrides.filter((_, i) => !used[i]).map((o) => JSON.stringify(o.match));
  if (unused.length > 0) throw new Error(`RnnQatPlan overrides ${unused.join(', ')} match no layer (layers: ${layers.map((l) => `${l.name} (${l.type})`).join(', ')})`);
  for (const row of rows) {
    if (!isRecurrentType(row.type)) continue;
    const where = `resolveRnnQatPlan: '${row.name}'`;
    if (row.weight) checkLstmSpec('weight', row.weight, where);
    if (row.activation) checkLstmSpec('input', row.activation, where);
    if (row.hidden) checkLstmSpec('hidden', row.hidden, where);
  }
  return rows;
}

/**
 * Prepares `model` for QAT in place following `plan` and returns the resolved table: Linears
 * become QuantLinear (via `prepareQat`, same weight tensors), LSTMs QatLSTM and GRUs QatGRU (a
 * copy of the weights: build the optimizer afterwards), Embeddings QatEmbedding (same table tensor). Every
 * replacement is built before the first swap, so a bad spec leaves the model untouched.
 */
export function prepareRnnQat<M extends Module>(model: M, plan: RnnQatPlan): RnnQatRow[] {
  const rows = resolveRnnQatPlan(model, plan);
  const swaps: [string, Module][] = [];
  for (const row of rows) {
    if (row.type === 'LSTM' && (row.weight || row.activation || row.hidden)) {
      const lstm = model.getSubmodule(row.name) as LSTM;
      swaps.push([row.name, QatLSTM.fromLSTM(lstm, { weight: row.weight, input: row.activation, hidden: row.hidden })]);
    } else if (row.type === 'GRU' && (row.weight || row.activation || row.hidden)) {
      const gru = model.getSubmodule(row.name) as GRU;
      swaps.push([row.name, QatGRU.fromGRU(gru, { weight: row.weight, input: row.activation, hidden: row.hidden })]);
    } else if (row.type === 'Embedding' && row.weight) {
      swaps.push([row.name, new QatEmbedding(model.getSubmodule(row.name) as Embedding, row.weight)]);
    }
  }
  const linears = rows.filter((r) => r.type === 'Linear' && (r.weight || r.activation));
  // prepareQat builds every Linear's quantizers before swapping any layer.
  if (linears.length > 0) prepareQat(model, linears.map((r) => ({ name: r.name, type: 'Linear' as const, weightSpec: r.weight, activationSpec: r.activation, fusedBatchNorm: null })));
  for (const [name, module] of swaps) model.setSubmodule(name, module);
  return rows;
}

/** Size of one stored tensor or parameter group. */
export interface SizeEntry {
  readonly name: string;
  readonly values: number;
  /** Bits per value (32 for float). */
  readonly bits: number;
  /** Quantization parameters stored with it (scales and zero points, 32 bits each). */
  readonly quantParams: number;
  readonly bytes: number;
}

export interface ModelSize {
  readonly entries: SizeEntry[];
  /** Packed size: values at their bits (rounded up to whole bytes per tensor) + 4 bytes per scale / zero point. */
  readonly bytes: number;
  /** Every parameter at float32. */
  readonly float32Bytes: number;
  /** float32Bytes / bytes. */
  readonly compression: number;
}

/** Scales (and zero points, when any is nonzero or the spec is asymmetric) of a quantizer's export. */
function quantParamCount(q: Quantizer): number {
  const e = q.exportQuant();
  if (e.type !== 'affine') return e.type === 'codebook' ? e.levels.length : e.alpha.length;
  const asymmetric = e.qparams.zeroPoint.some((z) => z !== 0);
  return e.qparams.scale.length * (asymmetric ? 2 : 1);
}

/**
 * The deployed size of a prepared model: each quantized weight at its bits (a tensor's values
 * packed, rounded up to a byte) plus its scales; each activation quantizer's scale (and zero point);
 * every other parameter (biases, float layers) at 32 bits. Call after a forward (quantizers must
 * be initialised). The float32 size counts every parameter at 32 bits.
 */
export function modelSize(model: Module): ModelSize {
  const entries: SizeEntry[] = [];
  const covered = new Set<unknown>();
  const add = (name: string, values: number, bits: number, quantParams: number): void => {
    entries.push({ name, values, bits, quantParams, bytes: Math.ceil((values * bits) / 8) + 4 * quantParams });
  };
  const addWeight = (name: string, weight: { size: number }, q: Quantizer | null): void => {
    covered.add(weight);
    if (q) add(name, weight.size, q.spec.bits, quantParamCount(q));
    else add(name, weight.size, 32, 0);
  };
  const addActivation = (name: string, q: Quantizer | null): void => {
    if (q) add(name, 0, 0, quantParamCount(q));
  };
  for (const [name, m] of model.namedModules()) {
    const prefix = name === '' ? '' : `${name}.`;
    if (m instanceof QatLSTM || m instanceof QatGRU) {
      const params = new Map(m.namedParameters({ recurse: false }));
      for (let k = 0; k < m.numLayers; k++) {
        const q = m.layerQuantizers(k);
        addWeight(`${prefix}weight_ih_l${k}`, params.get(`weight_ih_l${k}`)!, q.weightIh);
        addWeight(`${prefix}weight_hh_l${k}`, params.get(`weight_hh_l${k}`)!, q.weightHh);
        addActivation(`${prefix}input_l${k}`, q.input);
        addActivation(`${prefix}hidden_l${k}`, q.hidden);
      }
    } else if (m instanceof QuantLayer) {
      addWeight(`${prefix}weight`, m.weight, m.weightQuantizer);
      addActivation(`${prefix}input`, m.inputQuantizer);
    } else if (m instanceof QatEmbedding) {
      addWeight(`${prefix}weight`, m.weight, m.weightQuantizer);
    }
  }
  let float32Bytes = 0;
  for (const [name, p] of model.namedParameters()) {
    if (name.split('.').some((part) => part.startsWith('quant_') || part === 'weightQuantizer' || part === 'inputQuantizer')) continue;
    float32Bytes += 4 * p.size;
    if (!covered.has(p)) add(name, p.size, 32, 0);
  }
  const bytes = entries.reduce((s, e) => s + e.bytes, 0);
  return { entries, bytes, float32Bytes, compression: float32Bytes / bytes };
}
