/**
 * Shared pieces of `npm run bench`: result types, timing, statistics, atomic writes.
 *
 * Conventions
 * - Every measurement keeps all its timed repeats; the reported figure is their median.
 * - Warm-up runs are never timed.
 * - Ratios are lowbit / peer on a "higher is better" figure (throughput), so > 1 means lowbit is
 *   faster; a time is turned into a throughput before dividing.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

/** One measured (or skipped) figure. */
export interface Measurement {
  /** Stable key, e.g. `lenet5-b64/lowbit-native`. */
  readonly id: string;
  /** What is measured, e.g. `LeNet-5 training, batch 64`: rows with the same group form a block. */
  readonly group: string;
  /** Who runs it, e.g. `lowbit (native)`, `PyTorch 1.13.0`, `onnxruntime-node 1.30.0`. */
  readonly impl: string;
  /** Unit of `median` and `repeats`, e.g. `samples/s`, `images/s`, `s`. */
  readonly unit: string;
  /** False for times (lower is better). */
  readonly higherIsBetter: boolean;
  /** Median of `repeats`, or null when skipped. */
  readonly median: number | null;
  /** Every timed repeat (warm-up excluded). */
  readonly repeats: readonly number[];
  /** Why there is no number. */
  readonly skipped?: string;
  /** Ids of the peer measurements this one is compared with (same section, same run). */
  readonly peers?: readonly string[];
  /** By peer id: lowbit / peer as throughputs (> 1 = lowbit faster); null when either side is missing. */
  ratios?: Record<string, number | null>;
  /** Free-form details (steps per repeat, data source, thread counts...). */
  readonly details?: Readonly<Record<string, unknown>>;
}

export interface MachineInfo {
  readonly cpu: string;
  readonly cores: number;
  readonly os: string;
  readonly node: string;
  readonly lowbit: {
    readonly version: string;
    readonly commit: string;
    readonly backends: readonly string[];
    readonly defaultBackend: string;
    readonly isa: string;
    readonly threads: string;
  };
  readonly torch: string;
  readonly torchBlas: string;
  readonly ort: string;
}

export interface SectionResult {
  readonly name: string;
  readonly title: string;
  /** 'ok' with measurements, 'skipped' (a prerequisite is missing) or 'error' (it threw). */
  readonly status: 'ok' | 'skipped' | 'error';
  readonly reason?: string;
  readonly startedAt: string;
  readonly seconds: number;
  readonly quick: boolean;
  readonly machine: MachineInfo;
  /** Busy fraction of all cores just before the section started, from other processes (0–1). */
  readonly backgroundLoad: number | null;
  readonly measurements: readonly Measurement[];
  /** Lines printed under the section's table (data used, caveats). */
  readonly notes: readonly string[];
  /** Section-specific raw output (e.g. the SGEMM helper's object). */
  readonly raw?: unknown;
}

/** What a section function gets. */
export interface SectionContext {
  readonly quick: boolean;
  /** Timed repeats per measurement (≥ 5 full, ≥ 3 quick). */
  readonly repeats: number;
  /** Target duration of one timed repeat, seconds. */
  readonly targetSeconds: number;
  readonly threads: number;
  readonly machine: MachineInfo;
  /** Directory for artefacts (the exported ONNX model...). */
  readonly resultsDir: string;
  log(message: string): void;
}

export interface SectionOutput {
  readonly status?: 'ok' | 'skipped';
  readonly reason?: string;
  readonly measurements: Measurement[];
  readonly notes?: string[];
  readonly raw?: unknown;
}

export interface Section {
  readonly name: string;
  readonly title: string;
  run(ctx: SectionContext): Promise<SectionOutput>;
}

// ------------------------------------------------------------------ statistics
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function now(): number {
  return performance.now() / 1000;
}

/** Lets pending I/O and timers run between repeats (keeps the event loop honest). */
export function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export interface RateOptions {
  /** Untimed calls before calibration. */
  warmup: number;
  repeats: number;
  /** Target seconds per repeat; steps per repeat are calibrated from a probe. */
  targetSeconds: number;
  /** Items (samples, images) processed per call. */
  itemsPerCall: number;
  minSteps?: number;
  maxSteps?: number;
}

