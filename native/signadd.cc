// The sign add (signadd.h): a scalar reference path and AVX-512 / AVX2 kernels.
//
// Why the vector kernels are exact. A block of int64 lanes takes the vector path only when every
// da = a - z_a and db = b - z_b lies in [-2^31, 2^31 - 1] (else the block runs the scalar code).
// With |M_a|, |M_b| <= 2^31 - 1 each product is a signed 32 x 32 -> 64 bit multiply (vpmuldq) of
// magnitude below 2^62, so t = da M_a + db M_b is exact in int64 (|t| < 2^63) and its sign is the
// sign of the exact sum. The scalar path computes t in __int128 (|t| < 2^65): exact for any int32
// inputs and zero points, as the TypeScript signOfSum (doubles below 2^53, BigInt beyond).
#include "signadd.h"

#include <immintrin.h>

#include "cpu.h"
#include "intload.h"

namespace lowbit {

namespace {

// The scalar path on elements [i0, i0 + n).
template <IType A, IType B>
void signScalar(const IntOp& op, const void* a, const void* b, int64_t i0, int64_t n, int8_t* out) {
  for (int64_t i = i0; i < i0 + n; i++) {
    const __int128 t = static_cast<__int128>(loadOne<A>(a, i) - op.zero) * op.multA + static_cast<__int128>(loadOne<B>(b, i) - op.zero2) * op.multB;
    out[i] = t >= 0 ? 1 : -1;
  }
}

template <IType A, IType B>
void signScalarAll(const IntOp& op, const void* a, const void* b, int64_t count, int8_t* out) {
  signScalar<A, B>(op, a, b, 0, count, out);
}

// ---------------------------------------------------------------- AVX-512: 8 int64 lanes
template <IType A, IType B>
LOWBIT_TARGET_AVX512 void signAvx512(const IntOp& op, const void* a, const void* b, int64_t count, int8_t* out) {
  const __m512i za = _mm512_set1_epi64(op.zero), zb = _mm512_set1_epi64(op.zero2);
  const __m512i ma = _mm512_set1_epi64(op.multA), mb = _mm512_set1_epi64(op.multB);
  const __m512i bias = _mm512_set1_epi64(int64_t{1} << 31), span = _mm512_set1_epi64(int64_t{1} << 32);
  const __m128i plus = _mm_set1_epi8(1), minus = _mm_set1_epi8(-1);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m512i da = _mm512_sub_epi64(load8<A>(a, i), za);
    const __m512i db = _mm512_sub_epi64(load8<B>(b, i), zb);
    // d in [-2^31, 2^31) <=> d + 2^31 in [0, 2^32) as an unsigned compare
    const __mmask8 ok = _mm512_cmplt_epu64_mask(_mm512_add_epi64(da, bias), span) & _mm512_cmplt_epu64_mask(_mm512_add_epi64(db, bias), span);
    if (ok != 0xFF) {
      signScalar<A, B>(op, a, b, i, 8, out);
      continue;
    }
    const __m512i t = _mm512_add_epi64(_mm512_mul_epi32(da, ma), _mm512_mul_epi32(db, mb));  // exact, |t| < 2^63
    const __mmask8 negative = _mm512_movepi64_mask(t);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_mask_blend_epi8(negative, plus, minus));
  }
  if (i < count) signScalar<A, B>(op, a, b, i, count - i, out);
}

// ---------------------------------------------------------------- AVX2: 4 int64 lanes
template <IType A, IType B>
LOWBIT_TARGET_AVX2 void signAvx2(const IntOp& op, const void* a, const void* b, int64_t count, int8_t* out) {
  const __m256i za = _mm256_set1_epi64x(op.zero), zb = _mm256_set1_epi64x(op.zero2);
  const __m256i ma = _mm256_set1_epi64x(op.multA), mb = _mm256_set1_epi64x(op.multB);
  const __m256i top = _mm256_set1_epi64x(INT32_MAX), bottom = _mm256_set1_epi64x(INT32_MIN), zero = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    const __m256i da = _mm256_sub_epi64(load4<A>(a, i), za);
    const __m256i db = _mm256_sub_epi64(load4<B>(b, i), zb);
    const __m256i outside = _mm256_or_si256(_mm256_or_si256(_mm256_cmpgt_epi64(da, top), _mm256_cmpgt_epi64(bottom, da)),
                                            _mm256_or_si256(_mm256_cmpgt_epi64(db, top), _mm256_cmpgt_epi64(bottom, db)));
    if (!_mm256_testz_si256(outside, outside)) {
      signScalar<A, B>(op, a, b, i, 4, out);
      continue;
    }
    const __m256i t = _mm256_add_epi64(_mm256_mul_epi32(da, ma), _mm256_mul_epi32(db, mb));  // exact, |t| < 2^63
    // lane bit k of the mask: t_k < 0; +1 - 2 [t < 0] per lane
    const int negative = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(zero, t)));
    for (int k = 0; k < 4; k++) out[i + k] = (negative >> k) & 1 ? -1 : 1;
  }
  if (i < count) signScalar<A, B>(op, a, b, i, count - i, out);
}

using SignKernel = void (*)(const IntOp&, const void*, const void*, int64_t, int8_t*);

template <IType A, IType B>
SignKernel kernelFor(Isa isa) {
  return isa == Isa::Avx512 ? signAvx512<A, B> : isa == Isa::Avx2 ? signAvx2<A, B> : signScalarAll<A, B>;
}

template <IType A>
SignKernel kernelForB(IType b, Isa isa) {
  return b == IType::U8 ? kernelFor<A, IType::U8>(isa) : b == IType::S8 ? kernelFor<A, IType::S8>(isa) : kernelFor<A, IType::I32>(isa);
}

}  // namespace

void intSignAddRun(const IntOp& op, const void* a, const void* b, int64_t count, int8_t* out) {
  const Isa isa = activeIsa();
  const SignKernel k = op.in == IType::U8 ? kernelForB<IType::U8>(op.in2, isa) : op.in == IType::S8 ? kernelForB<IType::S8>(op.in2, isa) : kernelForB<IType::I32>(op.in2, isa);
  k(op, a, b, count, out);
}

}  // namespace lowbit
