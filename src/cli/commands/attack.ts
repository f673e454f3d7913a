import { DATASET_NAMES, DATASET_STATS, isDatasetName, loadDataset, type DatasetName } from '../../data/index.ts';
import { ATTACK_NAMES, evaluateRobustness, type RobustnessReport } from '../../eval/index.ts';
import { writeFileAtomic } from '../../format/index.ts';
import { formatPercent } from '../../train/index.ts';
import { UsageError } from '../args.ts';
import { BACKEND_CHOICES, useBackend } from '../backend-info.ts';
import { modelOfCheckpoint } from '../checkpoint-model.ts';
import { defineCommand } from '../command.ts';
import { checkOutputFile, resolveModelInput } from '../inputs.ts';

/** `0.1,0.2` -> [0.1, 0.2]: each finite, in (0, 1]. */
function parseEpsList(text: string): number[] {
  const values = text.split(',').map((s) => s.trim());
  if (values.some((s) => s === '')) throw new UsageError(`--eps: '${text}' is not a comma-separated list of numbers`, 'attack');
  return values.map((s) => {
    const v = Number(s);
    if (!Number.isFinite(v) || !(v > 0) || v > 1) throw new UsageError(`--eps: '${s}' must be a number in (0, 1] (pixel units; images are in [0, 1])`, 'attack');
    return v;
  });
}

/** `1,njs,hns` -> [1, 'njs', 'hns']. */
function parseTemperatures(text: string): (number | 'njs' | 'hns')[] {
  return text.split(',').map((raw) => {
    const s = raw.trim().toLowerCase();
    if (s === 'njs' || s === 'hns') return s;
    const v = Number(s);
    if (s === '' || !Number.isFinite(v) || !(v > 0)) throw new UsageError(`--temperature: '${raw}' must be a positive number, njs or hns`, 'attack');
    return v;
  });
}

function temperatureLabel(report: RobustnessReport): string {
  if (report.temperature === 'njs') return `njs (T ${report.njsTemperature!.toPrecision(4)})`;
  if (report.temperature === 'hns') return `hns (mean β ${report.meanBeta.toPrecision(3)})`;
  return `T ${report.temperature}`;
}

