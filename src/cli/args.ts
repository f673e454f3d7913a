/**
 * Typed command-line options: a spec per option (type, default, help, validation), a parser
 * that turns argv into a typed object or throws a `UsageError`, and help text from the same spec.
 *
 * Option keys are camelCase and spelled as kebab-case flags (`batchSize` → `--batch-size`).
 * Values follow as the next argument or after `=` (`--epochs 3`, `--epochs=3`). Booleans take no
 * value; `--no-<name>` sets one to false. The last occurrence of an option wins, except that a
 * command's bare argument and its flag (`lowbit eval A.lowbit --model B.lowbit`) must agree.
 */

interface BaseSpec {
  /** One line for `--help`. */
  readonly help: string;
  /** Placeholder shown in help (`--out DIR`); default: derived from the type. */
  readonly placeholder?: string;
}

export interface NumberSpec extends BaseSpec {
  /** `int` accepts integers only. */
  readonly type: 'number' | 'int';
  readonly default?: number;
  /** Require a value > 0. */
  readonly positive?: boolean;
  readonly min?: number;
  readonly max?: number;
}

export interface StringSpec extends BaseSpec {
  readonly type: 'string';
  readonly default?: string;
  /** Also accepted as the command's one bare argument (`lowbit info model.lowbit`). */
  readonly positional?: boolean;
}

export interface EnumSpec extends BaseSpec {
  readonly type: 'enum';
  readonly choices: readonly string[];
  readonly default?: string;
}

export interface BooleanSpec extends BaseSpec {
  readonly type: 'boolean';
  /** Default false. A default-true flag is shown as `--no-<name>` in help. */
  readonly default?: boolean;
}

export type OptionSpec = NumberSpec | StringSpec | EnumSpec | BooleanSpec;

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** The value type an option spec parses to. */
export type OptionValue<S extends OptionSpec> = S extends NumberSpec
  ? number
  : S extends BooleanSpec
    ? boolean
    : S extends { readonly type: 'enum'; readonly choices: readonly (infer C)[] }
      ? C
      : string;

type Defaulted<S extends OptionSpec> = S extends BooleanSpec ? true : S extends { readonly default: unknown } ? true : false;

/** The parsed options of a spec: options without a default may be undefined. */
export type ParsedOptions<O extends OptionSpecs> = {
  -readonly [K in keyof O]: Defaulted<O[K]> extends true ? OptionValue<O[K]> : OptionValue<O[K]> | undefined;
};

/** Bad command-line usage: reported as one line and exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  /** The command whose help the user should read (`undefined`: the top-level help). */
  readonly command: string | undefined;

  constructor(message: string, command?: string) {
    super(message);
    this.command = command;
  }
}

/** `batchSize` → `batch-size`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Edit distance, for "did you mean" hints. @internal */
export function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/** ` (did you mean 'x'?)` when one candidate is close to `word`, else ''. */
export function suggestion(word: string, candidates: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? ` (did you mean '${best}'?)` : '';
}

function parseValue(flag: string, spec: OptionSpec, raw: string, command: string | undefined): number | string | boolean {
  const fail = (why: string): never => {
    throw new UsageError(`option '--${flag}' ${why}`, command);
  };
  switch (spec.type) {
    case 'number':
    case 'int': {
      const value = raw.trim() === '' ? NaN : Number(raw);
      if (!Number.isFinite(value)) fail(`expects a number, got '${raw}'`);
      if (spec.type === 'int' && !Number.isInteger(value)) fail(`expects an integer, got '${raw}'`);
      if (spec.positive && !(value > 0)) fail(`must be > 0, got ${raw}`);
      if (spec.min !== undefined && value < spec.min) fail(`must be >= ${spec.min}, got ${raw}`);
      if (spec.max !== undefined && value > spec.max) fail(`must be <= ${spec.max}, got ${raw}`);
      return value;
    }
    case 'enum':
      if (!spec.choices.includes(raw)) fail(`must be one of ${spec.choices.join(', ')}; got '${raw}'${suggestion(raw, spec.choices)}`);
      return raw;
    case 'string':
      if (raw === '') fail('expects a non-empty value');
      return raw;
    case 'boolean':
      return fail('takes no value');
  }
}

/**
 * Parses `argv` (the arguments after the command name) against `specs`.
 * `--help` / `-h` anywhere returns `{ help: true }`. Throws `UsageError` on anything else wrong.
 */
