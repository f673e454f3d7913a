/**
 * `npm run bench [-- --quick] [-- --only sgemm,inference]`
 *
 * Runs the registered benchmark sections one after another in this process (peers in child
 * processes), writes `bench/results/<name>.json` after each section and regenerates
 * `BENCHMARKS.md` from every result file present. Outputs are written atomically.
 *
 * Flags
 *   --quick         3 repeats of ~0.4 s instead of 5 of ~1.2 s (CI smoke; ~2 min in all)
 *   --only a,b      run only these sections (the others' earlier results stay in the report)
 *   --list          print the section names and exit
 *   --no-report     do not rewrite BENCHMARKS.md
 *   --wait-idle[=S] before each section, wait up to S seconds (default 300) for other processes
 *                   to leave the CPU (< 10 % busy); sections that start busy are flagged "noisy"
 *
 * Threads: 2 for everyone. LOWBIT_THREADS is set to 2 before lowbit is loaded (unless the
 * caller set it), the PyTorch peer calls torch.set_num_threads(2) with OPENBLAS_NUM_THREADS=1, and
 * onnxruntime sessions use intraOpNumThreads 2.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Section, SectionContext, SectionResult } from './lib.ts';

const THREADS = 2;
/** Background CPU use (fraction of all cores) above which a section is flagged as noisy. */
const BUSY = 0.1;
process.env.LOWBIT_THREADS ??= String(THREADS);

const benchDir = dirname(fileURLToPath(import.meta.url));
const root = resolve(benchDir, '..');
const resultsDir = join(benchDir, 'results');

interface Flags {
  quick: boolean;
  only: string[] | null;
  list: boolean;
  report: boolean;
  waitIdle: number;
}

function parseFlags(argv: readonly string[]): Flags {
  const flags: Flags = { quick: false, only: null, list: false, report: true, waitIdle: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') flags.quick = true;
    else if (a === '--list') flags.list = true;
    else if (a === '--no-report') flags.report = false;
    else if (a === '--wait-idle' || a.startsWith('--wait-idle=')) {
      flags.waitIdle = a === '--wait-idle' ? 300 : Number(a.slice('--wait-idle='.length));
      if (!Number.isFinite(flags.waitIdle) || flags.waitIdle < 0) throw new Error('--wait-idle=S needs a number of seconds');
    }
    else if (a === '--only' || a.startsWith('--only=')) {
      const v = a === '--only' ? argv[++i] : a.slice('--only='.length);
      if (!v) throw new Error('--only needs a comma-separated list of section names');
      flags.only = v.split(',').map((s) => s.trim()).filter(Boolean);
    } else if (a === '--help' || a === '-h') {
      console.log('usage: npm run bench [-- --quick] [-- --only name,...] [-- --wait-idle[=S]] [-- --list] [-- --no-report]');
      process.exit(0);
    } else throw new Error(`unknown flag '${a}' (try --help)`);
  }
  return flags;
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  // Sections load lowbit; import them only after LOWBIT_THREADS is set.
  const { SECTIONS, RENDERERS } = await import('./sections/index.ts');
  const { backgroundLoad, collectMachineInfo } = await import('./machine.ts');
  const { computeRatios, errorMessage, now, writeAtomic } = await import('./lib.ts');
  const { renderReport } = await import('./report.ts');

  const sections: readonly Section[] = SECTIONS;
  if (flags.list) {
    for (const s of sections) console.log(`${s.name}\t${s.title}`);
    return;
  }
  const known = new Set(sections.map((s) => s.name));
  for (const n of flags.only ?? []) if (!known.has(n)) throw new Error(`unknown section '${n}' (have: ${[...known].join(', ')})`);
  const selected = sections.filter((s) => !flags.only || flags.only.includes(s.name));

  const t0 = now();
  const machine = await collectMachineInfo();
  console.log(`lowbit bench${flags.quick ? ' (quick)' : ''}: ${machine.cpu}, ${machine.cores} cores, node ${machine.node}`);
  console.log(`  lowbit ${machine.lowbit.backends.join('/')} (default ${machine.lowbit.defaultBackend}, ISA ${machine.lowbit.isa}), torch ${machine.torch}, onnxruntime-node ${machine.ort}`);

  for (const section of selected) {
    console.log(`\n[${section.name}] ${section.title}`);
    let load = await backgroundLoad();
    const waitUntil = now() + flags.waitIdle;
    while (load !== null && load > BUSY && now() < waitUntil) {
      console.log(`  waiting for an idle machine (${(load * 100).toFixed(0)} % busy)...`);
      load = await backgroundLoad(5);
    }
    if (load !== null && load > BUSY) console.log(`  warning: the machine is ${(load * 100).toFixed(0)} % busy with other work; figures will be noisy`);
    const startedAt = new Date().toISOString();
    const s0 = now();
    const ctx: SectionContext = {
      quick: flags.quick,
      repeats: flags.quick ? 3 : 5,
      targetSeconds: flags.quick ? 0.4 : 1.2,
      threads: THREADS,
      machine,
      resultsDir,
      log: (m) => console.log(`  ${m}`),
    };
    let result: SectionResult;
    try {
      const out = await section.run(ctx);
      result = {
        name: section.name,
        title: section.title,
        status: out.status ?? 'ok',
        ...(out.reason !== undefined ? { reason: out.reason } : {}),
        startedAt,
        seconds: now() - s0,
        quick: flags.quick,
        machine,
        backgroundLoad: load,
        measurements: computeRatios(out.measurements),
        notes: out.notes ?? [],
        ...(out.raw !== undefined ? { raw: out.raw } : {}),
      };
    } catch (e) {
      console.error(e);
      result = {
        name: section.name,
        title: section.title,
        status: 'error',
        reason: errorMessage(e),
        startedAt,
        seconds: now() - s0,
        quick: flags.quick,
        machine,
        backgroundLoad: load,
        measurements: [],
        notes: [],
      };
    }
    if (result.status !== 'ok') console.log(`  ${result.status}: ${result.reason}`);
    for (const m of result.measurements) {
      const v = m.median === null ? `skipped: ${m.skipped}` : `${m.median.toFixed(1)} ${m.unit}`;
      const rs = Object.entries(m.ratios ?? {}).filter((e): e is [string, number] => e[1] !== null);
      const ratio = rs.length ? `  (${rs.map(([id, r]) => `${r.toFixed(2)}× ${id.split('/').pop()}`).join(', ')})` : '';
      console.log(`  ${m.group} | ${m.impl}: ${v}${ratio}`);
    }
    console.log(`  (${result.seconds.toFixed(1)} s)`);
    writeAtomic(join(resultsDir, `${section.name}.json`), JSON.stringify(result, null, 2) + '\n');
  }

  if (flags.report) {
    const results = new Map<string, SectionResult>();
    if (existsSync(resultsDir)) {
      for (const f of readdirSync(resultsDir)) {
        if (!f.endsWith('.json')) continue;
        try {
          const r = JSON.parse(readFileSync(join(resultsDir, f), 'utf8')) as SectionResult;
          if (known.has(r.name)) results.set(r.name, r);
        } catch {
          // A foreign or broken file: leave it out of the report.
        }
      }
    }
    const md = renderReport({ busyThreshold: BUSY, sections: sections.map((s) => ({ name: s.name, title: s.title })), results, renderers: RENDERERS });
    writeAtomic(join(root, 'BENCHMARKS.md'), md);
    console.log(`\nwrote BENCHMARKS.md and bench/results/ (${(now() - t0).toFixed(1)} s in all)`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
