/**
 * Merges bench/mqbench/run.ts results of several seeds into one table: per cell the mean accuracy
 * over the seeds and the spread (max − min), the best algorithm per backend, and each backend's
 * gap to the academic setting.
 *
 *   node --import tsx bench/mqbench/summary.ts --inputs bench/results/mqbench-lenet5.json,bench/results/mqbench-lenet5-seed1.json
 *     [--out docs/results/mqbench-lenet5-summary.md]
 *
 * The accuracy of a cell is the deployed (IntModel) one where the integer runtime runs the scheme,
 * else the simulated one (marked *).
 */
import { readFileSync } from 'node:fs';
import { flag, flagOr } from '../flags.ts';
import { writeAtomic } from '../lib.ts';
import type { MqbenchResult } from '../../src/quant/mqbench/index.ts';

interface RunFile {
  readonly model: string;
  readonly dataset: string;
  readonly recipe: { readonly seed: number };
  readonly trainSamples: number;
  readonly testSamples: number;
  readonly results: readonly MqbenchResult[];
}

const inputs = (flag('inputs') ?? '').split(',').filter((s) => s !== '');
if (inputs.length === 0) throw new Error('--inputs a.json,b.json is required');
const runs: RunFile[] = inputs.map((p) => {
  const parsed = JSON.parse(readFileSync(p, 'utf8')) as RunFile;
  if (!Array.isArray(parsed.results)) throw new Error(`${p}: no results array`);
  return parsed;
});
const out = flagOr('out', `docs/results/mqbench-${runs[0]!.model}-summary.md`);

const key = (r: MqbenchResult): string => `${r.bits}|${r.backend}|${r.algorithm}`;
const cells = new Map<string, { values: number[]; simulatedOnly: boolean; status: string }>();
for (const run of runs) {
  for (const r of run.results) {
    const c = cells.get(key(r)) ?? { values: [], simulatedOnly: false, status: r.status };
    if (r.status === 'ok') {
      const deployed = r.deployedAccuracy;
      c.values.push(deployed === null || deployed === undefined ? r.simulatedAccuracy! : deployed);
      c.simulatedOnly = deployed === null || deployed === undefined;
    }
    c.status = r.status;
    cells.set(key(r), c);
  }
}
const first = runs[0]!;
const bitsList = [...new Set(first.results.map((r) => r.bits))];
const backends = [...new Set(first.results.map((r) => r.backend))];
const algorithms = [...new Set(first.results.map((r) => r.algorithm))];
const mean = (v: readonly number[]): number => v.reduce((a, b) => a + b, 0) / v.length;

const lines: string[] = [];
lines.push(`# MQBench-style summary: ${first.model} on ${first.dataset}`, '');
lines.push(`Seeds ${runs.map((r) => r.recipe.seed).join(', ')} (${inputs.join(', ')}); ${first.trainSamples} training / ${first.testSamples} test images.`);
lines.push('Cells: mean test accuracy % over the seeds (spread max − min in points); deployed IntModel accuracy, or simulated where the runtime cannot run the scheme (*).', '');
for (const bits of bitsList) {
  lines.push(`## W${bits}A${bits}`, '');
  lines.push(`| algorithm | ${backends.join(' | ')} |`, `| --- | ${backends.map(() => '---').join(' | ')} |`);
  for (const a of algorithms) {
    const row = backends.map((b) => {
      const c = cells.get(`${bits}|${b}|${a}`);
      if (!c || c.values.length === 0) return c?.status === 'unsupported' ? 'n/a' : c?.status ?? '';
      const spread = Math.max(...c.values) - Math.min(...c.values);
      return `${(mean(c.values) * 100).toFixed(2)}${c.simulatedOnly ? '*' : ''} (${(spread * 100).toFixed(2)})`;
    });
    lines.push(`| ${a} | ${row.join(' | ')} |`);
  }
  const best = backends.map((b) => {
    let top: [string, number] | null = null;
    for (const a of algorithms) {
      const c = cells.get(`${bits}|${b}|${a}`);
      if (c && c.values.length > 0 && (!top || mean(c.values) > top[1])) top = [a, mean(c.values)];
    }
    return top;
  });
  lines.push(`| best | ${best.map((t) => (t ? `${t[0]} ${(t[1] * 100).toFixed(2)}` : '')).join(' | ')} |`);
  const academic = best[backends.indexOf('academic')];
  if (academic) lines.push(`| best − best academic (pt) | ${best.map((t) => (t ? ((t[1] - academic[1]) * 100).toFixed(2) : '')).join(' | ')} |`);
  lines.push('');
}
writeAtomic(out, `${lines.join('\n')}\n`);
process.stdout.write(`${lines.join('\n')}\n`);
