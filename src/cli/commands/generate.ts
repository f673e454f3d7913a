/**
 * `lowbit generate RUN --prompt TEXT`: text from a language-model run (lstm-lm, gru-lm,
 * transformer-lm; float32 or its QAT fake-quant model) through nn.generate — a KV cache for
 * transformer-lm, a recompute over the last --seq-len words for the recurrent models.
 */
import { tokenizeWords, UNK_TOKEN } from '../../data/index.ts';
import { generate } from '../../nn/index.ts';
import { UsageError } from '../args.ts';
import { BACKEND_CHOICES, useBackend } from '../backend-info.ts';
import { defineCommand } from '../command.ts';
import { resolveModelInput } from '../inputs.ts';
import { describeLmRun, readLmCheckpoint } from '../lm-run.ts';

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
    'fake-quant forward. Same --seed, same text. --no-unk never draws <unk> (id 0).',
  ].join('\n'),
  examples: [
    'lowbit generate runs/transformer-lm-moby-dick-w4a8 --prompt "call me ishmael" --tokens 30 --temperature 0.8 --top-k 40',
    'lowbit generate runs/lstm-lm-moby-dick-w4a8 --prompt "the whale" --temperature 0   # greedy',
  ],
  options: {
    run: { type: 'string', placeholder: 'RUN', positional: true, help: 'a language-model run directory or its checkpoint.safetensors' },
    prompt: { type: 'string', placeholder: 'TEXT', help: 'the text to continue (at least one word)' },
    tokens: { type: 'int', positive: true, default: 30, help: 'words to generate' },
    temperature: { type: 'number', min: 0, default: 1, help: 'softmax temperature (0: greedy)' },
    topK: { type: 'int', positive: true, placeholder: 'K', help: 'sample among the K most likely words only (default: all)' },
    seed: { type: 'int', min: 0, default: 0, help: 'seed of the sampling' },
    unk: { type: 'boolean', default: true, help: `never generate ${UNK_TOKEN} (the words outside the run's vocabulary)` },
    cache: { type: 'boolean', default: true, help: 'transformer-lm: recompute every step instead of using the KV cache' },
    backend: { type: 'enum', choices: BACKEND_CHOICES, help: 'compute backend (default: native when the addon loads)' },
  },
  run(options, io) {
    if (options.run === undefined) throw new UsageError('give the run to generate with: lowbit generate RUN --prompt TEXT', 'generate');
    if (options.prompt === undefined) throw new UsageError('--prompt TEXT is required (the words to continue)', 'generate');
    useBackend(options.backend);
    const input = resolveModelInput(options.run, 'generate', 'generate', 'checkpoint', 'a language-model run directory or its checkpoint.safetensors');
    if (input.kind !== 'checkpoint') throw new UsageError(`'${options.run}' is a .lowbit integer image model; generate takes a language-model run (lowbit train --model lstm-lm|gru-lm|transformer-lm)`, 'generate');
    const run = readLmCheckpoint(input.file, 'generate');
    if (!run) throw new UsageError(`'${options.run}' is an image-model run; generate takes a language-model run (lowbit train --model lstm-lm|gru-lm|transformer-lm)`, 'generate');
    const { vocab } = run.corpus;
    const words = tokenizeWords(options.prompt);
    if (words.length === 0) throw new UsageError(`--prompt ${JSON.stringify(options.prompt)} has no words`, 'generate');
    const ids = words.map((w) => vocab.id(w));
    const unknown = [...new Set(words.filter((w, i) => ids[i] === 0 && w !== UNK_TOKEN))];
    const context = run.settings.seqLen;
    const cached = run.settings.model === 'transformer-lm' && options.cache;
    io.print(`${describeLmRun(run.settings)}: ${run.checkpoint}`);
    io.print(`prompt      ${words.join(' ')} (${words.length} word${words.length === 1 ? '' : 's'}${unknown.length > 0 ? `; not in the vocabulary, read as ${UNK_TOKEN}: ${unknown.join(', ')}` : ''})`);
    io.print(`sampling    ${options.temperature === 0 ? 'greedy (temperature 0)' : `temperature ${options.temperature}${options.topK === undefined ? '' : `, top-k ${options.topK}`}, seed ${options.seed}`}${options.unk ? '' : `, no ${UNK_TOKEN}`}; context ${context} words, ${cached ? 'KV cache' : 'recomputed every step'}`);
    const start = performance.now();
    const generated = generate(run.model, ids, { tokens: options.tokens, temperature: options.temperature, topK: options.topK, seed: options.seed, context, cache: options.cache, exclude: options.unk ? [] : [0] });
    const seconds = (performance.now() - start) / 1000;
    io.print('');
    io.print(`${words.join(' ')} ${generated.map((id) => vocab.words[id]!).join(' ')}`);
    io.print('');
    io.print(`generated   ${generated.length} words in ${seconds.toFixed(3)} s (${(generated.length / seconds).toFixed(1)} words/s, wall clock incl. the prompt)`);
  },
});
