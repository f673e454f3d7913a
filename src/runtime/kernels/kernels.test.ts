import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadAddon } from '../../backend/native/load.ts';
import { crossCheck, crossCheckIntModels, randomIntModels, rng } from './cross-check.ts';
import { compileNativePlan } from '../native-plan.ts';
import {
  cacheAlignedInt32, gemmBinaryRef, gemmInt4Ref, gemmInt8, gemmInt8Ref, intKernelsBackend, packInt8Weights, requantizeValue, roundingDivideByPOT,
  saturatingRoundingDoublingHighMul, setIntKernelsReference,
} from './index.ts';
import { packBinaryRows, packBits } from '../../quant/core/packing.ts';

const crossCheckFile = fileURLToPath(new URL('./cross-check.ts', import.meta.url));

// BigInt definitions of the gemmlowp primitives.
function srdhmBig(a: number, b: number): number {
  if (a === -2147483648 && b === -2147483648) return 2147483647;
  const ab = BigInt(a) * BigInt(b);
  const nudge = ab >= 0n ? 1n << 30n : 1n - (1n << 30n);
  return Number((ab + nudge) / (1n << 31n)); // BigInt division truncates toward zero
}

function rdbpotBig(x: number, e: number): number {
  const mask = (1n << BigInt(e)) - 1n;
  const bx = BigInt(x);
  const remainder = bx & mask;
  const threshold = (mask >> 1n) + (x < 0 ? 1n : 0n);
  return Number((bx >> BigInt(e)) + (remainder > threshold ? 1n : 0n));
}

test('saturatingRoundingDoublingHighMul and roundingDivideByPOT match their BigInt definitions', () => {
  const next = rng(99);
  const special = [0, 1, -1, 2, -2, 2147483647, -2147483648, 1073741824, -1073741824, 1073741823, 65535, -65536, 32768];
  const values: number[] = [...special];
  for (let i = 0; i < 3000; i++) values.push(next() | 0);
  for (let i = 0; i < values.length; i++) {
    const a = values[i]!;
    for (const b of [values[(i * 7) % values.length]!, special[i % special.length]!, 1518500250, -1518500250]) {
      assert.equal(saturatingRoundingDoublingHighMul(a, b), srdhmBig(a, b), `srdhm(${a}, ${b})`);
    }
    for (const e of [0, 1, 2, 5, 15, 16, 30, 31]) assert.equal(roundingDivideByPOT(a, e), rdbpotBig(a, e), `rdbpot(${a}, ${e})`);
  }
  // gemmlowp's doubling high mul: 0.5 * 3 = 1.5 -> 2, but -1.5 -> -1 (its nudge 1 - 2^30 for
  // negative products plus truncation rounds negative ties up); the final shift rounds ties away.
  assert.equal(requantizeValue(3, 1073741824, 0), 2);
  assert.equal(requantizeValue(-3, 1073741824, 0), -1);
  assert.equal(requantizeValue(-100, 1073741824, 2), -13);
  assert.equal(requantizeValue(100, 1073741824, 2), 13); // 100 * 0.5 / 4 = 12.5 -> 13
});

test('reference GEMMs agree with the packing helpers of quant/core', () => {
  const M = 3, N = 5, K = 70;
  const next = rng(5);
  const a = new Int8Array(M * K).map(() => (next() % 255) - 127);
  const w4 = Array.from({ length: N * K }, () => (next() % 16) - 8);
  const rowsPacked = new Uint8Array(N * Math.ceil(K / 2));
  for (let n = 0; n < N; n++) rowsPacked.set(packBits(w4.slice(n * K, (n + 1) * K), 4), n * Math.ceil(K / 2));
  const c4 = new Int32Array(M * N), c8 = new Int32Array(M * N);
  gemmInt4Ref(M, N, K, a, 3, rowsPacked, c4);
  gemmInt8Ref(M, N, K, a, 3, Int8Array.from(w4), c8);
  assert.deepEqual(c4, c8);
  // binary: the ±1 dot product
  const av = Array.from({ length: M * K }, () => (next() & 1 ? 1 : -1));
  const wv = Array.from({ length: N * K }, () => (next() & 1 ? 1 : -1));
  const cb = new Int32Array(M * N);
  gemmBinaryRef(M, N, K, packBinaryRows(av, M, K), packBinaryRows(wv, N, K), cb);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += av[m * K + k]! * wv[n * K + k]!;
      assert.equal(cb[m * N + n], s);
    }
  }
});

