/**
 * The latency cost model: per-layer microbenchmarks on lowbit's own integer runtime
 * (prepare one layer → calibrate → convert → IntModel.run), cached in a JSON table per machine
 * and kernel path, so a search measures each (layer shape, w, a) once per machine.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Conv2d } from '../../nn/conv.ts';
import { Conv1d } from '../../nn/conv1d.ts';
import { Linear } from '../../nn/linear.ts';
import { Module } from '../../nn/module.ts';
import { ReLU } from '../../nn/activation.ts';
import { Flatten } from '../../nn/flatten.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { makeParentDirs, readTextLimited } from '../../format/files.ts';
import { writeFileAtomic } from '../../format/files.ts';
import { calibrate } from '../ptq/calibrate.ts';
import { convert } from '../../runtime/convert.ts';
import type { IntModel } from '../../runtime/intmodel.ts';
import { intKernelsBackend } from '../../runtime/kernels/index.ts';
import { planFromAssignment } from './plan.ts';
import type { BitAssignment, BitChoice, CostModel, LayerInfo } from './types.ts';
import type { TensorModule } from '../../nn/module.ts';
import { evaluateAssignmentSync } from './evaluate.ts';
import { describeLayers } from './layers.ts';

export interface LatencyCostOptions {
  /** Directory of the cached table (default `$LOWBIT_CACHE_DIR/search`, else node_modules/.cache/lowbit/search). */
  readonly cacheDir?: string;
  /** Do not read or write the cache file (measurements are still memoised in memory). */
  readonly noCache?: boolean;
  /** Ignore cached entries and measure again (the file is updated). */
  readonly refresh?: boolean;
  /** Samples per timed run (default 32). */
  readonly batch?: number;
  /** Timed runs per entry; the minimum is kept (default 20). */
  readonly repeats?: number;
  /**
   * Measure each layer inside this trained model instead of as a fresh random layer: the model is
   * calibrated with every layer at W8A8 except the measured one at (w, a), converted, and the
   * layer's segment is timed on its real integer input. Requantization cost on lowbit's runtime
   * depends on the scales (see `measureLayerInModel`), so this is the faithful table for a
   * trained model; entries are keyed by a fingerprint of the model's weights and the layer name.
   */
  readonly context?: LatencyContext;
  /** Replaces the microbenchmark (tests, or a table from elsewhere): µs per sample. */
  readonly measure?: (layer: LayerInfo, w: number, a: number) => number;
  /** Called before each new measurement (progress). */
  readonly onMeasure?: (key: string) => void;
}

/**
 * Version 6: measured on the native executor whose one-channel conv, input quantizer and AMX conv
 * output stage scale with the kept channels (tables of older kernels are re-measured); 5: in-model
 * entries are paired ratios; 4: minimum wall time of `IntModel.run` (3: process CPU time; 2 timed
 * `runSegment`; 1 ended layers in dequantization).
 */
const TABLE_VERSION = 6;

/** A trained float model and a calibration batch for in-model latency measurements. */
export interface LatencyContext {
  readonly model: TensorModule;
  /** Calibration / timing batch [N, ...inputShape] (N ≥ batch). */
  readonly sample: Tensor;
}

interface LatencyTable {
  readonly format: 'lowbit-latency-table';
  readonly version: typeof TABLE_VERSION;
  readonly machine: { cpu: string; kernels: string; node: string };
  /** key → µs per sample. */
  readonly entries: Record<string, number>;
}

/** @internal The table key of a layer shape at (w, a): type, shapes and geometry, not the name. */
export function latencyKey(layer: LayerInfo, w: number, a: number): string {
  const c = layer.conv;
  const geo = c ? `k${c.kernelSize.join('x')}s${c.stride.join('x')}p${c.padding.join('x')}d${c.dilation.join('x')}g${c.groups}` : '';
  return `${layer.type}[${layer.inShape.join('x')}]->[${layer.outShape.join('x')}]${geo}|w${w}a${a}`;
}

/** Machine identity of the table: CPU model and the integer kernel paths in use. */
function machineId(): { cpu: string; kernels: string; node: string } {
  const k = intKernelsBackend();
  // AMX-INT8 tiles change every int8 figure, so tables measured with and without them are kept apart.
  const amx = k.amx.startsWith('amx') ? `/${k.amx}` : '';
  return { cpu: cpus()[0]?.model.trim() ?? 'unknown', kernels: `${k.int8}/${k.binary}${amx}`, node: process.version };
}

