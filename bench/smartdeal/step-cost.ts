/**
 * CPU time of one LeNet-5 training step (forward + backward, batch 64) for fp32, W4 QAT
 * (int4PerChannelSym weights) and SmartDeal (50 % rows removed, int8 basis), measured with
 * process.cpuUsage() over `--steps` steps after 5 warm-up steps, rounds alternating between the
 * variants (CPU time, so background load inflates it less than wall time).
 *
 *   LOWBIT_THREADS=1 nice -n 10 node --import tsx bench/smartdeal/step-cost.ts [--steps 40] [--rounds 3]
 */
import '../../src/backend/index.ts';
import { getBackend } from '../../src/backend/index.ts';
import { lenet5 } from '../../src/nn/index.ts';
import { manualSeed, randn, sum } from '../../src/tensor/index.ts';
import { prepareQat } from '../../src/quant/qat/index.ts';
import { int4PerChannelSym } from '../../src/quant/config/index.ts';
import { prepareSmartDeal } from '../../src/quant/smartdeal/index.ts';
import { flagOr } from '../flags.ts';

const steps = Number(flagOr('steps', '40'));
const rounds = Number(flagOr('rounds', '3'));

manualSeed(0);
const x = randn([64, 1, 28, 28]);
const variants = [
  { name: 'fp32', model: lenet5() },
  { name: 'W4 QAT', model: prepareQat(lenet5(), { weight: int4PerChannelSym, activation: null }) },
  { name: 'SmartDeal 50 %', model: prepareSmartDeal(lenet5(), { sparsity: 0.5 }) },
];
const step = (model: ReturnType<typeof lenet5>): void => {
  model.zeroGrad();
  sum(model.forward(x)).backward();
};
for (const v of variants) for (let i = 0; i < 5; i++) step(v.model);
const best = new Map<string, number>();
for (let r = 0; r < rounds; r++) {
  for (const v of variants) {
    const start = process.cpuUsage();
    for (let i = 0; i < steps; i++) step(v.model);
    const used = process.cpuUsage(start);
    const ms = (used.user + used.system) / steps / 1000;
    best.set(v.name, Math.min(best.get(v.name) ?? Infinity, ms));
  }
}
const base = best.get('fp32')!;
process.stdout.write(`backend ${getBackend()}, threads ${process.env.LOWBIT_THREADS ?? 'default'}: CPU ms per LeNet-5 training step (batch 64, best of ${rounds} rounds of ${steps} steps)\n`);
for (const [name, ms] of best) process.stdout.write(`  ${name.padEnd(16)} ${ms.toFixed(2)} ms  (${(ms / base).toFixed(2)}x fp32)\n`);
