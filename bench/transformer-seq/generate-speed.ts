/**
 * Generation speed of nn.generate with and without the KV cache (100 new words after a 3-word
 * prompt, greedy so both paths emit the same ids), on
 *  - a CLI-sized transformer-lm (width 80, MLP 320, 2 blocks, 4 heads, 2000 words) with a 128-position
 *    table, untrained (speed does not depend on the weights): the whole text fits the cache;
 *  - optionally a trained run (--run DIR): its --seq-len window (8 by default), past which the
 *    cache is rebuilt every step, so it saves work only for the first words.
 * Each case runs `--reps` times alternating cache / no cache; the median tokens/s is reported.
 * Writes bench/results/transformer-seq-generate.json.
 *
 *   nice -n 10 node --import tsx bench/transformer-seq/generate-speed.ts [--run /tmp/lowbit-tseq/fp32-all-e3] [--reps 5] [--tokens 100]
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generate, TransformerLM } from '../../src/nn/index.ts';
import { Rng } from '../../src/tensor/index.ts';
import { backendDetails } from '../../src/cli/backend-info.ts';
import { readLmCheckpoint } from '../../src/cli/lm-run.ts';

const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const reps = Number(flag('reps') ?? 5);
const tokens = Number(flag('tokens') ?? 100);
const runDir = flag('run');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function measure(name: string, model: TransformerLM, prompt: number[], context: number): Record<string, unknown> {
  generate(model, prompt, { tokens: 5, temperature: 0, context }); // warm-up (JIT, kernels)
  const rates: Record<'cache' | 'noCache', number[]> = { cache: [], noCache: [] };
  let same = true;
  let reference: number[] | null = null;
  for (let r = 0; r < reps; r++) {
    for (const mode of ['cache', 'noCache'] as const) {
      const start = performance.now();
      const ids = generate(model, prompt, { tokens, temperature: 0, context, cache: mode === 'cache' });
      const seconds = (performance.now() - start) / 1000;
      rates[mode].push(tokens / seconds);
      reference ??= ids;
      same &&= ids.every((id, i) => id === reference![i]);
    }
  }
  const row = {
    case: name, context, promptWords: prompt.length, tokens, reps,
    cacheTokensPerSecond: median(rates.cache), noCacheTokensPerSecond: median(rates.noCache),
    speedup: median(rates.cache) / median(rates.noCache), sameIds: same, all: rates,
  };
  console.log(`${name}: context ${context}, ${tokens} tokens: KV cache ${row.cacheTokensPerSecond.toFixed(1)} tokens/s, no cache ${row.noCacheTokensPerSecond.toFixed(1)} tokens/s (x${row.speedup.toFixed(2)}), same ids: ${same}`);
  return row;
}

const rows: Record<string, unknown>[] = [];
const wide = new TransformerLM({ vocabSize: 2000, maxContext: 128, embedDim: 80, mlpDim: 320, numLayers: 2, numHeads: 4, activation: 'gelu-tanh', rng: new Rng(0) });
rows.push(measure('CLI-sized transformer-lm, untrained, 128-position table', wide, [5, 17, 301], 128));
if (runDir) {
  const run = readLmCheckpoint(join(runDir, 'checkpoint.safetensors'), 'bench');
  if (!run || !(run.model instanceof TransformerLM)) throw new Error(`${runDir}: not a transformer-lm run`);
  const prompt = ['call', 'me', 'ishmael'].map((w) => run.corpus.vocab.id(w));
  rows.push(measure(`trained run ${runDir} (${run.settings.quant})`, run.model, prompt, run.settings.seqLen));
}
const out = join('bench', 'results', 'transformer-seq-generate.json');
writeFileSync(out, `${JSON.stringify({ command: `node --import tsx bench/transformer-seq/generate-speed.ts${runDir ? ` --run ${runDir}` : ''} --reps ${reps} --tokens ${tokens}`, backend: backendDetails(), date: new Date().toISOString(), rows }, null, 2)}\n`);
console.log(`wrote ${out}`);