export function parseOptions<O extends OptionSpecs>(
  specs: O,
  argv: readonly string[],
  command?: string,
): { help: true } | { help: false; options: ParsedOptions<O> } {
  if (argv.includes('--help') || argv.includes('-h')) return { help: true };
  const byFlag = new Map<string, [string, OptionSpec]>();
  for (const [key, spec] of Object.entries(specs)) byFlag.set(flagName(key), [key, spec]);
  const values: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(specs)) {
    values[key] = spec.type === 'boolean' ? (spec.default ?? false) : spec.default;
  }
  const positionalKey = Object.keys(specs).find((key) => {
    const spec = specs[key]!;
    return spec.type === 'string' && spec.positional === true;
  });
  // The bare argument and its --flag both set one option: two different values are a conflict.
  let positionalValue: unknown;
  let flagValue: unknown;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (positionalKey !== undefined && !arg.startsWith('-') && positionalValue === undefined) {
      positionalValue = parseValue(flagName(positionalKey), specs[positionalKey]!, arg, command);
      values[positionalKey] = positionalValue;
      continue;
    }
    if (!arg.startsWith('--') || arg === '--') {
      throw new UsageError(`unexpected argument '${arg}'${arg.startsWith('-') ? ' (options are spelled --name)' : ''}`, command);
    }
    const eq = arg.indexOf('=');
    const flag = arg.slice(2, eq < 0 ? undefined : eq);
    const inline = eq < 0 ? undefined : arg.slice(eq + 1);
    let entry = byFlag.get(flag);
    let negated = false;
    if (!entry && flag.startsWith('no-')) {
      const positive = byFlag.get(flag.slice(3));
      if (positive?.[1].type === 'boolean') {
        entry = positive;
        negated = true;
      }
    }
    if (!entry) {
      const known = [...byFlag.keys()].map((f) => `--${f}`);
      throw new UsageError(`unknown option '--${flag}'${suggestion(`--${flag}`, known)}`, command);
    }
    const [key, spec] = entry;
    if (spec.type === 'boolean') {
      if (inline !== undefined) throw new UsageError(`option '--${flag}' takes no value`, command);
      values[key] = !negated;
      continue;
    }
    let raw = inline;
    if (raw === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`option '--${flag}' needs a value`, command);
      raw = argv[++i]!;
    }
    values[key] = parseValue(flag, spec, raw, command);
    if (key === positionalKey) flagValue = values[key];
  }
  if (positionalValue !== undefined && flagValue !== undefined && positionalValue !== flagValue) {
    const flag = flagName(positionalKey!);
    throw new UsageError(`'${String(positionalValue)}' and --${flag} ${String(flagValue)} are two values of --${flag}; give one`, command);
  }
  return { help: false, options: values as ParsedOptions<O> };
}

function placeholderOf(spec: OptionSpec): string {
  if (spec.placeholder) return spec.placeholder;
  switch (spec.type) {
    case 'int': return 'N';
    case 'number': return 'X';
    case 'string': return 'VALUE';
    case 'enum': return spec.choices.join('|');
    case 'boolean': return '';
  }
}

/** The options section of `--help`: one aligned line per option, with its default. */
export function formatOptions(specs: OptionSpecs): string {
  const rows: [string, string][] = [];
  for (const [key, spec] of Object.entries(specs)) {
    const flag = flagName(key);
    if (spec.type === 'boolean') {
      rows.push([spec.default ? `--no-${flag}` : `--${flag}`, spec.help]);
      continue;
    }
    const shownDefault = spec.default !== undefined ? ` (default: ${spec.default})` : '';
    rows.push([`--${flag} ${placeholderOf(spec)}`, `${spec.help}${shownDefault}`]);
  }
  rows.push(['-h, --help', 'show this help']);
  // Like argparse: a flag longer than the column gets its own line and its help goes below, so one
  // long list of choices does not push every description off an 80-column terminal.
  const width = Math.min(HELP_COLUMN, Math.max(...rows.map(([left]) => left.length)));
  const indent = ' '.repeat(width + 4);
  return rows.map(([left, right]) => (left.length <= width ? `  ${left.padEnd(width)}  ${right}` : `  ${left}\n${indent}${right}`)).join('\n');
}

/** Widest flag column of --help (longer flags go on a line of their own). */
const HELP_COLUMN = 32;
