// Integer GEMM kernels of the integer-only runtime (src/runtime/kernels).
//
// int8: C[m, n] = sum_k (a[m, k] - aZero) * w[n, k], weights one row per output channel.
//   The weights are packed once into the VNNI layout (packInt8): blocks of 64 output channels
//   (4 panels of 16 = 4 zmm), K rounded up to a multiple of 4; for each group of 4 k a 256-byte
//   row holds the 64 channels' 4 bytes side by side, so a micro-kernel streams one contiguous
//   block; padding (channels past N, k past K) is zero. rowSums[n] = sum_k w[n, k].
//   The AVX-512 kernel multiplies u8 activations by s8 weights with vpdpbusd: uint8 activations
//   are used as they are, int8 activations get +128 (xor 0x80); the zero point (plus 128) is
//   then removed with rowSums. Every sum wraps modulo 2^32 (as int32), like the TS reference.
// int4 / int2: same core after unpacking the packed rows into the int8 panel per call.
// binary: C[m, n] = K - 2 * popcount(a_m xor w_n) over rows of ceil(K / 64) 64-bit words; the
//   padding bits are zero in both operands, so their xor is zero and they do not count.
// requantize: TFLite / gemmlowp fixed point (SaturatingRoundingDoublingHighMul then
//   RoundingDivideByPOT), see intgemm.cc.
#pragma once
#include <cstdint>

namespace lowbit {

// Bytes of the packed int8 panel for (N, K).
int64_t int8PackedBytes(int64_t N, int64_t K);
// w (N, K) int8 row-major -> packed (int8PackedBytes) and rowSums (N).
void packInt8(const int8_t* w, int64_t N, int64_t K, int8_t* packed, int32_t* rowSums);
// bits = 4 or 2: rows of ceil(K * bits / 8) bytes, first element in the low bits, signed.
void packLowBit(const uint8_t* w, int bits, int64_t N, int64_t K, int8_t* packed, int32_t* rowSums);

// c (M, N) from activations a (M, K) (signed: int8, else uint8) and a packed panel.
void gemmInt8Packed(int64_t M, int64_t N, int64_t K, const uint8_t* a, bool aSigned, int32_t aZero,
                    const int8_t* packed, const int32_t* rowSums, int32_t* c);

// Serial int8 GEMM on prepared activations (no packing, no threads; for callers that already run
// in a pool task): A is M rows of `lda` bytes, u8 (signed activations already xor 0x80), read up to
// Kp = 4 ceil(K / 4) bytes per row (bytes past K multiply zero weights; they must be readable).
// c[m * ldc + n] = sum_k A[m, k] w[n, k] + negZero * rowSums[n] (int32, wrapping), negZero = -(aZero (+128)).
void gemmInt8Serial(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* packed,
                    const int32_t* rowSums, int32_t negZero, int32_t* c, int64_t ldc);

// A sign output stage fused into a serial GEMM (the accumulators never leave registers): element
// (m, n) is +1 when lower[n] <= acc[m, n] <= upper[n], else -1, written as packed bits (bits: row m
// at out + m * ldo 64-bit words, bit n of word n / 64 set for +1; every word of the row is written,
// bits past N zero) or as int8 +-1 (out + m * ldo + n).
struct SignOutput {
  const int32_t* lower;
  const int32_t* upper;
  void* out;
  int64_t ldo;  // row stride: 64-bit words (bits) or bytes (int8)
  bool bits;
  // gemmBinarySignSerial: the thresholds in popcount terms (binarySignThresholds for this K,
  // prepared once with the plan: deriving them costs ~7 % of a 32 x 1024 x 1024 call)
  const int32_t* popLo = nullptr;
  const int32_t* popRange = nullptr;
};

// gemmInt8Serial with the sign stage fused into its micro-kernel: the AVX-512 VNNI path only
// (int8SignFusable; otherwise the call does nothing). acc as gemmInt8Serial's c (int32, wrapping).
bool int8SignFusable();
void gemmInt8SignSerial(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* packed,
                        const int32_t* rowSums, int32_t negZero, const SignOutput& sign);

// Binary weights (N rows of ceil(K / 64) words) transposed once into the popcount kernel's panels.
int64_t binaryPanelWords(int64_t N, int64_t K);
void packBinaryPanels(const uint64_t* w, int64_t N, int64_t K, uint64_t* panels);
// Serial binary GEMM: c[m * ldc + n] = K - 2 popcount(a_m ^ w_n); a (M rows of ceil(K / 64) words),
// w row-major (used without VPOPCNTDQ), panels from packBinaryPanels (used with it).
void gemmBinarySerial(int64_t M, int64_t N, int64_t K, const uint64_t* a, const uint64_t* w, const uint64_t* panels,
                      int32_t* c, int64_t ldc);
bool binaryUsesPanels();
// gemmBinarySerial with the sign stage fused into the popcount kernel (the AVX-512 VPOPCNTDQ path
// only, binaryUsesPanels, and with sign.popLo / popRange set; otherwise the call does nothing);
// panels from packBinaryPanels.
void gemmBinarySignSerial(int64_t M, int64_t N, int64_t K, const uint64_t* a, const uint64_t* panels, const SignOutput& sign);
// The sign interval of each of N columns in popcount terms for K-bit rows: lower <= K - 2 pc <= upper
// <=> (uint32) (pc - lo[n]) <= range[n] (see intgemm.cc PopSign); lo and range hold N values.
void binarySignThresholds(int64_t N, int64_t K, const int32_t* lower, const int32_t* upper, int32_t* lo, int32_t* range);

// c (M, N) = K - 2 popcount(a_m ^ w_n); a (M, words), w (N, words), words = ceil(K / 64).
void gemmBinary(int64_t M, int64_t N, int64_t K, const uint64_t* a, const uint64_t* w, int32_t* c);

// out[m, n] = clamp(rdbpot(srdhm(acc << max(-shift, 0), mult[n]), max(shift, 0)) + zOut, qmin, qmax)
void requantize(const int32_t* acc, int64_t M, int64_t N, const int32_t* mult, const int32_t* shift, int32_t zOut,
                int32_t qmin, int32_t qmax, void* out, bool outSigned);

// Throughput probes on `threads` threads for about `seconds`, each thread timed over its own CPU time
// (CLOCK_THREAD_CPUTIME_ID) so that time slices taken by other processes do not count. vnniPeakGops:
// vpdpbusd of the active int8 path (zmm on avx512-vnni, ymm on avx-vnni; 0 on the others).
double vnniPeakGops(int threads, double seconds);
double popcountPeakGbits(int threads, double seconds);

// Which integer paths are active: "avx512-vnni", "avx-vnni" (ymm, AVX2 ISA with AVX-VNNI), "avx2" or
// "scalar"; "avx512-vpopcntdq" / ...
const char* int8PathName();
const char* binaryPathName();

}  // namespace lowbit
