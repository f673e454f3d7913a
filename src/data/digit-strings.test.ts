import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createDataset } from './dataset.ts';
import { DataError } from './errors.ts';
import { digitStrings, DIGIT_STRIP_HEIGHT } from './digit-strings.ts';

/**
 * Ten 1×28×6 "digits": image k is inked in columns 2..3 only, pixel (r, c) = 0.05·(k + 1) + 0.001·r
 * + 0.0001·c (all > 0), so a column names its digit, row and source column.
 */
function toySource() {
  const width = 6;
  const images = new Float32Array(10 * DIGIT_STRIP_HEIGHT * width);
  for (let k = 0; k < 10; k++) {
    for (let r = 0; r < DIGIT_STRIP_HEIGHT; r++) {
      for (const c of [2, 3]) images[(k * DIGIT_STRIP_HEIGHT + r) * width + c] = 0.05 * (k + 1) + 0.001 * r + 0.0001 * c;
    }
  }
  const labels = Int32Array.from({ length: 10 }, (_, k) => k);
  return createDataset({ name: 'toy-digits', images, labels, sampleShape: [1, DIGIT_STRIP_HEIGHT, width], numClasses: 10, classNames: [...'0123456789'] });
}

describe('digitStrings', () => {
  it('pastes the digits left to right with gaps in range; labels are the pasted digits', () => {
    const strings = digitStrings('train', { source: toySource(), count: 40, minDigits: 2, maxDigits: 4, gap: [1, 3], normalize: null, seed: 3 });
    assert.equal(strings.length, 40);
    for (let i = 0; i < strings.length; i++) {
      const width = strings.widths[i]!;
      const strip = strings.strip(i);
      const labels = Array.from(strings.labels[i]!);
      assert.ok(labels.length >= 2 && labels.length <= 4);
      // Walk the columns: runs of blank columns are gaps, each inked run is one digit (2 columns).
      const found: number[] = [];
      const gaps: number[] = [];
      let blank = 0;
      for (let c = 0; c < width; c++) {
        const top = strip[c]!;
        if (top === 0) {
          blank++;
          continue;
        }
        if (c === 0 || strip[c - 1] === 0) {
          // First inked column of a digit: source column 2.
          gaps.push(blank);
          found.push(Math.round((top - 0.0002) / 0.05) - 1);
          assert.ok(strip[c + 1]! > 0 && strip[c + 2] === 0, 'two inked columns per digit');
        }
        blank = 0;
        // Rows carry the 0.001·r signature: no vertical shift without jitter.
        assert.ok(Math.abs(strip[5 * width + c]! - top - 0.005) < 1e-6);
      }
      gaps.push(blank);
      assert.deepEqual(found, labels);
      assert.equal(gaps.length, labels.length + 1);
      for (const g of gaps) assert.ok(g >= 1 && g <= 3, `gap ${g}`);
      assert.equal(width, gaps.reduce((s, g) => s + g, 0) + 2 * labels.length);
    }
  });

  it('batches stack frameStack columns per frame, normalise with MNIST stats and pad with background', () => {
    const source = toySource();
    const raw = digitStrings('test', { source, count: 6, normalize: null, frameStack: 1, seed: 5 });
    const stacked = digitStrings('test', { source, count: 6, frameStack: 3, seed: 5 });
    assert.deepEqual(Array.from(stacked.widths), Array.from(raw.widths));
    assert.equal(stacked.featureSize, 84);
    const batch = stacked.batch([4, 1, 2]);
    const [b, maxT, f] = batch.features.shape as [number, number, number];
    assert.equal(b, 3);
    assert.equal(f, 84);
    assert.deepEqual(Array.from(batch.featureLengths.data), [4, 1, 2].map((i) => Math.ceil(raw.widths[i]! / 3)));
    assert.equal(maxT, Math.max(...batch.featureLengths.data));
    assert.deepEqual(Array.from(batch.labelLengths.data), [4, 1, 2].map((i) => raw.labels[i]!.length));
    const background = (0 - 0.1307) / 0.3081;
    assert.ok(Math.abs(stacked.background - background) < 1e-7);
    [4, 1, 2].forEach((i, k) => {
      const strip = raw.strip(i);
      const width = raw.widths[i]!;
      for (let t = 0; t < maxT; t++) {
        for (let s = 0; s < 3; s++) {
          for (let r = 0; r < DIGIT_STRIP_HEIGHT; r++) {
            const column = t * 3 + s;
            const pixel = column < width ? strip[r * width + column]! : 0;
            const got = batch.features.data[(k * maxT + t) * f + s * DIGIT_STRIP_HEIGHT + r]!;
            assert.ok(Math.abs(got - (pixel - 0.1307) / 0.3081) < 1e-5, `sample ${i} frame ${t} column ${s} row ${r}`);
          }
        }
      }
      const u = batch.labels.shape[1]!;
      assert.deepEqual(Array.from(batch.labels.data.subarray(k * u, k * u + raw.labels[i]!.length)), Array.from(raw.labels[i]!));
    });
    // batches(): every string once per epoch; shuffled epochs differ and are reproducible.
    const seen = [...stacked.batches({ batchSize: 4 })].flatMap((x) => Array.from(x.indices));
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5]);
    const order = (epoch: number): number[] => [...stacked.batches({ batchSize: 4, shuffle: true, seed: 1, epoch })].flatMap((x) => Array.from(x.indices));
    assert.deepEqual(order(2), order(2));
    assert.deepEqual([...order(2)].sort(), [0, 1, 2, 3, 4, 5]);
    assert.equal([...stacked.batches({ batchSize: 4, dropLast: true })].length, 1);
  });

  it('vertical jitter shifts whole digits by at most `jitter` rows', () => {
    const strings = digitStrings('train', { source: toySource(), count: 20, jitter: 2, normalize: null, gap: [1, 2], seed: 8 });
    let shifted = 0;
    for (let i = 0; i < strings.length; i++) {
      const width = strings.widths[i]!;
      const strip = strings.strip(i);
      for (let c = 0; c < width; c++) {
        // Row 14 of the strip holds source row 14 − shift, whose signature is 0.001·(14 − shift).
        const v = strip[14 * width + c]!;
        if (v === 0) continue;
        const base = strip[13 * width + c]!;
        assert.ok(Math.abs(v - base - 0.001) < 1e-6);
        const blankRows = [0, 1, 26, 27].filter((r) => strip[r * width + c] === 0).length;
        if (blankRows > 0) shifted++;
        assert.ok(blankRows <= 2);
      }
    }
    assert.ok(shifted > 0, 'some digit moved');
  });

  it('is deterministic for a seed; real MNIST test strings have 1..5 digits and MNIST-normalised frames', () => {
    const a = digitStrings('test', { count: 30, seed: 4 });
    const b = digitStrings('test', { count: 30, seed: 4 });
    const c = digitStrings('test', { count: 30, seed: 5 });
    const ba = a.batch([0, 7, 29]);
    assert.deepEqual(Array.from(ba.features.data), Array.from(b.batch([0, 7, 29]).features.data));
    assert.notDeepEqual(a.labels.map((l) => Array.from(l)), c.labels.map((l) => Array.from(l)));
    assert.equal(a.featureSize, 56);
    for (const l of a.labels) {
      assert.ok(l.length >= 1 && l.length <= 5);
      for (const d of l) assert.ok(d >= 0 && d <= 9);
    }
    let min = Infinity;
    let max = -Infinity;
    for (const v of ba.features.data) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
    assert.ok(Math.abs(min - (0 - 0.1307) / 0.3081) < 1e-6);
    assert.ok(Math.abs(max - (1 - 0.1307) / 0.3081) < 1e-6);
  });

  it('refuses bad options with DataError naming them', () => {
    const source = toySource();
    const bad = (options: object, pattern: RegExp): void => {
      assert.throws(() => digitStrings('train', { source, ...options }), (e: unknown) => e instanceof DataError && pattern.test(e.message));
    };
    bad({ maxDigits: 0 }, /maxDigits must be an integer >= 1, got 0/);
    bad({ minDigits: 3, maxDigits: 2 }, /maxDigits must be an integer >= 3, got 2/);
    bad({ frameStack: 0 }, /frameStack must be an integer >= 1, got 0/);
    bad({ gap: [-1, 2] }, /gap\[0\] must be an integer >= 0, got -1/);
    bad({ gap: [3, 2] }, /gap\[1\] must be an integer >= 3, got 2/);
    bad({ jitter: 28 }, /jitter must be below 28/);
    bad({ count: 1.5 }, /count must be an integer >= 0/);
    bad({ normalize: { mean: 0, std: 0 } }, /std must be positive/);
    const wrong = createDataset({ name: 'x', images: new Float32Array(10 * 16), labels: Int32Array.from({ length: 10 }, (_, k) => k), sampleShape: [1, 4, 4], numClasses: 10, classNames: [...'0123456789'] });
    bad({ source: wrong }, /source images must be \[1, 28, W\], got \[1, 4, 4\]/);
    assert.throws(() => digitStrings('valid' as 'train', { source }), /split must be 'train' or 'test'/);
    const ok = digitStrings('train', { source, count: 3 });
    assert.throws(() => ok.batch([3]), /index 3 is outside \[0, 2\]/);
    assert.throws(() => ok.batch([]), /at least one index/);
  });
});
