/**
 * Test perplexity of transformer-lm runs at each context length: over the test windows (the same
 * ones `lowbit eval` scores at the last position), position t of a window predicts the word after
 * it from t + 1 words of context (forwardAll; target = the window shifted by one). A `last` run was
 * trained at position C − 1 only; an `all` run at every position. What a short prompt sees in
 * `lowbit generate`. Writes bench/results/transformer-seq-context.json.
 *
 *   nice -n 10 node --import tsx bench/transformer-seq/context-length.ts RUN_DIR...
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { noGrad } from '../../src/autograd/engine.ts';
import { readLmCheckpoint, lmTestBatches } from '../../src/cli/lm-run.ts';
import { TransformerLM } from '../../src/nn/index.ts';
import { shiftedTargets } from '../../src/train/index.ts';

const runs = process.argv.slice(2);
if (runs.length === 0) throw new Error('give one or more transformer-lm run directories');
const rows: Record<string, unknown>[] = [];
for (const dir of runs) {
  const run = readLmCheckpoint(join(dir, 'checkpoint.safetensors'), 'bench');
  if (!run || !(run.model instanceof TransformerLM)) throw new Error(`${dir}: not a transformer-lm run`);
  const model = run.model;
  const c = run.settings.seqLen;
  const v = run.settings.vocabSize;
  const nll = new Float64Array(c);
  let windows = 0;
  for (const { x, y } of lmTestBatches(run, 256).batches) {
    const logits = noGrad(() => model.forwardAll(x)).data; // [N, C, V]
    const targets = shiftedTargets(x, y).data;
    const n = x.shape[0]!;
    for (let row = 0; row < n * c; row++) {
      let max = -Infinity;
      for (let k = 0; k < v; k++) max = Math.max(max, logits[row * v + k]!);
      let sum = 0;
      for (let k = 0; k < v; k++) sum += Math.exp(logits[row * v + k]! - max);
      nll[row % c] += max + Math.log(sum) - logits[row * v + targets[row]!]!;
    }
    windows += n;
  }
  const perplexity = Array.from(nll, (s) => Math.exp(s / windows));
  const config = run.config as Record<string, unknown>;
  const row = { run: dir, quant: run.settings.quant, objective: config['objective'] ?? 'last', windowStride: config['windowStride'] ?? 1, epochs: config['epochs'], windows, perplexityByContext: perplexity };
  console.log(`${dir}: ${perplexity.map((p, t) => `${t + 1}w ${p.toFixed(1)}`).join('  ')}`);
  rows.push(row);
}
const out = join('bench', 'results', 'transformer-seq-context.json');
writeFileSync(out, `${JSON.stringify({ command: `node --import tsx bench/transformer-seq/context-length.ts ${runs.join(' ')}`, date: new Date().toISOString(), rows }, null, 2)}\n`);
console.log(`wrote ${out}`);
