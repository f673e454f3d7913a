/**
 * The native integer LSTM cell (native/irnn.cc) against IntLSTM's TypeScript cell: bit for bit on
 * random parameters, states and inputs (saturating requantizations, clamped gates and cells, tables
 * of 8/16 segments, of 24 segments and with products too wide for int32 lanes, odd hidden sizes,
 * threaded batches). Tests tagged [every-isa] run again under LOWBIT_ISA=avx2 and scalar.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative, nativeInfo, setNativeThreads } from '../../backend/native/index.ts';
import { Rng } from '../../tensor/index.ts';
import { IntLSTM, type IntLSTMParams, type IntLSTMState } from './intlstm.ts';
import { intPwlProblems, type IntPwl } from './pwl.ts';
import { lstmPwlTables } from './qlstm.ts';
import { runEveryIsaTests } from '../../backend/native/isa-testing.ts';

const loaded = loadNative();
const skip = loaded.ok ? false : `native addon not loaded: ${loaded.reason}`;
const forcedIsa = process.env.LOWBIT_ISA;

const int = (rng: Rng, lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));

/** A valid random table: n segments on a random knot range, random values and slopes, an int16 output clamp. */
function randomTable(rng: Rng, n: number, wide = false): IntPwl {
  const lo = int(rng, -32768, -2000);
  const hi = int(rng, 2000, 32767);
  const set = new Set<number>([lo, hi]);
  while (set.size < n + 1) set.add(int(rng, lo + 1, hi - 1));
  const knots = Int32Array.from([...set].sort((a, b) => a - b));
  const values = Int32Array.from({ length: n }, () => int(rng, -40000, 40000));
  const slopeFrac = wide ? 24 : 15;
  const slopes = Int32Array.from({ length: n }, (_, k) => {
    const width = knots[k + 1]! - knots[k]!;
    const max = Math.floor((2 ** 31 - 1) / width);
    // wide: the products reach within 2^20 of 2^31, past what int32 lanes hold with the rounding half added.
    return wide && k === 0 ? max * (rng.uniform() < 0.5 ? -1 : 1) : int(rng, -Math.min(max, 2 ** 17), Math.min(max, 2 ** 17));
  });
  const table: IntPwl = { inputFrac: 12, outputFrac: 15, slopeFrac, outputMin: int(rng, -32768, -1000), outputMax: int(rng, 1000, 32767), knots, values, slopes };
  assert.deepEqual(intPwlProblems(table), []);
  return table;
}

/** Random parameters: mostly realistic shifts (28..40), some extreme ones (10..62), big biases, edge and power-of-two multipliers. */
function randomParams(rng: Rng, I: number, H: number, tables: { sigmoid: IntPwl; tanh: IntPwl }): IntLSTMParams {
  const rows = 4 * H;
  const int8 = (n: number): Int8Array => Int8Array.from({ length: n }, () => int(rng, -127, 127));
  const multipliers = (): { m: Int32Array; s: Int32Array } => {
    const m = Int32Array.from({ length: rows }, () => {
      const u = rng.uniform();
      if (u < 0.02) return -(2 ** 31);
      if (u < 0.04) return 0;
      // A power of two: acc·M·2^−n is a multiple of 1/2 often, so the rounding of exact ties is exercised.
      if (u < 0.2) return (rng.uniform() < 0.5 ? -1 : 1) * 2 ** 30;
      return (rng.uniform() < 0.2 ? -1 : 1) * int(rng, 2 ** 30, 2 ** 31 - 1);
    });
    const s = Int32Array.from({ length: rows }, () => (rng.uniform() < 0.7 ? int(rng, 28, 40) : int(rng, 10, 62)));
    return { m, s };
  };
  const ih = multipliers();
  const hh = multipliers();
  return {
    inputSize: I, hiddenSize: H, inputScale: 0.05, hiddenScale: 1 / 127,
    weightIh: int8(rows * I), weightHh: int8(rows * H),
    multiplierIh: ih.m, shiftIh: ih.s, multiplierHh: hh.m, shiftHh: hh.s,
    bias: Int32Array.from({ length: rows }, () => (rng.uniform() < 0.05 ? int(rng, -(2 ** 24), 2 ** 24) : int(rng, -30000, 30000))),
    outputMultiplier: (rng.uniform() < 0.3 ? 2 ** 30 : int(rng, 2 ** 30, 2 ** 31 - 1)) * (rng.uniform() < 0.1 ? -1 : 1), outputShift: int(rng, 30, 46),
    sigmoid: tables.sigmoid, tanh: tables.tanh,
  };
}

function randomState(rng: Rng, N: number, H: number): IntLSTMState {
  return {
    h: Int8Array.from({ length: N * H }, () => int(rng, -127, 127)),
    c: Int16Array.from({ length: N * H }, () => (rng.uniform() < 0.1 ? (rng.uniform() < 0.5 ? -32768 : 32767) : int(rng, -32768, 32767))),
  };
}