test('the reference path can be forced (the fallback without the addon)', () => {
  setIntKernelsReference(true);
  try {
    assert.equal(intKernelsBackend().int8, 'reference');
    const c = new Int32Array(2);
    gemmInt8(1, 2, 3, new Uint8Array([1, 2, 3]), 1, packInt8Weights(new Int8Array([1, 1, 1, -1, 0, 2]), 2, 3), c);
    assert.deepEqual([...c], [3, 4]);
  } finally {
    setIntKernelsReference(false);
  }
});

const addon = loadAddon();
const hasNative = !!addon?.gemmInt8Packed;

test('native integer kernels equal the reference exactly (M, N, K in {1, 3, 17, 64, 65, 129, 400})', { skip: !hasNative && 'addon without integer kernels' }, () => {
  assert.notEqual(intKernelsBackend().int8, 'reference');
  assert.deepEqual(crossCheck(false, 1234).slice(0, 10), []);
});

// LOWBIT_ISA=avx2 runs the AVX-VNNI ymm int8 kernel where the CPU has AVX-VNNI, avx2-novnni the int16 one
const avxVnniCpu = !!addon?.info().features.includes('avxvnni');
const int8PathOf: Record<string, string> = { avx2: avxVnniCpu ? 'avx-vnni' : 'avx2', 'avx2-novnni': 'avx2', scalar: 'scalar' };
for (const isa of ['avx2', 'avx2-novnni', 'scalar']) {
  test(`native integer kernels with LOWBIT_ISA=${isa} equal the reference`, { skip: !hasNative && 'addon without integer kernels' }, () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', crossCheckFile, 'quick'], {
      encoding: 'utf8', env: { ...process.env, LOWBIT_ISA: isa }, timeout: 300_000,
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { int8: string; binary: string };
    assert.equal(out.int8, int8PathOf[isa]);
  });
}

test('native argument checks throw instead of reading out of bounds', { skip: !hasNative && 'addon without integer kernels' }, () => {
  assert.throws(() => addon!.gemmLowBit!(4, 2, 2, 8, new Uint8Array(15), 0, new Uint8Array(8), new Int32Array(4)));
  assert.throws(() => addon!.gemmBinary!(2, 2, 65, new Uint8Array(16), new Uint8Array(32), new Int32Array(4)));
  assert.throws(() => addon!.requantize!(new Int32Array(4), 2, 2, new Int32Array(2), new Int32Array([0, 40]), 0, -128, 127, new Int8Array(4)));
  assert.throws(() => addon!.requantize!(new Int32Array(4), 2, 2, new Int32Array(2), new Int32Array(2), 0, 0, 300, new Uint8Array(4)));
});

const hasExecutor = !!addon?.intPlanCreate;

test('native IntModel executor equals the TypeScript executor (random graphs: every node kind, odd shapes and batches)', { skip: !hasExecutor && 'addon without the IntModel executor' }, (t) => {
  const models = randomIntModels(77);
  assert.ok(models.length >= 9);
  for (const { name, model } of models) assert.equal(typeof compileNativePlan(model), 'object', `${name} compiles to a native plan`);
  const kernels = new Set<string>();
  assert.deepEqual(crossCheckIntModels(false, 77, kernels), []);
  assert.deepEqual(crossCheckIntModels(true, 5, kernels), []);
  // every plan variant ran: fused pooling (direct and im2col), both requantize paths, and AMX
  // exactly when the CPU and kernel grant it
  const amx = intKernelsBackend().amx;
  t.diagnostic(`AMX: ${amx}; kernels used: ${[...kernels].sort().join(', ')}`);
  for (const k of ['conv direct+maxpool (int64 requantize)', 'conv direct+maxpool (double requantize)', `conv ${intKernelsBackend().int8}+maxpool (int64 requantize)`, 'linear binary']) {
    assert.ok(kernels.has(k), `kernel '${k}' ran`);
  }
  const amxRan = [...kernels].some((k) => k.includes(' amx'));
  assert.equal(amxRan, amx === 'amx-int8', `AMX kernels ran: ${amxRan}, AMX status '${amx}'`);
  if (amx === 'amx-int8') {
    for (const k of ['conv amx+maxpool (int64 requantize)', 'conv amx-implicit+maxpool (int64 requantize)', 'conv amx-gather+maxpool (int64 requantize)',
      'conv amx-gather (double requantize)', 'linear amx (int64 requantize)']) {
      assert.ok(kernels.has(k), `kernel '${k}' ran`);
    }
  }
});