function defaultCacheDir(): string {
  const env = process.env['LOWBIT_CACHE_DIR'];
  if (env) return join(env, 'search');
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  return join(root, 'node_modules', '.cache', 'lowbit', 'search');
}

/** Path of the latency table of this machine under `cacheDir`. */
export function latencyTablePath(cacheDir: string = defaultCacheDir()): string {
  const m = machineId();
  const id = createHash('sha256').update(`${m.cpu}|${m.kernels}|${m.node}`).digest('hex').slice(0, 12);
  return join(cacheDir, `latency-${m.kernels.replace(/[^a-z0-9]+/gi, '_')}-${id}.json`);
}

function readTable(path: string): Record<string, number> {
  if (!existsSync(path)) return {};
  try {
    const t = JSON.parse(readTextLimited(path)) as Partial<LatencyTable>;
    if (t.format !== 'lowbit-latency-table' || t.version !== TABLE_VERSION || typeof t.entries !== 'object' || t.entries === null) return {};
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(t.entries)) if (typeof v === 'number' && Number.isFinite(v) && v > 0) out[k] = v;
    return out;
  } catch {
    return {}; // a corrupt cache is re-measured, never trusted
  }
}

/**
 * A module holding one fresh layer of `layer`'s geometry (seeded random weights) followed by ReLU
 * and a one-output Linear "probe", so that the layer's output stage requantizes into the next
 * layer's input as it does inside a model.
 */
class SingleLayer extends Module {
  readonly layer: Conv2d | Conv1d | Linear;
  readonly relu: ReLU;
  readonly flatten: Flatten;
  readonly probe: Linear;
  constructor(info: LayerInfo, seed: number) {
    super();
    const rng = new Rng(seed);
    if (info.type === 'Conv2d') {
      const c = info.conv;
      if (!c) throw new Error(`latency: Conv2d '${info.name}' has no conv geometry`);
      this.layer = this.registerModule('layer', new Conv2d(c.inChannels, info.outChannels, [...c.kernelSize] as [number, number], {
        stride: [...c.stride] as [number, number], padding: [...c.padding] as [number, number], dilation: [...c.dilation] as [number, number], groups: c.groups, rng,
      }));
    } else if (info.type === 'Conv1d') {
      const c = info.conv;
      if (!c) throw new Error(`latency: Conv1d '${info.name}' has no conv geometry`);
      this.layer = this.registerModule('layer', new Conv1d(c.inChannels, info.outChannels, c.kernelSize[1], {
        stride: c.stride[1], padding: c.padding[1], dilation: c.dilation[1], groups: c.groups, rng,
      }));
    } else {
      this.layer = this.registerModule('layer', new Linear(info.reduction, info.outChannels, { rng }));
    }
    this.relu = this.registerModule('relu', new ReLU());
    this.flatten = this.registerModule('flatten', new Flatten());
    this.probe = this.registerModule('probe', new Linear(info.outShape.reduce((p, d) => p * d, 1), 1, { rng }));
  }

  forward(x: Tensor): Tensor {
    return this.probe.forward(this.flatten.forward(this.relu.forward(this.layer.forward(x))));
  }
}

/**
 * @internal The IntModel of one layer of `info`'s geometry at (w, a) (plus its probe, see
 * `SingleLayer`) and a float input batch for it: the layer is calibrated ('static' quantizers) on
 * non-negative random inputs (post-ReLU-like).
 */
export function singleLayerIntModel(info: LayerInfo, w: number, a: number, batch: number, wPerChannel?: readonly number[]): { model: IntModel; input: Float32Array } {
  const net = new SingleLayer(info, 1234);
  const rng = new Rng(99);
  const perSample = info.inShape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(batch * perSample);
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform();
  const x = new Tensor(data, [batch, ...info.inShape]);
  const xnor = w === 1 && a === 1;
  const plan = planFromAssignment({ layer: { w, a, ...(wPerChannel ? { wPerChannel } : {}) }, probe: { w: 8, a: 8 } }, { oneBitActivations: xnor ? 'sign' : 'unsigned' });
  calibrate(net, [{ x }], { plan });
  return { model: convert(net, { inputShape: info.inShape }), input: data };
}

