// The integer GRU cell (definitions in intgru.h). Builds of one sequence's row:
// - scalar: plain int64 arithmetic, any parameters the check accepts (also compiled for AVX2: "avx2-loop");
// - avx512 (16 hidden units per vector) and avx2 (8): the three gates of a unit in the same lanes. The
//   requantizations run in 64-bit lanes (even and odd lanes through vpmuldq, per-lane shifts; AVX2 builds
//   the arithmetic shift and the 64-bit clamp from logical shifts and compares, irnn-cell.h), the PWL
//   segment is a 4-step binary search over a table held in registers (vpermd; AVX2 two permutes and a
//   blend), so they need tables of at most 16 segments whose products (v - knot) slope + 2^(shift-1) fit
//   int32 (the default 16-segment tables do); other tables take the int64 row. AVX2 leaves the H % 8
//   tail of a row to the int64 code (AVX-512 masks its tail).
//   The rest fits int32 lanes exactly: gx, gh are clamped to +-2^24; a bias beyond +-2^26 saturates the
//   int16 clamp it feeds whatever the other terms are (|gx + gh| <= 2^25, |gx_n + r hn / 2^15| < 2^25), so
//   clamping biases to +-2^26 first changes nothing; |r hn| <= 2^30; (2^15 - z) n lies in [-2^31, 2^31 - 2^16];
//   the requantized (1 - z) n is clamped to +-2^10 in 64-bit lanes before z h (|z h| / 2^15 <= 128) is added,
//   which leaves every result of the final +-127 clamp unchanged.
#include "intgru.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cpu.h"
#include "intgemm.h"
#include "irnn-cell.h"
#include "threadpool.h"

namespace lowbit {

namespace {

constexpr int64_t kWide = int64_t{1} << 24;   // clamp of the requantized products (intgru.ts WIDE)
constexpr int32_t kBiasClamp = 1 << 26;       // see the file comment
constexpr int32_t kMovedClamp = 1 << 10;

// The r or z gate of gate row r (< 2H) of one sequence in int64 arithmetic: ax, ah (3H).
LOWBIT_INLINE int32_t sigmoidGate(const IntGruCell& p, const int32_t* ax, const int32_t* ah, int64_t r) {
  const int64_t gx = clamp64(requant(ax[r], p.multIh[r], p.shiftIh[r]), -kWide, kWide);
  const int64_t gh = clamp64(requant(ah[r], p.multHh[r], p.shiftHh[r]), -kWide, kWide);
  return pwlScalar(p.sigmoid, clamp64(gx + gh + p.bias[r], kInt16Min, kInt16Max));
}

// h'[k] of one sequence in int64 arithmetic, given unit k's gates r and z: ax, ah (3H), h (H).
LOWBIT_INLINE int8_t unitUpdate(const IntGruCell& p, const int32_t* ax, const int32_t* ah, const int8_t* h, int64_t k, int64_t rGate,
                                int64_t z) {
  const int64_t r = 2 * p.hidden + k;
  const int64_t gx = clamp64(requant(ax[r], p.multIh[r], p.shiftIh[r]), -kWide, kWide);
  const int64_t gh = clamp64(requant(ah[r], p.multHh[r], p.shiftHh[r]), -kWide, kWide);
  const int64_t hn = clamp64(gh + p.biasHn[k], kInt16Min, kInt16Max);
  const int64_t pre = clamp64(gx + p.bias[r] + roundShift(rGate * hn, 15), kInt16Min, kInt16Max);
  const int64_t n = pwlScalar(p.tanh, pre);
  const int64_t keep = roundShift(((int64_t{1} << 15) - z) * n, 15);
  const int64_t moved = requant(keep, p.outMult, p.outShift);
  return static_cast<int8_t>(clamp64(moved + roundShift(z * h[k], 15), -kQ8, kQ8));
}

// One sequence in int64 arithmetic: ax, ah (3H), h (H) in, hOut (H) out; rz scratch (2H). The r and z rows
// first, then the units (3-9 % faster than unit by unit in gru-cell-speed, measured once at load 9).
LOWBIT_INLINE void rowBody(const IntGruCell& p, const int32_t* ax, const int32_t* ah, const int8_t* h, int8_t* hOut, int32_t* rz) {
  const int64_t H = p.hidden;
  for (int64_t r = 0; r < 2 * H; r++) rz[r] = sigmoidGate(p, ax, ah, r);
  for (int64_t k = 0; k < H; k++) hOut[k] = unitUpdate(p, ax, ah, h, k, rz[k], rz[H + k]);
}

LOWBIT_TARGET_AVX2 void rowAvx2Loop(const IntGruCell& p, const int32_t* ax, const int32_t* ah, const int8_t* h, int8_t* hOut,
                                    int32_t* rz) {
  rowBody(p, ax, ah, h, hOut, rz);
}

void rowScalar(const IntGruCell& p, const int32_t* ax, const int32_t* ah, const int8_t* h, int8_t* hOut, int32_t* rz) {
  rowBody(p, ax, ah, h, hOut, rz);
}

// ---------------------------------------------------------------- AVX2 (8 units per vector, full blocks; the tail in int64 code)

// clamp(rq(acc; m, s), lo, hi) for 8 int32 lanes (lo, hi in 64-bit lanes, within int32).
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i requantClamp8(__m256i acc, __m256i m, __m256i s, __m256i lo, __m256i hi) {
  const __m256i e = clampEpi64(requant4(acc, m, even4(s)), lo, hi);
  const __m256i o = clampEpi64(requant4(odd4(acc), odd4(m), odd4(s)), lo, hi);
  return join4(e, o);
}

LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i clamp8(__m256i x, __m256i lo, __m256i hi) { return _mm256_min_epi32(_mm256_max_epi32(x, lo), hi); }

// roundShift(a b, 15) for 8 int32 lanes whose products and the added 2^14 fit int32.
LOWBIT_TARGET_AVX2 LOWBIT_INLINE __m256i mulRound15(__m256i a, __m256i b) {
  return _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(a, b), _mm256_set1_epi32(1 << 14)), 15);
}

