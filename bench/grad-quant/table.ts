/**
 * Prints the results of bench/grad-quant/run.ts (bench/results/grad-quant-<scheme>-seed<seed>.json)
 * as a markdown table: one line per scheme and row id, one accuracy column per seed found (with the
 * difference to the float-gradient run of the same seed) and the command of the seed-0 run. The
 * seconds of each run are in the JSON; on the shared machine they measure its load, not the method.
 *
 *   node --import tsx bench/grad-quant/table.ts
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Run {
  readonly scheme: string;
  readonly seed: number;
  readonly testAccuracy: number | null;
}

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = join(root, 'bench', 'results');
const files = existsSync(dir) ? readdirSync(dir).filter((f) => /^grad-quant-.*\.json$/.test(f)).sort() : [];
const runs = new Map<string, Run>();
for (const file of files) {
  const parsed = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { runs?: Record<string, Run> };
  for (const [key, run] of Object.entries(parsed.runs ?? {})) runs.set(key, run);
}
const seeds = [...new Set([...runs.values()].map((r) => r.seed))].sort((a, b) => a - b);
const ids = ['float', 'a8', 'a6', 'a4', 'a8g8', 'a6g6', 'a4g4', 'a4-sample', 'a4-symmetric'];
const percent = (x: number): string => `${(x * 100).toFixed(2)} %`;
console.log(`| scheme | row | ${seeds.map((s) => `seed ${s} (Δ vs float)`).join(' | ')} | command (seed 0; other seeds: --seed N) |`);
console.log(`| --- | --- | ${seeds.map(() => '---').join(' | ')} | --- |`);
for (const scheme of ['w4a4', 'w1a8']) {
  for (const id of ids) {
    const cells = seeds.map((seed) => {
      const run = runs.get(`${scheme}-${id}-seed${seed}`);
      const float = runs.get(`${scheme}-float-seed${seed}`);
      if (!run || run.testAccuracy === null) return '—';
      if (id === 'float' || !float || float.testAccuracy === null) return percent(run.testAccuracy);
      const delta = (run.testAccuracy - float.testAccuracy) * 100;
      return `${percent(run.testAccuracy)} (${delta >= 0 ? '+' : ''}${delta.toFixed(2)})`;
    });
    if (cells.every((c) => c === '—')) continue;
    const command = `\`nice -n 10 node --import tsx bench/grad-quant/run.ts --scheme ${scheme} --epochs 5 --seed 0 --only ${id}\``;
    console.log(`| ${scheme} | ${id} | ${cells.join(' | ')} | ${command} |`);
  }
}
