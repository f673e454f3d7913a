/** SmartDeal (Chen et al., TNNLS 2022): weights as a small basis times a row-sparse power-of-two coefficient matrix. */
export * from './pow2.ts';
export * from './layout.ts';
export * from './decompose.ts';
export * from './layers.ts';
export * from './prepare.ts';
export * from './inference.ts';
