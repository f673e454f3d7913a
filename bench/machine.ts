/** What the benchmarks ran on: CPU, Node, lowbit's backends and ISA, the peers' versions. */
import { readFileSync } from 'node:fs';
import { cpus, release, type } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableBackends, getBackend } from '../src/backend/index.ts';
import { loadNative, nativeInfo } from '../src/backend/native/index.ts';
import { gitCommit, openblasCoreType, type MachineInfo } from './lib.ts';
import { loadOrt } from './peers/ort.ts';
import { runTorch } from './peers/torch.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');


/** Busy and total jiffies of all CPUs since boot (first line of /proc/stat); null where unavailable. */
export function cpuTimes(): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return null;
  }
}

/**
 * Fraction of the machine's CPU time that was busy over `seconds` while this process sleeps:
 * other work sharing the cores. Null where /proc/stat is unavailable.
 */
export async function backgroundLoad(seconds = 0.5): Promise<number | null> {
  const a = cpuTimes();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const b = cpuTimes();
  if (!a || !b || b.total <= a.total) return null;
  return (b.busy - a.busy) / (b.total - a.total);
}

export async function collectMachineInfo(): Promise<MachineInfo> {
  const cpuList = cpus();
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version?: string };
  const loaded = loadNative();
  const backends = availableBackends();
  const native = loaded.ok ? nativeInfo() : null;
  const isa = native ? `${native.isa} (${native.threads} pool threads)` : `n/a (native backend not loaded${loaded.ok ? '' : `: ${loaded.reason}`})`;
  const [torch, ort] = await Promise.all([runTorch({ task: 'info' }, 120), loadOrt()]);
  return {
    cpu: cpuList[0]?.model.trim() ?? 'unknown',
    cores: cpuList.length,
    os: `${type()} ${release()}`,
    node: process.version,
    lowbit: {
      version: pkg.version ?? 'unknown',
      commit: gitCommit(),
      backends,
      defaultBackend: getBackend(),
      isa,
      threads: process.env.LOWBIT_THREADS ?? 'default',
    },
    torch: torch.ok ? String(torch.json.torch) : `not available (${torch.reason})`,
    torchBlas: torch.ok ? `BLAS ${String(torch.json.blas)}${` (OPENBLAS_CORETYPE=${openblasCoreType() ?? process.env.OPENBLAS_CORETYPE ?? 'auto'})`}, ATen CPU capability ${String(torch.json.cpu_capability)}` : '',
    ort: ort.ok ? ort.version : `not available (${ort.reason})`,
  };
}
