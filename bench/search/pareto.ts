/**
 * Mixed-precision Pareto front vs uniform bit widths (issue 7, acceptance 2): NSGA-II with MOHAQ
 * beacons over per-layer weight bits {2, 3, 4, 8} (activations 8-bit) of a trained float32 model,
 * accuracy vs weight size, with the uniform W2/W3/W4/W8 assignments seeded into the population
 * and scored by the same evaluation (PTQ + beacon correction) as every searched candidate.
 *
 *   nice -n 10 node --import tsx bench/search/pareto.ts [--model lenet5] [--dataset mnist]
 *       [--run runs/lenet5-mnist | --checkpoint PATH] [--population 24] [--generations 12] [--beacons 4]
 *       [--beacon-steps 150] [--search-samples 5000] [--seed 0] [--out bench/results/search]
 *
 * Data: candidates are scored on the LAST `--search-samples` test images; every front point and
 * every uniform point is then re-scored by plain PTQ on the remaining (held-out) test images, so the
 * comparison does not rest on data the search selected on. Calibration: the first 512 training
 * images. A missing float checkpoint is trained first (`lowbit train --quant fp32`, 4 epochs for
 * LeNet-5 / 2 for the CNN).
 *
 * Writes <out>/<model>-<dataset>/{front.json, plan.json, report.html, pareto-size.svg, summary.md}.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DATASET_STATS, DataLoader, loadDataset, type DatasetName } from '../../src/data/index.ts';
import { subset } from '../../src/data/dataset.ts';
import { createModel, type ModelName } from '../../src/nn/index.ts';
import { loadCheckpoint } from '../../src/train/checkpoint.ts';
import { evaluate } from '../../src/train/fit.ts';
import { ProgressBar } from '../../src/train/progress.ts';
import { useBackend, backendDetails, describeBackend } from '../../src/cli/backend-info.ts';
import { bitOpsCost, evaluateAssignmentSync, sizeCost, type SearchData } from '../../src/quant/search/index.ts';
import { assignmentCosts, candidateFront, chooseWithinBudget, nsga2Search, type SearchCandidate } from '../../src/quant/search/mohaq.ts';
import { writeSearchOutputs, buildSearchReport } from '../../src/quant/search/outcome.ts';
import { paretoSvg, writeTextAtomic } from '../../src/quant/search/report.ts';
import { flagOr } from '../flags.ts';

const modelName = flagOr('model', 'lenet5') as ModelName;
const dataset = flagOr('dataset', 'mnist') as DatasetName;
const runDir = flagOr('run', join('runs', `${modelName}-${dataset}`));
const population = Number(flagOr('population', '24'));
const generations = Number(flagOr('generations', '12'));
const beacons = Number(flagOr('beacons', '4'));
const beaconSteps = Number(flagOr('beacon-steps', '150'));
const searchSamples = Number(flagOr('search-samples', '5000'));
const seed = Number(flagOr('seed', '0'));
const outDir = join(flagOr('out', join('bench', 'results', 'search')), `${modelName}-${dataset}`);
const calibSamples = 512;

useBackend(undefined);
const checkpoint = flagOr('checkpoint', join(runDir, 'checkpoint.safetensors'));
if (!existsSync(checkpoint)) {
  const bin = fileURLToPath(new URL('../../bin/lowbit.js', import.meta.url));
  const epochs = modelName === 'cnn' ? '2' : '4';
  console.log(`no ${checkpoint}: training ${modelName} on ${dataset} (fp32, ${epochs} epochs)`);
  const r = spawnSync(process.execPath, [bin, 'train', '--model', modelName, '--dataset', dataset, '--quant', 'fp32', '--epochs', epochs, '--out', runDir, '--no-progress'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`training failed (exit ${r.status})`);
}

const normalize = DATASET_STATS[dataset];
const trainSet = loadDataset(dataset, 'train');
const testSet = loadDataset(dataset, 'test');
const searchSplit = subset(testSet, testSet.length - searchSamples);
const heldOutSplit = subset(testSet, 0, testSet.length - searchSamples);
const data: SearchData = {
  calibration: new DataLoader(subset(trainSet, 0, calibSamples), { batchSize: 128, normalize }),
  eval: new DataLoader(searchSplit, { batchSize: 500, normalize }),
  train: new DataLoader(trainSet, { batchSize: 64, shuffle: true, seed, normalize }),
};
const heldOut: SearchData = { ...data, eval: new DataLoader(heldOutSplit, { batchSize: 500, normalize }) };
const model = createModel(modelName, { numClasses: trainSet.numClasses });
model.loadStateDict(loadCheckpoint(checkpoint).model);
model.eval();

console.log(`search: ${modelName} on ${dataset}, population ${population}, ${generations} generations, ${beacons} beacons x ${beaconSteps} QAT steps`);
console.log(`backend: ${describeBackend(backendDetails())}`);
const size = sizeCost();
const bitops = bitOpsCost();
const floatSearch = evaluate(model, data.eval).accuracy;
const floatHeld = evaluate(model, heldOut.eval).accuracy;
const cpu0 = process.cpuUsage();
const wall0 = performance.now();
const bar = new ProgressBar({ total: population * (generations + 1), label: 'nsga2', rateUnit: 'cand' });
const result = await nsga2Search(model, data, {
  costs: [size], wBits: [2, 3, 4, 8], aBits: [8], populationSize: population, generations, seed,
  evaluation: { calibrationSamples: calibSamples },
  beacons: beacons > 0 ? { maxBeacons: beacons, qatSteps: beaconSteps, every: 2 } : false,
  onEvaluation: () => bar.tick(1),
  onBeacon: (b) => console.log(`\n  beacon ${Object.values(b.assignment).map((c) => c.w).join('/')}: PTQ ${((b.ptqAccuracy ?? 0) * 100).toFixed(2)}% -> QAT ${((b.retrainedAccuracy ?? 0) * 100).toFixed(2)}%`),
});
bar.done();
const searchCpu = (process.cpuUsage(cpu0).user + process.cpuUsage(cpu0).system) / 1e6;
const searchWall = (performance.now() - wall0) / 1000;

// BitOps of every candidate too (a second report axis; not a search objective here).
const candidates: SearchCandidate[] = result.candidates.map((c) => ({ ...c, costs: { ...c.costs, ...assignmentCosts([bitops], result.layers, c.assignment) } }));
const front = candidateFront(candidates, ['size']);
const uniform = candidates.filter((c) => c.uniform !== undefined).sort((a, b) => a.costs.size! - b.costs.size!);

// Held-out PTQ accuracy of every front and uniform point (no beacon correction: plain PTQ).
const heldOutAccuracy = new Map<SearchCandidate, number>();
for (const c of new Set([...front, ...uniform])) {
  heldOutAccuracy.set(c, evaluateAssignmentSync(model, c.assignment, heldOut, { method: 'ptq', calibrationSamples: calibSamples }).accuracy);
}

const bits = (c: SearchCandidate) => result.layers.map((l) => c.assignment[l.name]!.w).join('/');
const kb = (c: SearchCandidate) => c.costs.size! / 8 / 1000;
/** Does `f` dominate or match `u` on (accuracy ↑, size ↓) with the given accuracy function? */
const covers = (f: SearchCandidate, u: SearchCandidate, acc: (c: SearchCandidate) => number) => f.costs.size! <= u.costs.size! && acc(f) >= acc(u);
const strictly = (f: SearchCandidate, u: SearchCandidate, acc: (c: SearchCandidate) => number) => covers(f, u, acc) && (f.costs.size! < u.costs.size! || acc(f) > acc(u));
const searchAcc = (c: SearchCandidate) => c.accuracy;
const heldAcc = (c: SearchCandidate) => heldOutAccuracy.get(c)!;
const mixedFront = front.filter((f) => f.uniform === undefined);
const comparison = uniform.map((u) => {
  const dominators = mixedFront.filter((f) => strictly(f, u, searchAcc));
  const heldDominators = mixedFront.filter((f) => strictly(f, u, heldAcc));
  return {
    uniform: u.uniform!, sizeKB: kb(u), accuracy: u.accuracy, ptqAccuracy: u.ptqAccuracy, heldOutAccuracy: heldAcc(u),
    onFront: front.includes(u),
    coveredByFront: front.some((f) => covers(f, u, searchAcc)),
    strictlyDominatedBy: dominators.map(bits),
    strictlyDominatedOnHeldOutBy: heldDominators.map(bits),
    bestMixedAtOrBelowSize: (() => {
      const m = mixedFront.filter((f) => f.costs.size! <= u.costs.size!).sort((a, b) => b.accuracy - a.accuracy)[0];
      return m ? { bits: bits(m), sizeKB: kb(m), accuracy: m.accuracy, heldOutAccuracy: heldAcc(m) } : null;
    })(),
  };
});

