// Reductions over any axes, argmax, gather / scatterAdd, strided copies, casts and the
// quantization-estimator forwards (see tensorops.h).
#include "tensorops.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu.h"
#include "threadpool.h"

namespace lowbit {

namespace {

// Sum of n floats in float64.
LOWBIT_TARGET_AVX512 double rowSumAvx512(const float* x, int64_t n) {
  __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd(), a2 = _mm512_setzero_pd(), a3 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
    a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)));
    a2 = _mm512_add_pd(a2, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16)));
    a3 = _mm512_add_pd(a3, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24)));
  }
  for (; i + 8 <= n; i += 8) a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __mmask8 m = static_cast<__mmask8>((1u << (n - i)) - 1);
    a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x + i)));
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_add_pd(a0, a1), _mm512_add_pd(a2, a3)));
}

double rowSumScalar(const float* x, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; j++) s[j] += x[i + j];
  }
  for (; i < n; i++) s[0] += x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// acc (n, float64) += x (n)
LOWBIT_TARGET_AVX512 void addRowAvx512(double* acc, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm512_storeu_pd(acc + i, _mm512_add_pd(_mm512_loadu_pd(acc + i), _mm512_cvtps_pd(_mm256_loadu_ps(x + i))));
  }
  for (; i < n; i++) acc[i] += x[i];
}

void addRowScalar(double* acc, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) acc[i] += x[i];
}

inline float maxNan(float acc, float v) { return v > acc || v != v ? v : acc; }

float rowMax(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  bool nan = false;
  for (int64_t i = 0; i < n; i++) {
    nan |= x[i] != x[i];
    m = x[i] > m ? x[i] : m;
  }
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

// Visits the outer groups [0, n-1) of the view: visit(src offset, out offset) per combination.
template <class Visit>
void forEachOuter(const int64_t* groups, const bool* reduced, int n, Visit&& visit) {
  const int outerGroups = n - 1;
  int64_t outStride[16];
  int64_t s = reduced[n - 1] ? 1 : groups[n - 1];
  for (int gi = outerGroups - 1; gi >= 0; gi--) {
    outStride[gi] = reduced[gi] ? 0 : s;
    if (!reduced[gi]) s *= groups[gi];
  }
  int64_t total = 1;
  for (int gi = 0; gi < outerGroups; gi++) total *= groups[gi];
  int64_t idx[16] = {0};
  int64_t outOff = 0;
  const int64_t L = groups[n - 1];
  for (int64_t o = 0; o < total; o++) {
    visit(o * L, outOff);
    for (int gi = outerGroups - 1; gi >= 0; gi--) {
      outOff += outStride[gi];
      if (++idx[gi] < groups[gi]) break;
      outOff -= outStride[gi] * groups[gi];
      idx[gi] = 0;
    }
  }
}

int64_t keptCount(const int64_t* groups, const bool* reduced, int n) {
  int64_t c = 1;
  for (int gi = 0; gi < n; gi++) c *= reduced[gi] ? 1 : groups[gi];
  return c;
}

}  // namespace

void reduceSum(const float* x, float* y, const int64_t* groups, const bool* reduced, int n) {
  if (n == 0) {
    y[0] = x[0];
    return;
  }
  const bool avx512 = activeIsa() == Isa::Avx512;
  const int64_t L = groups[n - 1];
  const int64_t count = keptCount(groups, reduced, n);
  std::vector<double> acc(static_cast<size_t>(count), 0.0);
  if (reduced[n - 1]) {
    forEachOuter(groups, reduced, n, [&](int64_t src, int64_t out) {
      acc[out] += avx512 ? rowSumAvx512(x + src, L) : rowSumScalar(x + src, L);
    });
  } else {
    forEachOuter(groups, reduced, n, [&](int64_t src, int64_t out) {
      if (avx512) {
        addRowAvx512(acc.data() + out, x + src, L);
      } else {
        addRowScalar(acc.data() + out, x + src, L);
      }
    });
  }
  for (int64_t i = 0; i < count; i++) y[i] = static_cast<float>(acc[i]);
}

