/**
 * Early stopping for `fit` (Keras' EarlyStopping callback) and the metric names that it and
 * metric-driven schedulers (ReduceLROnPlateau) monitor.
 */
import type { StateDictInput } from '../nn/module.ts';

/** An epoch metric by Keras' name: validation loss / accuracy (needs a test loader) or the training ones. */
export type Monitor = 'val_loss' | 'val_accuracy' | 'loss' | 'accuracy';
export const MONITORS: readonly Monitor[] = ['val_loss', 'val_accuracy', 'loss', 'accuracy'];

/** The epoch values a monitor reads (the fields of EpochRecord it needs). */
export interface MonitoredRecord {
  readonly epoch: number;
  readonly trainLoss: number;
  readonly trainAccuracy: number;
  readonly testLoss?: number;
  readonly testAccuracy?: number;
}

/** The value `monitor` names in `record` (NaN when the record lacks it). */
export function monitorValue(record: MonitoredRecord, monitor: Monitor): number {
  const value = { val_loss: record.testLoss, val_accuracy: record.testAccuracy, loss: record.trainLoss, accuracy: record.trainAccuracy }[monitor];
  return value ?? NaN;
}

/** Throws unless `monitor` is a known name and, for val_*, a test loader is there. `who` names the option. */
export function checkMonitor(monitor: unknown, hasTestLoader: boolean, who: string): Monitor {
  if (!(MONITORS as readonly unknown[]).includes(monitor)) throw new Error(`${who}: monitor must be one of ${MONITORS.join(', ')}, got ${JSON.stringify(monitor)}`);
  const m = monitor as Monitor;
  if (m.startsWith('val_') && !hasTestLoader) {
    throw new Error(`${who}: monitor '${m}' is measured on the validation data: pass testLoader, or monitor 'loss' / 'accuracy' (training)`);
  }
  return m;
}

export interface EarlyStoppingOptions {
  /** The metric watched (default 'val_loss', which needs fit's testLoader). */
  monitor?: Monitor;
  /**
   * Epochs without improvement after which training stops (default 0: the first epoch that does
   * not improve stops it, as in Keras). The run's first epoch never stops it.
   */
  patience?: number;
  /** An improvement must beat the best value by more than this (absolute, default 0). */
  minDelta?: number;
  /** 'min': the metric should fall; 'max': rise; 'auto' (default): max for accuracies, min for losses. */
  mode?: 'auto' | 'min' | 'max';
  /**
   * When training ends (stopped or not), load the weights of the best epoch back into the model
   * (default false), as Keras 3 does. fit keeps a copy of them (parameters and buffers), and
   * checkpoints then hold them too, so that a resumed run can restore them.
   */
  restoreBestWeights?: boolean;
  /**
   * Resuming with restoreBestWeights: the best weights saved in the checkpoint
   * (`loadCheckpoint(path).bestWeights`). Not needed when the best epoch is the last one done.
   */
  bestWeights?: StateDictInput;
}

/**
 * Early-stopping state, kept in `History.earlyStopping` (so checkpoints carry it and a resumed
 * fit continues from it). `best` is null until a finite value was seen.
 */
export interface EarlyStoppingState {
  monitor: Monitor;
  mode: 'min' | 'max';
  patience: number;
  minDelta: number;
  /** Best value so far (null before the first improvement). */
  best: number | null;
  /** Epoch of the best value (0: none yet). */
  bestEpoch: number;
  /** Epochs since the last improvement. */
  wait: number;
  /** The epoch after which training stopped early, null while it has not. */
  stoppedEpoch: number | null;
  /** The epoch whose weights were loaded back at the end (restoreBestWeights), null when none were. */
  restoredEpoch: number | null;
}

/** Keras' rule, step by step: each epoch's value either improves on the best or adds to the wait. */
export class EarlyStopping {
  readonly state: EarlyStoppingState;

