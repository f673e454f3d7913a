/**
 * Where the TypeScript executor's time goes: ResNet-8 W8A8 (or another bench model), batch 64,
 * `tsKernels` 'wasm' (or 'double'), a fixed number of batches under the V8 CPU profiler
 * (node:inspector, the same sampler as `node --cpu-prof`). Prints self time per function, the top
 * of the list, and writes the profile (open it in Chrome DevTools) and the summary.
 *
 *   nice -n 10 node --import tsx bench/runtime-ts/profile.ts [--model resnet8-w8a8] [--kernels wasm]
 *       [--batch 64] [--batches 30] [--top 25] [--out bench/results/runtime-ts-profile.json]
 *       [--cpuprofile /tmp/runtime-ts.cpuprofile]
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { loadavg } from 'node:os';
import { manualSeed, randn } from '../../src/tensor/index.ts';
import { flagOr, numberFlag } from '../flags.ts';
import { buildBenchModel } from './models.ts';

const [kind, scheme] = flagOr('model', 'resnet8-w8a8').split('-') as ['lenet5' | 'resnet8' | 'cnn', 'w8a8' | 'w4a4'];
const kernels = flagOr('kernels', 'wasm');
if (kernels !== 'wasm' && kernels !== 'double') throw new Error(`--kernels must be wasm or double, got '${kernels}'`);
const batch = numberFlag('batch', 64, { integer: true, min: 1 });
const batches = numberFlag('batches', 30, { integer: true, min: 1 });
const top = numberFlag('top', 25, { integer: true, min: 1 });
const outFile = flagOr('out', 'bench/results/runtime-ts-profile.json');
const profileFile = flagOr('cpuprofile', '');
const log = (s: string): void => console.log(`[runtime-ts-profile] ${s}`);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

const { label, im } = buildBenchModel(kind, scheme, 0);
manualSeed(7);
const data = randn([batch, 1, 28, 28]).data as Float32Array;
im.useNative = false;
im.tsKernels = kernels;
im.run(data, batch); // warm-up: weights packed and uploaded, code compiled
im.run(data, batch);

const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 200 });
await session.post('Profiler.start');
const c0 = process.cpuUsage();
const t0 = performance.now();
for (let i = 0; i < batches; i++) im.run(data, batch);
const wall = (performance.now() - t0) / 1000;
const c = process.cpuUsage(c0);
const { profile } = (await session.post('Profiler.stop')) as { profile: Profile };
session.disconnect();

// self time per function (name + file:line), from the sample deltas
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<string, number>();
let total = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const node = byId.get(profile.samples[i]!)!;
  const dt = profile.timeDeltas[i]! / 1000; // ms
  const f = node.callFrame;
  const file = f.url.replace(/^.*\/(src|bench|node_modules)\//, '$1/');
  const key = `${f.functionName || '(anonymous)'} ${file ? `${file}:${f.lineNumber + 1}` : ''}`.trim();
  self.set(key, (self.get(key) ?? 0) + dt);
  total += dt;
}
const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).map(([fn, ms]) => ({ function: fn, selfMs: ms, share: ms / total }));
const cpu = (c.user + c.system) / 1e6;
log(`${label}, tsKernels ${kernels}, batch ${batch} × ${batches}: ${((batch * batches) / wall).toFixed(0)} images/s wall, ${((batch * batches) / cpu).toFixed(0)} per CPU second; load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
for (const r of rows.slice(0, top)) log(`${(100 * r.share).toFixed(1).padStart(5)} %  ${r.selfMs.toFixed(0).padStart(6)} ms  ${r.function}`);
if (profileFile) {
  writeFileSync(profileFile, JSON.stringify(profile));
  log(`wrote ${profileFile}`);
}
mkdirSync('bench/results', { recursive: true });
writeFileSync(`${outFile}.tmp`, JSON.stringify({
  bench: 'runtime-ts-profile', model: label, kernels, batch, batches, imagesPerSecondWall: (batch * batches) / wall,
  imagesPerSecondCpu: (batch * batches) / cpu, loadAverageAtEnd: loadavg(), sampledMs: total, top: rows.slice(0, top),
}, null, 2));
renameSync(`${outFile}.tmp`, outFile);
log(`wrote ${outFile}`);