void reduceMax(const float* x, float* y, const int64_t* groups, const bool* reduced, int n) {
  if (n == 0) {
    y[0] = x[0];
    return;
  }
  const int64_t L = groups[n - 1];
  const int64_t count = keptCount(groups, reduced, n);
  for (int64_t i = 0; i < count; i++) y[i] = -std::numeric_limits<float>::infinity();
  if (reduced[n - 1]) {
    forEachOuter(groups, reduced, n, [&](int64_t src, int64_t out) { y[out] = maxNan(y[out], rowMax(x + src, L)); });
  } else {
    forEachOuter(groups, reduced, n, [&](int64_t src, int64_t out) {
      float* o = y + out;
      const float* v = x + src;
      for (int64_t i = 0; i < L; i++) o[i] = v[i] > o[i] || v[i] != v[i] ? v[i] : o[i];
    });
  }
}

void argmaxAxis(const float* x, int32_t* y, int64_t outer, int64_t len, int64_t inner) {
  for (int64_t o = 0; o < outer; o++) {
    const float* base = x + o * len * inner;
    int32_t* out = y + o * inner;
    if (inner == 1) {
      int32_t best = 0;
      float bestV = base[0];
      for (int64_t k = 1; k < len; k++) {
        if (base[k] > bestV) bestV = base[k], best = static_cast<int32_t>(k);
      }
      out[0] = best;
      continue;
    }
    std::vector<float> bestV(base, base + inner);
    for (int64_t i = 0; i < inner; i++) out[i] = 0;
    for (int64_t k = 1; k < len; k++) {
      const float* row = base + k * inner;
      for (int64_t i = 0; i < inner; i++) {
        if (row[i] > bestV[i]) bestV[i] = row[i], out[i] = static_cast<int32_t>(k);
      }
    }
  }
}

bool gatherAxis(const uint32_t* x, const int32_t* idx, uint32_t* y, int64_t outer, int64_t len, int64_t inner,
                int64_t m) {
  for (int64_t j = 0; j < m; j++) {
    if (idx[j] < 0 || idx[j] >= len) return false;
  }
  for (int64_t o = 0; o < outer; o++) {
    for (int64_t j = 0; j < m; j++) {
      const uint32_t* src = x + (o * len + idx[j]) * inner;
      uint32_t* dst = y + (o * m + j) * inner;
      if (inner == 1) {
        *dst = *src;
      } else {
        std::memcpy(dst, src, static_cast<size_t>(inner) * 4);
      }
    }
  }
  return true;
}

bool scatterAddAxis(const float* u, const int32_t* idx, float* y, int64_t outer, int64_t len, int64_t inner,
                    int64_t m) {
  for (int64_t j = 0; j < m; j++) {
    if (idx[j] < 0 || idx[j] >= len) return false;
  }
  for (int64_t o = 0; o < outer; o++) {
    for (int64_t j = 0; j < m; j++) {
      const float* src = u + (o * m + j) * inner;
      float* dst = y + (o * len + idx[j]) * inner;
      for (int64_t i = 0; i < inner; i++) dst[i] += src[i];
    }
  }
  return true;
}

