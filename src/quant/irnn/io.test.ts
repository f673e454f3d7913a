import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeLowbit, LowbitFormatError, type LowbitModel } from '../../format/lowbit.ts';
import { loadIntModel } from '../../runtime/io.ts';
import { randn, Rng, Tensor } from '../../tensor/index.ts';
import { convertQuantLSTM, type IntLSTM } from './intlstm.ts';
import { intLSTMFromLowbit, intLSTMToLowbit, IrnnFormatError, loadIntLSTM, loadIrnnModel, saveIntLSTM } from './io.ts';
import { convertQuantAttention, QuantAttention, type IntAttention } from './attention.ts';
import { QuantLSTM } from './qlstm.ts';
import { fuzzIrnnBytes } from './testing.ts';

function tinyModel(): IntLSTM {
  const rng = new Rng(4);
  const model = new QuantLSTM(3, 4, { rng, segments: 8 });
  model.forward(randn([5, 2, 3], { rng }));
  model.eval();
  return convertQuantLSTM(model);
}

const runtime = tinyModel();
const x = runtime.quantizeInput(randn([5, 2, 3], { rng: new Rng(9) }).data);

/** A copy of the .lowbit model with one change applied to its node, tensors or metadata. */
function mutate(change: (m: { graph: Record<string, unknown>[]; tensors: Record<string, unknown>; metadata: Record<string, unknown> }) => void): LowbitModel {
  const base = intLSTMToLowbit(runtime);
  const m = {
    graph: base.graph.map((n) => structuredClone({ ...n })) as Record<string, unknown>[],
    tensors: { ...base.tensors } as Record<string, unknown>,
    metadata: structuredClone({ ...base.metadata }) as Record<string, unknown>,
  };
  change(m);
  return m as unknown as LowbitModel;
}

describe('IntLSTM file', () => {
  it('round trip: same parameters, same outputs; the IntModel reader refuses the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-irnn-'));
    try {
      const path = join(dir, 'lstm.lowbit');
      const bytes = saveIntLSTM(path, runtime);
      assert.equal(bytes, readFileSync(path).length);
      const loaded = loadIntLSTM(path);
      assert.deepEqual(loaded.params, runtime.params);
      assert.deepEqual(loaded.run(x, 5, 2), runtime.run(x, 5, 2));
      assert.throws(() => loadIntModel(path), /not an IntModel/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses malformed content with a typed error naming the problem', () => {
    const int32 = (v: number[]): { dtype: string; shape: number[]; data: Int32Array } => ({ dtype: 'int32', shape: [v.length], data: Int32Array.from(v) });
    const cases: [string, LowbitModel, RegExp][] = [
      ['wrong format', mutate((m) => { m.metadata.irnn = { format: 'other', version: 1 }; }), /metadata\.irnn/],
      ['future version', mutate((m) => { m.metadata.irnn = { format: 'lowbit-irnn-lstm', version: 4 }; }), /metadata\.irnn/],
      ['layer norm in a version 1 file', mutate((m) => { m.graph[0]!.layerNorm = {}; }), /layerNorm needs version 2/],
      ['attention node in a version 1 file', mutate((m) => { m.graph.push({ op: 'irnn.attention' }); }), /one 'irnn\.lstm' node/],
      ['two nodes', mutate((m) => { m.graph.push({ op: 'irnn.lstm' }); }), /one 'irnn\.lstm' node/],
      ['hiddenSize 0', mutate((m) => { m.graph[0]!.hiddenSize = 0; }), /hiddenSize/],
      ['hiddenSize 1e9', mutate((m) => { m.graph[0]!.hiddenSize = 1e9; }), /hiddenSize/],
      ['hiddenSize not matching shapes', mutate((m) => { m.graph[0]!.hiddenSize = 5; }), /shape/],
      ['negative scale', mutate((m) => { m.graph[0]!.inputScale = -1; }), /inputScale/],
      ['NaN-like scale', mutate((m) => { m.graph[0]!.hiddenScale = 'x'; }), /hiddenScale/],
      ['output multiplier not Q31', mutate((m) => { m.graph[0]!.outputMultiplier = 5; }), /Q31/],
      ['huge shift', mutate((m) => { m.graph[0]!.outputShift = 4000; }), /outputShift/],
      ['row shift out of range', mutate((m) => { m.tensors.shift_ih = int32(new Array(16).fill(99)); }), /shift 99/],
      ['missing tensor', mutate((m) => { delete m.tensors.bias; delete (m.graph[0]!.tensors as Record<string, string>).bias; }), /'bias' is missing/],
      ['wrong dtype', mutate((m) => { m.tensors.weight_ih = { dtype: 'int32', shape: [16, 3], data: new Int32Array(48) }; }), /dtype int32, expected int8/],
      ['wrong shape', mutate((m) => { m.tensors.weight_hh = { dtype: 'int8', shape: [4, 16], data: new Int8Array(64) }; }), /shape \[4, 16\]/],
      ['knots not increasing', mutate((m) => {
        const k = Int32Array.from(runtime.params.tanh.knots);
        k[2] = k[1]!;
        m.tensors['tanh.knots'] = { dtype: 'int32', shape: [k.length], data: k };
      }), /strictly increasing/],
      ['table input format', mutate((m) => { (m.graph[0]!.sigmoid as Record<string, number>).inputFrac = 8; }), /inputFrac/],
      ['slope product overflow', mutate((m) => {
        const s = Int32Array.from(runtime.params.sigmoid.slopes);
        s[1] = 2 ** 31 - 1;
        m.tensors['sigmoid.slopes'] = { dtype: 'int32', shape: [s.length], data: s };
      }), /overflows int32/],
      ['bias beyond 2^24', mutate((m) => { m.tensors.bias = int32(new Array(16).fill(2 ** 25)); }), /bias/],
    ];
    for (const [what, model, pattern] of cases) {
      const bytes = encodeLowbit(model);
      assert.throws(() => loadIntLSTM(bytes), (e: unknown) => e instanceof IrnnFormatError && pattern.test(e.message), what);
    }
    assert.doesNotThrow(() => intLSTMFromLowbit(mutate(() => {})));
  });

  it('fuzz: truncated files and random byte flips load or fail with a typed error, never crash or hang', () => {
    const good = encodeLowbit(intLSTMToLowbit(runtime));
    const rng = new Rng(77);
    const { loaded, refused } = fuzzIrnnBytes(good, rng, 300, (bytes) => {
      const model = loadIntLSTM(bytes);
      // Whatever loads must run: every value it can hold was validated.
      const out = model.run(model.quantizeInput(new Float32Array(2 * model.inputSize).fill(0.3)), 1, 2);
      assert.equal(out.output.length, 2 * model.hiddenSize);
    }, [0, 4, 8, 20, 100, good.length >> 1, good.length - 1]);
    assert.ok(refused >= 7, `${refused} refused`);
    assert.ok(loaded > 0, 'some flips land in weight bytes and still load');
  });
});

