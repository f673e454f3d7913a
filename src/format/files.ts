/**
 * File-system helpers for untrusted paths, shared by every reader and writer (Node.js). Bundlers
 * building for the browser replace this file with files.browser.ts (package.json "browser" field).
 */
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, fstatSync, fsyncSync, mkdirSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { FileLimitError } from './file-limit-error.ts';

export { FileLimitError };

function errorCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

/**
 * `mkdir -p` that always returns or throws. Node's `mkdirSync(dir, { recursive: true })` spins
 * forever when a parent exists but answers ENOENT for a new child (procfs, a stale mount, a
 * dangling symlink), so this walks up to the first existing ancestor itself, then creates the
 * missing directories one at a time; any failure is an Error naming `dir` and the step that failed.
 */
export function makeDirs(dir: string): void {
  for (const d of missingDirs(dir).missing.reverse()) {
    try {
      mkdirSync(d);
    } catch (e) {
      if (errorCode(e) === 'EEXIST' && kindOf(d, dir) === 'directory') continue;  // made by someone else meanwhile
      throw new Error(`cannot create directory '${dir}': ${(e as Error).message}`);
    }
  }
}

/**
 * Walks up from `dir` to its nearest existing ancestor: the directories to create (deepest first)
 * and that ancestor (null when nothing exists up to the root). Throws when a non-directory is met.
 */
function missingDirs(dir: string): { missing: string[]; existing: string | null } {
  const missing: string[] = [];
  for (let cur = resolve(dir); ; ) {
    const kind = kindOf(cur, dir);
    if (kind === 'directory') return { missing, existing: cur };
    if (kind === 'other') throw new Error(`cannot create directory '${dir}': '${cur}' exists and is not a directory`);
    missing.push(cur);
    const parent = dirname(cur);
    if (parent === cur) return { missing, existing: null };
    cur = parent;
  }
}

/**
 * Throws unless `dir` is a directory this process can write into, or could be created by
 * makeDirs: its nearest existing ancestor must be a writable directory. Creates nothing -- for
 * commands that work a while before they write, so an unusable --out fails at once and a failed
 * run leaves no empty folder. Messages as makeDirs': `cannot create directory '<dir>': ...`.
 */
export function checkDirCreatable(dir: string): void {
  const { existing } = missingDirs(dir);
  if (existing === null) return;  // nothing exists up to the root: let makeDirs report it
  try {
    accessSync(existing, constants.W_OK | constants.X_OK);
  } catch {
    throw new Error(existing === resolve(dir) ? `cannot write into '${dir}': permission denied` : `cannot create directory '${dir}': '${existing}' is not writable`);
  }
}

/** What is at `path`: ENOENT and ENOTDIR (a file further up, reported when the walk reaches it) are 'missing'. */
function kindOf(path: string, dir: string): 'directory' | 'other' | 'missing' {
  try {
    return statSync(path).isDirectory() ? 'directory' : 'other';
  } catch (e) {
    const code = errorCode(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw new Error(`cannot create directory '${dir}': ${(e as Error).message}`);
  }
}

/** makeDirs for the directory that will hold `path`. */
export function makeParentDirs(path: string): void {
  makeDirs(dirname(path));
}

function checkRegular(st: { isFile(): boolean; isDirectory(): boolean; size: number }, maxBytes: number): void {
  if (st.isDirectory()) throw new FileLimitError('not-a-file', 'a directory, not a file');
  if (!st.isFile()) throw new FileLimitError('not-a-file', 'not a regular file (a device, FIFO or socket)');
  if (st.size > maxBytes) throw new FileLimitError('too-large', `${st.size} bytes exceeds the limit of ${maxBytes}`);
}

/**
 * Reads a whole file that must be a regular file of at most `maxBytes` bytes. `readFileSync`
 * reads a character device such as /dev/zero until it ends -- never -- and opening a FIFO blocks
 * until a writer comes, so untrusted paths go through this: stat before opening, fstat after,
 * then exactly the stated size (a file that grows meanwhile is cut there). Throws FileLimitError
 * for a non-file or a file over the limit; I/O errors (ENOENT, EACCES) propagate as they are.
 */
export function readFileLimited(path: string, maxBytes: number): Uint8Array {
  checkRegular(statSync(path), maxBytes);
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    checkRegular(st, maxBytes);
    const out = new Uint8Array(st.size);
    let done = 0;
    while (done < out.length) {
      const n = readSync(fd, out, done, out.length - done, done);
      if (n === 0) return out.subarray(0, done);  // shrank meanwhile: what is there (the decoders reject a cut file)
      done += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

/** readFileLimited as UTF-8 text (JSON inputs: plan files, run metrics); errors name the file. */
export function readTextLimited(path: string, maxBytes = 64 * 2 ** 20): string {
  try {
    return new TextDecoder().decode(readFileLimited(path, maxBytes));
  } catch (e) {
    if (e instanceof FileLimitError) throw new FileLimitError(e.code, `${path}: ${e.message}`);
    throw e;
  }
}

/**
 * Writes `bytes` to `path` atomically: to `path.tmp-<pid>-<random>` first, flushed, then renamed
 * over `path`, so readers see either the old file or the complete new one.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = openSync(tmp, 'w');
  try {
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (e) {
    unlinkSync(tmp);
    throw e;
  }
}
