export { LeNet5, lenet5, type LeNet5Options } from './lenet5.ts';
export { mlp, type MlpOptions } from './mlp.ts';
export { Cnn, cnn, type CnnOptions } from './cnn.ts';
export { ResNet, BasicBlock, resnet8, type ResNetOptions, type MergeModule } from './resnet.ts';
export { MobileNet, InvertedResidual, mobilenet, mobilenetStages, type MobileNetOptions, type MobileNetStage } from './mobilenet.ts';
export { NextWordModel, NEXT_WORD_CELLS, type NextWordCell, type NextWordModelOptions } from './next-word.ts';
export {
  TransformerLM, TransformerBlock, CausalSelfAttention, causalMask, offsetCausalMask, createAttentionCache, ATTENTION_OPERANDS, TRANSFORMER_ACTIVATIONS,
  type TransformerLMOptions, type TransformerBlockOptions, type CausalSelfAttentionOptions, type AttentionOperand, type OperandQuantizers, type TransformerActivation,
  type AttentionCache, type TransformerCache,
} from './transformer-lm.ts';
export { generate, generateBatch, sampleNext, type GenerateOptions, type GenerateBatchOptions, type SampleOptions, type NextWordLanguageModel, type CachedLanguageModel } from './generate.ts';
export { createModel, isModelName, MODEL_NAMES, type ModelName, type ModelOptionsMap } from './registry.ts';
export {
  BiRealBlock, BiRealResNet, SignClip, biRealResnet8,
  type BiRealBlockOptions, type BiRealResNetOptions, type BiRealShortcut, type BiRealDownsample,
} from './bireal.ts';
