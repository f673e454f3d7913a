/** Quantization without the mixed-precision search: core math, quantizers, configs, QAT, PTQ, ALPT embeddings, SmartDeal, the integer-only LSTM, vertical-layered weights, the subgroup search, the MQBench-style backend benchmark, 4-bit RNN QAT (browser-safe). */
export * from './core/index.ts';
export * from './quantizers/quantizer.ts';
export * from './quantizers/index.ts';
export * from './config/index.ts';
export * from './qat/index.ts';
export * as constrained from './constrained/index.ts';
export * as ptq from './ptq/index.ts';
export * as observers from './observers/index.ts';
export * as embedding from './embedding/index.ts';
export * as smartdeal from './smartdeal/index.ts';
export * as irnn from './irnn/index.ts';
export * as vertical from './vertical/index.ts';
export * as subgroup from './subgroup/index.ts';
export * as mqbench from './mqbench/index.ts';
export * as rnn from './rnn/index.ts';
export * as transformer from './transformer/index.ts';
