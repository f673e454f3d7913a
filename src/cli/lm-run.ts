/**
 * Language-model runs of the CLI (`lowbit train --model lstm-lm|gru-lm|transformer-lm`): their names,
 * defaults, the settings stored in the run config, and the rebuild of a run's corpus and model from a
 * checkpoint, shared by train, eval and export. The pieces themselves live in the library:
 * nn.NextWordModel, nn.TransformerLM (src/cli/lm-transformer.ts), data.loadLanguageModelCorpus,
 * quant.rnn.nextWordQatPlan, quant.transformer, evaluatePerplexity.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { contextIdBatches, DataLoader, isLmDatasetName, LM_DATASET_NAMES, loadLanguageModelCorpus, take, type LanguageModelCorpus, type LmDatasetName } from '../data/index.ts';
import { readTextLimited } from '../format/index.ts';
import { NextWordModel, TransformerLM, type NextWordCell } from '../nn/index.ts';
import { isNextWordQuantChoice, NEXT_WORD_QUANT_CHOICES, nextWordQatPlan, prepareRnnQat, type NextWordQuantChoice } from '../quant/rnn/index.ts';
import { Rng } from '../tensor/index.ts';
import { loadCheckpoint, type StateTensors } from '../train/checkpoint.ts';
import { prepareTransformerLmQat, TRANSFORMER_LM, transformerLmModel } from './lm-transformer.ts';
import { prepareLmAssignment } from '../quant/search/lm.ts';
import { checkAssignment, formatAssignment } from '../quant/search/plan.ts';
import type { BitAssignment } from '../quant/search/types.ts';

/** `--model` names of the language models. */
export const LM_MODEL_NAMES = ['lstm-lm', 'gru-lm', 'transformer-lm'] as const;
export type LmModelName = (typeof LM_MODEL_NAMES)[number];

export function isLmModelName(name: string): name is LmModelName {
  return (LM_MODEL_NAMES as readonly string[]).includes(name);
}

/** The recurrent cell of each recurrent model name. */
export const LM_CELL: Readonly<Record<Exclude<LmModelName, 'transformer-lm'>, NextWordCell>> = { 'lstm-lm': 'lstm', 'gru-lm': 'gru' };

/** The model of an LM run: a recurrent NextWordModel, or a TransformerLM for transformer-lm (same forward: ids [N, C] → logits [N, V]). */
export type LmModel = NextWordModel | TransformerLM;

/** --embed and --hidden defaults of a model name (transformer-lm: width and MLP width, src/cli/lm-transformer.ts). */
export function lmDefaultSizes(model: LmModelName): { hidden: number; embed: number } {
  return model === 'transformer-lm' ? { hidden: TRANSFORMER_LM.hidden, embed: TRANSFORMER_LM.embed } : { hidden: LM_DEFAULTS.hidden, embed: LM_DEFAULTS.embed };
}

/**
 * Defaults of a language-model run where they differ from image runs (one seed on this machine,
 * docs/lm.md): 3 epochs of the full Moby Dick train split at batch 128, Adam 5e-3 with cosine
 * decay; 8 words of context, a 2000-word vocabulary, embedding 64, LSTM/GRU 128.
 */
export const LM_DEFAULTS = { epochs: 3, batchSize: 128, adamLr: 5e-3, seqLen: 8, hidden: 128, embed: 64, vocab: 2000 } as const;

/** Upper bounds of the size options (a checkpoint's config is untrusted). */
export const LM_LIMITS = { seqLen: 1024, hidden: 4096, embed: 4096, vocab: 1 << 20 } as const;

/** What an LM run stores in its config beyond the training settings: enough to rebuild its data and model. */
export interface LmRunSettings {
  /** Always 'next-word': marks the run as a language model for eval and export. */
  readonly task: 'next-word';
  readonly model: LmModelName;
  readonly dataset: LmDatasetName;
  readonly quant: NextWordQuantChoice;
  /** Words of context (--seq-len). */
  readonly seqLen: number;
  readonly hidden: number;
  readonly embed: number;
  /** Requested vocabulary size (--vocab). */
  readonly vocab: number;
  /** The vocabulary size the corpus gave (ids, `<unk>` included). */
  readonly vocabSize: number;
}