void copyStrided(const uint32_t* src, int64_t srcOff, const int64_t* srcStrides, uint32_t* dst, int64_t dstOff,
                 const int64_t* dstStrides, const int64_t* shape, int rank) {
  if (rank == 0) {
    dst[dstOff] = src[srcOff];
    return;
  }
  for (int d = 0; d < rank; d++) {
    if (shape[d] <= 0) return;
  }
  const int64_t L = shape[rank - 1], ss = srcStrides[rank - 1], ds = dstStrides[rank - 1];
  int64_t total = 1;
  for (int d = 0; d < rank - 1; d++) total *= shape[d];
  int64_t idx[8] = {0};
  int64_t so = srcOff, dOff = dstOff;
  for (int64_t o = 0; o < total; o++) {
    const uint32_t* s = src + so;
    uint32_t* t = dst + dOff;
    if (ss == 1 && ds == 1) {
      std::memcpy(t, s, static_cast<size_t>(L) * 4);
    } else if (ss == 0 && ds == 1) {
      const uint32_t v = *s;
      for (int64_t i = 0; i < L; i++) t[i] = v;
    } else {
      for (int64_t i = 0; i < L; i++) t[i * ds] = s[i * ss];
    }
    for (int d = rank - 2; d >= 0; d--) {
      so += srcStrides[d];
      dOff += dstStrides[d];
      if (++idx[d] < shape[d]) break;
      so -= srcStrides[d] * shape[d];
      dOff -= dstStrides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

void fill32(uint32_t* dst, uint32_t value, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] = value;
}

void castF32ToI32(const float* x, int32_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const float v = x[i];
    if (v > -2147483648.5f && v < 2147483648.f) {
      y[i] = static_cast<int32_t>(v);  // truncates toward zero
    } else if (!std::isfinite(v)) {
      y[i] = 0;
    } else {  // ToInt32: integer value modulo 2^32 (v is an integer here: |v| >= 2^31)
      const double m = std::fmod(static_cast<double>(v), 4294967296.0);
      const double u = m < 0 ? m + 4294967296.0 : m;
      y[i] = static_cast<int32_t>(static_cast<uint32_t>(u));
    }
  }
}

void castI32ToF32(const int32_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = static_cast<float>(x[i]);
}

// Round half to even in double without a libm call, for |u| <= 2^50: adding and subtracting
// 1.5·2^52 leaves the nearest integer (ties to even). Callers clamp u to ±2^50 first, which
// changes nothing after the later clamp to [qmin, qmax] (|q| <= 2^16); NaN passes through.
static inline double roundHalfEvenDouble(double u) {
  const double magic = 6755399441055744.0;
  return (u + magic) - magic;
}

static inline double clampForRounding(double u) {
  const double bound = 1125899906842624.0;  // 2^50
  return u < -bound ? -bound : u > bound ? bound : u;
}

// Calls body(begin, end, si, zi) over runs of elements whose scale index si and zero-point index
// zi are constant. (mid, inner) layouts come from broadcasting against one shape, so the smaller
// inner divides the larger: runs of min(sInner, zInner) elements (per-tensor params: whole range).
template <typename Body>
static void forEachParamRun(int64_t n, int64_t sMid, int64_t sInner, int64_t zMid, int64_t zInner, double flopsPerElement,
                            Body body) {
  if (sMid == 1) sInner = n > 0 ? n : 1;
  if (zMid == 1) zInner = n > 0 ? n : 1;
  const int64_t run = sInner < zInner ? sInner : zInner;
  parallelFor(n, static_cast<double>(n) * flopsPerElement, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1;) {
      const int64_t end = std::min(i1, (i / run + 1) * run);
      body(i, end, (i / sInner) % sMid, (i / zInner) % zMid);
      i = end;
    }
  });
}

// One run of elements sharing (scale, zp). Plain double arithmetic, compiled without FMA
// contraction, so that every step rounds like the reference's JavaScript numbers. The AVX-512
// versions below compute the same values 8 at a time (see fqQuotient and fqRound for the equivalence).
static void fakeQuantizeRunScalar(const float* x, float* y, int64_t n, double scale, double zp, double qmin, double qmax) {
  for (int64_t i = 0; i < n; i++) {
    double q = roundHalfEvenDouble(clampForRounding(static_cast<double>(x[i]) / scale)) + zp;
    q = q < qmin ? qmin : q > qmax ? qmax : q;  // NaN compares false both times and stays NaN
    y[i] = static_cast<float>((q - zp) * scale);
  }
}

