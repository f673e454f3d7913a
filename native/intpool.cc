// The IntModel average pooling op (intpool.h): a scalar reference path and AVX-512 / AVX2 kernels.
//
// Why the vector kernels are exact. They run only when the op passes vectorExact(): the divisor
// d = kh kw 2^F is below 2^31 and taps (2^31 + |z 2^F|) < 2^50 (taps = kh kw). A window sum
// S = sum of q over the in-range cells then has |S| < taps 2^31 < 2^50: exact in int32 lanes for
// u8 / s8 inputs (taps 255 < 2^31) and in double lanes for int32 inputs. With m in-range cells,
// t = S - m z 2^F is exact in doubles (every term below 2^50). The quotient guess
// g = floor(t * (1 / d)) is within one of floor(t / d): |t / d| < 2^50 and the two roundings
// (of 1 / d and of the product) move it by under 2^50 2^-52 < 1. The remainder r = t - g d is then
// exact (|g d| < 2^51) and one step down (r < 0) or up (r >= d) makes g = floor(t / d),
// 0 <= r < d. Rounding half to even: g + 1 when 2 r > d, or 2 r = d and g is odd. A block whose
// quotient reaches |g| >= 2^31 is redone by the scalar code; otherwise the int32 add of z wraps
// exactly like the scalar static_cast<int32_t>(z + g).
#include "intpool.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>

#include "cpu.h"
#include "intload.h"