/**
 * Wall time (µs) of fn. Not process CPU time: the native executor's thread pool spins while it
 * waits, which process.cpuUsage counts, and under load that spinning dominates short runs. The
 * minimum over many repeats filters out the time other processes take the cores.
 */
function wallMicros(fn: () => void): number {
  const start = performance.now();
  fn();
  return (performance.now() - start) * 1000;
}

/** Minimum over `repeats` timed `run`s (after a warm-up) of `model` on `input`, µs per sample. */
function timeRun(model: IntModel, input: Float32Array, batch: number, repeats: number): number {
  model.run(input, batch);
  let best = Infinity;
  for (let r = 0; r < repeats; r++) best = Math.min(best, wallMicros(() => model.run(input, batch)));
  return best / batch;
}

/**
 * µs per sample of one fresh layer at (w, a) on the integer runtime: `IntModel.run` (the native
 * executor when the addon provides it) of the layer with the quantization of its input, its
 * requantizing output stage and a one-output probe Linear, minimum over `repeats` timed runs of a
 * `batch`-sample batch after a warm-up, in wall time. The input quantization and the probe
 * are the same for every (w, a) of a layer shape.
 */
export function measureLayerLatency(info: LayerInfo, w: number, a: number, options: { batch?: number; repeats?: number; wPerChannel?: readonly number[] } = {}): number {
  const batch = options.batch ?? 32;
  const { model, input } = singleLayerIntModel(info, w, a, batch, options.wPerChannel);
  return timeRun(model, input, batch, options.repeats ?? 20);
}

