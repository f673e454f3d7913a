/**
 * MOHAQ on an SRU model (Rezk et al. 2022): a 2-layer SRU reading MNIST images row by row (28
 * steps of 28 pixels) + a Linear classifier on the last step, trained in float32, then NSGA-II
 * with beacons over per-layer (weight, activation) bits scored by post-training quantization,
 * under a SiLago-like cost model (objectives: error, SiLago cycles, weight size) and a
 * BitFusion-like one (error, bit-serial cycles, weight size).
 *
 *   nice -n 10 node --import tsx bench/search/sru-mohaq.ts [--hidden 128] [--epochs 2]
 *       [--population 20] [--generations 8] [--beacons 3] [--beacon-steps 100]
 *       [--search-samples 2000] [--held-out 5000] [--seed 0] [--out bench/results/sru-mohaq.json]
 *
 * Data: candidates are scored on the LAST `--search-samples` MNIST test images; every front point
 * and every uniform point is then re-scored by plain PTQ on the first `--held-out` test images.
 * Calibration: 512 training images. The float model is cached in runs/sru-mnist-h<hidden>-s<seed>/.
 * One seed; the cost models are analytical (see src/quant/search/costs.ts), not measured.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DATASET_STATS, DataLoader, loadDataset } from '../../src/data/index.ts';
import { subset } from '../../src/data/dataset.ts';
import { Module } from '../../src/nn/module.ts';
import { Linear } from '../../src/nn/linear.ts';
import { SRU } from '../../src/nn/sru.ts';
import { Adam } from '../../src/optim/adam.ts';
import { reshape, slice, type Tensor } from '../../src/tensor/index.ts';
import { manualSeed, Rng } from '../../src/tensor/random.ts';
import { loadCheckpoint, saveCheckpoint } from '../../src/train/checkpoint.ts';
import { evaluate, fit } from '../../src/train/fit.ts';
import { ProgressBar } from '../../src/train/progress.ts';
import { useBackend, backendDetails, describeBackend } from '../../src/cli/backend-info.ts';
import {
  bitSerialCost, DEFAULT_SILAGO_ENERGY_PER_CYCLE, evaluateAssignmentSync, siLagoLanes, siLagoCost, siLagoEnergyCost, sizeCost, totalCost, type BitAssignment, type CostModel, type SearchData,
} from '../../src/quant/search/index.ts';
import { assignmentCosts, candidateFront, nsga2Search, type SearchCandidate } from '../../src/quant/search/mohaq.ts';
import { writeTextAtomic } from '../../src/quant/search/report.ts';
import { numberFlag, flagOr } from '../flags.ts';

const hidden = numberFlag('hidden', 128, { integer: true, min: 1 });
const epochs = numberFlag('epochs', 2, { integer: true, min: 1 });
const population = numberFlag('population', 20, { integer: true, min: 4 });
const generations = numberFlag('generations', 8, { integer: true, min: 0 });
const beacons = numberFlag('beacons', 3, { integer: true, min: 0 });
const beaconSteps = numberFlag('beacon-steps', 100, { integer: true, min: 1 });
const searchSamples = numberFlag('search-samples', 2000, { integer: true, min: 100 });
const heldOutSamples = numberFlag('held-out', 5000, { integer: true, min: 100 });
const seed = numberFlag('seed', 0, { integer: true, min: 0 });
const outPath = flagOr('out', join('bench', 'results', 'sru-mohaq.json'));
const calibSamples = 512;
const wBits = [2, 4, 8, 16];
const aBits = [4, 8, 16];

/** x [N, 1, 28, 28] read row by row: a 2-layer SRU over 28 steps of 28 pixels, then Linear(H → 10) on the last step. */
class SruRowClassifier extends Module {
  readonly sru: SRU;
  head: Linear;
  constructor(hiddenSize: number, rng: Rng) {
    super();
    this.sru = this.registerModule('sru', new SRU(28, hiddenSize, { numLayers: 2, batchFirst: true, rng }));
    this.head = this.registerModule('head', new Linear(hiddenSize, 10, { rng }));
  }
  forward(x: Tensor): Tensor {
    const n = x.shape[0]!;
    const [out] = this.sru.forward(reshape(x, [n, 28, 28]));
    const last = reshape(slice(out, [0, 27, 0], [n, 28, this.sru.hiddenSize]), [n, this.sru.hiddenSize]);
    return this.head.forward(last);
  }
}

