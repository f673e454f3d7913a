/**
 * `lowbit search --model <language-model run>`: per-layer weight widths of a float32
 * transformer-lm / lstm-lm / gru-lm run (quant.search.describeLmLayers), each candidate scored by
 * post-training quantization as validation perplexity (quant.search.lmPtqEvaluator), searched by
 * exact allocation (ilp) or NSGA-II; writes plan.json, front.json and report.html like an image search.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { contextIdBatches, DataLoader, select, take } from '../data/index.ts';
import { checkDirCreatable } from '../format/files.ts';
import { costDisplay, type Budget } from '../quant/search/budget.ts';
import { costModel } from '../quant/search/costs.ts';
import { describeLmLayers, exactErrorSearch, lmPtqEvaluator, lmScore, nsga2ErrorSearch, type SearchableLm } from '../quant/search/lm.ts';
import { writeSearchOutputs, type SearchOutcome } from '../quant/search/outcome.ts';
import { formatSi } from '../quant/search/report.ts';
import { NoAllocationFitsError } from '../quant/search/allocate.ts';
import { ProgressBar } from '../train/progress.ts';
import { UsageError } from './args.ts';
import { searchStop } from './search-stop.ts';
import type { CommandIO } from './command.ts';
import { lmModel, readLmCheckpoint, type LmCheckpoint } from './lm-run.ts';

/** The LM run at `path` (a run directory or its checkpoint), or null when it is not a language-model run. */
export function languageModelRun(path: string | undefined): LmCheckpoint | null {
  if (path === undefined || !existsSync(path)) return null;
  const checkpoint = statSync(path).isDirectory() ? join(path, 'checkpoint.safetensors') : path;
  if (!existsSync(checkpoint)) return null;
  return readLmCheckpoint(checkpoint, 'search', { unreadable: 'null' });
}

/** The options of `lowbit search` a language-model search reads. */
export interface LmSearchOptions {
  readonly method: string;
  readonly wBits: number[];
  readonly aBits: number[];
  readonly budgets: Budget[];
  readonly extra: string[];
  readonly calib: number;
  readonly searchSamples?: number;
  readonly testLimit?: number;
  readonly generations: number;
  readonly population: number;
  readonly seed: number;
  readonly out?: string;
  readonly maxTime?: number;
  readonly progress: boolean;
  readonly budgetTag: string;
  /** Options given that a language-model search does not take (refused). */
  readonly imageOnly: string[];
}

/** Default validation windows candidates are scored on. */
const DEFAULT_LM_SEARCH_SAMPLES = 2000;

