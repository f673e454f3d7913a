/**
 * The latency cost model: per-layer microbenchmarks on lowbit's own integer runtime
 * (prepare one layer → calibrate → convert → IntModel.run), cached in a JSON table per machine
 * and kernel path, so a search measures each (layer shape, w, a) once per machine.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Conv2d } from '../../nn/conv.ts';
import { Linear } from '../../nn/linear.ts';
import { Module } from '../../nn/module.ts';
import { ReLU } from '../../nn/activation.ts';
import { Flatten } from '../../nn/flatten.ts';
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { writeFileAtomic } from '../../format/safetensors.ts';
import { calibrate } from '../ptq/calibrate.ts';
import { convert } from '../../runtime/convert.ts';
import type { IntModel } from '../../runtime/intmodel.ts';
import { intKernelsBackend } from '../../runtime/kernels/index.ts';
import { planFromAssignment } from './plan.ts';
import type { CostModel, LayerInfo } from './types.ts';
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
  /** Timed runs per entry; the minimum is kept (default 5). */
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

/** Version 2: layers measured with their requantizing output stage (version 1 ended in dequantization). */
const TABLE_VERSION = 2;

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
  return { cpu: cpus()[0]?.model.trim() ?? 'unknown', kernels: `${k.int8}/${k.binary}`, node: process.version };
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
    const t = JSON.parse(readFileSync(path, 'utf8')) as Partial<LatencyTable>;
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
  readonly layer: Conv2d | Linear;
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
 * `SingleLayer`) and the layer's integer input for a `batch`-sample batch: the layer is
 * calibrated ('static' quantizers) on non-negative random inputs (post-ReLU-like).
 */
export function singleLayerIntModel(info: LayerInfo, w: number, a: number, batch: number): { model: IntModel; input: Int32Array; shape: number[] } {
  const net = new SingleLayer(info, 1234);
  const rng = new Rng(99);
  const perSample = info.inShape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(batch * perSample);
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform();
  const x = new Tensor(data, [batch, ...info.inShape]);
  const xnor = w === 1 && a === 1;
  const plan = planFromAssignment({ layer: { w, a }, probe: { w: 8, a: 8 } }, { oneBitActivations: xnor ? 'sign' : 'unsigned' });
  calibrate(net, [{ x }], { plan });
  const model = convert(net, { inputShape: info.inShape });
  const trace = new Map<string, { shape: number[]; data: Int32Array }>();
  model.run(data, batch, { trace });
  const input = trace.get('layer');
  if (!input) throw new Error('latency: the microbenchmark traced no layer input');
  return { model, input: input.data, shape: input.shape };
}

/** CPU time (µs, user + system of this process) of fn; process.cpuUsage is less disturbed by other processes than wall time. */
function cpuMicros(fn: () => void): number {
  const start = process.cpuUsage();
  fn();
  const d = process.cpuUsage(start);
  return d.user + d.system;
}

/**
 * µs per sample of one layer at (w, a) on the integer runtime, output stage (requantization into
 * the next layer's input, ReLU clamp) included, input quantization excluded: the minimum over
 * `repeats` timed `IntModel.runSegment` calls on a `batch`-sample integer input (after one
 * warm-up), in process CPU time.
 */
export function measureLayerLatency(info: LayerInfo, w: number, a: number, options: { batch?: number; repeats?: number } = {}): number {
  const batch = options.batch ?? 32;
  const repeats = options.repeats ?? 5;
  const { model, input, shape } = singleLayerIntModel(info, w, a, batch);
  model.runSegment('layer', input, shape);
  let best = Infinity;
  for (let r = 0; r < repeats; r++) best = Math.min(best, cpuMicros(() => model.runSegment('layer', input, shape)));
  return Math.max(best, 1) / batch;
}

