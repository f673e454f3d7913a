// The integer LSTM cell (definitions in irnn.h). Three builds of one row function:
// - scalar: plain int64 arithmetic, any table the checks accept;
// - avx2: the same source compiled for AVX2 (whatever the compiler vectorises);
// - avx512: 16 gate rows per vector. The requantizations run in 64-bit lanes (even and odd lanes
//   through vpmuldq, per-lane arithmetic shifts), the PWL segment is a 4-step binary search over a
//   table held in one register (vpermd), so it needs tables of at most 16 segments whose products
//   (v - knot) slope + 2^(shift-1) fit int32 (the default 16-segment Q3.12 -> Q0.15 tables do);
//   other tables take the scalar row.
#include "irnn.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu.h"
#include "intgemm.h"
#include "threadpool.h"

#define LOWBIT_INLINE inline __attribute__((always_inline))

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

LOWBIT_INLINE int32_t pwlScalar(const IntPwlTable& t, int32_t z) {
  const int32_t v = std::min(std::max(z, t.knots[0]), t.knots[t.n]);
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

// One sequence: ax, ah (4H), c (H) in place, h (H) out, gates scratch (4H).
LOWBIT_INLINE void rowBody(const IntLstmCell& p, const int32_t* ax, const int32_t* ah, int16_t* c, int8_t* h,
                           int32_t* gates) {
  const int64_t H = p.hidden;
  for (int q = 0; q < 4; q++) {
    const IntPwlTable& table = q == 2 ? p.tanh : p.sigmoid;
    for (int64_t r = q * H; r < (q + 1) * H; r++) {
      const int64_t z = requant(ax[r], p.multIh[r], p.shiftIh[r]) + requant(ah[r], p.multHh[r], p.shiftHh[r]) + p.bias[r];
      gates[r] = pwlScalar(table, static_cast<int32_t>(clamp64(z, kInt16Min, kInt16Max)));
    }
  }
  for (int64_t k = 0; k < H; k++) {
    const int64_t i = gates[k], f = gates[H + k], g = gates[2 * H + k], o = gates[3 * H + k];
    const int32_t cNew = static_cast<int32_t>(clamp64(roundShift(f * c[k], 15) + roundShift(i * g, 19), kInt16Min, kInt16Max));
    c[k] = static_cast<int16_t>(cNew);
    const int64_t t = pwlScalar(p.tanh, 2 * cNew);
    const int64_t ot = roundShift(o * t, 15);
    h[k] = static_cast<int8_t>(clamp64(requant(ot, p.outMult, p.outShift), -kQ8, kQ8));
  }
}

LOWBIT_TARGET_AVX2 void rowAvx2(const IntLstmCell& p, const int32_t* ax, const int32_t* ah, int16_t* c, int8_t* h,
                                int32_t* gates) {
  rowBody(p, ax, ah, c, h, gates);
}

void rowScalar(const IntLstmCell& p, const int32_t* ax, const int32_t* ah, int16_t* c, int8_t* h, int32_t* gates) {
  rowBody(p, ax, ah, c, h, gates);
}

// ---------------------------------------------------------------- AVX-512

// Whether a table suits the one-register AVX-512 evaluation.
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

LOWBIT_TARGET_AVX512 void rowAvx512(const IntLstmCell& p, const PaddedPwl& sigTable, const PaddedPwl& tanhTable,
                                    const int32_t* ax, const int32_t* ah, int16_t* c, int8_t* h, int32_t* gates) {
  const int64_t H = p.hidden;
  const VecPwl sig = vecPwl(sigTable), tnh = vecPwl(tanhTable);
  const __m512i zMin = _mm512_set1_epi64(kInt16Min), zMax = _mm512_set1_epi64(kInt16Max);
  for (int q = 0; q < 4; q++) {
    const VecPwl& table = q == 2 ? tnh : sig;
    for (int64_t k = 0; k < H; k += 16) {
      const __mmask16 mask = H - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (H - k)) - 1);
      const int64_t r = q * H + k;
      const __m512i x = _mm512_maskz_loadu_epi32(mask, ax + r), hh = _mm512_maskz_loadu_epi32(mask, ah + r);
      const __m512i mx = _mm512_maskz_loadu_epi32(mask, p.multIh + r), mh = _mm512_maskz_loadu_epi32(mask, p.multHh + r);
      // Masked-off lanes get shift 1 (any valid shift: their results are never stored).
      const __m512i one = _mm512_set1_epi32(1);
      const __m512i sx = _mm512_mask_loadu_epi32(one, mask, p.shiftIh + r), sh = _mm512_mask_loadu_epi32(one, mask, p.shiftHh + r);
      const __m512i b = _mm512_maskz_loadu_epi32(mask, p.bias + r);
      __m512i ze = _mm512_add_epi64(_mm512_add_epi64(requant64(x, mx, evenShift(sx)), requant64(hh, mh, evenShift(sh))), signedEven(b));
      __m512i zo = _mm512_add_epi64(
          _mm512_add_epi64(requant64(oddLanes(x), oddLanes(mx), oddLanes(sx)), requant64(oddLanes(hh), oddLanes(mh), oddLanes(sh))),
          signedOdd(b));
      ze = _mm512_min_epi64(_mm512_max_epi64(ze, zMin), zMax);
      zo = _mm512_min_epi64(_mm512_max_epi64(zo, zMin), zMax);
      _mm512_mask_storeu_epi32(gates + r, mask, pwlVec(table, joinLanes(ze, zo)));
    }
  }
  const __m512i outM = _mm512_set1_epi64(p.outMult), outS = _mm512_set1_epi64(p.outShift);
  const __m512i hMin = _mm512_set1_epi64(-kQ8), hMax = _mm512_set1_epi64(kQ8);
  const __m512i cMin = _mm512_set1_epi32(kInt16Min), cMax = _mm512_set1_epi32(kInt16Max);
  const __m512i half14 = _mm512_set1_epi32(1 << 14), half18 = _mm512_set1_epi32(1 << 18);
  for (int64_t k = 0; k < H; k += 16) {
    const __mmask16 mask = H - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (H - k)) - 1);
    const __m512i i = _mm512_maskz_loadu_epi32(mask, gates + k), f = _mm512_maskz_loadu_epi32(mask, gates + H + k);
    const __m512i g = _mm512_maskz_loadu_epi32(mask, gates + 2 * H + k), o = _mm512_maskz_loadu_epi32(mask, gates + 3 * H + k);
    const __m512i cOld = _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(mask, c + k));
    // |f c|, |i g| <= 2^30, so the products and the added halves fit int32.
    const __m512i fc = _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(f, cOld), half14), 15);
    const __m512i ig = _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(i, g), half18), 19);
    const __m512i cNew = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(fc, ig), cMin), cMax);
    _mm512_mask_cvtepi32_storeu_epi16(c + k, mask, cNew);
    const __m512i t = pwlVec(tnh, _mm512_add_epi32(cNew, cNew));
    const __m512i ot = _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(o, t), half14), 15);
    __m512i he = requant64(ot, outM, outS), ho = requant64(oddLanes(ot), outM, outS);
    he = _mm512_min_epi64(_mm512_max_epi64(he, hMin), hMax);
    ho = _mm512_min_epi64(_mm512_max_epi64(ho, hMin), hMax);
    _mm512_mask_cvtepi32_storeu_epi8(h + k, mask, joinLanes(he, ho));
  }
}

