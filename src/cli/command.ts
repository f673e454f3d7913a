/**
 * A CLI command: a name, a one-line summary, typed options and `run`. Commands are values in the
 * map of `commands/index.ts`; adding one is one file plus one line there.
 */
import type { OptionSpecs, ParsedOptions } from './args.ts';

/** Where a command writes: stdout for results, stderr for progress and diagnostics. */
export interface CommandIO {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean };
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Prints one line on stdout. */
  print(line?: string): void;
}

export interface CommandSpec<O extends OptionSpecs> {
  readonly name: string;
  /** One line for `lowbit --help`. */
  readonly summary: string;
  /** Paragraph shown by `lowbit <name> --help` after the usage line; optional. */
  readonly description?: string;
  /** Examples shown at the end of `lowbit <name> --help`. */
  readonly examples?: readonly string[];
  readonly options: O;
  /** Does the work; resolves to the exit code (default 0). Throws for runtime errors. */
  run(options: ParsedOptions<O>, io: CommandIO): Promise<number | void> | number | void;
}

/** A command with its option types erased, as the command map holds it. */
export interface Command {
  readonly name: string;
  readonly summary: string;
  readonly description?: string;
  readonly examples?: readonly string[];
  readonly options: OptionSpecs;
  run(options: Record<string, unknown>, io: CommandIO): Promise<number | void> | number | void;
}

/**
 * Declares a command with typed options. The parser only produces values matching the spec,
 * which is what makes the erased `run` signature safe.
 */
export function defineCommand<const O extends OptionSpecs>(spec: CommandSpec<O>): Command {
  return {
    ...spec,
    run: (options, io) => spec.run(options as ParsedOptions<O>, io),
  };
}
