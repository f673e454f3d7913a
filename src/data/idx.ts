import { DataError } from './errors.ts';

/**
 * A parsed IDX file (the format of the original MNIST distribution): big-endian magic
 * `0x0000 TT RR` (TT = element type, RR = rank), then RR big-endian uint32 dims, then the
 * elements row-major. Only unsigned bytes (type 0x08) are supported.
 */
export interface IdxArray {
  readonly dims: readonly number[];
  /** `prod(dims)` bytes; a view into the input buffer (no copy). */
  readonly data: Uint8Array;
}

const IDX_UBYTE = 0x08;

/**
 * Parses and validates an IDX buffer. Checks the two zero magic bytes, the element type
 * (0x08 = ubyte), the rank (`expectedRank` if given), and that the buffer holds exactly the
 * header plus `prod(dims)` bytes. Throws `DataError` naming `source` on any mismatch.
 */
export function parseIdx(buf: Uint8Array, options: { expectedRank?: number; source?: string } = {}): IdxArray {
  const source = options.source ?? 'IDX buffer';
  if (buf.length < 4) throw new DataError('truncated', `${source}: ${buf.length} bytes is too short for an IDX header (needs ≥ 4)`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = view.getUint32(0, false);
  const type = buf[2]!;
  const rank = buf[3]!;
  const expected = options.expectedRank;
  if (buf[0] !== 0 || buf[1] !== 0 || (expected !== undefined && (type !== IDX_UBYTE || rank !== expected))) {
    const want = expected !== undefined ? `0x${hex((IDX_UBYTE << 8) | expected)}` : '0x0000TTRR';
    throw new DataError('bad-magic', `${source}: bad IDX magic number 0x${hex(magic)}, expected ${want}`);
  }
  if (type !== IDX_UBYTE) {
    throw new DataError('unsupported-type', `${source}: IDX element type 0x${type.toString(16).padStart(2, '0')} is not supported (only 0x08 = unsigned byte)`);
  }
  if (rank === 0) throw new DataError('bad-dims', `${source}: IDX rank 0 is not supported`);
  const headerBytes = 4 + 4 * rank;
  if (buf.length < headerBytes) {
    throw new DataError('truncated', `${source}: ${buf.length} bytes is too short for a rank-${rank} IDX header (needs ${headerBytes})`);
  }
  const dims: number[] = [];
  let count = 1;
  for (let d = 0; d < rank; d++) {
    const n = view.getUint32(4 + 4 * d, false);
    dims.push(n);
    count *= n;
  }
  const expectedBytes = headerBytes + count;
  if (buf.length < expectedBytes) {
    throw new DataError('truncated', `${source}: truncated, header dims [${dims.join(', ')}] need ${expectedBytes} bytes but the file has ${buf.length}`);
  }
  if (buf.length > expectedBytes) {
    throw new DataError('trailing-bytes', `${source}: ${buf.length - expectedBytes} unexpected bytes after the data (header dims [${dims.join(', ')}] need ${expectedBytes} bytes, file has ${buf.length})`);
  }
  return { dims, data: buf.subarray(headerBytes, expectedBytes) };
}

/** Images from an IDX3 buffer (magic 0x00000803): `[count, rows, cols]` uint8 pixels. */
export function parseIdxImages(buf: Uint8Array, source?: string): { count: number; rows: number; cols: number; pixels: Uint8Array } {
  const { dims, data } = parseIdx(buf, { expectedRank: 3, ...(source !== undefined && { source }) });
  const [count, rows, cols] = dims as [number, number, number];
  if (rows === 0 || cols === 0) throw new DataError('bad-dims', `${source ?? 'IDX buffer'}: empty image size ${rows}×${cols}`);
  return { count, rows, cols, pixels: data };
}

/**
 * Labels from an IDX1 buffer (magic 0x00000801), each checked to be in `[0, numClasses)`.
 */
export function parseIdxLabels(buf: Uint8Array, numClasses: number, source?: string): Int32Array {
  const src = source ?? 'IDX buffer';
  const { data } = parseIdx(buf, { expectedRank: 1, source: src });
  const labels = new Int32Array(data.length);
  for (let i = 0; i < data.length; i++) {
    const y = data[i]!;
    if (y >= numClasses) throw new DataError('label-range', `${src}: label ${y} at index ${i} is outside [0, ${numClasses - 1}]`);
    labels[i] = y;
  }
  return labels;
}

/** Builds an IDX ubyte buffer (for tests and for writing small datasets). */
export function encodeIdx(dims: readonly number[], data: ArrayLike<number>): Uint8Array {
  const count = dims.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new DataError('invalid-argument', `encodeIdx: dims [${dims.join(', ')}] need ${count} values, got ${data.length}`);
  const out = new Uint8Array(4 + 4 * dims.length + count);
  const view = new DataView(out.buffer);
  out[2] = IDX_UBYTE;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

function hex(v: number): string {
  return (v >>> 0).toString(16).padStart(8, '0');
}