/** The corpus of a run's settings (the vocabulary is rebuilt from the train split, deterministically). */
export function lmCorpus(settings: Pick<LmRunSettings, 'dataset' | 'seqLen' | 'vocab'>): LanguageModelCorpus {
  return loadLanguageModelCorpus(settings.dataset, { context: settings.seqLen, vocabSize: settings.vocab });
}

/** A fresh model of a run's settings, prepared for QAT when the run is quantized (seeded by `seed`). */
export function lmModel(settings: Pick<LmRunSettings, 'model' | 'quant' | 'hidden' | 'embed' | 'vocabSize' | 'seqLen'>, seed: number): LmModel {
  if (settings.model === 'transformer-lm') return transformerLmModel(settings, seed);
  const model = new NextWordModel({ vocabSize: settings.vocabSize, embeddingDim: settings.embed, hiddenSize: settings.hidden, cell: LM_CELL[settings.model], rng: new Rng(seed) });
  const plan = nextWordQatPlan(settings.quant);
  if (plan) prepareRnnQat(model, plan);
  return model;
}

/**
 * A fresh float model of a run's settings prepared for LSQ QAT with the per-layer widths of a
 * searched plan's assignment (`lowbit train --model ...-lm --plan`; quant.search.prepareLmAssignment).
 */
export function lmPlanModel(settings: Pick<LmRunSettings, 'model' | 'hidden' | 'embed' | 'vocabSize' | 'seqLen'>, assignment: BitAssignment, seed: number): LmModel {
  const model = lmModel({ ...settings, quant: 'fp32' }, seed);
  prepareLmAssignment(model, assignment, { kind: 'lsq' });
  return model;
}

/** Prepares a float model of an LM run for QAT with `quant` in place (for a QAT run started from a float one). */
export function prepareLmQat(model: LmModel, quant: NextWordQuantChoice): void {
  if (model instanceof TransformerLM) prepareTransformerLmQat(model, quant);
  else prepareRnnQat(model, nextWordQatPlan(quant)!);
}

/** A language-model checkpoint read back: its settings, corpus and model (eval mode, weights loaded). */
export interface LmCheckpoint {
  readonly checkpoint: string;
  readonly settings: LmRunSettings;
  readonly config: Record<string, unknown>;
  readonly corpus: LanguageModelCorpus;
  readonly model: LmModel;
  readonly weights: StateTensors;
  /** The per-layer widths of a `--plan` run (its `settings.quant` is then the CLI default, not what ran). */
  readonly assignment?: BitAssignment;
}

/** The run config of a checkpoint: its own, else the one of the metrics.json beside it ({} without either). */
function configOf(checkpoint: string, stored: unknown, command: string): Record<string, unknown> {
  if (typeof stored === 'object' && stored !== null && !Array.isArray(stored) && 'model' in stored) return stored as Record<string, unknown>;
  const metricsPath = join(dirname(checkpoint), 'metrics.json');
  if (!existsSync(metricsPath)) return {};
  try {
    const config = (JSON.parse(readTextLimited(metricsPath)) as { config?: unknown }).config;
    return typeof config === 'object' && config !== null && !Array.isArray(config) ? config as Record<string, unknown> : {};
  } catch (e) {
    throw new Error(`${command}: ${metricsPath}: not a readable JSON file (${(e as Error).message})`);
  }
}

/** True when a run config is a language-model run's (its model is lstm-lm/gru-lm or its task next-word). */
export function isLmConfig(config: Record<string, unknown>): boolean {
  return config['task'] === 'next-word' || (typeof config['model'] === 'string' && isLmModelName(config['model']));
}