namespace lowbit {

namespace {

// round(a / b), b > 0, half to even (ops.ts divRoundHalfEven)
inline int64_t divRoundHalfEven(int64_t a, int64_t b) {
  int64_t q = a / b, r = a % b;
  if (r < 0) {
    q -= 1;
    r += b;
  }
  const int64_t twice = 2 * r;
  if (twice > b) return q + 1;
  if (twice < b) return q;
  return (q & 1) == 0 ? q : q + 1;
}

// The window of output (oy, ox) clipped to the input: rows [y0, y1), columns [x0, x1).
struct Window {
  int64_t y0, y1, x0, x1;
};

inline Window windowAt(const IntOp& op, int64_t oy, int64_t ox) {
  const int64_t ys = oy * op.sh - op.ph, xs = ox * op.sw - op.pw;
  return {std::max<int64_t>(ys, 0), std::min<int64_t>(ys + op.kh, op.H), std::max<int64_t>(xs, 0), std::min<int64_t>(xs + op.kw, op.W)};
}

// The scalar path: channels [c0, c1) of one output position (the reference of the vector kernels).
template <IType T>
void cellsScalar(const IntOp& op, const void* x, int64_t ib, const Window& w, int64_t c0, int64_t c1, int32_t* o) {
  const int64_t C = op.C, W = op.W;
  const int64_t inZero = static_cast<int64_t>(op.zero) << op.fracBits;
  const int64_t divisor = (op.kh * op.kw) << op.fracBits;
  for (int64_t c = c0; c < c1; c++) {
    int64_t sum = 0;
    for (int64_t iy = w.y0; iy < w.y1; iy++) {
      for (int64_t ix = w.x0; ix < w.x1; ix++) sum += loadOne<T>(x, ib + (iy * W + ix) * C + c) - inZero;
    }
    o[c] = static_cast<int32_t>(op.zero + divRoundHalfEven(sum, divisor));
  }
}

template <IType T>
void poolScalar(const IntOp& op, const void* x, int64_t n, int32_t* out) {
  const int64_t inPer = op.H * op.W * op.C, outPer = op.OH * op.OW * op.C;
  for (int64_t smp = 0; smp < n; smp++) {
    for (int64_t oy = 0; oy < op.OH; oy++) {
      for (int64_t ox = 0; ox < op.OW; ox++) {
        cellsScalar<T>(op, x, smp * inPer, windowAt(op, oy, ox), 0, op.C, out + smp * outPer + (oy * op.OW + ox) * op.C);
      }
    }
  }
}

bool vectorExact(const IntOp& op) {
  const int64_t taps = op.kh * op.kw;
  if (op.fracBits < 0 || op.fracBits > 24 || taps <= 0 || taps >= (int64_t{1} << 20)) return false;
  if ((taps << op.fracBits) >= (int64_t{1} << 31)) return false;
  const int64_t inZero = std::llabs(static_cast<int64_t>(op.zero)) << op.fracBits;  // < 2^55
  return static_cast<double>(taps) * (2147483648.0 + static_cast<double>(inZero)) < 1125899906842624.0;  // 2^50
}

// ------------------------------------------------------------------------------------ AVX-512
// t = s - off divided by d, rounded half to even (see the top); 8 int32 results + z. False when a
// quotient is too large for the int32 lanes (the caller redoes the block in scalar code).
LOWBIT_TARGET_AVX512 inline bool finish512(__m512d s, __m512d off, __m512d d, __m512d inv, __m256i z, __m256i* res) {
  const __m512d one = _mm512_set1_pd(1.0);
  const __m512d t = _mm512_sub_pd(s, off);
  __m512d q = _mm512_roundscale_pd(_mm512_mul_pd(t, inv), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512d r = _mm512_sub_pd(t, _mm512_mul_pd(q, d));
  const __mmask8 low = _mm512_cmp_pd_mask(r, _mm512_setzero_pd(), _CMP_LT_OQ);
  q = _mm512_mask_sub_pd(q, low, q, one);
  r = _mm512_mask_add_pd(r, low, r, d);
  const __mmask8 high = _mm512_cmp_pd_mask(r, d, _CMP_GE_OQ);
  q = _mm512_mask_add_pd(q, high, q, one);
  r = _mm512_mask_sub_pd(r, high, r, d);
  const __m512d twice = _mm512_add_pd(r, r);
  const __m512d half = _mm512_mul_pd(q, _mm512_set1_pd(0.5));
  const __mmask8 odd = _mm512_cmp_pd_mask(_mm512_roundscale_pd(half, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), half, _CMP_NEQ_OQ);
  const __mmask8 up = _mm512_cmp_pd_mask(twice, d, _CMP_GT_OQ) | (_mm512_cmp_pd_mask(twice, d, _CMP_EQ_OQ) & odd);
  q = _mm512_mask_add_pd(q, up, q, one);
  const __m512d lim = _mm512_set1_pd(2147483648.0);
  const __m512d absq = _mm512_abs_pd(q);
  if (_mm512_cmp_pd_mask(absq, lim, _CMP_LT_OQ) != 0xFF) return false;
  *res = _mm256_add_epi32(_mm512_cvtpd_epi32(q), z);
  return true;
}

template <IType T>
LOWBIT_TARGET_AVX512 void pool512(const IntOp& op, const void* x, int64_t n, int32_t* out) {
  const int64_t C = op.C, W = op.W, inPer = op.H * op.W * C, outPer = op.OH * op.OW * C;
  const int64_t full = C - C % 16;
  const double inZero = static_cast<double>(static_cast<int64_t>(op.zero) << op.fracBits);
  const double dd = static_cast<double>((op.kh * op.kw) << op.fracBits);
  const __m512d d = _mm512_set1_pd(dd), inv = _mm512_set1_pd(1.0 / dd);
  const __m256i z = _mm256_set1_epi32(op.zero);
  for (int64_t smp = 0; smp < n; smp++) {
    const int64_t ib = smp * inPer;
    for (int64_t oy = 0; oy < op.OH; oy++) {
      for (int64_t ox = 0; ox < op.OW; ox++) {
        const Window w = windowAt(op, oy, ox);
        int32_t* o = out + smp * outPer + (oy * op.OW + ox) * C;
        const __m512d off = _mm512_set1_pd(static_cast<double>((w.y1 - w.y0) * (w.x1 - w.x0)) * inZero);
        for (int64_t c = 0; c < full; c += 16) {
          __m512d s0, s1;
          if constexpr (T == IType::I32) {
            s0 = _mm512_setzero_pd();
            s1 = _mm512_setzero_pd();
            const int32_t* p = static_cast<const int32_t*>(x) + ib + c;
            for (int64_t iy = w.y0; iy < w.y1; iy++) {
              for (int64_t ix = w.x0; ix < w.x1; ix++) {
                const int32_t* q = p + (iy * W + ix) * C;
                s0 = _mm512_add_pd(s0, _mm512_cvtepi32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q))));
                s1 = _mm512_add_pd(s1, _mm512_cvtepi32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 8))));
              }
            }
          } else {
            __m512i acc = _mm512_setzero_si512();
            const uint8_t* p = static_cast<const uint8_t*>(x) + ib + c;
            for (int64_t iy = w.y0; iy < w.y1; iy++) {
              for (int64_t ix = w.x0; ix < w.x1; ix++) {
                const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (iy * W + ix) * C));
                acc = _mm512_add_epi32(acc, T == IType::U8 ? _mm512_cvtepu8_epi32(v) : _mm512_cvtepi8_epi32(v));
              }
            }
            s0 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(acc));
            s1 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(acc, 1));
          }
          __m256i r0, r1;
          if (finish512(s0, off, d, inv, z, &r0) && finish512(s1, off, d, inv, z, &r1)) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + c), r0);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + c + 8), r1);
          } else {
            cellsScalar<T>(op, x, ib, w, c, c + 16, o);
          }
        }
        if (full < C) cellsScalar<T>(op, x, ib, w, full, C, o);
      }
    }
  }
}

