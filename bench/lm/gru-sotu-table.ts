/**
 * The docs/lm.md rows of the QAT GRU and of the State of the Union corpus: each run trained,
 * evaluated and exported (with --verify) through `lowbit` itself (in-process), one seed (0), on a
 * machine shared with other jobs.
 *
 *   nice -n 10 node --import tsx bench/lm/gru-sotu-table.ts [--out-dir /tmp/lowbit-lm] [--only 'gru-lm w4a8,...']
 *
 * Rows: gru-lm fp32, w8a8 and w4a8 on Moby Dick (CLI defaults otherwise: LSQ QAT from scratch,
 * 3 epochs); lstm-lm fp32 on sotu (3 epochs) and lstm-lm w4a8 on sotu for one epoch (the default
 * scheme; 3 epochs of 1.69 M windows through the step-by-step QAT LSTM did not fit the session).
 * A row whose run directory already holds a metrics.json is not trained again. Several
 * processes may run different --only rows: each merges its rows into
 * bench/results/lm-gru-sotu.json by name.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { evalFigures, exportFigures, lowbit } from './cli.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { flag } from '../flags.ts';

const outDir = flag('out-dir') ?? '/tmp/lowbit-lm';
const only = flag('only')?.split(',');

const rows: [string, string[]][] = [
  ['gru-lm fp32', ['--model', 'gru-lm', '--quant', 'fp32']],
  ['gru-lm w8a8', ['--model', 'gru-lm', '--quant', 'w8a8']],
  ['gru-lm w4a8', ['--model', 'gru-lm', '--quant', 'w4a8']],
  ['lstm-lm fp32 sotu', ['--model', 'lstm-lm', '--dataset', 'sotu', '--quant', 'fp32']],
  ['lstm-lm w4a8 sotu 1 epoch', ['--model', 'lstm-lm', '--dataset', 'sotu', '--epochs', '1']],
];

const path = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'lm-gru-sotu.json');
for (const [name, args] of rows) {
  if (only && !only.includes(name)) continue;
  const run = join(outDir, name.replaceAll(' ', '-'));
  const trainArgs = ['train', ...args, '--out', run, '--no-progress'];
  let trainSeconds: number | null = null;
  if (existsSync(join(run, 'metrics.json'))) {
    console.log(`${run}: trained already, not training again`);
  } else {
    const t0 = performance.now();
    await lowbit(trainArgs);
    trainSeconds = (performance.now() - t0) / 1000;
  }
  const metrics = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as { validPerplexity: number; parameters: number; totalSeconds: number; testSamples: number };
  const evaluated = await evalFigures(run);
  const exported = await exportFigures(run);
  const row = {
    name,
    command: `lowbit ${trainArgs.join(' ')}`,
    parameters: metrics.parameters,
    trainSeconds: trainSeconds ?? metrics.totalSeconds,
    validPerplexity: metrics.validPerplexity,
    testWindows: metrics.testSamples,
    ...evaluated,
    ...exported.figures,
  };
  console.log(JSON.stringify(row));
  const previous = existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as { rows: { name: string }[] }).rows : [];
  const merged = [...previous.filter((r) => r.name !== name), row].sort((a, b) => rows.findIndex(([n]) => n === a.name) - rows.findIndex(([n]) => n === b.name));
  writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify({ bench: 'lm/gru-sotu-table', date: new Date().toISOString(), seed: 0, rows: merged }, null, 2)}\n`));
  console.log(`wrote ${path}`);
}