/** A short hash of a model's parameter and buffer values (keys in-model latency entries). */
export function modelFingerprint(model: TensorModule): string {
  const h = createHash('sha256');
  for (const [name, t] of [...model.namedParameters(), ...model.namedBuffers()]) {
    h.update(name);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest('hex').slice(0, 12);
}

/** The trained model converted with `assignment` (layers not listed at W8A8); the model is restored. */
function intModelFor(context: LatencyContext, assignment: BitAssignment, who: string): IntModel {
  const inputShape = context.sample.shape.slice(1);
  const layers = describeLayers(context.model, inputShape);
  for (const name of Object.keys(assignment)) if (!layers.some((l) => l.name === name)) throw new Error(`${who}: no layer '${name}'`);
  const full = Object.fromEntries(layers.map((l) => [l.name, assignment[l.name] ?? { w: 8, a: 8 }]));
  const xnor = Object.values(full).some((c) => c.w === 1 && c.a === 1);
  let im: IntModel | null = null;
  evaluateAssignmentSync(context.model, full, { calibration: [{ x: context.sample }], eval: [] }, {
    method: 'ptq',
    base: { oneBitActivations: xnor ? 'sign' : 'unsigned' },
    inspect: (m) => (im = convert(m, { inputShape })),
  });
  return im!;
}

function sampleInput(context: LatencyContext, batch: number): Float32Array {
  const per = context.sample.size / context.sample.shape[0]!;
  return Float32Array.from(context.sample.data.subarray(0, batch * per));
}

/**
 * µs per sample of the whole trained model converted with `assignment` (layers not listed at
 * W8A8): calibrate ('static' quantizers; the model is restored), convert, time `IntModel.run` on
 * the first `batch` samples of `sample` (minimum of `repeats` runs, wall time).
 */
export function measureAssignmentLatency(context: LatencyContext, assignment: BitAssignment, options: { batch?: number; repeats?: number } = {}): number {
  const batch = Math.min(options.batch ?? 32, context.sample.shape[0]!);
  return timeRun(intModelFor(context, assignment, 'measureAssignmentLatency'), sampleInput(context, batch), batch, options.repeats ?? 20);
}

/**
 * The latency change (µs per sample) of converting the trained model with `assignment` instead of
 * W8A8: both IntModels timed interleaved (`measureModelsInterleaved`, `repeats` rounds), so a
 * change of machine load hits both alike. Returns both times and their difference.
 */
export function measureAssignmentDelta(context: LatencyContext, assignment: BitAssignment, options: { batch?: number; repeats?: number } = {}): { base: number; changed: number; delta: number } {
  const batch = Math.min(options.batch ?? 32, context.sample.shape[0]!);
  const models = [intModelFor(context, {}, 'measureAssignmentDelta'), intModelFor(context, assignment, 'measureAssignmentDelta')];
  const [base, changed] = measureModelsInterleaved(models, sampleInput(context, batch), batch, options.repeats ?? 20) as [number, number];
  return { base, changed, delta: changed - base };
}

/**
 * µs per sample of a whole IntModel on `input` (`batch` samples): minimum of `repeats` timed runs
 * (wall time), after a warm-up run.
 */
export function measureModelLatency(model: IntModel, input: Float32Array, batch: number, repeats = 20): number {
  return timeRun(model, input, batch, repeats);
}

/**
 * µs per sample of several IntModels on the same `input`, measured interleaved (one run of each
 * per round, `rounds` rounds after a warm-up) so that a change in machine load hits all of them
 * alike: the minimum wall time per model.
 */
export function measureModelsInterleaved(models: readonly IntModel[], input: Float32Array, batch: number, rounds = 30): number[] {
  for (const m of models) m.run(input, batch);
  const best = models.map(() => Infinity);
  for (let r = 0; r < rounds; r++) models.forEach((m, i) => (best[i] = Math.min(best[i]!, wallMicros(() => m.run(input, batch)))));
  return best.map((b) => b / batch);
}

/**
 * Latency measured on lowbit's integer runtime (`IntModel.run`: the native executor when the addon
 * has it) on this machine, minimum wall time over repeated runs. Unit: µs per sample. Two ways, both cached in a JSON table under
 * `cacheDir` whose file name carries the CPU model, the integer-kernel path and the Node version:
 * - without `context`: each (layer shape, w, a) is microbenchmarked once as a fresh layer
 *   (`measureLayerLatency`: input quantization + layer + probe), so a layer's cost includes a
 *   fixed overhead that is the same for every (w, a);
 * - with `context` (a trained model and a batch): whole-model measurements, additive by layer:
 *   cost(L, w, a) = T₈/n + (r − 1)·T₈, T₈ = the model at W8A8, n = its layer count,
 *   r = T(L at (w, a), the others W8A8) / T₈ measured as a paired, interleaved ratio
 *   (`measureAssignmentDelta`), clamped at 0; so the W8A8 plan costs exactly T₈ and a plan's total is T₈ plus the
 *   sum of its layers' measured changes (interaction between layers is ignored). Entries are keyed
 *   by a fingerprint of the model's weights.
 * Per-channel weight bits cost what the widest channel costs (the runtime stores a layer at one
 * width), except pruned (0-bit) channels, which `convert` removes: a layer keeping k of its O
 * channels is measured as such (the model with that layer pruned to k
 * channels, the others W8A8 — so the next layer's narrower input is in the figure — as a paired
 * ratio to W8A8; without a context the fresh layer pruned to k channels with its probe), keyed
 * by k. Costs of several pruned layers add up like the width entries; the saving of a layer whose
 * input was pruned too is counted at its full input width, so sums are optimistic when consecutive
 * layers are pruned (check a plan by measuring it, `allocateMeasured`).
 */
export function latencyCost(options: LatencyCostOptions = {}): LatencyCostModel {
  const path = options.noCache ? null : latencyTablePath(options.cacheDir);
  let table: Record<string, number> | null = null;
  const load = (): Record<string, number> => (table ??= path && !options.refresh ? readTable(path) : {});
  const fresh = new Set<string>();
  const context = options.context;
  // Per-sample times depend on the batch (fixed costs spread over it), so in-model keys carry it; batch 32 keeps the old keys.
  const inModelBatch = context ? Math.min(options.batch ?? 32, context.sample.shape[0]!) : 0;
  const fingerprint = context ? `model-${modelFingerprint(context.model)}${inModelBatch === 32 ? '' : `@b${inModelBatch}`}` : null;
  const layerCount = context ? describeLayers(context.model, context.sample.shape.slice(1)).length : 0;
  const lookup = (key: string, measure: () => number): number => {
    const entries = load();
    const known = entries[key];
    if (known !== undefined && (!options.refresh || fresh.has(key))) return known;
    options.onMeasure?.(key);
    const value = measure();
    if (!(value > 0 && Number.isFinite(value))) throw new Error(`latency measurement of ${key} gave ${value}`);
    entries[key] = value;
    fresh.add(key);
    if (path) {
      // Merge with entries another process may have written meanwhile, then replace atomically.
      const merged = { ...readTable(path), ...entries };
      const file: LatencyTable = { format: 'lowbit-latency-table', version: TABLE_VERSION, machine: machineId(), entries: merged };
      makeParentDirs(path);
      writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(file, null, 1)}\n`));
    }
    return value;
  };
  /** Cost of `layer` at (w, a) keeping `kept` of its output channels (the rest pruned). */
  const cost = (layer: LayerInfo, w: number, a: number, kept = layer.outChannels): number => {
    if (!Number.isInteger(w) || w < 1 || w > 16 || !Number.isInteger(a) || a < 1 || a > 16) throw new Error(`cost model 'latency': bit widths must be integers in [1, 16], got w=${w} a=${a}`);
    if (!Number.isInteger(kept) || kept < 1 || kept > layer.outChannels) throw new Error(`cost model 'latency': '${layer.name}' keeps ${kept} of ${layer.outChannels} channels`);
    const pruned = kept < layer.outChannels;
    const suffix = pruned ? `|keep${kept}` : '';
    const perChannel = pruned ? prunedWidths(layer.outChannels, kept, w) : undefined;
    if (options.measure) {
      if (pruned) throw new Error("cost model 'latency': a custom `measure` cannot price pruned channels (it has no channel count)");
      return lookup(latencyKey(layer, w, a), () => options.measure!(layer, w, a));
    }
    if (!context) return lookup(`${latencyKey(layer, w, a)}${suffix}`, () => measureLayerLatency(layer, w, a, { ...options, ...(perChannel ? { wPerChannel: perChannel } : {}) }));
    const base = w8a8Total();
    return Math.max(0, base / layerCount + inModelChange(layer, w, a, kept));
  };
  const w8a8Total = (): number => lookup(`${fingerprint}:w8a8`, () => measureAssignmentLatency(context!, {}, options));
  /** (r − 1)·T₈: the measured change of the whole model (others W8A8), signed. */
  const inModelChange = (layer: LayerInfo, w: number, a: number, kept: number): number => {
    if (!context) throw new Error("cost model 'latency': changes are measured in a model (pass `context`)");
    const pruned = kept < layer.outChannels;
    if (w === 8 && a === 8 && !pruned) return 0;
    const perChannel = pruned ? prunedWidths(layer.outChannels, kept, w) : undefined;
    // The change is measured as a paired, interleaved difference (stored as a ratio to the paired W8A8 time, > 0).
    const ratio = lookup(`${fingerprint}:${layer.name}|w${w}a${a}${pruned ? `|keep${kept}` : ''}`, () => {
      const d = measureAssignmentDelta(context, { [layer.name]: { w, a, ...(perChannel ? { wPerChannel: perChannel } : {}) } }, options);
      return d.changed / d.base;
    });
    return (ratio - 1) * w8a8Total();
  };
  return {
    name: 'latency',
    unit: 'µs',
    layerCost: (layer, w, a) => cost(layer, w, a),
    channelCost: (layer, wPerChannel, a) => cost(layer, Math.max(...wPerChannel), a, unprunedChannels(layer, wPerChannel)),
    ...(context ? {
      change: (layer: LayerInfo, choice: BitChoice) => inModelChange(layer, choice.w, choice.a, choice.wPerChannel ? unprunedChannels(layer, choice.wPerChannel) : layer.outChannels),
      w8a8Total,
    } : {}),
  };
}

/**
 * The latency cost model; with a `context` it also gives the signed measured change of a choice
 * and T₈, so that a search can spread T₈ over the layers without clamping (`pruneLayerOptions`).
 */
export interface LatencyCostModel extends CostModel {
  /** (r − 1)·T₈ of `choice` in `layer`, the other layers W8A8 (µs per sample, signed; context only). */
  readonly change?: (layer: LayerInfo, choice: BitChoice) => number;
  /** T₈: the whole model at W8A8 (µs per sample; context only). */
  readonly w8a8Total?: () => number;
}

/** Widths of a layer keeping its first `kept` of `channels` channels at `w` (timing depends on the count only). */
function prunedWidths(channels: number, kept: number, w: number): number[] {
  return Array.from({ length: channels }, (_, c) => (c < kept ? w : 0));
}

/** Output channels a per-channel width list keeps: all of the layer's channels except the 0-bit (pruned) ones. */
function unprunedChannels(layer: LayerInfo, wPerChannel: readonly number[]): number {
  return layer.outChannels - wPerChannel.filter((b) => b === 0).length;
}