// ------------------------------------------------------------------------------------ AVX2
LOWBIT_TARGET_AVX2 inline bool finish256(__m256d s, __m256d off, __m256d d, __m256d inv, __m128i z, __m128i* res) {
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d t = _mm256_sub_pd(s, off);
  __m256d q = _mm256_floor_pd(_mm256_mul_pd(t, inv));
  __m256d r = _mm256_sub_pd(t, _mm256_mul_pd(q, d));
  const __m256d low = _mm256_cmp_pd(r, _mm256_setzero_pd(), _CMP_LT_OQ);
  q = _mm256_sub_pd(q, _mm256_and_pd(low, one));
  r = _mm256_add_pd(r, _mm256_and_pd(low, d));
  const __m256d high = _mm256_cmp_pd(r, d, _CMP_GE_OQ);
  q = _mm256_add_pd(q, _mm256_and_pd(high, one));
  r = _mm256_sub_pd(r, _mm256_and_pd(high, d));
  const __m256d twice = _mm256_add_pd(r, r);
  const __m256d half = _mm256_mul_pd(q, _mm256_set1_pd(0.5));
  const __m256d odd = _mm256_cmp_pd(_mm256_floor_pd(half), half, _CMP_NEQ_OQ);
  const __m256d up = _mm256_or_pd(_mm256_cmp_pd(twice, d, _CMP_GT_OQ), _mm256_and_pd(_mm256_cmp_pd(twice, d, _CMP_EQ_OQ), odd));
  q = _mm256_add_pd(q, _mm256_and_pd(up, one));
  const __m256d absq = _mm256_andnot_pd(_mm256_set1_pd(-0.0), q);
  if (_mm256_movemask_pd(_mm256_cmp_pd(absq, _mm256_set1_pd(2147483648.0), _CMP_LT_OQ)) != 0xF) return false;
  *res = _mm_add_epi32(_mm256_cvtpd_epi32(q), z);
  return true;
}