/** Checks the untrusted LM settings of a run config; throws naming the file and the bad field. */
export function lmSettingsOf(config: Record<string, unknown>, where: string): LmRunSettings {
  const fail = (message: string): never => {
    throw new Error(`${where}: not a usable language-model run: ${message}`);
  };
  const model = config['model'];
  if (typeof model !== 'string' || !isLmModelName(model)) return fail(`model ${JSON.stringify(model)} (known: ${LM_MODEL_NAMES.join(', ')})`);
  const dataset = config['dataset'];
  if (typeof dataset !== 'string' || !isLmDatasetName(dataset)) return fail(`dataset ${JSON.stringify(dataset)} (known: ${LM_DATASET_NAMES.join(', ')})`);
  const quant = config['quant'];
  if (typeof quant !== 'string' || !isNextWordQuantChoice(quant)) return fail(`quant ${JSON.stringify(quant)} (known: ${NEXT_WORD_QUANT_CHOICES.join(', ')})`);
  const size = (key: 'seqLen' | 'hidden' | 'embed' | 'vocab' | 'vocabSize', max: number, min = 1): number => {
    const v = config[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) return fail(`${key} ${JSON.stringify(v)} is not an integer in [${min}, ${max}]`);
    return v;
  };
  return {
    task: 'next-word', model, dataset, quant,
    seqLen: size('seqLen', LM_LIMITS.seqLen), hidden: size('hidden', LM_LIMITS.hidden), embed: size('embed', LM_LIMITS.embed),
    vocab: size('vocab', LM_LIMITS.vocab, 2), vocabSize: size('vocabSize', LM_LIMITS.vocab, 2),
  };
}

/**
 * Reads the checkpoint file `checkpoint`: null when it is not a language-model run (an image run,
 * or with `unreadable: 'null'` a file that is no readable checkpoint: the caller's own path then
 * reports it), else its settings, corpus and model with the weights loaded. Throws (messages
 * start with `command:`) for a malformed config, a vocabulary that no longer matches the corpus,
 * or weights that do not fit.
 */
export function readLmCheckpoint(checkpoint: string, command: string, options: { unreadable?: 'throw' | 'null' } = {}): LmCheckpoint | null {
  let ck;
  try {
    ck = loadCheckpoint(checkpoint);
  } catch (e) {
    if (options.unreadable === 'null') return null;
    throw e;
  }
  const config = configOf(checkpoint, ck.config, command);
  if (!isLmConfig(config)) return null;
  const settings = lmSettingsOf(config, `${command}: '${checkpoint}'`);
  const corpus = lmCorpus(settings);
  if (corpus.vocab.size !== settings.vocabSize) {
    throw new Error(`${command}: '${checkpoint}' was trained on a ${settings.vocabSize}-word vocabulary, but ${settings.dataset} with --vocab ${settings.vocab} gives ${corpus.vocab.size} words here (another version of the corpus package?)`);
  }
  let assignment: BitAssignment | undefined;
  if (config['assignment'] !== undefined && config['assignment'] !== null) {
    try {
      assignment = checkAssignment(config['assignment'] as BitAssignment);
    } catch (e) {
      throw new Error(`${command}: '${checkpoint}': the run's plan is not usable: ${(e as Error).message}`);
    }
  }
  let model: LmModel;
  try {
    model = assignment ? lmPlanModel(settings, assignment, 0) : lmModel(settings, 0);
  } catch (e) {
    throw new Error(`${command}: '${checkpoint}': the run's plan does not fit a ${settings.model}: ${(e as Error).message}`);
  }
  try {
    model.loadStateDict(ck.model);
  } catch (e) {
    throw new Error(`${command}: '${checkpoint}' does not fit a ${settings.model} (${settings.quant}, embed ${settings.embed}, hidden ${settings.hidden}, vocabulary ${settings.vocabSize}): ${(e as Error).message}`);
  }
  model.eval();
  return { checkpoint, settings, config, corpus, model, weights: ck.model, ...(assignment ? { assignment } : {}) };
}

/** The held-out test windows of a run (the first `limit` when given), in batches of int32 ids. */
export function lmTestBatches(run: Pick<LmCheckpoint, 'corpus'>, batchSize: number, limit?: number): { windows: number; batches: ReturnType<typeof contextIdBatches> } {
  const test = limit === undefined ? run.corpus.test : take(run.corpus.test, limit);
  return { windows: test.length, batches: contextIdBatches(new DataLoader(test, { batchSize })) };
}

/** `lstm-lm w4a8 (LSQ QAT)`: what a run is, in a few words. */
export function describeLmRun(settings: LmRunSettings, assignment?: BitAssignment): string {
  return `${settings.model} ${assignment ? `plan (${formatAssignment(assignment)}; LSQ QAT, fake-quant forward)` : settings.quant === 'fp32' ? 'fp32' : `${settings.quant} (LSQ QAT, fake-quant forward)`}, embedding ${settings.embed}, hidden ${settings.hidden}, vocabulary ${settings.vocabSize}, ${settings.seqLen}-word context`;
}
