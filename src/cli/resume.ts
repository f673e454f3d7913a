/**
 * `lowbit train --resume`: the state a run continues from — its last checkpoint, checked against
 * the settings of the new invocation (every setting that shapes the training trajectory must be
 * the same; only --epochs may grow). Shared by image runs (commands/train.ts) and language-model
 * runs (commands/train-lm.ts), which name their own settings.
 */
import { existsSync } from 'node:fs';
import type { OptimizerStateDict } from '../optim/index.ts';
import { loadCheckpoint, type History, type StateTensors } from '../train/index.ts';
import { UsageError } from './args.ts';

export interface ResumedRun {
  readonly model: StateTensors;
  readonly optimizer: OptimizerStateDict;
  /** Epochs already trained. */
  readonly epoch: number;
  readonly history: History;
  readonly scaler: unknown;
  readonly scheduler: unknown;
  readonly bestWeights: StateTensors | null;
  /** The epoch after which early stopping ended the run, or null. */
  readonly earlyStopped: number | null;
}

/**
 * The checkpoint at `path`, refused with a UsageError (exit 2) when it is missing, was taken with
 * another value of any of `keys` in `config` (missing values count as null; `defaults` fills in
 * settings that older checkpoints did not record), already has `epochs` epochs, or is a
 * data-parallel run's final weights (no optimizer state).
 */
export function resumeState(path: string, config: Record<string, unknown>, epochs: number, keys: readonly string[], defaults: Record<string, unknown> = {}): ResumedRun {
  if (!existsSync(path)) throw new UsageError(`--resume: no checkpoint at '${path}' (pass the --out of the run to continue)`, 'train');
  const ck = loadCheckpoint(path);
  const saved = { ...defaults, ...(ck.config ?? {}) } as Record<string, unknown>;
  if ((saved.workers ?? 1) !== 1 || (saved.compress ?? 'none') !== 'none') {
    throw new UsageError(`--resume: '${path}' is a data-parallel run (--workers ${JSON.stringify(saved.workers ?? 1)}, --compress ${JSON.stringify(saved.compress ?? 'none')}); those save final weights only and cannot be resumed (--init RUN starts QAT from them)`, 'train');
  }
  const differ = keys.filter((k) => JSON.stringify(saved[k] ?? null) !== JSON.stringify(config[k] ?? null));
  if (differ.length > 0) throw new UsageError(`--resume: '${path}' was trained with other settings: ${differ.map((k) => `${k} ${JSON.stringify(saved[k] ?? null)} (now ${JSON.stringify(config[k] ?? null)})`).join(', ')}`, 'train');
  if (ck.epoch >= epochs) throw new UsageError(`--resume: '${path}' already has ${ck.epoch} epochs; pass --epochs above ${ck.epoch} to train on`, 'train');
  if (ck.optimizer === null || typeof ck.optimizer !== 'object') throw new Error(`--resume: '${path}' holds no optimizer state`);
  const history = ck.history as History | undefined;
  if (!history || !Array.isArray(history.epochs) || !Array.isArray(history.stepLosses)) throw new Error(`--resume: '${path}' holds no training history`);
  return { model: ck.model, optimizer: ck.optimizer as OptimizerStateDict, epoch: ck.epoch, history, scaler: ck.scaler, scheduler: ck.scheduler, bestWeights: ck.bestWeights, earlyStopped: history.earlyStopping?.stoppedEpoch ?? null };
}
