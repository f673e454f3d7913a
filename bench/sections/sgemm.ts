/**
 * Kernel section: the native helper `bench/sgemm.ts` exports `benchSgemm()` (FMA peak and SGEMM
 * figures with their fraction of peak). This section calls it when it exists and the native
 * backend is loaded, records its object as-is and renders it as tables.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Section, SectionContext, SectionOutput, SectionResult } from '../lib.ts';
import { benchBackends, nativeMissingReason } from '../workloads.ts';
import { fmtNumber } from '../report.ts';

const helper = join(dirname(fileURLToPath(import.meta.url)), '..', 'sgemm.ts');

type BenchSgemm = (options?: Record<string, unknown>) => unknown;

async function run(ctx: SectionContext): Promise<SectionOutput> {
  if (!existsSync(helper)) return { status: 'skipped', reason: 'native backend not built (bench/sgemm.ts is missing)', measurements: [] };
  if (!benchBackends().includes('native')) return { status: 'skipped', reason: nativeMissingReason(), measurements: [] };
  const mod = (await import(pathToFileURL(helper).href)) as { benchSgemm?: BenchSgemm };
  if (typeof mod.benchSgemm !== 'function') return { status: 'skipped', reason: 'bench/sgemm.ts does not export benchSgemm()', measurements: [] };
  const raw = await mod.benchSgemm({ quick: ctx.quick, repeats: ctx.repeats, threads: ctx.threads });
  return { measurements: [], raw, notes: ['Figures as returned by `benchSgemm()` (bench/sgemm.ts, native backend); fraction of peak = achieved GFLOP/s over the measured FMA peak of the same thread count.'] };
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

/** Scalars as a two-column table, arrays of objects as their own tables. */
export function renderSgemm(r: SectionResult): string[] {
  const raw = r.raw;
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
