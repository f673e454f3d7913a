// Native IntModel executor (see intmodel.h for the plan and the arithmetic).
#include "intmodel.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>

#include "amx.h"
#include "conv3x3.h"
#include "intdw.h"
#include "cpu.h"
#include "intadd.h"
#include "intpool.h"
#include "intgemm.h"
#include "signadd.h"
#include "xnorconv.h"
#include "threadpool.h"

#define LOWBIT_TARGET_IRT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2,popcnt")))

namespace lowbit {

namespace {

constexpr size_t kSlack = 128;    // bytes readable / writable past every scratch buffer
constexpr size_t kActSlack = 4096;  // ... and past the activation buffers (amxConvImplicit reads ahead)
constexpr int64_t kConvRows = 96;  // im2col rows per GEMM + epilogue block

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool useAvx512() {
  static const bool on = activeIsa() == Isa::Avx512;
  return on;
}

// Keeps the compiler from contracting a product with the next addition (exactness).
inline double opaque(double v) {
  __asm__("" : "+x"(v));
  return v;
}

// ---------------------------------------------------------------- output stages, scalar
// (Acc: the int32 accumulator, or a per-group layer's int64 sum A with |A 2^k + bias| < 2^53.)
template <typename Acc>
inline int32_t requantOne(const IntOp& op, Acc acc, int64_t c) {
  const double x = static_cast<double>(acc) * op.up + op.bias[c];  // exact: |x| < 2^53
  const bool negative = (x < 0) != (op.mneg[c] != 0);
  const double ax = std::fabs(x), ms = op.mscale[c];
  double p = opaque(ax * ms);
  const double e = std::fma(ax, ms, -p);  // ax ms = p + e exactly
  if (p > 0x1p40) p = 0x1p40;
  const double t = opaque(p + 0.5);  // exact (p < 2^52)
  double r = std::floor(t);
  if (t == r && e < 0) r -= 1;  // p + e lies just below the half: round down
  if (negative) r = -r;
  double q = r + op.z;
  q = q < op.lo ? op.lo : q > op.hi ? op.hi : q;
  return static_cast<int32_t>(q);
}

inline bool signOne(const IntOp& op, int32_t acc, int64_t c) { return acc >= op.lower[c] && acc <= op.upper[c]; }

inline float dequantOne(const IntOp& op, int32_t acc, int64_t c) {
  const double y = opaque(static_cast<double>(acc) * static_cast<double>(op.S[c]));
  return static_cast<float>(y + static_cast<double>(op.B[c]));
}

inline void storeValue(IType t, void* out, int64_t i, int32_t v) {
  switch (t) {
    case IType::U8: static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(v); break;
    case IType::S8: static_cast<int8_t*>(out)[i] = static_cast<int8_t>(v); break;
    default: static_cast<int32_t*>(out)[i] = v; break;
  }
}

inline int32_t loadValue(IType t, const void* in, int64_t i) {
  switch (t) {
    case IType::U8: return static_cast<const uint8_t*>(in)[i];
    case IType::S8: return static_cast<const int8_t*>(in)[i];
    default: return static_cast<const int32_t*>(in)[i];
  }
}

// Output stage of `rows` rows of the int32 tile (row stride ldt, channels [c0, c0 + nc)) into
// `out`: element (r, c) goes to out index r * ldo + c (bits: row r of `ldo` 64-bit words).
void epilogueScalar(const IntOp& op, const int32_t* tile, int64_t ldt, int64_t rows, int64_t c0, int64_t nc, void* out,
                    int64_t ldo) {
  for (int64_t r = 0; r < rows; r++) {
    const int32_t* a = tile + r * ldt;
    for (int64_t j = 0; j < nc; j++) {
      const int64_t c = c0 + j;
      if (op.outMode == IOutMode::Requantize) {
        storeValue(op.out, out, r * ldo + c, requantOne(op, a[j], c));
      } else if (op.outMode == IOutMode::Dequantize) {
        static_cast<float*>(out)[r * ldo + c] = dequantOne(op, a[j], c);
      } else if (op.out == IType::Bits) {
        uint64_t* row = static_cast<uint64_t*>(out) + r * ldo;
        if (signOne(op, a[j], c)) row[c >> 6] |= uint64_t{1} << (c & 63);
      } else {
        static_cast<int8_t*>(out)[r * ldo + c] = signOne(op, a[j], c) ? 1 : -1;
      }
    }
  }
}

// ---------------------------------------------------------------- output stages, AVX-512
// 8 requantized values (exact, see requantOne) from 8 int32 accumulators; per-lane bias, |M0| 2^-n
// and M0 < 0 mask.
// requant8x: the same from x = acc 2^k + bias (8 exact doubles).
LOWBIT_TARGET_IRT inline __m256i requant8x(const IntOp& op, __m512d x, __m512d ms, __mmask8 mneg) {
  const __m512d zero = _mm512_setzero_pd();
  const __mmask8 negative = _mm512_cmp_pd_mask(x, zero, _CMP_LT_OQ) ^ mneg;
  const __m512d ax = _mm512_abs_pd(x);
  __m512d p = _mm512_mul_pd(ax, ms);
  __asm__("" : "+v"(p));
  const __m512d e = _mm512_fmsub_pd(ax, ms, p);
  p = _mm512_min_pd(p, _mm512_set1_pd(0x1p40));
  __m512d t = _mm512_add_pd(p, _mm512_set1_pd(0.5));
  __asm__("" : "+v"(t));
  __m512d rv = _mm512_roundscale_pd(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __mmask8 tie = _mm512_cmp_pd_mask(t, rv, _CMP_EQ_OQ) & _mm512_cmp_pd_mask(e, zero, _CMP_LT_OQ);
  rv = _mm512_mask_sub_pd(rv, tie, rv, _mm512_set1_pd(1.0));
  rv = _mm512_mask_sub_pd(rv, negative, zero, rv);
  __m512d q = _mm512_add_pd(rv, _mm512_set1_pd(op.z));
  q = _mm512_min_pd(_mm512_max_pd(q, _mm512_set1_pd(op.lo)), _mm512_set1_pd(op.hi));
  return _mm512_cvtpd_epi32(q);
}

LOWBIT_TARGET_IRT inline __m256i requant8(const IntOp& op, __m256i acc, __m512d bias, __m512d ms, __mmask8 mneg) {
  return requant8x(op, _mm512_fmadd_pd(_mm512_cvtepi32_pd(acc), _mm512_set1_pd(op.up), bias), ms, mneg);  // exact
}

// The same 8 values from the integer constants (IntOp::intRequant); per-lane M0, bmh, 2^(n' - 1),
// n' as int64 and the bml = 0 mask.
LOWBIT_TARGET_IRT inline __m256i requant8i(const IntOp& op, __m256i acc, __m512i m0, __m512i bmh, __m512i half, __m512i sh,
                                           __mmask8 lowZero) {
  const __m512i S = _mm512_add_epi64(_mm512_mul_epi32(_mm512_cvtepi32_epi64(acc), m0), bmh);  // exact: |S| < 2^63
  __m512i t = _mm512_add_epi64(S, half);
  const __mmask8 fix = _mm512_mask_cmplt_epi64_mask(lowZero, S, _mm512_setzero_si512());
  t = _mm512_mask_sub_epi64(t, fix, t, _mm512_set1_epi64(1));
  __m512i q = _mm512_add_epi64(_mm512_srav_epi64(t, sh), _mm512_set1_epi64(op.z));
  q = _mm512_min_epi64(_mm512_max_epi64(q, _mm512_set1_epi64(op.lo)), _mm512_set1_epi64(op.hi));
  return _mm512_cvtepi64_epi32(q);
}

LOWBIT_TARGET_IRT inline __mmask8 flags8(const uint8_t* flags, __mmask8 m) {
  return _mm512_mask_cmpneq_epi64_mask(m, _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(flags))),
                                       _mm512_setzero_si512());
}

// Stores 8 requantized channels of one output row: bytes (uint8/int8 outputs) or int32.
LOWBIT_TARGET_IRT inline void storeRow8(void* out, int64_t o, __mmask8 m, __m256i qi, bool bytes) {
  if (bytes) {
    _mm256_mask_cvtepi32_storeu_epi8(static_cast<uint8_t*>(out) + o, m, qi);
  } else {
    _mm256_mask_storeu_epi32(static_cast<int32_t*>(out) + o, m, qi);
  }
}

LOWBIT_TARGET_IRT void epilogueAvx512(const IntOp& op, const int32_t* tile, int64_t ldt, int64_t rows, int64_t c0,
                                      int64_t nc, void* out, int64_t ldo) {
  if (op.outMode == IOutMode::Requantize && op.intRequant) {
    const bool bytes = op.out == IType::U8 || op.out == IType::S8;
    for (int64_t j = 0; j < nc; j += 8) {
      const int64_t valid = std::min<int64_t>(8, nc - j);
      const __mmask8 m = static_cast<__mmask8>((1u << valid) - 1u);
      const int64_t c = c0 + j;
      const __m512i m0 = _mm512_maskz_loadu_epi64(m, op.rqM0.data() + c), bmh = _mm512_maskz_loadu_epi64(m, op.rqBmh.data() + c);
      const __m512i half = _mm512_maskz_loadu_epi64(m, op.rqHalf.data() + c), sh = _mm512_maskz_loadu_epi64(m, op.rqShift.data() + c);
      const __mmask8 lowZero = flags8(op.rqLowZero.data() + c, m);
      for (int64_t r = 0; r < rows; r++) {
        storeRow8(out, r * ldo + c, m, requant8i(op, _mm256_maskz_loadu_epi32(m, tile + r * ldt + j), m0, bmh, half, sh, lowZero), bytes);
      }
    }
    return;
  }
  if (op.outMode == IOutMode::Requantize) {
    const bool bytes = op.out == IType::U8 || op.out == IType::S8;
    for (int64_t j = 0; j < nc; j += 8) {
      const int64_t valid = std::min<int64_t>(8, nc - j);
      const __mmask8 m = static_cast<__mmask8>((1u << valid) - 1u);
      const int64_t c = c0 + j;
      const __m512d bias = _mm512_maskz_loadu_pd(m, op.bias.data() + c);
      const __m512d ms = _mm512_maskz_loadu_pd(m, op.mscale.data() + c);
      const __mmask8 mneg = _mm512_cmpneq_epi64_mask(
          _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(op.mneg.data() + c))), _mm512_setzero_si512()) & m;
      for (int64_t r = 0; r < rows; r++) {
        storeRow8(out, r * ldo + c, m, requant8(op, _mm256_maskz_loadu_epi32(m, tile + r * ldt + j), bias, ms, mneg), bytes);
      }
    }
    return;
  }
  if (op.outMode == IOutMode::Dequantize) {
    for (int64_t j = 0; j < nc; j += 8) {
      const int64_t valid = std::min<int64_t>(8, nc - j);
      const __mmask8 m = static_cast<__mmask8>((1u << valid) - 1u);
      const int64_t c = c0 + j;
      const __m512d S = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, op.S.data() + c));
      const __m512d B = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, op.B.data() + c));
      for (int64_t r = 0; r < rows; r++) {
        __m512d y = _mm512_mul_pd(_mm512_cvtepi32_pd(_mm256_maskz_loadu_epi32(m, tile + r * ldt + j)), S);
        __asm__("" : "+v"(y));
        y = _mm512_add_pd(y, B);
        _mm256_mask_storeu_ps(static_cast<float*>(out) + r * ldo + c, m, _mm512_cvtpd_ps(y));
      }
    }
    return;
  }
  // sign
  const bool bits = op.out == IType::Bits;
  if (bits && (c0 & 15) != 0) {
    epilogueScalar(op, tile, ldt, rows, c0, nc, out, ldo);
    return;
  }
  for (int64_t j = 0; j < nc; j += 16) {
    const int64_t valid = std::min<int64_t>(16, nc - j);
    const __mmask16 m = static_cast<__mmask16>((1u << valid) - 1u);
    const int64_t c = c0 + j;
    const __m512i L = _mm512_maskz_loadu_epi32(m, op.lower.data() + c);
    const __m512i U = _mm512_maskz_loadu_epi32(m, op.upper.data() + c);
    for (int64_t r = 0; r < rows; r++) {
      const __m512i acc = _mm512_maskz_loadu_epi32(m, tile + r * ldt + j);
      const __mmask16 on = _mm512_mask_cmpge_epi32_mask(m, acc, L) & _mm512_cmple_epi32_mask(acc, U);
      if (bits) {
        const uint16_t word = static_cast<uint16_t>(on);
        std::memcpy(reinterpret_cast<uint8_t*>(static_cast<uint64_t*>(out) + r * ldo) + c / 8, &word, valid > 8 ? 2 : 1);
      } else {
        const __m128i v = _mm_mask_blend_epi8(on, _mm_set1_epi8(-1), _mm_set1_epi8(1));
        _mm_mask_storeu_epi8(static_cast<int8_t*>(out) + r * ldo + c, m, v);
      }
    }
  }
}

void epilogue(const IntOp& op, const int32_t* tile, int64_t ldt, int64_t rows, int64_t c0, int64_t nc, void* out, int64_t ldo) {
  if (useAvx512()) {
    epilogueAvx512(op, tile, ldt, rows, c0, nc, out, ldo);
  } else {
    epilogueScalar(op, tile, ldt, rows, c0, nc, out, ldo);
  }
}

// ---------------------------------------------------------------- quantize (NCHW float -> NHWC ints)
inline int32_t quantizeOne(const IntOp& op, float xf) {
  if (op.sign) return xf >= 0 ? 1 : -1;
  const double v = std::nearbyint(static_cast<double>(xf) / op.scale);
  if (v != v) return 0;
  const double q = v + op.zero;
  return static_cast<int32_t>(q < op.qmin ? op.qmin : q > op.qmax ? op.qmax : q);
}

