/**
 * `lowbit train --model lstm-lm|gru-lm|transformer-lm`: a word-level next-word language model (nn.NextWordModel, nn.TransformerLM)
 * on a text corpus (data.loadLanguageModelCorpus), float32 or quantization-aware (LSQ,
 * quant.rnn.nextWordQatPlan), with the validation perplexity after every epoch; writes
 * <out>/checkpoint.safetensors after every epoch and <out>/metrics.json at the end, like image runs.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { contextIdBatches, DataLoader, isLmDatasetName, LM_DATASET_NAMES, select, take, type LmDatasetName } from '../../data/index.ts';
import { checkDirCreatable } from '../../format/files.ts';
import { makeDirs, readTextLimited, writeFileAtomic } from '../../format/index.ts';
import { CosineAnnealingLR, createOptimizer, StepLR, type OptimizerName } from '../../optim/index.ts';
import { qatParamGroups } from '../../quant/qat/index.ts';
import { isNextWordQuantChoice, NEXT_WORD_QUANT_CHOICES, type NextWordQuantChoice } from '../../quant/rnn/index.ts';
import { manualSeed } from '../../tensor/index.ts';
import { fit, formatPercent, preferThroughputGc, type EpochRecord, type EpochScheduler } from '../../train/index.ts';
import { EveryPositionObjective, everyPositionBatches, everyPositionCrossEntropy, isLmObjective, LM_OBJECTIVES, type LmObjective } from '../../train/lm-objective.ts';
import { TransformerLM } from '../../nn/index.ts';
import { UsageError } from '../args.ts';
import { backendDetails, describeBackend } from '../backend-info.ts';
import type { CommandIO } from '../command.ts';
import { resolveModelInput } from '../inputs.ts';
import { LM_DEFAULTS, lmCorpus, lmDefaultSizes, lmModel, prepareLmQat, readLmCheckpoint, type LmModelName, type LmRunSettings } from '../lm-run.ts';
import { TRANSFORMER_LM } from '../lm-transformer.ts';
import { prepareLmAssignment } from '../../quant/search/lm.ts';
import { formatAssignment, loadPlanFile } from '../../quant/search/plan.ts';
import { resumeState } from '../resume.ts';

/** Settings that must match for --resume (everything that shapes the training trajectory except --epochs). */
const LM_RESUME_KEYS = ['model', 'dataset', 'quant', 'planFile', 'seqLen', 'hidden', 'embed', 'vocab', 'vocabSize', 'optimizer', 'lr', 'momentum', 'weightDecay', 'schedule', 'batchSize', 'seed', 'limit', 'testLimit', 'quantLrScale', 'estimator', 'init', 'objective', 'windowStride'] as const;

/** The train options a language-model run reads (`lr` already resolved); the image-only ones must keep their defaults. */
export interface LmTrainOptions {
  readonly model: LmModelName;
  readonly dataset?: string;
  readonly epochs?: number;
  readonly batchSize?: number;
  readonly optimizer: OptimizerName;
  readonly lr: number;
  readonly momentum: number;
  readonly weightDecay: number;
  readonly schedule: 'cosine' | 'step' | 'none';
  readonly seed: number;
  readonly out?: string;
  readonly limit?: number;
  readonly testLimit?: number;
  readonly progress: boolean;
  readonly quant?: string;
  readonly estimator?: string;
  readonly quantLrScale: number;
  readonly baseline: string;
  readonly init?: string;
  readonly resume?: boolean;
  readonly plan?: string;
  readonly precision: string;
  readonly workers: number;
  readonly compress: string;
  readonly threads?: boolean;
  readonly seqLen?: number;
  readonly hidden?: number;
  readonly embed?: number;
  readonly vocab?: number;
  /** 'all' (every position predicts its next word; transformer-lm only) or 'last' (one prediction per window, the default). */
  readonly objective?: string;
  /** Train on every K-th training window only (default 1: all of them). */
  readonly windowStride?: number;
}

/**
 * The objective of a run: --objective, else 'all' for transformer-lm and 'last' for the recurrent
 * models (which have no every-position forward). transformer-lm's default 'all' comes with
 * non-overlapping windows (--window-stride = --seq-len) and 5 epochs (`lmTrainingDefaults`): on
 * Moby Dick, one seed, that measured test perplexity 119.71 (fp32) / 120.71 (W4A8) against 121.02 /
 * 129.46 for 'last' on overlapping windows for 3 epochs, with about 0.4x the compute, and far better
 * short-context perplexity (119.0 against 277.0 at a 3-word prompt; docs/lm.md "Every-position
 * training"). 'all' on overlapping windows overfits at 3 epochs (185.88).
 */