/** A short hash of a model's parameter and buffer values (keys in-model latency entries). */
export function modelFingerprint(model: TensorModule): string {
  const h = createHash('sha256');
  for (const [name, t] of model.namedParameters()) {
    h.update(name);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  for (const [name, t] of model.namedBuffers()) {
    h.update(name);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest('hex').slice(0, 12);
}

/**
 * µs per sample of layer `layerName` of a trained model at (w, a), every other layer at W8A8:
 * calibrate ('static' quantizers, the model restored afterwards), convert, trace the layer's
 * integer input on `sample` and time `runSegment` (the layer, its requantizing output stage and
 * the pooling / flatten nodes up to the next layer): minimum of `repeats` runs in process CPU time.
 */
export function measureLayerInModel(context: LatencyContext, layerName: string, w: number, a: number, options: { batch?: number; repeats?: number } = {}): number {
  const batch = Math.min(options.batch ?? 32, context.sample.shape[0]!);
  const repeats = options.repeats ?? 5;
  const inputShape = context.sample.shape.slice(1);
  const layers = describeLayers(context.model, inputShape);
  if (!layers.some((l) => l.name === layerName)) throw new Error(`measureLayerInModel: no layer '${layerName}'`);
  const assignment = Object.fromEntries(layers.map((l) => [l.name, l.name === layerName ? { w, a } : { w: 8, a: 8 }]));
  let us = NaN;
  const xnor = w === 1 && a === 1;
  evaluateAssignmentSync(context.model, assignment, { calibration: [{ x: context.sample }], eval: [] }, {
    method: 'ptq',
    base: { oneBitActivations: xnor ? 'sign' : 'unsigned' },
    inspect: (m) => {
      const im = convert(m, { inputShape });
      const per = context.sample.size / context.sample.shape[0]!;
      const data = context.sample.data.subarray(0, batch * per) as Float32Array;
      const trace = new Map<string, { shape: number[]; data: Int32Array }>();
      im.run(Float32Array.from(data), batch, { trace });
      const input = trace.get(layerName)!;
      im.runSegment(layerName, input.data, input.shape);
      let best = Infinity;
      for (let r = 0; r < repeats; r++) best = Math.min(best, cpuMicros(() => im.runSegment(layerName, input.data, input.shape)));
      us = Math.max(best, 1) / batch;
    },
  });
  return us;
}

/**
 * µs per sample of a whole IntModel on `input` (`batch` samples): minimum of `repeats` timed runs
 * in process CPU time, after a warm-up run.
 */
export function measureModelLatency(model: IntModel, input: Float32Array, batch: number, repeats = 5): number {
  model.run(input, batch);
  let best = Infinity;
  for (let r = 0; r < repeats; r++) best = Math.min(best, cpuMicros(() => model.run(input, batch)));
  return best / batch;
}

/**
 * Latency measured on lowbit's integer runtime on this machine: each (layer shape, w, a) is
 * microbenchmarked once (`measureLayerLatency`: one layer converted to an IntModel, CPU time per
 * sample, requantizing output stage included) and cached in a JSON table keyed by CPU model,
 * integer-kernel path (VNNI / AVX2 / reference) and Node version, under `cacheDir`. Unit: µs per
 * sample. With `context` (a trained model and a batch) each layer is measured inside that model
 * instead (`measureLayerInModel`), keyed by the model's fingerprint and the layer name: on this
 * runtime the requantization cost depends on the trained scales, which random layers do not
 * reproduce. Per-channel weight bits cost what the widest channel costs (the runtime stores a layer
 * at one width). Not counted: the model input's quantization and the pooling / flatten nodes
 * (the same for every bit width), so a model's measured latency is higher than its table sum.
 */
export function latencyCost(options: LatencyCostOptions = {}): CostModel {
  const path = options.noCache ? null : latencyTablePath(options.cacheDir);
  let table: Record<string, number> | null = null;
  const load = (): Record<string, number> => (table ??= path && !options.refresh ? readTable(path) : {});
  const fresh = new Set<string>();
  const fingerprint = options.context ? `model-${modelFingerprint(options.context.model)}` : null;
  const cost = (layer: LayerInfo, w: number, a: number): number => {
    if (!Number.isInteger(w) || w < 1 || w > 16 || !Number.isInteger(a) || a < 1 || a > 16) throw new Error(`cost model 'latency': bit widths must be integers in [1, 16], got w=${w} a=${a}`);
    const key = fingerprint ? `${fingerprint}:${layer.name}|w${w}a${a}` : latencyKey(layer, w, a);
    const entries = load();
    const known = entries[key];
    if (known !== undefined && (!options.refresh || fresh.has(key))) return known;
    options.onMeasure?.(key);
    const value = options.measure
      ? options.measure(layer, w, a)
      : options.context ? measureLayerInModel(options.context, layer.name, w, a, options) : measureLayerLatency(layer, w, a, options);
    if (!(value > 0 && Number.isFinite(value))) throw new Error(`latency measurement of ${key} gave ${value}`);
    entries[key] = value;
    fresh.add(key);
    if (path) {
      // Merge with entries another process may have written meanwhile, then replace atomically.
      const merged = { ...readTable(path), ...entries };
      const file: LatencyTable = { format: 'lowbit-latency-table', version: TABLE_VERSION, machine: machineId(), entries: merged };
      mkdirSync(dirname(path), { recursive: true });
      writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(file, null, 1)}\n`));
    }
    return value;
  };
  return {
    name: 'latency',
    unit: 'µs',
    layerCost: cost,
    channelCost: (layer, wPerChannel, a) => cost(layer, Math.max(...wPerChannel), a),
  };
}
