// The integer GRU cell (definitions in intgru.h). Builds of one sequence's row:
// - scalar: plain int64 arithmetic, any parameters the check accepts (also compiled for AVX2: "avx2-loop");
// - avx512: 16 hidden units per vector, the three gates of a unit in the same lanes. The requantizations
//   run in 64-bit lanes (even and odd lanes through vpmuldq, per-lane shifts), the PWL segment is a
//   4-step binary search over a table held in one register (vpermd), so it needs tables of at most 16
//   segments whose products (v - knot) slope + 2^(shift-1) fit int32 (the default 16-segment tables do).
//   The rest fits int32 lanes exactly: gx, gh are clamped to +-2^24; a bias beyond +-2^26 saturates the
//   int16 clamp it feeds whatever the other terms are (|gx + gh| <= 2^25, |gx_n + r hn / 2^15| < 2^25), so
//   clamping biases to +-2^26 first changes nothing; |r hn| <= 2^30; (2^15 - z) n lies in [-2^31, 2^31 - 2^16];
//   the requantized (1 - z) n is clamped to +-2^10 in 64-bit lanes before z h (|z h| / 2^15 <= 128) is added,
//   which leaves every result of the final +-127 clamp unchanged.
#include "intgru.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu.h"
#include "intgemm.h"
#include "irnn-cell.h"
#include "threadpool.h"

#define LOWBIT_INLINE inline __attribute__((always_inline))

namespace lowbit {

namespace {

constexpr int64_t kWide = int64_t{1} << 24;   // clamp of the requantized products (intgru.ts WIDE)
constexpr int32_t kBiasClamp = 1 << 26;       // see the file comment
constexpr int32_t kMovedClamp = 1 << 10;

// One sequence in int64 arithmetic: ax, ah (3H), h (H) in, hOut (H) out; rz scratch (2H).
LOWBIT_INLINE void rowBody(const IntGruCell& p, const int32_t* ax, const int32_t* ah, const int8_t* h, int8_t* hOut,
                           int32_t* rz) {
  const int64_t H = p.hidden;
  for (int64_t r = 0; r < 2 * H; r++) {
    const int64_t gx = clamp64(requant(ax[r], p.multIh[r], p.shiftIh[r]), -kWide, kWide);
    const int64_t gh = clamp64(requant(ah[r], p.multHh[r], p.shiftHh[r]), -kWide, kWide);
    rz[r] = pwlScalar(p.sigmoid, clamp64(gx + gh + p.bias[r], kInt16Min, kInt16Max));
  }
  for (int64_t k = 0; k < H; k++) {
    const int64_t r = 2 * H + k;
    const int64_t gx = clamp64(requant(ax[r], p.multIh[r], p.shiftIh[r]), -kWide, kWide);
    const int64_t gh = clamp64(requant(ah[r], p.multHh[r], p.shiftHh[r]), -kWide, kWide);
    const int64_t hn = clamp64(gh + p.biasHn[k], kInt16Min, kInt16Max);
    const int64_t pre = clamp64(gx + p.bias[r] + roundShift(rz[k] * hn, 15), kInt16Min, kInt16Max);
    const int64_t n = pwlScalar(p.tanh, pre);
    const int64_t z = rz[H + k];
    const int64_t keep = roundShift(((int64_t{1} << 15) - z) * n, 15);
    const int64_t moved = requant(keep, p.outMult, p.outShift);
    hOut[k] = static_cast<int8_t>(clamp64(moved + roundShift(z * h[k], 15), -kQ8, kQ8));
  }
}

LOWBIT_TARGET_AVX2 void rowAvx2(const IntGruCell& p, const int32_t* ax, const int32_t* ah, const int8_t* h, int8_t* hOut,
                                int32_t* rz) {
  rowBody(p, ax, ah, h, hOut, rz);
}

void rowScalar(const IntGruCell& p, const int32_t* ax, const int32_t* ah, const int8_t* h, int8_t* hOut, int32_t* rz) {
  rowBody(p, ax, ah, h, hOut, rz);
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

enum class CellPath { Scalar, Avx2Loop, Avx512 };

CellPath cellPath(const IntGruCell& p) {
  const Isa isa = activeIsa();
  const bool vector = pwlFitsVector(p.sigmoid) && pwlFitsVector(p.tanh);
  if (isa == Isa::Avx512 && vector) return CellPath::Avx512;
  if (isa >= Isa::Avx2) return CellPath::Avx2Loop;
  return CellPath::Scalar;
}

}  // namespace

const char* intGruCellProblem(const IntGruCell& p) {
  if (p.hidden < 1) return "hidden size must be positive";
  return cellProblem(3 * p.hidden, p.shiftIh, p.shiftHh, p.outShift, p.sigmoid, p.tanh);
}

const char* intGruPathName(const IntGruCell& p) {
  switch (cellPath(p)) {
    case CellPath::Avx512: return "avx512";
    case CellPath::Avx2Loop: return "avx2-loop";
    default: return "scalar";
  }
}

void intGruCellStep(const IntGruCell& p, int64_t batch, const int32_t* accX, const int32_t* accH, const int8_t* h,
                    int8_t* hOut) {
  const int64_t H = p.hidden, rows = 3 * H;
  const CellPath path = cellPath(p);
  PaddedPwl sig{}, tnh{};
  if (path == CellPath::Avx512) {
    sig = paddedPwl(p.sigmoid);
    tnh = paddedPwl(p.tanh);
  }
  // About 40 operations per gate row (two 64-bit requantizations, the PWL) in scalar terms.
  parallelFor(batch, 40.0 * static_cast<double>(batch * rows), [&](int64_t begin, int64_t end) {
    std::vector<int32_t> rz(path == CellPath::Avx512 ? 0 : static_cast<size_t>(2 * H));
    for (int64_t n = begin; n < end; n++) {
      const int32_t* ax = accX + n * rows;
      const int32_t* ah = accH + n * rows;
      if (path == CellPath::Avx512) rowAvx512(p, sig, tnh, ax, ah, h + n * H, hOut + n * H);
      else if (path == CellPath::Avx2Loop) rowAvx2(p, ax, ah, h + n * H, hOut + n * H, rz.data());
      else rowScalar(p, ax, ah, h + n * H, hOut + n * H, rz.data());
    }
  });
}

void intGruSequence(const IntGruCell& p, int64_t steps, int64_t batch, int64_t input, const int8_t* x,
                    const int8_t* packedIh, const int32_t* rowSumsIh, const int8_t* packedHh, const int32_t* rowSumsHh,
                    const int8_t* h0, int8_t* out) {
  const int64_t H = p.hidden, rows = 3 * H;
  // The input projection of several steps per GEMM (it does not depend on h), at most about 1 MB of
  // accumulators at a time; buffers reused by the calling thread.
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
    intGruCellStep(p, batch, accX.data() + inChunk * batch * rows, accH.data(), hPrev, out + t * batch * H);
  }
}

}  // namespace lowbit