LOWBIT_TARGET_AVX2 void rowAvx2(const IntGruCell& p, const PaddedPwl& sigTable, const PaddedPwl& tanhTable, const int32_t* ax,
                                const int32_t* ah, const int8_t* h, int8_t* hOut) {
  const int64_t H = p.hidden, full = H - H % 8;
  const Vec8Pwl sig = vec8Pwl(sigTable), tnh = vec8Pwl(tanhTable);
  const __m256i wideLo = _mm256_set1_epi64x(-kWide), wideHi = _mm256_set1_epi64x(kWide);
  const __m256i bLo = _mm256_set1_epi32(-kBiasClamp), bHi = _mm256_set1_epi32(kBiasClamp);
  const __m256i lo16 = _mm256_set1_epi32(kInt16Min), hi16 = _mm256_set1_epi32(kInt16Max);
  const __m256i one15 = _mm256_set1_epi32(1 << 15);
  const __m256i outM = _mm256_set1_epi64x(p.outMult), outS = _mm256_set1_epi64x(p.outShift);
  const __m256i movedLo = _mm256_set1_epi64x(-kMovedClamp), movedHi = _mm256_set1_epi64x(kMovedClamp);
  const __m256i hMin = _mm256_set1_epi32(-kQ8), hMax = _mm256_set1_epi32(kQ8);
  for (int64_t k = 0; k < full; k += 8) {
    __m256i gx[3], gh[3];
    for (int g = 0; g < 3; g++) {
      const int64_t r = g * H + k;
      gx[g] = requantClamp8(load8(ax + r), load8(p.multIh + r), load8(p.shiftIh + r), wideLo, wideHi);
      gh[g] = requantClamp8(load8(ah + r), load8(p.multHh + r), load8(p.shiftHh + r), wideLo, wideHi);
    }
    const __m256i br = clamp8(load8(p.bias + k), bLo, bHi), bz = clamp8(load8(p.bias + H + k), bLo, bHi);
    const __m256i rGate = pwl8(sig, clamp8(_mm256_add_epi32(_mm256_add_epi32(gx[0], gh[0]), br), lo16, hi16));
    const __m256i z = pwl8(sig, clamp8(_mm256_add_epi32(_mm256_add_epi32(gx[1], gh[1]), bz), lo16, hi16));
    const __m256i bn = clamp8(load8(p.bias + 2 * H + k), bLo, bHi), bhn = clamp8(load8(p.biasHn + k), bLo, bHi);
    const __m256i hn = clamp8(_mm256_add_epi32(gh[2], bhn), lo16, hi16);
    const __m256i n = pwl8(tnh, clamp8(_mm256_add_epi32(_mm256_add_epi32(gx[2], bn), mulRound15(rGate, hn)), lo16, hi16));
    const __m256i keep = mulRound15(_mm256_sub_epi32(one15, z), n);
    const __m256i me = clampEpi64(requant4(keep, outM, outS), movedLo, movedHi);
    const __m256i mo = clampEpi64(requant4(odd4(keep), outM, outS), movedLo, movedHi);
    const __m256i hOld = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(h + k)));
    const __m256i hNew = clamp8(_mm256_add_epi32(join4(me, mo), mulRound15(z, hOld)), hMin, hMax);
    // 8 int32 in [-127, 127] -> 8 int8: packs keep the order within the 128-bit halves.
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(hNew), _mm256_extracti128_si256(hNew, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(hOut + k), _mm_packs_epi16(words, words));
  }
  for (int64_t k = full; k < H; k++) hOut[k] = unitUpdate(p, ax, ah, h, k, sigmoidGate(p, ax, ah, k), sigmoidGate(p, ax, ah, H + k));
}