// round(x / s) half to even, as the double division of the reference: x (1 / s) differs from the
// quotient fl(x / s) by less than |x / s| 2^-51 (< 2^-31 for |x / s| < 2^20), so both round alike
// unless x (1 / s) lies within 2^-30 of a half-integer (or is large or NaN); only then (rarely)
// the division is done.
LOWBIT_TARGET_IRT inline __m512d roundQuotient(__m512d xv, __m512d s, __m512d inv) {
  const __m512d y = _mm512_mul_pd(xv, inv);
  const __m512d r = _mm512_roundscale_pd(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512d near = _mm512_set1_pd(0.5 - 0x1p-30), big = _mm512_set1_pd(0x1p20);
  const __mmask8 bad = _mm512_cmp_pd_mask(_mm512_abs_pd(_mm512_sub_pd(y, r)), near, _CMP_GT_OQ) |
                       _mm512_cmp_pd_mask(_mm512_abs_pd(y), big, _CMP_NLT_UQ);
  if (bad == 0) return r;
  return _mm512_mask_blend_pd(bad, r, _mm512_roundscale_pd(_mm512_div_pd(xv, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

LOWBIT_TARGET_IRT void quantizeContiguousAvx512(const IntOp& op, const float* x, int64_t count, void* out) {
  const __m512d s = _mm512_set1_pd(op.scale), z = _mm512_set1_pd(op.zero), inv = _mm512_set1_pd(1.0 / op.scale);
  const __m512d lo = _mm512_set1_pd(op.qmin), hi = _mm512_set1_pd(op.qmax);
  for (int64_t i = 0; i < count; i += 8) {
    const int64_t valid = std::min<int64_t>(8, count - i);
    const __mmask8 m = static_cast<__mmask8>((1u << valid) - 1u);
    const __m512d xv = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, x + i));
    __m256i qi;
    if (op.sign) {
      const __mmask8 pos = _mm512_cmp_pd_mask(xv, _mm512_setzero_pd(), _CMP_GE_OQ);
      qi = _mm256_mask_blend_epi32(pos, _mm256_set1_epi32(-1), _mm256_set1_epi32(1));
    } else {
      const __m512d v = roundQuotient(xv, s, inv);
      const __mmask8 nan = _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);
      __m512d q = _mm512_min_pd(_mm512_max_pd(_mm512_add_pd(v, z), lo), hi);
      q = _mm512_mask_blend_pd(nan, q, _mm512_setzero_pd());
      qi = _mm512_cvtpd_epi32(q);
    }
    storeRow8(out, i, m, qi, op.out != IType::I32);
  }
}

// The same (byte outputs, ranges inside [-128, 255]) 16 values at a time in float32: y = x (1 / s)
// in float differs from x / s by less than |y| 2^-22, i.e. by less than 2^-13 for |y| < 500, so it
// rounds (half to even) like the reference's double quotient unless it lies within 2^-12 of a half
// (then that vector goes through the double path); for |y| >= 500 both clamp to qmin / qmax
// (|zero| <= 255 and the range inside [-128, 255]); NaN gives 0, +-inf qmax / qmin, as the reference.
LOWBIT_TARGET_IRT void quantizeBytesF32(const IntOp& op, const float* x, int64_t count, uint8_t* out) {
  const __m512 inv = _mm512_set1_ps(static_cast<float>(1.0 / op.scale)), z = _mm512_set1_ps(static_cast<float>(op.zero));
  const __m512 lo = _mm512_set1_ps(static_cast<float>(op.qmin)), hi = _mm512_set1_ps(static_cast<float>(op.qmax));
  const __m512 nearHalf = _mm512_set1_ps(0.5f - 0x1p-12f), big = _mm512_set1_ps(500.0f);
  for (int64_t i = 0; i < count; i += 16) {
    const int64_t valid = std::min<int64_t>(16, count - i);
    const __mmask16 m = static_cast<__mmask16>((1u << valid) - 1u);
    const __m512 y = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv);
    const __m512 r = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __mmask16 tie = _mm512_mask_cmp_ps_mask(_mm512_cmp_ps_mask(_mm512_abs_ps(y), big, _CMP_LT_OQ), _mm512_abs_ps(_mm512_sub_ps(y, r)),
                                                  nearHalf, _CMP_GT_OQ);
    if (tie != 0) {
      quantizeContiguousAvx512(op, x + i, valid, out + i);
      continue;
    }
    __m512 q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, z), lo), hi);
    q = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q), q, _mm512_setzero_ps());
    _mm512_mask_cvtepi32_storeu_epi8(out + i, m, _mm512_cvtps_epi32(q));
  }
}

void runQuantize(const IntOp& op, const float* x, int64_t n, void* out) {
  const int64_t C = op.C, HW = op.H * op.W, per = C * HW;
  const double inv = 1.0 / op.scale;
  if (C == 1 && useAvx512() && !op.sign && op.out != IType::I32 && op.qmin >= -128 && op.qmax <= 255 && inv > 0x1p-100 && inv < 0x1p100) {
    quantizeBytesF32(op, x, n * per, static_cast<uint8_t*>(out));
    return;
  }
  if (C == 1 && useAvx512()) {
    quantizeContiguousAvx512(op, x, n * per, out);
    return;
  }
  for (int64_t s = 0; s < n; s++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < HW; i++) storeValue(op.out, out, s * per + i * C + c, quantizeOne(op, x[s * per + c * HW + i]));
}

// ---------------------------------------------------------------- im2col (NHWC bytes -> u8 rows)
// Copies `len` bytes (xor `flip`), or fills `len` bytes with `fill`, with 8-byte (Narrow) or 64-byte
// (Wide, AVX-512) stores that may run past the end (the caller writes in increasing order and owns
// kSlack bytes past the buffer).
struct NarrowRuns {
  static inline void copy(uint8_t* dst, const uint8_t* src, int64_t len, uint64_t flip) {
    for (int64_t i = 0; i < len; i += 8) {
      uint64_t v;
      std::memcpy(&v, src + i, 8);
      v ^= flip;
      std::memcpy(dst + i, &v, 8);
    }
  }
  static inline void fill(uint8_t* dst, int64_t len, uint64_t fill) {
    for (int64_t i = 0; i < len; i += 8) std::memcpy(dst + i, &fill, 8);
  }
};

struct WideRuns {
  // (runs of up to 32 bytes, e.g. kw C = 30, take one 32-byte store: fewer cache-line splits)
  LOWBIT_TARGET_IRT static inline void copy(uint8_t* dst, const uint8_t* src, int64_t len, uint64_t flip) {
    if (len <= 32) {
      const __m256i f = _mm256_set1_epi64x(static_cast<long long>(flip));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)), f));
      return;
    }
    const __m512i f = _mm512_set1_epi64(static_cast<long long>(flip));
    for (int64_t i = 0; i < len; i += 64) {
      _mm512_storeu_si512(dst + i, _mm512_xor_si512(_mm512_loadu_si512(src + i), f));
    }
  }
  LOWBIT_TARGET_IRT static inline void fill(uint8_t* dst, int64_t len, uint64_t fill) {
    if (len <= 32) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_set1_epi64x(static_cast<long long>(fill)));
      return;
    }
    const __m512i f = _mm512_set1_epi64(static_cast<long long>(fill));
    for (int64_t i = 0; i < len; i += 64) _mm512_storeu_si512(dst + i, f);
  }
};

// dst[i] = src[i] ^ flip for i < len, without writing past dst + len.
LOWBIT_TARGET_IRT inline void copyRowFlipAvx512(uint8_t* dst, const uint8_t* src, int64_t len, uint64_t flip) {
  const __m512i f = _mm512_set1_epi64(static_cast<long long>(flip));
  for (int64_t i = 0; i < len; i += 64) {
    const __mmask64 m = len - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (len - i)) - 1;
    _mm512_mask_storeu_epi8(dst + i, m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src + i), f));
  }
}

inline void copyRowFlip(uint8_t* dst, const uint8_t* src, int64_t len, uint64_t flip) { copyRowFlipAvx512(dst, src, len, flip); }

inline void copyRun(uint8_t* dst, const uint8_t* src, int64_t len, uint64_t flip) { NarrowRuns::copy(dst, src, len, flip); }

// Rows [p0, p1) of the patches of one sample and group: row p holds (ky, kx, c) in order, then
// garbage up to the row's Kp bytes (it meets zero weights). Reads up to 64 bytes past a source
// run (inside the activation buffer's kSlack).
template <class Runs>
__attribute__((always_inline)) inline void im2colWith(const IntOp& op, const uint8_t* x, int64_t group, int64_t p0, int64_t p1,
                                                      uint8_t* col, int64_t Kp) {
  const int64_t C = op.C, H = op.H, W = op.W, cg = C / op.groups;
  const uint64_t flip = op.in == IType::S8 ? 0x8080808080808080ULL : 0;
  const uint8_t padByte = static_cast<uint8_t>(op.zero) ^ static_cast<uint8_t>(flip & 0xff);
  const uint64_t fill = 0x0101010101010101ULL * padByte;
  const bool wholeRows = op.dw == 1 && op.groups == 1;
  const int64_t run = op.kw * cg;
  int64_t oy = p0 / op.OW, ox = p0 % op.OW;
  for (int64_t p = p0; p < p1; p++) {
    uint8_t* row = col + (p - p0) * Kp;
    const int64_t ix0 = ox * op.sw - op.pw;
    const bool inside = ix0 >= 0 && ix0 + (op.kw - 1) * op.dw < W;
    int64_t iy = oy * op.sh - op.ph;
    for (int64_t ky = 0; ky < op.kh; ky++, iy += op.dh) {
      uint8_t* dst = row + ky * run;
      if (iy < 0 || iy >= H) {
        Runs::fill(dst, run, fill);
        continue;
      }
      const uint8_t* src = x + (iy * W) * C + group * cg;
      if (inside && wholeRows) {
        Runs::copy(dst, src + ix0 * C, run, flip);
        continue;
      }
      for (int64_t kx = 0; kx < op.kw; kx++) {
        const int64_t ix = ix0 + kx * op.dw;
        if (ix < 0 || ix >= W) {
          Runs::fill(dst + kx * cg, cg, fill);
        } else {
          Runs::copy(dst + kx * cg, src + ix * C, cg, flip);
        }
      }
    }
    if (++ox == op.OW) {
      ox = 0;
      oy++;
    }
  }
}

LOWBIT_TARGET_IRT void im2colWide(const IntOp& op, const uint8_t* x, int64_t group, int64_t p0, int64_t p1, uint8_t* col, int64_t Kp) {
  im2colWith<WideRuns>(op, x, group, p0, p1, col, Kp);
}

void im2col(const IntOp& op, const uint8_t* x, int64_t group, int64_t p0, int64_t p1, uint8_t* col, int64_t Kp) {
  if (useAvx512()) {
    im2colWide(op, x, group, p0, p1, col, Kp);
  } else {
    im2colWith<NarrowRuns>(op, x, group, p0, p1, col, Kp);
  }
}

// ---------------------------------------------------------------- fused max pooling of accumulators
// Pools the int32 tile (rows = conv output positions [OH, OW] of one sample, row stride ldt,
// channels [c0, c0 + nc) of the op) into `out` (rows = pooled positions [POH, POW]): per channel
// the max of the window, or the min when M0 < 0 (see IntOp::poolKh).
LOWBIT_TARGET_IRT void poolAccAvx512(const IntOp& op, const int32_t* tile, int64_t ldt, int64_t c0, int64_t nc, int32_t* out) {
  for (int64_t j = 0; j < nc; j += 16) {
    const int64_t valid = std::min<int64_t>(16, nc - j);
    const __mmask16 m = static_cast<__mmask16>((1u << valid) - 1u);
    const __mmask16 neg = _mm_mask_cmpneq_epi8_mask(m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(op.mneg.data() + c0 + j)),
                                                    _mm_setzero_si128());
    for (int64_t py = 0; py < op.POH; py++) {
      for (int64_t px = 0; px < op.POW; px++) {
        const int32_t* base = tile + ((py * op.poolSh) * op.OW + px * op.poolSw) * ldt + j;
        __m512i hi = _mm512_maskz_loadu_epi32(m, base), lo = hi;
        for (int64_t ky = 0; ky < op.poolKh; ky++) {
          for (int64_t kx = 0; kx < op.poolKw; kx++) {
            const __m512i v = _mm512_maskz_loadu_epi32(m, base + (ky * op.OW + kx) * ldt);
            hi = _mm512_max_epi32(hi, v);
            lo = _mm512_min_epi32(lo, v);
          }
        }
        _mm512_mask_storeu_epi32(out + (py * op.POW + px) * ldt + j, m, _mm512_mask_blend_epi32(neg, hi, lo));
      }
    }
  }
}

// ---------------------------------------------------------------- direct conv (one input channel)
// For a first layer on a one-channel image (LeNet's conv1: 1 -> 6, 5x5) im2col would copy 25 bytes
// per output position. Instead 16 output positions sit in the 16 int32 lanes: the image is copied
// into a padded buffer (rows of W + 2 pw bytes), the 192 bytes from a block's first window are
// loaded once, and per group g of 4 taps (t = 4g .. 4g + 3 in (ky, kx) order, across kernel rows:
// 7 groups for 5x5) a byte permute gives lane j the 4 taps of position ox0 + j, which vpdpbusd
// multiplies with the broadcast weights w[o, 4g .. 4g + 3] of each output channel; a fused 2 x 2
// pooling computes both conv rows with shared weight broadcasts. Same integers as im2col + GEMM.
#define LOWBIT_TARGET_DIRECT \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,fma,avx2")))

bool directConvAvailable() {
  static const bool on = [] {
    __builtin_cpu_init();
    return useAvx512() && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
  }();
  return on;
}

// The permute tables of a direct conv (IntOp::directIdx ...) in registers.
struct DirectTables {
  int groups = 0;
  __m512i idxA[16], idxB[16];
  __mmask64 maskA[16], maskB[16];
  uint8_t mode[16];
};

