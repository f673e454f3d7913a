import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { concat, linear, reshape, Rng, swapAxes, Tensor } from '../tensor/index.ts';
import { noGrad } from '../autograd/index.ts';
import { grad } from '../autograd/engine.ts';
import { gradcheck } from '../autograd/gradcheck.ts';
import { withBackend } from '../backend/index.ts';
import { SRU, SRUCell, sruRecurrence, type SRUActivation } from './sru.ts';

/** Values uniform in [−1, 1). */
function randomData(size: number, rng: Rng): Float64Array {
  const data = new Float64Array(size);
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform() * 2 - 1;
  return data;
}

function random(shape: number[], rng: Rng, dtype: 'float32' | 'float64' = 'float64'): Tensor {
  const data = randomData(shape.reduce((p, d) => p * d, 1), rng);
  return new Tensor(dtype === 'float32' ? Float32Array.from(data) : data, shape);
}

function flat(...ts: Tensor[]): Tensor {
  return concat(ts.map((t) => reshape(t, [t.size])), 0);
}

interface RefCell {
  W: ArrayLike<number>;
  rows: number;
  cols: number;
  vF: ArrayLike<number>;
  vR: ArrayLike<number>;
  bF: ArrayLike<number>;
  bR: ArrayLike<number>;
}

function refCellOf(cell: SRUCell): RefCell {
  const w = cell.proj.parameters()[0]!;
  return { W: w.data, rows: w.shape[0]!, cols: w.shape[1]!, vF: cell.vF.data, vR: cell.vR.data, bF: cell.bF.data, bR: cell.bR.data };
}

const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/**
 * Float64 loop reference of a stacked SRU, straight from the paper's equations.
 * x: time-major [L][N][F]; c0: [D·layers][N][H]. Returns output [L][N][D·H] and the final c per layer-direction.
 */
function referenceSru(x: number[][][], cells: RefCell[], numLayers: number, directions: number, hidden: number, activation: SRUActivation, c0: number[][][]): { output: number[][][]; finals: number[][][] } {
  const steps = x.length;
  const batch = x[0]!.length;
  const g = activation === 'tanh' ? Math.tanh : (v: number): number => v;
  let input = x;
  const finals: number[][][] = [];
  for (let layer = 0; layer < numLayers; layer++) {
    const out: number[][][] = Array.from({ length: steps }, () => Array.from({ length: batch }, () => [] as number[]));
    for (let d = 0; d < directions; d++) {
      const cell = cells[layer * directions + d]!;
      const width = cell.cols;
      const c = c0[layer * directions + d]!.map((row) => [...row]);
      for (let k = 0; k < steps; k++) {
        const t = d === 1 ? steps - 1 - k : k;
        for (let n = 0; n < batch; n++) {
          const xt = input[t]![n]!;
          const u = (row: number): number => {
            let s = 0;
            for (let i = 0; i < width; i++) s += cell.W[row * width + i]! * xt[i]!;
            return s;
          };
          for (let j = 0; j < hidden; j++) {
            const cPrev = c[n]![j]!;
            const f = sigmoid(u(hidden + j) + cell.vF[j]! * cPrev + cell.bF[j]!);
            const r = sigmoid(u(2 * hidden + j) + cell.vR[j]! * cPrev + cell.bR[j]!);
            const cNew = f * cPrev + (1 - f) * u(j);
            const skip = cell.rows === 4 * hidden ? u(3 * hidden + j) : xt[j]!;
            c[n]![j] = cNew;
            out[t]![n]![d * hidden + j] = r * g(cNew) + (1 - r) * skip;
          }
        }
      }
      finals.push(c);
    }
    input = out;
  }
  return { output: input, finals };
}

function toNested(t: Tensor): number[][][] {
  const [a, b, c] = t.shape as [number, number, number];
  return Array.from({ length: a }, (_, i) => Array.from({ length: b }, (_, j) => Array.from(t.data.subarray((i * b + j) * c, (i * b + j + 1) * c))));
}

function maxDiff(got: ArrayLike<number>, expected: number[]): number {
  assert.equal(got.length, expected.length);
  let m = 0;
  for (let i = 0; i < expected.length; i++) m = Math.max(m, Math.abs(got[i]! - expected[i]!));
  return m;
}