/** An LN-LSTM with an attention over its outputs, converted. */
function lnAttentionModel(): { lstm: IntLSTM; attention: IntAttention } {
  const rng = new Rng(5);
  const model = new QuantLSTM(3, 4, { rng, segments: 8, layerNorm: true, eps: 1e-3 });
  for (let i = 0; i < 4; i++) model.lnCellBias!.data[i] = 0.1 * i - 0.2;
  const x = randn([5, 2, 3], { rng });
  const [out] = model.forward(x);
  model.eval();
  const lstm = convertQuantLSTM(model);
  const attention = new QuantAttention(4, { rng });
  const h = out.data;
  // keys = values = the LSTM outputs [N, L, H] (batch-major), query = the last h.
  const keys = new Tensor(Float32Array.from({ length: 2 * 5 * 4 }, (_, i) => h[((i >> 2) % 5) * 8 + Math.floor(i / 20) * 4 + (i & 3)]!), [2, 5, 4]);
  const query = new Tensor(Float32Array.from(h.subarray(4 * 8)), [2, 4]);
  attention.forward(query, keys, keys, { inputScale: lstm.params.hiddenScale });
  return { lstm, attention: convertQuantAttention(attention) };
}

describe('iRNN file, version 2 (layer norms, attention)', () => {
  const { lstm, attention } = lnAttentionModel();
  const v2 = (): { graph: Record<string, unknown>[]; tensors: Record<string, unknown>; metadata: Record<string, unknown> } => {
    const base = intLSTMToLowbit(lstm, attention);
    return {
      graph: base.graph.map((n) => structuredClone({ ...n })) as Record<string, unknown>[],
      tensors: { ...base.tensors } as Record<string, unknown>,
      metadata: structuredClone({ ...base.metadata }) as Record<string, unknown>,
    };
  };

  it('round trip of an LN-LSTM with attention; a plain LSTM is still written as version 1 and loads', () => {
    const bytes = encodeLowbit(intLSTMToLowbit(lstm, attention));
    const loaded = loadIrnnModel(bytes);
    assert.deepEqual(loaded.lstm.params, lstm.params);
    assert.deepEqual(loaded.attention!.params, attention.params);
    const xq = lstm.quantizeInput(randn([5, 2, 3], { rng: new Rng(8) }).data);
    assert.deepEqual(loaded.lstm.run(xq, 5, 2), lstm.run(xq, 5, 2));
    assert.deepEqual(loadIntLSTM(bytes).params, lstm.params);
    assert.equal((intLSTMToLowbit(lstm).metadata!.irnn as { version: number }).version, 2, 'layer norms need version 2');
    const plain = intLSTMToLowbit(runtime);
    assert.equal((plain.metadata!.irnn as { version: number }).version, 1);
    const old = loadIrnnModel(encodeLowbit(plain));
    assert.equal(old.attention, null);
    assert.equal(old.lstm.params.layerNorm, undefined);
    assert.throws(() => intLSTMToLowbit(runtime, attention), /must read the LSTM's h/);
  });

  it('refuses malformed layer-norm and attention fields with a typed error', () => {
    const change = (f: (m: ReturnType<typeof v2>) => void): LowbitModel => {
      const m = v2();
      f(m);
      return m as unknown as LowbitModel;
    };
    const ln = (m: ReturnType<typeof v2>): Record<string, Record<string, unknown>> => m.graph[0]!.layerNorm as Record<string, Record<string, unknown>>;
    const cases: [string, LowbitModel, RegExp][] = [
      ['layerNorm not an object', change((m) => { m.graph[0]!.layerNorm = 3; }), /layerNorm must be an object/],
      ['missing cell layer norm', change((m) => { delete ln(m).cell; }), /layerNorm\.cell/],
      ['negative epsCode', change((m) => { ln(m).ih!.epsCode = -1; }), /epsCode/],
      ['fractional epsCode', change((m) => { ln(m).hh!.epsCode = 0.5; }), /epsCode/],
      ['wrong output clamp', change((m) => { ln(m).cell!.outMax = 127; }), /outMax/],
      ['multiplier not Q31', change((m) => { ln(m).ih!.multiplier = 12; }), /Q31/],
      ['gamma beyond int16', change((m) => { m.tensors['ln_cell.gamma'] = { dtype: 'int32', shape: [4], data: Int32Array.of(1, 2, 40000, 3) }; }), /gamma\[2\]/],
      ['gamma wrong shape', change((m) => { m.tensors['ln_ih.gamma'] = { dtype: 'int32', shape: [4], data: new Int32Array(4) }; }), /shape \[4\], expected \[16\]/],
      ['beta missing', change((m) => { delete m.tensors['ln_hh.beta']; delete (m.graph[0]!.tensors as Record<string, string>)['ln_hh.beta']; }), /'ln_hh\.beta' is missing/],
      ['attention size', change((m) => { m.graph[1]!.size = 5; }), /size/],
      ['attention reads another scale', change((m) => { m.graph[1]!.inputScale = 0.5; }), /differs from the LSTM's hiddenScale/],
      ['attention score shift', change((m) => { m.graph[1]!.scoreShift = 99; }), /scoreShift/],
      ['attention weight dtype', change((m) => { m.tensors['attention.weight'] = { dtype: 'int32', shape: [4, 4], data: new Int32Array(16) }; }), /dtype int32, expected int8/],
      ['attention row multiplier', change((m) => { m.tensors['attention.multiplier'] = { dtype: 'int32', shape: [4], data: Int32Array.of(1, 2, 3, 4) }; }), /attention row 0/],
      ['three nodes', change((m) => { m.graph.push({ op: 'irnn.attention' }); }), /optionally followed/],
      ['attention first', change((m) => { m.graph.reverse(); }), /optionally followed/],
    ];
    for (const [what, model, pattern] of cases) {
      assert.throws(() => loadIrnnModel(encodeLowbit(model)), (e: unknown) => e instanceof IrnnFormatError && pattern.test(e.message), what);
    }
  });

  it('fuzz: truncations and random byte flips of a version 2 file load and run, or fail with a typed error', () => {
    const good = encodeLowbit(intLSTMToLowbit(lstm, attention));
    const rng = new Rng(78);
    const { loaded, refused } = fuzzIrnnBytes(good, rng, 300, (bytes) => {
      const model = loadIrnnModel(bytes);
      const x = model.lstm.quantizeInput(new Float32Array(3 * 2 * model.lstm.inputSize).fill(0.3));
      const { output, state } = model.lstm.run(x, 3, 2);
      if (model.attention) {
        const H = model.lstm.hiddenSize;
        const keys = new Int8Array(2 * 3 * H);
        for (let n = 0; n < 2; n++) for (let t = 0; t < 3; t++) keys.set(output.subarray((t * 2 + n) * H, (t * 2 + n + 1) * H), (n * 3 + t) * H);
        assert.equal(model.attention.run(state.h, keys, keys, 2, 3).length, 2 * H);
      }
    });
    assert.ok(refused >= 5, `${refused} refused`);
    assert.ok(loaded > 0, 'some flips land in weight bytes and still load');
  });
});
