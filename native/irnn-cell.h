// Shared by the integer LSTM (irnn.cc) and GRU (intgru.cc) cells: the exact scalar requantization and
// PWL evaluation, and the AVX-512 and AVX2 forms (a PWL table of at most 16 segments in one register,
// or in two with AVX2; 64-bit lane requantization; the 64-bit lane shift and clamp AVX2 lacks). Internal to those two files: everything is in an anonymous namespace, so each
// includes its own copy, as when the code was written out in both.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu.h"
#include "intgemm.h"
#include "irnn.h"
#include "threadpool.h"

#ifndef LOWBIT_INLINE
#define LOWBIT_INLINE inline __attribute__((always_inline))
#endif

namespace lowbit {
namespace {

constexpr int32_t kInt16Min = -32768, kInt16Max = 32767, kQ8 = 127;

// round(acc m 2^-s), half away from zero, 1 <= s <= 62, |acc m| <= 2^62: for a negative product,
// floor((p + 2^(s-1) - 1) / 2^s) = -floor((-p + 2^(s-1)) / 2^s).
LOWBIT_INLINE int64_t requant(int64_t acc, int64_t m, int32_t s) {
  const int64_t p = acc * m;
  return (p + (int64_t{1} << (s - 1)) + (p >> 63)) >> s;
}

LOWBIT_INLINE int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

// floor((v + 2^(s-1)) / 2^s)
LOWBIT_INLINE int64_t roundShift(int64_t v, int32_t s) { return (v + (int64_t{1} << (s - 1))) >> s; }

// PWL(z) (irnn.h), z clamped to [knots[0], knots[n]] first (int64, so callers may pass unclamped sums).
LOWBIT_INLINE int32_t pwlScalar(const IntPwlTable& t, int64_t z) {
  const int32_t v = static_cast<int32_t>(clamp64(z, t.knots[0], t.knots[t.n]));
  int32_t lo = 0;
  if (t.n <= 32) {
    // Branch-free: the number of interior knots at or below v (a search mispredicts about half its branches).
    for (int32_t j = 1; j < t.n; j++) lo += t.knots[j] <= v;
  } else {
    int32_t hi = t.n - 1;
    while (lo < hi) {
      const int32_t mid = (lo + hi + 1) >> 1;
      if (t.knots[mid] <= v) lo = mid;
      else hi = mid - 1;
    }
  }
  const int64_t y = t.values[lo] + roundShift(static_cast<int64_t>(v - t.knots[lo]) * t.slopes[lo], t.shift);
  return static_cast<int32_t>(clamp64(y, t.outMin, t.outMax));
}

// Whether a table suits the vector evaluations (AVX-512: one register, AVX2: two).
bool pwlFitsVector(const IntPwlTable& t) {
  if (t.n > 16 || t.shift > 30) return false;
  for (int32_t k = 0; k < t.n; k++) {
    const int64_t width = static_cast<int64_t>(t.knots[k + 1]) - t.knots[k];
    const int64_t product = width * (t.slopes[k] < 0 ? -static_cast<int64_t>(t.slopes[k]) : t.slopes[k]);
    if (product + (int64_t{1} << (t.shift - 1)) >= (int64_t{1} << 31)) return false;
    if (t.values[k] > (1 << 20) || t.values[k] < -(1 << 20)) return false;
  }
  return true;
}

// A table of at most 16 segments padded to 16 lanes (lanes >= n: knots INT32_MAX, never <= v; values
// and slopes 0), built once per call in plain memory: vector values never cross into code compiled
// without AVX-512.
struct PaddedPwl {
  alignas(64) int32_t knots[16];
  alignas(64) int32_t values[16];
  alignas(64) int32_t slopes[16];
  int32_t lo, hi, shift, outMin, outMax;
};

PaddedPwl paddedPwl(const IntPwlTable& t) {
  PaddedPwl out;
  for (int j = 0; j < 16; j++) {
    out.knots[j] = j < t.n ? t.knots[j] : INT32_MAX;
    out.values[j] = j < t.n ? t.values[j] : 0;
    out.slopes[j] = j < t.n ? t.slopes[j] : 0;
  }
  out.lo = t.knots[0];
  out.hi = t.knots[t.n];
  out.shift = t.shift;
  out.outMin = t.outMin;
  out.outMax = t.outMax;
  return out;
}

// ---------------------------------------------------------------- AVX-512 helpers

struct VecPwl {
  __m512i knots, values, slopes;
  __m512i lo, hi, half, outMin, outMax;
  __m128i shift;
};

LOWBIT_TARGET_AVX512 LOWBIT_INLINE VecPwl vecPwl(const PaddedPwl& t) {
  VecPwl out;
  out.knots = _mm512_load_si512(t.knots);
  out.values = _mm512_load_si512(t.values);
  out.slopes = _mm512_load_si512(t.slopes);
  out.lo = _mm512_set1_epi32(t.lo);
  out.hi = _mm512_set1_epi32(t.hi);
  out.half = _mm512_set1_epi32(1 << (t.shift - 1));
  out.outMin = _mm512_set1_epi32(t.outMin);
  out.outMax = _mm512_set1_epi32(t.outMax);
  out.shift = _mm_cvtsi32_si128(t.shift);
  return out;
}

LOWBIT_TARGET_AVX512 LOWBIT_INLINE __m512i pwlVec(const VecPwl& t, __m512i z) {
  const __m512i v = _mm512_min_epi32(_mm512_max_epi32(z, t.lo), t.hi);
  // The last k with knots[k] <= v: k = 0, then try k + 8, + 4, + 2, + 1 (lanes past n - 1 hold INT32_MAX).
  __m512i k = _mm512_setzero_si512();
  for (int step = 8; step >= 1; step >>= 1) {
    const __m512i cand = _mm512_add_epi32(k, _mm512_set1_epi32(step));
    const __mmask16 ok = _mm512_cmple_epi32_mask(_mm512_permutexvar_epi32(cand, t.knots), v);
    k = _mm512_mask_mov_epi32(k, ok, cand);
  }
  const __m512i knot = _mm512_permutexvar_epi32(k, t.knots);
  const __m512i prod = _mm512_mullo_epi32(_mm512_sub_epi32(v, knot), _mm512_permutexvar_epi32(k, t.slopes));
  const __m512i y = _mm512_add_epi32(_mm512_permutexvar_epi32(k, t.values), _mm512_sra_epi32(_mm512_add_epi32(prod, t.half), t.shift));
  return _mm512_min_epi32(_mm512_max_epi32(y, t.outMin), t.outMax);
}

// requant on the 8 lanes of 64 bits whose low halves hold acc and m (sign-extended products) and s.
LOWBIT_TARGET_AVX512 LOWBIT_INLINE __m512i requant64(__m512i acc, __m512i m, __m512i s) {
  const __m512i p = _mm512_mul_epi32(acc, m);
  const __m512i half = _mm512_sllv_epi64(_mm512_set1_epi64(1), _mm512_sub_epi64(s, _mm512_set1_epi64(1)));
  return _mm512_srav_epi64(_mm512_add_epi64(_mm512_add_epi64(p, half), _mm512_srai_epi64(p, 63)), s);
}

// Even lanes (0, 2, ...) and odd lanes of 16 int32 as 8 int64 lanes: x itself (vpmuldq reads the low
// halves) or x >> 32.
LOWBIT_TARGET_AVX512 LOWBIT_INLINE __m512i oddLanes(__m512i x) { return _mm512_srli_epi64(x, 32); }
LOWBIT_TARGET_AVX512 LOWBIT_INLINE __m512i evenShift(__m512i s) { return _mm512_and_si512(s, _mm512_set1_epi64(0xffffffff)); }
LOWBIT_TARGET_AVX512 LOWBIT_INLINE __m512i signedEven(__m512i x) { return _mm512_srai_epi64(_mm512_slli_epi64(x, 32), 32); }
LOWBIT_TARGET_AVX512 LOWBIT_INLINE __m512i signedOdd(__m512i x) { return _mm512_srai_epi64(x, 32); }
// Low halves of two int64 vectors (values that fit int32) back into 16 int32 lanes.
LOWBIT_TARGET_AVX512 LOWBIT_INLINE __m512i joinLanes(__m512i even, __m512i odd) {
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

// ---------------------------------------------------------------- AVX2 helpers (8 int32 lanes; the same table in two registers)

// 64-bit lane helpers AVX2 lacks: arithmetic variable shift, clamp.
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i sravEpi64(__m256i x, __m256i s) {
  const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
  return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(x, sign), s), sign);
}
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i clampEpi64(__m256i x, __m256i lo, __m256i hi) {
  x = _mm256_blendv_epi8(x, hi, _mm256_cmpgt_epi64(x, hi));
  return _mm256_blendv_epi8(x, lo, _mm256_cmpgt_epi64(lo, x));
}
// requant on 4 lanes of 64 bits whose low halves hold acc and m; s the full 64-bit shift.
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i requant4(__m256i acc, __m256i m, __m256i s) {
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i p = _mm256_mul_epi32(acc, m);
  const __m256i half = _mm256_sllv_epi64(one, _mm256_sub_epi64(s, one));
  const __m256i negative = _mm256_cmpgt_epi64(_mm256_setzero_si256(), p);  // -1 where p < 0
  return sravEpi64(_mm256_add_epi64(_mm256_add_epi64(p, half), negative), s);
}
// As oddLanes, evenShift and joinLanes for 8 int32 lanes as 4 int64 lanes.
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i odd4(__m256i x) { return _mm256_srli_epi64(x, 32); }
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i even4(__m256i x) { return _mm256_and_si256(x, _mm256_set1_epi64x(0xffffffff)); }
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i join4(__m256i even, __m256i odd) {
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i load8(const int32_t* a) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)); }

