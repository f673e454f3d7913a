/** Neural-network building blocks (PyTorch-like modules), initialisers and reference models. */
export { Module, type TensorModule, type StateDict, type StateDictInput, type LoadStateDictResult } from './module.ts';
export { Linear, type LinearOptions } from './linear.ts';
export { Conv2d, type Conv2dLayerOptions } from './conv.ts';
export { BatchNorm, BatchNorm1d, BatchNorm2d, type BatchNormOptions } from './batchnorm.ts';
export { ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, GELU, Identity } from './activation.ts';
export { MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, type Pool2dLayerOptions } from './pooling.ts';
export { Flatten } from './flatten.ts';
export { Dropout } from './dropout.ts';
export { Sequential } from './sequential.ts';
export { forwardChain } from './fusion.ts';
export { Embedding, type EmbeddingOptions } from './embedding.ts';
export { LayerNorm, type LayerNormOptions } from './layernorm.ts';
export { RNNBase, LSTM, GRU, type RNNOptions, type FloatDType } from './rnn.ts';
export { MultiheadAttention, AttentionOutProjection, type MultiheadAttentionOptions, type MultiheadAttentionForwardOptions } from './attention.ts';
export * as init from './init.ts';
export type { Nonlinearity, FanMode, KaimingOptions } from './init.ts';
export * from './models/index.ts';
export * as mulfree from './mulfree/index.ts';