template <IType T>
LOWBIT_TARGET_AVX2 void pool256(const IntOp& op, const void* x, int64_t n, int32_t* out) {
  const int64_t C = op.C, W = op.W, inPer = op.H * op.W * C, outPer = op.OH * op.OW * C;
  const int64_t full = C - C % 8;
  const double inZero = static_cast<double>(static_cast<int64_t>(op.zero) << op.fracBits);
  const double dd = static_cast<double>((op.kh * op.kw) << op.fracBits);
  const __m256d d = _mm256_set1_pd(dd), inv = _mm256_set1_pd(1.0 / dd);
  const __m128i z = _mm_set1_epi32(op.zero);
  for (int64_t smp = 0; smp < n; smp++) {
    const int64_t ib = smp * inPer;
    for (int64_t oy = 0; oy < op.OH; oy++) {
      for (int64_t ox = 0; ox < op.OW; ox++) {
        const Window w = windowAt(op, oy, ox);
        int32_t* o = out + smp * outPer + (oy * op.OW + ox) * C;
        const __m256d off = _mm256_set1_pd(static_cast<double>((w.y1 - w.y0) * (w.x1 - w.x0)) * inZero);
        for (int64_t c = 0; c < full; c += 8) {
          __m256d s0, s1;
          if constexpr (T == IType::I32) {
            s0 = _mm256_setzero_pd();
            s1 = _mm256_setzero_pd();
            const int32_t* p = static_cast<const int32_t*>(x) + ib + c;
            for (int64_t iy = w.y0; iy < w.y1; iy++) {
              for (int64_t ix = w.x0; ix < w.x1; ix++) {
                const int32_t* q = p + (iy * W + ix) * C;
                s0 = _mm256_add_pd(s0, _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q))));
                s1 = _mm256_add_pd(s1, _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 4))));
              }
            }
          } else {
            __m256i acc = _mm256_setzero_si256();
            const uint8_t* p = static_cast<const uint8_t*>(x) + ib + c;
            for (int64_t iy = w.y0; iy < w.y1; iy++) {
              for (int64_t ix = w.x0; ix < w.x1; ix++) {
                const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + (iy * W + ix) * C));
                acc = _mm256_add_epi32(acc, T == IType::U8 ? _mm256_cvtepu8_epi32(v) : _mm256_cvtepi8_epi32(v));
              }
            }
            s0 = _mm256_cvtepi32_pd(_mm256_castsi256_si128(acc));
            s1 = _mm256_cvtepi32_pd(_mm256_extracti128_si256(acc, 1));
          }
          __m128i r0, r1;
          if (finish256(s0, off, d, inv, z, &r0) && finish256(s1, off, d, inv, z, &r1)) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(o + c), r0);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(o + c + 4), r1);
          } else {
            cellsScalar<T>(op, x, ib, w, c, c + 8, o);
          }
        }
        if (full < C) cellsScalar<T>(op, x, ib, w, full, C, o);
      }
    }
  }
}

template <IType T>
void poolTyped(const IntOp& op, const void* x, int64_t n, int32_t* out) {
  const Isa isa = vectorExact(op) ? activeIsa() : Isa::Scalar;
  if (isa == Isa::Avx512 && op.C >= 16) return pool512<T>(op, x, n, out);
  if (isa != Isa::Scalar && op.C >= 8) return pool256<T>(op, x, n, out);
  poolScalar<T>(op, x, n, out);
}

}  // namespace

void intAvgPoolRun(const IntOp& op, const void* x, int64_t n, int32_t* out) {
  switch (op.in) {
    case IType::U8: return poolTyped<IType::U8>(op, x, n, out);
    case IType::S8: return poolTyped<IType::S8>(op, x, n, out);
    default: return poolTyped<IType::I32>(op, x, n, out);
  }
}

const char* intAvgPoolPathName(const IntOp& op) {
  const Isa isa = vectorExact(op) ? activeIsa() : Isa::Scalar;
  if (isa == Isa::Avx512 && op.C >= 16) return "avx512";
  if (isa != Isa::Scalar && op.C >= 8) return "avx2";
  return "scalar";
}

}  // namespace lowbit