// A PaddedPwl in registers: entries 0..7 and 8..15 of each column.
struct Vec8Pwl {
  __m256i knotsLo, knotsHi, valuesLo, valuesHi, slopesLo, slopesHi;
  __m256i lo, hi, half, outMin, outMax;
  __m128i shift;
};

LOWBIT_TARGET_AVX2 LOWBIT_INLINE Vec8Pwl vec8Pwl(const PaddedPwl& t) {
  Vec8Pwl out;
  out.knotsLo = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.knots));
  out.knotsHi = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.knots + 8));
  out.valuesLo = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.values));
  out.valuesHi = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.values + 8));
  out.slopesLo = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.slopes));
  out.slopesHi = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.slopes + 8));
  out.lo = _mm256_set1_epi32(t.lo);
  out.hi = _mm256_set1_epi32(t.hi);
  out.half = _mm256_set1_epi32(1 << (t.shift - 1));
  out.outMin = _mm256_set1_epi32(t.outMin);
  out.outMax = _mm256_set1_epi32(t.outMax);
  out.shift = _mm_cvtsi32_si128(t.shift);
  return out;
}

// Entry idx (0..15) of a 16-entry table held in two registers.
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i lookup16(__m256i lo, __m256i hi, __m256i idx) {
  const __m256i upper = _mm256_slli_epi32(idx, 28);  // bit 3 of idx into the sign bit
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(_mm256_permutevar8x32_epi32(lo, idx)),
                                              _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(hi, idx)), _mm256_castsi256_ps(upper)));
}

