/**
 * `summary(model, inputShape)`: Keras' model.summary() / torchinfo for lowbit modules, with the
 * bit widths of fake-quantized layers (after `quant.prepareQat`) and the model's size at them.
 */
import { noGrad } from '../autograd/engine.ts';
import { Tensor, zeros } from '../tensor/index.ts';
import type { DType } from '../backend/primitives.ts';
import type { Module } from './module.ts';

/**
 * What summary reads of a fake-quant layer (quant/qat's QuantLayer): the specs of its weight
 * and input quantizers. Recognised by shape, so nn does not depend on quant.
 */
interface QuantSpecLike {
  readonly kind: string;
  readonly bits?: unknown;
  readonly channelBits?: unknown;
}
interface QuantLayerLike {
  readonly layerType: string;
  readonly weight: Tensor;
  readonly weightSpec: QuantSpecLike | null;
  readonly activationSpec: QuantSpecLike | null;
}

/** Binary quantizer kinds (±α: 1 bit) and ternary ones (2 bits), as quant/config names them. */
const ONE_BIT_KINDS = ['binary', 'irnet', 'smoothBinary', 'adaste'];
const TWO_BIT_KINDS = ['ternary'];

function isQuantLayer(m: Module): m is Module & QuantLayerLike {
  return 'layerType' in m && 'weightSpec' in m && 'activationSpec' in m && (m as { weight?: unknown }).weight instanceof Tensor;
}

/** A quantizer module (quant/quantizers' Quantizer): it carries a spec and a fake-quant switch. */
function isQuantizer(m: Module): boolean {
  return 'spec' in m && 'fakeQuantEnabled' in m;
}

/** Bits of a quantizer module (null: none, or a spec without a width). */
function quantizerBits(q: unknown): number | null {
  return q instanceof Object && 'spec' in q ? specBits((q as { spec: QuantSpecLike }).spec) : null;
}

/** The fake-quantized weights (each with its bits) and the activation widths of one module, or null when it quantizes nothing. */
interface ModuleQuant {
  readonly weights: { readonly tensor: Tensor; readonly bits: number }[];
  readonly activations: number[];
}

/**
 * What `m` fake-quantizes, recognised by shape (nn does not depend on quant): a QuantLayer
 * (QuantLinear, QuantConv2d...: weight and input specs); a quantized table (QatEmbedding: `weight`
 * and `weightQuantizer`); a quantized recurrent layer (QatLSTM / QatGRU: `layerQuantizers(k)` for
 * W_ih, W_hh, x_t and h_{t-1} of each layer); an attention with operand quantizers
 * (`operandQuantizers()`: activations only).
 */
function quantOf(m: Module): ModuleQuant | null {
  const weights: ModuleQuant['weights'][number][] = [];
  const activations: number[] = [];
  const addWeight = (tensor: unknown, bits: number | null): void => {
    if (tensor instanceof Tensor && bits !== null) weights.push({ tensor, bits });
  };
  const addActivation = (bits: number | null): void => {
    if (bits !== null) activations.push(bits);
  };
  const r = m as unknown as Record<string, unknown>;
  if (isQuantLayer(m)) {
    addWeight(m.weight, specBits(m.weightSpec));
    addActivation(specBits(m.activationSpec));
    return { weights, activations };  // counted even with both sides float, as before
  }
  if ('weightQuantizer' in r && r['weight'] instanceof Tensor) {
    addWeight(r['weight'], quantizerBits(r['weightQuantizer']));
  } else if (typeof r['layerQuantizers'] === 'function' && typeof r['numLayers'] === 'number') {
    for (let k = 0; k < r['numLayers']; k++) {
      const q = (r['layerQuantizers'] as (k: number) => Record<string, unknown>).call(m, k);
      const params = new Map(m.namedParameters({ recurse: false }));
      addWeight(params.get(`weight_ih_l${k}`), quantizerBits(q['weightIh']));
      addWeight(params.get(`weight_hh_l${k}`), quantizerBits(q['weightHh']));
      addActivation(quantizerBits(q['input']));
      addActivation(quantizerBits(q['hidden']));
    }
  } else if (typeof r['operandQuantizers'] === 'function') {
    for (const q of Object.values((r['operandQuantizers'] as () => Record<string, unknown>).call(m))) addActivation(quantizerBits(q));
  }
  return weights.length > 0 || activations.length > 0 ? { weights, activations } : null;
}

/** Weight bits of a row: the element-weighted mean of its quantized weights (null when none). */
function weightedBits(weights: ModuleQuant['weights']): number | null {
  const elements = weights.reduce((n, w) => n + w.tensor.size, 0);
  return elements === 0 ? null : weights.reduce((n, w) => n + w.tensor.size * w.bits, 0) / elements;
}

/** @internal Bits per value of a spec: 1 for binary kinds, 2 for ternary, the mean of channelBits when mixed, else `bits`. */
export function specBits(spec: QuantSpecLike | null): number | null {
  if (spec === null) return null;
  if (ONE_BIT_KINDS.includes(spec.kind)) return 1;
  if (TWO_BIT_KINDS.includes(spec.kind)) return 2;
  if (Array.isArray(spec.channelBits) && spec.channelBits.length > 0) {
    return (spec.channelBits as number[]).reduce((a, b) => a + b, 0) / spec.channelBits.length;
  }
  return typeof spec.bits === 'number' ? spec.bits : null;
}