/** Runs native and TypeScript; asserts equal outputs and final states; returns the native cell path. */
function compare(p: IntLSTMParams, L: number, N: number, rng: Rng, what: string): string {
  const lstm = new IntLSTM(p);
  const x = Int8Array.from({ length: L * N * p.inputSize }, () => int(rng, -127, 127));
  const initial = rng.uniform() < 0.8 ? randomState(rng, N, p.hiddenSize) : undefined;
  const native = lstm.run(x, L, N, initial);
  const ts = lstm.run(x, L, N, initial, { native: false });
  assert.deepEqual(native.output, ts.output, `${what}: h of every step`);
  assert.deepEqual(native.state.c, ts.state.c, `${what}: final c`);
  assert.deepEqual(native.state.h, ts.state.h, `${what}: final h`);
  return lstm.cellBackend;
}

describe('IntLSTM native cell (bit-exact against the TypeScript cell)', { skip }, () => {
  it('[every-isa] runs on the ISA LOWBIT_ISA asks for', () => {
    const isa = nativeInfo()!.isa;
    if (forcedIsa === 'scalar') assert.equal(isa, 'scalar');
    if (forcedIsa === 'avx2') assert.notEqual(isa, 'avx512');
  });

  it('[every-isa] random parameters, states and inputs: default, 8-segment, mse, random, 24-segment and int32-wide tables', () => {
    const rng = new Rng(5);
    const isa = nativeInfo()!.isa;
    const cases: [string, () => { sigmoid: IntPwl; tanh: IntPwl }, boolean][] = [
      ['16 segments', () => lstmPwlTables(16), true],
      ['8 segments', () => lstmPwlTables(8), true],
      ['12 segments, mse', () => lstmPwlTables(12, 'mse'), true],
      ['random 16-segment tables', () => ({ sigmoid: randomTable(rng, 16), tanh: randomTable(rng, 5) }), true],
      ['random 24-segment tanh', () => ({ sigmoid: randomTable(rng, 9), tanh: randomTable(rng, 24) }), false],
      ['int32-wide slopes', () => ({ sigmoid: randomTable(rng, 6, true), tanh: randomTable(rng, 11) }), false],
    ];
    let saturatedCells = 0;
    let saturatedH = 0;
    for (const [name, tables, vectorTables] of cases) {
      for (const [I, H, L, N] of [[3, 1, 4, 2], [5, 7, 3, 3], [9, 16, 2, 4], [6, 37, 3, 2], [4, 130, 2, 1]] as const) {
        const p = randomParams(rng, I, H, tables());
        const path = compare(p, L, N, rng, `${name}, I ${I} H ${H} L ${L} N ${N}`);
        // Tables too large for the vector PWL take the int64 row loop (compiled for AVX2).
        const expected = isa === 'scalar' ? 'scalar' : vectorTables ? isa : 'avx2-loop';
        assert.equal(path, `native ${expected}`, name);
        const lstm = new IntLSTM(p);
        const { state } = lstm.run(Int8Array.from({ length: N * I }, () => int(rng, -127, 127)), 1, N, randomState(rng, N, H));
        saturatedCells += state.c.filter((v) => v === 32767 || v === -32768).length;
        saturatedH += state.h.filter((v) => v === 127 || v === -127).length;
      }
    }
    assert.ok(saturatedCells > 0 && saturatedH > 0, `the cases reach the clamps (c ${saturatedCells}, h ${saturatedH})`);
  });

  it('[every-isa] a batch split between pool threads (blocks of 16 sequences and a tail) equals the TypeScript cell, on 1 and 2 threads', () => {
    const rng = new Rng(9);
    const p = randomParams(rng, 11, 24, lstmPwlTables(16));
    const lm = randomParams(rng, 64, 128, lstmPwlTables(16));
    const saved = nativeInfo()!.threads;
    try {
      for (const threads of [1, 2]) {
        setNativeThreads(threads);
        compare(p, 3, 150, rng, `${threads} threads`);
        compare(lm, 8, 37, rng, `${threads} threads, the LM's input 64, hidden 128, 8 steps`);
      }
    } finally {
      setNativeThreads(saved);
    }
  });

  it('refuses parameters it cannot compute exactly (a shift outside [10, 62], invalid tables): run takes the TypeScript cell and says why', () => {
    const rng = new Rng(2);
    const p = randomParams(rng, 3, 4, lstmPwlTables(8));
    const lowShift = new IntLSTM({ ...p, shiftIh: p.shiftIh.map((s, r) => (r === 3 ? 9 : s)) });
    assert.match(lowShift.cellBackend, /^typescript \(.*shift is outside \[10, 62\]/);
    const highOut = new IntLSTM({ ...p, outputShift: 63 });
    assert.match(highOut.cellBackend, /^typescript \(.*output shift/);
    const knots = p.tanh.knots.slice();
    knots[2] = knots[1]!;
    const badTable = new IntLSTM({ ...p, tanh: { ...p.tanh, knots } });
    assert.match(badTable.cellBackend, /^typescript \(tanh table: knots are not strictly increasing/);
    // Still runs (TypeScript), and the same as with native: false.
    const x = Int8Array.from({ length: 2 * 3 }, () => int(rng, -127, 127));
    assert.deepEqual(lowShift.run(x, 2, 1), lowShift.run(x, 2, 1, undefined, { native: false }));
  });

  for (const isa of ['avx2', 'scalar'] as const) {
    it(`the [every-isa] tests pass under LOWBIT_ISA=${isa}`, { skip: forcedIsa ? 'inside a forced-ISA run' : false }, () => {
      const { passed, output } = runEveryIsaTests(import.meta.url, isa);
      assert.equal(passed, 3, `expected the 3 tagged tests to pass:\n${output}`);
    });
  }
});