const chosen = chooseWithinBudget(front, 'size', uniform.find((u) => u.uniform === 'W4A8')!.costs.size! * 0.6);
const budgetBits = uniform.find((u) => u.uniform === 'W4A8')!.costs.size! * 0.6;
const outcome = {
  method: 'nsga2' as const,
  title: `NSGA-II + beacons: ${modelName} on ${dataset}, accuracy vs weight size`,
  summary: [
    ['model', `${modelName} (${checkpoint}), float32 ${(floatSearch * 100).toFixed(2)}% on the search split, ${(floatHeld * 100).toFixed(2)}% held out`],
    ['data', `scored on the last ${searchSamples} test images; ${heldOutSplit.length} held out; ${calibSamples} calibration images`],
    ['search', `population ${population}, ${result.generations} generations, ${result.evaluations} candidates, ${result.beacons.length} beacons x ${beaconSteps} QAT steps; ${searchCpu.toFixed(0)} s CPU, ${searchWall.toFixed(0)} s wall`],
  ] as [string, string][],
  layers: result.layers, costs: [size, bitops], budget: { cost: 'size' as const, value: budgetBits, text: `size=${(budgetBits / 8000).toFixed(1)}KB (60 % of W4A8)` },
  candidates, front, chosen, floatAccuracy: floatSearch,
  heldOut: { samples: heldOutSplit.length, chosen: chosen ? heldAcc(chosen) : undefined, float: floatHeld },
  notes: ['Accuracy: PTQ of each candidate (static per-channel MSE weights, min-max 8-bit activations), corrected by the nearest QAT-retrained beacon (MOHAQ). Uniform W2/W3/W4/W8 are seeded into the population and scored the same way.'],
  details: {
    comparison, searchCpuSeconds: searchCpu, searchWallSeconds: searchWall,
    beacons: result.beacons.map((b) => ({ bits: bits(b), ptqAccuracy: b.ptqAccuracy, retrainedAccuracy: b.retrainedAccuracy })),
    front: front.map((f) => ({ bits: bits(f), sizeKB: kb(f), accuracy: f.accuracy, ptqAccuracy: f.ptqAccuracy, heldOutAccuracy: heldAcc(f), uniform: f.uniform ?? null })),
  },
};
const paths = writeSearchOutputs(outDir, outcome);
const report = buildSearchReport(outcome);
writeTextAtomic(join(outDir, 'pareto-size.svg'), `${paretoSvg(report.points, report.costs[0]!, { floatAccuracy: report.floatAccuracy, minAccuracy: report.minAccuracy })}\n`);

