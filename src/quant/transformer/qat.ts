/**
 * Quantization-aware training of `nn.TransformerLM`: every matmul of the model gets fake-quantized
 * operands.
 *
 * - The weight matmuls (attention's fused Q/K/V projection and output projection, the MLP's fc1 and
 *   fc2, the head) are `nn.Linear` layers in TransformerLM, so they become `QuantLinear` through
 *   `prepareRnnQat`: LSQ weights with one step per output row (for the fused Q/K/V projection that
 *   is one step per row of W_q, W_k and W_v alike) and an LSQ input quantizer, one step per tensor.
 * - The two matmuls between activations, Q·Kᵀ and A·V, get LSQ quantizers on all four operands
 *   through `CausalSelfAttention.setOperandQuantizers` (per tensor; Q, K, V signed symmetric, the
 *   attention weights A ∈ [0, 1] unsigned).
 * - The token table is fake-quantized per row (QatEmbedding) like the LSTM LM's; the position table,
 *   LayerNorms, biases, softmax and GELU stay float.
 */
import type { Module } from '../../nn/module.ts';
import { CausalSelfAttention, type OperandQuantizers, type TransformerLM } from '../../nn/models/transformer-lm.ts';
import { createQuantizer, type Quantizer, type QuantizerSpec } from '../quantizers/quantizer.ts';
import '../quantizers/index.ts';
import { prepareRnnQat, type RnnQatPlan, type RnnQatRow } from '../rnn/recipe.ts';
import { isNextWordQuantChoice, NEXT_WORD_QUANT_CHOICES, type NextWordQuantChoice } from '../rnn/next-word-plan.ts';

/** What `prepareTransformerQat` puts where (null keeps that operand float). */
export interface TransformerQatConfig {
  /** Weights of every Linear (per output row) and the token table (per row). */
  readonly weight: QuantizerSpec | null;
  /** Inputs of every Linear (per tensor). */
  readonly activation: QuantizerSpec | null;
  /** Q, K and V before Q·Kᵀ and A·V (per tensor; default: `activation`). */
  readonly attentionOperand?: QuantizerSpec | null;
  /** The attention weights A before A·V (per tensor; default: `activation` made unsigned). */
  readonly attentionProbs?: QuantizerSpec | null;
  /**
   * Per-layer configs over `weight` / `activation` (prepareRnnQat's overrides: a name glob or
   * { type } and a partial config or null), e.g. the widths of a searched plan
   * (quant.search.prepareLmAssignment). The position table stays float whatever they say.
   */
  readonly overrides?: RnnQatPlan['overrides'];
}

function lsq(bits: number, granularity: 'channel' | 'tensor', signed = true): QuantizerSpec {
  return signed ? { kind: 'lsq', bits, signed: true, symmetric: true, granularity } : { kind: 'lsq', bits, signed: false, symmetric: false, granularity };
}

/**
 * The config of a `--quant` scheme (the LSTM LM's names, `quant.rnn.NEXT_WORD_QUANT_CHOICES`):
 * `wXaY` = X-bit LSQ weights per row, Y-bit LSQ activations per tensor at every matmul input
 * (attention's Q, K, V and A included); `w4` = 4-bit weights, float activations; null for fp32.
 */
export function transformerQatConfig(choice: NextWordQuantChoice): TransformerQatConfig | null {
  if (!isNextWordQuantChoice(choice)) throw new RangeError(`transformerQatConfig: unknown scheme ${JSON.stringify(choice)} (known: ${NEXT_WORD_QUANT_CHOICES.join(', ')})`);
  if (choice === 'fp32') return null;
  const match = /^w(\d+)(?:a(\d+))?$/.exec(choice)!;
  const weight = lsq(Number(match[1]), 'channel');
  if (match[2] === undefined) return { weight, activation: null };
  const bits = Number(match[2]);
  return { weight, activation: lsq(bits, 'tensor'), attentionOperand: lsq(bits, 'tensor'), attentionProbs: lsq(bits, 'tensor', false) };
}

/** What `prepareTransformerQat` did: the Linear/Embedding table of `prepareRnnQat` and the attention operands quantized. */
export interface TransformerQatResult {
  readonly layers: RnnQatRow[];
  /** `blocks.0.attn.quant_query`, ...: one entry per operand quantizer installed. */
  readonly attentionOperands: string[];
}

/**
 * Prepares a float TransformerLM for QAT in place (see the module comment): Linears → QuantLinear
 * and the token Embedding → QatEmbedding (both keep the same weight tensors), attention operand
 * quantizers installed. Build the optimizer afterwards: the LSQ steps are new parameters. Every
 * quantizer is built before the model changes, so a bad spec leaves it untouched. Refuses a model
 * with tied weights (its head would read the float table) and one already prepared.
 */
export function prepareTransformerQat(model: TransformerLM, config: TransformerQatConfig): TransformerQatResult {
  if (model.tieWeights) throw new Error('prepareTransformerQat: models with tieWeights are not supported (the head matmul would read the float token table); build the model with tieWeights: false');
  const probsDefault = config.activation ? { ...config.activation, signed: false, symmetric: false } : null;
  const operand = config.attentionOperand === undefined ? config.activation : config.attentionOperand;
  const probs = config.attentionProbs === undefined ? probsDefault : config.attentionProbs;
  const attentions = model.namedModules().filter((entry): entry is [string, CausalSelfAttention] => entry[1] instanceof CausalSelfAttention);
  for (const [name, attn] of attentions) {
    if (Object.keys(attn.operandQuantizers()).length > 0) throw new Error(`prepareTransformerQat: '${name}' already has operand quantizers (prepared twice?)`);
  }
  // Build every operand quantizer before changing the model, so a bad spec leaves it untouched.
  const build = (spec: QuantizerSpec | null, what: string): Quantizer | null => {
    if (spec === null) return null;
    try {
      return createQuantizer(spec, { role: 'activation' });
    } catch (error) {
      throw new RangeError(`prepareTransformerQat: cannot build the ${what} quantizer from ${JSON.stringify(spec)}: ${(error as Error).message}`);
    }
  };
  const planned = attentions.map(([name, attn]) => {
    const quantizers: OperandQuantizers = {};
    for (const key of ['query', 'key', 'value'] as const) {
      const q = build(operand, `attention ${key}`);
      if (q) quantizers[key] = q;
    }
    const p = build(probs, 'attention weights');
    if (p) quantizers.probs = p;
    return { name, attn, quantizers };
  });
  const layers = prepareRnnQat(model as Module, {
    default: { weight: config.weight, activation: config.activation },
    overrides: [...(config.overrides ?? []), { match: 'positionEmbedding', config: null }],
  });
  const attentionOperands: string[] = [];
  for (const { name, attn, quantizers } of planned) {
    attn.setOperandQuantizers(quantizers);
    for (const key of Object.keys(quantizers)) attentionOperands.push(`${name}.quant_${key}`);
  }
  return { layers, attentionOperands };
}
