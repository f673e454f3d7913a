/**
 * What the garbage collector costs the float Transformer's no-grad forward, and what handing
 * buffers back saves: each variant runs in its own child process (V8's GC state is per process),
 * the variants alternate round by round, and each child times `--calls` forward calls after 20
 * untimed ones at the `seq-inference` bench shapes (batch 256 × 8 tokens, 16 MB of logits a call).
 *
 * Variants: GC policy `default` (V8's, with incremental marking: what a process that does not call
 * `preferThroughputGc()` gets, the `seq-inference` section until 2026-11-23) or `throughput`
 * (`preferThroughputGc()`, as `lowbit train` and the float Transformer tools); intermediates
 * released (the TransformerLM's no-grad forward, default) or not (`setReleaseIntermediates(false)`);
 * logits handed back with `releaseTensor` after each call or dropped.
 *
 * Per child: median and mean wall ms per call, process CPU ms per call, and the GCs (count and
 * pause ms per call, by kind, from `PerformanceObserver('gc')`). Prints the medians over rounds.
 *
 *   nice -n 10 node --import tsx bench/transformer-float/gc.ts [--threads 2] [--rounds 5] [--calls 150]
 */
import { execFileSync } from 'node:child_process';
import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { noGrad, releaseTensor } from '../../src/autograd/index.ts';
import { setReleaseIntermediates } from '../../src/autograd/release.ts';
import { nativeInfo, setBackend, setNativeThreads } from '../../src/backend/index.ts';
import { preferThroughputGc } from '../../src/train/gc.ts';
import { flagOr, numberFlag } from '../flags.ts';
import { benchTransformer } from './common.ts';

const threads = numberFlag('threads', 2, { integer: true, min: 1 });
const rounds = numberFlag('rounds', 5, { integer: true, min: 1 });
const calls = numberFlag('calls', 150, { integer: true, min: 1 });
const child = flagOr('child', '');

interface Variant {
  readonly name: string;
  readonly gc: 'default' | 'throughput';
  readonly intermediates: boolean;
  readonly logits: boolean;
}

const VARIANTS: readonly Variant[] = [
  { name: 'default GC, nothing released', gc: 'default', intermediates: false, logits: false },
  { name: 'default GC, intermediates released', gc: 'default', intermediates: true, logits: false },
  { name: 'default GC, intermediates + logits released', gc: 'default', intermediates: true, logits: true },
  { name: 'throughput GC, nothing released', gc: 'throughput', intermediates: false, logits: false },
  { name: 'throughput GC, intermediates + logits released', gc: 'throughput', intermediates: true, logits: true },
];

interface ChildResult {
  median: number;
  mean: number;
  cpu: number;
  scavenges: number;
  majors: number;
  pauseMs: number;
}

const median = (v: readonly number[]): number => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function runChild(variant: Variant): () => ChildResult {
  if (!nativeInfo()) throw new Error('the native addon is not loaded');
  setBackend('native');
  setNativeThreads(threads);
  if (variant.gc === 'throughput') preferThroughputGc();
  setReleaseIntermediates(variant.intermediates);
  const { model, ids } = benchTransformer();
  const call = (): void => {
    const logits = noGrad(() => model.forwardAll(ids));
    if (variant.logits) releaseTensor(logits);
  };
  for (let i = 0; i < 20; i++) call();
  let scavenges = 0;
  let majors = 0;
  let pauseMs = 0;
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MINOR) scavenges++;
      else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) majors++;
      pauseMs += e.duration;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  const walls: number[] = [];
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) {
    const t = performance.now();
    call();
    walls.push(performance.now() - t);
  }
  const total = performance.now() - t0;
  const c = process.cpuUsage(c0);
  // GC entries are delivered asynchronously: the caller reads the counts after a tick.
  return () => {
    observer.disconnect();
    return { median: median(walls), mean: total / calls, cpu: (c.user + c.system) / 1000 / calls, scavenges, majors, pauseMs };
  };
}

if (child) {
  const variant = VARIANTS.find((v) => v.name === child);
  if (!variant) throw new Error(`unknown variant '${child}'`);
  const result = runChild(variant);
  setTimeout(() => console.log(JSON.stringify(result())), 50);
} else {
  const script = fileURLToPath(import.meta.url);
  const results = new Map<string, ChildResult[]>(VARIANTS.map((v) => [v.name, []]));
  console.log(`float Transformer no-grad forward, native, ${threads} thread(s), ${calls} calls per child, ${rounds} rounds`);
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? [...VARIANTS].reverse() : VARIANTS;
    for (const v of order) {
      const out = execFileSync(process.execPath, ['--import', 'tsx', script, '--threads', String(threads), '--calls', String(calls), '--child', v.name], { encoding: 'utf8' });
      results.get(v.name)!.push(JSON.parse(out.trim().split('\n').at(-1)!) as ChildResult);
    }
    const load = execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ')[0];
    console.log(`round ${r + 1} done (load average ${load})`);
  }
  console.log('\n| variant | wall ms (median call) | wall ms (mean) | CPU ms / call | scavenges / call | mark-compacts / call | GC pause ms / call |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const v of VARIANTS) {
    const rs = results.get(v.name)!;
    const m = (f: (x: ChildResult) => number): number => median(rs.map(f));
    console.log(`| ${v.name} | ${m((x) => x.median).toFixed(2)} | ${m((x) => x.mean).toFixed(2)} | ${m((x) => x.cpu).toFixed(2)} | ${m((x) => x.scavenges / calls).toFixed(2)} | ${m((x) => x.majors / calls).toFixed(2)} | ${m((x) => x.pauseMs / calls).toFixed(2)} |`);
  }
}