/** Runs the search (see the module comment); returns the exit code. */
export async function searchLanguageModel(run: LmCheckpoint, options: LmSearchOptions, io: CommandIO): Promise<number> {
  const usage = (message: string): never => {
    throw new UsageError(message, 'search');
  };
  if (options.method !== 'ilp' && options.method !== 'nsga2') {
    usage(`--method ${options.method} needs image data (it trains a supernet or QAT model on images); a language model is searched with --method ilp or nsga2`);
  }
  if (options.imageOnly.length > 0) usage(`${options.imageOnly.join(', ')} ${options.imageOnly.length === 1 ? 'applies' : 'apply'} to image models; a language-model search takes --budget, --method ilp|nsga2, --wbits, --abits, --calib, --search-samples, --test-limit, --generations, --population, --out, --seed, --max-time`);
  const s = run.settings;
  if (s.quant !== 'fp32') usage(`--model: '${run.checkpoint}' was trained with --quant ${s.quant}; the search starts from a float32 run (lowbit train --model ${s.model} --quant fp32)`);
  if (options.aBits.length > 1) usage(`--abits: a language-model search keeps one activation width (got ${options.aBits.join(',')})`);
  if (options.budgets.length > 1) usage('several budgets work with image models only; give one --budget');
  if (options.wBits.some((w) => w < 2)) usage('--wbits: language-model weights take 2 to 16 bits');
  for (const name of [options.budgets[0]!.cost, ...options.extra]) {
    if (name === 'latency') usage('--budget/--objectives latency measures image layers; a language-model search takes size, bitops, bitserial or energy');
  }
  const budget = options.budgets[0]!;
  const out = options.out ?? join(dirname(run.checkpoint), `search-${options.method}-${options.budgetTag}`);
  checkDirCreatable(out);

  const valid = options.testLimit === undefined ? run.corpus.valid : take(run.corpus.valid, options.testLimit);
  if (valid.length < 2) usage(`--test-limit: at least 2 validation windows are needed, got ${valid.length}`);
  if (options.searchSamples !== undefined && options.searchSamples > valid.length - 1) usage(`--search-samples ${options.searchSamples}: at most ${valid.length - 1} of the ${valid.length} validation windows (one at least is held out)`);
  if (options.calib > run.corpus.train.length) usage(`--calib ${options.calib}: the training split has ${run.corpus.train.length} windows`);
  const searchCount = options.searchSamples ?? Math.min(DEFAULT_LM_SEARCH_SAMPLES, valid.length - 1);
  // Search windows evenly spaced over the validation split (the text changes along the book: a
  // contiguous block scored 74 where the whole split scores 101 and let plans fit that block), the
  // rest held out.
  const searchIndices = Array.from({ length: searchCount }, (_, i) => Math.floor((i * valid.length) / searchCount));
  const inSearch = new Set(searchIndices);
  const searchSplit = select(valid, Int32Array.from(searchIndices));
  const heldOutSplit = select(valid, Int32Array.from({ length: valid.length }, (_, i) => i).filter((i) => !inSearch.has(i)));
  // Calibration: evenly spaced training windows (the split is in text order).
  const step = Math.max(1, Math.floor(run.corpus.train.length / options.calib));
  const calibSet = select(run.corpus.train, Int32Array.from({ length: options.calib }, (_, i) => i * step));
  const calibration = [...contextIdBatches(new DataLoader(calibSet, { batchSize: 128 }))].map((b) => b.x);
  const batches = (set: typeof valid) => contextIdBatches(new DataLoader(set, { batchSize: 500 }));
  const build = (): SearchableLm => {
    const model = lmModel({ ...s, quant: 'fp32' }, 0) as SearchableLm;
    model.loadStateDict(run.weights);
    model.eval();
    return model;
  };
  const layers = describeLmLayers(build());
  const costs = [budget.cost, ...options.extra].map((name) => costModel(name));
  const primary = costs[0]!;
  const showCost = (v: number): string => {
    const d = costDisplay(primary.name, primary.unit);
    return formatSi(v * d.scale, d.unit);
  };
  const evaluator = lmPtqEvaluator(build, { calibration, eval: batches(searchSplit) });
  const a = options.aBits[0]!;

  io.print('lowbit search');
  io.print(`  model      ${s.model} (language model) from ${run.checkpoint}; ${layers.length} searchable layers (${layers.map((l) => l.name).join(', ')})`);
  io.print(`  data       ${s.dataset}: ${calibSet.length} calibration windows (training split), scored on ${searchCount} validation windows evenly spaced over the split, ${heldOutSplit.length} held out`);
  io.print(`  budget     ${budget.text} = ${showCost(budget.value)} (${budget.cost})`);
  io.print(`  method     ${options.method}, weight bits {${options.wBits.join(', ')}}, activations ${a} bits; candidates scored by PTQ validation perplexity`);

  const stop = searchStop(options.maxTime, io);
  const shouldStop = stop.shouldStop;
  const floatLoss = evaluator({}).loss;
  io.print(`float32 perplexity (search windows): ${Math.exp(floatLoss).toFixed(2)}`);
  const summary: [string, string][] = [
    ['model', `${s.model} (${run.checkpoint})`],
    ['dataset', `${s.dataset}: scored on ${searchCount} validation windows, ${calibSet.length} calibration windows`],
  ];
  const common = { layers, costs, budget: budget.value, wBits: options.wBits, aBits: [a], evaluate: (x: Parameters<typeof evaluator>[0]) => evaluator(x).loss, score: lmScore, shouldStop };
  let outcome: Omit<SearchOutcome, 'heldOut'>;
  try {
    if (options.method === 'ilp') {
      const bar = options.progress ? new ProgressBar({ total: layers.length * options.wBits.length, label: 'ilp sensitivity', rateUnit: 'eval', stream: io.stderr }) : null;
      let evalBar: ProgressBar | null = null;
      const result = await (async () => {
        try {
          return await exactErrorSearch({
            ...common,
            onProgress: (stage, done, total) => {
              if (stage === 'sensitivity') bar?.tick(1);
              else {
                if (evalBar === null && options.progress) {
                  bar?.done();
                  evalBar = new ProgressBar({ total, label: 'ilp evaluate', rateUnit: 'plan', stream: io.stderr });
                }
                evalBar?.tick(1, { done: String(done) });
              }
            },
          });
        } catch (e) {
          if (!(e instanceof NoAllocationFitsError)) throw e;
          bar?.done();
          throw new Error(`no plan fits ${budget.text}: every layer at ${Math.min(...options.wBits)} bits costs ${showCost(e.minimum[0]!)}`);
        }
      })();
      if (evalBar === null) bar?.done();
      (evalBar as ProgressBar | null)?.done();
      const lowest = Math.min(...options.wBits);
      outcome = {
        method: 'ilp', metric: 'perplexity', title: `lowbit search: ${s.model} on ${s.dataset}, exact allocation`, summary,
        layers, costs, budget, candidates: result.candidates, front: result.front, chosen: result.chosen, floatAccuracy: lmScore(floatLoss), stopped: result.stopped,
        sensitivity: Object.fromEntries(Object.entries(result.deltaError).map(([k, v]) => [k, v[lowest] ?? NaN])),
        notes: [`Allocation: exact (dynamic programming) minimum of the summed per-layer PTQ cross-entropy increases under the budget (each layer quantized alone, the others float); sensitivity column = cross-entropy increase (nats) of the layer alone at ${lowest} bits. Plotted points are scored by real PTQ (static per-row weights, ${a}-bit per-tensor activations, calibrated on training windows) as validation perplexity.`],
        details: { deltaCrossEntropy: result.deltaError, floatCrossEntropy: result.floatError },
      };
    } else {
      const total = options.population * (options.generations + 1);
      const bar = options.progress ? new ProgressBar({ total, label: 'nsga2', rateUnit: 'cand', stream: io.stderr }) : null;
      let best = Infinity;
      const result = await nsga2ErrorSearch({
        ...common, populationSize: options.population, generations: options.generations, seed: options.seed,
        onCandidate: (c) => {
          if (c.costs[primary.name]! <= budget.value) best = Math.min(best, 1 / c.accuracy);
          bar?.tick(1, { 'best in budget': Number.isFinite(best) ? `ppl ${best.toFixed(2)}` : '–' });
        },
      });
      bar?.done();
      outcome = {
        method: 'nsga2', metric: 'perplexity', title: `lowbit search: ${s.model} on ${s.dataset}, NSGA-II`,
        summary: [...summary, ['generations', `${result.generations} (population ${options.population}, ${result.candidates.length} distinct candidates)`]],
        layers, costs, budget, candidates: result.candidates, front: result.front, chosen: result.chosen, floatAccuracy: lmScore(floatLoss), stopped: result.stopped,
        notes: ['NSGA-II over per-layer weight widths, objectives (cost, PTQ validation cross-entropy); every candidate scored by post-training quantization (no beacons); uniform widths seeded into the population.'],
      };
    }
  } finally {
    stop.dispose();
  }
  let heldOut: SearchOutcome['heldOut'] = { samples: heldOutSplit.length };
  if (outcome.chosen && heldOutSplit.length > 0 && !stop.interrupted) {
    const held = lmPtqEvaluator(build, { calibration, eval: batches(heldOutSplit) });
    heldOut = { samples: heldOutSplit.length, chosen: lmScore(held(outcome.chosen.assignment).loss), float: lmScore(held({}).loss) };
  }
  const paths = writeSearchOutputs(out, { ...outcome, heldOut });
  const seconds = stop.seconds();
  if (outcome.stopped) io.print(`stopped early after ${seconds.toFixed(0)} s: keeping the best plan found so far`);
  if (outcome.chosen) {
    const c = outcome.chosen;
    io.print(`chosen plan: ${layers.map((l) => `${l.name}=W${c.assignment[l.name]!.w}A${c.assignment[l.name]!.a}`).join(' ')}`);
    io.print(`  ${budget.cost} ${showCost(c.costs[budget.cost]!)} (budget ${showCost(budget.value)}), search perplexity ${(1 / c.accuracy).toFixed(2)}` +
      `${heldOut.chosen !== undefined ? `, held-out ${(1 / heldOut.chosen).toFixed(2)} (float32 ${(1 / heldOut.float!).toFixed(2)})` : ''}`);
    for (const u of outcome.candidates.filter((x) => x.uniform !== undefined)) io.print(`  uniform ${u.uniform}: ${budget.cost} ${showCost(u.costs[budget.cost]!)}, search perplexity ${(1 / u.accuracy).toFixed(2)}`);
  } else if (outcome.stopped && outcome.candidates.length === 0) {
    io.print('stopped before a plan was measured (ilp stops in its per-layer sensitivity pass): no plan written');
  } else {
    io.print(`no evaluated plan fits ${budget.text}`);
  }
  io.print(`front: ${outcome.front.length} points of ${outcome.candidates.length} evaluated (${seconds.toFixed(0)} s)`);
  io.print(`wrote ${[paths.plan, paths.front, paths.report].filter((p) => p !== null).join(', ')}`);
  return outcome.chosen ? 0 : 1;
}
