/**
 * Mixed-precision search: choose the weight bits of every layer under a model-size budget.
 *
 *   1. train LeNet-5 in float32 (briefly),
 *   2. measure each layer's sensitivity: the loss increase when only its weights are quantized to
 *      2, 3, 4, 6 or 8 bits (post-training, on held-out training images),
 *   3. allocate bits exactly (a knapsack over the layers) so the packed weights fit the budget
 *      with the smallest summed loss increase,
 *   4. print the plan, quantize the model with it (PTQ) and compare with uniform widths,
 *   5. convert the result to the integer runtime and report its real packed size.
 *
 *   npx tsx examples/search.ts [BUDGET]                      # default budget size=20KB
 *   LOWBIT_EXAMPLE_QUICK=1 npx tsx examples/search.ts        # tiny settings (what the tests run)
 *
 * The CLI does the same with reports: npx lowbit search --model RUN --budget size=20KB
 */
import { data, evaluate, fit, formatPercent, manualSeed, nn, optim, preferThroughputGc, quant, runtime, Tensor } from 'lowbit';

const { search, ptq } = quant;
const quick = process.env.LOWBIT_EXAMPLE_QUICK === '1';
const budget = search.parseBudget(process.argv[2] ?? 'size=20KB'); // in bits for the size cost
if (budget.cost !== 'size') throw new Error(`this example takes a size budget (e.g. size=20KB), got '${budget.text}'`);
const settings = quick
  ? { trainSamples: 6000, testSamples: 1000, heldOut: 512 }
  : { trainSamples: 55000, testSamples: 10000, heldOut: 2000 };

preferThroughputGc();
manualSeed(0);
const stats = data.DATASET_STATS.mnist;
const all = data.loadDataset('mnist', 'train');
const train = data.take(all, settings.trainSamples);
// Sensitivity is measured on training images the model did not train on (the last ones).
const heldOut = data.subset(all, all.length - settings.heldOut, all.length);
const test = data.take(data.loadDataset('mnist', 'test'), settings.testSamples);
const trainLoader = new data.DataLoader(train, { batchSize: 64, shuffle: true, seed: 0, normalize: stats });
const heldOutBatches = [...new data.DataLoader(heldOut, { batchSize: 256, normalize: stats })];
const testLoader = new data.DataLoader(test, { batchSize: 256, normalize: stats });

// ---- 1. float model
const model = nn.lenet5();
fit(model, { trainLoader, optimizer: new optim.Adam(model.parameters(), { lr: 2e-3 }), epochs: 1, progress: false });
const floatAccuracy = evaluate(model, testLoader).accuracy;
const floatWeights = model.stateDict();
console.log(`float32 accuracy: ${formatPercent(floatAccuracy)}`);

// ---- 2. per-layer sensitivity
const layers = search.describeLayers(model, [1, 28, 28]); // forward order, weight counts, MACs
const wBits = [2, 3, 4, 6, 8];
const sensitivity = search.ptqPerturbation(model, heldOutBatches, wBits);
const deltaLoss = new Map(sensitivity.map((s) => [s.name, s.deltaLoss]));

// ---- 3. exact allocation under the size budget (activations stay at 8 bits)
const size = search.sizeCost(); // bits of the packed weights: weightCount × w per layer
const choices = wBits.map((w) => ({ w, a: 8 }));
const options = search.layerOptions(layers, choices, size, (layer, choice) => Math.max(0, deltaLoss.get(layer.name)![choice.w]!));
const best = search.allocateExact(options, budget.value);

// ---- 4. the plan
const kb = (bits: number): string => `${(bits / 8 / 1000).toFixed(2)} KB`;
console.log(`budget ${budget.text} = ${kb(budget.value)} of weights; chosen ${kb(best.cost)}`);
console.log('layer  weights  w bits  a bits  size      loss increase alone');
for (const layer of layers) {
  const choice = best.assignment[layer.name]!;
  console.log(`${layer.name.padEnd(7)}${String(layer.weightCount).padStart(7)}  ${String(choice.w).padStart(6)}  ${String(choice.a).padStart(6)}  ${kb(layer.weightCount * choice.w).padEnd(8)}  ${deltaLoss.get(layer.name)![choice.w]!.toExponential(2)}`);
}

/** PTQ of a fresh copy of the float model with a bit assignment; returns the quantized model and its accuracy. */
function quantizeWith(assignment: quant.search.BitAssignment): { accuracy: number; quantized: nn.LeNet5 } {
  const copy = nn.lenet5();
  copy.loadStateDict(floatWeights);
  // 'static' (calibrated) quantizers; the first layer's input is the signed, normalised image.
  const plan = search.planFromAssignment(assignment, { firstLayer: layers[0]!.name });
  const quantized = ptq.calibrate(copy, trainLoader, { plan, samples: 512 });
  return { accuracy: evaluate(quantized, testLoader).accuracy, quantized };
}

const searched = quantizeWith(best.assignment);
console.log(`searched plan: ${formatPercent(searched.accuracy)} at ${kb(best.cost)}`);
for (const w of [2, 3, 4]) {
  const uniform = search.uniformAssignment(layers, w, 8);
  const cost = search.totalCost(size, layers, uniform);
  console.log(`uniform W${w}A8: ${formatPercent(quantizeWith(uniform).accuracy)} at ${kb(cost)}${cost <= budget.value ? '' : ' (over budget)'}`);
}

// ---- 5. the integer model and its real size (packed weights plus biases and scales)
const images = data.normalize(test, stats);
const intModel = runtime.convert(searched.quantized, { sample: new Tensor(images.images.slice(0, 256 * 784), [256, 1, 28, 28]) });
const packed = intModel.layers().reduce((sum, layer) => sum + layer.packedBytes, 0);
console.log(intModel.formatLayers());
console.log(`integer model: ${packed} bytes of packed layer tensors (budget counted ${Math.ceil(best.cost / 8)} bytes of weights)`);