// Accumulators of the NB channels [ob, ob + NB) at the 16 output positions (oy, ox0 .. ox0 + 15):
// the 192 bytes of the padded image from the first position's window are loaded once, and per
// group of 4 taps a byte permute gives lane j the 4 taps of position ox0 + j.
// Output rows oy .. oy + R - 1 (R = 1 or 2) share the weight broadcasts.
template <int NB, int R, int GT>
LOWBIT_TARGET_DIRECT inline void convDirectAcc(const IntOp& op, const uint8_t* pad, int64_t PW, int64_t oy, int64_t ox0, int64_t ob,
                                               const DirectTables& t, int32_t negZero, __m512i (*acc)[NB]) {
  for (int o = 0; o < NB; o++) {
    const __m512i init = _mm512_set1_epi32(negZero * op.rowSums[ob + o]);
    for (int r = 0; r < R; r++) acc[r][o] = init;
  }
  __m512i l0[R], l1[R], l2[R];
  for (int r = 0; r < R; r++) {
    const uint8_t* base = pad + (oy + r) * op.sh * PW + ox0 * op.sw;
    l0[r] = _mm512_loadu_si512(base), l1[r] = _mm512_loadu_si512(base + 64), l2[r] = _mm512_loadu_si512(base + 128);
  }
  // GT: the group count known at compile time (0: not); K <= 64 taps gives at most 16 groups
  const int G = GT > 0 ? GT : std::min(t.groups, 16);
  const int32_t* wd = op.wdirect.data() + ob * G;
#pragma GCC unroll 16
  for (int g = 0; g < G; g++) {
    __m512i a[R];
    for (int r = 0; r < R; r++) {
      if (t.mode[g] == 0) {
        a[r] = _mm512_permutex2var_epi8(l0[r], t.idxA[g], l1[r]);
      } else if (t.mode[g] == 1) {
        a[r] = _mm512_permutex2var_epi8(l1[r], t.idxA[g], l2[r]);
      } else {
        a[r] = _mm512_maskz_permutex2var_epi8(t.maskA[g], l0[r], t.idxA[g], l1[r]);
        a[r] = _mm512_mask_permutexvar_epi8(a[r], t.maskB[g], t.idxB[g], l2[r]);
      }
    }
    for (int o = 0; o < NB; o++) {
      const __m512i w = _mm512_set1_epi32(wd[o * G + g]);
      for (int r = 0; r < R; r++) acc[r][o] = _mm512_dpbusd_epi32(acc[r][o], a[r], w);
    }
  }
}

// Requantizes the accumulators of the NB channels [ob, ob + NB) at `count` (<= 16) positions with
// q's output stage into dst[p * OC + o].
template <int NB>
LOWBIT_TARGET_DIRECT inline void convDirectStore(const IntOp& q, const __m512i* acc, int64_t ob, uint8_t* dst, int64_t count, int64_t OC) {
  alignas(64) uint8_t tmp[128];
  for (int o = 0; o < NB; o++) {
    const int64_t c = ob + o;
    __m256i lo, hi;
    if (q.intRequant) {
      const __m512i m0 = _mm512_set1_epi64(q.rqM0[c]), bmh = _mm512_set1_epi64(q.rqBmh[c]);
      const __m512i half = _mm512_set1_epi64(q.rqHalf[c]), sh = _mm512_set1_epi64(q.rqShift[c]);
      const __mmask8 lowZero = q.rqLowZero[c] ? 0xff : 0;
      lo = requant8i(q, _mm512_castsi512_si256(acc[o]), m0, bmh, half, sh, lowZero);
      hi = requant8i(q, _mm512_extracti64x4_epi64(acc[o], 1), m0, bmh, half, sh, lowZero);
    } else {
      const __m512d bias = _mm512_set1_pd(q.bias[c]), ms = _mm512_set1_pd(q.mscale[c]);
      const __mmask8 mneg = q.mneg[c] ? 0xff : 0;
      lo = requant8(q, _mm512_castsi512_si256(acc[o]), bias, ms, mneg);
      hi = requant8(q, _mm512_extracti64x4_epi64(acc[o], 1), bias, ms, mneg);
    }
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp + 16 * o), _mm512_cvtepi32_epi8(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)));
  }
  if (NB == 8) {
    // transpose [o][p] to 8-byte rows [p][o] (two byte permutes), one scattered qword per position
    static const struct Index {
      alignas(64) uint8_t v[2][64];
      Index() {
        for (int h = 0; h < 2; h++)
          for (int i = 0; i < 64; i++) v[h][i] = static_cast<uint8_t>(16 * (i % 8) + 8 * h + i / 8);
      }
    } index;
    const __m512i a = _mm512_load_si512(tmp), b = _mm512_load_si512(tmp + 64);
    const __m512i offs = _mm512_mullo_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi64(OC));
    for (int h = 0; h < 2 && 8 * h < count; h++) {
      const __m512i rows = _mm512_permutex2var_epi8(a, _mm512_load_si512(index.v[h]), b);
      const int64_t left = count - 8 * h;
      const __mmask8 m = left >= 8 ? 0xff : static_cast<__mmask8>((1u << left) - 1u);
      _mm512_mask_i64scatter_epi64(dst + 8 * h * OC, m, offs, rows, 1);
    }
    return;
  }
  for (int64_t p = 0; p < count; p++)
    for (int o = 0; o < NB; o++) dst[p * OC + o] = tmp[16 * o + p];
}

// Requantized bytes of NB channels at `count` (<= 16) positions from (oy, ox0): dst[p * OC + o], and
// with a second output stage (IntOp::second) the same accumulators requantized by it into dst2.
template <int NB, int GT>
LOWBIT_TARGET_DIRECT void convDirectBlock(const IntOp& op, const uint8_t* pad, int64_t PW, int64_t oy, int64_t ox0, int64_t ob,
                                          const DirectTables& t, int32_t negZero, uint8_t* dst, uint8_t* dst2, int64_t count) {
  __m512i accs[1][NB];
  convDirectAcc<NB, 1, GT>(op, pad, PW, oy, ox0, ob, t, negZero, accs);
  convDirectStore<NB>(op, accs[0], ob, dst, count, op.OC);
  if (dst2) convDirectStore<NB>(*op.second, accs[0], ob, dst2, count, op.OC);
}

// With a fused 2 x 2, stride 2 max pooling: output rows 2 py and 2 py + 1 at 16 positions from ox0
// pool into 8 positions from ox0 / 2, of which the first `count` are written (dst[p * OC + o]).
template <int NB, int GT>
LOWBIT_TARGET_DIRECT void convDirectPooledBlock(const IntOp& op, const uint8_t* pad, int64_t PW, int64_t py, int64_t ox0, int64_t ob,
                                                const DirectTables& t, int32_t negZero, uint8_t* dst, uint8_t* /*dst2*/, int64_t count) {
  __m512i accs[2][NB];
  convDirectAcc<NB, 2, GT>(op, pad, PW, 2 * py, ox0, ob, t, negZero, accs);
  const __m512i *a0 = accs[0], *a1 = accs[1];
  __m512i packed = _mm512_setzero_si512();  // qword o = the 8 pooled bytes of channel ob + o
  if (op.intRequant) {
    // the pooled value of position j lands in int32 lane 2 j, the low half of int64 lane j, which
    // is what vpmuldq reads: requant8i without the compress and widening
    const __m512i z = _mm512_set1_epi64(op.z), lo = _mm512_set1_epi64(op.lo), hi = _mm512_set1_epi64(op.hi), one = _mm512_set1_epi64(1);
#pragma GCC unroll 8
    for (int o = 0; o < NB; o++) {
      const int64_t c = ob + o;
      __m512i v;
      if (op.mneg[c]) {
        v = _mm512_min_epi32(a0[o], a1[o]);
        v = _mm512_min_epi32(v, _mm512_shuffle_epi32(v, _MM_PERM_CDAB));  // lanes 2j, 2j + 1
      } else {
        v = _mm512_max_epi32(a0[o], a1[o]);
        v = _mm512_max_epi32(v, _mm512_shuffle_epi32(v, _MM_PERM_CDAB));
      }
      const __m512i S = _mm512_add_epi64(_mm512_mul_epi32(v, _mm512_set1_epi64(op.rqM0[c])), _mm512_set1_epi64(op.rqBmh[c]));
      __m512i r = _mm512_add_epi64(S, _mm512_set1_epi64(op.rqHalf[c]));
      if (op.rqLowZero[c]) r = _mm512_mask_sub_epi64(r, _mm512_cmplt_epi64_mask(S, _mm512_setzero_si512()), r, one);
      r = _mm512_add_epi64(_mm512_srav_epi64(r, _mm512_set1_epi64(op.rqShift[c])), z);
      r = _mm512_min_epi64(_mm512_max_epi64(r, lo), hi);
      packed = _mm512_mask_broadcastq_epi64(packed, static_cast<__mmask8>(1u << o), _mm512_cvtepi64_epi8(r));
    }
  } else {
    for (int o = 0; o < NB; o++) {
      const int64_t c = ob + o;
      __m512i v;
      if (op.mneg[c]) {
        v = _mm512_min_epi32(a0[o], a1[o]);
        v = _mm512_min_epi32(v, _mm512_shuffle_epi32(v, _MM_PERM_CDAB));
      } else {
        v = _mm512_max_epi32(a0[o], a1[o]);
        v = _mm512_max_epi32(v, _mm512_shuffle_epi32(v, _MM_PERM_CDAB));
      }
      v = _mm512_maskz_compress_epi32(0x5555, v);
      const __m256i q = requant8(op, _mm512_castsi512_si256(v), _mm512_set1_pd(op.bias[c]), _mm512_set1_pd(op.mscale[c]), op.mneg[c] ? 0xff : 0);
      packed = _mm512_mask_broadcastq_epi64(packed, static_cast<__mmask8>(1u << o), _mm256_cvtepi32_epi8(q));
    }
  }
  // transpose [o][p] to [p][o] in one permute
  alignas(64) uint8_t index[64];
  for (int i = 0; i < 64; i++) index[i] = static_cast<uint8_t>(i < 8 * NB ? 8 * (i % NB) + i / NB : 0);
  const __m512i tr = _mm512_permutexvar_epi8(_mm512_load_si512(index), packed);
  if (NB == op.OC) {
    // all channels of a position in this block: the `count` positions' NB bytes are one run
    _mm512_mask_storeu_epi8(dst, count * NB >= 64 ? ~__mmask64{0} : (__mmask64{1} << (count * NB)) - 1, tr);
    return;
  }
  alignas(64) uint8_t bytes[64];
  _mm512_store_si512(bytes, tr);
  for (int64_t p = 0; p < count; p++) std::memcpy(dst + p * op.OC, bytes + p * NB, NB);
}

// The samples of convDirect (padded image border already written); GT: the tap group count when
// known at compile time (the group loop unrolls), else 0.
template <int GT>
LOWBIT_TARGET_DIRECT void convDirectSamples(const IntOp& op, const uint8_t* x, int64_t n, void* out, void* out2, uint8_t* pad, int64_t PW,
                                            const DirectTables& t, int32_t negZero) {
  const int64_t H = op.H, W = op.W, OC = op.OC;
  const uint8_t flip = op.in == IType::S8 ? 0x80 : 0;
  const bool pooled = op.poolKh > 0;
  const int64_t outPer = pooled ? op.POH * op.POW * OC : op.OH * op.OW * OC;
  for (int64_t smp = 0; smp < n; smp++) {
    const uint8_t* xs = x + smp * H * W;
    for (int64_t iy = 0; iy < H; iy++) {
      uint8_t* dst = pad + (iy + op.ph) * PW + op.pw;
      const __m512i f = _mm512_set1_epi8(static_cast<char>(flip));
      for (int64_t ix = 0; ix < W; ix += 64) {
        const __mmask64 m = W - ix >= 64 ? ~__mmask64{0} : (__mmask64{1} << (W - ix)) - 1;
        _mm512_mask_storeu_epi8(dst + ix, m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, xs + iy * W + ix), f));
      }
    }
    uint8_t* os = static_cast<uint8_t*>(out) + smp * outPer;
    uint8_t* os2 = out2 ? static_cast<uint8_t*>(out2) + smp * outPer : nullptr;
#define LB_BLOCKS(F, row, count, dst)                                                    \
  switch (nb) {                                                                          \
    case 1: F<1, GT>(op, pad, PW, row, ox0, ob, t, negZero, dst, dst2, count); break; \
    case 2: F<2, GT>(op, pad, PW, row, ox0, ob, t, negZero, dst, dst2, count); break; \
    case 3: F<3, GT>(op, pad, PW, row, ox0, ob, t, negZero, dst, dst2, count); break; \
    case 4: F<4, GT>(op, pad, PW, row, ox0, ob, t, negZero, dst, dst2, count); break; \
    case 5: F<5, GT>(op, pad, PW, row, ox0, ob, t, negZero, dst, dst2, count); break; \
    case 6: F<6, GT>(op, pad, PW, row, ox0, ob, t, negZero, dst, dst2, count); break; \
    case 7: F<7, GT>(op, pad, PW, row, ox0, ob, t, negZero, dst, dst2, count); break; \
    default: F<8, GT>(op, pad, PW, row, ox0, ob, t, negZero, dst, dst2, count); break; \
  }
    if (pooled) {
      for (int64_t py = 0; py < op.POH; py++) {
        for (int64_t ox0 = 0; ox0 / 2 < op.POW; ox0 += 16) {
          const int64_t count = std::min<int64_t>(8, op.POW - ox0 / 2);
          for (int64_t ob = 0; ob < OC; ob += 8) {
            const int nb = static_cast<int>(std::min<int64_t>(8, OC - ob));
            uint8_t* dst = os + (py * op.POW + ox0 / 2) * OC + ob;
            uint8_t* const dst2 = nullptr;  // (no second output stage with a fused pooling)
            LB_BLOCKS(convDirectPooledBlock, py, count, dst)
          }
        }
      }
    } else {
      for (int64_t oy = 0; oy < op.OH; oy++) {
        for (int64_t ox0 = 0; ox0 < op.OW; ox0 += 16) {
          const int64_t count = std::min<int64_t>(16, op.OW - ox0);
          for (int64_t ob = 0; ob < OC; ob += 8) {
            const int nb = static_cast<int>(std::min<int64_t>(8, OC - ob));
            uint8_t* dst = os + (oy * op.OW + ox0) * OC + ob;
            uint8_t* dst2 = os2 ? os2 + (oy * op.OW + ox0) * OC + ob : nullptr;
            LB_BLOCKS(convDirectBlock, oy, count, dst)
          }
        }
      }
    }
#undef LB_BLOCKS
  }
}

