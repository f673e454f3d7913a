/** Quantization-aware training of recurrent models at low bit widths: QatLSTM and QatGRU (configurable fake-quantized matmul operands), QatEmbedding, the RNN(-T) QAT recipe, packed model size, and LM fusion (shallow, density ratio) for transducer beam search. See docs/rnnt-4bit.md. */
export {
  QatLSTM, checkLstmSpec, DEFAULT_LSTM_WEIGHT, DEFAULT_LSTM_ACTIVATION,
  type QatLSTMOptions, type QatLSTMLayerQuantizers, type PerLayerSpec, type LstmOperand,
} from './qat-lstm.ts';
export { QatGRU, type QatGRUOptions, type QatGRULayerQuantizers } from './qat-gru.ts';
export { QatEmbedding } from './qat-embedding.ts';
export {
  prepareRnnQat, resolveRnnQatPlan, modelSize,
  type RnnLayerType, type RnnQatConfig, type RnnQatPlan, type RnnQatRow, type SizeEntry, type ModelSize,
} from './recipe.ts';
export { NEXT_WORD_QUANT_CHOICES, isNextWordQuantChoice, nextWordQatPlan, type NextWordQuantChoice } from './next-word-plan.ts';
export {
  LstmLanguageModel, fusionScorer,
  type LstmLanguageModelOptions, type FusedLanguageModel, type FusionOptions, type FusionState,
} from './fusion.ts';
