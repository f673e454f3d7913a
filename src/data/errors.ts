/** Machine-readable reason attached to every {@link DataError}. */
export type DataErrorCode =
  | 'missing-package'
  | 'bad-magic'
  | 'unsupported-type'
  | 'bad-dims'
  | 'truncated'
  | 'trailing-bytes'
  | 'count-mismatch'
  | 'label-range'
  | 'pixel-range'
  | 'bad-format'
  | 'bad-cache'
  | 'invalid-argument';

/**
 * Thrown by every loader and helper in `data/` when input files or arguments are malformed.
 * `code` says what went wrong; `message` says where (file path, offset, expected vs actual).
 */
export class DataError extends Error {
  override readonly name = 'DataError';
  readonly code: DataErrorCode;

  constructor(code: DataErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}