LOWBIT_TARGET_DIRECT void convDirect(const IntOp& op, const uint8_t* x, int64_t n, void* out, void* out2, std::vector<uint8_t>& padBuf) {
  const int64_t H = op.H, W = op.W;
  const int64_t PW = W + 2 * op.pw, PH = H + 2 * op.ph;
  // the windows read up to 192 bytes from the last block's first position
  const size_t padBytes = static_cast<size_t>(PH * PW + 16 * op.sw + 192) + kSlack;
  if (padBuf.size() < padBytes) padBuf.resize(padBytes);
  uint8_t* pad = padBuf.data();
  const uint8_t flip = op.in == IType::S8 ? 0x80 : 0;
  const uint8_t padByte = static_cast<uint8_t>(op.zero) ^ flip;
  DirectTables t;
  t.groups = static_cast<int>(op.directMode.size());
  for (int g = 0; g < t.groups; g++) {
    t.idxA[g] = _mm512_loadu_si512(op.directIdx.data() + 128 * g);
    t.idxB[g] = _mm512_loadu_si512(op.directIdx.data() + 128 * g + 64);
    t.maskA[g] = op.directMask[2 * g];
    t.maskB[g] = op.directMask[2 * g + 1];
    t.mode[g] = op.directMode[g];
  }
  const int32_t negZero = -(op.zero + (flip ? 128 : 0));
  // The border stays padding for the whole call; every sample only rewrites the interior.
  std::memset(pad, padByte, padBytes);
  switch (t.groups) {
    case 7: convDirectSamples<7>(op, x, n, out, out2, pad, PW, t, negZero); break;  // 5 x 5 kernels
    case 3: convDirectSamples<3>(op, x, n, out, out2, pad, PW, t, negZero); break;  // 3 x 3
    default: convDirectSamples<0>(op, x, n, out, out2, pad, PW, t, negZero); break;
  }
}

// ---------------------------------------------------------------- layers
struct Scratch {
  std::vector<std::vector<uint8_t>> act;  // value slots
  std::vector<uint8_t*> slotPtr;
  std::vector<uint8_t> col;
  std::vector<int32_t> tile, ptile;
  std::vector<uint8_t> rowU8;
  std::vector<int8_t> rowS8;
  std::vector<int32_t> rowI32;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

template <class T>
T* grow(std::vector<T>& v, size_t count) {
  if (v.size() < count) v.resize(count);
  return v.data();
}

int32_t negZeroOf(const IntOp& op) { return -(op.zero + (op.in == IType::S8 ? 128 : 0)); }

// GEMM of `rows` prepared activation rows (u8, row stride lda; AMX: readable up to 16 ceil(rows / 16)
// rows of amxPaddedK(K) bytes) with group g's weights into tile (row stride ldt, see tileStride).
void layerGemm(const IntOp& op, int64_t g, int64_t rows, const uint8_t* A, int64_t lda, int32_t* tile, int64_t ldt) {
  const int64_t og = op.OC / op.groups;
  if (op.amx) {
    gemmAmxSerial(rows, og, op.K, A, lda, op.amxPacked.data() + g * op.amxStride, op.colBias.data() + g * amxPaddedN(og), tile, ldt);
  } else {
    gemmInt8Serial(rows, og, op.K, A, lda, op.packed.data() + g * op.packedStride, op.rowSums.data() + g * og, negZeroOf(op), tile, ldt);
  }
}

// Activation row length (bytes) and int32 tile row stride of an int8 conv / linear.
int64_t rowBytes(const IntOp& op) { return op.amx ? amxPaddedK(op.K) : ceilDiv(op.K, 4) * 4; }
int64_t tileStride(const IntOp& op) { return op.amx ? amxPaddedN(op.OC / op.groups) : op.OC / op.groups; }

void poolAcc(const IntOp& op, const int32_t* tile, int64_t ldt, int64_t c0, int64_t nc, int32_t* out) {
  if (useAvx512()) {
    poolAccAvx512(op, tile, ldt, c0, nc, out);
    return;
  }
  for (int64_t py = 0; py < op.POH; py++) {
    for (int64_t px = 0; px < op.POW; px++) {
      const int32_t* base = tile + ((py * op.poolSh) * op.OW + px * op.poolSw) * ldt;
      for (int64_t j = 0; j < nc; j++) {
        int32_t best = base[j];
        for (int64_t ky = 0; ky < op.poolKh; ky++) {
          for (int64_t kx = 0; kx < op.poolKw; kx++) {
            const int32_t v = base[(ky * op.OW + kx) * ldt + j];
            best = op.mneg[c0 + j] ? std::min(best, v) : std::max(best, v);
          }
        }
        out[(py * op.POW + px) * ldt + j] = best;
      }
    }
  }
}

// Output stage of an AMX conv tile (rows = the conv positions [OH, OW], ldt = 16 NT int32 columns,
// every row readable in full): the fused max pooling (per channel the window's max, or min when
// M0 < 0, see IntOp::poolKh) or none, plus the column bias when `addBias` (amxConvGather leaves
// it out), requantized into out [rows, OC].
template <bool Pool2x2>
LOWBIT_TARGET_IRT void amxConvOutput(const IntOp& op, const int32_t* tile, int64_t ldt, bool addBias, void* out) {
  const bool pooled = op.poolKh > 0;
  const int64_t OHo = pooled ? op.POH : op.OH, OWo = pooled ? op.POW : op.OW, OW = op.OW, OC = op.OC;
  const int64_t wh = pooled ? op.poolKh : 1, ww = pooled ? op.poolKw : 1, sy = pooled ? op.poolSh : 1, sx = pooled ? op.poolSw : 1;
  const bool bytes = op.out != IType::I32;
  for (int64_t c0 = 0; c0 < OC; c0 += 16) {
    const int64_t nc = std::min<int64_t>(16, OC - c0);
    const __mmask16 m16 = static_cast<__mmask16>((1u << nc) - 1u);
    const __mmask8 mLo = static_cast<__mmask8>(m16 & 0xff), mHi = static_cast<__mmask8>(m16 >> 8);
    const __mmask16 neg =
        pooled ? _mm_mask_cmpneq_epi8_mask(m16, _mm_loadu_si128(reinterpret_cast<const __m128i*>(op.mneg.data() + c0)), _mm_setzero_si128()) : 0;
    const __m512i cb = addBias ? _mm512_maskz_loadu_epi32(m16, op.colBias.data() + c0) : _mm512_setzero_si512();
    __m512i m0[2], bmh[2], half[2], sh[2];
    __m512d dbias[2], dms[2];
    __mmask8 lowZero[2] = {0, 0}, dneg[2] = {0, 0};
    for (int h = 0; h < 2; h++) {
      const __mmask8 m = h ? mHi : mLo;
      const int64_t c = c0 + 8 * h;
      if (op.intRequant) {
        m0[h] = _mm512_maskz_loadu_epi64(m, op.rqM0.data() + c), bmh[h] = _mm512_maskz_loadu_epi64(m, op.rqBmh.data() + c);
        half[h] = _mm512_maskz_loadu_epi64(m, op.rqHalf.data() + c), sh[h] = _mm512_maskz_loadu_epi64(m, op.rqShift.data() + c);
        lowZero[h] = flags8(op.rqLowZero.data() + c, m);
      } else {
        dbias[h] = _mm512_maskz_loadu_pd(m, op.bias.data() + c), dms[h] = _mm512_maskz_loadu_pd(m, op.mscale.data() + c);
        dneg[h] = flags8(op.mneg.data() + c, m);
      }
    }
    for (int64_t oy = 0; oy < OHo; oy++) {
      for (int64_t ox = 0; ox < OWo; ox++) {
        const int32_t* base = tile + ((oy * sy) * OW + ox * sx) * ldt + c0;
        __m512i v = _mm512_loadu_si512(base);
        if (Pool2x2) {
          const __m512i b = _mm512_loadu_si512(base + ldt), c = _mm512_loadu_si512(base + OW * ldt), d = _mm512_loadu_si512(base + (OW + 1) * ldt);
          const __m512i hi = _mm512_max_epi32(_mm512_max_epi32(v, b), _mm512_max_epi32(c, d));
          const __m512i lo = _mm512_min_epi32(_mm512_min_epi32(v, b), _mm512_min_epi32(c, d));
          v = _mm512_mask_blend_epi32(neg, hi, lo);
        } else if (pooled) {
          __m512i hi = v, lo = v;
          for (int64_t ky = 0; ky < wh; ky++) {
            for (int64_t kx = 0; kx < ww; kx++) {
              const __m512i w = _mm512_loadu_si512(base + (ky * OW + kx) * ldt);
              hi = _mm512_max_epi32(hi, w);
              lo = _mm512_min_epi32(lo, w);
            }
          }
          v = _mm512_mask_blend_epi32(neg, hi, lo);
        }
        v = _mm512_add_epi32(v, cb);
        const int64_t o = (oy * OWo + ox) * OC + c0;
        for (int h = 0; h < (nc > 8 ? 2 : 1); h++) {
          const __m256i acc = h ? _mm512_extracti64x4_epi64(v, 1) : _mm512_castsi512_si256(v);
          const __m256i q = op.intRequant ? requant8i(op, acc, m0[h], bmh[h], half[h], sh[h], lowZero[h]) : requant8(op, acc, dbias[h], dms[h], dneg[h]);
          storeRow8(out, o + 8 * h, h ? mHi : mLo, q, bytes);
        }
      }
    }
  }
}

// One sample at a time: the input is copied into a padded image (int8 inputs get +128; the border
// holds the zero point, written once per call), whose activation tiles amxConvGather gathers.
void runConvGather(const IntOp& op, const uint8_t* x, int64_t n, void* out, Scratch& s) {
  const int64_t og = op.OC, P = op.OH * op.OW, ldt = amxPaddedN(og);
  const int64_t C = op.C, rowBytes = (op.W + 2 * op.pw) * C, PH = op.H + 2 * op.ph, inRow = op.W * C;
  const bool pooled = op.poolKh > 0;
  uint8_t* pad = grow(s.col, static_cast<size_t>(PH * rowBytes + 256));
  int32_t* tile = grow(s.tile, static_cast<size_t>((P + 16) * ldt) + 64);
  const bool pool2x2 = pooled && op.poolKh == 2 && op.poolKw == 2;
  const uint64_t flip = op.in == IType::S8 ? 0x8080808080808080ULL : 0;
  const uint8_t padByte = static_cast<uint8_t>(op.zero) ^ static_cast<uint8_t>(flip & 0xff);
  std::memset(pad, padByte, static_cast<size_t>(PH * rowBytes + 256));
  const int64_t inPer = op.H * inRow;
  const size_t outPer = itypeBytes(op.out, (pooled ? op.POH * op.POW : P) * op.OC);
  for (int64_t smp = 0; smp < n; smp++) {
    const uint8_t* xs = x + smp * inPer;
    uint8_t* dst = pad + op.ph * rowBytes + op.pw * C;
    if (op.ph == 0 && op.pw == 0 && !flip) {
      dst = nullptr;  // the input rows are the padded image (read ahead: kActSlack)
    } else {
      for (int64_t iy = 0; iy < op.H; iy++) copyRowFlip(dst + iy * rowBytes, xs + iy * inRow, inRow, flip);
    }
    amxConvGather(dst ? pad : xs, rowBytes, op.OH, op.OW, op.sh, op.sw * C, op.K, og, op.gatherIdx.data(), op.gatherMasks.data(),
                  op.amxPacked.data(), tile, ldt);
    uint8_t* os = static_cast<uint8_t*>(out) + smp * outPer;
    if (pool2x2) {
      amxConvOutput<true>(op, tile, ldt, true, os);
    } else {
      amxConvOutput<false>(op, tile, ldt, true, os);
    }
  }
}

// Depthwise conv (intdw.h): per sample the padded copy, then blocks of positions into the int32 tile
// (a whole sample's map with a fused pooling) and the output stage, as the im2col path does.
void runDepthwise(const IntOp& op, const uint8_t* x, int64_t n, void* out, Scratch& s) {
  const int64_t P = op.OH * op.OW, ldt = op.dwCp;
  const bool pooled = op.poolKh > 0;
  const int64_t block = pooled ? P : kConvRows;
  uint8_t* pad = grow(s.col, static_cast<size_t>(intDepthwisePadBytes(op)) + kSlack);
  int32_t* tile = grow(s.tile, static_cast<size_t>(block * ldt) + 64);
  int32_t* ptile = pooled ? grow(s.ptile, static_cast<size_t>(op.POH * op.POW * ldt) + 64) : nullptr;
  const int64_t inPer = op.H * op.W * op.C;
  const size_t outPer = itypeBytes(op.out, (pooled ? op.POH * op.POW : P) * op.OC);
  const size_t valueBytes = itypeBytes(op.out, 1);
  for (int64_t smp = 0; smp < n; smp++) {
    uint8_t* os = static_cast<uint8_t*>(out) + smp * outPer;
    intDepthwisePad(op, x + smp * inPer, pad);
    for (int64_t p0 = 0; p0 < P; p0 += block) {
      const int64_t rows = std::min(block, P - p0);
      intDepthwiseTile(op, pad, p0, p0 + rows, tile);
      if (pooled) {
        poolAcc(op, tile, ldt, 0, op.OC, ptile);
        epilogue(op, ptile, ldt, op.POH * op.POW, 0, op.OC, os, op.OC);
      } else {
        epilogue(op, tile, ldt, rows, 0, op.OC, os + p0 * op.OC * valueBytes, op.OC);
      }
    }
  }
}

__attribute__((noinline)) void runConv(const IntOp& op, const uint8_t* x, int64_t n, void* out, void* out2, Scratch& s) {
  if (op.xnor) {
    intXnorConvRun(op, reinterpret_cast<const int8_t*>(x), n, out);
    return;
  }
  if (op.direct) {
    convDirect(op, x, n, out, op.second ? out2 : nullptr, s.col);
    return;
  }
  if (conv3x3Runs(op)) return conv3x3Run(op, x, n, out, op.second ? out2 : nullptr, s.col, s.tile, epilogue);
  if (op.dwConv) {
    runDepthwise(op, x, n, out, s);
    return;
  }
  const int64_t og = op.OC / op.groups, P = op.OH * op.OW;
  const int64_t Kp = rowBytes(op), ldt = tileStride(op);
  const bool pooled = op.poolKh > 0;
  if (op.amxGather) {
    runConvGather(op, x, n, out, s);
    return;
  }
  if (op.amxImplicit) {
    // one sample at a time, straight from the input (groups = 1)
    int32_t* tile = grow(s.tile, static_cast<size_t>((P + 16) * ldt) + 64);
    int32_t* ptile = pooled ? grow(s.ptile, static_cast<size_t>(op.POH * op.POW * ldt) + 64) : nullptr;
    const int64_t inPer = op.H * op.W * op.C;
    const size_t outPer = itypeBytes(op.out, (pooled ? op.POH * op.POW : P) * op.OC);
    const bool pool2x2 = pooled && op.poolKh == 2 && op.poolKw == 2;
    const bool fastOutput = op.outMode == IOutMode::Requantize && (!pooled || op.poolKh * op.poolKw <= 9);
    for (int64_t smp = 0; smp < n; smp++) {
      uint8_t* os = static_cast<uint8_t*>(out) + smp * outPer;
      // the requantizing output stage adds the column bias itself (a bias tile load per accumulator
      // tile waits for the tile's previous store)
      amxConvImplicit(x + smp * inPer, op.W, op.C, op.OH, op.OW, op.sh, op.sw, op.kh, op.kw, og, op.amxPacked.data(),
                      fastOutput ? nullptr : op.colBias.data(), tile, ldt);
      if (fastOutput && pool2x2) {
        amxConvOutput<true>(op, tile, ldt, true, os);
      } else if (fastOutput) {
        amxConvOutput<false>(op, tile, ldt, true, os);
      } else if (pooled) {
        poolAcc(op, tile, ldt, 0, og, ptile);
        epilogue(op, ptile, ldt, op.POH * op.POW, 0, og, os, op.OC);
      } else {
        epilogue(op, tile, ldt, P, 0, og, os, op.OC);
      }
    }
    return;
  }
  // With a fused pooling a block is a whole sample's map (the windows need all positions).
  const int64_t block = pooled ? P : kConvRows, blockRows = ceilDiv(block, 16) * 16;
  uint8_t* col = grow(s.col, static_cast<size_t>(blockRows * Kp) + kSlack);
  int32_t* tile = grow(s.tile, static_cast<size_t>(blockRows * ldt) + 64);
  int32_t* ptile = pooled ? grow(s.ptile, static_cast<size_t>(op.POH * op.POW * ldt) + 64) : nullptr;
  const int64_t inPer = op.H * op.W * op.C;
  const size_t outPer = itypeBytes(op.out, (pooled ? op.POH * op.POW : P) * op.OC);
  const size_t valueBytes = itypeBytes(op.out, 1);
  for (int64_t smp = 0; smp < n; smp++) {
    const uint8_t* xs = x + smp * inPer;
    uint8_t* os = static_cast<uint8_t*>(out) + smp * outPer;
    for (int64_t g = 0; g < op.groups; g++) {
      for (int64_t p0 = 0; p0 < P; p0 += block) {
        const int64_t rows = std::min(block, P - p0);
        im2col(op, xs, g, p0, p0 + rows, col, Kp);
        layerGemm(op, g, rows, col, Kp, tile, ldt);
        // element (p, c) of the sample's output is at p * OC + c; this group's channels are [g og, (g + 1) og)
        if (pooled) {
          poolAcc(op, tile, ldt, g * og, og, ptile);
          epilogue(op, ptile, ldt, op.POH * op.POW, g * og, og, os, op.OC);
        } else {
          epilogue(op, tile, ldt, rows, g * og, og, os + p0 * op.OC * valueBytes, op.OC);
        }
      }
    }
  }
}

// One group's dot product sum_j w[j] xc[j] (int32: |w| <= 128, |xc| <= 255, G <= 2^16).
inline int32_t groupDot(const int16_t* w, const int16_t* xc, int64_t G) {
  int32_t sum = 0;
  for (int64_t j = 0; j < G; j++) sum += static_cast<int32_t>(w[j]) * static_cast<int32_t>(xc[j]);
  return sum;
}

// A[c] of one sample for G % 16 == 0: per group, 16-element madds into 8 int32 lanes, then the
// lanes times r (as doubles: integers, every partial sum below 2^53, so the fma is exact) into 8
// double lanes, summed once at the end (exact for the same reason).
LOWBIT_TARGET_IRT inline int64_t groupRowAvx(const int16_t* w, const int16_t* xc, const int32_t* r, int64_t groups, int64_t G) {
  __m512d acc = _mm512_setzero_pd();
  for (int64_t g = 0; g < groups; g++) {
    __m256i lanes = _mm256_setzero_si256();
    const int16_t* wg = w + g * G;
    const int16_t* xg = xc + g * G;
    for (int64_t j = 0; j < G; j += 16) {
      lanes = _mm256_add_epi32(lanes, _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + j)),
                                                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + j))));
    }
    acc = _mm512_fmadd_pd(_mm512_cvtepi32_pd(lanes), _mm512_set1_pd(static_cast<double>(r[g])), acc);
  }
  return static_cast<int64_t>(_mm512_reduce_add_pd(acc));
}

