/**
 * The native integer GRU cell (native/intgru.cc) against IntGRU's TypeScript cell (`gruCellUpdate`):
 * bit for bit on converted QuantGRUs at weight bits 8, 4 and 2 and on random parameters (saturating
 * requantizations, clamped gates and h, biases far past the int16 clamps, 8/16-segment tables that the
 * vector kernel holds, 24-segment and int32-wide tables that it does not), batch 1 and larger, several
 * steps, threaded batches; every cell path the machine runs (avx512, avx2, avx2-loop, scalar, asked for
 * through `run`'s cellPath) on every case; the fallback to the TypeScript cell; the addon's refusal of
 * malformed arguments. Tests tagged [every-isa] run again under LOWBIT_ISA=avx2 and scalar.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative, nativeInfo, setNativeThreads } from '../../backend/native/index.ts';
import { runEveryIsaTests } from '../../backend/native/isa-testing.ts';
import { noGrad } from '../../autograd/index.ts';
import { nativeIntAddon, packInt8Weights } from '../../runtime/kernels/index.ts';
import { randn, Rng } from '../../tensor/index.ts';
import { convertQuantGRU, IntGRU, type IntGRUCellPath, type IntGRUParams } from './intgru.ts';
import { intPwlProblems, pwlShift, type IntPwl } from './pwl.ts';
import { QuantGRU } from './qgru.ts';
import { lstmPwlTables } from './qlstm.ts';

const loaded = loadNative();
const skip = loaded.ok ? false : `native addon not loaded: ${loaded.reason}`;
const forcedIsa = process.env.LOWBIT_ISA;

const int = (rng: Rng, lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
const codes = (rng: Rng, n: number, top = 127): Int8Array => Int8Array.from({ length: n }, () => int(rng, -top, top));

/**
 * A valid random table of n segments: random knots in int16, values and slopes, an int16 output clamp
 * that may be negative at the bottom (so 2^15 − z reaches 2^16 in the h update). `wide`: the first
 * segment's product reaches 2^31 − 1, past what the vector PWL's int32 lanes hold.
 */
function randomTable(rng: Rng, n: number, wide = false): IntPwl {
  const lo = int(rng, -32768, -3000);
  const hi = int(rng, 3000, 32767);
  const set = new Set<number>([lo, hi]);
  while (set.size < n + 1) set.add(int(rng, lo + 1, hi - 1));
  const knots = Int32Array.from([...set].sort((a, b) => a - b));
  const slopes = Int32Array.from({ length: n }, (_, k) => {
    const max = Math.floor((2 ** 31 - 1) / (knots[k + 1]! - knots[k]!));
    return wide && k === 0 ? max * (rng.uniform() < 0.5 ? -1 : 1) : int(rng, -Math.min(max, 2 ** 17), Math.min(max, 2 ** 17));
  });
  const table: IntPwl = {
    inputFrac: 12, outputFrac: 15, slopeFrac: wide ? 24 : 15, outputMin: int(rng, -32768, -500), outputMax: int(rng, 500, 32767),
    knots, values: Int32Array.from({ length: n }, () => int(rng, -40000, 40000)), slopes,
  };
  assert.deepEqual(intPwlProblems(table), []);
  return table;
}

/**
 * Random IntGRU parameters: mostly realistic shifts (28..40), some at the ends of [10, 62]; extreme
 * multipliers (−2^31, 0, ±2^30 for exact halves); biases mostly in int16, some up to ±2^31.
 */
