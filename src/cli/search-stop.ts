/**
 * When a `lowbit search` stops early and keeps its best plan so far: Ctrl-C (the first SIGINT;
 * a second one aborts as usual) or --max-time. Shared by the image and language-model searches.
 */
import type { CommandIO } from './command.ts';

export interface SearchStop {
  /** Ctrl-C or --max-time: stop after the current step. */
  shouldStop(): boolean;
  /** Ctrl-C was pressed (the chosen plan is then not re-scored on the held-out data). */
  readonly interrupted: boolean;
  /** Seconds since the search started. */
  seconds(): number;
  /** Removes the SIGINT listener (call when the search ends, also on errors). */
  dispose(): void;
}

export function searchStop(maxTimeSeconds: number | undefined, io: CommandIO): SearchStop {
  let interrupted = false;
  const onSigint = (): void => {
    interrupted = true;
    io.stderr.write('\nlowbit search: stopping after the current step and writing the best plan so far (Ctrl-C again aborts)\n');
  };
  process.once('SIGINT', onSigint);
  const started = performance.now();
  const seconds = (): number => (performance.now() - started) / 1000;
  return {
    shouldStop: () => interrupted || (maxTimeSeconds !== undefined && seconds() > maxTimeSeconds),
    get interrupted() {
      return interrupted;
    },
    seconds,
    dispose: () => void process.removeListener('SIGINT', onSigint),
  };
}
