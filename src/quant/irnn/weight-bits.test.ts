import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/index.ts';
import { encodeLowbit, LowbitFormatError, packLowbitValues, type LowbitModel } from '../../format/lowbit.ts';
import { randn, Rng } from '../../tensor/index.ts';
import { packedWeightBytes, rowScales, weightMax, weightStorage } from './formats.ts';
import { convertQuantLSTM, type IntLSTM } from './intlstm.ts';
import { intLSTMFromLowbit, intLSTMToLowbit, IrnnFormatError, loadIntLSTM } from './io.ts';
import { QuantLSTM } from './qlstm.ts';
import { fuzzIrnnBytes } from './testing.ts';

/** A trained-range QuantLSTM at `bits` and its IntLSTM. */
function model(bits: number, options: { layerNorm?: boolean; seed?: number } = {}): { q: QuantLSTM; runtime: IntLSTM; x: ReturnType<typeof randn> } {
  const rng = new Rng(options.seed ?? 11);
  const q = new QuantLSTM(5, 8, { rng, weightBits: bits, segments: 16, layerNorm: options.layerNorm ?? false });
  const x = randn([6, 3, 5], { rng });
  q.forward(x);
  q.eval();
  return { q, runtime: convertQuantLSTM(q), x };
}

describe('QuantLSTM weightBits', () => {
  it('refuses widths outside 2..8, naming weightBits', () => {
    for (const bad of [1, 9, 4.5, Number.NaN]) assert.throws(() => new QuantLSTM(2, 2, { weightBits: bad }), /weightBits must be an integer in \[2, 8\]/);
    assert.equal(weightMax(8), 127);
    assert.equal(weightMax(4), 7);
    assert.equal(weightMax(2), 1);
    assert.deepEqual([2, 3, 4, 5, 8].map(weightStorage), ['int2', 'int4', 'int4', 'int8', 'int8']);
    assert.deepEqual([packedWeightBytes(9, 2), packedWeightBytes(9, 4), packedWeightBytes(9, 6)], [3, 5, 9]);
  });

  it('fake-quantized weights take at most 2^b − 1 levels per row, the row maximum maps to ±(2^(b−1)−1), and the IntLSTM codes are exactly those levels', () => {
    for (const bits of [2, 3, 4, 8]) {
      const { q, runtime } = model(bits);
      const top = weightMax(bits);
      const [wih, whh] = noGrad(() => q.quantizedWeights());
      for (const [w, raw, codes, cols] of [[wih, q.weightIh, runtime.params.weightIh, 5], [whh, q.weightHh, runtime.params.weightHh, 8]] as const) {
        const scales = rowScales(raw, bits);
        for (let r = 0; r < 32; r++) {
          let rowMax = 0;
          for (let j = 0; j < cols; j++) {
            const i = r * cols + j;
            assert.ok(Math.abs(codes[i]!) <= top, `${bits}-bit code ${codes[i]}`);
            assert.equal(w.data[i], Math.fround(codes[i]! * scales[r]!), `${bits} bits, row ${r}: fake quant == code · scale`);
            rowMax = Math.max(rowMax, Math.abs(codes[i]!));
          }
          assert.equal(rowMax, top, `${bits} bits: the largest |w| of row ${r} maps to ±${top}`);
        }
      }
      assert.equal(runtime.params.weightBits, bits);
    }
  });

  it('IntLSTM runs the low-bit weights: h codes of W4 and W2 within 1 LSB of the fake quantization (≥ 95 % equal; measured: 144 of 144), native cell == TypeScript cell', () => {
    for (const bits of [4, 2]) {
      const { q, runtime, x } = model(bits);
      const [out] = noGrad(() => q.forward(x));
      const xq = runtime.quantizeInput(x.data);
      const { output } = runtime.run(xq, 6, 3);
      let equal = 0;
      for (let i = 0; i < output.length; i++) {
        const d = Math.abs(output[i]! - Math.round(out.data[i]! / q.hiddenScale));
        assert.ok(d <= 1, `${bits} bits: h code ${i} differs by ${d}`);
        if (d === 0) equal++;
      }
      assert.ok(equal >= 0.95 * output.length, `${bits} bits: ${equal} of ${output.length} equal`);
      assert.deepEqual(runtime.run(xq, 6, 3, undefined, { native: false }), runtime.run(xq, 6, 3));
    }
  });

  it('LN-LSTM at 4 bits: the fake quantization equals IntLSTM bit for bit', () => {
    const { q, runtime, x } = model(4, { layerNorm: true });
    const [out] = noGrad(() => q.forward(x));
    const { output } = runtime.run(runtime.quantizeInput(x.data), 6, 3);
    for (let i = 0; i < output.length; i++) assert.equal(Math.fround(output[i]! * q.hiddenScale), out.data[i]);
  });

  it('byteLength counts the packed weights', () => {
    const w8 = model(8).runtime.byteLength;
    const weights = 32 * 5 + 32 * 8;
    assert.equal(w8 - model(4).runtime.byteLength, weights - Math.ceil(32 * 5 / 2) - Math.ceil(32 * 8 / 2));
    assert.equal(w8 - model(2).runtime.byteLength, weights - Math.ceil(32 * 5 / 4) - Math.ceil(32 * 8 / 4));
  });
});

