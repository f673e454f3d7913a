import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { contextIdBatches, loadLanguageModelCorpus, textLanguageModel } from './lm-corpus.ts';
import { DataLoader } from './loader.ts';
import { DataError } from './errors.ts';
import { UNK_TOKEN } from './text.ts';

// 100 words: w0..w9 repeated, with 'rare' only in the last tenth (test split).
const words = Array.from({ length: 100 }, (_, i) => (i === 95 ? 'rare' : `w${i % 10}`));
const text = words.join(' ');

describe('textLanguageModel', () => {
  it('cuts the words by position into 80/10/10 and makes next-word windows of each part', () => {
    const c = textLanguageModel(text, { context: 3, minCount: 1 });
    assert.deepEqual(c.words, { train: 80, valid: 10, test: 10 });
    assert.equal(c.train.length, 80 - 3);
    assert.equal(c.valid.length, 10 - 3);
    assert.equal(c.test.length, 10 - 3);
    // Validation window 0 is words 80..82 and its label word 83 (windows never cross a cut).
    const id = (w: string): number => c.vocab.id(w);
    assert.deepEqual([...c.valid.images.slice(0, 3)], [id('w0'), id('w1'), id('w2')]);
    assert.equal(c.valid.labels[0], id('w3'));
  });

  it('builds the vocabulary from the train words only: a test-only word is <unk>', () => {
    const c = textLanguageModel(text, { context: 3, minCount: 1 });
    assert.equal(c.vocab.size, 11);
    assert.equal(c.vocab.words[0], UNK_TOKEN);
    assert.equal(c.vocab.id('rare'), 0);
    // Test window 2 is words 92..94, labelled with word 95 = 'rare' → id 0.
    assert.equal(c.test.labels[2], 0);
  });

  it('vocabSize keeps the most frequent words', () => {
    const c = textLanguageModel(`${'a '.repeat(50)}${'b '.repeat(30)}${'c '.repeat(20)}`, { context: 2, vocabSize: 2, minCount: 1 });
    assert.deepEqual(c.vocab.words, [UNK_TOKEN, 'a']);
  });

  it('throws DataError for bad options and texts too short for the context', () => {
    assert.throws(() => textLanguageModel(text, { context: 0 }), DataError);
    assert.throws(() => textLanguageModel(text, { validFraction: 0.5, testFraction: 0.5 }), /sum below 1/);
    assert.throws(() => textLanguageModel(text, { context: 10, minCount: 1 }), /too few for a 10-word context/);
    assert.throws(() => textLanguageModel(text, { limitWords: -1 }), /limitWords/);
  });
});

describe('contextIdBatches', () => {
  it('yields int32 ids [B, C] with the loader length and labels', () => {
    const c = textLanguageModel(text, { context: 4, minCount: 1 });
    const batches = contextIdBatches(new DataLoader(c.train, { batchSize: 32 }));
    assert.equal(batches.length, Math.ceil(c.train.length / 32));
    const first = [...batches][0]!;
    assert.equal(first.x.dtype, 'int32');
    assert.deepEqual(first.x.shape, [32, 4]);
    assert.deepEqual([...first.x.data.slice(0, 4)], [...c.train.images.slice(0, 4)]);
    assert.equal(first.y.data[0], c.train.labels[0]);
  });
});

describe('loadLanguageModelCorpus', () => {
  it('moby-dick: the novel in three parts with a 2000-word vocabulary by default', () => {
    const c = loadLanguageModelCorpus('moby-dick', { limitWords: 20_000 });
    assert.deepEqual(c.words, { train: 16_000, valid: 2_000, test: 2_000 });
    assert.equal(c.context, 8);
    assert.ok(c.vocab.size > 500 && c.vocab.size <= 2000, `vocabulary ${c.vocab.size}`);
    assert.throws(() => loadLanguageModelCorpus('wikitext' as 'moby-dick'), /unknown language-model corpus 'wikitext'; known: moby-dick, sotu/);
  });
});