// pwlVec on 8 lanes.
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i pwl8(const Vec8Pwl& t, __m256i z) {
  const __m256i v = _mm256_min_epi32(_mm256_max_epi32(z, t.lo), t.hi);
  __m256i k = _mm256_setzero_si256();
  for (int step = 8; step >= 1; step >>= 1) {
    const __m256i cand = _mm256_add_epi32(k, _mm256_set1_epi32(step));
    // knots[cand] <= v, i.e. not (knots[cand] > v)
    const __m256i above = _mm256_cmpgt_epi32(lookup16(t.knotsLo, t.knotsHi, cand), v);
    k = _mm256_blendv_epi8(cand, k, above);
  }
  const __m256i knot = lookup16(t.knotsLo, t.knotsHi, k);
  const __m256i prod = _mm256_mullo_epi32(_mm256_sub_epi32(v, knot), lookup16(t.slopesLo, t.slopesHi, k));
  const __m256i y = _mm256_add_epi32(lookup16(t.valuesLo, t.valuesHi, k), _mm256_sra_epi32(_mm256_add_epi32(prod, t.half), t.shift));
  return _mm256_min_epi32(_mm256_max_epi32(y, t.outMin), t.outMax);
}

// Sequences per task of the whole-sequence drivers (intLstmSequence, intGruSequence).
constexpr int64_t kSeqBlock = 16;

// Rows of int8 (rows, k) as the serial int8 GEMM reads them: u8 (xor 0x80), rows of kp bytes (the
// bytes past k, set once to 0x80 by the caller, multiply zero weights).
inline void toUnsignedRows(int64_t rows, int64_t k, int64_t kp, const int8_t* src, uint8_t* dst) {
  for (int64_t r = 0; r < rows; r++) {
    const int8_t* s = src + r * k;
    uint8_t* d = dst + r * kp;
    for (int64_t j = 0; j < k; j++) d[j] = static_cast<uint8_t>(s[j]) ^ 0x80u;
  }
}

