/**
 * Integer-only GRU language model (quant.irnn.IntGRU) against the run it was converted from: for
 * each gru-lm run under --run-dir (gru-lm-fp32, gru-lm-w8a8, gru-lm-w4a8; train them with
 * `lowbit train --model gru-lm --quant Q --out DIR/gru-lm-Q --no-progress`), in-process:
 *   lowbit eval DIR                                            (float / fake-quant test perplexity, words/s)
 *   lowbit export DIR --format irnn --out DIR/model.irnn --verify --samples 2000
 *   lowbit eval DIR/model.irnn                                 (integer test perplexity, words/s)
 * Both evals run all 21,149 test windows at batch 256 (the eval default), one after the other. Their
 * throughputs are not measured alike (the run's eval times the forward passes only, the integer eval
 * includes the float64 softmax scoring) and are single passes. So a speed section follows: the
 * forward passes only (logits of every test batch, batches built beforehand, no scoring) of
 *   float GRU       the fp32 run's model (nn.GRU, fused native kernel)       `noGrad(model.forward)`
 *   run             this run's own model (the fake-quant QAT forward; skipped for fp32, the same model)
 *   integer native  IntNextWordModel.logits with the native IntGRU cell (the default)
 *   integer TS cell the same with `run(..., { native: false })` (the TypeScript cell; GEMMs stay native)
 * each warmed by one pass, then `--repeats` (default 3) interleaved rounds of one pass each; the
 * figure is the median over rounds of predicted words per CPU second (process.cpuUsage, user +
 * system: far less sensitive to other jobs than wall time) with the wall-clock rate beside it.
 * Writes bench/results/irnn-gru-lm.json.
 *
 *   nice -n 10 node --import tsx bench/irnn/gru-lm.ts [--run-dir /tmp/gru-int] [--only fp32,w4a8] [--repeats 3] [--threads 1]
 */
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { evalFigures, irnnFileFigures, lowbit } from '../lm/cli.ts';
import { noGrad } from '../../src/autograd/index.ts';
import { nativeInfo, setNativeThreads } from '../../src/backend/index.ts';
import { IntNextWordModel, loadIntNextWord } from '../../src/cli/lm-irnn.ts';
import { lmTestBatches, readLmCheckpoint } from '../../src/cli/lm-run.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { IntGRU } from '../../src/quant/irnn/index.ts';
import type { Tensor } from '../../src/tensor/index.ts';
import { flag, numberFlag } from '../flags.ts';

const runDir = flag('run-dir') ?? '/tmp/gru-int';
const only = flag('only')?.split(',');
const repeats = numberFlag('repeats', 3, { integer: true, min: 1 });
const threads = numberFlag('threads', 1, { integer: true, min: 1 });
if (!nativeInfo()) throw new Error('gru-lm: the native addon is not loaded');
setNativeThreads(threads);
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;

/** An IntGRU whose `run` takes the TypeScript cell. */
class TypeScriptCellGRU extends IntGRU {
  override run(x: Int8Array, steps: number, batch: number, initial?: Int8Array): { output: Int8Array; state: { h: Int8Array } } {
    return super.run(x, steps, batch, initial, { native: false });
  }
}

/** One pass over `batches` of `fn`: predicted words per CPU second and per wall second. */
function pass(batches: { x: Tensor; n: number }[], fn: (x: Tensor, n: number) => void): { cpu: number; wall: number } {
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  let words = 0;
  for (const { x, n } of batches) {
    fn(x, n);
    words += n;
  }
  const u = process.cpuUsage(cpu0);
  return { cpu: words / ((u.user + u.system) / 1e6), wall: words / ((performance.now() - wall0) / 1000) };
}

const floatRun = join(runDir, 'gru-lm-fp32', 'checkpoint.safetensors');
const floatModel = existsSync(floatRun) ? readLmCheckpoint(floatRun, 'bench')!.model : null;

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

  // Speed: forward passes only, interleaved.
  const checkpoint = readLmCheckpoint(join(dir, 'checkpoint.safetensors'), 'bench')!;
  const batches = [...lmTestBatches(checkpoint, 256).batches].map(({ x, y }) => ({ x, n: y.size }));
  const integer = loadIntNextWord(file);
  if (!(integer.rnn instanceof IntGRU)) throw new Error(`${file}: not a GRU file`);
  const tsCell = new IntNextWordModel(new TypeScriptCellGRU(integer.rnn.params), integer.table, integer.headWeight, integer.headScale, integer.headBias, integer.meta);
  const variants: [string, (x: Tensor, n: number) => void][] = [];
  if (floatModel) variants.push(['float GRU (fp32 run, nn.GRU)', (x) => noGrad(() => floatModel.forward(x))]);
  if (quant !== 'fp32') variants.push([`run (${quant} fake-quant QAT forward)`, (x) => noGrad(() => checkpoint.model.forward(x))]);
  variants.push(['integer, native cell', (x, n) => integer.logits(x.data, n)], ['integer, TypeScript cell', (x, n) => tsCell.logits(x.data, n)]);
  const cpu = variants.map(() => [] as number[]);
  const wall = variants.map(() => [] as number[]);
  for (let r = 0; r <= repeats; r++) {
    console.log(`${dir}: forward passes, ${r === 0 ? 'warm-up' : `round ${r}/${repeats}`}`);
    variants.forEach(([, fn], i) => {
      const m = pass(batches, fn);
      if (r === 0) return;
      cpu[i]!.push(m.cpu);
      wall[i]!.push(m.wall);
    });
  }
  const speed = variants.map(([name], i) => ({ variant: name, wordsPerCpuSecond: Math.round(median(cpu[i]!)), wordsPerWallSecond: Math.round(median(wall[i]!)) }));
  for (const s of speed) console.log(`  ${s.variant}: ${s.wordsPerCpuSecond} words / CPU s, ${s.wordsPerWallSecond} words / wall s`);
  rows.push({
    run: `gru-lm ${quant}`,
    testPerplexity: run.testPerplexity,
    testAccuracy: run.testAccuracy,
    wordsPerSecond: run.predictedWordsPerSecond,
    ...figures,
    integerModelBytes: modelBytes,
    integerCell: integer.rnn.cellBackend,
    forwardSpeed: speed,
  });
  console.log(JSON.stringify(rows.at(-1)));
}
const path = join(dirname(fileURLToPath(import.meta.url)), '..', 'results', 'irnn-gru-lm.json');
const record = { bench: 'irnn/gru-lm', date: new Date().toISOString(), seed: 0, runDir, threads, repeats, isa: nativeInfo()!.isa, loadAverage: loadavg()[0], rows };
writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`));
console.log(`wrote ${path}`);
