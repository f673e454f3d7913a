// The integer LSTM cell (definitions in irnn.h). Builds of one row:
// - scalar: plain int64 arithmetic, any table the checks accept (also compiled for AVX2: "avx2-loop");
// - avx512 (16 gate rows per vector) and avx2 (8): the requantizations run in 64-bit lanes (even and
//   odd lanes through vpmuldq, per-lane shifts; AVX2 builds the arithmetic shift and the 64-bit clamp
//   from logical shifts and compares), the PWL segment is a 4-step binary search over a table held in
//   registers (vpermd; AVX2 two permutes and a blend), so they need tables of at most 16 segments whose
//   products (v - knot) slope + 2^(shift-1) fit int32 (the default 16-segment Q3.12 -> Q0.15 tables
//   do); other tables take the int64 row. AVX2 leaves the H % 8 tail of each block to the int64 code.
#include "irnn.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu.h"
#include "intgemm.h"
#include "irnn-cell.h"
#include "threadpool.h"

namespace lowbit {

namespace {

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

// ---------------------------------------------------------------- AVX2 (8 lanes, full blocks; tails in int64 scalar code)
// (the 64-bit lane and two-register PWL helpers are in irnn-cell.h)

LOWBIT_TARGET_AVX2 void rowAvx2Vector(const IntLstmCell& p, const PaddedPwl& sigTable, const PaddedPwl& tanhTable,
                                      const int32_t* ax, const int32_t* ah, int16_t* c, int8_t* h, int32_t* gates) {
  const int64_t H = p.hidden, full = H - H % 8;
  const Vec8Pwl sig = vec8Pwl(sigTable), tnh = vec8Pwl(tanhTable);
  const __m256i ones = _mm256_set1_epi64x(1);
  const __m256i zMin = _mm256_set1_epi64x(kInt16Min), zMax = _mm256_set1_epi64x(kInt16Max);
  for (int q = 0; q < 4; q++) {
    const Vec8Pwl& table = q == 2 ? tnh : sig;
    const IntPwlTable& scalarTable = q == 2 ? p.tanh : p.sigmoid;
    for (int64_t k = 0; k < full; k += 8) {
      const int64_t r = q * H + k;
      const __m256i x = load8(ax + r), hh = load8(ah + r), mx = load8(p.multIh + r), mh = load8(p.multHh + r);
      const __m256i sx = load8(p.shiftIh + r), sh = load8(p.shiftHh + r), b = load8(p.bias + r);
      __m256i ze = _mm256_add_epi64(_mm256_add_epi64(requant4(x, mx, even4(sx)), requant4(hh, mh, even4(sh))), _mm256_mul_epi32(b, ones));
      __m256i zo = _mm256_add_epi64(_mm256_add_epi64(requant4(odd4(x), odd4(mx), odd4(sx)), requant4(odd4(hh), odd4(mh), odd4(sh))),
                                    _mm256_mul_epi32(odd4(b), ones));
      ze = clampEpi64(ze, zMin, zMax);
      zo = clampEpi64(zo, zMin, zMax);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(gates + r), pwl8(table, join4(ze, zo)));
    }
    for (int64_t r = q * H + full; r < (q + 1) * H; r++) {
      const int64_t z = requant(ax[r], p.multIh[r], p.shiftIh[r]) + requant(ah[r], p.multHh[r], p.shiftHh[r]) + p.bias[r];
      gates[r] = pwlScalar(scalarTable, static_cast<int32_t>(clamp64(z, kInt16Min, kInt16Max)));
    }
  }
  const __m256i outM = _mm256_set1_epi64x(p.outMult), outS = _mm256_set1_epi64x(p.outShift);
  const __m256i hMin = _mm256_set1_epi64x(-kQ8), hMax = _mm256_set1_epi64x(kQ8);
  const __m256i cMin = _mm256_set1_epi32(kInt16Min), cMax = _mm256_set1_epi32(kInt16Max);
  const __m256i half14 = _mm256_set1_epi32(1 << 14), half18 = _mm256_set1_epi32(1 << 18);
  alignas(32) int32_t cOut[8], hOut[8];
  for (int64_t k = 0; k < full; k += 8) {
    const __m256i i = load8(gates + k), f = load8(gates + H + k), g = load8(gates + 2 * H + k), o = load8(gates + 3 * H + k);
    const __m256i cOld = _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + k)));
    const __m256i fc = _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(f, cOld), half14), 15);
    const __m256i ig = _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(i, g), half18), 19);
    const __m256i cNew = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(fc, ig), cMin), cMax);
    const __m256i t = pwl8(tnh, _mm256_add_epi32(cNew, cNew));
    const __m256i ot = _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(o, t), half14), 15);
    const __m256i he = clampEpi64(requant4(ot, outM, outS), hMin, hMax), ho = clampEpi64(requant4(odd4(ot), outM, outS), hMin, hMax);
    _mm256_store_si256(reinterpret_cast<__m256i*>(cOut), cNew);
    _mm256_store_si256(reinterpret_cast<__m256i*>(hOut), join4(he, ho));
    for (int j = 0; j < 8; j++) {
      c[k + j] = static_cast<int16_t>(cOut[j]);
      h[k + j] = static_cast<int8_t>(hOut[j]);
    }
  }
  for (int64_t k = full; k < H; k++) {
    const int64_t i = gates[k], f = gates[H + k], g = gates[2 * H + k], o = gates[3 * H + k];
    const int32_t cNew = static_cast<int32_t>(clamp64(roundShift(f * c[k], 15) + roundShift(i * g, 19), kInt16Min, kInt16Max));
    c[k] = static_cast<int16_t>(cNew);
    const int64_t t = pwlScalar(p.tanh, 2 * cNew);
    h[k] = static_cast<int8_t>(clamp64(requant(roundShift(o * t, 15), p.outMult, p.outShift), -kQ8, kQ8));
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

enum class CellPath { Scalar, Avx2Loop, Avx2, Avx512 };

CellPath cellPath(const IntLstmCell& p) {
  const Isa isa = activeIsa();
  const bool vector = pwlFitsVector(p.sigmoid) && pwlFitsVector(p.tanh);
  if (isa == Isa::Avx512 && vector) return CellPath::Avx512;
  if (isa >= Isa::Avx2) return vector ? CellPath::Avx2 : CellPath::Avx2Loop;
  return CellPath::Scalar;
}

}  // namespace

