/**
 * The WebAssembly SIMD128 GEMM kernel alone (src/runtime/wasm/gemm.ts): multiply-accumulates per
 * second on ResNet-8-like shapes, with the requantization kernel over the same outputs, against
 * the kernel's own instruction bound (one i32x4.dot_i16x8_s = 8 int16 multiply-accumulates).
 *
 *   nice -n 10 node --import tsx bench/runtime-ts/wasm-gemm.ts [--seconds 1] [--out bench/results/runtime-ts-wasm-gemm.json]
 *
 * Process CPU time (the machine is shared); one thread.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { packInt16Weights, requantConstants, WasmGemm } from '../../src/runtime/wasm/gemm.ts';
import { flagOr, numberFlag } from '../flags.ts';

const seconds = numberFlag('seconds', 1, { min: 0.05 });
const outFile = flagOr('out', 'bench/results/runtime-ts-wasm-gemm.json');
const log = (s: string): void => console.log(`[wasm-gemm] ${s}`);
const gemm = WasmGemm.create();
if (!gemm) throw new Error('this engine has no WebAssembly SIMD128');

/** [O, K, P]: a ResNet-8 stage-1/2/3 3×3 conv (K = 9·C) per image, and a LeNet-5 conv2. */
const shapes: [string, number, number, number][] = [
  ['resnet8 stage1 3x3 16->16, 28x28', 16, 144, 784],
  ['resnet8 stage2 3x3 32->32, 14x14', 32, 288, 196],
  ['resnet8 stage3 3x3 64->64, 7x7', 64, 576, 49],
  ['lenet5 conv2 5x5 6->16, 10x10', 16, 150, 100],
];
const rows: Record<string, unknown>[] = [];
for (const [name, O, K, P] of shapes) {
  const w = Int8Array.from({ length: O * K }, (_, i) => ((i * 37) % 255) - 127);
  const packed = packInt16Weights(w, 0, O, K);
  const at = gemm.upload(packed);
  const Pp = Math.ceil(P / 8) * 8;
  const { i16, x } = gemm.operands(packed.K2, Pp, packed.blocks);
  for (let i = 0; i < packed.K2 * Pp * 2; i++) i16[x + i] = ((i * 101) % 511) - 255;
  const time = (f: () => void): number => {
    let calls = 0;
    const c0 = process.cpuUsage();
    let used = 0;
    while (used < seconds) {
      for (let i = 0; i < 20; i++) f();
      calls += 20;
      const c = process.cpuUsage(c0);
      used = (c.user + c.system) / 1e6;
    }
    return used / calls;
  };
  time(() => gemm.gemm(packed, at, Pp)); // warm-up
  const perCall = time(() => gemm.gemm(packed, at, Pp));
  const consts = gemm.uploadF64(requantConstants(Array<number>(O).fill(100), Array<number>(O).fill(2 ** -12), 1));
  const { out, q, list } = gemm.operands(packed.K2, Pp, packed.blocks);
  const perRequant = time(() => gemm.requantize(out, q, O, 1, Pp, Pp, Pp, consts, -128, 127, 0, list));
  const macs = O * K * P; // useful multiply-accumulates
  const computed = packed.blocks * 4 * packed.K2 * 2 * Pp; // including padding
  const row = {
    shape: name, O, K, P,
    gmacPerSecond: macs / perCall / 1e9,
    gmacPerSecondIncludingPadding: computed / perCall / 1e9,
    dotInstructionsPerSecond: computed / 8 / perCall,
    requantizeValuesPerSecond: (O * Pp) / perRequant,
  };
  rows.push(row);
  log(`${name}: ${row.gmacPerSecond.toFixed(2)} GMAC/s useful (${row.gmacPerSecondIncludingPadding.toFixed(2)} with padding, ${(row.dotInstructionsPerSecond / 1e9).toFixed(2)} G dot/s); requantize ${(row.requantizeValuesPerSecond / 1e6).toFixed(0)} M values/s`);
}
mkdirSync('bench/results', { recursive: true });
writeFileSync(`${outFile}.tmp`, JSON.stringify({ bench: 'runtime-ts-wasm-gemm', seconds, loadAverageAtEnd: loadavg(), rows }, null, 2));
renameSync(`${outFile}.tmp`, outFile);
log(`wrote ${outFile}`);
