// The API example of docs/onnx-rnn.md, runnable as is: node --import tsx bench/onnx-rnn/example.ts
import { nn, onnx, quant, Tensor, noGrad, Rng } from 'lowbit';

// Embedding → LSTM → Linear over every position: a chain the exporter understands.
class TinyLm extends nn.Module {
  readonly embedding: nn.Embedding;
  readonly rnn: nn.LSTM;
  readonly head: nn.Linear;
  constructor(vocab: number, rng: Rng) {
    super();
    this.embedding = this.registerModule('embedding', new nn.Embedding(vocab, 16, { rng }));
    this.rnn = this.registerModule('rnn', new nn.LSTM(16, 32, { numLayers: 2, batchFirst: true, rng }));
    this.head = this.registerModule('head', new nn.Linear(32, vocab, { rng }));
  }
  forward(ids: Tensor): Tensor {
    const [out] = this.rnn.forward(this.embedding.forward(ids));
    return this.head.forward(out);
  }
}

const model = new TinyLm(100, new Rng(0));
const ids = new Tensor(Int32Array.from({ length: 2 * 6 }, (_, i) => (7 * i) % 100), [2, 6]); // [N, L]

// Float32: one ONNX LSTM node per layer, Gather for the embedding, MatMul + Add for the head.
const fp32 = onnx.saveRnnOnnx('/tmp/tiny-lm.onnx', model, { states: true });
console.log(fp32.inputs.map((v) => `${v.name} [${v.dims.join(', ')}]`).join(', '));
// input [N, L], h0 [2, N, 32], c0 [2, N, 32]
const h0 = new Tensor(new Float32Array(2 * 2 * 32), [2, 2, 32]);
const report = await onnx.verifyRnnOnnx(fp32.bytes, model, ids, {
  initial: { rnn: [h0, h0] }, stateInputs: { rnn: ['h0', 'c0'] }, stateOutputs: { rnn: ['hN', 'cN'] },
});
console.log(report); // { status: 'ok', maxRelDiff: ~1e-7, argmaxAgreement: 1, ... }

// Quantized: 4-bit per-row weights, 8-bit activations (QAT), exported as weight QDQ.
quant.rnn.prepareRnnQat(model, {
  default: {
    weight: { kind: 'lsq', bits: 4, signed: true, symmetric: true, granularity: 'channel' },
    activation: { kind: 'lsq', bits: 8, signed: true, symmetric: true, granularity: 'tensor' },
    hidden: null, // quantizing h_{t−1} too needs sequenceLength (the LSTM is then unrolled)
  },
});
noGrad(() => model.forward(ids)); // initialises the LSQ steps (train mode); then QAT as usual
model.eval();
const qdq = onnx.exportRnnOnnx(model, { activations: 'exact' });
console.log(qdq.kind, qdq.recurrent, qdq.notes);
console.log(await onnx.verifyRnnOnnx(qdq.bytes, model, ids, { matMulNBitsAccuracyLevel: 0 }));
