// The error of a bounded file read (files.ts), in a module of its own so files.browser.ts shares it.
/** Why readFileLimited refused a file; the message does not name the file (callers add it). */
export class FileLimitError extends Error {
  override name = 'FileLimitError';
  constructor(
    readonly code: 'not-a-file' | 'too-large',
    message: string,
  ) {
    super(message);
  }
}
