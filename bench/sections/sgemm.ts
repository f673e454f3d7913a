/**
 * Kernel section: the native helper `bench/sgemm.ts` exports `benchSgemm()` (FMA peak and SGEMM
 * figures with their fraction of peak). This section calls it when it exists and the native
 * backend is loaded, records its object as-is and renders it as tables.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Section, SectionContext, SectionOutput, SectionResult } from '../lib.ts';
import type { SgemmBench } from '../sgemm.ts';
import { benchBackends, nativeMissingReason } from '../workloads.ts';
import { fmtNumber } from '../report.ts';

const helper = join(dirname(fileURLToPath(import.meta.url)), '..', 'sgemm.ts');

type BenchSgemm = (options?: { sizes?: number[]; peakSeconds?: number }) => SgemmBench | Promise<SgemmBench>;

async function run(ctx: SectionContext): Promise<SectionOutput> {
  if (!existsSync(helper)) return { status: 'skipped', reason: 'native backend not built (bench/sgemm.ts is missing)', measurements: [] };
  if (!benchBackends().includes('native')) return { status: 'skipped', reason: nativeMissingReason(), measurements: [] };
  const mod = (await import(pathToFileURL(helper).href)) as { benchSgemm?: BenchSgemm };
  if (typeof mod.benchSgemm !== 'function') return { status: 'skipped', reason: 'bench/sgemm.ts does not export benchSgemm()', measurements: [] };
  ctx.log(`FMA peak, SGEMM n = ${ctx.quick ? '256..1024' : '256..2048'} on 1 and ${ctx.threads} threads, LeNet-5 conv layers`);
  const raw = await mod.benchSgemm(ctx.quick ? { sizes: [256, 512, 1024] } : {});
  return { measurements: [], raw, notes: ['Figures as returned by `benchSgemm()` (bench/sgemm.ts, native backend); fraction of peak = median SGEMM GFLOP/s over the FMA peak measured on the same thread count right before and after the point (the peer of a kernel is the machine). The probe is the same for 1 and all threads: one FMA loop per thread started together, best of 5 runs, runs whose loops did not overlap discarded.', 'The load-fed probe (`loadFedPeak`, native/cpu.cc) times the micro-kernel\'s own step -- 9 broadcasts of A, 3 vector loads of B and 27 FMAs (AVX2: 6 + 2 + 12) -- from panels that stay in L1, with no C traffic and no call overhead, by the same method: the ceiling of any kernel of this shape on this machine. "Fraction of load-fed probe" is the SGEMM median over it: what packing, cache blocking, C updates and threads leave of that ceiling.'] };
}

// ------------------------------------------------------------------ rendering
type Row = Record<string, unknown>;

function cell(v: unknown): string {
  if (typeof v === 'number') return fmtNumber(v);
  if (Array.isArray(v)) return v.every((x) => typeof x === 'number') ? v.map((x) => fmtNumber(x as number)).join(', ') : JSON.stringify(v);
  if (v !== null && typeof v === 'object') return JSON.stringify(v);
  return String(v ?? '');
}

function isRowArray(v: unknown): v is Row[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => x !== null && typeof x === 'object' && !Array.isArray(x));
}

function table(rows: Row[]): string[] {
  const cols: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k) && !Array.isArray(r[k])) cols.push(k);
  const lines = [`| ${cols.join(' | ')} |`, `| ${cols.map(() => '---').join(' | ')} |`];
  for (const r of rows) lines.push(`| ${cols.map((c) => cell(r[c]).replace(/\|/g, '\\|')).join(' | ')} |`);
  return lines;
}

function isSgemmBench(v: unknown): v is SgemmBench {
  const o = v as Partial<SgemmBench> | null;
  return !!o && typeof o === 'object' && typeof o.fmaPeakGflops === 'object' && Array.isArray(o.sgemm) && Array.isArray(o.lenetConv);
}

function renderKnown(b: SgemmBench): string[] {
  const perThreads = (record: Record<string, number>) => Object.entries(record).map(([t, g]) => `${fmtNumber(g)} GFLOP/s on ${t} thread${t === '1' ? '' : 's'}`).join(', ');
  const out = [`ISA ${b.isa}, pool of ${b.threads} threads. Measured fp32 FMA peak: ${perThreads(b.fmaPeakGflops)}.`];
  const loadFed = b.loadFedGflops !== undefined && Object.values(b.loadFedGflops).some((g) => g > 0) ? b.loadFedGflops : undefined;
  if (loadFed !== undefined) {
    const ratios = Object.entries(loadFed).map(([t, g]) => `${((g / b.fmaPeakGflops[t]!) * 100).toFixed(1)} %`).join(' / ');
    out.push(`Load-fed probe (the micro-kernel's broadcasts, vector loads and FMAs per step, panels in L1, no C traffic): ${perThreads(loadFed)} = ${ratios} of the FMA peak -- the ceiling of a kernel of this shape here.`);
  }
  out.push('');
  const extra = loadFed !== undefined ? ' Fraction of load-fed probe |' : '';
  out.push(`| SGEMM C = A·B (n×n×n) | Threads | GFLOP/s (median) | Best | FMA peak near it | Fraction of FMA peak |${extra}`, `| --- | ---: | ---: | ---: | ---: | ---: |${loadFed !== undefined ? ' ---: |' : ''}`);
  for (const p of b.sgemm) {
    const ceiling = loadFed !== undefined ? ` ${p.fractionOfLoadFed === undefined ? '' : `${(p.fractionOfLoadFed * 100).toFixed(1)} %`} |` : '';
    out.push(`| n = ${p.n} | ${p.threads} | ${fmtNumber(p.gflops)} | ${p.bestGflops === undefined ? '' : fmtNumber(p.bestGflops)} | ${fmtNumber(p.peakGflops)} | ${(p.fractionOfPeak * 100).toFixed(1)} % |${ceiling}`);
  }
  if (b.lenetConv.length > 0) {
    out.push('', '| LeNet-5 conv layer, batch 64 | Shapes | Forward ms | Backward input ms | Backward weight ms |', '| --- | --- | ---: | ---: | ---: |');
    for (const c of b.lenetConv) out.push(`| ${c.layer} | ${c.shape} | ${fmtNumber(c.forwardMs)} | ${fmtNumber(c.backwardInputMs)} | ${fmtNumber(c.backwardWeightMs)} |`);
  }
  return out;
}

/** The helper's object as tables (a generic rendering if its shape is not the known one). */
export function renderSgemm(r: SectionResult): string[] {
  const raw = r.raw;
  if (isSgemmBench(raw)) return renderKnown(raw);
  if (raw === undefined || raw === null) return [];
  if (isRowArray(raw)) return table(raw);
  if (typeof raw !== 'object') return [`Result: ${cell(raw)}`];
  const out: string[] = [];
  const scalars: [string, unknown][] = [];
  const tables: [string, Row[]][] = [];
  for (const [k, v] of Object.entries(raw as Row)) {
    if (isRowArray(v)) tables.push([k, v]);
    else scalars.push([k, v]);
  }
  if (scalars.length > 0) {
    out.push('| Figure | Value |', '| --- | ---: |');
    for (const [k, v] of scalars) out.push(`| ${k} | ${cell(v).replace(/\|/g, '\\|')} |`);
  }
  for (const [k, rows] of tables) out.push('', `**${k}**`, '', ...table(rows));
  return out;
}

export const sgemm: Section = {
  name: 'sgemm',
  title: 'SGEMM kernel vs FMA peak (native backend)',
  run,
};