export interface SummaryRow {
  /** Dotted path (`features.0`). */
  readonly name: string;
  /** Class name (`Conv2d`, `QuantConv2d`...). */
  readonly type: string;
  /** Nesting depth: 1 for the model's children. */
  readonly depth: number;
  /** Shapes of the tensors its first call returned (several for LSTM, attention...); null when the forward never called it. */
  readonly outputShapes: number[][] | null;
  /** Times the forward called it. */
  readonly calls: number;
  /** Elements of its own parameters (and of its quantizers' ones, which get no row) that require grad. */
  readonly trainableParams: number;
  /** Elements of those parameters that are frozen (requiresGrad false). */
  readonly nonTrainableParams: number;
  /** Elements of its own buffers (running statistics, calibration ranges...). */
  readonly bufferElements: number;
  /** Weight bits of a fake-quant layer (null: float or not quantized). */
  readonly weightBits: number | null;
  /** Bits of a fake-quant layer's input activation (null: float). */
  readonly activationBits: number | null;
}

export interface ModelSummary {
  readonly model: string;
  readonly inputShape: readonly number[];
  /** Shapes the model's forward returned. */
  readonly outputShapes: number[][];
  readonly rows: readonly SummaryRow[];
  readonly totalParams: number;
  readonly trainableParams: number;
  readonly nonTrainableParams: number;
  readonly bufferElements: number;
  /** Parameters and persistent buffers at 4 bytes each. */
  readonly fp32Bytes: number;
  /**
   * The same with every fake-quant layer's weight at its bit width (bits/8 bytes per element;
   * scales and zero points not counted); equal to fp32Bytes for a float model.
   */
  readonly quantizedBytes: number;
  /** Number of fake-quant layers. */
  readonly quantizedLayers: number;
  /** The table as text (what `formatSummary` prints). */
  format(): string;
}

export interface SummaryOptions {
  /** The input to run instead of zeros(inputShape) (token ids for an Embedding, say). */
  input?: Tensor;
  /** dtype of the zero input (default float32). */
  dtype?: DType;
}

/**
 * Runs one forward of `model` on a zero batch of `inputShape` (batch dim included, as torchinfo:
 * `[1, 1, 28, 28]`) and describes every submodule: type, output shape, parameter count
 * (trainable / frozen), buffer size and, for fake-quant layers (after `quant.prepareQat`), the
 * weight and input bit widths; totals include the fp32 size and the size with quantized weights.
 * The forward runs in eval mode without recording a graph, every module's own `forward` patched
 * for the call; training flags, patched forwards and all parameter and buffer values are put back
 * afterwards (eval-mode forwards may still update non-tensor state of exotic layers).
 */
export function summary(model: Module & { forward(x: Tensor): unknown }, inputShape: readonly number[], options: SummaryOptions = {}): ModelSummary {
  const input = options.input ?? zeros(checkShape(inputShape), options.dtype ?? 'float32');
  const named = model.namedModules();
  const seen = new Map<Module, { outputShapes: number[][]; calls: number }>();
  const training = named.map(([, m]) => m.training);
  const saved = [...model.namedParameters(), ...model.namedBuffers()].map(([, t]) => [t, t.data.slice()] as const);
  const patched = named.map(([, m]) => {
    const own = Object.getOwnPropertyDescriptor(m, 'forward');
    const forward = m.forward;
    const wrapper = (...args: never[]): unknown => {
      const out = forward.apply(m, args);
      const record = seen.get(m);
      if (record) record.calls++;
      else seen.set(m, { outputShapes: shapesOf(out), calls: 1 });
      return out;
    };
    Object.defineProperty(m, 'forward', { value: wrapper, writable: true, configurable: true, enumerable: false });
    return [m, own] as const;
  });
  let output: unknown;
  try {
    model.eval();
    output = noGrad(() => model.forward(input));
  } finally {
    for (const [m, own] of patched) {
      if (own) Object.defineProperty(m, 'forward', own);
      else delete (m as { forward?: unknown }).forward;
    }
    named.forEach(([, m], i) => (m.training = training[i]!));
    for (const [t, data] of saved) t.data.set(data);
  }

  const rows: SummaryRow[] = [];
  let fp32Bytes = 0;
  let quantizedBytes = 0;
  let quantizedLayers = 0;
  const persistent = new Set(model.stateDict().keys());
  for (const [name, m] of named) {
    if (name === '') continue;
    if (isQuantizer(m)) continue;  // counted in its layer's row
    let trainable = 0;
    let frozen = 0;
    let buffers = 0;
    const owners = [m, ...m.children().filter(isQuantizer).flatMap((q) => q.modules())];
    for (const owner of owners) {
      for (const [, p] of owner.namedParameters({ recurse: false })) {
        if (p.requiresGrad) trainable += p.size;
        else frozen += p.size;
      }
      for (const [, b] of owner.namedBuffers({ recurse: false })) buffers += b.size;
    }
    const quant = quantOf(m);
    const weightBits = quant ? weightedBits(quant.weights) : null;
    const activationBits = quant && quant.activations.length > 0 ? quant.activations.reduce((a, b) => a + b, 0) / quant.activations.length : null;
    if (quant) quantizedLayers++;
    const record = seen.get(m);
    rows.push({
      name, type: m.constructor.name, depth: name.split('.').length,
      outputShapes: record?.outputShapes ?? null, calls: record?.calls ?? 0,
      trainableParams: trainable, nonTrainableParams: frozen, bufferElements: buffers, weightBits, activationBits,
    });
    for (const { tensor, bits } of quant?.weights ?? []) quantizedBytes -= tensor.size * (4 - bits / 8);
  }
  // Sizes over the state dict, each tensor once (a shared weight is stored once).
  for (const [key, t] of [...model.namedParameters(), ...model.namedBuffers()]) if (persistent.has(key)) fp32Bytes += 4 * t.size;
  quantizedBytes += fp32Bytes;
  const trainableParams = model.numParameters({ trainableOnly: true });
  const totalParams = model.numParameters();
  const result: Omit<ModelSummary, 'format'> = {
    model: model.constructor.name,
    inputShape: [...input.shape],
    outputShapes: shapesOf(output),
    rows,
    totalParams,
    trainableParams,
    nonTrainableParams: totalParams - trainableParams,
    bufferElements: model.namedBuffers().reduce((n, [, b]) => n + b.size, 0),
    fp32Bytes,
    quantizedBytes,
    quantizedLayers,
  };
  return { ...result, format: () => formatSummary(result) };
}