// u = x/s, r = round(u) + z, q = clamp(r), inside = (q == r); one loop per part.
static void fakeQuantizeGradRunScalar(const float* g, const float* x, float* y, int64_t n, double scale, double zp,
                                      double qmin, double qmax, int part) {
  if (part == 0) {
    for (int64_t i = 0; i < n; i++) y[i] = g[i];
  } else if (part == 1) {
    for (int64_t i = 0; i < n; i++) {
      const double r = roundHalfEvenDouble(clampForRounding(static_cast<double>(x[i]) / scale)) + zp;
      // Branch-free select (random data mispredicts a branch half the time): keep g's bits or +0.
      // NaN compares false, so it counts as outside, as in the reference.
      const uint32_t inside = static_cast<uint32_t>(r >= qmin) & static_cast<uint32_t>(r <= qmax);
      uint32_t bits;
      std::memcpy(&bits, g + i, sizeof bits);
      bits &= 0u - inside;
      std::memcpy(y + i, &bits, sizeof bits);
    }
  } else if (part == 2) {
    for (int64_t i = 0; i < n; i++) {
      const double u = static_cast<double>(x[i]) / scale;
      const double r = roundHalfEvenDouble(clampForRounding(u)) + zp;
      const double q = r < qmin ? qmin : r > qmax ? qmax : r;
      y[i] = static_cast<float>(static_cast<double>(g[i]) * (q == r ? r - (u + zp) : q - zp));
    }
  } else {
    for (int64_t i = 0; i < n; i++) {
      const double r = roundHalfEvenDouble(clampForRounding(static_cast<double>(x[i]) / scale)) + zp;
      const uint32_t inside = static_cast<uint32_t>(r >= qmin) & static_cast<uint32_t>(r <= qmax);
      const float outside = static_cast<float>(-static_cast<double>(g[i]) * scale);
      uint32_t bits;
      std::memcpy(&bits, &outside, sizeof bits);
      bits &= inside - 1u;
      std::memcpy(y + i, &bits, sizeof bits);
    }
  }
}

// Work per element the fake-quantization loops declare to parallelFor (flop-like units).
constexpr double kFqWorkPerElement = 8.0;

// The per-run constants of the AVX-512 loops, broadcast.
struct FqConsts {
  __m512d scale, zp, qmin, qmax;
  __m512d reciprocal;  // RN(1/s), for fqQuotient
};

LOWBIT_TARGET_AVX512 static inline FqConsts fqConsts(double scale, double zp, double qmin, double qmax) {
  return {_mm512_set1_pd(scale), _mm512_set1_pd(zp), _mm512_set1_pd(qmin), _mm512_set1_pd(qmax),
          _mm512_set1_pd(1.0 / scale)};
}

// Mask of the first k < 8 lanes (k = 8: all).
static inline __mmask8 laneMask(int64_t k) { return static_cast<__mmask8>(k >= 8 ? 0xFF : (1u << k) - 1); }

// u = x/s for 8 lanes without a division in the common case (VDIVPD is otherwise the bottleneck
// of these loops), equal to the correctly rounded float64 quotient of the scalar code:
// y = RN(1/s), q0 = RN(x·y), e = x − q0·s (one FMA), u = RN(q0 + e·y) (Markstein's correction).
// Why it is exact for float32 x and s (24-bit significands) in float64 (53 bits):
//  - q0 is within 1.5 ulp of x/s (y's relative error <= 2^-53, plus q0's own rounding);
//  - so x − q0·s is a multiple of ulp(q0)·ulp(s) below 1.5·ulp(q0)·|s|: at most 25 significant
//    bits, exact in float64, i.e. the FMA computes e exactly;
//  - q0 + e·y = x/s + e·(y − 1/s) = x/s + δ with |δ| <= 1.5·2^-53 ulp, rounded once by the FMA;
//  - x/s is never within 2^-25 ulp of a float64 midpoint m: x − m·s is a nonzero (m has 54
//    significant bits and an odd last one, which 24-bit x and s cannot produce) multiple of
//    ulp(m)·ulp(s)/2, so |x/s − m| >= ulp·2^-25 > |δ|; hence RN(x/s + δ) = RN(x/s).
// Lanes where x or s is not finite or s = 0 come out NaN (inf − inf, 0·inf) and are divided
// instead, as are NaN inputs. The one visible difference, −0/s giving +0, cannot reach any
// output: u enters only through round(u) + zp and u + zp, which are +0 for either zero.
LOWBIT_TARGET_AVX512 static inline __m512d fqQuotient(const FqConsts& c, __m256 xf) {
  const __m512d x = _mm512_cvtps_pd(xf);
  const __m512d q0 = _mm512_mul_pd(x, c.reciprocal);
  const __m512d u = _mm512_fmadd_pd(_mm512_fnmadd_pd(q0, c.scale, x), c.reciprocal, q0);
  const __mmask8 special = _mm512_cmp_pd_mask(u, u, _CMP_UNORD_Q);
  if (special == 0) return u;
  return _mm512_mask_div_pd(u, special, x, c.scale);
}

