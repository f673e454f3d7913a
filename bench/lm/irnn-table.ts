/**
 * Integer-only runtime for the CLI's LSTM language-model runs: for every lstm-lm run that
 * bench/lm/cli-table.ts trained (run it first), `lowbit export DIR --format irnn --out DIR/model.irnn
 * --verify --samples 2000` and `lowbit eval DIR/model.irnn` (all 21,149 test windows), in-process.
 * Writes bench/results/lm-irnn.json.
 *
 *   nice -n 10 node --import tsx bench/lm/irnn-table.ts [--out-dir /tmp/lowbit-lm] [--only fp32,w4a8]
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { irnnFileFigures, lowbit } from './cli.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { flag } from '../flags.ts';

const outDir = flag('out-dir') ?? '/tmp/lowbit-lm';
const only = flag('only')?.split(',');

const runs = ['fp32', 'w8a8', 'w4a8', 'w4a4', 'w4', 'w4a8-from-fp32'];
const results: Record<string, unknown>[] = [];
for (const run of runs) {
  if (only && !only.includes(run)) continue;
  const dir = join(outDir, `lstm-lm-${run}`);
  if (!existsSync(join(dir, 'checkpoint.safetensors'))) {
    console.log(`skip ${dir}: no checkpoint (run bench/lm/cli-table.ts first)`);
    continue;
  }
  const file = join(dir, 'model.irnn');
  let exportText: string;
  try {
    exportText = await lowbit(['export', dir, '--format', 'irnn', '--out', file, '--verify', '--samples', '2000']);
  } catch (e) {
    console.log(`refused: ${(e as Error).message}`);
    results.push({ run: `lstm-lm ${run}`, refused: (e as Error).message });
    continue;
  }
  const evalText = await lowbit(['eval', file]);
  results.push({ run: `lstm-lm ${run}`, ...irnnFileFigures(exportText, evalText, 'LSTM') });
  console.log(JSON.stringify(results.at(-1)));
}
const path = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'lm-irnn.json');
writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify({ bench: 'lm/irnn-table', date: new Date().toISOString(), seed: 0, rows: results }, null, 2)}\n`));
console.log(`wrote ${path}`);
