/**
 * Every-position ('all') against last-position ('last') training of the CLI transformer-lm, one
 * seed (0) per row, CLI defaults otherwise (Moby Dick, 8-word context, 2000 words, 3 epochs,
 * batch 128, Adam 5e-3 cosine, --quant-lr-scale 0.01 for QAT): per row `lowbit train --model
 * transformer-lm --quant Q --objective O --out DIR --no-progress` then `lowbit eval DIR` (test
 * perplexity over the last position of every test window, as before). Writes
 * bench/results/transformer-seq-objective.json.
 *
 *   nice -n 10 node --import tsx bench/transformer-seq/objective.ts [--only fp32-all,fp32-last,w4a8-all] [--epochs 3] [--out-dir /tmp/lowbit-tseq] [--result transformer-seq-objective]
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { evalFigures, lowbit } from '../lm/cli.ts';

const ROWS = ['fp32-all', 'fp32-last', 'w4a8-all', 'w4a8-last', 'fp32-all-s8', 'w4a8-all-s8'] as const;
const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const only = flag('only')?.split(',') ?? ['fp32-all', 'fp32-last', 'w4a8-all'];
for (const name of only) if (!(ROWS as readonly string[]).includes(name)) throw new Error(`--only: unknown row ${name} (known: ${ROWS.join(', ')})`);
const epochs = flag('epochs') ?? '3';
const outDir = flag('out-dir') ?? '/tmp/lowbit-tseq';
mkdirSync(outDir, { recursive: true });

const resultPath = join('bench', 'results', `${flag('result') ?? 'transformer-seq-objective'}.json`);
const rows: Record<string, unknown>[] = [];
for (const name of only) {
  // '-s8': every 8th training window (non-overlapping 8-word windows, --window-stride 8).
  const [quant, objective, strided] = name.split('-') as [string, string, string | undefined];
  const stride = strided === undefined ? [] : ['--window-stride', strided.slice(1)];
  const run = join(outDir, `${name}-e${epochs}`);
  await lowbit(['train', '--model', 'transformer-lm', '--quant', quant, '--objective', objective, '--epochs', epochs, ...stride, '--out', run, '--no-progress', '--baseline', 'none']);
  const metrics = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as { totalSeconds: number; validPerplexity: number; parameters: number; history: { epochs: { seconds: number; samplesPerSecond: number }[] } };
  const test = await evalFigures(run);
  const row = {
    row: name, quant, objective, windowStride: strided === undefined ? 1 : Number(strided.slice(1)), epochs: Number(epochs), seed: 0, parameters: metrics.parameters,
    trainSeconds: metrics.totalSeconds, trainPassSeconds: metrics.history.epochs.map((e) => e.seconds),
    validPerplexity: metrics.validPerplexity, ...test,
  };
  console.log(JSON.stringify(row));
  rows.push(row);
  writeFileSync(resultPath, `${JSON.stringify({ command: `node --import tsx bench/transformer-seq/objective.ts ${argv.join(' ')}`, date: new Date().toISOString(), rows }, null, 2)}\n`);
}
console.log(`wrote ${resultPath}`);