// r = round(u) + zp by the magic-number trick, lane by lane what the scalar code computes for
// |u| <= 2^50. The scalar code first clamps u to ±2^50; here, for |u| > 2^50, r comes out as some
// value beyond ±2^49 of the same sign (or ±inf; NaN stays NaN), which is just as far outside
// [qmin, qmax] (|qmin|, |qmax|, |zp| <= 2^40, see fqVectorOk): q, `inside` and every output
// depend on r only through those, so they are the same.
LOWBIT_TARGET_AVX512 static inline __m512d fqRound(const FqConsts& c, __m512d u) {
  const __m512d magic = _mm512_set1_pd(6755399441055744.0);
  return _mm512_add_pd(_mm512_sub_pd(_mm512_add_pd(u, magic), magic), c.zp);
}

// q = clamp(r, qmin, qmax) as `r < qmin ? qmin : r > qmax ? qmax : r` (qmin <= qmax; NaN stays).
LOWBIT_TARGET_AVX512 static inline __m512d fqClamp(const FqConsts& c, __m512d r) {
  return _mm512_min_pd(c.qmax, _mm512_max_pd(c.qmin, r));
}

// Lanes where qmin <= r <= qmax (false for NaN, as the scalar comparisons).
LOWBIT_TARGET_AVX512 static inline __mmask8 fqInside(const FqConsts& c, __m512d r) {
  return _mm512_cmp_pd_mask(r, c.qmin, _CMP_GE_OQ) & _mm512_cmp_pd_mask(r, c.qmax, _CMP_LE_OQ);
}

// Scale-gradient term of 8 lanes, rounded to float32: g·(q == r ? r − (u + zp) : q − zp); *inside
// gets the lanes where q == r, which for a non-NaN r is qmin <= r <= qmax (fqInside) and is false
// for NaN as fqInside is.
LOWBIT_TARGET_AVX512 static inline __m256 fqScaleTerm(const FqConsts& c, __m256 g, __m512d u, __mmask8* inside) {
  const __m512d r = fqRound(c, u);
  const __m512d q = fqClamp(c, r);
  const __mmask8 same = _mm512_cmp_pd_mask(q, r, _CMP_EQ_OQ);
  *inside = same;
  const __m512d factor = _mm512_mask_blend_pd(same, _mm512_sub_pd(q, c.zp), _mm512_sub_pd(r, _mm512_add_pd(u, c.zp)));
  return _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(g), factor));
}

// Zero-point term outside the range, rounded to float32: −g·s (as (−g)·s, so g = +0 gives −0).
LOWBIT_TARGET_AVX512 static inline __m256 fqZeroPointTerm(const FqConsts& c, __m256 g) {
  return _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_xor_pd(_mm512_cvtps_pd(g), _mm512_set1_pd(-0.0)), c.scale));
}

