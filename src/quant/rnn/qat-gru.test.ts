import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { grad } from '../../autograd/engine.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { noGrad } from '../../autograd/index.ts';
import { withBackend } from '../../backend/index.ts';
import { GRU } from '../../nn/rnn.ts';
import { concat, reshape, Rng, Tensor } from '../../tensor/index.ts';
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import { disableFakeQuant } from '../qat/prepare.ts';
import { QatGRU } from './qat-gru.ts';
import { NextWordModel } from '../../nn/models/next-word.ts';
import { nextWordQatPlan } from './next-word-plan.ts';
import { modelSize, prepareRnnQat } from './recipe.ts';
import { affineOf, int4Row, int4Signed, mixedTwoLayerSpecs, random64, rows2, sigmoid, timeMajor, type Fq, type Piece } from './testing.ts';

const apply = (f: Fq, v: number, row = 0): Piece => (f ? f(v, row) : { y: v, inside: true, dyds: 0 });

const dot = (w: readonly Piece[], v: readonly Piece[]): number => w.reduce((s, p, j) => s + p.y * v[j]!.y, 0);

interface GruStep { x: Piece[][]; hq: Piece[][]; hPrev: number[][]; r: number[][]; z: number[][]; n: number[][]; hn: number[][] }

/**
 * One QatGRU layer in plain float64 JavaScript (time-major nested arrays), every matmul operand
 * through its closed-form quantizer; the steps are recorded for the hand-written backward.
 */
function referenceLayer(x: number[][][], wih: number[][], whh: number[][], bih: number[], bhh: number[], h0: number[][] | null, q: { w: Fq; wh: Fq; x: Fq; h: Fq }) {
  const N = x[0]!.length;
  const H = whh[0]!.length;
  const Wi = wih.map((row, r) => row.map((v) => apply(q.w, v, r)));
  const Wh = whh.map((row, r) => row.map((v) => apply(q.wh, v, r)));
  let h = h0 ?? Array.from({ length: N }, () => new Array<number>(H).fill(0));
  const out: number[][][] = [];
  const steps: GruStep[] = [];
  x.forEach((xt, t) => {
    const s: GruStep = { x: [], hq: [], hPrev: h, r: [], z: [], n: [], hn: [] };
    const next = xt.map((row, b) => {
      const xq = row.map((v) => apply(q.x, v));
      // h_{−1} = 0 is not quantized (exact in every format).
      const hq = h[b]!.map((v) => (t === 0 && !h0 ? { y: 0, inside: true, dyds: 0 } : apply(q.h, v)));
      const gx = Wi.map((w, r) => dot(w, xq) + bih[r]!);
      const gh = Wh.map((w, r) => dot(w, hq) + bhh[r]!);
      const r = Array.from({ length: H }, (_, k) => sigmoid(gx[k]! + gh[k]!));
      const z = Array.from({ length: H }, (_, k) => sigmoid(gx[H + k]! + gh[H + k]!));
      const n = Array.from({ length: H }, (_, k) => Math.tanh(gx[2 * H + k]! + r[k]! * gh[2 * H + k]!));
      s.x.push(xq); s.hq.push(hq); s.r.push(r); s.z.push(z); s.n.push(n); s.hn.push(gh.slice(2 * H));
      return n.map((nv, k) => (1 - z[k]!) * nv + z[k]! * h[b]![k]!);
    });
    steps.push(s);
    h = next;
    out.push(h);
  });
  return { out, h, steps, Wi, Wh };
}