// ---------------------------------------------------------------- AVX-512

// clamp(rq(acc; m, s), -lim, lim) for 16 int32 lanes (lim < 2^31).
LOWBIT_TARGET_AVX512 LOWBIT_INLINE __m512i requantClamp16(__m512i acc, __m512i m, __m512i s, __m512i lo, __m512i hi) {
  const __m512i e = _mm512_min_epi64(_mm512_max_epi64(requant64(acc, m, evenShift(s)), lo), hi);
  const __m512i o = _mm512_min_epi64(_mm512_max_epi64(requant64(oddLanes(acc), oddLanes(m), oddLanes(s)), lo), hi);
  return joinLanes(e, o);
}

LOWBIT_TARGET_AVX512 void rowAvx512(const IntGruCell& p, const PaddedPwl& sigTable, const PaddedPwl& tanhTable,
                                    const int32_t* ax, const int32_t* ah, const int8_t* h, int8_t* hOut) {
  const int64_t H = p.hidden;
  const VecPwl sig = vecPwl(sigTable), tnh = vecPwl(tanhTable);
  const __m512i wideLo = _mm512_set1_epi64(-kWide), wideHi = _mm512_set1_epi64(kWide);
  const __m512i bLo = _mm512_set1_epi32(-kBiasClamp), bHi = _mm512_set1_epi32(kBiasClamp);
  const __m512i lo16 = _mm512_set1_epi32(kInt16Min), hi16 = _mm512_set1_epi32(kInt16Max);
  const __m512i half14 = _mm512_set1_epi32(1 << 14), one15 = _mm512_set1_epi32(1 << 15), one = _mm512_set1_epi32(1);
  const __m512i outM = _mm512_set1_epi64(p.outMult), outS = _mm512_set1_epi64(p.outShift);
  const __m512i movedLo = _mm512_set1_epi64(-kMovedClamp), movedHi = _mm512_set1_epi64(kMovedClamp);
  const __m512i hMin = _mm512_set1_epi32(-kQ8), hMax = _mm512_set1_epi32(kQ8);
  for (int64_t k = 0; k < H; k += 16) {
    const __mmask16 mask = H - k >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (H - k)) - 1);
    __m512i gate[2];
    __m512i gxn = _mm512_setzero_si512(), ghn = _mm512_setzero_si512();
    for (int g = 0; g < 3; g++) {
      const int64_t r = g * H + k;
      // Masked-off lanes get shift 1 (any valid shift: their results are never stored).
      const __m512i gx = requantClamp16(_mm512_maskz_loadu_epi32(mask, ax + r), _mm512_maskz_loadu_epi32(mask, p.multIh + r),
                                        _mm512_mask_loadu_epi32(one, mask, p.shiftIh + r), wideLo, wideHi);
      const __m512i gh = requantClamp16(_mm512_maskz_loadu_epi32(mask, ah + r), _mm512_maskz_loadu_epi32(mask, p.multHh + r),
                                        _mm512_mask_loadu_epi32(one, mask, p.shiftHh + r), wideLo, wideHi);
      if (g < 2) {
        const __m512i b = _mm512_min_epi32(_mm512_max_epi32(_mm512_maskz_loadu_epi32(mask, p.bias + r), bLo), bHi);
        const __m512i pre = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(_mm512_add_epi32(gx, gh), b), lo16), hi16);
        gate[g] = pwlVec(sig, pre);
      } else {
        gxn = gx;
        ghn = gh;
      }
    }
    const __m512i bn = _mm512_min_epi32(_mm512_max_epi32(_mm512_maskz_loadu_epi32(mask, p.bias + 2 * H + k), bLo), bHi);
    const __m512i bhn = _mm512_min_epi32(_mm512_max_epi32(_mm512_maskz_loadu_epi32(mask, p.biasHn + k), bLo), bHi);
    const __m512i hn = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(ghn, bhn), lo16), hi16);
    const __m512i rh = _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(gate[0], hn), half14), 15);
    const __m512i pre = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(_mm512_add_epi32(gxn, bn), rh), lo16), hi16);
    const __m512i n = pwlVec(tnh, pre);
    const __m512i z = gate[1];
    const __m512i keep = _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(_mm512_sub_epi32(one15, z), n), half14), 15);
    const __m512i me = _mm512_min_epi64(_mm512_max_epi64(requant64(keep, outM, outS), movedLo), movedHi);
    const __m512i mo = _mm512_min_epi64(_mm512_max_epi64(requant64(oddLanes(keep), outM, outS), movedLo), movedHi);
    const __m512i hOld = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, h + k));
    const __m512i zh = _mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(z, hOld), half14), 15);
    const __m512i hNew = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(joinLanes(me, mo), zh), hMin), hMax);
    _mm512_mask_cvtepi32_storeu_epi8(hOut + k, mask, hNew);
  }
}

}  // namespace