LOWBIT_TARGET_AVX512 static void fakeQuantizeRunAvx512(const float* x, float* y, int64_t n, double scale, double zp,
                                                       double qmin, double qmax) {
  const FqConsts c = fqConsts(scale, zp, qmin, qmax);
  if (zp == std::floor(zp)) {
    // Integral zp: (q − zp) = clamp(round(u), qmin − zp, qmax − zp), computed on t = u + M
    // (M = 1.5·2^52, so t = M + round(u) exactly for |u| <= 2^51) against bounds M + qmin − zp and
    // M + qmax − zp (exact integers near M): (clamp(t) − M)·s. Beyond ±2^51, t lands beyond the same
    // bound as u does (or is ±inf / NaN, which clamp as in the scalar code), so q is the same.
    const __m512d magic = _mm512_set1_pd(6755399441055744.0);
    const __m512d lo = _mm512_set1_pd(6755399441055744.0 + (qmin - zp)), hi = _mm512_set1_pd(6755399441055744.0 + (qmax - zp));
    for (int64_t i = 0; i < n; i += 8) {
      const __mmask8 m = laneMask(n - i);
      const __m512d t = _mm512_add_pd(fqQuotient(c, _mm256_maskz_loadu_ps(m, x + i)), magic);
      const __m512d q = _mm512_sub_pd(_mm512_min_pd(hi, _mm512_max_pd(lo, t)), magic);
      _mm256_mask_storeu_ps(y + i, m, _mm512_cvtpd_ps(_mm512_mul_pd(q, c.scale)));
    }
    return;
  }
  for (int64_t i = 0; i < n; i += 8) {
    const __mmask8 m = laneMask(n - i);
    const __m512d q = fqClamp(c, fqRound(c, fqQuotient(c, _mm256_maskz_loadu_ps(m, x + i))));
    _mm256_mask_storeu_ps(y + i, m, _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_sub_pd(q, c.zp), c.scale)));
  }
}

