export * from './qparams.ts';
export * from './quantize.ts';
export * from './packing.ts';
