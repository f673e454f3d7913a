/**
 * The --out directory of commands that work for a while before they write (quantize, search).
 * It is checked before the work, so an unusable path fails at once, but created only when there
 * is something to write: a command that fails on the way leaves no empty folder behind.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * Throws unless `dir` is a directory this process can write into, or could be created: its
 * nearest existing ancestor must be a writable directory. Creates nothing (makeDirs does that when
 * the outputs are written). The messages match makeDirs': `cannot create directory '<dir>': ...`.
 */
export function checkOutDir(dir: string): void {
  const target = resolve(dir);
  for (let cur = target; ; ) {
    let isDirectory: boolean;
    try {
      isDirectory = statSync(cur).isDirectory();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw new Error(`cannot create directory '${dir}': ${(e as Error).message}`);
      const parent = dirname(cur);
      if (parent === cur) return;  // nothing exists up to the root: let makeDirs report it
      cur = parent;
      continue;
    }
    if (!isDirectory) throw new Error(`cannot create directory '${dir}': '${cur}' exists and is not a directory`);
    try {
      accessSync(cur, constants.W_OK | constants.X_OK);
    } catch {
      throw new Error(cur === target ? `cannot write into '${dir}': permission denied` : `cannot create directory '${dir}': '${cur}' is not writable`);
    }
    return;
  }
}