describe('QatGRU', () => {
  for (const batchFirst of [false, true]) {
    it(`forward equals a float64 closed-form 2-layer GRU on the same fake-quantized operands (batchFirst=${batchFirst}, LSQ and min-max mixed, h0 given)`, () => {
      withBackend('reference', () => {
        const rng = new Rng(12);
        const gru = new QatGRU(3, 4, {
          numLayers: 2, batchFirst, dtype: 'float64', rng,
          ...mixedTwoLayerSpecs,
        });
        const [L, N] = [5, 2];
        const x = random64(batchFirst ? [N, L, 3] : [L, N, 3], rng, 2);
        const h0 = random64([2, N, 4], rng, 0.5);
        gru.forward(x, h0); // initialises the LSQ steps and observes the ranges
        gru.eval();
        const [out, hN] = gru.forward(x, h0);
        let input = timeMajor(x, batchFirst);
        for (let k = 0; k < 2; k++) {
          const q = gru.layerQuantizers(k);
          const p = (name: string): Tensor => gru.stateDict().get(`${name}_l${k}`)!;
          const start = rows2(reshape(h0, [2 * N, 4])).slice(k * N, (k + 1) * N);
          const ref = referenceLayer(input, rows2(p('weight_ih')), rows2(p('weight_hh')), [...p('bias_ih').data], [...p('bias_hh').data], start, {
            w: affineOf(q.weightIh), wh: affineOf(q.weightHh), x: affineOf(q.input), h: affineOf(q.hidden),
          });
          for (let n = 0; n < N; n++) for (let j = 0; j < 4; j++) assert.ok(Math.abs(hN.data[(k * N + n) * 4 + j]! - ref.h[n]![j]!) < 1e-12, `hN layer ${k}`);
          input = ref.out;
        }
        const got = timeMajor(out, batchFirst);
        for (let t = 0; t < L; t++) for (let n = 0; n < N; n++) for (let j = 0; j < 4; j++) assert.ok(Math.abs(got[t]![n]![j]! - input[t]![n]![j]!) < 1e-12, `output [${t}, ${n}, ${j}]`);
        // 4-bit weights are on at most 15 levels per row, and the quantized h differs from the float one.
        const w = gru.layerQuantizers(0).weightIh!.forward(gru.stateDict().get('weight_ih_l0')!);
        for (let r = 0; r < 12; r++) assert.ok(new Set(Array.from(w.data.slice(r * 3, r * 3 + 3))).size <= 15);
        const float = new GRU(3, 4, { numLayers: 2, batchFirst, dtype: 'float64' });
        float.loadStateDict(new Map([...gru.namedParameters({ recurse: false })]));
        const [floatOut] = float.forward(x, h0);
        let diff = 0;
        for (let i = 0; i < out.size; i++) diff = Math.max(diff, Math.abs(out.data[i]! - floatOut.data[i]!));
        assert.ok(diff > 1e-3, `4-bit operands change the output (max difference ${diff})`);
      });
    });
  }

  it('with fake quantization off it is nn.GRU (fromGRU copies the weights), and its gradients match float64 finite differences', () => {
    withBackend('reference', () => {
      const rng = new Rng(5);
      const float = new GRU(3, 2, { numLayers: 2, dtype: 'float64', rng });
      const qat = QatGRU.fromGRU(float, { weight: int4Row, input: int4Signed, hidden: int4Signed });
      disableFakeQuant(qat);
      const x = random64([4, 2, 3], rng);
      const [a, ha] = float.forward(x);
      const [b, hb] = qat.forward(x);
      for (const [u, v] of [[a, b], [ha, hb]] as const) for (let i = 0; i < u.size; i++) assert.ok(Math.abs(u.data[i]! - v.data[i]!) < 1e-12, 'float path equals nn.GRU');
      const xg = random64([4, 2, 3], rng).requiresGrad_();
      const h0 = random64([2, 2, 2], rng, 0.5).requiresGrad_();
      const params = qat.parameters().filter((p) => p.dtype === 'float64');
      assert.equal(params.length, 8);
      const result = gradcheck((input, h, ...ps) => {
        void ps;
        const [out, hn] = qat.forward(input!, h!);
        return concat([reshape(out, [out.size]), reshape(hn, [hn.size])], 0);
      }, [xg, h0, ...params]);
      assert.ok(result.maxRelativeError < 1e-6, `max relative error ${result.maxRelativeError}`);
    });
  });

  it('weight-only quantization: gradients in x, h0 and the biases match finite differences; W and step gradients are the STE / LSQ ones of the float GRU on Q(W)', () => {
    withBackend('reference', () => {
      const rng = new Rng(7);
      const qat = new QatGRU(3, 3, { dtype: 'float64', rng, weight: { kind: 'lsq', bits: 3, granularity: 'channel' }, input: null, hidden: null });
      const x = random64([4, 2, 3], rng, 1.5).requiresGrad_();
      const h0 = random64([1, 2, 3], rng, 0.5).requiresGrad_();
      noGrad(() => qat.forward(x, h0));
      const q = qat.layerQuantizers(0);
      const step = (q.weightIh as unknown as { step: Tensor }).step;
      for (const r of [0, 4, 7]) step.data[r] = step.data[r]! * 0.3;  // some weights clip
      const sd = new Map(qat.namedParameters());
      const [wih, whh, bih, bhh] = ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0'].map((n) => sd.get(n)!);
      const result = gradcheck((input, h, bi, bh) => {
        void bi; void bh;
        const [out, hn] = qat.forward(input!, h!);
        return concat([reshape(out, [out.size]), reshape(hn, [hn.size])], 0);
      }, [x, h0, bih!, bhh!]);
      assert.ok(result.maxRelativeError < 1e-6, `max relative error ${result.maxRelativeError}`);

      // The float GRU on the quantized weights: its weight gradients (nn.GRU's, checked elsewhere) masked by the STE.
      const [out] = qat.forward(x, h0);
      const R = random64(out.shape as number[], rng);
      const [gWih, gWhh, gStep] = grad(out, [wih!, whh!, step], { gradOutputs: [R] });
      const fw = affineOf(q.weightIh)!;
      const fwh = affineOf(q.weightHh)!;
      const float = new GRU(3, 3, { dtype: 'float64' });
      const quantizedRows = (w: Tensor, f: NonNullable<Fq>): Tensor => new Tensor(Float64Array.from(w.data, (v, i) => f(v, Math.floor(i / 3)).y), w.shape as number[]);
      float.loadStateDict(new Map([['weight_ih_l0', quantizedRows(wih!, fw)], ['weight_hh_l0', quantizedRows(whh!, fwh)], ['bias_ih_l0', bih!], ['bias_hh_l0', bhh!]]));
      const fp = new Map(float.namedParameters());
      const [floatOut] = float.forward(x.detach(), h0.detach());
      const [dWi] = grad(floatOut, [fp.get('weight_ih_l0')!], { gradOutputs: [R] });
      let clipped = 0;
      const qmax = (q.weightIh as unknown as { qmax: number }).qmax;
      for (let r = 0; r < 9; r++) {
        let es = 0;
        for (let j = 0; j < 3; j++) {
          const piece = fw(wih!.data[r * 3 + j]!, r);
          if (!piece.inside) clipped++;
          const expected = piece.inside ? dWi!.data[r * 3 + j]! : 0;
          assert.ok(Math.abs(gWih!.data[r * 3 + j]! - expected) < 1e-10, `dW_ih[${r}, ${j}]`);
          es += dWi!.data[r * 3 + j]! * piece.dyds;
        }
        const expectedStep = es / Math.sqrt(3 * qmax);
        assert.ok(Math.abs(gStep!.data[r]! - expectedStep) < 1e-6 * Math.max(1, Math.abs(expectedStep)), `step ${r}: ${gStep!.data[r]} vs ${expectedStep}`);
      }
      assert.ok(clipped > 0, 'some weights clip');
      assert.ok(gWhh!.data.some((v) => v !== 0));
    });
  });

  it("quantized gradients equal a float64 hand-written BPTT with the quantizers' closed forms (clipped STE for x and h, LSQ steps)", () => {
    withBackend('reference', () => {
      const rng = new Rng(9);
      const [I, H, L, N] = [3, 2, 4, 2];
      const gru = new QatGRU(I, H, { dtype: 'float64', rng, weight: { kind: 'lsq', bits: 3, granularity: 'channel' }, input: int4Signed, hidden: { kind: 'lsq', bits: 3, signed: true, symmetric: true } });
      const x = random64([L, N, I], rng, 1.5).requiresGrad_();
      noGrad(() => gru.forward(x));
      const q = gru.layerQuantizers(0);
      const [sx, sh] = [q.input, q.hidden].map((qq) => (qq as unknown as { step: Tensor }).step);
      sx!.data[0] = sx!.data[0]! * 0.15;
      sh!.data[0] = sh!.data[0]! * 0.15;
      const [out] = gru.forward(x);
      const R = random64([L, N, H], rng);
      const sd = new Map(gru.namedParameters());
      const [wih, whh, bih, bhh] = ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0'].map((n) => sd.get(n)!);
      const [gx, gbi, gbh, gsx, gsh] = grad(out, [x, bih!, bhh!, sx!, sh!], { gradOutputs: [R] });

      const ref = referenceLayer(timeMajor(x, false), rows2(wih!), rows2(whh!), [...bih!.data], [...bhh!.data], null, {
        w: affineOf(q.weightIh), wh: affineOf(q.weightHh), x: affineOf(q.input), h: affineOf(q.hidden),
      });
      const dbi = new Array<number>(3 * H).fill(0);
      const dbh = new Array<number>(3 * H).fill(0);
      const dx = Array.from({ length: L }, () => Array.from({ length: N }, () => new Array<number>(I).fill(0)));
      let esX = 0;
      let esH = 0;
      let dhNext = Array.from({ length: N }, () => new Array<number>(H).fill(0));
      for (let t = L - 1; t >= 0; t--) {
        const s = ref.steps[t]!;
        const dhPrev = Array.from({ length: N }, () => new Array<number>(H).fill(0));
        for (let n = 0; n < N; n++) {
          const dgx = new Array<number>(3 * H).fill(0);
          const dgh = new Array<number>(3 * H).fill(0);
          for (let k = 0; k < H; k++) {
            const dh = R.data[(t * N + n) * H + k]! + dhNext[n]![k]!;
            const [r, z, nv] = [s.r[n]![k]!, s.z[n]![k]!, s.n[n]![k]!];
            const dan = dh * (1 - z) * (1 - nv * nv);
            const daz = dh * (s.hPrev[n]![k]! - nv) * z * (1 - z);
            const dar = dan * s.hn[n]![k]! * r * (1 - r);
            [dgx[k], dgx[H + k], dgx[2 * H + k]] = [dar, daz, dan];
            [dgh[k], dgh[H + k], dgh[2 * H + k]] = [dar, daz, dan * r];
            dhPrev[n]![k] = dh * z;
          }
          for (let r = 0; r < 3 * H; r++) {
            dbi[r] += dgx[r]!;
            dbh[r] += dgh[r]!;
          }
          for (let j = 0; j < I; j++) {
            let d = 0;
            for (let r = 0; r < 3 * H; r++) d += dgx[r]! * ref.Wi[r]![j]!.y;
            const piece = s.x[n]![j]!;
            dx[t]![n]![j] = piece.inside ? d : 0;
            esX += d * piece.dyds;
          }
          if (t > 0) {
            for (let j = 0; j < H; j++) {
              let d = 0;
              for (let r = 0; r < 3 * H; r++) d += dgh[r]! * ref.Wh[r]![j]!.y;
              const piece = s.hq[n]![j]!;
              dhPrev[n]![j] += piece.inside ? d : 0;
              esH += d * piece.dyds;
            }
          }
        }
        dhNext = dhPrev;
      }
      const close = (a: number, e: number, tol: number, what: string): void => assert.ok(Math.abs(a - e) <= tol * Math.max(1, Math.abs(e)), `${what}: ${a} vs ${e}`);
      for (let t = 0; t < L; t++) for (let n = 0; n < N; n++) for (let j = 0; j < I; j++) close(gx!.data[(t * N + n) * I + j]!, dx[t]![n]![j]!, 1e-10, `dx[${t}, ${n}, ${j}]`);
      for (let r = 0; r < 3 * H; r++) {
        close(gbi!.data[r]!, dbi[r]!, 1e-10, `b_ih[${r}]`);
        close(gbh!.data[r]!, dbh[r]!, 1e-10, `b_hh[${r}]`);
      }
      const qmaxOf = (qq: unknown): number => (qq as { qmax: number }).qmax;
      close(gsx!.item(), esX / Math.sqrt(I * qmaxOf(q.input)), 1e-6, 'input step');
      close(gsh!.item(), esH / Math.sqrt(H * qmaxOf(q.hidden)), 1e-6, 'hidden step');
      assert.ok(ref.steps.some((s) => s.x.flat().some((p) => !p.inside)) && ref.steps.some((s) => s.hq.flat().some((p) => !p.inside)), 'some x and h values clip');
    });
  });

  it('with 16-bit quantizers everywhere the output is the float GRU\'s to 1e-3', () => {
    const rng = new Rng(3);
    const float = new GRU(8, 16, { batchFirst: true, rng });
    const bits16: QuantizerSpec = { kind: 'lsq', bits: 16, signed: true, symmetric: true };
    const qat = QatGRU.fromGRU(float, { weight: { ...bits16, granularity: 'channel' }, input: bits16, hidden: bits16 });
    const x = new Tensor(Float32Array.from({ length: 4 * 6 * 8 }, () => rng.normal()), [4, 6, 8]);
    noGrad(() => qat.forward(x));
    // LSQ's initial step (2·mean|v|/√qmax) is far too fine at 16 bits; set it to cover the range as a trained one would.
    for (const qq of Object.values(qat.layerQuantizers(0))) {
      const s = (qq as unknown as { step: Tensor }).step;
      s.data.fill(4 / 32767);
    }
    const [a, ha] = float.forward(x);
    const [b, hb] = noGrad(() => qat.forward(x));
    let worst = 0;
    for (const [u, v] of [[a, b], [ha, hb]] as const) for (let i = 0; i < u.size; i++) worst = Math.max(worst, Math.abs(u.data[i]! - v.data[i]!));
    assert.ok(worst < 1e-3, `max |QAT − float| ${worst}`);
    assert.ok(worst > 0, 'the quantizers are on');
  });

  it('refuses bad specs naming the option; state dicts round-trip; float GRU weights load by name', () => {
    assert.throws(() => new QatGRU(2, 2, { weight: { kind: 'lsq', bits: 4.5 } }), /QatGRU: weight bits must be an integer in \[1, 16\], got 4.5/);
    assert.throws(() => new QatGRU(2, 2, { input: { kind: 'lsq', bits: 4, granularity: 'channel' } }), /QatGRU: input activations are quantized per tensor/);
    assert.throws(() => new QatGRU(2, 2, { numLayers: 2, hidden: [int4Signed] }), /QatGRU: hidden lists 1 specs for 2 layers/);
    assert.throws(() => new QatGRU(0, 2), /QatGRU: inputSize must be a positive integer, got 0/);
    assert.throws(() => QatGRU.fromGRU(new GRU(2, 2, { bidirectional: true })), /bidirectional/);
    const rng = new Rng(21);
    const options = { numLayers: 2, batchFirst: true, weight: int4Row, input: int4Signed, hidden: int4Signed } as const;
    const a = new QatGRU(3, 4, { ...options, rng });
    const x = new Tensor(Float32Array.from({ length: 2 * 5 * 3 }, () => rng.normal()), [2, 5, 3]);
    a.forward(x);
    a.eval();
    const b = new QatGRU(3, 4, { ...options, rng: new Rng(99) });
    b.loadStateDict(a.stateDict());
    b.eval();
    assert.deepEqual(Array.from(b.forward(x)[0].data), Array.from(a.forward(x)[0].data));
    assert.throws(() => a.forward(x, new Tensor(new Float32Array(4), [1, 1, 4])), /initial state h0 has shape \[1, 1, 4\], expected \[2, 2, 4\]/);
    const float = new GRU(3, 4, { numLayers: 2, batchFirst: true, rng });
    const partial = float.stateDict();
    partial.delete('bias_hh_l1');
    assert.throws(() => b.loadFloatStateDict(partial), /missing keys bias_hh_l1/);
  });

  it('prepareRnnQat swaps a GRU for a QatGRU with the plan (w4a8: 4-bit rows, 8-bit x and h), keeping the weights; modelSize counts them at 4 bits', () => {
    const model = new NextWordModel({ vocabSize: 20, embeddingDim: 4, hiddenSize: 6, cell: 'gru', rng: new Rng(1) });
    const before = Array.from((model.rnn as unknown as GRU).stateDict().get('weight_hh_l0')!.data);
    const rows = prepareRnnQat(model, nextWordQatPlan('w4a8')!);
    assert.deepEqual(rows.map((r) => `${r.name}:${r.type}`), ['embedding:Embedding', 'rnn:GRU', 'head:Linear']);
    assert.ok(model.rnn instanceof QatGRU);
    const q = (model.rnn as QatGRU).layerQuantizers(0);
    assert.deepEqual([q.weightIh!.spec.bits, q.weightHh!.spec.bits, q.input!.spec.bits, q.hidden!.spec.bits], [4, 4, 8, 8]);
    assert.deepEqual(Array.from((model.rnn as QatGRU).stateDict().get('weight_hh_l0')!.data), before);
    const x = new Tensor(Int32Array.from({ length: 3 * 5 }, (_, i) => i % 20), [3, 5]);
    model.forward(x);
    const size = modelSize(model);
    const whh = size.entries.find((e) => e.name === 'rnn.weight_hh_l0')!;
    assert.deepEqual([whh.values, whh.bits, whh.quantParams, whh.bytes], [18 * 6, 4, 18, 54 + 4 * 18]);
    assert.ok(size.entries.some((e) => e.name === 'rnn.hidden_l0' && e.quantParams === 1));
  });
});
