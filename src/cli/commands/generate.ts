/**
 * `lowbit generate RUN --prompt TEXT`: text from a language-model run (lstm-lm, gru-lm,
 * transformer-lm; float32 or its QAT fake-quant model) through nn.generate — a KV cache for
 * transformer-lm, a recompute over the last --seq-len words for the recurrent models — and from
 * an integer-only language-model file (`lowbit export RUN --format irnn`): transformer-lm with its
 * integer KV cache, lstm-lm / gru-lm recomputed over the window; the vocabulary the file stores.
 */
import { tokenizeWords, UNK_TOKEN } from '../../data/index.ts';
import { generate, type CachedLanguageModel, type NextWordLanguageModel } from '../../nn/index.ts';
import { UsageError } from '../args.ts';
import { BACKEND_CHOICES, useBackend } from '../backend-info.ts';
import { defineCommand } from '../command.ts';
import { resolveModelInput } from '../inputs.ts';
import { intTransformerLmOrNull, type IntTransformerLmFile } from '../lm-int-transformer.ts';
import { describeLmRun, readLmCheckpoint } from '../lm-run.ts';
import { isIrnnPath } from './eval-lm.ts';
import { loadIntNextWord, type IntNextWordModel } from '../lm-irnn.ts';
import { IntGRU } from '../../quant/irnn/index.ts';

/** What generate runs: the model, its vocabulary, its context and how to name it. */
interface GenerateSource {
  readonly model: NextWordLanguageModel | CachedLanguageModel;
  readonly words: readonly string[];
  readonly id: (word: string) => number;
  readonly context: number;
  readonly transformer: boolean;
  readonly title: string;
}

/** An integer language-model file (transformer-lm, lstm-lm or gru-lm): its vocabulary, unknown words read as <unk>. */
function irnnSource(path: string): GenerateSource {
  let file: IntTransformerLmFile | null;
  try {
    file = intTransformerLmOrNull(path);
  } catch (e) {
    throw new Error(`generate: '${path}' is not a valid integer language-model file: ${(e as Error).message}`);
  }
  if (!file) return recurrentIrnnSource(path);
  const { model, meta } = file;
  const p = model.params;
  return {
    model, words: meta.vocabulary, context: meta.context, transformer: true, id: vocabularyIds(meta.vocabulary, path),
    title: `integer-only transformer language model (${meta.quant ?? '?'} run${meta.source ? ` ${meta.source}` : ''}; ${p.blocks.length} blocks, ${p.numHeads} heads, width ${p.embedDim}, vocabulary ${p.vocabSize}): ${path}`,
  };
}

/** The words of a vocabulary as ids, unknown words read as <unk> (an error when there is none). */
function vocabularyIds(vocabulary: readonly string[], path: string): (word: string) => number {
  const index = new Map<string, number>();
  vocabulary.forEach((w, i) => {
    if (!index.has(w)) index.set(w, i);
  });
  const unk = index.get(UNK_TOKEN);
  return (w) => {
    const id = index.get(w) ?? unk;
    if (id === undefined) throw new UsageError(`the word '${w}' is not in the vocabulary of '${path}', which has no ${UNK_TOKEN}`, 'generate');
    return id;
  };
}

/** An integer lstm-lm / gru-lm file: recomputed over the file's window at every step. */
function recurrentIrnnSource(path: string): GenerateSource {
  let model: IntNextWordModel;
  try {
    model = loadIntNextWord(path);
  } catch (e) {
    throw new Error(`generate: '${path}' is not a valid integer language-model file: ${(e as Error).message}`);
  }
  const { meta } = model;
  const cell = model.rnn instanceof IntGRU ? 'GRU' : 'LSTM';
  return {
    model, words: meta.vocabulary, context: meta.context, transformer: false, id: vocabularyIds(meta.vocabulary, path),
    title: `integer-only ${cell} language model (${meta.quant ?? '?'} run${meta.source ? ` ${meta.source}` : ''}; hidden ${model.rnn.hiddenSize}, vocabulary ${model.vocabSize}): ${path}`,
  };
}

