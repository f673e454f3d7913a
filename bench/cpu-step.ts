/**
 * CPU time and wall time per LeNet-5 training step (batch 64) or inference call (batch 256) of a
 * lowbit checkout, for A/B comparisons on a loaded machine: run it alternately on two checkouts
 * (process.cpuUsage() per call is far less sensitive to other processes than wall time).
 *
 *   node --import tsx bench/cpu-step.ts [checkout root] [train|infer] [seconds]
 *
 * Prints one JSON line: { root, mode, cpuMsPerCall, wallMsPerCall, itemsPerSecWall }.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = resolve(process.argv[2] ?? '.');
const mode = process.argv[3] === 'infer' ? 'infer' : 'train';
const seconds = Number(process.argv[4] ?? 3);
const load = (path: string): Promise<Record<string, unknown>> => import(pathToFileURL(resolve(root, path)).href);

async function main(): Promise<void> {
  const { noGrad } = (await load('src/autograd/index.ts')) as typeof import('../src/autograd/index.ts');
  const workloads = (await load('bench/workloads.ts')) as typeof import('./workloads.ts');
  const { setBackend } = (await load('src/backend/index.ts')) as typeof import('../src/backend/index.ts');
  setBackend('native');
  let call: () => void;
  let items: number;
  if (mode === 'infer') {
    const x = workloads.batchPool(256, 1, 'test').batches[0]!.x;
    const model = workloads.buildModel('lenet5');
    model.eval();
    call = () => void noGrad(() => model.forward(x));
    items = 256;
  } else {
    call = workloads.trainStepper(workloads.buildModel('lenet5'), workloads.batchPool(64, 8).batches);
    items = 64;
  }
  for (let i = 0; i < 20; i++) call();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let calls = 0;
  while (performance.now() - t0 < seconds * 1000) {
    call();
    calls++;
  }
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  console.log(JSON.stringify({ root, mode, cpuMsPerCall: (cpu.user + cpu.system) / 1000 / calls, wallMsPerCall: wall / calls, itemsPerSecWall: (items * calls) / (wall / 1000) }));
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