function checkShape(shape: readonly number[]): number[] {
  if (!Array.isArray(shape) || shape.length === 0 || !shape.every((d) => Number.isInteger(d) && d >= 1)) {
    throw new Error(`summary: inputShape must be positive integers with the batch dim first, e.g. [1, 1, 28, 28]; got ${JSON.stringify(shape)}`);
  }
  return [...shape];
}

/** Shapes of the tensors inside a forward's result (a tensor, or nested arrays of them). */
function shapesOf(value: unknown): number[][] {
  if (value instanceof Tensor) return [[...value.shape]];
  if (Array.isArray(value)) return value.flatMap(shapesOf);
  return [];
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

function bytesText(n: number): string {
  if (n < 1024) return `${n.toFixed(n % 1 === 0 ? 0 : 1)} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(2)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

/** `w4a8` as lowbit names schemes; a float side shows as `w4 (a float)` / `a8 (w float)`; mixed widths with 2 decimals. */
function bitsCell(r: SummaryRow): string {
  const text = (bits: number): string => (Number.isInteger(bits) ? String(bits) : bits.toFixed(2));
  if (r.weightBits !== null && r.activationBits !== null) return `w${text(r.weightBits)}a${text(r.activationBits)}`;
  if (r.weightBits !== null) return `w${text(r.weightBits)} (a float)`;
  if (r.activationBits !== null) return `a${text(r.activationBits)} (w float)`;
  return '';
}

/** The summary as a table: layer, type, output shape, params (frozen ones noted), bits W/A; then totals. */
export function formatSummary(s: Omit<ModelSummary, 'format'>): string {
  const quantized = s.quantizedLayers > 0;
  const header = ['layer', 'type', 'output shape', 'params', ...(quantized ? ['bits'] : [])];
  const body = s.rows.map((r) => {
    const params = r.trainableParams + r.nonTrainableParams;
    const cells = [
      `${'  '.repeat(r.depth - 1)}${r.name.split('.').at(-1)}`,
      r.type,
      r.outputShapes === null ? '--' : r.outputShapes.map((shape) => `[${shape.join(', ')}]`).join(', '),
      params === 0 ? '' : `${count(params)}${r.nonTrainableParams > 0 ? ` (${count(r.nonTrainableParams)} frozen)` : ''}`,
    ];
    if (quantized) cells.push(bitsCell(r));
    return cells;
  });
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const right = new Set([3]);
  const line = (cells: string[]): string => cells.map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const rule = '-'.repeat(widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1));
  const lines = [
    `${s.model}: input [${s.inputShape.join(', ')}] -> ${s.outputShapes.map((shape) => `[${shape.join(', ')}]`).join(', ')}`,
    rule, line(header), rule, ...body.map(line), rule,
    `total params:         ${count(s.totalParams)}`,
    `trainable params:     ${count(s.trainableParams)}`,
    `non-trainable params: ${count(s.nonTrainableParams)}`,
    `buffers:              ${count(s.bufferElements)} elements`,
    `size (fp32):          ${bytesText(s.fp32Bytes)}`,
  ];
  if (quantized) {
    lines.push(`size (quantized):     ${bytesText(s.quantizedBytes)} (${s.quantizedLayers} fake-quant layer${s.quantizedLayers === 1 ? '' : 's'} at their weight bits, rest fp32; ${(s.fp32Bytes / s.quantizedBytes).toFixed(2)}x smaller)`);
  }
  return lines.join('\n');
}