export const generateCommand = defineCommand({
  name: 'generate',
  summary: 'generate text with a language-model run (lowbit train --model lstm-lm|gru-lm|transformer-lm)',
  description: [
    'Reads a language-model run (its directory or checkpoint.safetensors), encodes --prompt with the',
    'run\'s vocabulary (the corpus tokenizer: lower case, words; a word outside the vocabulary is read',
    `as ${UNK_TOKEN} and listed) and samples --tokens words, each from softmax(logits / --temperature)`,
    'over the --top-k most likely words (temperature 0: the most likely word). The model sees the last',
    '--seq-len words of the run (its training window). transformer-lm decodes with a KV cache (the',
    'cache is rebuilt from the last --seq-len words once the text is longer; --no-cache recomputes',
    'every step); lstm-lm/gru-lm recompute over the window. QAT runs generate through their',
    'fake-quant forward. An integer transformer-lm file (FILE.irnn from lowbit export RUN --format irnn)',
    'generates with its integer-only runtime and integer KV cache, its vocabulary and context taken from',
    'the file; an integer lstm-lm/gru-lm file recomputes its window every step. Same --seed, same text.',
    '--no-unk never draws <unk> (id 0).',
  ].join('\n'),
  examples: [
    'lowbit generate runs/transformer-lm-moby-dick-w4a8 --prompt "call me ishmael" --tokens 30 --temperature 0.8 --top-k 40',
    'lowbit generate runs/lstm-lm-moby-dick-w4a8 --prompt "the whale" --temperature 0   # greedy',
    'lowbit generate tlm.irnn --prompt "call me ishmael" --tokens 30 --top-k 40   # integer-only (lowbit export RUN --format irnn --out tlm.irnn)',
  ],
  options: {
    run: { type: 'string', placeholder: 'RUN', positional: true, help: 'a language-model run directory or its checkpoint.safetensors, or an integer language-model FILE.irnn' },
    prompt: { type: 'string', placeholder: 'TEXT', help: 'the text to continue (at least one word)' },
    tokens: { type: 'int', positive: true, default: 30, help: 'words to generate' },
    temperature: { type: 'number', min: 0, default: 1, help: 'softmax temperature (0: greedy)' },
    topK: { type: 'int', positive: true, placeholder: 'K', help: 'sample among the K most likely words only (default: all)' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed of the sampling' },
    unk: { type: 'boolean', default: true, help: `never generate ${UNK_TOKEN} (the words outside the run's vocabulary)` },
    cache: { type: 'boolean', default: true, help: 'transformer-lm: recompute every step instead of using the KV cache' },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'compute backend: reference, native or wasm (default: native when the addon loads)' },
  },
  run(options, io) {
    if (options.run === undefined) throw new UsageError('give the run to generate with: lowbit generate RUN --prompt TEXT', 'generate');
    if (options.prompt === undefined) throw new UsageError('--prompt TEXT is required (the words to continue)', 'generate');
    useBackend(options.backend);
    let source: GenerateSource;
    if (isIrnnPath(options.run)) source = irnnSource(options.run);
    else {
      const input = resolveModelInput(options.run, 'generate', 'generate', 'checkpoint', 'a language-model run directory or its checkpoint.safetensors, or an integer transformer-lm FILE.irnn');
      if (input.kind !== 'checkpoint') throw new UsageError(`'${options.run}' is a .lowbit integer image model; generate takes a language-model run (lowbit train --model lstm-lm|gru-lm|transformer-lm)`, 'generate');
      const run = readLmCheckpoint(input.file, 'generate');
      if (!run) throw new UsageError(`'${options.run}' is an image-model run; generate takes a language-model run (lowbit train --model lstm-lm|gru-lm|transformer-lm)`, 'generate');
      const { vocab } = run.corpus;
      source = {
        model: run.model, words: vocab.words, id: (w) => vocab.id(w), context: run.settings.seqLen,
        transformer: run.settings.model === 'transformer-lm', title: `${describeLmRun(run.settings, run.assignment)}: ${run.checkpoint}`,
      };
    }
    const words = tokenizeWords(options.prompt);
    if (words.length === 0) throw new UsageError(`--prompt ${JSON.stringify(options.prompt)} has no words`, 'generate');
    const ids = words.map((w) => source.id(w));
    const unknown = [...new Set(words.filter((w, i) => source.words[ids[i]!] === UNK_TOKEN && w !== UNK_TOKEN))];
    const context = source.context;
    const cached = source.transformer && options.cache;
    io.print(source.title);
    io.print(`prompt      ${words.join(' ')} (${words.length} word${words.length === 1 ? '' : 's'}${unknown.length > 0 ? `; not in the vocabulary, read as ${UNK_TOKEN}: ${unknown.join(', ')}` : ''})`);
    io.print(`sampling    ${options.temperature === 0 ? 'greedy (temperature 0)' : `temperature ${options.temperature}${options.topK === undefined ? '' : `, top-k ${options.topK}`}, seed ${options.seed}`}${options.unk ? '' : `, no ${UNK_TOKEN}`}; context ${context} words, ${cached ? 'KV cache' : 'recomputed every step'}`);
    const unkIds = source.words.flatMap((w, i) => (w === UNK_TOKEN ? [i] : []));
    const start = performance.now();
    const generated = generate(source.model, ids, { tokens: options.tokens, temperature: options.temperature, topK: options.topK, seed: options.seed, context, cache: options.cache, exclude: options.unk ? [] : unkIds });
    const seconds = (performance.now() - start) / 1000;
    io.print('');
    io.print(`${words.join(' ')} ${generated.map((id) => source.words[id]!).join(' ')}`);
    io.print('');
    io.print(`generated   ${generated.length} words in ${seconds.toFixed(3)} s (${(generated.length / seconds).toFixed(1)} words/s, wall clock incl. the prompt)`);
  },
});