LOWBIT_TARGET_AVX512 static void fakeQuantizeGradRunAvx512(const float* g, const float* x, float* y, int64_t n, double scale,
                                                           double zp, double qmin, double qmax, int part) {
  if (part == 0) {
    std::memcpy(y, g, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  const FqConsts c = fqConsts(scale, zp, qmin, qmax);
  for (int64_t i = 0; i < n; i += 8) {
    const __mmask8 m = laneMask(n - i);
    const __m256 gv = _mm256_maskz_loadu_ps(m, g + i);
    const __m512d u = fqQuotient(c, _mm256_maskz_loadu_ps(m, x + i));
    __m256 out;
    if (part == 1) {
      out = _mm256_maskz_mov_ps(fqInside(c, fqRound(c, u)), gv);  // g's bits inside, +0 outside
    } else if (part == 2) {
      __mmask8 inside;
      out = fqScaleTerm(c, gv, u, &inside);
    } else {
      out = _mm256_maskz_mov_ps(static_cast<__mmask8>(~fqInside(c, fqRound(c, u))), fqZeroPointTerm(c, gv));
    }
    _mm256_mask_storeu_ps(y + i, m, out);
  }
}

// The AVX-512 loops assume qmin <= qmax (their clamp is min(qmax, max(qmin, r))) and bounded
// qmin, qmax, zp (see fqRound); other attributes take the scalar loops.
static bool fqVectorOk(double zp, double qmin, double qmax) {
  const double bound = 1099511627776.0;  // 2^40
  return activeIsa() == Isa::Avx512 && qmin <= qmax && std::fabs(qmin) <= bound && std::fabs(qmax) <= bound && std::fabs(zp) <= bound;
}

static void fakeQuantizeRun(const float* x, float* y, int64_t n, double scale, double zp, double qmin, double qmax) {
  if (fqVectorOk(zp, qmin, qmax)) fakeQuantizeRunAvx512(x, y, n, scale, zp, qmin, qmax);
  else fakeQuantizeRunScalar(x, y, n, scale, zp, qmin, qmax);
}

static void fakeQuantizeGradRun(const float* g, const float* x, float* y, int64_t n, double scale, double zp, double qmin,
                                double qmax, int part) {
  if (fqVectorOk(zp, qmin, qmax)) fakeQuantizeGradRunAvx512(g, x, y, n, scale, zp, qmin, qmax, part);
  else fakeQuantizeGradRunScalar(g, x, y, n, scale, zp, qmin, qmax, part);
}

void fakeQuantize(const float* x, const float* s, int64_t sMid, int64_t sInner, const float* z, int64_t zMid,
                  int64_t zInner, float* y, int64_t n, double qmin, double qmax) {
  forEachParamRun(n, sMid, sInner, zMid, zInner, kFqWorkPerElement, [=](int64_t i0, int64_t i1, int64_t si, int64_t zi) {
    fakeQuantizeRun(x + i0, y + i0, i1 - i0, s[si], z[zi], qmin, qmax);
  });
}

void fakeQuantizeGrad(const float* g, const float* x, const float* s, int64_t sMid, int64_t sInner, const float* z,
                      int64_t zMid, int64_t zInner, float* y, int64_t n, double qmin, double qmax, int part) {
  forEachParamRun(n, sMid, sInner, zMid, zInner, kFqWorkPerElement, [=](int64_t i0, int64_t i1, int64_t si, int64_t zi) {
    fakeQuantizeGradRun(g + i0, x + i0, y + i0, i1 - i0, s[si], z[zi], qmin, qmax, part);
  });
}

// Sum (float64) of the float32 terms of part 2 (scale) or 3 (zero point) over one run sharing
// (scale, zp); with gx, also the x part (0 plain STE, 1 clipped) of the same elements into gx.
static double fakeQuantizeGradSumRunScalar(const float* g, const float* x, int64_t n, double scale, double zp, double qmin,
                                           double qmax, int part, float* gx, int xPart) {
  double sum = 0;
  for (int64_t i = 0; i < n; i++) {
    const double u = static_cast<double>(x[i]) / scale;
    const double r = roundHalfEvenDouble(clampForRounding(u)) + zp;
    const double q = r < qmin ? qmin : r > qmax ? qmax : r;
    const bool inside = r >= qmin && r <= qmax;
    const float term = part == 2 ? static_cast<float>(static_cast<double>(g[i]) * (q == r ? r - (u + zp) : q - zp))
                                 : inside ? 0.0f : static_cast<float>(-static_cast<double>(g[i]) * scale);
    sum += term;
    if (gx) gx[i] = xPart == 0 || inside ? g[i] : 0.0f;
  }
  return sum;
}

// 8 lanes of fakeQuantizeGradSumRunAvx512: returns the float64 terms (0 in masked-off lanes) and
// stores the x part when gx is given.
LOWBIT_TARGET_AVX512 static inline __m512d gradSumLanes(const FqConsts& c, const float* g, const float* x, __mmask8 m, int part,
                                                       float* gx, int xPart) {
  const __m256 gv = _mm256_maskz_loadu_ps(m, g);
  const __m512d u = fqQuotient(c, _mm256_maskz_loadu_ps(m, x));
  __m256 term;
  __mmask8 inside;
  if (part == 2) {
    term = fqScaleTerm(c, gv, u, &inside);
  } else {
    inside = fqInside(c, fqRound(c, u));
    term = _mm256_maskz_mov_ps(static_cast<__mmask8>(~inside), fqZeroPointTerm(c, gv));
  }
  if (gx) _mm256_mask_storeu_ps(gx, m, xPart == 0 ? gv : _mm256_maskz_mov_ps(inside, gv));
  return _mm512_maskz_cvtps_pd(m, term);
}

LOWBIT_TARGET_AVX512 static double fakeQuantizeGradSumRunAvx512(const float* g, const float* x, int64_t n, double scale,
                                                                double zp, double qmin, double qmax, int part, float* gx,
                                                                int xPart) {
  const FqConsts c = fqConsts(scale, zp, qmin, qmax);
  __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm512_add_pd(acc0, gradSumLanes(c, g + i, x + i, 0xFF, part, gx ? gx + i : nullptr, xPart));
    acc1 = _mm512_add_pd(acc1, gradSumLanes(c, g + i + 8, x + i + 8, 0xFF, part, gx ? gx + i + 8 : nullptr, xPart));
  }
  for (; i < n; i += 8) acc0 = _mm512_add_pd(acc0, gradSumLanes(c, g + i, x + i, laneMask(n - i), part, gx ? gx + i : nullptr, xPart));
  return _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
}

// Elements per partial sum of fakeQuantizeGradSum: fixed, so the summation order (and so the
// float result) does not depend on the number of threads.
constexpr int64_t kGradSumChunk = 4096;

// fakeQuantizeGradSum, and with gx the x part (xPart 0 / 1) written in the same pass.
static void gradSumDriver(const float* g, const float* x, const float* s, int64_t sMid, int64_t sInner, const float* z,
                          int64_t zMid, int64_t zInner, float* y, int64_t n, double qmin, double qmax, int part, float* gx,
                          int xPart) {
  // Runs of constant (scale, zero point) as in forEachParamRun; the target operand (scale for
  // part 2, zero point for part 3) is constant over a run because the smaller inner divides the larger.
  const int64_t sIn = sMid == 1 ? std::max<int64_t>(n, 1) : sInner;
  const int64_t zIn = zMid == 1 ? std::max<int64_t>(n, 1) : zInner;
  const int64_t run = std::min(sIn, zIn);
  const int64_t tMid = part == 2 ? sMid : zMid;
  const int64_t tIn = part == 2 ? sIn : zIn;
  const int64_t chunks = (n + kGradSumChunk - 1) / kGradSumChunk;
  // One float64 partial per (chunk, target element); with many target elements (fine-grained
  // parameters) a single sequential pass instead, so the partials never outgrow x.
  const bool chunked = chunks * tMid <= n + kGradSumChunk;
  const int64_t slots = chunked ? chunks : 1;
  std::vector<double> partial(static_cast<size_t>(slots * tMid), 0.0);
  auto sumRange = [&](int64_t i0, int64_t i1, double* acc) {
    for (int64_t i = i0; i < i1;) {
      const int64_t end = std::min({i1, (i / run + 1) * run, i + kGradSumChunk});
      const double scale = s[(i / sIn) % sMid], zp = z[(i / zIn) % zMid];
      float* gxRun = gx ? gx + i : nullptr;
      acc[(i / tIn) % tMid] += fqVectorOk(zp, qmin, qmax) ? fakeQuantizeGradSumRunAvx512(g + i, x + i, end - i, scale, zp, qmin, qmax, part, gxRun, xPart)
                                      : fakeQuantizeGradSumRunScalar(g + i, x + i, end - i, scale, zp, qmin, qmax, part, gxRun, xPart);
      i = end;
    }
  };
  if (chunked) {
    parallelFor(chunks, static_cast<double>(n) * kFqWorkPerElement, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; c++) sumRange(c * kGradSumChunk, std::min(n, (c + 1) * kGradSumChunk), partial.data() + c * tMid);
    });
  } else {
    sumRange(0, n, partial.data());
  }
  for (int64_t p = 0; p < tMid; p++) {
    double total = 0;
    for (int64_t c = 0; c < slots; c++) total += partial[static_cast<size_t>(c * tMid + p)];
    y[p] = static_cast<float>(total);
  }
}

void fakeQuantizeGradSum(const float* g, const float* x, const float* s, int64_t sMid, int64_t sInner, const float* z,
                         int64_t zMid, int64_t zInner, float* y, int64_t n, double qmin, double qmax, int part) {
  gradSumDriver(g, x, s, sMid, sInner, z, zMid, zInner, y, n, qmin, qmax, part, nullptr, 0);
}

void fakeQuantizeGradXScale(const float* g, const float* x, const float* s, int64_t sMid, int64_t sInner, const float* z,
                            int64_t zMid, int64_t zInner, float* gx, float* gs, int64_t n, double qmin, double qmax, int xPart) {
  gradSumDriver(g, x, s, sMid, sInner, z, zMid, zInner, gs, n, qmin, qmax, 2, gx, xPart);
}

void roundHalfEven(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = std::nearbyint(x[i]);
}

void signPlusMinus(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] >= 0.f ? 1.f : -1.f;
}

}  // namespace lowbit
