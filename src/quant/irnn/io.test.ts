import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeLowbit, LowbitFormatError, type LowbitModel } from '../../format/lowbit.ts';
import { loadIntModel } from '../../runtime/io.ts';
import { randn, Rng } from '../../tensor/index.ts';
import { convertQuantLSTM, type IntLSTM } from './intlstm.ts';
import { intLSTMFromLowbit, intLSTMToLowbit, IrnnFormatError, loadIntLSTM, saveIntLSTM } from './io.ts';
import { QuantLSTM } from './qlstm.ts';

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
      ['future version', mutate((m) => { m.metadata.irnn = { format: 'lowbit-irnn-lstm', version: 2 }; }), /metadata\.irnn/],
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
    let refused = 0;
    let loaded = 0;
    const attempt = (bytes: Uint8Array): void => {
      try {
        const model = loadIntLSTM(bytes);
        // Whatever loads must run: every value it can hold was validated.
        const out = model.run(model.quantizeInput(new Float32Array(2 * model.inputSize).fill(0.3)), 1, 2);
        assert.equal(out.output.length, 2 * model.hiddenSize);
        loaded++;
      } catch (e) {
        assert.ok(e instanceof IrnnFormatError || e instanceof LowbitFormatError, `untyped error: ${String(e)}`);
        refused++;
      }
    };
    for (const cut of [0, 4, 8, 20, 100, good.length >> 1, good.length - 1]) attempt(good.subarray(0, cut));
    for (let i = 0; i < 300; i++) {
      const bytes = good.slice();
      const flips = 1 + Math.floor(rng.uniform() * 3);
      for (let f = 0; f < flips; f++) bytes[Math.floor(rng.uniform() * bytes.length)] = Math.floor(rng.uniform() * 256);
      attempt(bytes);
    }
    assert.ok(refused >= 7, `${refused} refused`);
    assert.ok(loaded > 0, 'some flips land in weight bytes and still load');
  });
});
