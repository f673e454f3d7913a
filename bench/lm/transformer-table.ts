/**
 * The transformer-lm rows of docs/lm.md: `lowbit train --model transformer-lm` at fp32, W8A8 and
 * W4A8 (LSQ QAT from scratch, the CLI defaults otherwise; with --only also W4A4 and W8A8 / W4A8 with
 * --quant-lr-scale 0.01), each evaluated with `lowbit eval` and,
 * with --export, exported to ONNX and checked in onnxruntime-node (`lowbit export --verify`).
 * Runs the CLI in-process (bench/lm/cli.ts). One seed (0), on a machine shared with other jobs.
 *
 *   nice -n 10 node --import tsx bench/lm/transformer-table.ts [--out-dir /tmp/lowbit-tlm] [--only fp32,w4a8] [--reuse] [--export]
 *
 * --reuse skips the training of a row whose run directory already has a metrics.json.
 * Writes bench/results/lm-transformer.json after every row.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { evalFigures, exportFigures, lowbit, number } from './cli.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { flag } from '../flags.ts';

const outDir = flag('out-dir') ?? '/tmp/lowbit-tlm';
const only = flag('only')?.split(',');
const reuse = process.argv.includes('--reuse');
const exportToo = process.argv.includes('--export');

const rows: [string, string[]][] = [
  ['fp32', ['--quant', 'fp32']],
  // The LSQ steps at 0.1x the learning rate (the transformer-lm default when the table was made).
  ['w8a8', ['--quant', 'w8a8', '--quant-lr-scale', '0.1']],
  ['w4a8', ['--quant', 'w4a8', '--quant-lr-scale', '0.1']],
  ['w4a4', ['--quant', 'w4a4', '--quant-lr-scale', '0.1']],
  // At 0.01x, the transformer-lm default since (TRANSFORMER_LM_QUANT_LR_SCALE).
  ['w8a8-qlr0.01', ['--quant', 'w8a8', '--quant-lr-scale', '0.01']],
  ['w4a8-qlr0.01', ['--quant', 'w4a8', '--quant-lr-scale', '0.01']],
];

const resultsPath = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'lm-transformer.json');
const results: Record<string, unknown>[] = [];
for (const [name, args] of rows) {
  if (only ? !only.includes(name) : !['fp32', 'w8a8', 'w4a8'].includes(name)) continue;
  const run = join(outDir, `transformer-lm-${name}`);
  // --objective last: the objective of these rows (transformer-lm's default became 'all' with 5 epochs
  // over non-overlapping windows in session 16; bench/transformer-seq/objective.ts has those rows).
  const trainArgs = ['train', '--model', 'transformer-lm', '--objective', 'last', ...args, '--out', run, '--no-progress'];
  let trainSeconds: number | null = null;
  if (!(reuse && existsSync(join(run, 'metrics.json')))) {
    const t0 = performance.now();
    await lowbit(trainArgs);
    trainSeconds = (performance.now() - t0) / 1000;
  }
  const metrics = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as { validPerplexity: number; parameters: number; totalSeconds: number; history: { epochs: { seconds: number }[] } };
  const evaluated = await evalFigures(run);
  const row: Record<string, unknown> = {
    name: `transformer-lm ${name}`,
    command: `lowbit ${trainArgs.join(' ')}`,
    parameters: metrics.parameters,
    trainSeconds: trainSeconds ?? metrics.totalSeconds,
    epochSeconds: metrics.history.epochs.map((e) => e.seconds),
    validPerplexity: metrics.validPerplexity,
    ...evaluated,
  };
  if (exportToo) {
    const { text, figures } = await exportFigures(run);
    Object.assign(row, { ...figures, maxLogitDiff: number(text, /max \|diff\| ([\d.e+-]+)/, 'logit difference') });
  }
  results.push(row);
  console.log(JSON.stringify(row));
  writeFileAtomic(resultsPath, new TextEncoder().encode(`${JSON.stringify({ bench: 'lm/transformer-table', date: new Date().toISOString(), seed: 0, rows: results }, null, 2)}\n`));
}
console.log(`wrote ${resultsPath}`);