useBackend(undefined);
console.log(`backend: ${describeBackend(backendDetails())}`);
const normalize = DATASET_STATS.mnist;
const trainSet = loadDataset('mnist', 'train');
const testSet = loadDataset('mnist', 'test');
const searchSplit = subset(testSet, testSet.length - searchSamples);
const heldOutSplit = subset(testSet, 0, Math.min(heldOutSamples, testSet.length - searchSamples));
const data: SearchData = {
  calibration: new DataLoader(subset(trainSet, 0, calibSamples), { batchSize: 128, normalize }),
  eval: new DataLoader(searchSplit, { batchSize: 500, normalize }),
  train: new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed, normalize }),
};
const heldOut: SearchData = { ...data, eval: new DataLoader(heldOutSplit, { batchSize: 500, normalize }) };

// ---- float model (cached)
manualSeed(seed);
const model = new SruRowClassifier(hidden, new Rng(seed + 1));
const runDir = join('runs', `sru-mnist-h${hidden}-s${seed}`);
const checkpoint = join(runDir, 'checkpoint.safetensors');
const train0 = performance.now();
let trainSeconds = 0;
if (existsSync(checkpoint)) {
  model.loadStateDict(loadCheckpoint(checkpoint).model);
  console.log(`float model from ${checkpoint}`);
} else {
  mkdirSync(runDir, { recursive: true });
  console.log(`training the float SRU (hidden ${hidden}, ${epochs} epochs, Adam 2e-3)`);
  const optimizer = new Adam(model.parameters(), { lr: 2e-3 });
  fit(model, {
    trainLoader: new DataLoader(trainSet, { batchSize: 128, shuffle: true, seed, normalize }),
    optimizer, epochs, seed, log: (line) => console.log(line),
  });
  trainSeconds = (performance.now() - train0) / 1000;
  saveCheckpoint(checkpoint, { model: model.stateDict(), epoch: epochs, config: { hidden, epochs, seed } });
}
model.eval();
const floatSearch = evaluate(model, data.eval).accuracy;
const floatHeld = evaluate(model, heldOut.eval).accuracy;
console.log(`float32: ${(floatSearch * 100).toFixed(2)} % on the search split, ${(floatHeld * 100).toFixed(2)} % held out`);

// ---- searches
const size = sizeCost();
const silago = siLagoCost();
const silagoEnergy = siLagoEnergyCost();
const bitserial = bitSerialCost();
const reportCosts: CostModel[] = [size, silago, silagoEnergy, bitserial];

interface Run {
  name: string;
  objectives: CostModel[];
}
const runs: Run[] = [
  { name: 'silago', objectives: [silago, size] },
  { name: 'bitfusion', objectives: [bitserial, size] },
];

const heldCache = new Map<string, number>();
const keyOf = (a: BitAssignment): string => Object.entries(a).map(([n, c]) => `${n}:${c.w}/${c.a}`).join(',');
function heldOutAccuracy(assignment: BitAssignment): number {
  const key = keyOf(assignment);
  let v = heldCache.get(key);
  if (v === undefined) heldCache.set(key, (v = evaluateAssignmentSync(model, assignment, heldOut, { method: 'ptq', calibrationSamples: calibSamples }).accuracy));
  return v;
}
const searchCache = new Map<string, number>();
function searchPtqAccuracy(assignment: BitAssignment): number {
  const key = keyOf(assignment);
  let v = searchCache.get(key);
  if (v === undefined) searchCache.set(key, (v = evaluateAssignmentSync(model, assignment, data, { method: 'ptq', calibrationSamples: calibSamples }).accuracy));
  return v;
}