const char* intLstmCellProblem(const IntLstmCell& p) {
  if (p.hidden < 1) return "hidden size must be positive";
  return cellProblem(4 * p.hidden, p.shiftIh, p.shiftHh, p.outShift, p.sigmoid, p.tanh);
}

const char* intLstmPathName(const IntLstmCell& p) {
  switch (cellPath(p)) {
    case CellPath::Avx512: return "avx512";
    case CellPath::Avx2: return "avx2";
    case CellPath::Avx2Loop: return "avx2-loop";
    default: return "scalar";
  }
}

void intLstmCellStep(const IntLstmCell& p, int64_t batch, const int32_t* accX, const int32_t* accH, int16_t* c,
                     int8_t* h) {
  const int64_t H = p.hidden, rows = 4 * H;
  const CellPath path = cellPath(p);
  PaddedPwl sig{}, tnh{};
  if (path == CellPath::Avx512 || path == CellPath::Avx2) {
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
      else if (path == CellPath::Avx2) rowAvx2Vector(p, sig, tnh, ax, ah, c + n * H, h + n * H, gates.data());
      else if (path == CellPath::Avx2Loop) rowAvx2(p, ax, ah, c + n * H, h + n * H, gates.data());
      else rowScalar(p, ax, ah, c + n * H, h + n * H, gates.data());
    }
  });
}

void intLstmSequence(const IntLstmCell& p, int64_t steps, int64_t batch, int64_t input, const int8_t* x,
                     const int8_t* packedIh, const int32_t* rowSumsIh, const int8_t* packedHh, const int32_t* rowSumsHh,
                     const int8_t* h0, int16_t* c, int8_t* out) {
  const int64_t H = p.hidden, rows = 4 * H;
  const CellPath path = cellPath(p);
  PaddedPwl sig{}, tnh{};
  if (path == CellPath::Avx512 || path == CellPath::Avx2) {
    sig = paddedPwl(p.sigmoid);
    tnh = paddedPwl(p.tanh);
  }
  blockedSequence(steps, batch, input, H, rows, 2.0 * static_cast<double>(input + H) / 8.0 + 40.0, x, packedIh, rowSumsIh, packedHh,
                  rowSumsHh, h0, out, [&](int64_t, int64_t n, const int32_t* rx, const int32_t* rh, const int8_t*, int8_t* hOut) {
    thread_local std::vector<int32_t> gates;
    if (gates.size() < static_cast<size_t>(rows)) gates.resize(static_cast<size_t>(rows));
    int16_t* cn = c + n * H;
    if (path == CellPath::Avx512) rowAvx512(p, sig, tnh, rx, rh, cn, hOut, gates.data());
    else if (path == CellPath::Avx2) rowAvx2Vector(p, sig, tnh, rx, rh, cn, hOut, gates.data());
    else if (path == CellPath::Avx2Loop) rowAvx2(p, rx, rh, cn, hOut, gates.data());
    else rowScalar(p, rx, rh, cn, hOut, gates.data());
  });
}

}  // namespace lowbit