/**
 * Epochs and window stride of a run when not given: with the every-position objective, 5 epochs
 * over non-overlapping windows (stride = the context length); otherwise LM_DEFAULTS' 3 epochs over
 * every window.
 */
export function lmTrainingDefaults(objective: LmObjective, seqLen: number): { epochs: number; windowStride: number } {
  return objective === 'all' ? { epochs: 5, windowStride: seqLen } : { epochs: LM_DEFAULTS.epochs, windowStride: 1 };
}

export function lmObjectiveOf(model: LmTrainOptions['model'], given: string | undefined): LmObjective {
  const objective = given ?? (model === 'transformer-lm' ? 'all' : 'last');
  if (!isLmObjective(objective)) throw new UsageError(`--objective ${objective}: expected one of ${LM_OBJECTIVES.join(', ')}`, 'train');
  if (objective === 'all' && model !== 'transformer-lm') throw new UsageError(`--objective all needs a model that predicts at every position (--model transformer-lm); --model ${model} trains --objective last`, 'train');
  return objective;
}

/** Line of one epoch: train and validation loss, perplexity and accuracy (the train figures over every position with --objective all). */
function epochLine(r: EpochRecord, epochs: number, objective: LmObjective): string {
  const trainWhat = objective === 'all' ? 'train (all positions)' : 'train';
  const parts = [`epoch ${r.epoch}/${epochs}`, `${trainWhat} loss ${r.trainLoss.toFixed(4)}`, `train ppl ${Math.exp(r.trainLoss).toFixed(2)}`];
  if (r.testLoss !== undefined && r.testAccuracy !== undefined) {
    parts.push(`valid loss ${r.testLoss.toFixed(4)}`, `valid ppl ${Math.exp(r.testLoss).toFixed(2)}`, `valid acc ${formatPercent(r.testAccuracy)}`);
  }
  parts.push(`${r.seconds.toFixed(1)} s`, `${Math.round(r.samplesPerSecond)} ${objective === 'all' ? 'predicted words/s (all positions)' : 'words/s'}`);
  if (r.lr !== undefined) parts.push(`lr ${r.lr.toPrecision(3)}`);
  return parts.join('  ');
}

/** Refuses the options of `lowbit train` that image runs have and language-model runs do not. */
function refuseImageOptions(options: LmTrainOptions, quant: NextWordQuantChoice): void {
  const refuse = (message: string): never => {
    throw new UsageError(message, 'train');
  };
  const what = `--model ${options.model}`;
  if (options.plan !== undefined && options.init === undefined) refuse(`--plan needs --init RUN: a searched plan (lowbit search --model RUN) fine-tunes the float32 run it was searched on`);
  if (options.plan !== undefined && options.quant !== undefined) refuse(`--plan replaces --quant (the plan gives every layer its widths); leave --quant ${options.quant} out`);
  if (options.precision !== 'fp32') refuse(`--precision ${options.precision} is not supported for ${what}`);
  if (options.workers !== 1 || options.compress !== 'none' || options.threads) refuse(`--workers/--compress/--threads are not supported for ${what}`);
  if (options.baseline === 'train') refuse(`--baseline train is not supported for ${what}: train the --quant fp32 run first (the stored baseline), or start from it with --init`);
  if (options.estimator !== undefined && quant === 'fp32') refuse(`--estimator ${options.estimator} needs a quantized run; --quant fp32 trains float32`);
  if (options.estimator !== undefined && options.estimator !== 'lsq') refuse(`--estimator ${options.estimator}: language models are quantized with lsq only`);
}

