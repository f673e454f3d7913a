import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../../autograd/index.ts';
import { encodeLowbit, LowbitFormatError, type LowbitModel } from '../../format/lowbit.ts';
import { randn, Rng } from '../../tensor/index.ts';
import { packedWeightBytes } from './formats.ts';
import { convertQuantGRU, type IntGRU } from './intgru.ts';
import { intGRUFromLowbit, intGRUToLowbit, loadIntGRU, saveIntGRU } from './gru-io.ts';
import { convertQuantLSTM } from './intlstm.ts';
import { intLSTMToLowbit, IrnnFormatError } from './io.ts';
import { QuantGRU } from './qgru.ts';
import { QuantLSTM } from './qlstm.ts';
import { fuzzIrnnBytes } from './testing.ts';

const [L, N, I, H] = [6, 3, 5, 8];

function model(bits: number, seed = 11): { runtime: IntGRU; x: Int8Array } {
  const rng = new Rng(seed);
  const q = new QuantGRU(I, H, { rng, weightBits: bits });
  const x = randn([L, N, I], { rng });
  q.forward(x);
  q.eval();
  const runtime = convertQuantGRU(q);
  return { runtime, x: runtime.quantizeInput(x.data) };
}

/** A copy of the decoded file with one change. */
function edited(file: LowbitModel, change: (f: { graph: Record<string, unknown>[]; tensors: Record<string, unknown>; metadata: Record<string, unknown> }) => void): LowbitModel {
  const copy = { graph: file.graph.map((n) => ({ ...n })), tensors: { ...file.tensors }, metadata: { ...file.metadata } };
  change(copy as never);
  return copy as unknown as LowbitModel;
}

describe('IntGRU file (lowbit-irnn-gru)', () => {
  for (const bits of [8, 4, 2]) {
    it(`${bits}-bit weights: save → load gives the same parameters and the same outputs; weights stored ${bits === 8 ? 'as I8' : bits === 4 ? 'two per byte' : 'four per byte'}`, () => {
      const { runtime, x } = model(bits);
      const dir = mkdtempSync(join(tmpdir(), 'irnn-gru-'));
      try {
        const path = join(dir, 'gru.irnn');
        const bytes = saveIntGRU(path, runtime);
        assert.equal(bytes, readFileSync(path).length);
        const file = intGRUToLowbit(runtime);
        const stored = file.tensors['weight_hh']!;
        assert.equal(stored.dtype, bits === 8 ? 'int8' : bits === 4 ? 'int4' : 'int2');
        assert.equal(stored.data.byteLength, packedWeightBytes(3 * H * H, bits));
        const again = loadIntGRU(path);
        for (const key of Object.keys(runtime.params) as (keyof typeof runtime.params)[]) {
          assert.deepEqual(again.params[key], runtime.params[key], key);
        }
        assert.deepEqual(again.run(x, L, N), runtime.run(x, L, N));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it('refuses malformed files with an IrnnFormatError naming the problem', () => {
    const { runtime } = model(4);
    const good = intGRUToLowbit(runtime);
    const refuse = (file: LowbitModel, pattern: RegExp): void => {
      assert.throws(() => intGRUFromLowbit(file), (e: unknown) => e instanceof IrnnFormatError && pattern.test(e.message));
    };
    // An LSTM file: other format name; and an LSTM-shaped GRU file (4H rows): the gate count.
    const rng = new Rng(2);
    const lstm = new QuantLSTM(I, H, { rng });
    lstm.forward(randn([L, N, I], { rng }));
    const lstmFile = intLSTMToLowbit(convertQuantLSTM(lstm));
    refuse(lstmFile, /expected \{ format: 'lowbit-irnn-gru'/);
    refuse(edited(lstmFile, (f) => { f.metadata['irnn'] = { format: 'lowbit-irnn-gru', version: 1 }; f.graph[0]!['op'] = 'irnn.gru'; f.graph[0]!['gates'] = 3; }), /weight_ih' has 32 rows \(4 gate blocks of hiddenSize 8\), expected 3·hiddenSize = 24/);
    refuse(edited(good, (f) => { f.graph[0]!['gates'] = 4; }), /gates is 4: a GRU has 3 gate blocks/);
    refuse(edited(good, (f) => { f.graph[0]!['hiddenSize'] = 9; }), /has 24 rows, expected 3·hiddenSize = 27/);
    refuse(edited(good, (f) => { f.tensors['bias_hn'] = { dtype: 'int32', shape: [H + 1], data: new Int32Array(H + 1) }; }), /bias_hn' has shape \[9\], expected \[8\]/);
    refuse(edited(good, (f) => { f.tensors['weight_ih'] = { dtype: 'int8', shape: [3 * H, I], data: new Int8Array(3 * H * I) }; }), /weight_ih' has dtype int8, expected int4/);
    refuse(edited(good, (f) => { delete f.tensors['shift_hh']; }), /'shift_hh' is missing/);
    refuse(edited(good, (f) => { f.graph[0]!['weightBits'] = 9; }), /weightBits must be an integer in \[2, 8\]/);
    refuse(edited(good, (f) => { f.graph[0]!['hiddenScale'] = -1; }), /hiddenScale must be a positive finite scale/);
    refuse(edited(good, (f) => { f.tensors['sigmoid.slopes'] = { dtype: 'int32', shape: [16], data: new Int32Array(16).fill(2 ** 30) }; }), /sigmoid: segment \d+: width × slope overflows int32/);
    refuse(edited(good, (f) => { f.graph.push({ op: 'irnn.attention' }); }), /one 'irnn.gru' node/);
  });

  it('truncated and corrupted bytes load or fail with a typed error (never a crash)', () => {
    const { runtime, x } = model(4, 5);
    const good = encodeLowbit(intGRUToLowbit(runtime));
    // Every cut of the file is refused by the container (its header or a tensor's bytes are missing).
    for (const cut of [0, 7, 8, 100, good.length >> 1, good.length - 1]) {
      assert.throws(() => loadIntGRU(good.subarray(0, cut)), (e: unknown) => e instanceof LowbitFormatError || e instanceof IrnnFormatError);
    }
    const { loaded, refused } = fuzzIrnnBytes(good, new Rng(9), 150, (bytes) => {
      loadIntGRU(bytes).run(x, L, N);
    });
    assert.equal(loaded + refused, 155);
    assert.ok(refused > 5, `refused ${refused}`);
  });
});

describe('QuantGRU weightBits', () => {
  it('the IntGRU codes are the fake-quantized weights (code · row scale) and reach ±(2^(b−1)−1) in every row', () => {
    for (const bits of [2, 4]) {
      const rng = new Rng(4);
      const q = new QuantGRU(I, H, { rng, weightBits: bits });
      q.forward(randn([L, N, I], { rng }));
      const runtime = convertQuantGRU(q);
      const [, whh] = noGrad(() => q.quantizedWeights());
      const top = 2 ** (bits - 1) - 1;
      for (let r = 0; r < 3 * H; r++) {
        let rowMax = 0;
        let scale = 0;
        for (let j = 0; j < H; j++) {
          const code = runtime.params.weightHh[r * H + j]!;
          rowMax = Math.max(rowMax, Math.abs(code));
          if (code !== 0) scale = whh.data[r * H + j]! / code;
        }
        assert.equal(rowMax, top);
        for (let j = 0; j < H; j++) assert.ok(Math.abs(whh.data[r * H + j]! - runtime.params.weightHh[r * H + j]! * scale) < 1e-6);
      }
    }
  });
});
