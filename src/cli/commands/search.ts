import { unlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { DATASET_NAMES, DATASET_STATS, DataLoader, loadDataset } from '../../data/index.ts';
import { subset } from '../../data/dataset.ts';
import { MODEL_NAMES } from '../../nn/index.ts';
import type { TensorModule } from '../../nn/module.ts';
import { evaluate } from '../../train/index.ts';
import { ProgressBar } from '../../train/progress.ts';
import { costModel, COST_MODEL_NAMES, evaluateAssignmentSync, type CostModel, type LatencyContext, type SearchData } from '../../quant/search/index.ts';
import type { Tensor } from '../../tensor/tensor.ts';
import { BudgetError, costDisplay, parseBudget, type Budget } from '../../quant/search/budget.ts';
import { bestWithinBudget, candidateFront, chooseWithinBudget, assignmentCosts, bitChoices, nsga2Search, rankByRetraining, uniformLabel, type SearchCandidate } from '../../quant/search/mohaq.ts';
import { exactSearch, writeSearchOutputs, type SearchOutcome } from '../../quant/search/outcome.ts';
import { NoAllocationFitsError } from '../../quant/search/allocate.ts';
import { sdqSearch } from '../../quant/search/sdq.ts';
import { haqSearch } from '../../quant/search/haq.ts';
import { sposSearch } from '../../quant/search/spos.ts';
import { formatSi } from '../../quant/search/report.ts';
import { checkDirCreatable } from '../../format/files.ts';
import { uniformAssignment } from '../../quant/search/costs.ts';
import { UsageError } from '../args.ts';
import { defineCommand } from '../command.ts';
import { BACKEND_CHOICES, backendDetails, describeBackend, useBackend } from '../backend-info.ts';
import { locateFloatRun } from '../float-run.ts';
import { searchStop } from '../search-stop.ts';
import { isOnnxPath, loadOnnxImageModel, onnxBuilder, onnxDataset, onnxNormalize, ONNX_NORMALIZE_CHOICES, ONNX_NORMALIZE_HELP } from '../onnx-model.ts';
import { languageModelRun, searchLanguageModel } from '../lm-search.ts';
import { checkCalibCount, checkDatasetChoice, floatRunBuilder } from '../run-checks.ts';

const METHODS = ['nsga2', 'ilp', 'sdq', 'haq', 'spos'] as const;

/** Search samples without --search-samples (fewer when the test set is smaller: all but one). */
const DEFAULT_SEARCH_SAMPLES = 2000;

/** '2,3,4,8' → [2, 3, 4, 8] (integers in [lo, hi]). */
function parseBitList(text: string, flag: string, lo: number): number[] {
  const parts = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const bits = parts.map(Number);
  if (parts.length === 0 || bits.some((b) => !Number.isInteger(b) || b < lo || b > 16)) {
    throw new UsageError(`--${flag} takes a comma-separated list of integers in [${lo}, 16], e.g. 2,3,4,8; got '${text}'`, 'search');
  }
  return [...new Set(bits)].sort((a, b) => a - b);
}

/** Deletes the file at `path` if there is one; returns `path` when it did. */
function removeIfPresent(path: string): string | null {
  try {
    unlinkSync(path);
    return path;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`cannot remove '${path}' of an earlier search: ${(e as Error).message}`);
  }
}

function budgetTag(budget: Budget): string {
  return budget.text.replace(/[^A-Za-z0-9.]+/g, '-');
}

/** The options that belong to some search methods only. */
const METHOD_OPTIONS: Record<string, readonly (typeof METHODS)[number][]> = {
  generations: ['nsga2'], population: ['nsga2', 'spos'], beacons: ['nsga2'], beaconSteps: ['nsga2'], steps: ['sdq'], lambda: ['sdq'], episodes: ['haq'],
  supernetSteps: ['spos'], iterations: ['spos'],
};

