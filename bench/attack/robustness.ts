/**
 * Robustness of LeNet-5 on MNIST trained briefly as fp32, W4A4, W2A2 and binary (W1A1) under FGSM
 * and PGD at eps 0.1 / 0.2, with the loss at T = 1 and at the NJS / HNS temperatures of Gupta &
 * Ajanthan (AAAI 2022): does the low-bit nets' apparent robustness disappear once the gradients
 * are rescaled? The table in docs/robustness.md comes from this script.
 *
 *   nice -n 10 node --import tsx bench/attack/robustness.ts [--limit 1000] [--epochs 2] [--steps 20] [--out FILE]
 *
 * Each model is the `lowbit train --quant <q> --epochs <epochs> --baseline none` run in
 * runs/attack/lenet5-<q> (trained first when its checkpoint is missing), loaded with the same
 * function `lowbit attack` uses. Two extra rows wrap the fp32 and W1A1 models with their logits
 * multiplied by LOGIT_SCALE: the same decision boundary with a saturated softmax, the situation the
 * paper describes for quantized networks, to show what the temperature rules do there. Results: bench/results/attack-robustness.json (atomic write) and a
 * markdown table on stdout. Times are process CPU seconds (process.cpuUsage), for orientation only.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DATASET_STATS, loadDataset } from '../../src/data/index.ts';
import { evaluateRobustness, type RobustnessReport } from '../../src/eval/index.ts';
import { writeFileAtomic } from '../../src/format/index.ts';
import { modelOfCheckpoint } from '../../src/cli/checkpoint-model.ts';
import { Module, type TensorModule } from '../../src/nn/index.ts';
import { mul, type Tensor } from '../../src/tensor/index.ts';
import { numberFlag } from '../flags.ts';

/** `inner` with its logits multiplied by `scale` (argmax unchanged). */
class ScaledLogits extends Module {
  readonly inner: TensorModule;
  constructor(inner: TensorModule, readonly scale: number) {
    super();
    this.inner = this.registerModule('inner', inner);
  }
  forward(x: Tensor): Tensor {
    return mul(this.inner.forward(x), this.scale);
  }
}
const LOGIT_SCALE = 20;

const limit = numberFlag('limit', 1000, { integer: true, min: 1 });
const epochs = numberFlag('epochs', 2, { integer: true, min: 1 });
const steps = numberFlag('steps', 20, { integer: true, min: 1 });
const outIndex = process.argv.indexOf('--out');
const out = outIndex >= 0 ? process.argv[outIndex + 1]! : 'bench/results/attack-robustness.json';

const QUANTS = ['fp32', 'w4a4', 'w2a2', 'w1a1'] as const;
const SCALED = new Set<string>(['fp32', 'w1a1']);
const EPS = [0.1, 0.2];
const TEMPERATURES = [1, 'njs', 'hns'] as const;

const test = loadDataset('mnist', 'test');
const rows: { quant: string; attack: string; report: RobustnessReport; cpuSeconds: number }[] = [];
for (const quant of QUANTS) {
  const dir = join('runs', 'attack', `lenet5-${quant}`);
  if (!existsSync(join(dir, 'checkpoint.safetensors'))) {
    const r = spawnSync(process.execPath, ['bin/lowbit.js', 'train', '--quant', quant, '--epochs', String(epochs), '--baseline', 'none', '--out', dir, '--no-progress'], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`training ${quant} failed`);
  }
  const { model } = modelOfCheckpoint(join(dir, 'checkpoint.safetensors'), 'robustness', { defaultArch: 'lenet5' });
  const variants: [string, TensorModule][] = [[quant, model]];
  if (SCALED.has(quant)) variants.push([`${quant}, logits x${LOGIT_SCALE}`, new ScaledLogits(model, LOGIT_SCALE)]);
  for (const [name, variant] of variants) {
    for (const attack of ['fgsm', 'pgd'] as const) {
      for (const temperature of TEMPERATURES) {
        const c0 = process.cpuUsage();
        const report = evaluateRobustness(variant, test, { eps: EPS, attack, temperature, steps, normalize: DATASET_STATS.mnist, limit, progress: process.stderr.isTTY === true });
        const cpu = process.cpuUsage(c0);
        rows.push({ quant: name, attack, report, cpuSeconds: (cpu.user + cpu.system) / 1e6 });
        const r = report;
        console.error(`${name} ${attack} T=${temperature}: clean ${(100 * r.cleanAccuracy).toFixed(1)} %, ${r.results.map((e) => `eps ${e.eps} ${(100 * e.robustAccuracy).toFixed(1)} %`).join(', ')}, zero grad ${(100 * r.gradientAtT1.zeroGradient).toFixed(1)} / ${(100 * r.gradientScaled.zeroGradient).toFixed(1)} %`);
      }
    }
  }
}

const pct = (v: number): string => `${(100 * v).toFixed(1)}`;
const lines = [
  `| model | attack | temperature | clean % | ${EPS.map((e) => `robust % eps ${e}`).join(' | ')} | ${EPS.map((e) => `success % eps ${e}`).join(' | ')} | zero grad % T=1 / scaled | saturated % T=1 / scaled |`,
  `|---|---|---|---:|${EPS.map(() => '---:').join('|')}|${EPS.map(() => '---:').join('|')}|---:|---:|`,
];
for (const { quant, attack, report: r } of rows) {
  const t = r.temperature === 'njs' ? `NJS (T=${r.njsTemperature!.toPrecision(3)})` : r.temperature === 'hns' ? `HNS (mean β=${r.meanBeta.toPrecision(3)})` : `T=${r.temperature}`;
  lines.push(`| LeNet-5 ${quant} | ${attack === 'pgd' ? `PGD-${steps}` : 'FGSM'} | ${t} | ${pct(r.cleanAccuracy)} | ${r.results.map((e) => pct(e.robustAccuracy)).join(' | ')} | ${r.results.map((e) => pct(e.attackSuccessRate)).join(' | ')} | ${pct(r.gradientAtT1.zeroGradient)} / ${pct(r.gradientScaled.zeroGradient)} | ${pct(r.gradientAtT1.saturated)} / ${pct(r.gradientScaled.saturated)} |`);
}
console.log(lines.join('\n'));
writeFileAtomic(out, new TextEncoder().encode(`${JSON.stringify({ date: new Date().toISOString(), limit, epochs, steps, eps: EPS, logitScale: LOGIT_SCALE, rows }, null, 2)}\n`));
console.error(`wrote ${out}`);
