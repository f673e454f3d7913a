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
import { Rng } from '../../tensor/random.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { writeFileAtomic } from '../../format/safetensors.ts';
import { calibrate } from '../ptq/calibrate.ts';
import { prepareQat } from '../qat/prepare.ts';
import { convert } from '../../runtime/convert.ts';
import type { IntModel } from '../../runtime/intmodel.ts';
import { intKernelsBackend } from '../../runtime/kernels/index.ts';
import { planFromAssignment } from './plan.ts';
import type { CostModel, LayerInfo } from './types.ts';

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
  /** Replaces the microbenchmark (tests, or a table from elsewhere): µs per sample. */
  readonly measure?: (layer: LayerInfo, w: number, a: number) => number;
  /** Called before each new measurement (progress). */
  readonly onMeasure?: (key: string) => void;
}

interface LatencyTable {
  readonly format: 'lowbit-latency-table';
  readonly version: 1;
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
    if (t.format !== 'lowbit-latency-table' || t.version !== 1 || typeof t.entries !== 'object' || t.entries === null) return {};
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(t.entries)) if (typeof v === 'number' && Number.isFinite(v) && v > 0) out[k] = v;
    return out;
  } catch {
    return {}; // a corrupt cache is re-measured, never trusted
  }
}

/** A module holding one fresh layer of `layer`'s geometry (seeded random weights). */
class SingleLayer extends Module {
  readonly layer: Conv2d | Linear;
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
  }

  forward(x: Tensor): Tensor {
    return this.layer.forward(x);
  }
}

/**
 * @internal The IntModel of one layer of `info`'s geometry at (w, a) and an input batch for it:
 * the layer is calibrated ('static' quantizers) on non-negative random inputs (post-ReLU-like).
 */
export function singleLayerIntModel(info: LayerInfo, w: number, a: number, batch: number): { model: IntModel; input: Float32Array } {
  const net = new SingleLayer(info, 1234);
  const rng = new Rng(99);
  const perSample = info.inShape.reduce((p, d) => p * d, 1);
  const data = new Float32Array(batch * perSample);
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform();
  const x = new Tensor(data, [batch, ...info.inShape]);
  const xnor = w === 1 && a === 1;
  const plan = planFromAssignment({ layer: { w, a } }, { oneBitActivations: xnor ? 'sign' : 'unsigned' });
  // W1A1 with sign inputs has no calibrated ('static') quantizer: binary weights and sign inputs need no ranges.
  if (xnor) prepareQat(net.eval(), plan);
  else calibrate(net, [{ x }], { plan });
  return { model: convert(net, { inputShape: info.inShape }), input: data };
}

/** CPU time (µs, user + system of this process) of fn; process.cpuUsage is less disturbed by other processes than wall time. */
function cpuMicros(fn: () => void): number {
  const start = process.cpuUsage();
  fn();
  const d = process.cpuUsage(start);
  return d.user + d.system;
}

/**
 * µs per sample of one layer at (w, a) on the integer runtime: the minimum over `repeats` timed
 * runs of a `batch`-sample batch (after one warm-up run), in process CPU time.
 */
export function measureLayerLatency(info: LayerInfo, w: number, a: number, options: { batch?: number; repeats?: number } = {}): number {
  const batch = options.batch ?? 32;
  const repeats = options.repeats ?? 5;
  const { model, input } = singleLayerIntModel(info, w, a, batch);
  model.run(input, batch);
  let best = Infinity;
  for (let r = 0; r < repeats; r++) best = Math.min(best, cpuMicros(() => model.run(input, batch)));
  return Math.max(best, 1) / batch;
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
 * sample) and cached in a JSON table keyed by CPU model, integer-kernel path (VNNI / AVX2 /
 * reference) and Node version, under `cacheDir`. Unit: µs per sample. Per-channel weight bits
 * cost what the widest channel costs (the runtime stores a layer at one width). The
 * microbenchmark ends in a dequantizing output stage where a model's inner layers requantize,
 * which costs about the same per output element.
 */
export function latencyCost(options: LatencyCostOptions = {}): CostModel {
  const path = options.noCache ? null : latencyTablePath(options.cacheDir);
  let table: Record<string, number> | null = null;
  const load = (): Record<string, number> => (table ??= path && !options.refresh ? readTable(path) : {});
  const fresh = new Set<string>();
  const cost = (layer: LayerInfo, w: number, a: number): number => {
    if (!Number.isInteger(w) || w < 1 || w > 16 || !Number.isInteger(a) || a < 1 || a > 16) throw new Error(`cost model 'latency': bit widths must be integers in [1, 16], got w=${w} a=${a}`);
    const key = latencyKey(layer, w, a);
    const entries = load();
    const known = entries[key];
    if (known !== undefined && (!options.refresh || fresh.has(key))) return known;
    options.onMeasure?.(key);
    const value = options.measure ? options.measure(layer, w, a) : measureLayerLatency(layer, w, a, options);
    if (!(value > 0 && Number.isFinite(value))) throw new Error(`latency measurement of ${key} gave ${value}`);
    entries[key] = value;
    fresh.add(key);
    if (path) {
      // Merge with entries another process may have written meanwhile, then replace atomically.
      const merged = { ...readTable(path), ...entries };
      const file: LatencyTable = { format: 'lowbit-latency-table', version: 1, machine: machineId(), entries: merged };
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