function randomParams(rng: Rng, I: number, H: number, tables: { sigmoid: IntPwl; tanh: IntPwl }): IntGRUParams {
  const rows = 3 * H;
  const multipliers = (): { m: Int32Array; s: Int32Array } => {
    const m = Int32Array.from({ length: rows }, () => {
      const u = rng.uniform();
      if (u < 0.02) return -(2 ** 31);
      if (u < 0.04) return 0;
      if (u < 0.25) return (rng.uniform() < 0.5 ? -1 : 1) * 2 ** 30;
      return (rng.uniform() < 0.2 ? -1 : 1) * int(rng, 2 ** 30, 2 ** 31 - 1);
    });
    // A power-of-two multiplier with a shift of 31..34 makes acc·M·2^−n an exact half for 1/2..1/16 of
    // the accumulators: the rounding of ties (half away from zero) is exercised on both signs.
    const s = Int32Array.from(m, (v) => (Math.abs(v) === 2 ** 30 && rng.uniform() < 0.7 ? int(rng, 31, 34) : rng.uniform() < 0.7 ? int(rng, 28, 40) : int(rng, 10, 62)));
    return { m, s };
  };
  const bias = (): number => {
    const u = rng.uniform();
    if (u < 0.03) return int(rng, -(2 ** 31), 2 ** 31 - 1);
    if (u < 0.08) return int(rng, -(2 ** 27), 2 ** 27);
    return int(rng, -30000, 30000);
  };
  const ih = multipliers();
  const hh = multipliers();
  return {
    inputSize: I, hiddenSize: H, inputScale: 0.05, hiddenScale: 1 / 127,
    weightIh: codes(rng, rows * I), weightHh: codes(rng, rows * H),
    multiplierIh: ih.m, shiftIh: ih.s, multiplierHh: hh.m, shiftHh: hh.s,
    bias: Int32Array.from({ length: rows }, bias), biasHn: Int32Array.from({ length: H }, bias),
    ...outputMultiplier(rng),
    sigmoid: tables.sigmoid, tanh: tables.tanh,
  };
}

/** M_out and n_out: a third of them 2^30·2^−(31..34) (ties of (1 − z)·n on h's grid), some shifts below 30. */
function outputMultiplier(rng: Rng): { outputMultiplier: number; outputShift: number } {
  const sign = rng.uniform() < 0.1 ? -1 : 1;
  if (rng.uniform() < 0.35) return { outputMultiplier: sign * 2 ** 30, outputShift: int(rng, 31, 34) };
  return { outputMultiplier: sign * int(rng, 2 ** 30, 2 ** 31 - 1), outputShift: rng.uniform() < 0.1 ? int(rng, 10, 29) : int(rng, 30, 46) };
}

/** The paths the native cell can run here for tables the vector PWL holds (`vector`) or not, best first. */
function runnablePaths(vector: boolean): IntGRUCellPath[] {
  const isa = nativeInfo()!.isa;
  if (isa === 'scalar') return ['scalar'];
  const loops: IntGRUCellPath[] = ['avx2-loop', 'scalar'];
  if (!vector) return loops;
  return isa === 'avx512' ? ['avx512', 'avx2', ...loops] : ['avx2', ...loops];
}

/**
 * Runs the TypeScript cell and the native cell on its best path and on every other path this machine
 * runs (`vector`: whether the tables fit the vector PWL); asserts equal h of every step and final h;
 * returns the best path (cellBackend).
 */
function compare(gru: IntGRU, L: number, N: number, rng: Rng, what: string, vector: boolean, x?: Int8Array): string {
  const input = x ?? codes(rng, L * N * gru.inputSize);
  const initial = rng.uniform() < 0.8 ? codes(rng, N * gru.hiddenSize) : undefined;
  const ts = gru.run(input, L, N, initial, { native: false });
  const best = gru.run(input, L, N, initial);
  assert.deepEqual(best.output, ts.output, `${what}: h of every step`);
  assert.deepEqual(best.state.h, ts.state.h, `${what}: final h`);
  const paths = runnablePaths(vector);
  assert.equal(gru.cellBackend, `native ${paths[0]}`, `${what}: the best path`);
  for (const cellPath of paths) {
    const native = gru.run(input, L, N, initial, { cellPath });
    assert.deepEqual(native.output, ts.output, `${what}, path ${cellPath}: h of every step`);
    assert.deepEqual(native.state.h, ts.state.h, `${what}, path ${cellPath}: final h`);
  }
  return gru.cellBackend;
}

