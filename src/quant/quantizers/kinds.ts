/**
 * The quantizer kinds lowbit ships and which of them apply to a role and bit width (for the
 * results table and the CLI).
 */
import type { Role } from './common.ts';

/** Every registered estimator kind. */
export const QUANTIZER_KINDS = [
  'ste', 'clippedSte', 'lsq', 'lsqPlus', 'pact', 'dorefa', 'lqnet', 'noise',
  'binary', 'irnet', 'smoothBinary', 'adaste', 'ternary',
] as const;

export type QuantizerKind = (typeof QUANTIZER_KINDS)[number];

/**
 * Kinds that can quantize `role` at `bits`:
 * - 1 bit: the binarizers ('binary', 'irnet'; 'smoothBinary' and 'adaste' for weights), 'dorefa' and 'lqnet'
 *   (two levels), and for unsigned activations also the affine kinds with range [0, 1]
 *   ('ste', 'clippedSte', 'lsq', 'lsqPlus', 'noise', 'pact');
 * - 2 bits: every multi-level kind, plus 'ternary' for weights (3 levels stored in 2 bits);
 * - 3–8 bits: 'ste', 'clippedSte', 'lsq', 'lsqPlus', 'noise', 'dorefa', 'lqnet' and 'pact'
 *   (activations only); 9–16 bits: the affine kinds without the learned-level ones.
 */
export function applicableKinds(role: Role, bits: number): QuantizerKind[] {
  if (!Number.isInteger(bits) || bits < 1 || bits > 16) return [];
  const affine: QuantizerKind[] = ['ste', 'clippedSte', 'lsq', 'lsqPlus', 'noise'];
  const activation = role === 'activation';
  if (bits === 1) {
    return activation
      ? [...affine, 'pact', 'dorefa', 'lqnet', 'binary', 'irnet']
      : ['dorefa', 'lqnet', 'binary', 'irnet', 'smoothBinary', 'adaste'];
  }
  const kinds: QuantizerKind[] = [...affine];
  if (activation) kinds.push('pact');
  if (bits <= 8) kinds.push('dorefa', 'lqnet');
  if (bits === 2 && !activation) kinds.push('ternary');
  return kinds;
}
