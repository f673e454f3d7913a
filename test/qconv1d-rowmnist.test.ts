/**
 * End to end on real data: a 1-D conv net on row-MNIST (rows as channels, columns as positions)
 * trained in fp32, fine-tuned with QAT at W8A8 (STE) and W4A4 (LSQ), converted to the integer
 * runtime. A small recipe (3000 training images, 2 fp32 epochs + 1 QAT epoch, 1000 test images);
 * the larger measurement is bench/qat/conv1d.ts (docs/guide.md).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { runConv1dRowMnist } from '../bench/qat/conv1d.ts';

describe('Conv1d QAT on row-MNIST', () => {
  it('fp32 ≥ 85 %, W8A8 / W4A4 QAT ≥ 85 %, the IntModel agrees with the fake-quant model on ≥ 99 % of the test images', () => {
    const results = runConv1dRowMnist({ train: 3000, test: 1000, epochs: 2, qatEpochs: 1 });
    assert.deepEqual(results.map((r) => r.name), ['fp32', 'fp32 fine-tuned', 'w8a8 ste', 'w4a4 lsq']);
    // measured 90.3 / 91.2 / 91.5 % (IntModel the same); chance is 10 %
    for (const r of results) assert.ok(r.accuracy >= 0.85, `${r.name}: accuracy ${r.accuracy}`);
    for (const r of results.slice(2)) {
      assert.ok(r.intAgreement! >= 0.99, `${r.name}: IntModel argmax agreement ${r.intAgreement}`);
      assert.ok(Math.abs(r.intAccuracy! - r.accuracy) <= 0.01, `${r.name}: IntModel accuracy ${r.intAccuracy} vs fake-quant ${r.accuracy}`);
    }
  });
});
