/**
 * The weight hand-off of the `seq-inference` bench section (bench/seq-inference/models.ts,
 * bench/peers/torch_seq.py): lowbit's next-word LSTM / GRU and Transformer LMs, written as
 * safetensors and rebuilt in PyTorch, give the same logits as lowbit's float forward (float32
 * rounding apart), at tiny sizes. Skipped with a message when python or torch is missing.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../src/autograd/index.ts';
import { Rng, Tensor } from '../src/tensor/index.ts';
import { TorchSeqPeer } from '../bench/peers/torch-seq.ts';
import { compareLogits, LAYER_NORM_EPS, peerFiles, rnnLm, TRANSFORMER_ACTIVATION, transformerLm, type SeqShapes } from '../bench/seq-inference/models.ts';

const SHAPES: SeqShapes = { vocab: 50, context: 5, embed: 8, hidden: 12, tEmbed: 16, tMlp: 24, tLayers: 2, tHeads: 4 };
const BATCH = 7;

let dir = '';
let peer: TorchSeqPeer | null = null;
let missing = '';
let ids: Tensor;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lowbit-seq-peers-'));
  const rng = new Rng(3);
  ids = new Tensor(Int32Array.from({ length: BATCH * SHAPES.context }, () => rng.int(SHAPES.vocab)), [BATCH, SHAPES.context]);
  const started = await TorchSeqPeer.start(1);
  if (typeof started === 'string') missing = started;
  else peer = started;
});

after(async () => {
  await peer?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The peer's fp32 logits of `model` against `reference`: max |Δ| within float32 rounding. */
async function assertSameLogits(t: { skip(message: string): void }, key: string, kind: 'lstm' | 'gru' | 'transformer', model: Parameters<typeof peerFiles>[2], reference: Float32Array, shape: number[]): Promise<void> {
  if (!peer) {
    t.skip(`PyTorch peer unavailable: ${missing}`);
    return;
  }
  const files = peerFiles(dir, key, model, ids);
  await peer.init(key, { kind, ...files, batch: BATCH, seq: SHAPES.context, int8: false, warmup: 0, heads: SHAPES.tHeads, activation: TRANSFORMER_ACTIVATION, eps: LAYER_NORM_EPS });
  const got = await peer.logits(key, join(dir, `${key}.f32`));
  assert.deepEqual(got.shape, shape);
  const c = compareLogits(got.data, reference, SHAPES.vocab);
  assert.ok(c.maxAbsRef > 0.05, `logits are not flat (max |logit| ${c.maxAbsRef})`);
  assert.ok(c.maxAbsDiff <= 1e-5 * c.maxAbsRef, `${key}: PyTorch vs lowbit max |Δ| ${c.maxAbsDiff} (max |logit| ${c.maxAbsRef})`);
  assert.equal(c.argmaxAgreement, 1);
  // The dynamic int8 model of the same weights runs and stays near the float logits.
  await peer.init(`${key}-int8`, { kind, ...files, batch: BATCH, seq: SHAPES.context, int8: true, warmup: 0, heads: SHAPES.tHeads, activation: TRANSFORMER_ACTIVATION, eps: LAYER_NORM_EPS });
  const q = compareLogits((await peer.logits(`${key}-int8`, join(dir, `${key}-int8.f32`))).data, reference, SHAPES.vocab);
  assert.ok(q.maxAbsDiff > 0 && q.maxAbsDiff < 0.1 * q.maxAbsRef, `${key} int8: max |Δ| ${q.maxAbsDiff} (max |logit| ${q.maxAbsRef})`);
  const timed = await peer.repeat(key, 0.02);
  assert.ok(timed.calls >= 1 && timed.ms > 0 && timed.cpuMs >= 0 && timed.calls * timed.ms >= 19.9, JSON.stringify(timed));
}

for (const cell of ['lstm', 'gru'] as const) {
  test(`seq-inference hand-off: the ${cell.toUpperCase()} next-word LM in PyTorch = lowbit float`, async (t) => {
    const model = rnnLm(cell, SHAPES, 1);
    model.eval();
    const reference = Float32Array.from(noGrad(() => model.forward(ids)).data);
    await assertSameLogits(t, cell, cell, model, reference, [BATCH, SHAPES.vocab]);
  });
}

test('seq-inference hand-off: the Transformer LM in PyTorch = lowbit float forwardAll (every position)', async (t) => {
  const model = transformerLm(SHAPES, 2);
  // Larger token / position tables than the N(0, 0.02²) init, so that attention is not uniform.
  for (const p of [model.tokenEmbedding.weight]) for (let i = 0; i < p.size; i++) p.data[i] = p.data[i]! * 50;
  model.eval();
  const reference = Float32Array.from(noGrad(() => model.forwardAll(ids)).data);
  await assertSameLogits(t, 'transformer', 'transformer', model, reference, [BATCH, SHAPES.context, SHAPES.vocab]);
});

test('seq-inference hand-off: weights of another model are refused (strict load), the peer keeps serving', async (t) => {
  if (!peer) {
    t.skip(`PyTorch peer unavailable: ${missing}`);
    return;
  }
  const files = peerFiles(dir, 'lstm-as-gru', rnnLm('lstm', SHAPES), ids);
  await assert.rejects(peer.init('wrong', { kind: 'gru', ...files, batch: BATCH, seq: SHAPES.context, int8: false }), /size mismatch|Error/);
  await assert.rejects(peer.init('wrong', { kind: 'lstm', ...files, batch: BATCH + 1, seq: SHAPES.context, int8: false }), /ids, expected 8 x 5/);
  await peer.init('right', { kind: 'lstm', ...files, batch: BATCH, seq: SHAPES.context, int8: false, warmup: 0 });
});

test('compareLogits: max |Δ|, max |reference| and row argmax agreement', () => {
  const c = compareLogits([1, 3, 2, 0, -1, 5], [1, 2.5, 2, 4, -1, 0], 3);
  assert.equal(c.maxAbsDiff, 5);
  assert.equal(c.maxAbsRef, 4);
  assert.equal(c.argmaxAgreement, 0.5);
  assert.ok(Number.isNaN(compareLogits([Number.NaN, 0], [0, 0], 2).maxAbsDiff));
  assert.throws(() => compareLogits([1, 2, 3], [1, 2], 1), RangeError);
});
