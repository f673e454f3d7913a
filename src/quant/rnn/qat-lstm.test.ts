import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { grad } from '../../autograd/engine.ts';
import { gradcheck } from '../../autograd/gradcheck.ts';
import { noGrad } from '../../autograd/index.ts';
import { withBackend } from '../../backend/index.ts';
import { LSTM } from '../../nn/rnn.ts';
import { concat, reshape, Rng, Tensor } from '../../tensor/index.ts';
import { disableFakeQuant } from '../qat/prepare.ts';
import { QatLSTM } from './qat-lstm.ts';
import { affineOf, int4Row, int4Signed, mixedTwoLayerSpecs, random64, rows2, sigmoid, timeMajor, type Fq, type Piece } from './testing.ts';

/**
 * One layer of the QatLSTM recurrence in plain float64 JavaScript, time-major [L][N][·] arrays,
 * operands fake-quantized by the given quantizers (null: float). h0 given → quantized at t = 0.
 */
function referenceLayer(
  x: number[][][], wih: number[][], whh: number[][], b: number[], h0: number[][] | null, c0: number[][] | null,
  q: { w: Fq; wh: Fq; x: Fq; h: Fq },
): { out: number[][][]; h: number[][]; c: number[][] } {
  const L = x.length;
  const N = x[0]!.length;
  const H = whh[0]!.length;
  const qw = (m: number[][], f: Fq): number[][] => m.map((row, r) => row.map((v) => (f ? f(v, r).y : v)));
  const Wi = qw(wih, q.w);
  const Wh = qw(whh, q.wh);
  let h = h0 ?? Array.from({ length: N }, () => new Array<number>(H).fill(0));
  let c = c0 ?? Array.from({ length: N }, () => new Array<number>(H).fill(0));
  const out: number[][][] = [];
  for (let t = 0; t < L; t++) {
    const hq = t === 0 && !h0 ? h : h.map((row) => row.map((v) => (q.h ? q.h(v, 0).y : v)));
    const nh: number[][] = [];
    const nc: number[][] = [];
    for (let n = 0; n < N; n++) {
      const xq = x[t]![n]!.map((v) => (q.x ? q.x(v, 0).y : v));
      const z = Wi.map((row, r) => row.reduce((s, w, j) => s + w * xq[j]!, 0) + Wh[r]!.reduce((s, w, j) => s + w * hq[n]![j]!, 0) + b[r]!);
      const hr: number[] = [];
      const cr: number[] = [];
      for (let k = 0; k < H; k++) {
        const cv = sigmoid(z[H + k]!) * c[n]![k]! + sigmoid(z[k]!) * Math.tanh(z[2 * H + k]!);
        cr.push(cv);
        hr.push(sigmoid(z[3 * H + k]!) * Math.tanh(cv));
      }
      nh.push(hr);
      nc.push(cr);
    }
    h = nh;
    c = nc;
    out.push(h);
  }
  return { out, h, c };
}

