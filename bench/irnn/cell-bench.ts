/**
 * The timing loop, table and JSON record shared by the integer-cell speed benches (cell-speed.ts
 * for IntLSTM, gru-cell-speed.ts for IntGRU): each variant runs about `seconds` of CPU time per
 * round, variants interleaved; the figure is the median over rounds of sequences per CPU second
 * (process.cpuUsage, user + system), with the wall-clock rate beside it.
 */
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../../src/format/index.ts';

export interface CellVariant {
  readonly name: string;
  readonly run: (batch: number) => void;
}

export interface CellBenchOptions {
  /** Prefix of errors and of the table's title line (e.g. 'IntGRU'). */
  readonly what: string;
  readonly variants: readonly CellVariant[];
  readonly batches: readonly number[];
  readonly rounds: number;
  readonly seconds: number;
  /** The rest of the title line (shapes, ISA, cell path, threads). */
  readonly setup: string;
  /** bench/results/<file>. */
  readonly file: string;
  /** Fields written before the rows. */
  readonly record: Record<string, unknown>;
  /** Output of the native and the TypeScript cell at a batch, compared before timing (a cheap guard; the tests check it thoroughly). */
  readonly outputs: (batch: number) => [ArrayLike<number>, ArrayLike<number>];
}

/** Runs `fn` for about `seconds` of CPU time; returns sequences per CPU second and per wall second. */
function measure(fn: () => void, batch: number, seconds: number): { cpu: number; wall: number } {
  fn();  // warm (packing, tables)
  let calls = 0;
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  let used = 0;
  while (used < seconds * 1e6) {
    fn();
    calls++;
    const u = process.cpuUsage(cpu0);
    used = u.user + u.system;
  }
  const wall = (performance.now() - wall0) / 1000;
  return { cpu: (calls * batch) / (used / 1e6), wall: (calls * batch) / wall };
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

export function runCellBench(o: CellBenchOptions): void {
  for (const n of o.batches) {
    const [a, b] = o.outputs(n);
    if (a.length !== b.length || Array.from(a).some((v, i) => v !== b[i])) throw new Error(`${o.what}: native and TypeScript cells differ at batch ${n}`);
  }
  const rows: { batch: number; variant: string; seqPerCpuSecond: number; seqPerWallSecond: number }[] = [];
  for (const batch of o.batches) {
    console.log(`batch ${batch}: ${o.rounds} rounds`);
    const cpu = o.variants.map(() => [] as number[]);
    const wall = o.variants.map(() => [] as number[]);
    for (let r = 0; r < o.rounds; r++) {
      o.variants.forEach((v, i) => {
        const m = measure(() => v.run(batch), batch, o.seconds);
        cpu[i]!.push(m.cpu);
        wall[i]!.push(m.wall);
      });
    }
    o.variants.forEach((v, i) => rows.push({ batch, variant: v.name, seqPerCpuSecond: median(cpu[i]!), seqPerWallSecond: median(wall[i]!) }));
  }
  const load = loadavg()[0]!;
  console.log(`${o.what} cell speed: ${o.setup}; load average ${load.toFixed(1)}`);
  console.log('| batch | variant | sequences / CPU s | sequences / wall s | vs float (CPU) |');
  console.log('| ---: | --- | ---: | ---: | ---: |');
  for (const row of rows) {
    const float = rows.find((r) => r.batch === row.batch && r.variant.startsWith('float'))!;
    console.log(`| ${row.batch} | ${row.variant} | ${row.seqPerCpuSecond.toFixed(0)} | ${row.seqPerWallSecond.toFixed(0)} | ${(row.seqPerCpuSecond / float.seqPerCpuSecond).toFixed(2)}x |`);
  }
  const out = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', o.file);
  const record = { date: new Date().toISOString(), ...o.record, rounds: o.rounds, seconds: o.seconds, loadAverage: load, rows };
  writeFileAtomic(out, new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`));
  console.log(`written ${out}`);
}
