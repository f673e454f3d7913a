/**
 * CPU time per training step (batch 64, SGD as bench/workloads.ts) of the all-adder LeNet-5, on
 * the native backend (whatever adder kernels it has) or the reference one. process.cpuUsage() over
 * the timed steps (user + system, all threads), after `warmup` steps.
 *
 *   LOWBIT_THREADS=2 nice -n 10 node --import tsx bench/mulfree/adder-step.ts [native|no-adder|reference] [steps] [warmup]
 *
 * `no-adder`: the native backend with the addon's adder entry points removed, so its adder kernels
 * decline and the reference (TypeScript) ones run: the figure before the native adder kernels.
 *
 * Prints one JSON line: { mode, threads, steps, cpuMsPerStep, wallMsPerStep }.
 */
process.env.LOWBIT_THREADS ??= '2';

const { setBackend } = await import('../../src/backend/index.ts');
const { mulFreeLeNet5 } = await import('../../src/nn/mulfree/index.ts');
const { manualSeed } = await import('../../src/tensor/index.ts');
const workloads = await import('../workloads.ts');

const { nativeAddon } = await import('../../src/backend/native/index.ts');

const mode = process.argv[2] ?? 'native';
if (!['native', 'no-adder', 'reference'].includes(mode)) throw new Error(`mode must be native, no-adder or reference, got ${mode}`);
const backend = mode === 'reference' ? 'reference' : 'native';
const steps = Number(process.argv[3] ?? 10);
const warmup = Number(process.argv[4] ?? 3);
setBackend(backend);
if (mode === 'no-adder') {
  const addon = nativeAddon() as unknown as Record<string, unknown> | null;
  if (!addon) throw new Error('native addon not loaded');
  delete addon.adderConv2d;
  delete addon.adderConv2dGrad;
}
manualSeed(0);
const step = workloads.trainStepper(mulFreeLeNet5('all-adder'), workloads.batchPool(64, 4).batches);
for (let i = 0; i < warmup; i++) step();
const cpu0 = process.cpuUsage();
const t0 = performance.now();
for (let i = 0; i < steps; i++) step();
const wall = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
console.log(JSON.stringify({
  mode, threads: Number(process.env.LOWBIT_THREADS), steps,
  cpuMsPerStep: Number(((cpu.user + cpu.system) / 1000 / steps).toFixed(1)), wallMsPerStep: Number((wall / steps).toFixed(1)),
}));
