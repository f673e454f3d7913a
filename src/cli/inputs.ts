/**
 * Model paths and output files of the commands that take one (eval, export, info), checked before
 * any work: a wrong path ends in one line naming the argument, not in a Node error (ENOENT, EISDIR,
 * a temporary file name) or a parser error deep inside a reader.
 *
 * Exit codes follow main.ts: a path of the wrong kind by its name (an .onnx given as a model, a
 * checkpoint given where a .lowbit is expected) is a `UsageError` (exit 2); a missing or
 * unreadable path, or a file whose content is wrong, is a plain Error (exit 1).
 */
import { accessSync, constants, statSync, type Stats } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { readLowbit, type LowbitModel } from '../format/lowbit.ts';
import { intModelFromLowbit } from '../runtime/io.ts';
import type { IntModel } from '../runtime/intmodel.ts';
import { UsageError } from './args.ts';

/** What a model path holds: an integer model (.lowbit) or a training checkpoint (.safetensors). */
export type ModelFileKind = 'lowbit' | 'checkpoint';

/** A resolved model path. */
export interface ModelInput {
  readonly kind: ModelFileKind;
  /** The file to read: the path itself, or the file found in the directory. */
  readonly file: string;
  /** The run directory the user gave, when it was one. */
  readonly directory?: string;
}

/** Where a run directory keeps each kind of model. */
const FILE_IN_DIRECTORY: Readonly<Record<ModelFileKind, string>> = { checkpoint: 'checkpoint.safetensors', lowbit: 'model.lowbit' };

/** `what` of the error messages: every kind a model argument may be. */
export const MODEL_PATH_KINDS = 'a .lowbit integer model, a .safetensors checkpoint or a run directory';

function statOf(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new Error(`cannot access '${path}': ${reasonOf(e)}`);
  }
}

function isFile(path: string): boolean {
  return statOf(path)?.isFile() === true;
}

/** What a file is, by its name, for "'x.onnx' is an ONNX file". */
function kindByName(path: string): string {
  const ext = extname(path).toLowerCase();
  if (ext === '.onnx') return 'an ONNX file';
  if (ext === '.json') return 'a JSON file';
  return ext === '' ? 'a file without an extension' : `a '${ext}' file`;
}

/**
 * Resolves a model argument: a `.lowbit` file, a `.safetensors` checkpoint, or a run directory
 * (its checkpoint.safetensors or its model.lowbit, the `prefer`red one first: lowbit train writes
 * the first, lowbit quantize the second). `label` names the argument in errors (`eval: --model`),
 * `expects` what it accepts.
 * @throws Error when the path does not exist, is a device/FIFO or a directory holding neither
 *   file; UsageError when it names a file of another kind (`.onnx`, `.json`, ...).
 */
export function resolveModelInput(path: string, label: string, command: string, prefer: ModelFileKind, expects = MODEL_PATH_KINDS): ModelInput {
  const st = statOf(path);
  if (!st) throw new Error(`${label}: '${path}' does not exist`);
  if (st.isDirectory()) {
    const order: ModelFileKind[] = prefer === 'lowbit' ? ['lowbit', 'checkpoint'] : ['checkpoint', 'lowbit'];
    for (const kind of order) {
      const file = join(path, FILE_IN_DIRECTORY[kind]);
      if (isFile(file)) return { kind, file, directory: path };
    }
    // A lowbit quantize folder without an integer model (its integer export failed): its calibrated fake-quant state.
    const ptqState = join(path, 'model.safetensors');
    if (isFile(ptqState)) return { kind: 'checkpoint', file: ptqState, directory: path };
    throw new Error(`${label}: '${path}' is a directory without checkpoint.safetensors or model.lowbit (not a lowbit run directory)`);
  }
  if (!st.isFile()) throw new Error(`${path}: not a regular file (a device, FIFO or socket)`);
  const ext = extname(path).toLowerCase();
  if (ext === '.lowbit') return { kind: 'lowbit', file: path };
  if (ext === '.safetensors') return { kind: 'checkpoint', file: path };
  throw new UsageError(`${label}: '${path}' is ${kindByName(path)}; expects ${expects}`, command);
}

