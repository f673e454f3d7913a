/**
 * The browser build's stand-in for files.ts (package.json "browser" field). A browser has no file
 * system: these functions throw, and models come and go as bytes (decodeLowbit / encodeLowbit,
 * decodeSafetensors / encodeSafetensors).
 */

export { FileLimitError } from './file-limit-error.ts';

function noFiles(what: string): never {
  throw new Error(`${what}: no file system in the browser (work with bytes: decodeLowbit / encodeLowbit, decodeSafetensors / encodeSafetensors)`);
}

export function makeDirs(dir: string): void {
  noFiles(`makeDirs('${dir}')`);
}

export function checkDirCreatable(dir: string): void {
  noFiles(`checkDirCreatable('${dir}')`);
}

export function makeParentDirs(path: string): void {
  noFiles(`makeParentDirs('${path}')`);
}

export function readFileLimited(path: string, _maxBytes: number): Uint8Array {
  return noFiles(`reading '${path}'`);
}

export function readTextLimited(path: string, _maxBytes?: number): string {
  return noFiles(`reading '${path}'`);
}

export function writeFileAtomic(path: string, _bytes: Uint8Array): void {
  noFiles(`writing '${path}'`);
}