describe('IntGRU native cell (bit-exact against the TypeScript cell)', { skip }, () => {
  it('[every-isa] runs on the ISA LOWBIT_ISA asks for', () => {
    const isa = nativeInfo()!.isa;
    if (forcedIsa === 'scalar') assert.equal(isa, 'scalar');
    if (forcedIsa === 'avx2') assert.notEqual(isa, 'avx512');
  });

  it('[every-isa] converted QuantGRUs at weight bits 8, 4, 2: batch 1 and 5, 6 steps, large weights that saturate (H 20: a tail of 4 past 8 and 16)', () => {
    const rng = new Rng(21);
    const isa = nativeInfo()!.isa;
    for (const weightBits of [8, 4, 2]) {
      const [I, H, L] = [6, 20, 6];
      const model = new QuantGRU(I, H, { rng, weightBits });
      for (const w of [model.weightIh, model.weightHh]) for (let i = 0; i < w.size; i++) w.data[i] = (rng.uniform() * 2 - 1) * 1.5;
      noGrad(() => model.forward(randn([L, 8, I], { rng })));
      model.eval();
      const runtime = convertQuantGRU(model);
      assert.equal(runtime.params.weightBits, weightBits);
      let saturated = 0;
      for (const N of [1, 5]) {
        const x = runtime.quantizeInput(randn([L, N, I], { rng, std: 2 }).data);
        const path = compare(runtime, L, N, rng, `weightBits ${weightBits}, batch ${N}`, true, x);
        assert.equal(path, `native ${isa}`);
        saturated += runtime.run(x, L, N).output.filter((v) => Math.abs(v) === 127).length;
      }
      assert.ok(saturated > 0, `weightBits ${weightBits}: some h saturate`);
    }
  });

  it('[every-isa] random parameters, states and inputs: default, 8-segment, mse, random, 24-segment and int32-wide tables', () => {
    const rng = new Rng(5);
    const isa = nativeInfo()!.isa;
    const cases: [string, () => { sigmoid: IntPwl; tanh: IntPwl }, boolean][] = [
      ['16 segments', () => lstmPwlTables(16), true],
      ['8 segments', () => lstmPwlTables(8), true],
      ['12 segments, mse', () => lstmPwlTables(12, 'mse'), true],
      ['random 16/5-segment tables', () => ({ sigmoid: randomTable(rng, 16), tanh: randomTable(rng, 5) }), true],
      ['random 24-segment tanh', () => ({ sigmoid: randomTable(rng, 9), tanh: randomTable(rng, 24) }), false],
      ['int32-wide slopes', () => ({ sigmoid: randomTable(rng, 6, true), tanh: randomTable(rng, 11) }), false],
    ];
    let saturatedH = 0;
    let gateClamps = 0;
    for (const [name, tables, vectorTables] of cases) {
      for (const [I, H, L, N] of [[3, 1, 4, 2], [5, 7, 3, 3], [9, 16, 2, 1], [6, 37, 3, 2], [4, 130, 2, 1], [7, 8, 2, 2]] as const) {
        const p = randomParams(rng, I, H, tables());
        const gru = new IntGRU(p);
        const path = compare(gru, L, N, rng, `${name}, I ${I} H ${H} L ${L} N ${N}`, vectorTables);
        const expected = isa === 'scalar' ? 'scalar' : vectorTables ? isa : 'avx2-loop';
        assert.equal(path, `native ${expected}`, name);
        saturatedH += gru.run(codes(rng, N * I), 1, N, codes(rng, N * H)).output.filter((v) => v === 127 || v === -127).length;
        gateClamps += p.bias.filter((b) => Math.abs(b) > 2 ** 26).length;
      }
    }
    assert.ok(saturatedH > 0 && gateClamps > 0, `the cases reach the h clamp (${saturatedH}) and carry biases past ±2^26 (${gateClamps})`);
  });

  it('[every-isa] a batch split between pool threads (blocks of 16 sequences and a tail) equals the TypeScript cell, on 1 and 2 threads (H 24, 29 and the LM\'s 64 -> 128)', () => {
    const rng = new Rng(9);
    const grus = [[11, 24], [11, 29], [64, 128]].map(([I, H]) => new IntGRU(randomParams(rng, I!, H!, lstmPwlTables(16))));
    const saved = nativeInfo()!.threads;
    try {
      for (const threads of [1, 2]) {
        setNativeThreads(threads);
        for (const gru of grus) compare(gru, gru.hiddenSize === 128 ? 8 : 3, gru.hiddenSize === 128 ? 37 : 150, rng, `${threads} threads, H ${gru.hiddenSize}`, true);
      }
    } finally {
      setNativeThreads(saved);
    }
  });

  it('[every-isa] a cell path that cannot run here is refused with the reason (above the active ISA, vector tables too big)', () => {
    const rng = new Rng(13);
    const isa = nativeInfo()!.isa;
    const small = new IntGRU(randomParams(rng, 3, 9, lstmPwlTables(16)));
    const big = new IntGRU(randomParams(rng, 3, 9, { sigmoid: lstmPwlTables(16).sigmoid, tanh: randomTable(rng, 24) }));
    const x = codes(rng, 2 * 3);
    const refused = (gru: IntGRU, cellPath: IntGRUCellPath, why: RegExp): void => {
      assert.throws(() => gru.run(x, 2, 1, undefined, { cellPath }), (e: Error) => /the \S+ cell path cannot run here/.test(e.message) && why.test(e.message), cellPath);
    };
    if (isa !== 'avx512') refused(small, 'avx512', /needs AVX-512/);
    if (isa === 'scalar') for (const path of ['avx2', 'avx2-loop'] as const) refused(small, path, /needs AVX2/);
    if (isa !== 'scalar') {
      assert.equal(big.cellBackend, 'native avx2-loop');
      refused(big, 'avx2', /tables the vector kernel holds/);
      if (isa === 'avx512') refused(big, 'avx512', /tables the vector kernel holds/);
    }
    assert.throws(() => small.run(x, 2, 1, undefined, { native: false, cellPath: 'scalar' }), RangeError);
    // The int64 loop runs any valid tables on every ISA.
    assert.deepEqual(big.run(x, 2, 1, undefined, { cellPath: 'scalar' }), big.run(x, 2, 1, undefined, { native: false }));
  });

  it('refuses parameters it cannot compute exactly (a shift outside [10, 62], invalid tables): run takes the TypeScript cell and says why', () => {
    const rng = new Rng(2);
    const p = randomParams(rng, 3, 4, lstmPwlTables(8));
    const lowShift = new IntGRU({ ...p, shiftHh: p.shiftHh.map((s, r) => (r === 5 ? 9 : s)) });
    assert.match(lowShift.cellBackend, /^typescript \(.*shift is outside \[10, 62\]/);
    const highOut = new IntGRU({ ...p, outputShift: 63 });
    assert.match(highOut.cellBackend, /^typescript \(.*output shift is outside/);
    const knots = p.tanh.knots.slice();
    knots[2] = knots[1]!;
    const badTable = new IntGRU({ ...p, tanh: { ...p.tanh, knots } });
    assert.match(badTable.cellBackend, /^typescript \(tanh table: knots are not strictly increasing/);
    // Still runs (the TypeScript cell): the same integers as with native: false.
    const x = codes(rng, 2 * 3);
    assert.deepEqual(lowShift.run(x, 2, 1), lowShift.run(x, 2, 1, undefined, { native: false }));
    assert.deepEqual(highOut.run(x, 1, 2), highOut.run(x, 1, 2, undefined, { native: false }));
    assert.match(new IntGRU(p).cellBackend, /^native /);
  });

  it('the addon refuses malformed arguments with a clear error (sizes, table layout, buffer types)', () => {
    const { intGruPath, intGruSequence } = nativeIntAddon()!;
    assert.ok(intGruPath && intGruSequence, 'the addon has the integer GRU kernel');
    const rng = new Rng(4);
    const [I, H, L, N] = [3, 5, 2, 2];
    const p = randomParams(rng, I, H, lstmPwlTables(8));
    const rows = new Int32Array(16 * H);
    [p.multiplierIh, p.shiftIh, p.multiplierHh, p.shiftHh, p.bias].forEach((a, j) => rows.set(a, j * 3 * H));
    rows.set(p.biasHn, 15 * H);
    const flat = (t: IntPwl): Int32Array => Int32Array.from([...t.knots, ...t.values, ...t.slopes]);
    const sig = flat(p.sigmoid);
    const tanh = flat(p.tanh);
    const dims = Int32Array.from([L, N, H, I, p.outputMultiplier, p.outputShift, pwlShift(p.sigmoid), p.sigmoid.outputMin, p.sigmoid.outputMax, pwlShift(p.tanh), p.tanh.outputMin, p.tanh.outputMax]);
    assert.match(intGruPath(dims, rows, sig, tanh), /^(avx512|avx2|scalar)$/);
    assert.throws(() => intGruPath(dims.subarray(0, 11), rows, sig, tanh), /intGruPath: dims must hold 12 values/);
    assert.throws(() => intGruPath(dims, rows.subarray(0, 15 * H), sig, tanh), /intGruPath: bad sizes/);
    assert.throws(() => intGruPath(Int32Array.from(dims, (v, i) => (i === 2 ? 0 : v)), rows, sig, tanh), /bad sizes/);
    assert.throws(() => intGruPath(dims, rows, sig.subarray(0, sig.length - 1), tanh), /3n \+ 1 values/);
    assert.throws(() => intGruPath(dims, rows, sig, Float32Array.from(tanh) as unknown as Int32Array), /argument 3 must be an Int32Array/);
    assert.throws(() => intGruPath(Int32Array.from(dims, (v, i) => (i === 9 ? 41 : v)), rows, sig, tanh), /shift is outside \[1, 40\]/);
    assert.throws(() => intGruPath(Int32Array.from(dims, (v, i) => (i === 7 ? -40000 : v)), rows, sig, tanh), /int16 range/);
    const ih = packInt8Weights(p.weightIh, 3 * H, I);
    const hh = packInt8Weights(p.weightHh, 3 * H, H);
    const x = codes(rng, L * N * I);
    const h0 = new Int8Array(N * H);
    const out = new Int8Array(L * N * H);
    intGruSequence(dims, rows, sig, tanh, x, ih.panel!, ih.rowSums, hh.panel!, hh.rowSums, h0, out);
    assert.deepEqual(out, new IntGRU(p).run(x, L, N, h0, { native: false }).output);
    const bad = /intGruSequence: buffer sizes or types do not match the dims/;
    assert.throws(() => intGruSequence(dims, rows, sig, tanh, x.subarray(1), ih.panel!, ih.rowSums, hh.panel!, hh.rowSums, h0, out), bad);
    assert.throws(() => intGruSequence(dims, rows, sig, tanh, x, ih.panel!, ih.rowSums, ih.panel!, ih.rowSums, h0, out), bad);
    assert.throws(() => intGruSequence(dims, rows, sig, tanh, x, ih.panel!, ih.rowSums, hh.panel!, hh.rowSums, h0, out.subarray(1)), bad);
    assert.throws(() => intGruSequence(dims, rows, sig, tanh, x, ih.panel!, ih.rowSums, hh.panel!, hh.rowSums, new Uint8Array(N * H) as unknown as Int8Array, out), bad);
    assert.throws(() => intGruSequence(dims, rows, sig, tanh, x, ih.panel!, ih.rowSums, hh.panel!, hh.rowSums, h0, out, 'avx1024'), /argument 11 must name a cell path/);
    const missingOut = intGruSequence as unknown as (...args: unknown[]) => void;
    assert.throws(() => missingOut(dims, rows, sig, tanh, x, ih.panel!, ih.rowSums, hh.panel!, hh.rowSums, h0), /argument 10/);
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : false }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.equal(passed, 5, `expected the 5 tagged tests to pass:\n${output}`);
    });
  }
});
