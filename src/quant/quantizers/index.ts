/**
 * Quantizer kinds (estimators) and their registration: importing this module registers every
 * kind with `registerQuantizer`, so `createQuantizer({ kind: 'lsq', bits: 4 }, context)` works.
 */
import { quantizerKinds, registerQuantizer, type QuantizerFactory } from './quantizer.ts';
import { createSteQuantizer } from './ste.ts';
import { createLsqQuantizer } from './lsq.ts';
import { createPactQuantizer } from './pact.ts';
import { createDorefaQuantizer } from './dorefa.ts';
import { createLqNetQuantizer } from './lqnet.ts';
import { createNoiseQuantizer } from './noise.ts';
import { createBinaryQuantizer } from './binary.ts';
import { createIrNetQuantizer } from './irnet.ts';
import { createSmoothBinaryQuantizer } from './smooth-binary.ts';
import { createAdaSteQuantizer } from './adaste.ts';
import { createTernaryQuantizer } from './ternary.ts';
import type { QuantizerKind } from './kinds.ts';

export * from './quantizer.ts';
export { QUANTIZER_KINDS, applicableKinds, type QuantizerKind } from './kinds.ts';
export { BaseQuantizer, type ResolvedFormat, type Role } from './common.ts';
export { SteQuantizer } from './ste.ts';
export { LsqQuantizer } from './lsq.ts';
export { PactQuantizer } from './pact.ts';
export { DorefaQuantizer } from './dorefa.ts';
export { LqNetQuantizer } from './lqnet.ts';
export { NoiseQuantizer } from './noise.ts';
export { BinaryQuantizer, type SignGradient } from './binary.ts';
export { IrNetQuantizer } from './irnet.ts';
export { SmoothBinaryQuantizer } from './smooth-binary.ts';
export { AdaSteQuantizer, adasteInnerSolution, adasteSlope } from './adaste.ts';
export { TernaryQuantizer } from './ternary.ts';

const FACTORIES: Record<QuantizerKind, QuantizerFactory> = {
  ste: createSteQuantizer,
  clippedSte: createSteQuantizer,
  lsq: createLsqQuantizer,
  lsqPlus: createLsqQuantizer,
  pact: createPactQuantizer,
  dorefa: createDorefaQuantizer,
  lqnet: createLqNetQuantizer,
  noise: createNoiseQuantizer,
  binary: createBinaryQuantizer,
  irnet: createIrNetQuantizer,
  smoothBinary: createSmoothBinaryQuantizer,
  adaste: createAdaSteQuantizer,
  ternary: createTernaryQuantizer,
};

// Registered once per process (ES modules evaluate once); skip kinds already present so a
// second copy of this module (e.g. loaded under another URL) does not throw.
const known = new Set(quantizerKinds());
for (const [kind, factory] of Object.entries(FACTORIES)) {
  if (!known.has(kind)) registerQuantizer(kind, factory);
}
