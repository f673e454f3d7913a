/**
 * int8 GEMM microbench: the AVX-VNNI ymm kernel (LOWBIT_ISA=avx2 on a CPU with AVX-VNNI) against
 * the exact int16 multiply-add kernel (LOWBIT_ISA=avx2-novnni), interleaved in one process: this
 * addon is loaded under LOWBIT_ISA=avx2 and a copy of it (another path, so dlopen gives a second
 * instance with its own statics) after switching the environment to avx2-novnni; each addon reads
 * LOWBIT_ISA at its first call. `--base PATH` adds a third addon (e.g. a copy of main's build)
 * loaded under LOWBIT_ISA=avx2.
 *
 *   nice -n 10 node --import tsx bench/native/int8-avxvnni.ts [--reps 15] [--threads 1,2] [--base main.node]
 *
 * Per shape and thread count the addons run round-robin, one call each per round; each call is timed
 * in process CPU time (process.cpuUsage, all threads: other tenants' time slices do not count) and
 * wall time; prints the medians, 2 M N K per CPU second (all threads' CPU time: per-core throughput,
 * which a small GEMM that runs on one thread also shows) with its ratio to avx2-novnni and its fraction
 * of one core's ymm vpdpbusd peak (probed at the start, native/intgemm.cc vnniYmmLoop), and per wall second.
 * Every call's output is compared with the first addon's (the kernels are bit-exact).
 */
import { copyFileSync, mkdtempSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execSync } from 'node:child_process';
import type { NativeAddon } from '../../src/backend/native/addon.ts';
import { flagOr } from '../flags.ts';

const REPS = Number(flagOr('reps', '15'));
const THREADS = flagOr('threads', '1,2').split(',').map(Number);
const BASE = flagOr('base', '');
const require = createRequire(import.meta.url);
const built = new URL('../../build/Release/lowbit_native.node', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'lowbit-avxvnni-'));

function loadAs(path: string, isa: string, copyName: string): NativeAddon {
  process.env.LOWBIT_ISA = isa;
  const target = join(dir, copyName);
  copyFileSync(path, target);
  const addon = require(target) as NativeAddon;
  addon.intKernelsInfo!(); // fixes the addon's ISA and int8 path now, under this LOWBIT_ISA
  return addon;
}

const addons: { label: string; addon: NativeAddon }[] = [
  { label: 'avx2', addon: loadAs(built, 'avx2', 'vnni.node') },
  { label: 'avx2-novnni', addon: loadAs(built, 'avx2-novnni', 'novnni.node') },
];
if (BASE) addons.push({ label: 'base avx2', addon: loadAs(BASE, 'avx2', 'base.node') });
for (const a of addons) a.label += ` (int8 ${a.addon.intKernelsInfo!().int8})`;

function bytes(n: number, seed: number): Uint8Array {
  let s = seed >>> 0 || 1;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s & 0xff;
  }
  return out;
}

const median = (v: number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

// square GEMMs and the integer Transformer LM's shapes (256 windows x 8 positions = 2048 rows:
// qkv 80 -> 240, fc1 80 -> 320, fc2 320 -> 80; the LM head 80 -> 2000)
const shapes: [string, number, number, number][] = [
  ['n = 256', 256, 256, 256], ['n = 512', 512, 512, 512], ['n = 1024', 1024, 1024, 1024],
  ['tf qkv 2048x240x80', 2048, 240, 80], ['tf fc1 2048x320x80', 2048, 320, 80], ['tf fc2 2048x80x320', 2048, 80, 320],
  ['lm head 256x2000x80', 256, 2000, 80], ['odd 97x130x1030', 97, 130, 1030],
];
let cpu = '';
try {
  cpu = execSync("grep -m1 'model name' /proc/cpuinfo", { encoding: 'utf8' }).split(':')[1]!.trim();
} catch { /* not Linux */ }
console.log(`${cpu}; load ${execSync('uptime', { encoding: 'utf8' }).trim().replace(/^.*load/, 'load')}; reps ${REPS}`);
// the ymm vpdpbusd peak of one core (the avx-vnni addon's probe, CPU time; median of 7 probes of 50 ms)
const probes = Array.from({ length: 7 }, () => addons[0]!.addon.vnniPeakGops?.(1, 0.05) ?? 0);
const peak = median(probes);
console.log(`${addons[0]!.label} vpdpbusd peak, 1 core: ${peak.toFixed(1)} GOP per CPU s (probes ${probes.map((v) => v.toFixed(0)).join(', ')})`);
for (const threads of THREADS) {
  for (const a of addons) a.addon.setThreads(threads);
  for (const [label, M, N, K] of shapes) {
    const a = bytes(M * K, 3);
    const w = new Int8Array(bytes(N * K, 4).buffer);
    const prepared = addons.map(({ addon }) => {
      const panel = new Int8Array(addon.int8PackedBytes!(N, K));
      const rowSums = new Int32Array(N);
      addon.packInt8!(w, N, K, panel, rowSums);
      return { addon, panel, rowSums, c: new Int32Array(M * N) };
    });
    const cpuMs = addons.map(() => [] as number[]), wallMs = addons.map(() => [] as number[]);
    for (let r = 0; r < REPS + 1; r++) {
      prepared.forEach((p, i) => {
        const c0 = process.cpuUsage(), t0 = performance.now();
        p.addon.gemmInt8Packed!(M, N, K, a, 128, p.panel, p.rowSums, p.c);
        const wall = performance.now() - t0, used = process.cpuUsage(c0);
        if (r > 0) {
          wallMs[i]!.push(wall);
          cpuMs[i]!.push((used.user + used.system) / 1000);
        }
        if (i > 0 && !p.c.every((v, j) => v === prepared[0]!.c[j])) throw new Error(`${addons[i]!.label} differs from ${addons[0]!.label} on ${label}`);
      });
    }
    const ops = 2 * M * N * K;
    const novnni = median(cpuMs[1]!);
    const parts = addons.map(({ label: l }, i) => {
      const c = median(cpuMs[i]!);
      const wall = median(wallMs[i]!);
      const rate = ops / (c / 1000) / 1e9;
      const ofPeak = peak > 0 ? `, ${((100 * rate) / peak).toFixed(0)} % of the ymm peak` : '';
      return `${l}: cpu ${c.toFixed(3)} ms (${rate.toFixed(1)} GOP per CPU s${ofPeak}, ${(novnni / c).toFixed(2)}x), wall ${wall.toFixed(3)} ms (${(ops / (wall / 1000) / 1e9).toFixed(1)} GOP/s)`;
    });
    console.log(`${threads} thread(s), ${label}: ${parts.join(' | ')}`);
  }
}
