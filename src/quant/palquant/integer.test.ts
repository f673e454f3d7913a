import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../../autograd/engine.ts';
import { manualSeed, rand, Tensor } from '../../tensor/index.ts';
import { Conv2d, Linear } from '../../nn/index.ts';
import { LsqQuantizer } from '../quantizers/lsq.ts';
import { PalQuantConv2d, PalQuantLinear, type PalQuantLayer, type PalQuantSpecs } from './layers.ts';
import { palQuantActivationSpec, palQuantWeightSpec } from './convert.ts';
import { lowerPalQuantLayer, palQuantAccumulators, quantizePalQuantInput, runPalQuantInteger } from './integer.ts';

const specs = (w: number, a: number): PalQuantSpecs => ({ weight: palQuantWeightSpec(w), activation: palQuantActivationSpec(a) });

/** Runs one forward (LSQ initialises from x), then, if `pow2`, snaps every step to a power of two and the bias to multiples of the smallest scale product. */
function prepare(layer: PalQuantLayer, x: Tensor, pow2: boolean): void {
  noGrad(() => layer.forward(x));
  layer.eval();
  if (!pow2) return;
  const snap = (v: number): number => 2 ** Math.floor(Math.log2(v));
  const all = [layer.weightQuantizer, ...layer.inputQuantizers];
  for (const q of all) {
    assert.ok(q instanceof LsqQuantizer);
    for (let i = 0; i < q.step.size; i++) q.step.data[i] = snap(q.step.data[i]!);
  }
  if (layer.bias) {
    const unit = 2 ** -12;
    for (let i = 0; i < layer.bias.size; i++) layer.bias.data[i] = Math.round(layer.bias.data[i]! / unit) * unit;
  }
}

describe('PalQuant integer form', () => {
  for (const [wBits, aBits, kernel] of [[2, 2, 2], [4, 4, 4], [2, 4, 2], [8, 8, 8]] as const) {
    it(`W${wBits}A${aBits}: G grouped integer convs (gemmInt${kernel}) equal the fake-quant conv exactly (power-of-two scales)`, () => {
      manualSeed(10 + wBits + aBits);
      const layer = PalQuantConv2d.fromConv(new Conv2d(3, 4, 3, { padding: 1, stride: 2 }), 2, specs(wBits, aBits));
      const x = rand([2, 6, 7, 7], { high: 3 });
      prepare(layer, x, true);
      const fake = noGrad(() => layer.forward(x));
      const int = lowerPalQuantLayer(layer);
      assert.equal(int.weightBits, kernel);
      const y = runPalQuantInteger(int, x);
      assert.deepEqual(y.shape, fake.shape);
      assert.deepEqual([...y.data], [...fake.data]);
      // Not a trivial agreement: codes of both signs, several activation levels, a varied output.
      const codes = quantizePalQuantInput(int, x);
      assert.equal(Math.min(...codes), 0);
      assert.ok(Math.max(...codes) >= 2);
      assert.ok(Math.min(...int.weightCodes) < 0 && Math.max(...int.weightCodes) > 0);
      assert.ok(new Set(y.data).size > 10);
    });
  }

  it('with learned (non power-of-two) scales the accumulators are recovered exactly from the fake-quant output', () => {
    manualSeed(20);
    const layer = PalQuantConv2d.fromConv(new Conv2d(2, 3, 3, { padding: 1, groups: 1 }), 3, specs(2, 2));
    const x = rand([2, 6, 5, 5], { high: 2 });
    prepare(layer, x, false);
    const fake = noGrad(() => layer.forward(x));
    const int = lowerPalQuantLayer(layer);
    const { acc } = palQuantAccumulators(int, quantizePalQuantInput(int, x), x.shape);
    const y = runPalQuantInteger(int, x);
    const plane = 25;
    for (let i = 0; i < acc.length; i++) {
      const o = Math.floor(i / plane) % 9;
      const unit = int.inputs[Math.floor(o / 3)]!.scale * int.weightScale[o]!;
      assert.equal(Math.round((fake.data[i]! - int.bias![o]!) / unit) + 0, acc[i]);
      assert.ok(Math.abs(y.data[i]! - fake.data[i]!) <= 1e-5 * (1 + Math.abs(fake.data[i]!)));
    }
  });

  it('agrees with an independent direct convolution on the codes (inner conv groups, dilation)', () => {
    manualSeed(21);
    const layer = PalQuantConv2d.fromConv(new Conv2d(4, 4, 2, { groups: 2, dilation: 2 }), 2, specs(2, 2));
    const x = rand([1, 8, 5, 5], { high: 2 });
    prepare(layer, x, true);
    const int = lowerPalQuantLayer(layer);
    const codes = quantizePalQuantInput(int, x);
    const { acc, shape } = palQuantAccumulators(int, codes, x.shape);
    assert.deepEqual(shape, [1, 8, 3, 3]);
    // Direct loops: 4 conv groups of 2 input and 2 output channels, kernel 2x2 dilated by 2.
    for (let o = 0; o < 8; o++) {
      const cg = Math.floor(o / 2);
      for (let oy = 0; oy < 3; oy++) {
        for (let ox = 0; ox < 3; ox++) {
          let s = 0;
          for (let ci = 0; ci < 2; ci++) {
            for (let ky = 0; ky < 2; ky++) {
              for (let kx = 0; kx < 2; kx++) s += codes[(cg * 2 + ci) * 25 + (oy + 2 * ky) * 5 + ox + 2 * kx]! * int.weightCodes[((o * 2 + ci) * 2 + ky) * 2 + kx]!;
            }
          }
          assert.equal(acc[(o * 3 + oy) * 3 + ox], s);
        }
      }
    }
    assert.deepEqual([...runPalQuantInteger(int, x).data], [...noGrad(() => layer.forward(x)).data]);
  });

  it('PalQuantLinear: the integer path equals the fake-quant layer exactly', () => {
    manualSeed(22);
    const layer = PalQuantLinear.fromLinear(new Linear(10, 4, { bias: false }), 2, specs(2, 2));
    const x = rand([3, 20], { high: 2 });
    prepare(layer, x, true);
    assert.deepEqual([...runPalQuantInteger(lowerPalQuantLayer(layer), x).data], [...noGrad(() => layer.forward(x)).data]);
  });

  it('refuses an uninitialised quantizer', () => {
    const layer = PalQuantConv2d.fromConv(new Conv2d(2, 2, 1), 2, specs(2, 2));
    assert.throws(() => lowerPalQuantLayer(layer), /not initialised/);
  });
});