  constructor(options: EarlyStoppingOptions, hasTestLoader: boolean, resumed: unknown) {
    const monitor = checkMonitor(options.monitor ?? 'val_loss', hasTestLoader, 'fit: earlyStopping');
    const patience = options.patience ?? 0;
    if (!(Number.isInteger(patience) && patience >= 0)) throw new Error(`fit: earlyStopping.patience must be a non-negative integer, got ${patience}`);
    const minDelta = Math.abs(options.minDelta ?? 0);
    if (!Number.isFinite(minDelta)) throw new Error(`fit: earlyStopping.minDelta must be a finite number, got ${options.minDelta}`);
    const modeOption = options.mode ?? 'auto';
    if (!['auto', 'min', 'max'].includes(modeOption)) throw new Error(`fit: earlyStopping.mode must be 'auto', 'min' or 'max', got ${JSON.stringify(modeOption)}`);
    const mode = modeOption === 'auto' ? (monitor.endsWith('accuracy') ? 'max' : 'min') : modeOption;
    this.state = { monitor, mode, patience, minDelta, best: null, bestEpoch: 0, wait: 0, stoppedEpoch: null, restoredEpoch: null };
    if (resumed !== undefined) this.resume(resumed);
  }

  /** Whether `value` beats the best by more than minDelta (never for NaN; always for a finite first value). */
  isImprovement(value: number): boolean {
    if (!Number.isFinite(value)) return false;
    const { best, mode, minDelta } = this.state;
    if (best === null) return true;
    return mode === 'min' ? value + minDelta < best : value - minDelta > best;
  }

  /**
   * Records epoch `epoch`'s value; returns 'improved' (the caller snapshots the weights), 'wait',
   * or 'stop' (patience exhausted; never on the run's first epoch).
   */
  update(epoch: number, value: number): 'improved' | 'wait' | 'stop' {
    const s = this.state;
    s.wait += 1;
    if (this.isImprovement(value)) {
      s.best = value;
      s.bestEpoch = epoch;
      s.wait = 0;
      return 'improved';
    }
    if (s.wait >= s.patience && epoch > 1) {
      s.stoppedEpoch = epoch;
      return 'stop';
    }
    return 'wait';
  }

  /** Continues from a history's state, which must have been made with the same settings. */
  private resume(saved: unknown): void {
    const s = this.state;
    const prior = saved as Partial<EarlyStoppingState> | null;
    if (typeof prior !== 'object' || prior === null) throw new Error('fit: history.earlyStopping must be the state an earlier fit recorded');
    const differ = (['monitor', 'mode', 'patience', 'minDelta'] as const).filter((k) => prior[k] !== s[k]);
    if (differ.length > 0) {
      throw new Error(`fit: the resumed history's early stopping used other settings: ${differ.map((k) => `${k} ${JSON.stringify(prior[k])} (now ${JSON.stringify(s[k])})`).join(', ')}`);
    }
    const best = prior.best;
    if (!(best === null || (typeof best === 'number' && Number.isFinite(best)))) throw new Error(`fit: history.earlyStopping.best must be a finite number or null, got ${JSON.stringify(best)}`);
    for (const k of ['bestEpoch', 'wait'] as const) {
      const v = prior[k];
      if (!(Number.isInteger(v) && (v as number) >= 0)) throw new Error(`fit: history.earlyStopping.${k} must be a non-negative integer, got ${JSON.stringify(v)}`);
    }
    s.best = best;
    s.bestEpoch = prior.bestEpoch!;
    s.wait = prior.wait!;
    // A run continued after it stopped keeps its counters: it stops again at its next epoch without improvement.
    s.stoppedEpoch = null;
    s.restoredEpoch = null;
  }
}

/** One line saying why training stopped or what was restored, for fit's log. */
export function describeEarlyStop(s: EarlyStoppingState): string {
  const best = s.best === null ? 'no finite value' : `best ${s.best.toPrecision(5)} at epoch ${s.bestEpoch}`;
  const head = s.stoppedEpoch !== null
    ? `early stopping: ${s.monitor} did not improve for ${s.wait} epoch${s.wait === 1 ? '' : 's'} (${best}, patience ${s.patience}); stopped after epoch ${s.stoppedEpoch}`
    : `early stopping: ${s.monitor} ${best}`;
  return s.restoredEpoch !== null ? `${head}; restored the weights of epoch ${s.restoredEpoch}` : head;
}