/**
 * Reads an IntModel from a .lowbit file, with the file's name in every error: format errors
 * (`... is not a valid .lowbit file: ...`) and graph errors of a well-formed file (see
 * `intModelOfFile`).
 */
export function loadIntModelFile(path: string): IntModel {
  return intModelOfFile(readLowbit(path), path);
}

/**
 * Builds the IntModel of a decoded .lowbit file read from `path`; graph errors of the well-formed
 * file (`weightBits 9`, a node pointing to a missing tensor, a tensor of the wrong dtype) name it.
 */
export function intModelOfFile(file: LowbitModel, path: string): IntModel {
  try {
    return intModelFromLowbit(file);
  } catch (e) {
    throw new Error(`${path} is not a valid lowbit integer model: ${(e as Error).message}`);
  }
}

/**
 * Checks that `path` can be written as a file before the work that produces it: it is not a
 * directory or a device, its directory exists, and it is not `input` (the model being read).
 * `label` names the option (`export: --out`).
 * @throws Error naming the option and the path.
 */
export function checkOutputFile(path: string, label: string, input?: string): void {
  if (input !== undefined && resolve(path) === resolve(input)) throw new Error(`${label}: '${path}' is the input model; give another file`);
  const st = statOf(path);
  if (st?.isDirectory()) throw new Error(`${label}: '${path}' is a directory; give a file name`);
  if (st && !st.isFile()) throw new Error(`${label}: '${path}' is not a regular file (a device, FIFO or socket)`);
  const dir = dirname(path);
  const parent = statOf(dir);
  if (!parent) throw new Error(`${label}: cannot write '${path}': directory '${dir}' does not exist`);
  if (!parent.isDirectory()) throw new Error(`${label}: cannot write '${path}': '${dir}' is not a directory`);
  try {
    accessSync(dir, constants.W_OK);
  } catch (e) {
    throw new Error(`${label}: cannot write '${path}': ${reasonOf(e)}`);
  }
}

/** Readable causes of the file-system errors a user can meet. */
const REASONS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a part of the path is not a directory',
  EISDIR: 'it is a directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EEXIST: 'it already exists',
  ENAMETOOLONG: 'file name too long',
  ELOOP: 'too many levels of symbolic links',
  EMFILE: 'too many open files',
  EBUSY: 'resource busy',
  EXDEV: 'cross-device link',
};

/** The cause of a Node file-system error in words (`permission denied`), else its message. */
function reasonOf(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return (err.code !== undefined ? REASONS[err.code] : undefined) ?? err.message;
}

/** Temporary names of atomic writes (format/files.ts writeFileAtomic: `<path>.tmp-<pid>-<hex>`). */
const TEMP_SUFFIX = /\.tmp-\d+-[0-9a-f]+$/;

/**
 * One line for a Node system error (`ENOENT: no such file or directory, open '...'`): what failed
 * on which path, in words, with temporary file names replaced by the file being written.
 * Undefined for errors that are not system errors.
 */
export function systemErrorMessage(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  const err = e as NodeJS.ErrnoException & { dest?: unknown };
  if (typeof err.code !== 'string' || typeof err.syscall !== 'string' || !/^E[A-Z]+$/.test(err.code)) return undefined;
  const raw = typeof err.dest === 'string' ? err.dest : err.path;
  const reason = REASONS[err.code] ?? err.message.replace(/^E[A-Z]+: /, '').replace(/, \w+ '.*'$/, '');
  if (raw === undefined) return `${err.syscall} failed: ${reason}`;
  const writing = TEMP_SUFFIX.test(raw) || ['rename', 'write', 'fsync', 'ftruncate'].includes(err.syscall);
  const path = raw.replace(TEMP_SUFFIX, '');
  const verb = writing ? 'write' : err.syscall === 'mkdir' ? 'create directory' : err.syscall === 'unlink' || err.syscall === 'rmdir' ? 'remove' : err.syscall === 'scandir' ? 'list' : err.syscall === 'open' || err.syscall === 'read' ? 'read' : 'access';
  return `cannot ${verb} '${path}': ${reason}`;
}