describe('nn.SRU forward against a float64 loop reference', () => {
  const configs: { name: string; input: number; hidden: number; numLayers: number; bidirectional: boolean; activation: SRUActivation; batchFirst: boolean; withC0: boolean }[] = [
    { name: '2 layers (4-block then 3-block projection), time-major', input: 3, hidden: 4, numLayers: 2, bidirectional: false, activation: 'identity', batchFirst: false, withC0: false },
    { name: '2 layers bidirectional, batchFirst, tanh, c0 given', input: 3, hidden: 4, numLayers: 2, bidirectional: true, activation: 'tanh', batchFirst: true, withC0: true },
    { name: '1 layer input = hidden (highway x_t), c0 given', input: 5, hidden: 5, numLayers: 1, bidirectional: false, activation: 'identity', batchFirst: true, withC0: true },
  ];
  for (const cfg of configs) {
    it(cfg.name, () => {
      const rng = new Rng(21);
      const sru = new SRU(cfg.input, cfg.hidden, { numLayers: cfg.numLayers, bidirectional: cfg.bidirectional, activation: cfg.activation, batchFirst: cfg.batchFirst, rng });
      // Non-zero biases so b_f and b_r are exercised.
      for (const cell of sru.cells) for (const b of [cell.bF, cell.bR]) b.data.set(randomData(cfg.hidden, rng));
      const [L, N] = [4, 3];
      const D = cfg.bidirectional ? 2 : 1;
      const xTime = random([L, N, cfg.input], rng, 'float32');
      const c0 = random([D * cfg.numLayers, N, cfg.hidden], rng, 'float32');
      const x = cfg.batchFirst ? swapAxes(xTime, 0, 1) : xTime;
      const [output, cN] = noGrad(() => sru.forward(x, cfg.withC0 ? c0 : undefined));
      const outTime = cfg.batchFirst ? swapAxes(output, 0, 1) : output;
      assert.deepEqual(output.shape, cfg.batchFirst ? [N, L, D * cfg.hidden] : [L, N, D * cfg.hidden]);
      assert.deepEqual(cN.shape, [D * cfg.numLayers, N, cfg.hidden]);
      const zeroC0 = Array.from({ length: D * cfg.numLayers }, () => Array.from({ length: N }, () => new Array<number>(cfg.hidden).fill(0)));
      const ref = referenceSru(toNested(xTime), sru.cells.map(refCellOf), cfg.numLayers, D, cfg.hidden, cfg.activation, cfg.withC0 ? toNested(c0) : zeroC0);
      assert.ok(maxDiff(outTime.data, ref.output.flat(2)) < 1e-5, 'output');
      assert.ok(maxDiff(cN.data, ref.finals.flat(2)) < 1e-5, 'final c');
    });
  }

  it('unbatched [L, F] equals the batch of one; projection shapes and parameter names', () => {
    const rng = new Rng(3);
    const sru = new SRU(3, 4, { numLayers: 2, bidirectional: true, rng });
    assert.deepEqual([...sru.stateDict().keys()], ['layer0', 'layer0_reverse', 'layer1', 'layer1_reverse'].flatMap((c) => ['v_f', 'v_r', 'b_f', 'b_r', 'proj.weight'].map((p) => `${c}.${p}`)), 'own vectors first, then the projection');
    assert.deepEqual(sru.stateDict().get('layer1.proj.weight')!.shape, [16, 8]);
    assert.deepEqual(new SRU(4, 4).stateDict().get('layer0.proj.weight')!.shape, [12, 4]);
    const x = random([5, 3], rng, 'float32');
    const [out1, c1] = noGrad(() => sru.forward(x));
    const [outB, cB] = noGrad(() => sru.forward(reshape(x, [5, 1, 3])));
    assert.deepEqual(out1.shape, [5, 8]);
    assert.deepEqual(c1.shape, [4, 4]);
    assert.deepEqual(Array.from(out1.data), Array.from(outB.data));
    assert.deepEqual(Array.from(c1.data), Array.from(cB.data));
  });

  it('init: W within ±√(3/in) and spread, v within ±1/√H, biases zero; reproducible from rng', () => {
    const sru = new SRU(6, 8, { rng: new Rng(9) });
    const w = sru.stateDict().get('layer0.proj.weight')!.toArray();
    const bound = Math.sqrt(3 / 6);
    assert.ok(w.every((v) => Math.abs(v) <= bound) && Math.max(...w.map(Math.abs)) > 0.8 * bound);
    assert.ok(sru.cells[0]!.vF.toArray().every((v) => Math.abs(v) <= 1 / Math.sqrt(8)));
    assert.ok(sru.cells[0]!.bF.toArray().every((v) => v === 0));
    assert.deepEqual(new SRU(6, 8, { rng: new Rng(9) }).stateDict().get('layer0.proj.weight')!.toArray(), w);
  });

  it('refuses bad arguments with the argument named', () => {
    assert.throws(() => new SRU(0, 4), /inputSize must be a positive integer, got 0/);
    assert.throws(() => new SRU(3, 4, { numLayers: 1.5 }), /numLayers/);
    assert.throws(() => new SRU(3, 4, { dropout: 2 }), /dropout must be in \[0, 1\], got 2/);
    assert.throws(() => new SRU(3, 4, { activation: 'relu' as SRUActivation }), /activation must be/);
    const sru = new SRU(3, 4);
    assert.throws(() => sru.forward(random([2, 2, 5], new Rng(1), 'float32')), /last dim should be 3/);
    assert.throws(() => sru.forward(random([2, 2, 3], new Rng(1), 'float32'), random([2, 2, 4], new Rng(1), 'float32')), /c0 has shape \[2, 2, 4\], expected \[1, 2, 4\]/);
  });
});