test('native input quantizer equals the reference on extreme inputs (ties, |x / s| >= 500, infinities, NaN)', { skip: !hasExecutor && 'addon without the IntModel executor' }, () => {
  // the one-channel graphs quantize 16 floats at a time in float32 and fall back to doubles near ties
  for (const { name, model } of randomIntModels(77).filter((m) => m.name.startsWith('cnn-1ch') || m.name.startsWith('cnn fused'))) {
    const per = model.graph.inputShape.reduce((p, d) => p * d, 1);
    const special = [0.5, -0.5, 1.5, 2.5, -2.5, 1e3, -1e3, 37.4, -63.2, 1e30, -1e30, Infinity, -Infinity, Number.NaN, 0, -0];
    const x = new Float32Array(3 * per);
    const next = rng(11);
    for (let i = 0; i < x.length; i++) x[i] = i % 3 === 0 ? special[next() % special.length]! * (next() % 2 ? 1 : 0.0625) : ((next() % 4001) - 2000) / 64;
    model.useNative = false;
    const want = model.run(x, 3);
    model.useNative = true;
    assert.deepEqual(Array.from(model.run(x, 3)), Array.from(want), name);
  }
});

test('intPlanProfile runs the plan like intPlanRun and times every op', { skip: !addon?.intPlanProfile && 'addon without intPlanProfile' }, () => {
  const { model } = randomIntModels(77)[0]!;
  const spec = compileNativePlan(model);
  assert.ok(typeof spec === 'object');
  const plan = addon!.intPlanCreate!(spec.ops);
  const ops = addon!.intPlanKernels!(plan).length;
  const per = model.graph.inputShape.reduce((p, d) => p * d, 1);
  const x = Float32Array.from({ length: 5 * per }, (_, i) => Math.sin(i) * 3);
  const want = new Float32Array(5 * spec.outputSize);
  addon!.intPlanRun!(plan, x, 5, want);
  const got = new Float32Array(5 * spec.outputSize);
  const nanos = new Float64Array(ops);
  addon!.intPlanProfile!(plan, x, 5, got, 2, nanos);
  assert.deepEqual(Array.from(got), Array.from(want));
  assert.ok(nanos.every((v) => v >= 0) && nanos.some((v) => v > 0), `per-op times ${Array.from(nanos).join(', ')}`);
  assert.throws(() => addon!.intPlanProfile!(plan, x, 5, got, 2, new Float64Array(ops - 1)), /too small/);
});

test('native IntModel executor with LOWBIT_AMX=0 (VNNI / AVX-512 GEMMs only) equals the TypeScript executor', { skip: !hasExecutor && 'addon without the IntModel executor' }, (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', crossCheckFile, 'quick'], {
    encoding: 'utf8', env: { ...process.env, LOWBIT_AMX: '0' }, timeout: 300_000,
  });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { amx: string; kernels: string[] };
  t.diagnostic(`child: AMX ${out.amx}; kernels used: ${out.kernels.join(', ')}`);
  assert.equal(out.amx, 'disabled by LOWBIT_AMX=0');
  assert.ok(out.kernels.length > 5 && !out.kernels.some((k) => k.includes(' amx')), 'no AMX kernel ran');
});