// Markdown for docs/search.md.
const pct = (v: number | undefined) => (v === undefined ? '–' : `${(v * 100).toFixed(2)} %`);
const md: string[] = [];
md.push(`Front of ${modelName} on ${dataset} (weights {2, 3, 4, 8} bits per layer, activations 8-bit; layers ${result.layers.map((l) => l.name).join(', ')}).`);
md.push('');
md.push('| point | bits per layer | size (kB) | search acc. (PTQ + beacons) | PTQ only | held-out PTQ |');
md.push('| --- | --- | ---: | ---: | ---: | ---: |');
for (const c of [...new Set([...front, ...uniform])].sort((a, b) => a.costs.size! - b.costs.size! || b.accuracy - a.accuracy)) {
  const name = c.uniform ? `uniform ${c.uniform}${front.includes(c) ? ' (on front)' : ''}` : 'front';
  md.push(`| ${name} | ${bits(c)} | ${kb(c).toFixed(2)} | ${pct(c.accuracy)} | ${pct(c.ptqAccuracy)} | ${pct(heldAcc(c))} |`);
}
md.push('');
for (const c of comparison) {
  const best = c.bestMixedAtOrBelowSize;
  md.push(`- ${c.uniform} (${c.sizeKB.toFixed(2)} kB, ${pct(c.accuracy)}): ${c.coveredByFront ? 'matched or dominated by the front' : 'NOT covered'}` +
    `; strictly dominated by ${c.strictlyDominatedBy.length} mixed front point(s) on the search split, ${c.strictlyDominatedOnHeldOutBy.length} on the held-out split` +
    `${best ? `; best mixed point at ≤ its size: ${best.bits} (${best.sizeKB.toFixed(2)} kB, ${pct(best.accuracy)}, held-out ${pct(best.heldOutAccuracy)})` : ''}.`);
}
md.push('');
md.push(`Search: ${result.evaluations} candidates, ${result.beacons.length} beacons, ${searchCpu.toFixed(0)} s CPU. Reproduce: \`nice -n 10 node --import tsx bench/search/pareto.ts ${process.argv.slice(2).join(' ')}\`.`);
writeTextAtomic(join(outDir, 'summary.md'), `${md.join('\n')}\n`);
console.log(md.join('\n'));
console.log(`wrote ${[paths.front, paths.plan, paths.report, join(outDir, 'pareto-size.svg'), join(outDir, 'summary.md')].join(', ')}`);