describe('SRU gradients', () => {
  for (const [name, input, hidden, batchFirst, reverse, activation] of [
    ['4-block projection, time-major, identity', 2, 3, false, false, 'identity'],
    ['3-block projection (highway x), batchFirst, reverse, tanh', 3, 3, true, true, 'tanh'],
  ] as const) {
    it(`sruRecurrence against float64 central differences: ${name}`, () => {
      withBackend('reference', () => {
        const rng = new Rng(31);
        const [L, N] = [3, 2];
        const rows = (input === hidden ? 3 : 4) * hidden;
        const x = random(batchFirst ? [N, L, input] : [L, N, input], rng).requiresGrad_();
        const w = random([rows, input], rng).requiresGrad_();
        const [vF, vR, bF, bR] = [0, 1, 2, 3].map(() => random([hidden], rng).requiresGrad_()) as [Tensor, Tensor, Tensor, Tensor];
        const c0 = random([N, hidden], rng).requiresGrad_();
        const result = gradcheck(() => {
          const { output, final } = sruRecurrence(linear(x, w), input === hidden ? x : null, { vF, vR, bF, bR }, c0, { batchFirst, reverse, activation });
          return flat(output, final);
        }, [x, w, vF, vR, bF, bR, c0]);
        assert.equal(result.relativeErrors.length, 7);
        assert.ok(result.maxRelativeError < 1e-6, `relative errors ${result.relativeErrors.map((e) => e.toExponential(1)).join(' ')}`);
      });
    });
  }

  it('nn.SRU (float32) parameter and input gradients match float64 central differences of the loop reference', () => {
    const rng = new Rng(41);
    const sru = new SRU(2, 3, { numLayers: 2, bidirectional: true, rng });
    for (const cell of sru.cells) for (const b of [cell.bF, cell.bR]) b.data.set(randomData(3, rng));
    const [L, N] = [3, 2];
    const x = random([L, N, 2], rng, 'float32').requiresGrad_();
    const weights = randomData(L * N * 6 + 4 * N * 3, rng);
    const [output, cN] = sru.forward(x);
    const objective = flat(output, cN);
    const params = sru.parameters();
    const grads = grad(objective, [x, ...params], { gradOutputs: [new Tensor(Float32Array.from(weights), [weights.length])] });
    // The reference objective in float64, perturbing one float64 copy of each value in turn.
    const values = [x, ...params].map((t) => Float64Array.from(t.data));
    const refObjective = (): number => {
      const cells: RefCell[] = [];
      for (let k = 0; k < sru.cells.length; k++) {
        // Parameter order per cell: v_f, v_r, b_f, b_r, proj.weight.
        const [vF, vR, bF, bR, w] = values.slice(1 + 5 * k, 6 + 5 * k) as [Float64Array, Float64Array, Float64Array, Float64Array, Float64Array];
        const cols = params[5 * k + 4]!.shape[1]!;
        cells.push({ W: w, rows: w.length / cols, cols, vF, vR, bF, bR });
      }
      const xs = Array.from({ length: L }, (_, t) => Array.from({ length: N }, (_, n) => Array.from(values[0]!.subarray((t * N + n) * 2, (t * N + n + 1) * 2))));
      const zero = Array.from({ length: 4 }, () => Array.from({ length: N }, () => [0, 0, 0]));
      const ref = referenceSru(xs, cells, 2, 2, 3, 'identity', zero);
      const flatRef = [...ref.output.flat(2), ...ref.finals.flat(2)];
      return flatRef.reduce((s, v, i) => s + v * weights[i]!, 0);
    };
    const eps = 1e-6;
    let worst = 0;
    values.forEach((v, k) => {
      const numeric = new Float64Array(v.length);
      for (let i = 0; i < v.length; i++) {
        const keep = v[i]!;
        v[i] = keep + eps;
        const plus = refObjective();
        v[i] = keep - eps;
        const minus = refObjective();
        v[i] = keep;
        numeric[i] = (plus - minus) / (2 * eps);
      }
      const analytic = grads[k]!.data;
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < v.length; i++) {
        diff += (analytic[i]! - numeric[i]!) ** 2;
        norm += numeric[i]! ** 2;
      }
      worst = Math.max(worst, Math.sqrt(diff) / Math.max(Math.sqrt(norm), 1e-6));
    });
    assert.ok(worst < 1e-4, `worst relative gradient error ${worst.toExponential(2)}`);
  });
});
