/**
 * Why the TypeScript executor's per-value loops avoid `?:` clamps: scale, round and clamp to
 * [0, 255] of 301,056 random int32 accumulators (about half negative, as before a ReLU), with a
 * conditional clamp and with the int32 branch-free clamp of ts-kernels/requantize.ts.
 *
 *   nice -n 10 node --import tsx bench/runtime-ts/clamp-branches.ts
 *
 * Prints ns per value (process CPU time, best of 5 runs of 10 passes).
 */
const n = 64 * 6 * 784;
const acc = new Int32Array(n);
let seed = 1;
for (let i = 0; i < n; i++) {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  acc[i] = (seed % 20000) - 10000;
}
const out = new Int32Array(n);

function conditional(a: Int32Array, o: Int32Array, f: number): void {
  for (let i = 0; i < a.length; i++) {
    const q = Math.floor(a[i]! * f + 0.5);
    o[i] = q < 0 ? 0 : q > 255 ? 255 : q;
  }
}

function branchFree(a: Int32Array, o: Int32Array, f: number): void {
  for (let i = 0; i < a.length; i++) {
    let x = Math.floor(a[i]! * f + 0.5) | 0; // max(x, 0), then 255 − max(255 − x, 0)
    x &= ~(x >> 31);
    let y = 255 - x;
    y &= ~(y >> 31);
    o[i] = 255 - y;
  }
}

for (const fn of [conditional, branchFree]) {
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t = process.cpuUsage();
    for (let k = 0; k < 10; k++) fn(acc, out, 0.013);
    best = Math.min(best, process.cpuUsage(t).user * 1000 / (10 * n));
  }
  console.log(`${fn.name}: ${best.toFixed(2)} ns/value`);
}
