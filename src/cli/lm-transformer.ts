/**
 * The `transformer-lm` choice of the CLI's language-model runs (`lowbit train --model
 * transformer-lm`): nn.TransformerLM built from a run's settings and prepared for QAT with
 * quant.transformer.prepareTransformerQat. `--embed` is the model width, `--hidden` the MLP width;
 * the depth, heads and MLP nonlinearity are fixed ({@link TRANSFORMER_LM}).
 */
import { TransformerLM } from '../nn/models/transformer-lm.ts';
import type { NextWordQuantChoice } from '../quant/rnn/next-word-plan.ts';
import { prepareTransformerQat, transformerQatConfig } from '../quant/transformer/qat.ts';
import { Rng } from '../tensor/index.ts';

/**
 * The shape of a CLI transformer-lm: 2 pre-LN blocks of 4 heads with a tanh-GELU MLP (the exact GELU's
 * erf has no native kernel and took most of a training step), untied head; and its default widths,
 * E = 80 and MLP 320 (≈ 476k parameters at a 2000-word vocabulary, the lstm-lm default's 485k).
 */
export const TRANSFORMER_LM = { layers: 2, heads: 4, activation: 'gelu-tanh', embed: 80, hidden: 320 } as const;

/**
 * The default `--quant-lr-scale` of transformer-lm QAT runs: 0.01, not the 0.1 of every other model.
 * With 0.1 the W8A8 run ended at test perplexity 159.53 against the float model's 121.02; with 0.01
 * at 123.60 (W4A8: 131.99 -> 129.46). One seed each, docs/lm.md "Transformer language model".
 */
export const TRANSFORMER_LM_QUANT_LR_SCALE = 0.01;

/** Prepares a float transformer-lm for QAT in place with the scheme `quant` (nothing for fp32). */
export function prepareTransformerLmQat(model: TransformerLM, quant: NextWordQuantChoice): void {
  const config = transformerQatConfig(quant);
  if (config) prepareTransformerQat(model, config);
}

/** A fresh transformer-lm of a run's settings (context = the position table), QAT-prepared for a quantized run. */
export function transformerLmModel(settings: { quant: NextWordQuantChoice; hidden: number; embed: number; vocabSize: number; seqLen: number }, seed: number): TransformerLM {
  if (settings.embed % TRANSFORMER_LM.heads !== 0) throw new RangeError(`--model transformer-lm: --embed ${settings.embed} must be a multiple of its ${TRANSFORMER_LM.heads} attention heads`);
  const model = new TransformerLM({
    vocabSize: settings.vocabSize, maxContext: settings.seqLen, embedDim: settings.embed, mlpDim: settings.hidden,
    numLayers: TRANSFORMER_LM.layers, numHeads: TRANSFORMER_LM.heads, activation: TRANSFORMER_LM.activation, rng: new Rng(seed),
  });
  prepareTransformerLmQat(model, settings.quant);
  return model;
}