const results: Record<string, unknown>[] = [];
let layerNames: string[] = [];
let layersInfo: unknown = null;
let baseline: Record<string, number> = {};
const uniformChoices: [number, number][] = [[16, 16], [8, 8], [8, 16], [4, 8], [4, 4], [2, 8], [2, 4]];
let uniformRows: Record<string, unknown>[] = [];

for (const run of runs) {
  console.log(`\n== search '${run.name}': objectives error, ${run.objectives.map((c) => c.name).join(', ')}; w ∈ {${wBits}}, a ∈ {${aBits}}; population ${population}, ${generations} generations, ${beacons} beacons × ${beaconSteps} QAT steps`);
  const bar = new ProgressBar({ total: population * (generations + 1), label: run.name, rateUnit: 'cand' });
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  const result = await nsga2Search(model, data, {
    costs: run.objectives, wBits, aBits, populationSize: population, generations, seed,
    evaluation: { calibrationSamples: calibSamples },
    beacons: beacons > 0 ? { maxBeacons: beacons, qatSteps: beaconSteps, every: 2 } : false,
    onEvaluation: () => bar.tick(1),
    onBeacon: (b) => console.log(`\n  beacon ${Object.values(b.assignment).map((c) => `W${c.w}A${c.a}`).join('/')}: PTQ ${((b.ptqAccuracy ?? 0) * 100).toFixed(2)} % -> QAT ${((b.retrainedAccuracy ?? 0) * 100).toFixed(2)} %`),
  });
  bar.done();
  const cpu = process.cpuUsage(cpu0);
  const searchCpu = (cpu.user + cpu.system) / 1e6;
  const searchWall = (performance.now() - wall0) / 1000;
  const layers = result.layers;
  layerNames = layers.map((l) => l.name);
  layersInfo = layers.map((l) => ({ name: l.name, weightCount: l.weightCount, macs: l.macs }));
  const reference = uniformAssignmentOf(layers.map((l) => l.name), 16, 16);
  baseline = Object.fromEntries(reportCosts.map((c) => [c.name, totalCost(c, layers, reference)]));
  const candidates: SearchCandidate[] = result.candidates.map((c) => ({ ...c, costs: { ...assignmentCosts(reportCosts, layers, c.assignment), ...c.costs } }));
  const front = candidateFront(candidates, run.objectives.map((c) => c.name));
  const bits = (a: BitAssignment): string => layers.map((l) => `W${a[l.name]!.w}A${a[l.name]!.a}`).join(' / ');
  const row = (c: { assignment: BitAssignment; accuracy?: number; ptqAccuracy?: number; retrainedAccuracy?: number }) => {
    const costs = assignmentCosts(reportCosts, layers, c.assignment);
    const held = heldOutAccuracy(c.assignment);
    return {
      bits: bits(c.assignment),
      searchAccuracy: c.accuracy ?? null, ptqAccuracy: c.ptqAccuracy ?? null, retrainedAccuracy: c.retrainedAccuracy ?? null,
      heldOutPtqAccuracy: held, heldOutErrorIncreasePp: (floatHeld - held) * 100,
      sizeKB: costs.size! / 8000, compression: (32 * layers.reduce((s, l) => s + l.weightCount, 0)) / costs.size!,
      siLagoSpeedup: baseline.silago! / costs.silago!, siLagoEnergySaving: 1 - costs.silagoEnergy! / baseline.silagoEnergy!,
      bitFusionSpeedupVsW8A8: totalCost(bitserial, layers, uniformAssignmentOf(layerNames, 8, 8)) / costs.bitserial!,
    };
  };
  if (uniformRows.length === 0) {
    uniformRows = uniformChoices.map(([w, a]) => {
      const assignment = uniformAssignmentOf(layerNames, w, a);
      return { uniform: `W${w}A${a}`, ...row({ assignment, accuracy: searchPtqAccuracy(assignment), ptqAccuracy: searchPtqAccuracy(assignment) }) };
    });
  }
  const frontRows = front.map((c) => ({ uniform: c.uniform ?? null, ...row(c) }));
  const beaconRows = result.beacons.map((b) => ({ bits: bits(b.assignment), ptqAccuracy: b.ptqAccuracy, retrainedAccuracy: b.retrainedAccuracy }));
  console.log(`  ${result.evaluations} candidates, ${result.beacons.length} beacons, ${searchCpu.toFixed(0)} s CPU, ${searchWall.toFixed(0)} s wall; front ${front.length} points`);
  for (const f of frontRows) {
    console.log(`  ${f.bits.padEnd(34)} held-out ${(f.heldOutPtqAccuracy * 100).toFixed(2)} % (+${f.heldOutErrorIncreasePp.toFixed(2)} pp)  ${f.sizeKB.toFixed(1)} kB ×${f.compression.toFixed(1)}  SiLago ×${f.siLagoSpeedup.toFixed(2)} E-${(f.siLagoEnergySaving * 100).toFixed(0)} %  BitFusion ×${f.bitFusionSpeedupVsW8A8.toFixed(2)}`);
  }
  results.push({
    name: run.name, objectives: ['error', ...run.objectives.map((c) => c.name)],
    evaluations: result.evaluations, generations: result.generations, searchCpuSeconds: searchCpu, searchWallSeconds: searchWall,
    beacons: beaconRows, front: frontRows,
  });
}

