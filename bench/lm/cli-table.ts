/**
 * The docs/lm.md table: the CLI's default language-model runs, fp32 vs quantized, each trained,
 * evaluated and exported (with --verify) through `lowbit` itself (src/cli/main.ts, in-process).
 * One seed (0), on a machine shared with other jobs.
 *
 *   nice -n 10 node --import tsx bench/lm/cli-table.ts [--out-dir /tmp/lowbit-lm] [--only fp32,w4a8]
 *
 * Rows: lstm-lm fp32; lstm-lm w8a8, w4a8 (the default), w4a4, w4, each LSQ QAT from scratch with the
 * default recipe; lstm-lm w4a8 fine-tuned for one epoch from the fp32 run (--init, lr 1e-3);
 * gru-lm fp32. Per row: validation perplexity (metrics.json), test perplexity (lowbit eval), ONNX
 * bytes and onnxruntime-node agreement on 2000 test windows (lowbit export --verify).
 * Writes bench/results/lm-cli.json.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { evalFigures, exportFigures, lowbit } from './cli.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { flag } from '../flags.ts';

const outDir = flag('out-dir') ?? '/tmp/lowbit-lm';
const only = flag('only')?.split(',');

const rows: [string, string[]][] = [
  ['lstm-lm fp32', ['--model', 'lstm-lm', '--quant', 'fp32']],
  ['lstm-lm w8a8', ['--model', 'lstm-lm', '--quant', 'w8a8']],
  ['lstm-lm w4a8', ['--model', 'lstm-lm']],
  ['lstm-lm w4a4', ['--model', 'lstm-lm', '--quant', 'w4a4']],
  ['lstm-lm w4', ['--model', 'lstm-lm', '--quant', 'w4']],
  ['lstm-lm w4a8 from fp32', ['--model', 'lstm-lm', '--quant', 'w4a8', '--init', join(outDir, 'lstm-lm-fp32'), '--epochs', '1', '--lr', '1e-3']],
  ['gru-lm fp32', ['--model', 'gru-lm']],
];

const results: Record<string, unknown>[] = [];
for (const [name, args] of rows) {
  if (only && !only.some((o) => name === `lstm-lm ${o}` || name === o)) continue;
  const run = join(outDir, name.replaceAll(' ', '-'));
  const trainArgs = ['train', ...args, '--out', run, '--no-progress'];
  const t0 = performance.now();
  await lowbit(trainArgs);
  const trainSeconds = (performance.now() - t0) / 1000;
  const metrics = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as { validPerplexity: number; parameters: number; history: { epochs: { seconds: number }[] } };
  const evaluated = await evalFigures(run);
  const exported = await exportFigures(run);
  results.push({
    name,
    command: `lowbit ${trainArgs.join(' ')}`,
    parameters: metrics.parameters,
    trainSeconds,
    validPerplexity: metrics.validPerplexity,
    ...evaluated,
    ...exported.figures,
  });
  console.log(JSON.stringify(results.at(-1)));
}
const path = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'lm-cli.json');
writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify({ bench: 'lm/cli-table', date: new Date().toISOString(), seed: 0, rows: results }, null, 2)}\n`));
console.log(`wrote ${path}`);