// The whole-sequence driver of the integer LSTM and GRU: the sequences are independent, so each
// pool task takes a block of kSeqBlock of them through every step (both products by the serial
// int8 GEMM on the block's rows, then the cell), one pool dispatch per call instead of two per
// step, with the block's accumulators in L1/L2. The integer results are those of whole-batch
// GEMMs (the same sums per row). After the products of step t for sequence n,
// row(t, n, rx, rh, hPrev, hOut) runs the cell: rx = W_ih·x (rows int32), rh = W_hh·h_{t-1},
// hPrev = h_{t-1} of n (h0 at t = 0), hOut = h_t of n in `out` (steps, batch, H).
template <typename Row>
void blockedSequence(int64_t steps, int64_t batch, int64_t input, int64_t H, int64_t rows, double workPerRow,
                     const int8_t* x, const int8_t* packedIh, const int32_t* rowSumsIh, const int8_t* packedHh,
                     const int32_t* rowSumsHh, const int8_t* h0, int8_t* out, Row row) {
  const int64_t kx = (input + 3) / 4 * 4, kh = (H + 3) / 4 * 4;
  const int64_t blocks = (batch + kSeqBlock - 1) / kSeqBlock;
  const double work = static_cast<double>(steps * batch * rows) * workPerRow;
  parallelForEach(blocks, work, [&](int64_t begin, int64_t end) {
    thread_local std::vector<int32_t> ax, ah;
    thread_local std::vector<uint8_t> ux, uh;
    if (ax.size() < static_cast<size_t>(kSeqBlock * rows)) {
      ax.resize(static_cast<size_t>(kSeqBlock * rows));
      ah.resize(static_cast<size_t>(kSeqBlock * rows));
    }
    // The padding bytes past input / H must be 0x80 (zero after the xor): set once per buffer.
    if (ux.size() < static_cast<size_t>(kSeqBlock * kx)) ux.assign(static_cast<size_t>(kSeqBlock * kx), 0x80);
    if (uh.size() < static_cast<size_t>(kSeqBlock * kh)) uh.assign(static_cast<size_t>(kSeqBlock * kh), 0x80);
    for (int64_t b = begin; b < end; b++) {
      const int64_t n0 = b * kSeqBlock, nb = std::min(kSeqBlock, batch - n0);
      for (int64_t t = 0; t < steps; t++) {
        toUnsignedRows(nb, input, kx, x + (t * batch + n0) * input, ux.data());
        gemmInt8Serial(nb, rows, input, ux.data(), kx, packedIh, rowSumsIh, -128, ax.data(), rows);
        const int8_t* hPrev = t == 0 ? h0 + n0 * H : out + ((t - 1) * batch + n0) * H;
        toUnsignedRows(nb, H, kh, hPrev, uh.data());
        gemmInt8Serial(nb, rows, H, uh.data(), kh, packedHh, rowSumsHh, -128, ah.data(), rows);
        for (int64_t j = 0; j < nb; j++) {
          row(t, n0 + j, ax.data() + j * rows, ah.data() + j * rows, hPrev + j * H, out + (t * batch + n0 + j) * H);
        }
      }
    }
  });
}

// Why a PWL table cannot run exactly (nullptr when it can).
const char* tableProblem(const IntPwlTable& t) {
  if (t.n < 1 || t.knots == nullptr || t.values == nullptr || t.slopes == nullptr) return "a PWL table is empty";
  if (t.shift < 1 || t.shift > 40) return "a PWL table's shift is outside [1, 40]";
  if (t.outMin < kInt16Min || t.outMax > kInt16Max || t.outMin > t.outMax) return "a PWL table's output clamp is not an int16 range";
  for (int32_t k = 0; k < t.n; k++) {
    if (t.knots[k + 1] <= t.knots[k]) return "a PWL table's knots are not strictly increasing";
  }
  return nullptr;
}

// The checks both cells make (irnn.h, intgru.h): every row's requantization shift and the output
// shift in [10, 62], valid tables.
const char* cellProblem(int64_t rows, const int32_t* shiftIh, const int32_t* shiftHh, int32_t outShift, const IntPwlTable& sigmoid,
                        const IntPwlTable& tanh) {
  for (int64_t r = 0; r < rows; r++) {
    if (shiftIh[r] < 10 || shiftIh[r] > 62 || shiftHh[r] < 10 || shiftHh[r] > 62) return "a row's requantization shift is outside [10, 62]";
  }
  if (outShift < 10 || outShift > 62) return "the output shift is outside [10, 62]";
  if (const char* problem = tableProblem(sigmoid)) return problem;
  return tableProblem(tanh);
}

}  // namespace
}  // namespace lowbit