/** The fp32 run a QAT language-model run starts from (--init), checked against this run's choices. */
function initRun(path: string, options: LmTrainOptions, dataset: LmDatasetName): ReturnType<typeof readLmCheckpoint> & object {
  const input = resolveModelInput(path, 'train: --init', 'train', 'checkpoint', 'a language-model run directory or its checkpoint.safetensors');
  if (input.kind !== 'checkpoint') throw new UsageError(`--init: '${path}' is a .lowbit integer model; give the float32 run directory of lowbit train --model ${options.model} --quant fp32`, 'train');
  const run = readLmCheckpoint(input.file, 'train');
  if (!run) throw new UsageError(`--init: '${path}' is an image-model run, not a language model; give a run of lowbit train --model ${options.model} --quant fp32`, 'train');
  const s = run.settings;
  if (s.quant !== 'fp32') throw new UsageError(`--init: '${path}' was trained with --quant ${s.quant}; QAT fine-tuning starts from a float32 run (--quant fp32)`, 'train');
  if (s.model !== options.model) throw new UsageError(`--init: '${path}' is a ${s.model}, not a ${options.model} (pass --model ${s.model})`, 'train');
  if (s.dataset !== dataset) throw new UsageError(`--init: '${path}' was trained on ${s.dataset}, this run would train on ${dataset} (pass --dataset ${s.dataset})`, 'train');
  const given: [string, number | undefined, number][] = [['--seq-len', options.seqLen, s.seqLen], ['--hidden', options.hidden, s.hidden], ['--embed', options.embed, s.embed], ['--vocab', options.vocab, s.vocab]];
  const differ = given.filter(([, mine, theirs]) => mine !== undefined && mine !== theirs);
  if (differ.length > 0) throw new UsageError(`--init: '${path}' has ${differ.map(([flag, , theirs]) => `${flag} ${theirs}`).join(', ')}; this run asks for ${differ.map(([flag, mine]) => `${flag} ${mine}`).join(', ')} (leave them out to use the run's)`, 'train');
  return run;
}

/** The validation perplexity of a stored float32 run with the same data and sizes (metrics.json), or null. */
function storedBaseline(dir: string, settings: LmRunSettings): { perplexity: number; source: string } | null {
  const path = join(dir, 'metrics.json');
  if (!existsSync(path)) return null;
  try {
    const metrics = JSON.parse(readTextLimited(path)) as { validPerplexity?: unknown; config?: Record<string, unknown> };
    const c = metrics.config ?? {};
    const same = (['model', 'dataset', 'seqLen', 'hidden', 'embed', 'vocab'] as const).every((k) => c[k] === settings[k]) && c['quant'] === 'fp32';
    if (!same || typeof metrics.validPerplexity !== 'number') return null;
    return { perplexity: metrics.validPerplexity, source: `stored: ${path}, ${String(c['epochs'])} epochs${c['limit'] === undefined ? '' : `, --limit ${String(c['limit'])}`}` };
  } catch {
    return null;  // an unreadable file is no baseline
  }
}

