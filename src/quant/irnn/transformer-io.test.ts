import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../../autograd/index.ts';
import { encodeLowbit, LowbitFormatError, type LowbitModel } from '../../format/lowbit.ts';
import { TransformerLM } from '../../nn/models/transformer-lm.ts';
import { Rng, Tensor } from '../../tensor/index.ts';
import { prepareTransformerQat, transformerQatConfig } from '../transformer/qat.ts';
import { IrnnFormatError, loadIntLSTM } from './io.ts';
import { fuzzIrnnBytes } from './testing.ts';
import { convertTransformerLM, type IntTransformerLM } from './transformer.ts';
import { intTransformerFromLowbit, intTransformerToLowbit, isIntTransformerFile, loadIntTransformer, saveIntTransformer } from './transformer-io.ts';

const V = 30;
const C = 5;

function ids(rng: Rng, n: number): Tensor {
  return new Tensor(Int32Array.from({ length: n * C }, () => Math.floor(rng.uniform() * V)), [n, C]);
}

function converted(quant: 'w8a8' | 'w4a8', activation: 'gelu-tanh' | 'relu'): IntTransformerLM {
  const model = new TransformerLM({ vocabSize: V, maxContext: C, embedDim: 8, numLayers: 2, numHeads: 2, mlpDim: 12, activation, rng: new Rng(3) });
  prepareTransformerQat(model, transformerQatConfig(quant)!);
  model.train();
  noGrad(() => model.forward(ids(new Rng(4), 8)));
  return convertTransformerLM(model, [ids(new Rng(5), 8)]);
}

describe('IntTransformerLM file', () => {
  it('round-trips bit for bit (8-bit and packed 4-bit weights, GELU and ReLU), keeps extra metadata, writes atomically', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-int-transformer-'));
    try {
      const x = ids(new Rng(6), 4);
      for (const [quant, activation] of [['w8a8', 'gelu-tanh'], ['w4a8', 'relu']] as const) {
        const model = converted(quant, activation);
        const path = join(dir, `${quant}.irnn`);
        const bytes = saveIntTransformer(path, model, { lm: { note: 'kept' } });
        assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp')), []);
        const back = loadIntTransformer(path);
        assert.deepEqual(back.logitsAll(x.data, 4), model.logitsAll(x.data, 4));
        const file = intTransformerToLowbit(model);
        assert.ok(isIntTransformerFile(file));
        if (quant === 'w4a8') {
          assert.equal(file.tensors['blocks.0.fc1.weight']!.dtype, 'int4');
          assert.equal(file.tensors['token.table']!.dtype, 'int4');
          assert.ok(bytes < saveIntTransformer(join(dir, 'w8.irnn'), converted('w8a8', 'relu')));
        }
        const decoded = intTransformerFromLowbit(file);
        assert.deepEqual(decoded.params.blocks[1]!.fc2.weight, model.params.blocks[1]!.fc2.weight);
      }
      const withMeta = intTransformerToLowbit(converted('w8a8', 'relu'), { lm: { note: 'kept' } });
      assert.deepEqual(withMeta.metadata!['lm'], { note: 'kept' });
      assert.throws(() => intTransformerToLowbit(converted('w8a8', 'relu'), { irnn: {} }), /metadata.irnn is the format header/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses malformed files with typed errors naming the problem: truncated, wrong shape, bad fields, wrong format', () => {
    const model = converted('w8a8', 'gelu-tanh');
    const good = intTransformerToLowbit(model);
    const bytes = encodeLowbit(good);
    assert.throws(() => loadIntTransformer(bytes.subarray(0, bytes.length - 10)), LowbitFormatError);
    const edit = (change: (m: { graph: Record<string, unknown>[]; tensors: Record<string, unknown> }) => void): LowbitModel => {
      const copy = { graph: structuredClone(good.graph) as unknown as Record<string, unknown>[], tensors: { ...good.tensors } as Record<string, unknown>, metadata: good.metadata };
      change(copy);
      return copy as unknown as LowbitModel;
    };
    const refuses = (m: LowbitModel, pattern: RegExp): void => {
      assert.throws(() => intTransformerFromLowbit(m), (e: unknown) => e instanceof IrnnFormatError && pattern.test(e.message), String(pattern));
      // Through the bytes as well (the container's own checks pass).
      assert.throws(() => loadIntTransformer(encodeLowbit(m)), (e: unknown) => e instanceof IrnnFormatError && pattern.test(e.message));
    };
    refuses(edit((m) => { m.tensors['positions'] = { dtype: 'int32', shape: [C - 1, 8], data: new Int32Array((C - 1) * 8) }; }), /'positions' has shape \[4, 8\], expected \[5, 8\]/);
    refuses(edit((m) => { m.tensors['blocks.1.qkv.weight'] = { dtype: 'int8', shape: [24, 7], data: new Int8Array(24 * 7) }; }), /'blocks\.1\.qkv\.weight' has shape \[24, 7\], expected \[24, 8\]/);
    refuses(edit((m) => { (m.graph[0]!['blocks'] as Record<string, unknown>[])[0]!['activation'] = 'swish'; }), /activation must be 'gelu' or 'relu', got "swish"/);
    refuses(edit((m) => { (m.graph[0]!['blocks'] as Record<string, unknown>[])[1]!['probsMax'] = 300; }), /probsMax must be an integer in \[1, 255\], got 300/);
    refuses(edit((m) => { (m.graph[0]!['blocks'] as Record<string, unknown>[])[0]!['scoreMultiplier'] = 12345; }), /scoreMultiplier: multiplier 12345 is not 0 or a Q31 mantissa/);
    refuses(edit((m) => { m.graph[0]!['numHeads'] = 3; }), /embedDim 8 is not divisible by numHeads 3/);
    refuses(edit((m) => { m.graph[0]!['residualScale'] = -1; }), /residualScale must be a positive finite scale/);
    refuses(edit((m) => { m.graph[0]!['numLayers'] = 3; }), /blocks must be a list of numLayers = 3 objects/);
    refuses(edit((m) => { delete m.tensors['head.scale']; m.graph[0]!['tensors'] = Object.keys(m.tensors); }), /'head.scale' must be float32 \[30\]/);
    // An iRNN LSTM file reader refuses this file and this reader refuses the LSTM's header.
    assert.throws(() => loadIntLSTM(bytes), (e: unknown) => e instanceof IrnnFormatError && e.code === 'not-irnn');
    assert.throws(() => intTransformerFromLowbit({ ...good, metadata: { irnn: { format: 'lowbit-irnn-lstm', version: 1 } } }), (e: unknown) => e instanceof IrnnFormatError && e.code === 'not-irnn');
  });

  it('fuzz: truncations and random byte flips either load and run or throw a typed format error', () => {
    const model = converted('w4a8', 'gelu-tanh');
    const good = encodeLowbit(intTransformerToLowbit(model));
    const x = ids(new Rng(9), 2);
    const { loaded, refused } = fuzzIrnnBytes(good, new Rng(10), 60, (b) => {
      const m = loadIntTransformer(b);
      const out = m.logits(x.data, 2);
      assert.equal(out.length, 2 * V);
    });
    assert.ok(refused >= 5, `refused ${refused}`);
    assert.equal(loaded + refused, 65);
  });
});