export const searchCommand = defineCommand({
  name: 'search',
  summary: 'mixed-precision search: per-layer bit widths under a size / BitOps / latency / energy budget',
  description: [
    'Searches per-layer weight (and activation) bit widths of a trained float32 model under a budget.',
    'Methods: nsga2 (multi-objective evolutionary search, candidates scored by post-training',
    'quantization, a few "beacon" candidates retrained to correct the others — MOHAQ); ilp (exact',
    'allocation of per-layer PTQ loss perturbations under the budget); sdq (bit widths learned during',
    'QAT with a budget regularizer); haq (a DDPG agent picks each layer\'s width, the plan is forced under',
    'the budget by lowering widths, reward = PTQ accuracy change — HAQ); spos (a supernet with a switchable',
    'quantizer per layer fine-tuned by uniform path sampling, then an evolutionary search over paths within the',
    'budget scored with the inherited weights — single-path one-shot). Candidates are scored on the LAST --search-samples test images;',
    'the chosen plan is re-scored on the remaining test images. Writes <out>/plan.json (a QuantPlan',
    'that prepareQat / calibrate / convert accept), <out>/front.json and <out>/report.html.',
    'Ctrl-C (or --max-time) stops early and writes the best plan found so far.',
    'A language-model run (transformer-lm, lstm-lm, gru-lm) is searched with --method ilp or nsga2, candidates scored by PTQ',
    'validation perplexity (calibration on training windows); fine-tune its plan with lowbit train --init RUN --plan plan.json.',
  ].join('\n'),
  examples: [
    'lowbit search --model runs/lenet5-mnist-fp32 --budget size=20KB --method nsga2',
    'lowbit search --model runs/lenet5-mnist-fp32 --budget bitops=150M --method ilp --abits 8',
    'lowbit search --model runs/lenet5-mnist-fp32 --budget size=23KB,bitops=3.8M --method ilp --wbits 2,3,4,8 --abits 2,3,4,8',
    'lowbit search --model runs/lenet5-mnist-fp32 --budget size=16KB --method sdq --steps 300',
    'lowbit search --model runs/lenet5-mnist-fp32 --budget latency=0.2ms --method nsga2 --max-time 600',
    'lowbit search --model runs/lenet5-mnist-fp32 --budget bitserial=1.2k --method haq --episodes 300',
    'lowbit search --model runs/lenet5-mnist-fp32 --budget latency=9us --method ilp --wbits 8 --prune 1,0.75,0.5,0.25',
    'lowbit search --model runs/lenet5-mnist-fp32 --budget size=23KB --method spos --supernet-steps 2000 --population 50 --iterations 20',
    'lowbit search --model runs/transformer-lm-moby-dick-fp32 --budget size=240KB --method ilp --wbits 2,3,4,8',
  ],
  options: {
    model: { type: 'string', placeholder: 'PATH', help: 'run directory of a float32 run (runs/<model>-<dataset>-fp32) or its checkpoint.safetensors, or a float32 ONNX image classifier (FILE.onnx); a transformer-lm / lstm-lm / gru-lm run is searched by validation perplexity (--method ilp or nsga2)' },
    budget: { type: 'string', placeholder: 'COST=VALUE', help: `budget: ${COST_MODEL_NAMES.join(' | ')}, e.g. size=40KB, bitops=1.2G, latency=2ms, energy=5uJ; ilp also takes several, e.g. size=23KB,bitops=3.8M` },
    method: { type: 'enum', choices: METHODS, default: 'nsga2', help: 'search algorithm' },
    objectives: { type: 'string', placeholder: 'LIST', help: 'extra cost objectives / report axes, e.g. bitops,energy (the budget cost is always first)' },
    wbits: { type: 'string', default: '2,3,4,8', placeholder: 'LIST', help: 'candidate weight bit widths' },
    abits: { type: 'string', default: '8', placeholder: 'LIST', help: 'candidate activation bit widths (nsga2, ilp, haq and spos search them per layer; sdq uses the widest)' },
    prune: { type: 'string', placeholder: 'LIST', help: 'ilp: keep ratios of output channels per layer, e.g. 1,0.75,0.5,0.25 (pruned channels = 0-bit, removed by convert); the latency cost is then measured in the model' },
    generations: { type: 'int', min: 0, help: 'nsga2: generations after the initial population (default: 12)' },
    population: { type: 'int', min: 4, help: 'nsga2 / spos: population size (default: 20 for nsga2, 50 for spos)' },
    supernetSteps: { type: 'int', positive: true, help: 'spos: supernet training steps, one uniformly sampled path each (default: 1000)' },
    iterations: { type: 'int', positive: true, help: 'spos: evolution iterations (default: 20)' },
    beacons: { type: 'int', min: 0, help: 'nsga2: candidates retrained as beacons (0: PTQ only; default: 3)' },
    beaconSteps: { type: 'int', positive: true, help: 'nsga2: QAT steps per beacon (default: 100)' },
    rank: { type: 'int', min: 0, default: 0, placeholder: 'N', help: 'nsga2 / ilp / haq: retrain the N most accurate plans within the budget (QAT, --rank-steps steps each) and keep the best after retraining (0: the best by PTQ)' },
    rankSteps: { type: 'int', positive: true, default: 200, help: 'QAT steps per plan for --rank' },
    steps: { type: 'int', positive: true, help: 'sdq: training steps (default: 300)' },
    episodes: { type: 'int', positive: true, help: 'haq: episodes (one plan each; 20 warm-up episodes act at random; default: 300)' },
    lambda: { type: 'number', positive: true, help: 'sdq: budget regularizer strength (default: 5)' },
    calib: { type: 'int', positive: true, default: 512, help: 'calibration samples per candidate (training split; at most its size)' },
    searchSamples: { type: 'int', positive: true, help: `test samples (from the end of the split) candidates are scored on, at most all but one (default: ${DEFAULT_SEARCH_SAMPLES}, or all but one of a smaller test set)` },
    testLimit: { type: 'int', positive: true, help: 'use the first N test samples only (search samples taken from their end, the rest held out)' },
    maxTime: { type: 'number', positive: true, placeholder: 'SECONDS', help: 'stop after this many seconds, keeping the best so far' },
    dataset: { type: 'enum', choices: DATASET_NAMES, help: 'dataset (default: the one the model was trained on; another one of the same input shape and classes is warned about, a different shape or class count refused)' },
    arch: { type: 'enum', choices: MODEL_NAMES, help: 'architecture (default: from the run\'s metrics.json)' },
    out: { type: 'string', placeholder: 'DIR', help: 'output directory, created when the outputs are written (default: <run dir>/search-<method>-<budgets>)' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed of the search' },
    normalize: { type: 'enum', choices: ONNX_NORMALIZE_CHOICES, help: ONNX_NORMALIZE_HELP },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'compute backend: reference, native or wasm (default: native when the addon loads)' },
    progress: { type: 'boolean', default: true, help: 'hide the progress bar' },
  },
  async run(given, io) {
    // Options of one method: refused with another (they would be ignored), defaulted here.
    for (const [name, methods] of Object.entries(METHOD_OPTIONS)) {
      if (given[name as keyof typeof given] !== undefined && !methods.includes(given.method)) {
        throw new UsageError(`--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} applies to --method ${methods.join(' or ')} (got --method ${given.method})`, 'search');
      }
    }
    const options = {
      ...given,
      generations: given.generations ?? 12, population: given.population ?? (given.method === 'spos' ? 50 : 20), beacons: given.beacons ?? 3, beaconSteps: given.beaconSteps ?? 100,
      steps: given.steps ?? 300, lambda: given.lambda ?? 5, episodes: given.episodes ?? 300, supernetSteps: given.supernetSteps ?? 1000, iterations: given.iterations ?? 20,
    };
    if (options.budget === undefined) throw new UsageError('--budget is required, e.g. --budget size=40KB, bitops=1.2G or latency=2ms', 'search');
    let budgets: Budget[];
    try {
      budgets = options.budget.split(',').map((t) => parseBudget(t));
    } catch (e) {
      if (e instanceof BudgetError) throw new UsageError(`--budget: ${e.message}`, 'search');
      throw e;
    }
    const budget = budgets[0]!;
    const limits = budgets.slice(1);
    if (new Set(budgets.map((b) => b.cost)).size !== budgets.length) throw new UsageError(`--budget: one limit per cost, got '${options.budget}'`, 'search');
    if (limits.length > 0 && options.method !== 'ilp' && options.method !== 'haq' && options.method !== 'spos') throw new UsageError(`several budgets (${options.budget}) work with --method ilp, haq or spos`, 'search');
    if (limits.length > 0 && options.prune !== undefined) throw new UsageError('several budgets do not combine with --prune', 'search');
    const extra = [...limits.map((b) => b.cost as string), ...(options.objectives ?? '').split(',').map((s) => s.trim())]
      .filter((s, i, all) => s !== '' && s !== budget.cost && all.indexOf(s) === i);
    for (const name of extra) {
      if (!(COST_MODEL_NAMES as readonly string[]).includes(name)) throw new UsageError(`--objectives: unknown cost '${name}' (known: ${COST_MODEL_NAMES.join(', ')})`, 'search');
    }
    if (options.rank > 0 && options.method === 'sdq') throw new UsageError('--rank works with --method nsga2 or ilp or haq (sdq learns one plan)', 'search');
    const wBits = parseBitList(options.wbits, 'wbits', 2);
    let keepRatios: number[] | undefined;
    if (options.prune !== undefined) {
      if (options.method !== 'ilp') throw new UsageError(`--prune works with --method ilp (got --method ${options.method})`, 'search');
      keepRatios = options.prune.split(',').map((t) => Number(t.trim()));
      if (keepRatios.length === 0 || keepRatios.some((r) => !(r > 0 && r <= 1))) throw new UsageError(`--prune takes keep ratios in (0, 1], e.g. 1,0.75,0.5,0.25; got '${options.prune}'`, 'search');
      if (!keepRatios.includes(1)) keepRatios.unshift(1);
    }
    const aBits = parseBitList(options.abits, 'abits', 2);
    useBackend(options.backend);
    // A language-model run (transformer-lm, lstm-lm, gru-lm): its own data and evaluation (src/cli/lm-search.ts).
    const onnxGiven = options.model !== undefined && isOnnxPath(options.model);
    const lmRun = onnxGiven ? null : languageModelRun(options.model);
    if (lmRun) {
      const imageOnly = [
        ...(options.prune !== undefined ? ['--prune'] : []), ...(given.beacons !== undefined ? ['--beacons'] : []), ...(given.beaconSteps !== undefined ? ['--beacon-steps'] : []),
        ...(options.rank > 0 ? ['--rank'] : []), ...(options.dataset !== undefined ? ['--dataset'] : []), ...(options.arch !== undefined ? ['--arch'] : []),
      ];
      return searchLanguageModel(lmRun, {
        method: options.method, wBits, aBits, budgets, extra, calib: options.calib, searchSamples: options.searchSamples, testLimit: options.testLimit,
        generations: options.generations, population: options.population, seed: options.seed, out: options.out, maxTime: options.maxTime, progress: options.progress,
        budgetTag: budgets.map(budgetTag).join('-'), imageOnly,
      }, io);
    }
    // A float32 ONNX image classifier (torch.onnx.export...) instead of a lowbit run: its graph imported.
    const onnx = onnxGiven ? loadOnnxImageModel(options.model!, 'search: --model') : null;
    if (onnx && options.arch !== undefined) throw new UsageError('--arch names a lowbit architecture; an .onnx model brings its own graph', 'search');
    if (!onnx && options.normalize !== undefined) throw new UsageError('--normalize applies to .onnx models (a lowbit run is normalised as it was trained)', 'search');
    const run = onnx ? null : locateFloatRun(options.model, options, 'search', 'the search');
    const checkpoint = onnx ? onnx.file : run!.checkpoint;
    const arch = onnx ? `ONNX graph (opset ${onnx.opset}, ${onnx.producer})` : run!.arch;
    const dataset = onnx ? onnxDataset(onnx, options.dataset, (name) => loadDataset(name, 'train'), 'search') : run!.dataset;
    const folder = `search-${options.method}-${budgets.map(budgetTag).join('-')}`;
    const out = options.out ?? (onnx ? join(dirname(onnx.file), `${basename(onnx.file).replace(/\.onnx$/i, '')}-${folder}`) : join(dirname(checkpoint), folder));
    checkDirCreatable(out);  // an unusable --out fails now, not after the work; it is created when the outputs are written

    const onnxScaling = onnx ? onnxNormalize(onnx, options.normalize ?? 'auto', dataset) : null;
    const normalize = onnxScaling ? onnxScaling.stats : DATASET_STATS[dataset];
    const trainSet = loadDataset(dataset, 'train');
    if (run) checkDatasetChoice(run.config, options.dataset, trainSet, 'search', io);
    checkCalibCount(options.calib, trainSet, dataset, 'search');
    const fullTest = loadDataset(dataset, 'test');
    const testSet = options.testLimit === undefined ? fullTest : subset(fullTest, 0, Math.min(options.testLimit, fullTest.length));
    if (testSet.length < 2) throw new UsageError(`--test-limit: at least 2 test samples are needed, got ${testSet.length}`, 'search');
    if (options.searchSamples !== undefined && options.searchSamples > testSet.length - 1) {
      throw new UsageError(`--search-samples ${options.searchSamples}: the ${dataset} test set${options.testLimit !== undefined ? ' (with --test-limit)' : ''} has ${testSet.length.toLocaleString('en-US')} samples; ` +
        `at most ${(testSet.length - 1).toLocaleString('en-US')} can score candidates (at least one is held out to re-score the chosen plan)`, 'search');
    }
    const scaling = normalize ? { normalize } : {};
    const searchCount = options.searchSamples ?? Math.min(DEFAULT_SEARCH_SAMPLES, testSet.length - 1);
    const searchSplit = subset(testSet, testSet.length - searchCount);
    const heldOutSplit = subset(testSet, 0, testSet.length - searchCount);
    const data: SearchData = {
      calibration: new DataLoader(subset(trainSet, 0, Math.min(options.calib, trainSet.length)), { batchSize: 128, ...scaling }),
      eval: new DataLoader(searchSplit, { batchSize: 500, ...scaling }),
      train: new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed: options.seed, ...scaling }),
    };
    const heldOut: SearchData = { ...data, eval: new DataLoader(heldOutSplit, { batchSize: 500, ...scaling }) };
    const fresh = run ? floatRunBuilder(run, trainSet.numClasses, options.arch !== undefined, 'search') : onnxBuilder(onnx!, 'search: --model');
    const build = (): TensorModule => fresh().eval() as TensorModule;
    const evaluation = { calibrationSamples: options.calib };
    // With pruning, latency is measured inside the model (a pruned layer also narrows the next layer's input).
    let latencyContext: LatencyContext | undefined;
    if (keepRatios) for (const { x } of data.calibration as Iterable<{ x: Tensor }>) { latencyContext = { model: build(), sample: x }; break; }
    const costs: CostModel[] = [budget.cost, ...extra].map((name) => costModel(name, latencyContext ? { latency: { context: latencyContext, batch: 64 } } : {}));
    const primary = costs[0]!;
    const showCostOf = (name: string, v: number): string => {
      const model = costs.find((c) => c.name === name) ?? primary;
      const display = costDisplay(model.name, model.unit);
      return formatSi(v * display.scale, display.unit);
    };
    const showCost = (v: number): string => showCostOf(primary.name, v);
    const alsoReported = extra.filter((name) => !limits.some((b) => b.cost === name));

    io.print('lowbit search');
    io.print(`  model      ${arch} from ${checkpoint}`);
    if (onnxScaling) io.print(`  input      ${onnxScaling.label}`);
    io.print(`  data       ${dataset}: ${options.calib} calibration samples, scored on the last ${searchCount} test samples, ${heldOutSplit.length} held out`);
    io.print(`  budget     ${budgets.map((b) => `${b.text} = ${showCostOf(b.cost, b.value)} (${b.cost})`).join(' and ')}${alsoReported.length ? `; also reported: ${alsoReported.join(', ')}` : ''}`);
    io.print(`  method     ${options.method}, weight bits {${wBits.join(', ')}}, activation bits {${aBits.join(', ')}}`);
    io.print(`  backend    ${describeBackend(backendDetails())}`);

    const stop = searchStop(options.maxTime, io);
    const shouldStop = stop.shouldStop;
    const model = build();
    const floatSearch = evaluate(model, data.eval).accuracy;
    io.print(`float32 accuracy (search samples): ${(floatSearch * 100).toFixed(2)}%`);

    let outcome: Omit<SearchOutcome, 'heldOut'>;
    let chosenAfterQat: number | undefined;  // --rank: the chosen plan's accuracy after retraining
    const summary: [string, string][] = [
      ['model', `${arch} (${checkpoint})`], ['dataset', `${dataset}; scored on ${searchCount} test samples, ${options.calib} calibration samples`],
    ];
    try {
      if (options.method === 'nsga2') {
        const total = options.population * (options.generations + 1);
        const bar = options.progress ? new ProgressBar({ total, label: 'nsga2', rateUnit: 'cand', stream: io.stderr }) : null;
        let best: SearchCandidate | null = null;
        let generation = 0;
        const result = await nsga2Search(model, data, {
          costs, wBits, aBits, populationSize: options.population, generations: options.generations, seed: options.seed, evaluation,
          beacons: options.beacons > 0 ? { maxBeacons: options.beacons, qatSteps: options.beaconSteps } : false,
          shouldStop,
          onEvaluation: (c) => {
            if (c.costs[primary.name]! <= budget.value && (best === null || c.accuracy > best.accuracy)) best = c;
            bar?.tick(1, { gen: String(generation), 'best in budget': best ? `${(best.accuracy * 100).toFixed(2)}%` : '–' });
          },
          onGeneration: (g) => {
            generation = g + 1;
          },
        });
        bar?.done();
        for (const b of result.beacons) {
          io.print(`  beacon ${b.uniform ?? ''} ${result.layers.map((l) => b.assignment[l.name]!.w).join('/')}: PTQ ${((b.ptqAccuracy ?? 0) * 100).toFixed(2)}% → QAT ${((b.retrainedAccuracy ?? 0) * 100).toFixed(2)}%`);
        }
        outcome = {
          method: 'nsga2', title: `lowbit search: ${arch} on ${dataset}, NSGA-II`, summary: [...summary, ['generations', `${result.generations} (population ${options.population}, ${result.evaluations} candidates, ${result.beacons.length} beacons)`]],
          layers: result.layers, costs, budget, candidates: result.candidates, front: result.front,
          chosen: chooseWithinBudget(result.front, primary.name, budget.value), floatAccuracy: floatSearch, stopped: result.stopped,
          notes: [
            'Accuracy: post-training quantization (calibrated static quantizers) of each candidate, corrected by the nearest retrained beacon (MOHAQ); uniform points are seeded into the population and scored the same way.',
          ],
          details: { population: options.population, generations: result.generations, beacons: result.beacons.length, evaluations: result.evaluations },
        };
      } else if (options.method === 'ilp') {
        const bar = options.progress ? new ProgressBar({ total: 0, label: 'ilp', stream: io.stderr }) : null;
        const result = await exactSearch(model, data, {
          costs, budget: budget.value, budgets: costs.map((c) => limits.find((b) => b.cost === c.name)?.value), wBits, aBits, evaluation, shouldStop,
          ...(keepRatios ? { prune: { ratios: keepRatios } } : {}),
          onProgress: (stage) => bar?.tick(1, { stage }),
        }).catch((e: unknown) => {
          if (!(e instanceof NoAllocationFitsError)) throw e;
          bar?.done();
          const cheapest = e.minimum.map((m, k) => {
            const model = costs.find((c) => c.name === e.costs[k]) ?? primary;
            const shown = costDisplay(model.name, model.unit);
            return `${model.name} ${formatSi(m * shown.scale, shown.unit)}`;
          });
          throw new Error(`no plan fits ${[budget, ...limits].map((b) => b.text).join(', ')}: the cheapest plan (every layer at its narrowest option) costs ${cheapest.join(', ')}${e.minimum.length > 1 ? ' (each cost on its own)' : ''}`);
        });
        bar?.done();
        const lowest = Math.min(...wBits);
        outcome = {
          method: 'ilp', title: `lowbit search: ${arch} on ${dataset}, exact allocation`, summary,
          layers: result.layers, costs, budget, candidates: result.candidates, front: result.front, chosen: result.chosen,
          floatAccuracy: floatSearch, stopped: result.stopped,
          sensitivity: Object.fromEntries(Object.entries(result.deltaLoss).map(([k, v]) => [k, v[lowest]!])),
          notes: [`Allocation: exact (dynamic programming) minimum of the summed per-layer PTQ loss increases (weights${aBits.length > 1 ? ' + the layer input alone at a bits' : ''}) under the budget${limits.length ? `s ${budgets.map((b) => b.text).join(', ')}` : ''}; sensitivity column = loss increase of the layer alone at ${lowest} bits. Plotted points are scored by real PTQ.`],
          details: { deltaLoss: result.deltaLoss },
        };
      } else if (options.method === 'haq') {
        const bar = options.progress ? new ProgressBar({ total: options.episodes, label: 'haq', rateUnit: 'ep', stream: io.stderr }) : null;
        let bestAccuracy = -Infinity;
        const result = await haqSearch(model, data, {
          budgets: [budget, ...limits].map((b) => ({ cost: costs.find((c) => c.name === b.cost)!, value: b.value })),
          costs, wBits, aBits, episodes: options.episodes, seed: options.seed, evaluation: { ...evaluation, method: 'ptq' }, shouldStop,
          onEpisode: (e, c) => {
            bestAccuracy = Math.max(bestAccuracy, c.accuracy);
            bar?.tick(1, { acc: `${(c.accuracy * 100).toFixed(2)}%`, best: `${(bestAccuracy * 100).toFixed(2)}%`, σ: Number.isNaN(e.sigma) ? 'warm-up' : e.sigma.toFixed(3) });
          },
        }).catch((e: unknown) => {
          if (!(e instanceof NoAllocationFitsError)) throw e;
          bar?.done();
          const narrowest = [budget, ...limits].map((b, k) => `${b.cost} ${showCostOf(b.cost, e.minimum[k]!)}`);
          throw new Error(`no plan fits ${[budget, ...limits].map((b) => b.text).join(', ')}: every layer at its narrowest widths costs ${narrowest.join(', ')}`);
        });
        bar?.done();
        outcome = {
          method: 'haq', title: `lowbit search: ${arch} on ${dataset}, HAQ (DDPG agent)`,
          summary: [...summary, ['episodes', `${result.episodes} (${result.evaluations} distinct plans)`]],
          layers: result.layers, costs, budget, candidates: result.candidates, front: result.front, chosen: result.chosen,
          floatAccuracy: floatSearch, stopped: result.stopped,
          notes: ['HAQ: a DDPG agent chose each layer\'s width (20 random warm-up episodes, then truncated-normal exploration); every plan was forced under the budget by lowering widths from the last layer and scored by post-training quantization (reward 0.1·Δaccuracy in %). The plan is the best one the agent produced; uniform points are scored the same way for reference.'],
          details: { history: result.history.map((e) => ({ episode: e.episode, reward: e.reward, sigma: e.sigma, wBits: result.layers.map((_l, i) => wBits[e.plan[aBits.length > 1 ? 2 * i : i]!]) })) },
        };
      } else if (options.method === 'spos') {
        const trainBar = options.progress ? new ProgressBar({ total: options.supernetSteps, label: 'supernet', rateUnit: 'step', stream: io.stderr }) : null;
        let searchBar: ProgressBar | null = null;
        let bestAccuracy = -Infinity;
        const result = await sposSearch(build(), data, {
          budgets: [budget, ...limits].map((b) => ({ cost: costs.find((c) => c.name === b.cost)!, value: b.value })),
          costs, wBits, aBits, calibrationSamples: options.calib, seed: options.seed, shouldStop,
          training: { steps: options.supernetSteps },
          evolution: { population: options.population, iterations: options.iterations },
          onTrainStep: (_s, info) => trainBar?.tick(1, { loss: info.loss }),
          onEvaluation: (c) => {
            if (trainBar && searchBar === null) {
              trainBar.done();
              searchBar = new ProgressBar({ total: 0, label: 'evolution', rateUnit: 'path', stream: io.stderr });
            }
            bestAccuracy = Math.max(bestAccuracy, c.accuracy);
            searchBar?.tick(1, { acc: `${(c.accuracy * 100).toFixed(2)}%`, best: `${(bestAccuracy * 100).toFixed(2)}%` });
          },
        }).catch((e: unknown) => {
          if (!(e instanceof NoAllocationFitsError)) throw e;
          trainBar?.done();
          const narrowest = [budget, ...limits].map((b, k) => `${b.cost} ${showCostOf(b.cost, e.minimum[k]!)}`);
          throw new Error(`no plan fits ${[budget, ...limits].map((b) => b.text).join(', ')}: every layer at its narrowest widths costs ${narrowest.join(', ')}`);
        });
        if (searchBar === null) trainBar?.done();
        (searchBar as ProgressBar | null)?.done();
        outcome = {
          method: 'spos', title: `lowbit search: ${arch} on ${dataset}, single-path one-shot supernet`,
          summary: [...summary, ['supernet', `${result.trainSteps} steps by uniform path sampling (${result.trainSeconds.toFixed(0)} s)`], ['evolution', `${result.iterations} iterations, ${result.evaluations} paths (${result.searchSeconds.toFixed(0)} s)`]],
          layers: result.layers, costs, budget, candidates: result.candidates, front: result.front, chosen: result.chosen,
          floatAccuracy: floatSearch, stopped: result.stopped,
          notes: ['SPOS: one supernet (the float weights shared by a switchable static quantizer per layer and width) was fine-tuned by uniform path sampling; paths within the budget were searched by evolution (top-k parents, mutation, crossover) and scored with the inherited supernet weights (accuracy shown). The plan applies to the original float model; the uniform points are supernet paths too.'],
          details: { sampleCounts: result.sampleCounts, history: result.history, widestAccuracy: result.widestAccuracy },
        };
      } else {
        const bar = options.progress ? new ProgressBar({ total: options.steps, label: 'sdq', rateUnit: 'step', stream: io.stderr }) : null;
        const trainModel = build();
        const result = await sdqSearch(trainModel, data, {
          cost: primary, budget: budget.value, wBits, aBits: Math.max(...aBits), steps: options.steps, lambda: options.lambda, seed: options.seed, shouldStop,
          onStep: (_s, info) => bar?.tick(1, { 'E[cost]': showCost(info.expectedCost), loss: info.loss }),
        });
        bar?.done();
        // Score the learned plan and the uniform references the same way: PTQ of the float model.
        const a = Math.max(...aBits);
        const items = [
          ...bitChoices({ wBits, aBits: [a] }).map((c) => ({ assignment: uniformAssignment(result.layers, c.w, c.a), uniform: uniformLabel(c) })),
          { assignment: result.assignment, uniform: undefined },
        ];
        const candidates: SearchCandidate[] = items.map(({ assignment, uniform }) => {
          const s = evaluateAssignmentSync(model, assignment, data, { ...evaluation, method: 'ptq' });
          return { assignment, accuracy: s.accuracy, ptqAccuracy: s.accuracy, costs: assignmentCosts(costs, result.layers, assignment), ...(uniform ? { uniform } : {}) };
        });
        outcome = {
          method: 'sdq', title: `lowbit search: ${arch} on ${dataset}, differentiable bit widths`,
          summary: [...summary, ['training', `${result.steps} steps, final expected cost ${showCost(result.expectedCost)}`]],
          layers: result.layers, costs, budget, candidates, front: candidateFront(candidates, costs.map((c) => c.name)),
          chosen: result.withinBudget ? candidates[candidates.length - 1]! : null, floatAccuracy: floatSearch, stopped: result.stopped,
          sensitivity: Object.fromEntries(Object.entries(result.probabilities).map(([k, p]) => [k, Math.max(...p)])),
          notes: ['Bit widths learned by QAT over a softmax mixture of widths with a budget regularizer on the expected cost; the plan and the uniform references are then scored by PTQ of the float model. Sensitivity column = probability of the chosen width at the end of training.'],
          details: { probabilities: result.probabilities, candidates: result.candidates, history: result.history, argmaxAssignment: result.argmaxAssignment },
        };
      }
      // --rank: the most accurate plans within every budget, retrained; the best after retraining is the plan.
      const shortlist = options.rank > 0 && !stop.interrupted && !shouldStop()
        ? bestWithinBudget(outcome.candidates.filter((c) => limits.every((b) => c.costs[b.cost]! <= b.value)), primary.name, budget.value, options.rank)
        : [];
      if (shortlist.length > 0) {
        const bar = options.progress ? new ProgressBar({ total: shortlist.length, label: 'rank', rateUnit: 'plan', stream: io.stderr }) : null;
        const ranked = rankByRetraining(model, shortlist, data, {
          ...evaluation, qatSteps: options.rankSteps, seed: options.seed, shouldStop,
          onCandidate: (c) => bar?.tick(1, { 'last QAT': `${(c.retrainedAccuracy! * 100).toFixed(2)}%` }),
        });
        bar?.done();
        const bits = (c: SearchCandidate): string => outcome.layers.map((l) => `W${c.assignment[l.name]!.w}A${c.assignment[l.name]!.a}`).join('/');
        for (const c of ranked) io.print(`  retrained ${bits(c)}: PTQ ${((c.ptqAccuracy ?? c.accuracy) * 100).toFixed(2)}% → QAT ${(c.retrainedAccuracy! * 100).toFixed(2)}%`);
        const best = ranked[0];
        if (best) {
          chosenAfterQat = best.retrainedAccuracy!;
          outcome = {
            // the candidate object itself (front.json and the report find the chosen plan by identity)
            ...outcome, chosen: shortlist.find((c) => c.assignment === best.assignment)!,
            notes: [...(outcome.notes ?? []), `Chosen by retraining: the ${ranked.length} most accurate plans within the budget were fine-tuned (calibration + QAT, ${options.rankSteps} steps, Adam 1e-4 with cosine decay) and scored on the search samples; the plan is the best after fine-tuning (${(chosenAfterQat * 100).toFixed(2)}%).`],
            details: { ...outcome.details, ranking: ranked.map((c) => ({ assignment: c.assignment, ptqAccuracy: c.ptqAccuracy ?? c.accuracy, retrainedAccuracy: c.retrainedAccuracy })) },
          };
        }
      }
    } finally {
      stop.dispose();
    }

    let heldOutScores: SearchOutcome['heldOut'] = { samples: heldOutSplit.length };
    if (outcome.chosen && heldOutSplit.length > 0 && !stop.interrupted) {
      const chosen = evaluateAssignmentSync(model, outcome.chosen.assignment, heldOut, { ...evaluation, method: 'ptq' }).accuracy;
      const float = evaluate(model, heldOut.eval).accuracy;
      heldOutScores = { samples: heldOutSplit.length, chosen, float };
    }
    // Without a chosen plan, a plan.json of an earlier run in the same folder would sit beside this front as if it were its plan.
    const stalePlan = outcome.chosen ? null : removeIfPresent(join(out, 'plan.json'));
    const paths = writeSearchOutputs(out, { ...outcome, heldOut: heldOutScores });
    const seconds = stop.seconds();
    if (outcome.stopped) io.print(`stopped early after ${seconds.toFixed(0)} s: keeping the best plan found so far`);
    if (outcome.chosen) {
      const c = outcome.chosen;
      const kept = (name: string): string => {
        const per = c.assignment[name]!.wPerChannel;
        return per && per.includes(0) ? ` (${per.filter((b) => b !== 0).length}/${per.length} channels)` : '';
      };
      io.print(`chosen plan: ${outcome.layers.map((l) => `${l.name}=W${c.assignment[l.name]!.w}A${c.assignment[l.name]!.a}${kept(l.name)}`).join(' ')}`);
      io.print(`  ${budgets.map((b) => `${b.cost} ${showCostOf(b.cost, c.costs[b.cost]!)} (budget ${showCostOf(b.cost, b.value)})`).join(', ')}, search accuracy ${(c.accuracy * 100).toFixed(2)}%` +
        `${chosenAfterQat !== undefined ? ` (after QAT ${(chosenAfterQat * 100).toFixed(2)}%)` : ''}` +
        `${heldOutScores.chosen !== undefined ? `, held-out${chosenAfterQat !== undefined ? ' PTQ' : ''} ${(heldOutScores.chosen * 100).toFixed(2)}% (float32 ${(heldOutScores.float! * 100).toFixed(2)}%)` : ''}`);
    } else if (outcome.candidates.length === 0) {
      io.print('no plan was evaluated before the search stopped');
    } else {
      const cheapest = Math.min(...outcome.candidates.map((c) => c.costs[primary.name]!));
      io.print(`no evaluated plan fits ${budget.text}: the cheapest costs ${showCost(cheapest)}`);
    }
    io.print(`front: ${outcome.front.length} points of ${outcome.candidates.length} evaluated`);
    io.print(`wrote ${[paths.plan, paths.front, paths.report].filter((p) => p !== null).join(', ')}`);
    if (paths.plan === null) io.print(`no plan written${stalePlan ? ` (removed ${stalePlan}, left by an earlier run)` : ''}`);
    return outcome.chosen ? 0 : 1;
  },
});
