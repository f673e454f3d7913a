/**
 * Integer-only GRU language model (quant.irnn.IntGRU) against the run it was converted from: for
 * each gru-lm run under --run-dir (gru-lm-fp32, gru-lm-w8a8, gru-lm-w4a8; train them with
 * `lowbit train --model gru-lm --quant Q --out DIR/gru-lm-Q --no-progress`), in-process:
 *   lowbit eval DIR                                            (float / fake-quant test perplexity, words/s)
 *   lowbit export DIR --format irnn --out DIR/model.irnn --verify --samples 2000
 *   lowbit eval DIR/model.irnn                                 (integer test perplexity, words/s)
 * Both evals run all 21,149 test windows at batch 256 (the eval default), one after the other.
 * Writes bench/results/irnn-gru-lm.json.
 *
 *   nice -n 10 node --import tsx bench/irnn/gru-lm.ts [--run-dir /tmp/gru-int] [--only fp32,w4a8]
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { evalFigures, irnnFileFigures, lowbit } from '../lm/cli.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { flag } from '../flags.ts';

const runDir = flag('run-dir') ?? '/tmp/gru-int';
const only = flag('only')?.split(',');
const rows: Record<string, unknown>[] = [];
for (const quant of ['fp32', 'w8a8', 'w4a8']) {
  if (only && !only.includes(quant)) continue;
  const dir = join(runDir, `gru-lm-${quant}`);
  if (!existsSync(join(dir, 'checkpoint.safetensors'))) {
    console.log(`skip ${dir}: no checkpoint`);
    continue;
  }
  console.log(`${dir}: lowbit eval (the run's own model)`);
  const run = await evalFigures(dir);
  const file = join(dir, 'model.irnn');
  console.log(`${dir}: lowbit export --format irnn --verify --samples 2000`);
  const exportText = await lowbit(['export', dir, '--format', 'irnn', '--out', file, '--verify', '--samples', '2000']);
  console.log(`${file}: lowbit eval`);
  const evalText = await lowbit(['eval', file]);
  const { modelBytes, ...figures } = irnnFileFigures(exportText, evalText, 'GRU');
  rows.push({
    run: `gru-lm ${quant}`,
    testPerplexity: run.testPerplexity,
    testAccuracy: run.testAccuracy,
    wordsPerSecond: run.predictedWordsPerSecond,
    ...figures,
    integerModelBytes: modelBytes,
  });
  console.log(JSON.stringify(rows.at(-1)));
}
const path = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'irnn-gru-lm.json');
writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify({ bench: 'irnn/gru-lm', date: new Date().toISOString(), seed: 0, runDir, rows }, null, 2)}\n`));
console.log(`wrote ${path}`);
