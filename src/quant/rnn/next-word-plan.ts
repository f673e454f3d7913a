/**
 * Named quantization schemes of next-word models (`nn.NextWordModel`), as `prepareRnnQat` plans:
 * the CLI's `--quant` for `lowbit train --model lstm-lm|gru-lm`.
 */
import type { QuantizerSpec } from '../quantizers/quantizer.ts';
import type { RnnQatPlan } from './recipe.ts';

/**
 * `fp32` (no quantization); `wXaY`: X-bit weights (LSQ, symmetric, one scale per output row; the
 * embedding table per word row) and Y-bit activations (LSQ, symmetric, one scale per tensor) on
 * every matmul input — the LSTM's or GRU's x_t and h_{t−1} and the head's input; `w4`: 4-bit weights,
 * float activations.
 */
export const NEXT_WORD_QUANT_CHOICES = ['fp32', 'w8a8', 'w4a8', 'w4a4', 'w4'] as const;
export type NextWordQuantChoice = (typeof NEXT_WORD_QUANT_CHOICES)[number];

/** True when `name` is one of {@link NEXT_WORD_QUANT_CHOICES}. */
export function isNextWordQuantChoice(name: string): name is NextWordQuantChoice {
  return (NEXT_WORD_QUANT_CHOICES as readonly string[]).includes(name);
}

function lsq(bits: number, granularity: 'channel' | 'tensor'): QuantizerSpec {
  return { kind: 'lsq', bits, signed: true, symmetric: true, granularity };
}

/** The `prepareRnnQat` plan of a scheme (see {@link NEXT_WORD_QUANT_CHOICES}); null for fp32. */
export function nextWordQatPlan(choice: NextWordQuantChoice): RnnQatPlan | null {
  const match = /^w(\d+)(?:a(\d+))?$/.exec(choice);
  if (choice === 'fp32') return null;
  if (!match || !isNextWordQuantChoice(choice)) throw new RangeError(`nextWordQatPlan: unknown scheme ${JSON.stringify(choice)} (known: ${NEXT_WORD_QUANT_CHOICES.join(', ')})`);
  const activation = match[2] === undefined ? null : lsq(Number(match[2]), 'tensor');
  return { default: { weight: lsq(Number(match[1]), 'channel'), activation, hidden: activation } };
}