#define LOWBIT_TARGET_GVNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,avx2")))

// The sums of MR samples (rows of x, ldx bytes apart; uint8, int8 inputs flipped by +128) and NP
// panels of 16 rows of a per-group linear on VNNI, blocked like the per-channel GEMM's micro-kernel:
// per group, the int32 tile of sum_{k in g} x'_k w_k (vpdpbusd over the group's G / 4 k-steps; exact:
// |sum| <= 255 * 128 * G < 2^31), then folded into int64 accumulators with r[c, g] (vpmuldq of the
// even lanes and of the odd lanes shifted down, r from the packed copy IntOp::groupRPacked): the
// weights are loaded once per MR samples and the fold is vectorised over the rows. Every step is
// exact integer arithmetic, so the result equals sum_g r_g sum_{k in g} x'_k w_k (|.| < 2^52,
// checked by intPrepareGroupLinear) whatever the order. out[i * 16 NP + 16 p + j]: sample i, row
// 16 p + j of the tile.
template <int MR, int NP>
LOWBIT_TARGET_GVNNI void groupTileVnni(const uint8_t* x, int64_t ldx, const int8_t* w, int64_t panelBytes, const int32_t* rp,
                                       int64_t rpPanel, int64_t groups, int64_t G4, int64_t* out) {
  __m512i se[MR][NP], so[MR][NP];
  for (int i = 0; i < MR; i++) {
    for (int p = 0; p < NP; p++) se[i][p] = so[i][p] = _mm512_setzero_si512();
  }
  for (int64_t g = 0; g < groups; g++) {
    __m512i acc[MR][NP];
    for (int i = 0; i < MR; i++) {
      for (int p = 0; p < NP; p++) acc[i][p] = _mm512_setzero_si512();
    }
    const int8_t* wg = w + g * G4 * 64;
    const uint8_t* xg = x + g * G4 * 4;
    // (vpdpbusd as inline asm: the intrinsic's non-destructive form costs a register copy per
    // multiply-add in GCC's code; unrolled so that the loop counter's uops stay off the vector ports)
#pragma GCC unroll 4
    for (int64_t q = 0; q < G4; q++) {
      __m512i b[NP];
      for (int p = 0; p < NP; p++) b[p] = _mm512_loadu_si512(wg + p * panelBytes + q * 64);
      for (int i = 0; i < MR; i++) {
        int32_t word;
        std::memcpy(&word, xg + i * ldx + q * 4, 4);
        const __m512i av = _mm512_set1_epi32(word);
        for (int p = 0; p < NP; p++) __asm__("vpdpbusd %[wv], %[av], %[cv]" : [cv] "+v"(acc[i][p]) : [av] "v"(av), [wv] "v"(b[p]));
      }
    }
    for (int p = 0; p < NP; p++) {
      const int32_t* r = rp + p * rpPanel + g * 32;
      const __m512i re = _mm512_loadu_si512(r);
      const __m512i ro = _mm512_loadu_si512(r + 16);
      for (int i = 0; i < MR; i++) {
        se[i][p] = _mm512_add_epi64(se[i][p], _mm512_mul_epi32(acc[i][p], re));
        so[i][p] = _mm512_add_epi64(so[i][p], _mm512_mul_epi32(_mm512_srli_epi64(acc[i][p], 32), ro));
      }
    }
  }
  // even rows from se, odd rows from so: interleave the 64-bit lanes back into row order
  const __m512i lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
  const __m512i hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
  for (int i = 0; i < MR; i++) {
    for (int p = 0; p < NP; p++) {
      int64_t* o = out + i * 16 * NP + 16 * p;
      _mm512_storeu_si512(o, _mm512_permutex2var_epi64(se[i][p], lo, so[i][p]));
      _mm512_storeu_si512(o + 8, _mm512_permutex2var_epi64(se[i][p], hi, so[i][p]));
    }
  }
}

using GroupTileFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, const int32_t*, int64_t, int64_t, int64_t, int64_t*);
constexpr int kGroupMR = 4;  // samples per tile
constexpr int kGroupNP = 2;  // panels of 16 rows per tile

template <int NP>
GroupTileFn groupTileOf(int64_t mr) {
  switch (mr) {
    case 1: return groupTileVnni<1, NP>;
    case 2: return groupTileVnni<2, NP>;
    case 3: return groupTileVnni<3, NP>;
    default: return groupTileVnni<4, NP>;
  }
}

// The requantize / dequantize stage of a per-group linear's tile (rows samples, nc output rows from
// c0, ldt int64 per sample; samples r0 .. r0 + rows - 1 of the output) of sums before the zero-point term: A = tile - groupCorr, then as
// requantOne / the scalar dequantize 8 rows at a time (every step the same IEEE operation, so the
// same values: A and A 2^k + bias are exact doubles, |.| < 2^53).
LOWBIT_TARGET_IRT void groupEpilogueAvx512(const IntOp& op, const int64_t* tile, int64_t ldt, int64_t r0, int64_t rows, int64_t c0, int64_t nc,
                                           void* out) {
  const int64_t O = op.OC;
  const bool requant = op.outMode == IOutMode::Requantize, bytes = op.out == IType::U8 || op.out == IType::S8;
  for (int64_t j = 0; j < nc; j += 8) {
    const int64_t valid = std::min<int64_t>(8, nc - j);
    const __mmask8 m = static_cast<__mmask8>((1u << valid) - 1u);
    const int64_t c = c0 + j;
    const __m512i corr = _mm512_maskz_loadu_epi64(m, op.groupCorr.data() + c);
    if (requant) {
      const __m512d bias = _mm512_maskz_loadu_pd(m, op.bias.data() + c);
      const __m512d ms = _mm512_maskz_loadu_pd(m, op.mscale.data() + c);
      const __mmask8 mneg = _mm512_cmpneq_epi64_mask(
          _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(op.mneg.data() + c))), _mm512_setzero_si512()) & m;
      for (int64_t r = 0; r < rows; r++) {
        const __m512d A = _mm512_cvtepi64_pd(_mm512_sub_epi64(_mm512_maskz_loadu_epi64(m, tile + r * ldt + j), corr));
        storeRow8(out, (r0 + r) * O + c, m, requant8x(op, _mm512_fmadd_pd(A, _mm512_set1_pd(op.up), bias), ms, mneg), bytes);
      }
    } else {
      const __m512d S = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, op.S.data() + c));
      const __m512d B = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(m, op.B.data() + c));
      for (int64_t r = 0; r < rows; r++) {
        __m512d y = _mm512_mul_pd(_mm512_cvtepi64_pd(_mm512_sub_epi64(_mm512_maskz_loadu_epi64(m, tile + r * ldt + j), corr)), S);
        __asm__("" : "+v"(y));
        y = _mm512_add_pd(y, B);
        _mm256_mask_storeu_ps(static_cast<float*>(out) + (r0 + r) * O + c, m, _mm512_cvtpd_ps(y));
      }
    }
  }
}

// The requantize / dequantize stage of one per-group linear output (sample r, row c) from A.
inline void groupStore(const IntOp& op, int64_t A, int64_t r, int64_t c, void* out) {
  const int64_t O = op.OC;
  if (op.outMode == IOutMode::Requantize) {
    storeValue(op.out, out, r * O + c, requantOne(op, A, c));
  } else {
    const double y = opaque(static_cast<double>(A) * static_cast<double>(op.S[c]));
    static_cast<float*>(out)[r * O + c] = static_cast<float>(y + static_cast<double>(op.B[c]));
  }
}

// The VNNI path of runGroupLinear: the inputs as uint8 (int8 ones flipped; gathered into the TS
// column order after a permuted flatten), then per block of kGroupNP panels (32 rows: their weights,
// K * 32 bytes, stay in L1 across the samples) and kGroupMR samples groupTileVnni, minus each row's
// zero-point term groupCorr[c], through the output stage.
void runGroupLinearVnni(const IntOp& op, const uint8_t* x, int64_t n, void* out) {
  const int64_t K = op.K, O = op.OC, G = op.groupSize, groups = K / G, panels = ceilDiv(O, 16);
  const bool gathered = !op.gather.empty();
  const uint8_t flip = op.in == IType::S8 ? 0x80 : 0;
  std::vector<uint8_t> xu(static_cast<size_t>(n * K));
  for (int64_t r = 0; r < n; r++) {
    const uint8_t* row = x + r * K;
    uint8_t* dst = xu.data() + r * K;
    if (gathered) {
      for (int64_t k = 0; k < K; k++) dst[k] = row[op.gather[static_cast<size_t>(k)]] ^ flip;
    } else {
      for (int64_t k = 0; k < K; k++) dst[k] = row[k] ^ flip;
    }
  }
  const int64_t panelBytes = K * 16, rpPanel = groups * 32;
  int64_t tile[kGroupMR * kGroupNP * 16];
  for (int64_t p0 = 0; p0 < panels; p0 += kGroupNP) {
    const int64_t np = std::min<int64_t>(kGroupNP, panels - p0);
    const int64_t c0 = p0 * 16, nc = std::min<int64_t>(np * 16, O - c0);
    for (int64_t s0 = 0; s0 < n; s0 += kGroupMR) {
      const int64_t mr = std::min<int64_t>(kGroupMR, n - s0);
      const GroupTileFn fn = np == 2 ? groupTileOf<2>(mr) : groupTileOf<1>(mr);
      fn(xu.data() + s0 * K, K, op.groupPacked.data() + p0 * panelBytes, panelBytes, op.groupRPacked.data() + p0 * rpPanel, rpPanel,
         groups, G / 4, tile);
      groupEpilogueAvx512(op, tile, 16 * np, s0, mr, c0, nc, out);
    }
  }
}

