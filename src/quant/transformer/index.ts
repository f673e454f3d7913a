/** Quantization-aware training of nn.TransformerLM: every matmul's operands fake-quantized (see qat.ts and docs/lm.md). */
export { prepareTransformerQat, transformerQatConfig, type TransformerQatConfig, type TransformerQatResult } from './qat.ts';
