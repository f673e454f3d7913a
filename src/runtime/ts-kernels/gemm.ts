/**
 * Integer GEMM for the TypeScript executor, in doubles with several output channels per multiply.
 *
 * A double holds every integer below 2^53 exactly, and integer sums of exact products stay exact
 * while they stay below 2^53. If every dot product of a layer is bounded, |S| ≤ B, then L output
 * channels fit one double as lanes of b bits (2^(b−1) > B, L·b ≤ 53):
 *   Wp[r, k] = Σ_l w[r·L + l, k]·2^(b·l),   T[r, p] = Σ_k Wp[r, k]·x[k, p] = Σ_l S[r·L + l, p]·2^(b·l)
 * and each S is recovered exactly from T (lane l = T mod 2^b, centred, then T ← (T − lane)/2^b).
 * One multiply-add thus does L multiply-accumulates (W8A8 with K ≤ 1024: L = 2; W4A4: L = 3), and
 * every partial sum is itself bounded by B, so nothing is ever rounded.
 *
 * Layouts: packed weights in panels of 4 rows, [rows/4, K, 4] (rows = ceil(channels/L) padded to a
 * multiple of 4, zero rows beyond); activations `x` [K, Pp] (column p of row k at k·Pp + p, Pp a multiple of 4, columns
 * past P zero); the result S[o, p] goes to acc[accOffset + o·oStride + p·pStride] as int32
 * (ToInt32, i.e. modulo 2^32 as the reference kernels wrap: the sums here are exact, so the
 * stored value equals the wrapped int32 sum of the reference).
 * @internal
 */

/** Output channels of one layer group packed for `gemmLanes`. */
export interface LaneWeights {
  /** Output channels (rows of the original weight matrix). */
  readonly channels: number;
  readonly K: number;
  /** Channels per double. */
  readonly lanes: number;
  /** Bits per lane. */
  readonly laneBits: number;
  /** Packed rows (a multiple of 4). */
  readonly rows: number;
  /** Packed weights, panels of 4 rows: row r, column k at ⌊r/4⌋·4K + 4k + r mod 4. */
  readonly data: Float64Array;
}

/** Largest lane count tried (more lanes need tiny bounds; 4 covers sign and 2-bit layers). */
const MAX_LANES = 4;

/**
 * Lanes and lane width for dot products bounded by |S| ≤ `bound` (an integer ≥ 0): b is the least
 * width with 2^(b−1) > bound, L = min(4, floor(53 / b)); L = 0 when even one lane is unsafe
 * (bound ≥ 2^52).
 */
export function laneLayout(bound: number): { lanes: number; laneBits: number } {
  if (!(bound >= 0) || bound >= 2 ** 52) return { lanes: 0, laneBits: 53 };
  let b = 1;
  while (2 ** (b - 1) <= bound) b++;
  return { lanes: Math.max(1, Math.min(MAX_LANES, Math.floor(53 / b))), laneBits: b };
}

/**
 * Packs int8 weight rows w[offset + o·rowStride + k] (o < channels, k < K; rowStride defaults to
 * K) for dot products bounded by `bound` (see the module comment); `lanes` forces fewer lanes than
 * the bound allows (tests).
 */
export function packLaneWeights(w: Int8Array, offset: number, channels: number, K: number, bound: number, lanes?: number, rowStride = K): LaneWeights {
  const layout = laneLayout(bound);
  if (layout.lanes === 0) throw new Error(`packLaneWeights: dot products bounded by ${bound} do not stay exact in doubles`);
  const L = lanes === undefined ? layout.lanes : Math.max(1, Math.min(lanes, layout.lanes));
  const rows = Math.ceil(Math.ceil(channels / L) / 4) * 4;
  const data = new Float64Array(rows * K);
  for (let o = 0; o < channels; o++) {
    const r = Math.floor(o / L);
    const scale = 2 ** (layout.laneBits * (o % L));
    const src = offset + o * rowStride;
    const dst = (r >> 2) * 4 * K + (r & 3); // panels of 4 rows, k-major: [rows/4, K, 4]
    for (let k = 0; k < K; k++) data[dst + 4 * k]! += w[src + k]! * scale;
  }
  return { channels, K, lanes: L, laneBits: layout.laneBits, rows, data };
}

/**
 * The K-chunk length that gives more lanes than the whole K when every product is bounded by
 * `perK` (chunks of at least 64; the partial sums are then added as int32), or K itself.
 */
export function laneChunk(K: number, perK: number): number {
  const whole = laneLayout(K * perK).lanes;
  for (let L = MAX_LANES; L > whole; L--) {
    const bits = Math.floor(53 / L);
    const chunk = perK === 0 ? K : Math.floor((2 ** (bits - 1) - 1) / perK);
    if (chunk >= 64 && chunk < K) return chunk;
  }
  return K;
}

/**
 * acc[accOffset + o·oStride + p·pStride] = Σ_k w[o, k]·x[k·Pp + p] for o < channels, p < P
 * (x: [K, Pp], Pp ≥ P a multiple of 4, columns P..Pp−1 ignored in the output). Register-blocked
 * 4 packed rows × 4 columns.
 */
export function gemmLanes(wp: LaneWeights, x: Float64Array, Pp: number, P: number, acc: Int32Array, accOffset: number, oStride: number, pStride: number): void {
  const { K, rows, data: w } = wp;
  const L = wp.lanes;
  const unit = 2 ** wp.laneBits;
  const inv = 1 / unit;
  const C = wp.channels;
  const sums = new Float64Array(16);
  for (let p0 = 0; p0 < P; p0 += 4) {
    for (let r0 = 0; r0 < rows; r0 += 4) {
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
      let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      let xo = p0;
      const end = (r0 + 4) * K;
      for (let wo = r0 * K; wo < end; wo += 4, xo += Pp) {
        const x0 = x[xo]!, x1 = x[xo + 1]!, x2 = x[xo + 2]!, x3 = x[xo + 3]!;
        const a0 = w[wo]!, a1 = w[wo + 1]!, a2 = w[wo + 2]!, a3 = w[wo + 3]!;
        s00 += a0 * x0; s01 += a0 * x1; s02 += a0 * x2; s03 += a0 * x3;
        s10 += a1 * x0; s11 += a1 * x1; s12 += a1 * x2; s13 += a1 * x3;
        s20 += a2 * x0; s21 += a2 * x1; s22 += a2 * x2; s23 += a2 * x3;
        s30 += a3 * x0; s31 += a3 * x1; s32 += a3 * x2; s33 += a3 * x3;
      }
      sums[0] = s00; sums[1] = s01; sums[2] = s02; sums[3] = s03;
      sums[4] = s10; sums[5] = s11; sums[6] = s12; sums[7] = s13;
      sums[8] = s20; sums[9] = s21; sums[10] = s22; sums[11] = s23;
      sums[12] = s30; sums[13] = s31; sums[14] = s32; sums[15] = s33;
      const pn = Math.min(4, P - p0);
      for (let i = 0; i < 4; i++) {
        const o0 = (r0 + i) * L;
        if (o0 >= C) break;
        for (let j = 0; j < pn; j++) {
          let t = sums[i * 4 + j]!;
          const base = accOffset + (p0 + j) * pStride;
          for (let l = 0; l < L - 1; l++) {
            const hi = Math.floor(t * inv + 0.5); // exact: |t·2^−b| < 2^47, and the lane below is within ±½
            if (o0 + l < C) acc[base + (o0 + l) * oStride] = t - hi * unit;
            t = hi;
          }
          if (o0 + L - 1 < C) acc[base + (o0 + L - 1) * oStride] = t;
        }
      }
    }
  }
}