function uniformAssignmentOf(names: readonly string[], w: number, a: number): BitAssignment {
  return Object.fromEntries(names.map((n) => [n, { w, a }]));
}

// ---- summaries: the paper's kind of operating points
type Row = { bits: string; heldOutErrorIncreasePp: number; compression: number; siLagoSpeedup: number; siLagoEnergySaving: number; bitFusionSpeedupVsW8A8: number; heldOutPtqAccuracy: number };
const allFront = results.flatMap((r) => r.front as Row[]);
const pool = [...allFront, ...(uniformRows as unknown as Row[])];
const within = (pp: number) => pool.filter((r) => r.heldOutErrorIncreasePp <= pp);
const best = (rows: Row[], key: keyof Row) => rows.slice().sort((x, y) => (y[key] as number) - (x[key] as number))[0] ?? null;
const summary = {
  maxCompressionWithin1_5pp: best(within(1.5), 'compression'),
  maxSiLagoSpeedupWithin0_5pp: best(within(0.5), 'siLagoSpeedup'),
  maxSiLagoEnergySavingWithin0_5pp: best(within(0.5), 'siLagoEnergySaving'),
  siLagoMaxSpeedup: 4,
  siLagoMaxEnergySaving: 1 - DEFAULT_SILAGO_ENERGY_PER_CYCLE[4] / siLagoLanes(4),
};
console.log('\nsummary (held-out PTQ error increase over float):');
console.log(JSON.stringify(summary, null, 1));

const out = {
  bench: 'sru-mohaq',
  command: `nice -n 10 node --import tsx bench/search/sru-mohaq.ts ${process.argv.slice(2).join(' ')}`.trim(),
  note: 'one seed; costs are analytical models (SiLago-like, BitFusion-like), not measurements; accuracies are fake-quant PTQ (static per-channel weights, min-max activations)',
  backend: describeBackend(backendDetails()),
  model: { kind: 'SRU(28→H, 2 layers, batchFirst) + Linear(H→10) on the last step', hidden, epochs, trainSeconds, floatSearchAccuracy: floatSearch, floatHeldOutAccuracy: floatHeld },
  data: { searchSamples, heldOutSamples: heldOutSplit.length, calibrationSamples: calibSamples },
  space: { wBits, aBits, layers: layersInfo },
  baselineW16A16: baseline,
  uniform: uniformRows,
  searches: results,
  summary,
};
mkdirSync(dirname(outPath), { recursive: true });
writeTextAtomic(outPath, `${JSON.stringify(out, null, 1)}\n`);
console.log(`wrote ${outPath}`);
