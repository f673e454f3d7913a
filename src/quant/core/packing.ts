/**
 * Bit packing of low-bit integers, little end first (DESIGN.md):
 * int4 two per byte (low nibble = first element, as ONNX int4), int2 four per byte,
 * 1-bit eight per byte with bit 1 = +1, rows padded to 64 bits for popcount kernels.
 */

/** Packs signed (or unsigned) `bits`-bit integers, 8/bits per byte, first element in the lowest bits. */
export function packBits(values: ArrayLike<number>, bits: 2 | 4 | 8, signed = true): Uint8Array {
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  const lo = signed ? -(1 << (bits - 1)) : 0;
  const hi = signed ? (1 << (bits - 1)) - 1 : mask;
  const out = new Uint8Array(Math.ceil(values.length / perByte));
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isInteger(v) || v < lo || v > hi) throw new Error(`value ${v} at ${i} does not fit ${signed ? 'signed' : 'unsigned'} ${bits} bits`);
    out[(i / perByte) | 0]! |= (v & mask) << ((i % perByte) * bits);
  }
  return out;
}

/** Inverse of `packBits` for `count` elements. */
export function unpackBits(packed: Uint8Array, count: number, bits: 2 | 4 | 8, signed = true): Int32Array {
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  const signBit = 1 << (bits - 1);
  if (packed.length < Math.ceil(count / perByte)) throw new Error(`packed buffer of ${packed.length} bytes is too short for ${count} ${bits}-bit values`);
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    let v = (packed[(i / perByte) | 0]! >> ((i % perByte) * bits)) & mask;
    if (signed && v & signBit) v -= 1 << bits;
    out[i] = v;
  }
  return out;
}

/** Bytes per row of `cols` binary values padded to 64 bits. */
export function binaryRowBytes(cols: number): number {
  return Math.ceil(cols / 64) * 8;
}

/**
 * Packs a [rows, cols] matrix of ±1 (any value >= 0 counts as +1) into bits, bit 1 = +1, each
 * row padded with zero bits to a multiple of 64 bits.
 */
export function packBinaryRows(values: ArrayLike<number>, rows: number, cols: number): Uint8Array {
  if (values.length !== rows * cols) throw new Error(`expected ${rows * cols} values, got ${values.length}`);
  const rowBytes = binaryRowBytes(cols);
  const out = new Uint8Array(rows * rowBytes);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      if (values[r * cols + c]! >= 0) out[r * rowBytes + (c >> 3)]! |= 1 << (c & 7);
    }
  }
  return out;
}

/** Inverse of `packBinaryRows`: ±1 values. */
export function unpackBinaryRows(packed: Uint8Array, rows: number, cols: number): Int32Array {
  const rowBytes = binaryRowBytes(cols);
  if (packed.length < rows * rowBytes) throw new Error(`packed buffer of ${packed.length} bytes is too short for ${rows}x${cols} bits`);
  const out = new Int32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = (packed[r * rowBytes + (c >> 3)]! >> (c & 7)) & 1 ? 1 : -1;
  }
  return out;
}