export const attackCommand = defineCommand({
  name: 'attack',
  summary: 'adversarial robustness of a trained model: FGSM / PGD at several eps, with temperature-scaled losses',
  description: [
    'Attacks the test images with untargeted L-inf FGSM or PGD (random start, 2.5·eps/steps step',
    'unless --step-size) on the model of a lowbit train checkpoint (float32 or fake-quant QAT, as',
    'trained), and reports clean accuracy, robust accuracy and attack success rate per eps. eps is',
    'in pixel units (images in [0, 1]; the normalization is part of the model). The loss is the',
    'cross-entropy of logits / T: --temperature takes a number, njs (network Jacobian scaling) or',
    'hns (Hessian norm scaling), the rules of Gupta & Ajanthan (AAAI 2022) against the vanishing',
    'gradients of quantized networks; a comma list compares them. The diagnostic columns give the',
    'share of images whose input gradient is exactly zero and whose softmax is saturated (float32',
    'p_y = 1) at T = 1 and at the attack\'s temperature. See docs/robustness.md.',
  ].join('\n'),
  examples: [
    'lowbit attack runs/lenet5-mnist-w4a4 --eps 0.1,0.2 --limit 1000',
    'lowbit attack runs/lenet5-mnist-w1a1 --attack pgd --steps 20 --temperature 1,njs,hns --json robustness.json',
  ],
  options: {
    checkpoint: { type: 'string', placeholder: 'RUN', positional: true, help: 'a lowbit train run directory or its checkpoint.safetensors (also: lowbit attack RUN)' },
    eps: { type: 'string', default: '0.1,0.2', placeholder: 'LIST', help: 'L-inf budgets in pixel units, comma-separated' },
    attack: { type: 'enum', choices: ATTACK_NAMES, default: 'fgsm', help: 'attack' },
    steps: { type: 'int', positive: true, default: 20, help: 'PGD iterations' },
    stepSize: { type: 'number', positive: true, help: 'PGD step (default 2.5 * eps / steps)' },
    temperature: { type: 'string', default: '1', placeholder: 'T', help: 'loss temperature: a number, njs or hns; a comma list runs each' },
    dataset: { type: 'enum', choices: DATASET_NAMES, help: 'dataset (default: the one the model was trained on)' },
    limit: { type: 'int', positive: true, help: 'attack the first N test images only' },
    batchSize: { type: 'int', positive: true, default: 100, help: 'images per attack batch' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed of the PGD random starts' },
    json: { type: 'string', placeholder: 'FILE', help: 'also write the results as JSON to FILE' },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'compute backend: reference, native or wasm (default: native when the addon loads)' },
    progress: { type: 'boolean', default: true, help: 'hide the progress bar' },
  },
  run(options, io) {
    if (options.checkpoint === undefined) throw new UsageError('give the checkpoint to attack: lowbit attack RUN (a lowbit train run directory or checkpoint.safetensors)', 'attack');
    const eps = parseEpsList(options.eps);
    const temperatures = parseTemperatures(options.temperature);
    if (options.attack === 'fgsm' && options.stepSize !== undefined) throw new UsageError('--step-size applies to --attack pgd (FGSM steps by eps)', 'attack');
    const input = resolveModelInput(options.checkpoint, 'attack: checkpoint', 'attack', 'checkpoint', 'a lowbit train run directory or checkpoint.safetensors');
    if (input.kind === 'lowbit') throw new UsageError(`'${options.checkpoint}' is ${input.directory ? 'a folder with a .lowbit integer model' : 'a .lowbit integer model'}: integer models have no gradient; attack the training checkpoint it came from`, 'attack');
    if (options.json !== undefined) checkOutputFile(options.json, 'attack: --json', input.file);
    useBackend(options.backend);
    const { model, config, arch, quantLabel, normalize } = modelOfCheckpoint(input.file, 'attack', { defaultArch: 'lenet5' });
    const datasetName = options.dataset ?? (typeof config.dataset === 'string' ? config.dataset : 'mnist');
    if (!isDatasetName(datasetName)) throw new Error(`attack: the checkpoint names an unknown dataset '${datasetName}' (pass --dataset: ${DATASET_NAMES.join(', ')})`);
    const dataset: DatasetName = datasetName;
    const test = loadDataset(dataset, 'test');
    const samples = Math.min(test.length, options.limit ?? test.length);
    const quantText = quantLabel;
    io.print(`lowbit attack  ${input.file}`);
    io.print(`  model      ${arch}, ${quantText}`);
    const trainedOn = typeof config.dataset === 'string' ? config.dataset : undefined;
    const mismatch = trainedOn !== undefined && trainedOn !== dataset ? ` -- NOTE: the model was trained on ${trainedOn} (--dataset ${dataset})` : '';
    io.print(`  data       ${dataset} test, ${samples} images; eps ${eps.join(', ')} (pixels in [0, 1])${mismatch}`);
    io.print(`  attack     ${options.attack === 'pgd' ? `PGD, ${options.steps} steps of ${options.stepSize ?? '2.5·eps/steps'}, random start (seed ${options.seed})` : 'FGSM'}`);
    const reports: RobustnessReport[] = [];
    // A temperature rule that cannot be computed (NJS on a model whose input gradient is zero
    // everywhere) is reported on its row; the other temperatures still run. All failing is an error.
    const failed: { temperature: number | 'njs' | 'hns'; error: string }[] = [];
    for (const temperature of temperatures) {
      try {
        reports.push(evaluateRobustness(model, test, {
          eps, attack: options.attack, temperature, steps: options.steps, ...(options.stepSize !== undefined ? { stepSize: options.stepSize } : {}),
          normalize: normalize ?? DATASET_STATS[dataset], limit: samples, batchSize: options.batchSize, seed: options.seed,
          progress: options.progress, progressStream: io.stderr,
        }));
      } catch (e) {
        if (temperatures.length === 1) throw e;
        failed.push({ temperature, error: (e as Error).message });
      }
    }
    if (reports.length === 0) throw new Error(`attack: no temperature could be evaluated: ${failed.map((f) => `${f.temperature}: ${f.error}`).join('; ')}`);
    const header = ['temperature'.padEnd(24), 'clean'.padStart(8), ...eps.map((e) => `eps ${e}`.padStart(10)), 'zero grad T=1/T'.padStart(17), 'saturated T=1/T'.padStart(17)];
    io.print(header.join('  '));
    for (const r of reports) {
      const pair = (a: number, b: number) => `${(a * 100).toFixed(1)}/${(b * 100).toFixed(1)} %`.padStart(17);
      io.print([
        temperatureLabel(r).padEnd(24), formatPercent(r.cleanAccuracy).padStart(8), ...r.results.map((e) => formatPercent(e.robustAccuracy).padStart(10)),
        pair(r.gradientAtT1.zeroGradient, r.gradientScaled.zeroGradient), pair(r.gradientAtT1.saturated, r.gradientScaled.saturated),
      ].join('  '));
    }
    for (const f of failed) io.print(`${String(f.temperature).padEnd(24)}  not evaluated: ${f.error}`);
    io.print('robust accuracy per eps; attack success rate (of the clean-correct images) in the JSON output');
    if (options.json !== undefined) {
      const out = { checkpoint: input.file, model: arch, quant: quantText, dataset, ...(trainedOn !== undefined ? { trainedOn } : {}), samples, attack: options.attack, eps, reports, ...(failed.length > 0 ? { failed } : {}) };
      writeFileAtomic(options.json, new TextEncoder().encode(`${JSON.stringify(out, null, 2)}\n`));
      io.print(`wrote ${options.json}`);
    }
  },
});