// Per-group linear (IntOp::groupSize): on VNNI (IntOp::groupVnni) runGroupLinearVnni; otherwise
// the centred inputs as int16 and per row (int16 weights) and sample groupRowAvx or the scalar loop.
// Then the requantize / dequantize stage on A = sum_g r[c, g] sum_{k in g} (x_k - z) w[c, k].
void runGroupLinear(const IntOp& op, const uint8_t* x, int64_t n, void* out) {
  if (op.groupVnni) {
    runGroupLinearVnni(op, x, n, out);
    return;
  }
  const int64_t K = op.K, O = op.OC, G = op.groupSize, groups = K / G;
  const bool gathered = !op.gather.empty();
  std::vector<int16_t> xc(static_cast<size_t>(n * K));
  for (int64_t r = 0; r < n; r++) {
    const void* row = x + r * K;  // byte inputs (checked by intPlanFinish)
    for (int64_t k = 0; k < K; k++) {
      xc[static_cast<size_t>(r * K + k)] = static_cast<int16_t>(loadValue(op.in, row, gathered ? op.gather[static_cast<size_t>(k)] : k) - op.zero);
    }
  }
  const bool avx = useAvx512() && G % 16 == 0;
  for (int64_t c = 0; c < O; c++) {
    const int32_t* rm = op.groupMult.data() + c * groups;
    for (int64_t r = 0; r < n; r++) {
      int64_t A = 0;
      if (avx) {
        A = groupRowAvx(op.wgroup.data() + c * K, xc.data() + r * K, rm, groups, G);
      } else {
        const int16_t* w = op.wgroup.data() + c * K;
        const int16_t* xr = xc.data() + r * K;
        for (int64_t g = 0; g < groups; g++) A += static_cast<int64_t>(rm[g]) * groupDot(w + g * G, xr + g * G, G);
      }
      groupStore(op, A, r, c, out);
    }
  }
}

__attribute__((noinline)) void runLinear(const IntOp& op, const uint8_t* x, int64_t n, void* out, Scratch& s) {
  if (op.groupSize > 0) {
    runGroupLinear(op, x, n, out);
    return;
  }
  const int64_t K = op.K, O = op.OC;
  if (op.in == IType::Bits && op.fusedSign) {
    const SignOutput sign{op.lower.data(), op.upper.data(), out, op.out == IType::Bits ? ceilDiv(O, 64) : O, op.out == IType::Bits,
                          op.popLo.data(), op.popRange.data()};
    gemmBinarySignSerial(n, O, K, reinterpret_cast<const uint64_t*>(x), op.wpanels.data(), sign);
    return;
  }
  int64_t ldt = O;
  int32_t* tile = nullptr;
  if (op.in == IType::Bits) {
    tile = grow(s.tile, static_cast<size_t>(n * O) + 64);
    gemmBinarySerial(n, O, K, reinterpret_cast<const uint64_t*>(x), op.wbits.data(), op.wpanels.data(), tile, O);
  } else {
    const uint8_t* A = x;
    int64_t lda = K;
    // int8 inputs get +128; the AMX tiles read whole 16-row tiles of amxPaddedK(K) bytes, so they
    // get a copy in a buffer of 16 ceil(n / 16) such rows
    if (op.in == IType::S8 || op.amx) {
      const int64_t Kp = rowBytes(op);
      uint8_t* col = grow(s.col, static_cast<size_t>(ceilDiv(n, 16) * 16 * Kp) + kSlack);
      const uint64_t flip = op.in == IType::S8 ? 0x8080808080808080ULL : 0;
      if (useAvx512()) {
        for (int64_t r = 0; r < n; r++) WideRuns::copy(col + r * Kp, x + r * K, K, flip);
      } else {
        for (int64_t r = 0; r < n; r++) copyRun(col + r * Kp, x + r * K, K, flip);
      }
      A = col;
      lda = Kp;
    }
    if (op.fusedSign) {
      const SignOutput sign{op.lower.data(), op.upper.data(), out, op.out == IType::Bits ? ceilDiv(O, 64) : O, op.out == IType::Bits};
      gemmInt8SignSerial(n, O, K, A, lda, op.packed.data(), op.rowSums.data(), negZeroOf(op), sign);
      return;
    }
    ldt = tileStride(op);
    tile = grow(s.tile, static_cast<size_t>(ceilDiv(n, 16) * 16 * ldt) + 64);
    layerGemm(op, 0, n, A, lda, tile, ldt);
  }
  if (op.out == IType::Bits) {
    const int64_t wordsOut = ceilDiv(O, 64);
    std::memset(out, 0, static_cast<size_t>(n * wordsOut) * 8);
    epilogue(op, tile, ldt, n, 0, O, out, wordsOut);
  } else {
    epilogue(op, tile, ldt, n, 0, O, out, O);
  }
}

// Max pooling of NHWC values of type T; padded cells never win (a window of padding only gives 0,
// as the reference's -Infinity stored into an Int32Array).
template <class T>
void maxPoolTyped(const IntOp& op, const T* x, int64_t n, T* out, std::vector<T>& rowMax) {
  const int64_t C = op.C, H = op.H, W = op.W, WC = W * C;
  const bool plain = op.ph == 0 && op.pw == 0;
  T* tmp = grow(rowMax, static_cast<size_t>(WC));
  for (int64_t smp = 0; smp < n; smp++) {
    const T* xs = x + smp * H * WC;
    T* os = out + smp * op.OH * op.OW * C;
    for (int64_t oy = 0; oy < op.OH; oy++) {
      if (plain) {
        // vertical max of the window's rows, then the horizontal max per output column
        const T* r0 = xs + (oy * op.sh) * WC;
        for (int64_t j = 0; j < WC; j++) tmp[j] = r0[j];
        for (int64_t ky = 1; ky < op.kh; ky++) {
          const T* r = r0 + ky * WC;
          for (int64_t j = 0; j < WC; j++) tmp[j] = r[j] > tmp[j] ? r[j] : tmp[j];
        }
        for (int64_t ox = 0; ox < op.OW; ox++) {
          T* o = os + (oy * op.OW + ox) * C;
          const T* t0 = tmp + ox * op.sw * C;
          for (int64_t c = 0; c < C; c++) o[c] = t0[c];
          for (int64_t kx = 1; kx < op.kw; kx++) {
            const T* t = t0 + kx * C;
            for (int64_t c = 0; c < C; c++) o[c] = t[c] > o[c] ? t[c] : o[c];
          }
        }
        continue;
      }
      for (int64_t ox = 0; ox < op.OW; ox++) {
        for (int64_t c = 0; c < C; c++) {
          bool any = false;
          T best = 0;
          for (int64_t ky = 0; ky < op.kh; ky++) {
            const int64_t iy = oy * op.sh - op.ph + ky;
            if (iy < 0 || iy >= H) continue;
            for (int64_t kx = 0; kx < op.kw; kx++) {
              const int64_t ix = ox * op.sw - op.pw + kx;
              if (ix < 0 || ix >= W) continue;
              const T v = xs[(iy * W + ix) * C + c];
              if (!any || v > best) best = v;
              any = true;
            }
          }
          os[(oy * op.OW + ox) * C + c] = best;
        }
      }
    }
  }
}

void runMaxPool(const IntOp& op, const void* x, int64_t n, void* out, Scratch& s) {
  switch (op.in) {
    case IType::U8:
      maxPoolTyped(op, static_cast<const uint8_t*>(x), n, static_cast<uint8_t*>(out), s.rowU8);
      break;
    case IType::S8:
      maxPoolTyped(op, static_cast<const int8_t*>(x), n, static_cast<int8_t*>(out), s.rowS8);
      break;
    default:
      maxPoolTyped(op, static_cast<const int32_t*>(x), n, static_cast<int32_t*>(out), s.rowI32);
      break;
  }
}

void runClamp(const IntOp& op, const void* x, int64_t n, void* out) {
  const int64_t count = n * op.H * op.W * op.C;
  for (int64_t i = 0; i < count; i++) {
    const double a = loadValue(op.in, x, i);
    storeValue(op.out, out, i, static_cast<int32_t>(a < op.clo ? op.clo : a > op.chi ? op.chi : a));
  }
}

// Elementwise, so the layout does not matter: both inputs are [count] values of one sample order
// (the arithmetic and its vector kernels: intadd.cc).
// A sign add (outMode Sign) writes int8 +-1 (signadd.cc).
void runAdd(const IntOp& op, const void* a, const void* b, int64_t n, void* out) {
  if (op.outMode == IOutMode::Sign) {
    intSignAddRun(op, a, b, n * op.C * op.H * op.W, static_cast<int8_t*>(out));
    return;
  }
  intAddRun(op, a, b, n * op.C * op.H * op.W, out);
}

// Per sample: out[p] = in[gather[p]] (a layout change; values of one type, copied unchanged).
template <typename T>
void permuteAs(const IntOp& op, const T* x, int64_t n, T* out) {
  const int64_t count = op.C * op.H * op.W;
  const int32_t* g = op.gather.data();
  for (int64_t s = 0; s < n; s++, x += count, out += count) {
    for (int64_t p = 0; p < count; p++) out[p] = x[g[p]];
  }
}

void runPermute(const IntOp& op, const void* x, int64_t n, void* out) {
  switch (op.in) {
    case IType::U8: permuteAs(op, static_cast<const uint8_t*>(x), n, static_cast<uint8_t*>(out)); break;
    case IType::S8: permuteAs(op, static_cast<const int8_t*>(x), n, static_cast<int8_t*>(out)); break;
    default: permuteAs(op, static_cast<const int32_t*>(x), n, static_cast<int32_t*>(out)); break;
  }
}

int64_t elementsOut(const IntOp& op) { return op.OH * op.OW * op.OC; }

// Whether an op after index `after` reads the value op `after` wrote to `slot` before it is overwritten.
bool slotReadAfter(const std::vector<IntOp>& ops, size_t after, int32_t slot, size_t skip) {
  for (size_t j = after + 1; j < ops.size(); j++) {
    if (j != skip && (ops[j].src == slot || (ops[j].kind == IOpKind::Add && ops[j].src2 == slot))) return true;
    if (ops[j].dst == slot && j + 1 != ops.size()) return false;
  }
  return false;
}

}  // namespace

// Sets up the VNNI path of a per-group linear (IntOp::groupVnni) when the CPU has AVX-512 VNNI, G
// is a multiple of 4 (up to 2^16: a group's int32 sum cannot wrap) and every row's
// sum_k 255 |w_k| |r_g(k)| stays below 2^52 (the int64 sums of groupTileVnni and the zero-point
// term are then far from overflow): the int8 weights and r packed per panel of 16 rows (see
// IntOp::groupPacked), and per row z' sum_g r_g sum_{k in g} w_k with z' the input zero point
// (+128 for int8 inputs).
void intPrepareGroupLinear(IntOp* op) {
  op->groupVnni = false;
  const int64_t K = op->K, O = op->OC, G = op->groupSize;
  if (G <= 0 || G % 4 != 0 || G > 65536 || !useAvx512() || !__builtin_cpu_supports("avx512vnni")) return;
  if (op->in != IType::U8 && op->in != IType::S8) return;
  const int64_t groups = K / G;
  const int64_t zp = op->zero + (op->in == IType::S8 ? 128 : 0);
  std::vector<int64_t> corr(static_cast<size_t>(O));
  for (int64_t c = 0; c < O; c++) {
    double bound = 0;
    int64_t sum = 0;
    for (int64_t g = 0; g < groups; g++) {
      int64_t ws = 0, wa = 0;
      for (int64_t j = 0; j < G; j++) {
        const int64_t v = op->wgroup[static_cast<size_t>(c * K + g * G + j)];
        ws += v;
        wa += v < 0 ? -v : v;
      }
      const int64_t rg = op->groupMult[static_cast<size_t>(c * groups + g)];
      bound += 255.0 * static_cast<double>(wa) * std::fabs(static_cast<double>(rg));
      sum += rg * ws;
    }
    if (!(bound < 0x1p52) || !(std::fabs(static_cast<double>(zp) * static_cast<double>(sum)) < 0x1p52)) return;
    corr[static_cast<size_t>(c)] = zp * sum;
  }
  const int64_t panels = (O + 15) / 16, K4 = K / 4;
  op->groupPacked.assign(static_cast<size_t>(panels * K * 16), 0);
  op->groupRPacked.assign(static_cast<size_t>(panels * groups * 32), 0);
  for (int64_t c = 0; c < O; c++) {
    const int64_t P = c / 16, j = c % 16;
    for (int64_t q = 0; q < K4; q++) {
      for (int64_t b = 0; b < 4; b++) {
        op->groupPacked[static_cast<size_t>((P * K4 + q) * 64 + j * 4 + b)] = static_cast<int8_t>(op->wgroup[static_cast<size_t>(c * K + q * 4 + b)]);
      }
    }
    for (int64_t g = 0; g < groups; g++) {
      int32_t* rp = op->groupRPacked.data() + (P * groups + g) * 32;
      const int32_t rg = op->groupMult[static_cast<size_t>(c * groups + g)];
      rp[j] = rg;
      if (j % 2 == 1) rp[16 + j - 1] = rg;
    }
  }
  op->groupCorr = std::move(corr);
  op->groupVnni = true;
}

void intAddValues(const IntOp& op, const void* a, const void* b, int64_t count, void* out) {
  intAddRun(op, a, b, count, out);
}

void intLayerOutput(const IntOp& op, const int32_t* tile, int64_t ldt, int64_t rows, int64_t c0, int64_t nc, void* out, int64_t ldo) {
  epilogue(op, tile, ldt, rows, c0, nc, out, ldo);
}