test('native IntModel plans are validated before use', { skip: !hasExecutor && 'addon without the IntModel executor' }, () => {
  const { model } = randomIntModels(3).find((m) => m.name.startsWith('bnn'))!;
  const spec = compileNativePlan(model);
  assert.ok(typeof spec === 'object');
  const plan = addon!.intPlanCreate!(spec.ops);
  assert.throws(() => addon!.intPlanRun!(plan, new Float32Array(10), 1, new Float32Array(4)), /too small/);
  // a linear whose weights are too short, a chain whose sizes do not match, a plan without the final dequantize
  const shortW = spec.ops.map((op, i) => (i === 1 ? { ...op, w: op.w!.subarray(0, 5) } : op));
  assert.throws(() => addon!.intPlanCreate!(shortW), /weights too short/);
  const badSize = spec.ops.map((op, i) => (i === 0 ? { ...op, meta: op.meta.map((v, j) => (j === 3 || j === 6 ? v + 1 : v)) } : op));
  assert.throws(() => addon!.intPlanCreate!(badSize), /input size/);
  assert.throws(() => addon!.intPlanCreate!(spec.ops.slice(0, -1)), /dequantizing/);
  assert.throws(() => addon!.intPlanCreate!([{ meta: new Int32Array(3), f64: new Float64Array(3) }]), /meta/);
});

test('native int8 GEMM with K over several K blocks (K > 1024) equals the reference exactly', (t) => {
  if (intKernelsBackend().int8 === 'reference') {
    t.skip('native addon not built');
    return;
  }
  const next = rng(2309);
  // K = 2309: 578 groups of 4 in three blocks (193 + 193 + 192), the last group partial;
  // M = 13 ends in a partial micro-tile, N = 70 in a partial 16-column panel of a second block.
  for (const [M, N, K, signed] of [[13, 70, 2309, true], [7, 64, 4096, false]] as const) {
    const a = signed ? new Int8Array(M * K).map(() => (next() & 0xff) - 128) : new Uint8Array(M * K).map(() => next() & 0xff);
    const w = new Int8Array(N * K).map(() => (next() & 0xff) - 128);
    const zero = signed ? -3 : 131;
    const want = new Int32Array(M * N), got = new Int32Array(M * N);
    gemmInt8Ref(M, N, K, a, zero, w, want);
    gemmInt8(M, N, K, a, zero, packInt8Weights(w, N, K), got);
    assert.deepEqual(got, want, `M ${M} N ${N} K ${K}`);
  }
});

test('native AMX int8 GEMM equals the reference exactly (several tasks, odd tile counts, 1 and 2 threads)', (t) => {
  if (!addon?.gemmInt8Amx || intKernelsBackend().amx !== 'amx-int8') {
    t.skip(`AMX GEMM not available (${intKernelsBackend().amx})`);
    return;
  }
  const next = rng(4242);
  const saved = addon.info().threads;
  try {
    // M = 77: three 32-row tasks, the last one a single partial row tile (paired with zero rows);
    // N = 40: three column tiles, the last one partial and paired with itself; K = 130: three
    // k-tiles, the last one 2 bytes; M = 64, N = 32, K = 64: whole tiles only; 100 x 208 x 300 is
    // large enough to run on the pool (4 tasks) when it has 2 threads; 520 x 512 x 70 has a 1 MB,
    // line-aligned C, written with streaming stores.
    for (const threads of [1, 2]) {
      addon.setThreads(threads);
      for (const [M, N, K, signed] of [[77, 40, 130, true], [64, 32, 64, false], [33, 17, 300, false], [100, 208, 300, true], [520, 512, 70, false]] as const) {
        const a = signed ? new Int8Array(M * K).map(() => (next() & 0xff) - 128) : new Uint8Array(M * K).map(() => next() & 0xff);
        const w = new Int8Array(N * K).map(() => (next() & 0xff) - 128);
        const zero = signed ? 5 : 127;
        const want = new Int32Array(M * N);
        gemmInt8Ref(M, N, K, a, zero, w, want);
        const packed = new Int8Array(addon.amxPackedBytes!(N, K));
        addon.packInt8Amx!(w, N, K, packed);
        const rowSums = new Int32Array(N);
        for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) rowSums[n]! += w[n * K + k]!;
        const got = cacheAlignedInt32(M * N).fill(-1);
        addon.gemmInt8Amx!(M, N, K, a, zero, packed, rowSums, got);
        assert.deepEqual(got, want, `M ${M} N ${N} K ${K} on ${threads} thread(s)`);
      }
    }
  } finally {
    addon.setThreads(saved);
  }
});
