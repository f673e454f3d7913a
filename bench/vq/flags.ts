/** A flag of the VQ benches restricted to a few words. */
import { flagOr } from '../flags.ts';

/** `--name` as one of `allowed` (the first is the default); anything else is an error naming the choices. */
export function choiceFlag<T extends string>(name: string, allowed: readonly [T, ...T[]]): T {
  const value = flagOr(name, allowed[0]);
  const found = allowed.find((a) => a === value);
  if (found === undefined) throw new Error(`--${name} needs one of ${allowed.join(', ')}, got '${value}'`);
  return found;
}