/** Trains a language model (see the module comment). */
export function trainLanguageModel(options: LmTrainOptions, io: CommandIO): void {
  const dataset = options.dataset ?? LM_DATASET_NAMES[0];
  if (!isLmDatasetName(dataset)) {
    throw new UsageError(`--model ${options.model} trains on a text corpus (--dataset ${LM_DATASET_NAMES.join('|')}), got --dataset ${dataset}; image datasets go with the image models`, 'train');
  }
  const quantGiven = options.quant ?? (options.model === 'gru-lm' && options.plan === undefined ? 'fp32' : 'w4a8');
  if (!isNextWordQuantChoice(quantGiven)) throw new UsageError(`--quant ${quantGiven} is an image-model scheme; --model ${options.model} takes --quant ${NEXT_WORD_QUANT_CHOICES.join('|')}`, 'train');
  const quant: NextWordQuantChoice = quantGiven;
  refuseImageOptions(options, quant);
  const objective = lmObjectiveOf(options.model, options.objective);
  const init = options.init === undefined ? null : initRun(options.init, options, dataset);
  // --plan: per-layer widths of a searched plan (its assignment) replace --quant; LSQ QAT from the float run.
  const planFile = options.plan === undefined ? null : loadPlanFile(options.plan);
  if (planFile && !planFile.assignment) throw new UsageError(`--plan ${options.plan}: a language-model plan needs its 'assignment' (the per-layer widths lowbit search writes); this file holds a bare QuantPlan`, 'train');
  const assignment = planFile?.assignment;
  const quantText = assignment ? `plan (${formatAssignment(assignment)})` : quant;
  if (init && quant === 'fp32') throw new UsageError('--init starts QAT from a float32 run: pass a --quant other than fp32', 'train');
  const batchSize = options.batchSize ?? LM_DEFAULTS.batchSize;
  const sizes = init
    ? { seqLen: init.settings.seqLen, hidden: init.settings.hidden, embed: init.settings.embed, vocab: init.settings.vocab }
    : { seqLen: options.seqLen ?? LM_DEFAULTS.seqLen, hidden: options.hidden ?? lmDefaultSizes(options.model).hidden, embed: options.embed ?? lmDefaultSizes(options.model).embed, vocab: options.vocab ?? LM_DEFAULTS.vocab };
  const trainingDefaults = lmTrainingDefaults(objective, sizes.seqLen);
  const epochs = options.epochs ?? trainingDefaults.epochs;
  const out = options.out ?? join('runs', `${options.model}-${dataset}-${assignment ? 'plan' : quant}`);
  checkDirCreatable(out);  // an unusable --out fails now, not after the training

  preferThroughputGc();
  const corpus = init?.corpus ?? lmCorpus({ dataset, ...sizes });
  const settings: LmRunSettings = { task: 'next-word', model: options.model, dataset, quant, ...sizes, vocabSize: corpus.vocab.size };
  const limited = options.limit === undefined ? corpus.train : take(corpus.train, options.limit);
  const stride = options.windowStride ?? trainingDefaults.windowStride;
  // Window i starts at word i: every K-th (K = --seq-len) gives non-overlapping windows.
  const trainSet = stride === 1 ? limited : select(limited, Int32Array.from({ length: Math.ceil(limited.length / stride) }, (_, i) => i * stride));
  const validSet = options.testLimit === undefined ? corpus.valid : take(corpus.valid, options.testLimit);
  manualSeed(options.seed);
  let model;
  if (init && assignment) {
    model = lmModel({ ...settings, quant: 'fp32' }, options.seed);
    model.loadStateDict(init.weights);
    try {
      prepareLmAssignment(model, assignment, { kind: 'lsq' });
    } catch (e) {
      throw new UsageError(`--plan ${options.plan}: ${(e as Error).message}`, 'train');
    }
  } else if (init) {
    model = lmModel({ ...settings, quant: 'fp32' }, options.seed);
    model.loadStateDict(init.weights);
    prepareLmQat(model, quant);
  } else {
    model = lmModel(settings, options.seed);
  }
  const groups = qatParamGroups(model, { lr: options.lr, quantLrScale: options.quantLrScale, weightDecay: options.weightDecay });
  const optimizer = createOptimizer(options.optimizer, groups, options.optimizer === 'sgd'
    ? { lr: options.lr, momentum: options.momentum, weightDecay: options.weightDecay }
    : { lr: options.lr, weightDecay: options.weightDecay });
  let scheduler: EpochScheduler | undefined;
  if (options.schedule === 'cosine') scheduler = new CosineAnnealingLR(optimizer, { tMax: epochs });
  else if (options.schedule === 'step') scheduler = new StepLR(optimizer, { stepSize: Math.max(1, Math.round(epochs / 3)), gamma: 0.1 });

  const backend = backendDetails();
  const config = {
    ...settings, epochs, batchSize, optimizer: options.optimizer, lr: options.lr, momentum: options.momentum, weightDecay: options.weightDecay,
    schedule: options.schedule, seed: options.seed, limit: options.limit, testLimit: options.testLimit, quantLrScale: options.quantLrScale,
    estimator: quant === 'fp32' ? undefined : 'lsq', init: options.init, out, backend: backend.active, objective, windowStride: stride,
    ...(planFile && assignment ? { planFile: options.plan, plan: planFile.plan, assignment } : {}),
  };
  const quantized = quant !== 'fp32';
  const checkpointPath = join(out, 'checkpoint.safetensors');
  // --resume: the run's last checkpoint, taken with the same settings (only --epochs may differ).
  const resumed = options.resume ? resumeState(checkpointPath, config, epochs, LM_RESUME_KEYS) : null;
  const rows: [string, string][] = [
    ['model', `${options.model}: embedding ${sizes.embed}, ${options.model === 'transformer-lm' ? `${TRANSFORMER_LM.layers} causal pre-LN Transformer blocks (${TRANSFORMER_LM.heads} heads, ${TRANSFORMER_LM.activation} MLP ${sizes.hidden}), learned positions` : `${options.model === 'lstm-lm' ? 'LSTM' : 'GRU'} ${sizes.hidden}`}, head to ${corpus.vocab.size} words; ${model.numParameters().toLocaleString('en-US')} parameters`],
    ['quant', assignment ? `${quantText}: lsq estimator, weights per row, activations per tensor at each planned layer's input${options.model === 'transformer-lm' ? `, attention's Q, K, V and A at ${Math.max(...Object.values(assignment).map((c) => c.a))} bits` : ''}, other layers float` : quantized ? `${quant}, lsq estimator (weights per row${quant === 'w4' ? ', activations float' : options.model === 'transformer-lm' ? ', activations per tensor at every matmul input incl. Q, K, V and the attention weights' : ', activations per tensor incl. h_{t-1}'})` : 'fp32 (none)'],
    ['data', `${dataset}, words, ${sizes.seqLen}-word context: ${trainSet.length} train${stride === 1 ? '' : ` (every ${stride}th)`} / ${validSet.length} validation windows (test split held out for lowbit eval), batch ${batchSize}`],
    ['optimizer', `${options.optimizer} lr ${options.lr}, ${options.schedule} schedule${quantized ? `, quantizer params at ${options.quantLrScale}x lr` : ''}, ${epochs} epoch${epochs === 1 ? '' : 's'}, seed ${options.seed}`],
    ['objective', objective === 'all' ? `all: every position predicts its next word (${sizes.seqLen} per window; validation: the last position, as --objective last)` : 'last: one prediction per window (the word after it)'],
    ['backend', describeBackend(backend)],
    ...(init ? [['init', `weights of ${init.checkpoint}`] as [string, string]] : []),
    ...(resumed ? [['resume', `from epoch ${resumed.epoch} of ${checkpointPath}`] as [string, string]] : []),
    ['output', out],
  ];
  io.print('lowbit train');
  for (const [k, v] of rows) io.print(`  ${k.padEnd(9)}  ${v}`);
  if (!resumed && existsSync(join(out, 'metrics.json'))) io.print(`  note       replacing the earlier run in ${out} (--out DIR keeps it)`);

  makeDirs(out);
  const start = performance.now();
  const trainLoader = new DataLoader(trainSet, { batchSize, shuffle: true, seed: options.seed });
  const trainBatches = contextIdBatches(trainLoader);
  let trained: typeof model | EveryPositionObjective = model;
  if (objective === 'all') {
    if (!(model instanceof TransformerLM)) throw new UsageError(`--objective all needs --model transformer-lm`, 'train');
    trained = new EveryPositionObjective(model);
  }
  if (resumed) {
    // The module fit trains (and checkpoints) holds the weights; the shuffle and the schedule continue at the next epoch.
    trained.loadStateDict(resumed.model);
    optimizer.loadStateDict(resumed.optimizer);
    for (let e = 0; e < resumed.epoch; e++) scheduler?.step();
    trainLoader.setEpoch(resumed.epoch);
  }
  const history = fit(trained, {
    trainLoader: objective === 'all' ? everyPositionBatches(trainBatches) : trainBatches,
    testLoader: contextIdBatches(new DataLoader(validSet, { batchSize: 256 })),
    ...(objective === 'all' ? { lossFn: everyPositionCrossEntropy } : {}),
    optimizer,
    scheduler,
    epochs,
    ...(resumed ? { initialEpoch: resumed.epoch, history: resumed.history } : {}),
    progress: options.progress,
    progressStream: io.stderr,
    checkpoint: { path: checkpointPath },
    config,
    log: () => {},
    onEpochEnd: (record) => io.print(epochLine(record, epochs, objective)),
  });
  const totalSeconds = (performance.now() - start) / 1000;
  const last = history.epochs.at(-1);
  const validPerplexity = last?.testLoss === undefined ? null : Math.exp(last.testLoss);
  const metrics = {
    config, backend, parameters: model.numParameters(), vocabSize: corpus.vocab.size,
    trainSamples: trainSet.length, validSamples: validSet.length, testSamples: corpus.test.length,
    validPerplexity, validLoss: last?.testLoss ?? null, validAccuracy: last?.testAccuracy ?? null,
    totalSeconds, history,
  };
  const metricsPath = join(out, 'metrics.json');
  writeFileAtomic(metricsPath, new TextEncoder().encode(`${JSON.stringify(metrics, null, 2)}\n`));
  io.print(`wrote ${checkpointPath} and ${metricsPath} (${totalSeconds.toFixed(1)} s)`);
  if (validPerplexity === null) return;
  io.print(`validation perplexity: ${validPerplexity.toFixed(2)} (test perplexity: lowbit eval ${out})`);
  if (!quantized || options.baseline === 'none') return;
  const baseline = storedBaseline(init ? dirname(init.checkpoint) : join('runs', `${options.model}-${dataset}-fp32`), settings);
  if (baseline) {
    io.print(`fp32 baseline: validation perplexity ${baseline.perplexity.toFixed(2)} (${baseline.source}); ${quant} / fp32 = ${(validPerplexity / baseline.perplexity).toFixed(3)}`.replace(`; ${quant} /`, `; ${assignment ? 'plan' : quant} /`));
  } else {
    io.print(`fp32 baseline: none stored for ${options.model} on ${dataset} with these sizes (run with --quant fp32 first)`);
  }
}