IntGruPath intGruBestPath(const IntGruCell& p) {
  const Isa isa = activeIsa();
  const bool vector = pwlFitsVector(p.sigmoid) && pwlFitsVector(p.tanh);
  if (isa == Isa::Avx512 && vector) return IntGruPath::Avx512;
  if (isa >= Isa::Avx2) return vector ? IntGruPath::Avx2 : IntGruPath::Avx2Loop;
  return IntGruPath::Scalar;
}

const char* intGruPathProblem(const IntGruCell& p, IntGruPath path) {
  const Isa isa = activeIsa();
  if (path == IntGruPath::Avx512 && isa != Isa::Avx512) return "needs AVX-512 (the active ISA is lower)";
  if (path != IntGruPath::Scalar && isa < Isa::Avx2) return "needs AVX2 (the active ISA is scalar)";
  if ((path == IntGruPath::Avx512 || path == IntGruPath::Avx2) && !(pwlFitsVector(p.sigmoid) && pwlFitsVector(p.tanh))) {
    return "needs PWL tables the vector kernel holds (at most 16 segments, products within int32)";
  }
  return nullptr;
}

const char* intGruPathName(IntGruPath path) {
  switch (path) {
    case IntGruPath::Avx512: return "avx512";
    case IntGruPath::Avx2: return "avx2";
    case IntGruPath::Avx2Loop: return "avx2-loop";
    default: return "scalar";
  }
}