void intPrepareDirectConv(IntOp* op, const int8_t* w) {
  op->direct = false;
  if (intDepthwisePrepare(op, w)) return;
  op->conv3x3 = conv3x3Prepare(*op, w);
  if (op->conv3x3) return;  // a 3x3 stem (C = 1..3) runs on the direct 3x3 kernel, not the permute one below
  if (op->kind != IOpKind::Conv || op->groups != 1 || op->C != 1 || op->K > 64 || op->outMode != IOutMode::Requantize ||
      (op->out != IType::U8 && op->out != IType::S8) || !directConvAvailable()) {
    return;
  }
  // tap t = (ky, kx) of position ox0 + j lies at off[t] + j sw from the block's first window
  const int64_t PW = op->W + 2 * op->pw, K = op->K, G = ceilDiv(K, 4);
  std::vector<int64_t> off(static_cast<size_t>(K));
  for (int64_t ky = 0; ky < op->kh; ky++)
    for (int64_t kx = 0; kx < op->kw; kx++) off[static_cast<size_t>(ky * op->kw + kx)] = ky * op->dh * PW + kx * op->dw;
  for (int64_t t = 0; t < K; t++) {
    if (off[static_cast<size_t>(t)] + 15 * op->sw >= 192) return;
  }
  op->directIdx.assign(static_cast<size_t>(128 * G), 0);
  op->directMask.assign(static_cast<size_t>(2 * G), 0);
  op->directMode.assign(static_cast<size_t>(G), 0);
  for (int64_t g = 0; g < G; g++) {
    int64_t lo = 192, hi = -1;
    for (int64_t i = 0; i < 4 && 4 * g + i < K; i++) {
      lo = std::min(lo, off[static_cast<size_t>(4 * g + i)]);
      hi = std::max(hi, off[static_cast<size_t>(4 * g + i)] + 15 * op->sw);
    }
    // mode 0: bytes [0, 128) (one two-source permute), 1: bytes [64, 192), 2: both halves (two permutes)
    const uint8_t mode = hi < 128 ? 0 : lo >= 64 ? 1 : 2;
    op->directMode[static_cast<size_t>(g)] = mode;
    for (int64_t j = 0; j < 16; j++) {
      for (int64_t i = 0; i < 4; i++) {
        const int64_t t = 4 * g + i, lane = 4 * j + i;
        if (t >= K) continue;  // meets a zero weight byte
        const int64_t o = off[static_cast<size_t>(t)] + j * op->sw;
        uint8_t* idx = op->directIdx.data() + 128 * g;
        if (mode == 0) {
          idx[lane] = static_cast<uint8_t>(o);
        } else if (mode == 1) {
          idx[lane] = static_cast<uint8_t>(o - 64);
        } else {
          const int h = o >= 128 ? 1 : 0;
          idx[64 * h + lane] = static_cast<uint8_t>(o - 128 * h);
          op->directMask[static_cast<size_t>(2 * g + h)] |= uint64_t{1} << lane;
        }
      }
    }
  }
  // weights as 32-bit words [o][g]: byte i of word g = w[o, 4 g + i] (0 past K)
  op->wdirect.assign(static_cast<size_t>(op->OC * G), 0);
  for (int64_t o = 0; o < op->OC; o++) {
    for (int64_t t = 0; t < K; t++) {
      const uint32_t byte = static_cast<uint8_t>(w[o * K + t]);
      reinterpret_cast<uint32_t&>(op->wdirect[static_cast<size_t>(o * G + t / 4)]) |= byte << (8 * (t % 4));
    }
  }
  op->direct = true;
}

void intPrepareRequant(IntOp* op, const int32_t* mult, const int32_t* shift, const int32_t* bias, int32_t biasShift) {
  op->intRequant = false;
  const size_t O = static_cast<size_t>(op->OC);
  op->rqM0.assign(O, 0);
  op->rqBmh.assign(O, 0);
  op->rqHalf.assign(O, 1);
  op->rqShift.assign(O, 1);
  op->rqLowZero.assign(O + 16, 0);
  const int k = biasShift;
  for (size_t c = 0; c < O; c++) {
    if (mult[c] == 0) continue;  // S = 0, (0 + 1) >> 1 = 0
    const int64_t np = static_cast<int64_t>(shift[c]) - k;
    const int64_t bm = static_cast<int64_t>(bias[c]) * mult[c];  // |bm| < 2^62
    const int64_t bmh = bm >> k;                                  // floor(bm / 2^k)
    // |acc M0| < 2^62, |bmh| < 2^61 and 2^(n' - 1) <= 2^61 keep S and S + 2^(n' - 1) inside int64
    if (np < 1 || np > 62 || bmh >= (int64_t{1} << 61) || bmh <= -(int64_t{1} << 61)) return;
    op->rqM0[c] = mult[c];
    op->rqBmh[c] = bmh;
    op->rqHalf[c] = int64_t{1} << (np - 1);
    op->rqShift[c] = np;
    op->rqLowZero[c] = bm - (bmh << k) == 0 ? 1 : 0;
  }
  op->intRequant = true;
}

// Whether the conv's activation tiles can be gathered (amxConvGather) from its padded input image,
// filling the permute tables.
bool prepareGather(IntOp* op) {
  if (op->kind != IOpKind::Conv || op->groups != 1 || op->K > 64 || op->outMode != IOutMode::Requantize) return false;
  const int64_t rowBytes = (op->W + 2 * op->pw) * op->C;
  std::vector<int64_t> off(static_cast<size_t>(op->K));
  for (int64_t ky = 0; ky < op->kh; ky++)
    for (int64_t kx = 0; kx < op->kw; kx++)
      for (int64_t c = 0; c < op->C; c++) off[static_cast<size_t>((ky * op->kw + kx) * op->C + c)] = ky * op->dh * rowBytes + kx * op->dw * op->C + c;
  return amxGatherTables(off.data(), op->K, op->sw * op->C, &op->gatherIdx, &op->gatherMasks);
}

void intPrepareAmx(IntOp* op, const int8_t* w) {
  op->amx = false;
  if ((op->kind != IOpKind::Conv && op->kind != IOpKind::Linear) || op->in == IType::Bits || op->K <= 0 || !amxAvailable()) return;
  if (op->direct) return;  // (the direct kernel beats gathered AMX tiles on one input channel)
  if (op->dwConv) return;  // (groups = C = OC: one-row GEMMs per channel, the depthwise kernel instead)
  op->amxGather = prepareGather(op);
  const int64_t og = op->OC / op->groups, np = amxPaddedN(og);
  const int64_t rowBytes = (op->kw * op->C + 3) / 4 * 4;
  op->amxImplicit = !op->amxGather && op->kind == IOpKind::Conv && op->groups == 1 && op->in == IType::U8 && op->dh == 1 && op->dw == 1 &&
                    op->ph == 0 && op->pw == 0 && rowBytes <= 64 && static_cast<size_t>(16 * op->sw * op->C + 64) <= kActSlack;
  op->amxStride = op->amxImplicit ? amxConvPackedBytes(og, op->kh, op->kw, op->C) : amxPackedBytes(og, op->K);
  op->amxPacked.assign(static_cast<size_t>(op->amxStride * op->groups), 0);
  op->colBias.assign(static_cast<size_t>(np * op->groups), 0);
  const uint32_t negZero = static_cast<uint32_t>(negZeroOf(*op));
  for (int64_t g = 0; g < op->groups; g++) {
    if (op->amxImplicit) {
      packAmxConv(w, og, op->kh, op->kw, op->C, op->amxPacked.data());
    } else {
      packAmx(w + g * og * op->K, og, op->K, op->amxPacked.data() + g * op->amxStride);
    }
    for (int64_t j = 0; j < og; j++) op->colBias[g * np + j] = static_cast<int32_t>(static_cast<uint32_t>(op->rowSums[g * og + j]) * negZero);
  }
  op->amx = true;
}

void intPlanFuse(IntPlan* plan) {
  auto& ops = plan->ops;
  // a Linear's sign stage (bits or int8 +-1) runs inside the GEMM's micro-kernel where that kernel has it
  for (IntOp& op : ops) {
    if (op.kind != IOpKind::Linear || op.outMode != IOutMode::Sign || (op.out != IType::Bits && op.out != IType::S8)) continue;
    op.fusedSign = op.in == IType::Bits ? binaryUsesPanels() : !op.amx && int8SignFusable();
    if (op.fusedSign && op.in == IType::Bits) {
      op.popLo.resize(static_cast<size_t>(op.OC));
      op.popRange.resize(static_cast<size_t>(op.OC));
      binarySignThresholds(op.OC, op.K, op.lower.data(), op.upper.data(), op.popLo.data(), op.popRange.data());
    }
  }
  for (size_t i = 0; i + 1 < ops.size(); i++) {
    IntOp& conv = ops[i];
    const IntOp& pool = ops[i + 1];
    if (conv.kind != IOpKind::Conv || conv.xnor || conv.outMode != IOutMode::Requantize || conv.poolKh > 0 || pool.kind != IOpKind::MaxPool ||
        pool.ph != 0 || pool.pw != 0 || conv.OH * conv.OW > 4096) {
      continue;
    }
    if (conv.direct && (pool.kh != 2 || pool.kw != 2 || pool.sh != 2 || pool.sw != 2)) continue;
    // the pool must be the conv's only reader (in a DAG another op may read the conv output too)
    if (pool.src != conv.dst || slotReadAfter(ops, i, conv.dst, i + 1)) continue;
    if (plan->slots && (pool.dst == conv.src)) {
      // the conv would write the slot it reads: the pooled value moves to a new slot, renamed in
      // its readers (up to the next op writing the old slot)
      const int32_t old = pool.dst, fresh = plan->slotCount++;
      for (size_t j = i + 2; j < ops.size(); j++) {
        if (ops[j].src == old) ops[j].src = fresh;
        if (ops[j].kind == IOpKind::Add && ops[j].src2 == old) ops[j].src2 = fresh;
        if (ops[j].dst == old) break;
      }
      conv.dst = fresh;
    } else {
      conv.dst = pool.dst;
    }
    conv.poolKh = pool.kh, conv.poolKw = pool.kw, conv.poolSh = pool.sh, conv.poolSw = pool.sw;
    conv.POH = pool.OH, conv.POW = pool.OW;
    conv.mneg.resize(static_cast<size_t>(conv.OC) + 16, 0);  // poolAccAvx512 reads 16 flags at a time
    ops.erase(ops.begin() + static_cast<std::ptrdiff_t>(i) + 1);
  }
  if (!plan->slots) {  // a chain: ping-pong again over the remaining ops
    for (size_t i = 0; i < ops.size(); i++) {
      ops[i].src = i == 0 ? -1 : static_cast<int32_t>((i - 1) % 2);
      ops[i].dst = i + 1 == ops.size() ? -1 : static_cast<int32_t>(i % 2);
    }
  }
}

size_t itypeBytes(IType t, int64_t elements) {
  switch (t) {
    case IType::U8:
    case IType::S8: return static_cast<size_t>(elements);
    case IType::Bits: return static_cast<size_t>(ceilDiv(elements, 64) * 8);
    default: return static_cast<size_t>(elements) * 4;
  }
}

void intPlanShareConv(IntPlan* plan) {
  if (!plan->slots) return;  // (a chain has no value read twice)
  auto& ops = plan->ops;
  const auto sameConv = [](const IntOp& a, const IntOp& b) {
    return a.src == b.src && a.in == b.in && a.zero == b.zero && a.C == b.C && a.H == b.H && a.W == b.W && a.OC == b.OC && a.OH == b.OH &&
           a.OW == b.OW && a.kh == b.kh && a.kw == b.kw && a.sh == b.sh && a.sw == b.sw && a.ph == b.ph && a.pw == b.pw && a.dh == b.dh &&
           a.dw == b.dw && a.groups == b.groups && a.K == b.K && a.wdirect == b.wdirect && a.rowSums == b.rowSums &&
           a.directIdx == b.directIdx && a.directMode == b.directMode && a.directMask == b.directMask && conv3x3SameWeights(a, b);
  };
  const auto shareable = [](const IntOp& op) {
    return op.kind == IOpKind::Conv && (op.direct || (op.conv3x3 && conv3x3Runs(op))) && op.poolKh == 0 && !op.second &&
           op.outMode == IOutMode::Requantize &&
           (op.out == IType::U8 || op.out == IType::S8);
  };
  for (size_t i = 0; i + 1 < ops.size(); i++) {
    if (!shareable(ops[i])) continue;
    for (size_t j = i + 1; j + 1 < ops.size(); j++) {  // (the last op writes the model output)
      const IntOp& b = ops[j];
      if (shareable(b) && sameConv(ops[i], b)) {
        // op i writes b's value at once, into a fresh slot (b's own slot may hold other values
        // between i and j), renamed in b's readers up to the next op writing b's slot
        const int32_t old = b.dst, fresh = plan->slotCount++;
        ops[i].second = std::make_shared<const IntOp>(b);
        ops[i].dst2 = fresh;
        ops.erase(ops.begin() + static_cast<std::ptrdiff_t>(j));
        for (size_t k = j; k < ops.size(); k++) {
          if (ops[k].src == old) ops[k].src = fresh;
          if (ops[k].kind == IOpKind::Add && ops[k].src2 == old) ops[k].src2 = fresh;
          if (ops[k].dst == old || (ops[k].second && ops[k].dst2 == old)) break;
        }
        break;
      }
      // past a write of the input slot no later conv reads the same value
      if (ops[j].dst == ops[i].src) break;
    }
  }
}

