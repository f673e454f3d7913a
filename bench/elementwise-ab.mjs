// A/B timing of the native elementwise kernels of two builds of the addon in ONE process,
// interleaved in short blocks: wall per call (median and best block: the best shows the split
// when the other core happens to be free on a loaded machine) and process.cpuUsage() per call (median):
//
//   node bench/elementwise-ab.mjs <A.node> <B.node> [blocks] [threads]
//
// Cases: binary add and reluBackward on 301,056 same-shape elements, a bias-style broadcast
// ([64, 6, 28, 28] + [1, 6, 1, 1]), unary relu on 301,056, where, and sum over axes [0, 2, 3] of
// [64, 6, 28, 28] (addon.reduce, which is tensorops.cc, not elementwise.cc).
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

const require = createRequire(import.meta.url);
const [pathA, pathB] = process.argv.slice(2, 4).map((p) => resolve(p));
const blocks = Number(process.argv[4] ?? 15);
const threads = Number(process.argv[5] ?? 2);
const addons = { A: require(pathA), B: require(pathB) };
for (const a of Object.values(addons)) a.setThreads(threads);

const n = 301056;
const fill = (len, seed) => Float32Array.from({ length: len }, (_, i) => Math.sin(i * 0.37 + seed) * 2);
const x = fill(n, 1), y = fill(n, 2), bias = fill(6, 3), out = new Float32Array(n), y6 = new Float32Array(6);
const same = Int32Array.from([1, 1, n, 0, 0, 1, 0, 0, 1]);
const chan = Int32Array.from([64, 6, 784, 6 * 784, 784, 1, 0, 1, 0]);
const groups = Int32Array.from([64, 6, 784]), reducedFlags = Int32Array.from([1, 0, 1]);
const cases = {
  'binary add 301056': (a) => a.binary(0, x, y, out, same),
  'binary reluBackward 301056': (a) => a.binary(9, x, y, out, same),
  'binary add [64,6,28,28]+[1,6,1,1]': (a) => a.binary(0, x, bias, out, chan),
  'unary relu 301056': (a) => a.unary(4, x, out),
  'where f32 301056': (a) => a.where(x, x, y, out),
  'sum axes [0,2,3] of [64,6,28,28]': (a) => a.reduce(0, x, y6, groups, reducedFlags),
  'Float32Array.fill 301056 (floor)': () => out.fill(1),
};
const iters = 50;
const median = (v) => [...v].sort((p, q) => p - q)[v.length >> 1];
console.log(`threads ${threads}, ${blocks} blocks x ${iters} calls, A = ${pathA}, B = ${pathB}`);
for (const [name, fn] of Object.entries(cases)) {
  const res = { A: { cpu: [], wall: [] }, B: { cpu: [], wall: [] } };
  for (const k of ['A', 'B']) for (let i = 0; i < 50; i++) fn(addons[k]);
  for (let b = 0; b < blocks; b++) {
    for (const k of b % 2 ? ['B', 'A'] : ['A', 'B']) {
      const addon = addons[k];
      for (let i = 0; i < 5; i++) fn(addon);
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < iters; i++) fn(addon);
      const wall = Number(process.hrtime.bigint() - t0) / 1e3 / iters;
      const c = process.cpuUsage(c0);
      res[k].wall.push(wall);
      res[k].cpu.push((c.user + c.system) / iters);
    }
  }
  const f = (v) => median(v).toFixed(1).padStart(6);
  const m = (v) => Math.min(...v).toFixed(1).padStart(6);
  const side = (k) => `wall ${f(res[k].wall)} (best ${m(res[k].wall)}) cpu ${f(res[k].cpu)}`;
  console.log(`${name.padEnd(34)} A ${side('A')} | B ${side('B')} us`);
}
