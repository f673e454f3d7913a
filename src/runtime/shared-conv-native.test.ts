// The native plan's shared stem (intPlanShareConv): ResNet's stem conv feeds the first block's conv
// and its add in two quantization domains, so the IntModel holds it twice; the native executor runs
// it once, requantizing the same int32 accumulators with both output stages. The logits must stay
// bit-identical to the TypeScript executor and to the plan without the sharing.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { noGrad } from '../autograd/engine.ts';
import { resnet8 } from '../nn/index.ts';
import { manualSeed, randn, Rng } from '../tensor/index.ts';
import { prepareQat } from '../quant/qat/index.ts';
import { qconfigFor } from '../quant/config/qconfig.ts';
import { loadAddon } from '../backend/native/load.ts';
import { convert } from './index.ts';
import { compileNativePlan } from './native-plan.ts';

const addon = loadAddon();
const skip = addon?.intPlanCreate && addon.intPlanRun && addon.intPlanKernels ? false : 'native addon without the IntModel executor';

describe('native executor: a conv computed once for two output stages', { skip }, () => {
  // stem widths 16 (two full 8-channel blocks: the scattered stores), 12 (8 + 4) and 4
  for (const [scheme, stem, seed] of [['w8a8', 16, 0], ['w4a4', 12, 1], ['w8a8', 4, 2]] as const) {
    it(`${scheme}, stem 1 -> ${stem}: one stem op with a second output; logits identical to the TS executor and the unshared plan`, () => {
      manualSeed(seed);
      const model = resnet8({ channels: [stem, 8, 8] });
      const x = randn([8, 1, 28, 28]);
      prepareQat(model, { default: qconfigFor(scheme, scheme === 'w8a8' ? 'ste' : 'lsq') });
      model.train();
      for (let i = 0; i < 3; i++) noGrad(() => model.forward(x));
      model.eval();
      const im = convert(model, { sample: x });
      const spec = compileNativePlan(im);
      assert.ok(typeof spec === 'object', String(spec));
      // the IntModel holds the stem twice (same weights, same input, different requantization)
      const stems = spec.ops.filter((op) => op.meta[0] === 1 && op.meta[3] === 1);
      assert.equal(stems.length, 2);
      const shared = addon!.intPlanCreate!(spec.ops);
      const plain = addon!.intPlanCreate!(spec.ops, true, true, false);
      const kShared = addon!.intPlanKernels!(shared);
      const kPlain = addon!.intPlanKernels!(plain);
      if (kPlain.some((k) => k.startsWith('conv direct'))) {
        // (the direct kernel needs AVX-512 VNNI + VBMI; without it there is nothing to share)
        assert.equal(kShared.filter((k) => k.includes('+2nd output')).length, 1, kShared.join(', '));
        assert.equal(kShared.length, kPlain.length - 1);
      }
      const rng = new Rng(40 + seed);
      for (const n of [1, 5, 13]) {
        // the first 8 samples are the calibration-like inputs, the rest wider (saturating the input quantizer)
        const xr = Float32Array.from({ length: n * 28 * 28 }, (_, i) =>
          i < x.data.length ? (x.data as Float32Array)[i]! : (rng.uniform() * 2 - 1) * 4,
        );
        im.useNative = false;
        const ts = im.run(xr, n);
        const a: Float32Array = new Float32Array(n * spec.outputSize);
        const b: Float32Array = new Float32Array(n * spec.outputSize);
        addon!.intPlanRun!(shared, xr, n, a);
        addon!.intPlanRun!(plain, xr, n, b);
        assert.deepEqual(Array.from(a), Array.from(ts), `batch ${n}: shared plan vs TS executor`);
        assert.deepEqual(Array.from(a), Array.from(b), `batch ${n}: shared vs unshared plan`);
      }
    });
  }
});
