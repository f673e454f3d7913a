/**
 * SGEMM and FMA-peak benchmark of the native addon: GFLOP/s of C = A·B at n = 256..2048 on 1 and
 * on all threads, as a fraction of the FMA peak measured on the same thread count right before and
 * right after each point; plus the LeNet-5 conv layers (batch 64) forward and backward.
 *
 * The peak probe (`fmaPeak`, native/cpu.cc) is the same for every thread count: one FMA loop per
 * thread, started together, best of 5 runs (a run whose loops did not overlap does not count).
 * A point's peak is the larger of the probes around it; its SGEMM figure is the median of repeats
 * (the best repeat is reported too), so the fraction errs low rather than high.
 *
 * Beside the peak, the load-fed probe (`loadFedPeak`) runs the micro-kernel's own step -- its
 * broadcasts, vector loads and FMAs -- from panels kept in L1 and with no C traffic: the ceiling of
 * any kernel of that shape on this core. It is measured once per thread count, like the peak.
 */
import { loadNative, nativeAddon, nativeInfo } from '../src/backend/native/index.ts';

export interface SgemmPoint {
  n: number;
  threads: number;
  gflops: number;
  /** Best repeat (GFLOP/s). */
  bestGflops: number;
  /** FMA peak (GFLOP/s) on `threads` threads: the larger of the probes right before and after this point. */
  peakGflops: number;
  /** Median GFLOP/s over the peak. */
  fractionOfPeak: number;
  /** Median GFLOP/s over the load-fed probe on `threads` threads (absent when the ISA has none). */
  fractionOfLoadFed?: number;
}

export interface ConvPoint {
  layer: string;
  shape: string;
  forwardMs: number;
  backwardInputMs: number;
  backwardWeightMs: number;
}

export interface SgemmBench {
  isa: string;
  threads: number;
  fmaPeakGflops: Record<string, number>;
  /** The load-fed probe (the micro-kernel's step, panels in L1) per thread count; 0 when the ISA has none. */
  loadFedGflops?: Record<string, number>;
  sgemm: SgemmPoint[];
  lenetConv: ConvPoint[];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

/** Wall times (ms) of `fn` over `repeats` runs after one warm-up. */
function timesMs(fn: () => void, repeats: number): number[] {
  fn();
  const times: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const start = performance.now();
    fn();
    times.push(performance.now() - start);
  }
  return times;
}

/** Median wall time (ms) of `fn` over `repeats` runs after one warm-up. */
function timeMs(fn: () => void, repeats: number): number {
  return median(timesMs(fn, repeats));
}

function filled(length: number, seed: number): Float32Array {
  const data = new Float32Array(length);
  for (let i = 0; i < length; i++) data[i] = Math.sin(i * 0.37 + seed);
  return data;
}

export function benchSgemm(options: { sizes?: number[]; peakSeconds?: number } = {}): SgemmBench {
  const loaded = loadNative();
  if (!loaded.ok) throw new Error(`native addon not loaded: ${loaded.reason}`);
  const addon = nativeAddon()!;
  const info = nativeInfo()!;
  const maxThreads = info.threads;
  const threadCounts = [...new Set([1, maxThreads])];
  const peak: Record<string, number> = {};
  const loadFed: Record<string, number> = {};
  for (const t of threadCounts) {
    addon.setThreads(t);
    peak[t] = Math.max(...[0, 1, 2].map(() => addon.fmaPeak(t, options.peakSeconds ?? 0.1)));
    loadFed[t] = Math.max(...[0, 1, 2].map(() => addon.loadFedPeak(t, options.peakSeconds ?? 0.1)));
  }
  const sgemm: SgemmPoint[] = [];
  for (const n of options.sizes ?? [256, 512, 1024, 2048]) {
    const a = filled(n * n, 1);
    const b = filled(n * n, 2);
    const c = new Float32Array(n * n);
    const repeats = n <= 512 ? 30 : n <= 1024 ? 10 : 5;
    for (const t of threadCounts) {
      addon.setThreads(t);
      // The peak is re-measured around each point: on a shared machine the share of the cores a
      // process gets drifts over a run, and a peak from the start would not be the same machine.
      const before = addon.fmaPeak(t, options.peakSeconds ?? 0.1);
      const times = timesMs(() => addon.sgemm(false, false, n, n, n, a, n, b, n, 0, c, n, 1, 0, 0, 0), repeats);
      const near = Math.max(before, addon.fmaPeak(t, options.peakSeconds ?? 0.1));
      const gflops = (2 * n ** 3) / median(times) / 1e6;
      const best = (2 * n ** 3) / Math.min(...times) / 1e6;
      const ceiling = loadFed[t]! > 0 ? { fractionOfLoadFed: round(gflops / loadFed[t]!, 3) } : {};
      sgemm.push({ n, threads: t, gflops: round(gflops), bestGflops: round(best), peakGflops: round(near), fractionOfPeak: round(gflops / near, 3), ...ceiling });
    }
  }
  addon.setThreads(maxThreads);
  return { isa: info.isa, threads: maxThreads, fmaPeakGflops: mapValues(peak), loadFedGflops: mapValues(loadFed), sgemm, lenetConv: benchLenetConv() };
}

/** LeNet-5 conv layers at batch 64, on all threads. */
function benchLenetConv(): ConvPoint[] {
  const addon = nativeAddon()!;
  const layers: [string, number, number, number, number][] = [
    // name, C, H (= W), O, K
    ['conv1 1->6 5x5 on 28x28', 1, 28, 6, 5],
    ['conv2 6->16 5x5 on 14x14', 6, 14, 16, 5],
    ['conv2 6->16 5x5 on 12x12', 6, 12, 16, 5],
  ];
  const batch = 64;
  return layers.map(([layer, c, h, o, k]) => {
    const oh = h - k + 1;
    const geom = Int32Array.from([batch, c, h, h, o, k, k, oh, oh, 1, 1, 0, 0, 1, 1, 1]);
    const x = filled(batch * c * h * h, 3);
    const w = filled(o * c * k * k, 4);
    const y = new Float32Array(batch * o * oh * oh);
    const dx = new Float32Array(x.length);
    const dw = new Float32Array(w.length);
    return {
      layer,
      shape: `x [${batch},${c},${h},${h}] w [${o},${c},${k},${k}] y [${batch},${o},${oh},${oh}]`,
      forwardMs: round(timeMs(() => addon.conv2d(x, w, y, geom), 50), 4),
      backwardInputMs: round(timeMs(() => addon.conv2dBackwardInput(y, w, dx, geom), 50), 4),
      backwardWeightMs: round(timeMs(() => addon.conv2dBackwardWeight(x, y, dw, geom), 50), 4),
    };
  });
}

function round(value: number, digits = 1): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

function mapValues(record: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, round(v)]));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(benchSgemm(), null, 2));
}