std::string intPlanFinish(IntPlan* plan) {
  if (plan->ops.empty() || plan->ops[0].kind != IOpKind::Quantize) return "the plan must start with a quantize op";
  constexpr int32_t kMaxSlots = 256;
  const size_t nops = plan->ops.size();
  if (!plan->slots) {
    for (size_t i = 0; i < nops; i++) {
      IntOp& op = plan->ops[i];
      op.src = i == 0 ? -1 : static_cast<int32_t>((i - 1) % 2);
      op.src2 = -1;
      op.dst = i + 1 == nops ? -1 : static_cast<int32_t>(i % 2);
    }
  }
  // the value each slot holds while the ops run in order: written yet, type, elements per sample
  struct SlotValue {
    bool written = false;
    IType type = IType::F32;
    int64_t elements = 0;
  };
  std::vector<SlotValue> slotValues(kMaxSlots);
  int32_t slotCount = 0;
  size_t maxAct = 0, maxCol = 0;
  for (size_t i = 0; i < nops; i++) {
    IntOp& op = plan->ops[i];
    const std::string at = "op " + std::to_string(i) + ": ";
    if (op.C <= 0 || op.H <= 0 || op.W <= 0 || op.OC <= 0 || op.OH <= 0 || op.OW <= 0) return at + "bad dimensions";
    if (op.C * op.H * op.W > (int64_t{1} << 30) || op.OC * op.OH * op.OW > (int64_t{1} << 30)) return at + "too large";
    const bool last = i + 1 == nops;
    if (last ? op.dst != -1 : (op.dst < 0 || op.dst >= kMaxSlots)) {
      return at + "output slot " + std::to_string(op.dst) + (last ? " (the last op writes the model output: -1)" : " out of range [0, 256)");
    }
    if ((op.kind == IOpKind::Quantize) != (op.src == -1)) return at + "only the quantize op reads the model input (slot -1)";
    const auto checkInput = [&](int32_t slot, IType type, const char* which) -> std::string {
      if (slot == -1) return "";
      if (slot < -1 || slot >= kMaxSlots || !slotValues[static_cast<size_t>(slot)].written) {
        return at + which + " slot " + std::to_string(slot) + " is not written by an earlier op";
      }
      if (slot == op.dst) return at + which + " slot " + std::to_string(slot) + " is also the output slot";
      const SlotValue& v = slotValues[static_cast<size_t>(slot)];
      if (v.type == IType::F32) return at + "float values can only be the final output";
      if (v.type != type) return at + which + " type differs from the producer's output";
      if (v.elements != op.C * op.H * op.W) return at + which + " size differs from the producer's output";
      return "";
    };
    if (op.kind == IOpKind::Add && op.src2 < 0) return at + "an add reads two slots (second input slot " + std::to_string(op.src2) + ")";
    std::string err = checkInput(op.src, op.in, "input");
    if (err.empty() && op.kind == IOpKind::Add) err = checkInput(op.src2, op.in2, "second input");
    if (!err.empty()) return err;
    if (op.kind != IOpKind::Add && op.src2 != -1) return at + "only an add has a second input";
    const bool bytesIn = op.in == IType::U8 || op.in == IType::S8;
    switch (op.kind) {
      case IOpKind::Quantize:
        if (i != 0 || op.in != IType::F32 || op.out == IType::F32 || op.out == IType::Bits) return at + "bad quantize";
        if (op.OC != op.C || op.OH != op.H || op.OW != op.W || !(op.scale > 0)) return at + "bad quantize";
        plan->inputSize = op.C * op.H * op.W;
        break;
      case IOpKind::Conv: {
        if (!bytesIn || op.groups <= 0 || op.C % op.groups || op.OC % op.groups) return at + "bad conv";
        if (op.kh <= 0 || op.kw <= 0 || op.sh <= 0 || op.sw <= 0 || op.dh <= 0 || op.dw <= 0 || op.ph < 0 || op.pw < 0) {
          return at + "bad conv geometry";
        }
        const int64_t oh = (op.H + 2 * op.ph - op.dh * (op.kh - 1) - 1) / op.sh + 1;
        const int64_t ow = (op.W + 2 * op.pw - op.dw * (op.kw - 1) - 1) / op.sw + 1;
        if (oh != op.OH || ow != op.OW) return at + "conv output size";
        if (op.K != (op.C / op.groups) * op.kh * op.kw) return at + "conv K";
        const int64_t og = op.OC / op.groups;
        if (op.packedStride < int8PackedBytes(og, op.K) || static_cast<int64_t>(op.packed.size()) < op.groups * op.packedStride ||
            static_cast<int64_t>(op.rowSums.size()) < op.OC) {
          return at + "conv weights";
        }
        if (op.outMode == IOutMode::Dequantize || op.out == IType::Bits) return at + "conv output stage";
        if (op.xnor && (op.in != IType::S8 || op.groups != 1 || static_cast<int64_t>(op.wbits.size()) < op.OC * ceilDiv(op.K, 64) ||
                        static_cast<int64_t>(op.xnorTapSums.size()) < op.OC * op.kh * op.kw ||
                        (binaryUsesPanels() && static_cast<int64_t>(op.wpanels.size()) < binaryPanelWords(op.OC, op.K)))) {
          return at + "xnor conv";
        }
        maxCol = std::max(maxCol, static_cast<size_t>(kConvRows * ceilDiv(op.K, 4) * 4));
        break;
      }
      case IOpKind::Linear:
        if (op.H != 1 || op.W != 1 || op.OH != 1 || op.OW != 1 || op.K != op.C) return at + "bad linear";
        if (op.groupSize > 0) {
          const int64_t groups = op.K / op.groupSize;
          if (!bytesIn || op.K % op.groupSize != 0 || op.groupSize > (1 << 16) || op.outMode == IOutMode::Sign ||
              static_cast<int64_t>(op.wgroup.size()) < op.OC * op.K || static_cast<int64_t>(op.groupMult.size()) < op.OC * groups ||
              (!op.gather.empty() && static_cast<int64_t>(op.gather.size()) != op.K)) {
            return at + "bad per-group linear";
          }
          for (int32_t g : op.gather) if (g < 0 || g >= op.K) return at + "per-group linear gather index out of range";
        }
        if (op.in == IType::Bits) {
          const int64_t words = ceilDiv(op.K, 64);
          if (static_cast<int64_t>(op.wbits.size()) < op.OC * words) return at + "linear bit weights";
          if (binaryUsesPanels() && static_cast<int64_t>(op.wpanels.size()) < binaryPanelWords(op.OC, op.K)) return at + "linear bit panels";
        } else {
          if (!bytesIn) return at + "linear input type";
          if (static_cast<int64_t>(op.packed.size()) < int8PackedBytes(op.OC, op.K) || static_cast<int64_t>(op.rowSums.size()) < op.OC) {
            return at + "linear weights";
          }
          maxCol = std::max(maxCol, static_cast<size_t>(ceilDiv(op.K, 4) * 4));
        }
        if ((op.outMode == IOutMode::Dequantize) != (op.out == IType::F32)) return at + "dequantize writes float32";
        if (op.out == IType::Bits && op.outMode != IOutMode::Sign) return at + "bits come from a sign stage";
        break;
      case IOpKind::MaxPool:
      case IOpKind::AvgPool: {
        if (op.in == IType::Bits || op.in == IType::F32 || op.OC != op.C) return at + "bad pooling";
        if (op.kind == IOpKind::MaxPool && op.out != op.in) return at + "max pooling keeps the type";
        if (op.kind == IOpKind::AvgPool && (op.out != IType::I32 || op.fracBits < 0 || op.fracBits > 24)) return at + "bad average pooling";
        if (op.kh <= 0 || op.kw <= 0 || op.sh <= 0 || op.sw <= 0 || op.ph < 0 || op.pw < 0) return at + "bad pooling geometry";
        const int64_t oh = (op.H + 2 * op.ph - op.kh) / op.sh + 1, ow = (op.W + 2 * op.pw - op.kw) / op.sw + 1;
        if (oh != op.OH || ow != op.OW) return at + "pooling output size";
        break;
      }
      case IOpKind::Clamp:
        if (op.in == IType::Bits || op.in == IType::F32 || op.out == IType::Bits || op.out == IType::F32) return at + "bad clamp";
        if (op.OC != op.C || op.OH != op.H || op.OW != op.W) return at + "bad clamp";
        break;
      case IOpKind::Add: {
        const auto intType = [](IType t) { return t == IType::U8 || t == IType::S8 || t == IType::I32; };
        if (!intType(op.in) || !intType(op.in2) || !intType(op.out)) return at + "add types (u8, s8 or int32)";
        if (op.OC * op.OH * op.OW != op.C * op.H * op.W) return at + "add output size";
        if (op.addShift < 0 || op.addShift > 62) return at + "add shift out of [0, 62]";
        if (std::llabs(op.multA) > INT32_MAX || std::llabs(op.multB) > INT32_MAX) return at + "add multipliers are not int32";
        if (op.outMode == IOutMode::Sign) {
          if (op.out != IType::S8) return at + "a sign add writes int8";
          break;
        }
        if (op.outMode != IOutMode::Requantize) return at + "add output mode";
        if (op.lo > op.hi || (op.out == IType::U8 && (op.lo < 0 || op.hi > 255)) || (op.out == IType::S8 && (op.lo < -128 || op.hi > 127))) {
          return at + "add output range";
        }
        break;
      }
      case IOpKind::Permute: {
        const int64_t count = op.C * op.H * op.W;
        if ((op.in != IType::U8 && op.in != IType::S8 && op.in != IType::I32) || op.out != op.in) return at + "permute types (u8, s8 or int32, kept)";
        if (op.OC * op.OH * op.OW != count || static_cast<int64_t>(op.gather.size()) != count) return at + "permute size";
        for (const int32_t k : op.gather) {
          if (k < 0 || k >= count) return at + "permute index " + std::to_string(k) + " out of range [0, " + std::to_string(count) + ")";
        }
        break;
      }
    }
    if (op.kind == IOpKind::Conv || op.kind == IOpKind::Linear) {
      const size_t O = static_cast<size_t>(op.OC);
      if (op.outMode == IOutMode::Requantize) {
        if (op.mscale.size() < O || op.bias.size() < O || op.mneg.size() < O + 8) return at + "requantize tensors";
        if (op.out != IType::U8 && op.out != IType::S8 && op.out != IType::I32) return at + "requantize output type";
        if (op.lo > op.hi || (op.out == IType::U8 && (op.lo < 0 || op.hi > 255)) ||
            (op.out == IType::S8 && (op.lo < -128 || op.hi > 127))) {
          return at + "requantize range";
        }
      } else if (op.outMode == IOutMode::Sign) {
        if (op.lower.size() < O || op.upper.size() < O || (op.out != IType::S8 && op.out != IType::Bits)) return at + "sign stage";
      } else if (op.S.size() < O || op.B.size() < O) {
        return at + "dequantize tensors";
      }
    }
    maxAct = std::max(maxAct, itypeBytes(op.out, elementsOut(op)));
    if (!last) {
      slotValues[static_cast<size_t>(op.dst)] = {true, op.out, elementsOut(op)};
      slotCount = std::max(slotCount, op.dst + 1);
    }
  }
  const IntOp& last = plan->ops.back();
  if (last.out != IType::F32) return "the plan must end in a dequantizing layer";
  plan->slotCount = std::max<int32_t>(slotCount, 1);
  plan->outputSize = elementsOut(last);
  plan->maxActBytes = maxAct;
  plan->maxColBytes = maxCol;
  return "";
}

namespace {

// Samples per chunk of intPlanRun on `threads` threads.
int64_t chunkOf(int64_t n, int threads) {
  return std::max<int64_t>(1, std::min<int64_t>(32, ceilDiv(n, 4 * static_cast<int64_t>(threads))));
}

// Runs samples [s0, s0 + m) through the plan; with `nanos`, adds each op's thread CPU time to it.
void runChunk(const IntPlan& plan, const float* x, int64_t s0, int64_t m, float* out, uint8_t* const* buf, Scratch& s, double* nanos) {
  const void* input = x + s0 * plan.inputSize;
  timespec t0{}, t1{};
  for (size_t i = 0; i < plan.ops.size(); i++) {
    const IntOp& op = plan.ops[i];
    void* dst = i + 1 == plan.ops.size() ? static_cast<void*>(out + s0 * plan.outputSize) : buf[op.dst];
    const void* cur = op.src < 0 ? input : buf[op.src];
    if (nanos) clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    switch (op.kind) {
      case IOpKind::Quantize: runQuantize(op, static_cast<const float*>(cur), m, dst); break;
      case IOpKind::Conv: runConv(op, static_cast<const uint8_t*>(cur), m, dst, op.second ? buf[op.dst2] : nullptr, s); break;
      case IOpKind::Linear: runLinear(op, static_cast<const uint8_t*>(cur), m, dst, s); break;
      case IOpKind::MaxPool: runMaxPool(op, cur, m, dst, s); break;
      case IOpKind::AvgPool: intAvgPoolRun(op, cur, m, static_cast<int32_t*>(dst)); break;
      case IOpKind::Clamp: runClamp(op, cur, m, dst); break;
      case IOpKind::Add: runAdd(op, cur, buf[op.src2], m, dst); break;
      case IOpKind::Permute: runPermute(op, cur, m, dst); break;
    }
    if (nanos) {
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
      nanos[i] += static_cast<double>(t1.tv_sec - t0.tv_sec) * 1e9 + static_cast<double>(t1.tv_nsec - t0.tv_nsec);
    }
  }
}

// The plan's value buffers in this thread's scratch, each readable / writable `bytes`.
std::vector<uint8_t*>& slotBuffers(const IntPlan& plan, Scratch& s, size_t bytes) {
  if (s.act.size() < static_cast<size_t>(plan.slotCount)) s.act.resize(static_cast<size_t>(plan.slotCount));
  s.slotPtr.resize(static_cast<size_t>(plan.slotCount));
  for (size_t k = 0; k < s.slotPtr.size(); k++) s.slotPtr[k] = grow(s.act[k], bytes);
  return s.slotPtr;
}

}  // namespace

void intPlanRun(const IntPlan& plan, const float* x, int64_t n, float* out) {
  if (n <= 0) return;
  const int threads = poolThreads();
  const int64_t chunk = chunkOf(n, threads);
  const int64_t chunks = ceilDiv(n, chunk);
  parallelFor(chunks, 1e12, [&](int64_t begin, int64_t end) {
    Scratch& s = scratch();
    const size_t bytes = plan.maxActBytes * static_cast<size_t>(chunk) + kActSlack;
    uint8_t* const* buf = slotBuffers(plan, s, bytes).data();
    // other code on this thread (another library) may have changed the tile configuration since
    // our last job: start from released tiles, so that the first AMX op loads its configuration
    if (plan.usesAmx) amxRelease();
    for (int64_t ci = begin; ci < end; ci++) {
      const int64_t s0 = ci * chunk;
      runChunk(plan, x, s0, std::min(chunk, n - s0), out, buf, s, nullptr);
    }
    if (plan.usesAmx) amxRelease();
  });
}

void intPlanProfile(const IntPlan& plan, const float* x, int64_t n, float* out, int threads, double* nanos) {
  if (n <= 0) return;
  const int64_t chunk = chunkOf(n, std::max(1, threads));
  Scratch& s = scratch();
  const size_t bytes = plan.maxActBytes * static_cast<size_t>(chunk) + kActSlack;
  uint8_t* const* buf = slotBuffers(plan, s, bytes).data();
  if (plan.usesAmx) amxRelease();
  for (int64_t s0 = 0; s0 < n; s0 += chunk) runChunk(plan, x, s0, std::min(chunk, n - s0), out, buf, s, nanos);
  if (plan.usesAmx) amxRelease();
}

}  // namespace lowbit