/**
 * Throughput of `fn` (items/s): warm-up, then a probe that sets the number of calls per repeat so
 * that one repeat lasts about `targetSeconds`, then `repeats` timed repeats.
 */
export async function measureRate(fn: () => void | Promise<void>, o: RateOptions): Promise<{ median: number; repeats: number[]; steps: number }> {
  for (let i = 0; i < o.warmup; i++) await fn();
  const t0 = now();
  let probe = 0;
  while (probe < 2 || (now() - t0 < 0.25 && probe < 50)) {
    await fn();
    probe++;
  }
  const perCall = (now() - t0) / probe;
  const steps = Math.max(o.minSteps ?? 2, Math.min(o.maxSteps ?? 2000, Math.round(o.targetSeconds / perCall)));
  const values: number[] = [];
  for (let r = 0; r < o.repeats; r++) {
    await tick();
    const start = now();
    for (let i = 0; i < steps; i++) await fn();
    values.push((steps * o.itemsPerCall) / (now() - start));
  }
  return { median: median(values), repeats: values, steps };
}

// ------------------------------------------------------------------ measurements
export function measured(
  base: Omit<Measurement, 'median' | 'repeats' | 'skipped'>,
  repeats: readonly number[],
): Measurement {
  return { ...base, median: median(repeats), repeats: [...repeats] };
}

export function skippedMeasurement(base: Omit<Measurement, 'median' | 'repeats' | 'skipped'>, reason: string): Measurement {
  return { ...base, median: null, repeats: [], skipped: reason };
}

/** Fills `ratios` of every measurement that names peers (lowbit / peer, as throughputs). */
export function computeRatios(ms: Measurement[]): Measurement[] {
  const byId = new Map(ms.map((m) => [m.id, m]));
  for (const m of ms) {
    if (!m.peers?.length) continue;
    m.ratios = {};
    for (const id of m.peers) {
      const p = byId.get(id);
      if (!p || m.median === null || p.median === null || m.median <= 0 || p.median <= 0) {
        m.ratios[id] = null;
        continue;
      }
      const mine = m.higherIsBetter ? m.median : 1 / m.median;
      const theirs = p.higherIsBetter ? p.median : 1 / p.median;
      m.ratios[id] = mine / theirs;
    }
  }
  return ms;
}

export function errorMessage(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n')[0]!.slice(0, 300);
}

// ------------------------------------------------------------------ files
/** Writes `text` to `path` through a temp file in the same directory and a rename. */
export function writeAtomic(path: string, text: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The short hash of HEAD of this checkout, or "unknown" outside git. */
export function gitCommit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return sha || 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * OPENBLAS_CORETYPE for the PyTorch peer. OpenBLAS 0.3.21 (Debian 12) does not know newer CPUs
 * such as AMD Zen 5 (family 26), and this machine's environment pins it to its Haswell (AVX2)
 * kernels (OPENBLAS_CORETYPE=Haswell), half the speed of its AVX-512 ones here (SGEMM 1024, one
 * BLAS thread: 118 vs 228 GFLOP/s). So on a CPU with the AVX-512 subsets of OpenBLAS's SkylakeX
 * kernels the peer gets those, whatever the inherited environment says: the peer runs its fastest
 * kernels. LOWBIT_BENCH_OPENBLAS_CORETYPE overrides the choice ('' = keep the inherited value).
 * Null = leave the environment as it is.
 */
export function openblasCoreType(): string | null {
  const forced = process.env.LOWBIT_BENCH_OPENBLAS_CORETYPE;
  if (forced !== undefined) return forced === '' ? null : forced;
  try {
    const flags = new Set((/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/));
    return ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512cd'].every((f) => flags.has(f)) ? 'SkylakeX' : null;
  } catch {
    return null;
  }
}

/** Environment of a PyTorch peer process: `threads` torch threads, one BLAS thread, OpenBLAS's best kernels. */
export function torchPeerEnv(threads: number): NodeJS.ProcessEnv {
  const core = openblasCoreType();
  return { ...process.env, OPENBLAS_NUM_THREADS: '1', MKL_NUM_THREADS: '1', OMP_NUM_THREADS: String(threads), ...(core ? { OPENBLAS_CORETYPE: core } : {}) };
}