enum class CellPath { Scalar, Avx2, Avx512 };

CellPath cellPath(const IntLstmCell& p) {
  const Isa isa = activeIsa();
  if (isa == Isa::Avx512 && pwlFitsVector(p.sigmoid) && pwlFitsVector(p.tanh)) return CellPath::Avx512;
  if (isa >= Isa::Avx2) return CellPath::Avx2;
  return CellPath::Scalar;
}

const char* tableProblem(const IntPwlTable& t) {
  if (t.n < 1 || t.knots == nullptr || t.values == nullptr || t.slopes == nullptr) return "a PWL table is empty";
  if (t.shift < 1 || t.shift > 40) return "a PWL table's shift is outside [1, 40]";
  if (t.outMin < kInt16Min || t.outMax > kInt16Max || t.outMin > t.outMax) return "a PWL table's output clamp is not an int16 range";
  for (int32_t k = 0; k < t.n; k++) {
    if (t.knots[k + 1] <= t.knots[k]) return "a PWL table's knots are not strictly increasing";
  }
  return nullptr;
}

}  // namespace

const char* intLstmCellProblem(const IntLstmCell& p) {
  if (p.hidden < 1) return "hidden size must be positive";
  for (int64_t r = 0; r < 4 * p.hidden; r++) {
    if (p.shiftIh[r] < 10 || p.shiftIh[r] > 62 || p.shiftHh[r] < 10 || p.shiftHh[r] > 62) return "a row's requantization shift is outside [10, 62]";
  }
  if (p.outShift < 10 || p.outShift > 62) return "the output shift is outside [10, 62]";
  if (const char* problem = tableProblem(p.sigmoid)) return problem;
  return tableProblem(p.tanh);
}