describe('iRNN file version 3 (packed weights)', () => {
  it('round trip at 2, 3, 4 and 6 bits: same parameters and outputs, weights stored packed; 8 bits still writes version 1', () => {
    for (const bits of [2, 3, 4, 6]) {
      const { runtime, x } = model(bits);
      const file = intLSTMToLowbit(runtime);
      assert.equal((file.metadata!.irnn as { version: number }).version, 3);
      assert.equal(file.tensors.weight_ih!.dtype, weightStorage(bits));
      assert.equal(file.tensors.weight_hh!.data.length, packedWeightBytes(32 * 8, bits));
      const loaded = loadIntLSTM(encodeLowbit(file));
      assert.deepEqual(loaded.params, runtime.params);
      const xq = runtime.quantizeInput(x.data);
      assert.deepEqual(loaded.run(xq, 6, 3), runtime.run(xq, 6, 3));
    }
    const w8 = intLSTMToLowbit(model(8).runtime);
    assert.equal((w8.metadata!.irnn as { version: number }).version, 1);
    assert.equal(w8.graph[0]!.weightBits, undefined);
    const ln4 = model(4, { layerNorm: true }).runtime;
    assert.deepEqual(loadIntLSTM(encodeLowbit(intLSTMToLowbit(ln4))).params, ln4.params, 'layer norms load from a version 3 file');
    // 416 weights: 416, 208 and 104 bytes; the W4/W2 headers are ~100 bytes longer (dtype, packing, weightBits).
    const sizes = [w8, intLSTMToLowbit(model(4).runtime), intLSTMToLowbit(model(2).runtime)].map((f) => encodeLowbit(f).length);
    assert.ok(sizes[0]! > sizes[1]! && sizes[1]! - sizes[2]! >= 100, `file sizes ${sizes.join(', ')}`);
  });

  it('refuses malformed version 3 content with a typed error', () => {
    const { runtime } = model(4);
    const change = (bits: IntLSTM, f: (m: { graph: Record<string, unknown>[]; tensors: Record<string, unknown>; metadata: Record<string, unknown> }) => void): LowbitModel => {
      const base = intLSTMToLowbit(bits);
      const m = {
        graph: base.graph.map((n) => structuredClone({ ...n })) as Record<string, unknown>[],
        tensors: { ...base.tensors } as Record<string, unknown>,
        metadata: structuredClone({ ...base.metadata }) as Record<string, unknown>,
      };
      f(m);
      return m as unknown as LowbitModel;
    };
    const codes = (bits: number, rows: number, cols: number, bad: number): Int32Array => {
      const v = new Int32Array(rows * cols);
      v[7] = bad;
      return v;
    };
    const w3 = model(3).runtime;
    const w2 = model(2).runtime;
    const cases: [string, LowbitModel, RegExp][] = [
      ['4-bit code −8', change(runtime, (m) => { m.tensors.weight_hh = packLowbitValues('int4', [32, 8], codes(4, 32, 8, -8)); }), /code -8 at 7 is outside ±7/],
      ['3-bit code 5 stored in int4', change(w3, (m) => { m.tensors.weight_ih = packLowbitValues('int4', [32, 5], codes(3, 32, 5, 5)); }), /code 5 at 7 is outside ±3/],
      ['2-bit code −2', change(w2, (m) => { m.tensors.weight_ih = packLowbitValues('int2', [32, 5], codes(2, 32, 5, -2)); }), /code -2 at 7 is outside ±1/],
      ['int8 weights in a 4-bit file', change(runtime, (m) => { m.tensors.weight_ih = { dtype: 'int8', shape: [32, 5], data: new Int8Array(160) }; }), /dtype int8, expected int4/],
      ['int4 weights in a 2-bit file', change(w2, (m) => { m.tensors.weight_hh = packLowbitValues('int4', [32, 8], new Int32Array(256)); }), /dtype int4, expected int2/],
      ['packed shape', change(runtime, (m) => { m.tensors.weight_hh = packLowbitValues('int4', [32, 9], new Int32Array(288)); }), /shape \[32, 9\]/],
      ['packed byte count', change(runtime, (m) => { m.tensors.weight_hh = { dtype: 'int4', shape: [32, 8], data: new Uint8Array(100) }; }), /128 packed bytes, got 100/],
      ['weightBits 1', change(runtime, (m) => { m.graph[0]!.weightBits = 1; }), /weightBits/],
      ['weightBits 9', change(runtime, (m) => { m.graph[0]!.weightBits = 9; }), /weightBits/],
      ['weightBits missing', change(runtime, (m) => { delete m.graph[0]!.weightBits; }), /weightBits/],
      ['weightBits in a version 2 file', change(runtime, (m) => { m.metadata.irnn = { format: 'lowbit-irnn-lstm', version: 2 }; }), /weightBits needs version 3/],
      ['8-bit weights claimed as 4-bit', change(model(8).runtime, (m) => { m.metadata.irnn = { format: 'lowbit-irnn-lstm', version: 3 }; m.graph[0]!.weightBits = 4; }), /dtype int8, expected int4/],
    ];
    for (const [what, file, pattern] of cases) {
      assert.throws(() => intLSTMFromLowbit(file), (e: unknown) => e instanceof IrnnFormatError && pattern.test(e.message), what);
    }
    // The container's own check catches a short packed tensor in the bytes.
    for (const [what, file] of cases.slice(0, 6)) {
      assert.throws(() => loadIntLSTM(encodeLowbit(file)), (e: unknown) => e instanceof IrnnFormatError || e instanceof LowbitFormatError, what);
    }
    assert.throws(() => intLSTMToLowbit({ params: { ...runtime.params, weightHh: Int8Array.from(runtime.params.weightHh, (v, i) => (i === 3 ? 8 : v)) } } as IntLSTM), /outside ±7/);
  });

  it('fuzz: truncations and random byte flips of 4-bit and 2-bit files load and run, or fail with a typed error', () => {
    const rng = new Rng(79);
    let refused = 0;
    let loaded = 0;
    for (const bits of [4, 2]) {
      const good = encodeLowbit(intLSTMToLowbit(model(bits).runtime));
      const counts = fuzzIrnnBytes(good, rng, 150, (bytes) => {
        const m = loadIntLSTM(bytes);
        const top = weightMax(m.params.weightBits ?? 8);
        assert.ok(m.params.weightIh.every((v) => Math.abs(v) <= top) && m.params.weightHh.every((v) => Math.abs(v) <= top));
        assert.equal(m.run(m.quantizeInput(new Float32Array(2 * m.inputSize).fill(0.3)), 1, 2).output.length, 2 * m.hiddenSize);
      });
      loaded += counts.loaded;
      refused += counts.refused;
    }
    assert.ok(refused >= 10, `${refused} refused`);
    assert.ok(loaded > 0, 'some flips land in weight bytes and still load');
  });
});
