/**
 * `lowbit`: the command-line interface, a thin layer over the library's public API.
 *
 *   lowbit --help | --version
 *   lowbit <command> [options]      (see `lowbit <command> --help`)
 *
 * Exit codes: 0 success, 1 runtime error (one line; the stack with LOWBIT_DEBUG=1),
 * 2 bad usage (one line `lowbit: error: ...` naming the help to read).
 */
import { formatOptions, parseOptions, suggestion, UsageError } from './args.ts';
import type { Command, CommandIO } from './command.ts';
import { commands } from './commands/index.ts';
import { systemErrorMessage } from './inputs.ts';
import { packageVersion } from './package-info.ts';

function topLevelHelp(): string {
  const names = Object.keys(commands);
  const width = Math.max(...names.map((n) => n.length));
  const lines = [
    `lowbit ${packageVersion()}: train, quantize and deploy low-bit neural networks`,
    '',
    'usage: lowbit <command> [options]',
    '',
    'commands:',
    ...Object.values(commands).map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'options:',
    '  -h, --help     show this help',
    '  -v, --version  print the version',
    '',
    "Run 'lowbit <command> --help' for a command's options.",
    'Environment: LOWBIT_DEBUG=1 prints stack traces of errors.',
  ];
  return lines.join('\n');
}

function commandHelp(command: Command): string {
  const positional = Object.entries(command.options).find(([, spec]) => spec.type === 'string' && spec.positional === true);
  const operand = positional ? ` [${(positional[1].placeholder ?? positional[0]).toUpperCase()}]` : '';
  const lines = [`usage: lowbit ${command.name}${operand} [options]`, '', command.summary];
  if (command.description) lines.push('', command.description);
  lines.push('', 'options:', formatOptions(command.options));
  if (command.examples && command.examples.length > 0) lines.push('', 'examples:', ...command.examples.map((e) => `  ${e}`));
  return lines.join('\n');
}

function defaultIO(): CommandIO {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    print: (line = '') => void process.stdout.write(`${line}\n`),
  };
}

/** Runs the CLI on `argv` (without `node` and the script); resolves to the exit code. */
export async function main(argv: readonly string[], io: CommandIO = defaultIO()): Promise<number> {
  const fail = (line: string): void => void io.stderr.write(`${line}\n`);
  try {
    const [first, ...rest] = argv;
    if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
      const topic = first === 'help' ? rest[0] : undefined;
      const command = topic === undefined ? undefined : commands[topic];
      if (topic !== undefined && !command) throw new UsageError(`unknown command '${topic}'${suggestion(topic, Object.keys(commands))}`);
      io.print(command ? commandHelp(command) : topLevelHelp());
      return 0;
    }
    if (first === '--version' || first === '-v') {
      io.print(packageVersion());
      return 0;
    }
    if (first.startsWith('-')) throw new UsageError(`unknown option '${first}'`);
    const command = Object.hasOwn(commands, first) ? commands[first] : undefined;
    if (!command) throw new UsageError(`unknown command '${first}'${suggestion(first, Object.keys(commands))}`);
    const parsed = parseOptions(command.options, rest, command.name);
    if (parsed.help) {
      io.print(commandHelp(command));
      return 0;
    }
    return (await command.run(parsed.options, io)) ?? 0;
  } catch (e) {
    if (e instanceof UsageError) {
      const help = e.command === undefined ? 'lowbit --help' : `lowbit ${e.command} --help`;
      fail(`lowbit: error: ${e.message} (see '${help}')`);
      return 2;
    }
    const error = e instanceof Error ? e : new Error(String(e));
    if (process.env.LOWBIT_DEBUG === '1') fail(error.stack ?? error.message);
    else fail(`lowbit: error: ${oneLine(systemErrorMessage(error) ?? error.message)}`);
    return 1;
  }
}

/** The first line of a message (multi-line messages keep their first line; the rest needs LOWBIT_DEBUG). */
function oneLine(message: string): string {
  const lines = message.split('\n');
  return lines.length > 1 ? `${lines[0]} (…; LOWBIT_DEBUG=1 for details)` : message;
}

/** Runs `main` on the process arguments and sets the exit code (flushing output first). */
export async function runFromProcess(): Promise<void> {
  // `lowbit info FILE | head`: a reader that closes the pipe ends the command quietly, as it does
  // for other Unix tools, instead of an unhandled EPIPE error event.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(process.exitCode ?? 0);
  });
  process.exitCode = await main(process.argv.slice(2));
}