const char* intLstmPathName(const IntLstmCell& p) {
  switch (cellPath(p)) {
    case CellPath::Avx512: return "avx512";
    case CellPath::Avx2: return "avx2";
    default: return "scalar";
  }
}

void intLstmCellStep(const IntLstmCell& p, int64_t batch, const int32_t* accX, const int32_t* accH, int16_t* c,
                     int8_t* h) {
  const int64_t H = p.hidden, rows = 4 * H;
  const CellPath path = cellPath(p);
  PaddedPwl sig{}, tnh{};
  if (path == CellPath::Avx512) {
    sig = paddedPwl(p.sigmoid);
    tnh = paddedPwl(p.tanh);
  }
  // About 40 operations per gate row (two 64-bit requantizations, the PWL) in scalar terms.
  parallelFor(batch, 40.0 * static_cast<double>(batch * rows), [&](int64_t begin, int64_t end) {
    std::vector<int32_t> gates(static_cast<size_t>(rows));
    for (int64_t n = begin; n < end; n++) {
      const int32_t* ax = accX + n * rows;
      const int32_t* ah = accH + n * rows;
      if (path == CellPath::Avx512) rowAvx512(p, sig, tnh, ax, ah, c + n * H, h + n * H, gates.data());
      else if (path == CellPath::Avx2) rowAvx2(p, ax, ah, c + n * H, h + n * H, gates.data());
      else rowScalar(p, ax, ah, c + n * H, h + n * H, gates.data());
    }
  });
}

void intLstmSequence(const IntLstmCell& p, int64_t steps, int64_t batch, int64_t input, const int8_t* x,
                     const int8_t* packedIh, const int32_t* rowSumsIh, const int8_t* packedHh, const int32_t* rowSumsHh,
                     const int8_t* h0, int16_t* c, int8_t* out) {
  const int64_t H = p.hidden, rows = 4 * H;
  // The input projection of several steps per GEMM (it does not depend on h), at most about 1 MB of
  // accumulators at a time; buffers reused by the calling thread (no page faults per call).
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(steps, (int64_t{1} << 18) / (batch * rows)));
  thread_local std::vector<int32_t> accX, accH;
  if (accX.size() < static_cast<size_t>(chunk * batch * rows)) accX.resize(static_cast<size_t>(chunk * batch * rows));
  if (accH.size() < static_cast<size_t>(batch * rows)) accH.resize(static_cast<size_t>(batch * rows));
  for (int64_t t = 0; t < steps; t++) {
    const int64_t inChunk = t % chunk;
    if (inChunk == 0) {
      const int64_t m = std::min(chunk, steps - t) * batch;
      gemmInt8Packed(m, rows, input, reinterpret_cast<const uint8_t*>(x + t * batch * input), true, 0, packedIh, rowSumsIh,
                     accX.data());
    }
    const int8_t* hPrev = t == 0 ? h0 : out + (t - 1) * batch * H;
    gemmInt8Packed(batch, rows, H, reinterpret_cast<const uint8_t*>(hPrev), true, 0, packedHh, rowSumsHh, accH.data());
    intLstmCellStep(p, batch, accX.data() + inChunk * batch * rows, accH.data(), c, out + t * batch * H);
  }
}

}  // namespace lowbit
