/** Quantization: core math, quantizers (estimators), configs, QAT, PTQ and search. */
export * from './engine.ts';
export * as search from './search/index.ts';
export * as palquant from './palquant/index.ts';
export * as nce from './nce/index.ts';