bool intGruPathFromName(const std::string& name, IntGruPath* path) {
  for (IntGruPath candidate : {IntGruPath::Scalar, IntGruPath::Avx2Loop, IntGruPath::Avx2, IntGruPath::Avx512}) {
    if (name == intGruPathName(candidate)) {
      *path = candidate;
      return true;
    }
  }
  return false;
}

const char* intGruCellProblem(const IntGruCell& p) {
  if (p.hidden < 1) return "hidden size must be positive";
  return cellProblem(3 * p.hidden, p.shiftIh, p.shiftHh, p.outShift, p.sigmoid, p.tanh);
}

void intGruCellStep(const IntGruCell& p, IntGruPath path, int64_t batch, const int32_t* accX, const int32_t* accH, const int8_t* h,
                    int8_t* hOut) {
  const int64_t H = p.hidden, rows = 3 * H;
  PaddedPwl sig{}, tnh{};
  if (path == IntGruPath::Avx512 || path == IntGruPath::Avx2) {
    sig = paddedPwl(p.sigmoid);
    tnh = paddedPwl(p.tanh);
  }
  // About 40 operations per gate row (two 64-bit requantizations, the PWL) in scalar terms.
  const bool loop = path == IntGruPath::Avx2Loop || path == IntGruPath::Scalar;
  parallelFor(batch, 40.0 * static_cast<double>(batch * rows), [&](int64_t begin, int64_t end) {
    std::vector<int32_t> rz(loop ? static_cast<size_t>(2 * H) : 0);
    for (int64_t n = begin; n < end; n++) {
      const int32_t* ax = accX + n * rows;
      const int32_t* ah = accH + n * rows;
      if (path == IntGruPath::Avx512) rowAvx512(p, sig, tnh, ax, ah, h + n * H, hOut + n * H);
      else if (path == IntGruPath::Avx2) rowAvx2(p, sig, tnh, ax, ah, h + n * H, hOut + n * H);
      else if (path == IntGruPath::Avx2Loop) rowAvx2Loop(p, ax, ah, h + n * H, hOut + n * H, rz.data());
      else rowScalar(p, ax, ah, h + n * H, hOut + n * H, rz.data());
    }
  });
}

void intGruSequence(const IntGruCell& p, IntGruPath path, int64_t steps, int64_t batch, int64_t input, const int8_t* x,
                    const int8_t* packedIh, const int32_t* rowSumsIh, const int8_t* packedHh, const int32_t* rowSumsHh,
                    const int8_t* h0, int8_t* out) {
  const int64_t H = p.hidden, rows = 3 * H;
  PaddedPwl sig{}, tnh{};
  if (path == IntGruPath::Avx512 || path == IntGruPath::Avx2) {
    sig = paddedPwl(p.sigmoid);
    tnh = paddedPwl(p.tanh);
  }
  // As intLstmSequence (blockedSequence): blocks of sequences through every step.
  blockedSequence(steps, batch, input, H, rows, 2.0 * static_cast<double>(input + H) / 8.0 + 40.0, x, packedIh, rowSumsIh, packedHh,
                  rowSumsHh, h0, out, [&](int64_t, int64_t, const int32_t* rx, const int32_t* rh, const int8_t* hPrev, int8_t* hOut) {
    thread_local std::vector<int32_t> rz;
    if (rz.size() < static_cast<size_t>(2 * H)) rz.resize(static_cast<size_t>(2 * H));
    if (path == IntGruPath::Avx512) rowAvx512(p, sig, tnh, rx, rh, hPrev, hOut);
    else if (path == IntGruPath::Avx2) rowAvx2(p, sig, tnh, rx, rh, hPrev, hOut);
    else if (path == IntGruPath::Avx2Loop) rowAvx2Loop(p, rx, rh, hPrev, hOut, rz.data());
    else rowScalar(p, rx, rh, hPrev, hOut, rz.data());
  });
}

}  // namespace lowbit
