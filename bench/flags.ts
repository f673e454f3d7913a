/**
 * Command-line flags of the stand-alone bench scripts (`--name value`): one reader instead of a
 * copy per script. A flag given without a value is an error, not a silent fallback.
 */

/** The value after `--name`, or undefined when the flag is absent. */
export function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const value = process.argv[i + 1];
  if (value === undefined || value.startsWith('--')) throw new Error(`--${name} needs a value`);
  return value;
}

/** The value after `--name`, or `fallback` when the flag is absent. */
export function flagOr(name: string, fallback: string): string {
  return flag(name) ?? fallback;
}

/** `--name` as a number >= `min` (default 0), an integer when `integer`; `fallback` when absent. */
export function numberFlag(name: string, fallback: number, options: { integer?: boolean; min?: number } = {}): number {
  const { integer = false, min = 0 } = options;
  const text = flag(name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new Error(`--${name} needs ${integer ? 'an integer' : 'a number'} >= ${min}, got '${text}'`);
  }
  return value;
}