describe('QatLSTM', () => {
  for (const batchFirst of [false, true]) {
    it(`forward equals a float64 hand-computed 2-layer LSTM on the same fake-quantized operands (batchFirst=${batchFirst}, LSQ and min-max mixed, h0/c0 given)`, () => {
      withBackend('reference', () => {
        const rng = new Rng(11);
        const lstm = new QatLSTM(3, 4, {
          numLayers: 2, batchFirst, dtype: 'float64', rng,
          ...mixedTwoLayerSpecs,
        });
        const [L, N] = [5, 2];
        const x = random64(batchFirst ? [N, L, 3] : [L, N, 3], rng, 2);
        const h0 = random64([2, N, 4], rng, 0.5);
        const c0 = random64([2, N, 4], rng, 0.5);
        lstm.forward(x, [h0, c0]); // initialises the LSQ steps and observes the ranges
        lstm.eval();
        const [out, [hN, cN]] = lstm.forward(x, [h0, c0]);
        let input = timeMajor(x, batchFirst);
        for (let k = 0; k < 2; k++) {
          const q = lstm.layerQuantizers(k);
          const p = (name: string): Tensor => lstm.stateDict().get(`${name}_l${k}`)!;
          const bias = Array.from(p('bias_ih').data, (v, r) => v + p('bias_hh').data[r]!);
          const start = (t: Tensor): number[][] => rows2(reshape(t, [2 * N, 4])).slice(k * N, (k + 1) * N);
          const ref = referenceLayer(input, rows2(p('weight_ih')), rows2(p('weight_hh')), bias, start(h0), start(c0), {
            w: affineOf(q.weightIh), wh: affineOf(q.weightHh), x: affineOf(q.input), h: affineOf(q.hidden),
          });
          for (let n = 0; n < N; n++) {
            for (let j = 0; j < 4; j++) {
              assert.ok(Math.abs(hN.data[(k * N + n) * 4 + j]! - ref.h[n]![j]!) < 1e-12, `hN layer ${k}`);
              assert.ok(Math.abs(cN.data[(k * N + n) * 4 + j]! - ref.c[n]![j]!) < 1e-12, `cN layer ${k}`);
            }
          }
          input = ref.out;
        }
        const got = timeMajor(out, batchFirst);
        for (let t = 0; t < L; t++) for (let n = 0; n < N; n++) for (let j = 0; j < 4; j++) assert.ok(Math.abs(got[t]![n]![j]! - input[t]![n]![j]!) < 1e-12, `output [${t}, ${n}, ${j}]`);
        // 4-bit weights really are on at most 15 levels per row.
        const w = lstm.layerQuantizers(0).weightIh!.forward(lstm.stateDict().get('weight_ih_l0')!);
        for (let r = 0; r < 16; r++) assert.ok(new Set(Array.from(w.data.slice(r * 3, r * 3 + 3))).size <= 15);
      });
    });
  }

  it('with fake quantization off it is nn.LSTM (fromLSTM copies the weights), and its gradients match float64 finite differences', () => {
    withBackend('reference', () => {
      const rng = new Rng(5);
      const float = new LSTM(3, 2, { numLayers: 2, dtype: 'float64', rng });
      const qat = QatLSTM.fromLSTM(float, { weight: int4Row, input: int4Signed, hidden: int4Signed });
      disableFakeQuant(qat);
      const x = random64([4, 2, 3], rng);
      const [a, [ha, ca]] = float.forward(x);
      const [b, [hb, cb]] = qat.forward(x);
      for (const [u, v] of [[a, b], [ha, hb], [ca, cb]] as const) for (let i = 0; i < u.size; i++) assert.ok(Math.abs(u.data[i]! - v.data[i]!) < 1e-12, "float path equals nn.LSTM");
      const xg = random64([4, 2, 3], rng).requiresGrad_();
      const h0 = random64([2, 2, 2], rng, 0.5).requiresGrad_();
      const params = qat.parameters().filter((p) => p.dtype === 'float64');
      assert.equal(params.length, 8);
      const result = gradcheck((input, h, ...ps) => {
        void ps;
        const [out, [hn, cn]] = qat.forward(input!, [h!, reshape(h!, [2, 2, 2])]);
        return concat([reshape(out, [out.size]), reshape(hn, [hn.size]), reshape(cn, [cn.size])], 0);
      }, [xg, h0, ...params]);
      assert.ok(result.maxRelativeError < 1e-6, `max relative error ${result.maxRelativeError}`);
    });
  });

  it("quantized gradients equal a float64 hand-written BPTT with the quantizers' closed forms (clipped STE for operands, LSQ step gradients)", () => {
    withBackend('reference', () => {
      const rng = new Rng(9);
      const [I, H, L, N] = [3, 2, 4, 2];
      const lstm = new QatLSTM(I, H, { dtype: 'float64', rng, weight: { kind: 'lsq', bits: 3, granularity: 'channel' }, input: int4Signed, hidden: { kind: 'lsq', bits: 3, signed: true, symmetric: true } });
      const x = random64([L, N, I], rng, 1.5).requiresGrad_();
      noGrad(() => lstm.forward(x));
      // Push the steps off their initial values so that some operands clip.
      const q = lstm.layerQuantizers(0);
      const steps = [q.weightIh, q.weightHh, q.input, q.hidden].map((qq) => (qq as unknown as { step: Tensor }).step);
      for (const r of [1, 4, 6]) steps[0]!.data[r] = steps[0]!.data[r]! * 0.3;
      steps[2]!.data[0] = steps[2]!.data[0]! * 0.3;
      steps[3]!.data[0] = steps[3]!.data[0]! * 0.5;
      const [out] = lstm.forward(x);
      const R = random64([L, N, H], rng);
      const sd = new Map(lstm.namedParameters());
      const [wih, whh, bih, bhh] = ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0'].map((n) => sd.get(n)!);
      const grads = grad(out, [x, wih!, whh!, bih!, bhh!, ...steps], { gradOutputs: [R] });

      // ---- reference: forward with stored pieces, then backward through time.
      const fw = affineOf(q.weightIh)!;
      const fwh = affineOf(q.weightHh)!;
      const fx = affineOf(q.input)!;
      const fh = affineOf(q.hidden)!;
      const qmaxOf = (qq: unknown): number => (qq as { qmax: number }).qmax;
      const Wi = rows2(wih!).map((row, r) => row.map((v) => fw(v, r)));
      const Wh = rows2(whh!).map((row, r) => row.map((v) => fwh(v, r)));
      const b = Array.from(bih!.data, (v, r) => v + bhh!.data[r]!);
      const X = timeMajor(x, false).map((step) => step.map((row) => row.map((v) => fx(v, 0))));
      type Step = { hq: Piece[][]; i: number[][]; f: number[][]; g: number[][]; o: number[][]; c: number[][]; cPrev: number[][] };
      const rec: Step[] = [];
      let h = Array.from({ length: N }, () => new Array<number>(H).fill(0));
      let c = Array.from({ length: N }, () => new Array<number>(H).fill(0));
      for (let t = 0; t < L; t++) {
        const hq = h.map((row) => row.map((v) => (t === 0 ? { y: 0, inside: true, dyds: 0 } : fh(v, 0))));
        const s: Step = { hq, i: [], f: [], g: [], o: [], c: [], cPrev: c };
        const nh: number[][] = [];
        for (let n = 0; n < N; n++) {
          const z = Wi.map((row, r) => row.reduce((acc, w, j) => acc + w.y * X[t]![n]![j]!.y, 0) + Wh[r]!.reduce((acc, w, j) => acc + w.y * hq[n]![j]!.y, 0) + b[r]!);
          const gi = z.slice(0, H).map(sigmoid);
          const gf = z.slice(H, 2 * H).map(sigmoid);
          const gg = z.slice(2 * H, 3 * H).map(Math.tanh);
          const go = z.slice(3 * H).map(sigmoid);
          const cn = gf.map((fv, k) => fv * c[n]![k]! + gi[k]! * gg[k]!);
          s.i.push(gi); s.f.push(gf); s.g.push(gg); s.o.push(go); s.c.push(cn);
          nh.push(cn.map((cv, k) => go[k]! * Math.tanh(cv)));
        }
        rec.push(s);
        h = nh;
        c = s.c;
      }
      const dWi = Wi.map((row) => row.map(() => 0));
      const dWh = Wh.map((row) => row.map(() => 0));
      const db = b.map(() => 0);
      const dX = X.map((step) => step.map((row) => row.map(() => 0)));
      let dsH = 0;
      let dhNext = Array.from({ length: N }, () => new Array<number>(H).fill(0));
      let dcNext = Array.from({ length: N }, () => new Array<number>(H).fill(0));
      for (let t = L - 1; t >= 0; t--) {
        const s = rec[t]!;
        const dhPrev = Array.from({ length: N }, () => new Array<number>(H).fill(0));
        const dcPrev = Array.from({ length: N }, () => new Array<number>(H).fill(0));
        for (let n = 0; n < N; n++) {
          const dz = new Array<number>(4 * H).fill(0);
          for (let k = 0; k < H; k++) {
            const dh = R.data[(t * N + n) * H + k]! + dhNext[n]![k]!;
            const tc = Math.tanh(s.c[n]![k]!);
            const dc = dh * s.o[n]![k]! * (1 - tc * tc) + dcNext[n]![k]!;
            const [iv, fv, gv, ov] = [s.i[n]![k]!, s.f[n]![k]!, s.g[n]![k]!, s.o[n]![k]!];
            dz[k] = dc * gv * iv * (1 - iv);
            dz[H + k] = dc * s.cPrev[n]![k]! * fv * (1 - fv);
            dz[2 * H + k] = dc * iv * (1 - gv * gv);
            dz[3 * H + k] = dh * tc * ov * (1 - ov);
            dcPrev[n]![k] = dc * fv;
          }
          for (let r = 0; r < 4 * H; r++) {
            db[r] += dz[r]!;
            for (let j = 0; j < I; j++) {
              dWi[r]![j] += dz[r]! * X[t]![n]![j]!.y;
              dX[t]![n]![j] += dz[r]! * Wi[r]![j]!.y;
            }
            for (let j = 0; j < H; j++) dWh[r]![j] += dz[r]! * s.hq[n]![j]!.y;
          }
          if (t > 0) {
            for (let j = 0; j < H; j++) {
              let dhq = 0;
              for (let r = 0; r < 4 * H; r++) dhq += dz[r]! * Wh[r]![j]!.y;
              const piece = s.hq[n]![j]!;
              dhPrev[n]![j] = piece.inside ? dhq : 0;
              dsH += dhq * piece.dyds;
            }
          }
        }
        dhNext = dhPrev;
        dcNext = dcPrev;
      }
      const close = (a: number, e: number, tol: number, what: string): void => assert.ok(Math.abs(a - e) <= tol * Math.max(1, Math.abs(e)), `${what}: ${a} vs ${e}`);
      const [gx, gWi, gWh, gbi, gbh, gsWi, gsWh, gsX, gsH] = grads;
      for (let t = 0; t < L; t++) for (let n = 0; n < N; n++) for (let j = 0; j < I; j++) close(gx!.data[(t * N + n) * I + j]!, X[t]![n]![j]!.inside ? dX[t]![n]![j]! : 0, 1e-10, 'dx');
      const rowsStep = (W: Piece[][], dW: number[][], gW: Tensor, gs: Tensor, qmax: number, what: string): void => {
        const cols = W[0]!.length;
        const g = 1 / Math.sqrt(cols * qmax);
        W.forEach((row, r) => {
          let es = 0;
          row.forEach((piece, j) => {
            close(gW.data[r * cols + j]!, piece.inside ? dW[r]![j]! : 0, 1e-10, `${what}[${r}, ${j}]`);
            es += dW[r]![j]! * piece.dyds;
          });
          close(gs.data[r]!, g * es, 1e-5, `${what} step ${r}`);
        });
      };
      rowsStep(Wi, dWi, gWi!, gsWi!, qmaxOf(q.weightIh), 'W_ih');
      rowsStep(Wh, dWh, gWh!, gsWh!, qmaxOf(q.weightHh), 'W_hh');
      for (let r = 0; r < 4 * H; r++) {
        close(gbi!.data[r]!, db[r]!, 1e-10, 'b_ih');
        close(gbh!.data[r]!, db[r]!, 1e-10, 'b_hh');
      }
      let esX = 0;
      X.forEach((step, t) => step.forEach((row, n) => row.forEach((piece, j) => { esX += dX[t]![n]![j]! * piece.dyds; })));
      close(gsX!.item(), esX / Math.sqrt(I * qmaxOf(q.input)), 1e-5, 'input step');
      close(gsH!.item(), dsH / Math.sqrt(H * qmaxOf(q.hidden)), 1e-5, 'hidden step');
      // Some operands did clip, so the masks were exercised.
      assert.ok(X.flat(2).some((p) => !p.inside) && Wi.flat().some((p) => !p.inside) && rec.some((st) => st.hq.flat().some((p) => !p.inside)), 'some x, W_ih and h values clip');
    });
  });

  it("an uninitialised LSQ hidden step starts from the float layer's h sequence: 2·mean|h_t|/√qmax over h_1..h_{L−1}", () => {
    withBackend('reference', () => {
      const rng = new Rng(3);
      const float = new LSTM(2, 3, { dtype: 'float64', rng });
      const qat = QatLSTM.fromLSTM(float, { weight: null, input: null, hidden: { kind: 'lsq', bits: 4, signed: true, symmetric: true } });
      const x = random64([6, 2, 2], rng, 2);
      const [h] = float.forward(x);
      let sum = 0;
      for (let i = 0; i < 5 * 2 * 3; i++) sum += Math.abs(h.data[i]!);
      qat.forward(x);
      const step = (qat.layerQuantizers(0).hidden as unknown as { step: Tensor }).step.data[0]!;
      assert.ok(Math.abs(step - Math.fround((2 * sum) / 30 / Math.sqrt(7))) < 1e-7, `step ${step}`);
    });
  });

  it('refuses bad bits, granularities, axes and per-layer lists, naming the option', () => {
    assert.throws(() => new QatLSTM(2, 2, { weight: { kind: 'lsq', bits: 4.5 } }), /weight bits must be an integer in \[1, 16\], got 4.5/);
    assert.throws(() => new QatLSTM(2, 2, { hidden: { kind: 'lsq', bits: 0, signed: true } }), /hidden bits must be an integer/);
    assert.throws(() => new QatLSTM(2, 2, { weight: { kind: 'ste', bits: 4, granularity: 'group', groupSize: 2 } }), /weight granularity must be 'channel' \(one scale per output row\) or 'tensor', got "group"/);
    assert.throws(() => new QatLSTM(2, 2, { weight: { kind: 'ste', bits: 4, granularity: 'channel', axis: 1 } }), /axis 0/);
    assert.throws(() => new QatLSTM(2, 2, { input: { kind: 'lsq', bits: 4, granularity: 'channel' } }), /input activations are quantized per tensor/);
    assert.throws(() => new QatLSTM(2, 2, { numLayers: 2, input: [int4Signed] }), /input lists 1 specs for 2 layers/);
    assert.throws(() => new QatLSTM(2, 2, { hidden: { kind: 'lsq', bits: 1, signed: true } }), /cannot build the quantizer of the hidden state of layer 0/);
    assert.throws(() => new QatLSTM(2, 2, { weight: { kind: 'nope', bits: 4 } }), /unknown quantizer kind 'nope'/);
    assert.throws(() => QatLSTM.fromLSTM(new LSTM(2, 2, { bidirectional: true })), /bidirectional/);
  });

  it('state dict round trip: a trained QatLSTM reloads strictly into a fresh one with identical outputs; float state dicts load by name', () => {
    const rng = new Rng(21);
    const options = { numLayers: 2, batchFirst: true, weight: int4Row, input: int4Signed, hidden: { kind: 'ste', bits: 4, signed: true, symmetric: true } } as const;
    const a = new QatLSTM(3, 4, { ...options, rng });
    const x = new Tensor(Float32Array.from({ length: 2 * 5 * 3 }, () => rng.normal()), [2, 5, 3]);
    a.forward(x);
    a.eval();
    const b = new QatLSTM(3, 4, { ...options, rng: new Rng(99) });
    b.loadStateDict(a.stateDict());
    b.eval();
    const [ya] = a.forward(x);
    const [yb] = b.forward(x);
    assert.deepEqual(Array.from(yb.data), Array.from(ya.data));
    assert.ok([...a.stateDict().keys()].includes("quant_hidden_l1.runningMax"), "observer state is in the state dict");
    const float = new LSTM(3, 4, { numLayers: 2, batchFirst: true, rng });
    b.loadFloatStateDict(float.stateDict());
    assert.deepEqual(Array.from(b.stateDict().get('weight_hh_l1')!.data), Array.from(float.stateDict().get('weight_hh_l1')!.data));
    assert.throws(() => b.loadFloatStateDict(new Map([...float.stateDict(), ['extra', x]])), /unexpected keys extra/);
    const partial = float.stateDict();
    partial.delete('bias_ih_l0');
    assert.throws(() => b.loadFloatStateDict(partial), /missing keys bias_ih_l0/);
  });
});
