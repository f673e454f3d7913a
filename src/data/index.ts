/** Datasets (MNIST, Fashion-MNIST, Moby Dick next-word, MNIST digit strings), dataset helpers and the DataLoader. */
export { DataError, type DataErrorCode } from './errors.ts';
export {
  type Dataset,
  type NormalizeStats,
  createDataset,
  checkLabels,
  sampleSize,
  subset,
  take,
  select,
  randomSplit,
  normalize,
  classCounts,
} from './dataset.ts';
export { type IdxArray, parseIdx, parseIdxImages, parseIdxLabels, encodeIdx } from './idx.ts';
export { type Split, type LoadOptions, MNIST_CLASS_NAMES, loadMnist } from './mnist.ts';
export { type FashionMnistOptions, FASHION_MNIST_CLASS_NAMES, loadFashionMnist, fashionMnistCachePath } from './fashion-mnist.ts';
export { DATASET_NAMES, DATASET_STATS, type DatasetName, isDatasetName, loadDataset } from './registry.ts';
export { type Batch, type DataLoaderOptions, DataLoader, deriveSeed } from './loader.ts';
export {
  UNK_TOKEN,
  type Vocabulary,
  type VocabularyOptions,
  type NextWordOptions,
  type TextCorpusOptions,
  type TextCorpus,
  tokenizeWords,
  buildVocabulary,
  encodeTokens,
  nextWordDataset,
  contextIds,
  textNextWord,
  loadMobyDickText,
  loadMobyDickNextWord,
} from './text.ts';
export {
  LM_DATASET_NAMES,
  type LmDatasetName,
  type LanguageModelCorpusOptions,
  type LanguageModelCorpus,
  isLmDatasetName,
  textLanguageModel,
  splitTextLanguageModel,
  loadLanguageModelCorpus,
  contextIdBatches,
} from './lm-corpus.ts';
export { type SotuAddress, type SotuSplit, SOTU_SPLIT_YEARS, sotuSplitOf, loadSotuAddresses, loadSotuSplits } from './sotu.ts';
export {
  DIGIT_STRIP_HEIGHT,
  DigitStrings,
  type DigitStringsOptions,
  type DigitStringBatch,
  type DigitStringBatchOptions,
  digitStrings,
} from './digit-strings.ts';
