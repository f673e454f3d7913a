// The IntModel add op (intadd.h): a scalar reference path and AVX-512 / AVX2 kernels.
//
// Why the vector kernels are exact. They work in int64 lanes. With da = a - z_a and db = b - z_b
// (exact in int64: a, z_a are int32), a block of lanes takes the vector path only when every da
// and db lies in [-2^31, 2^31 - 1]; otherwise that block runs the scalar code. Then, with
// |M_a|, |M_b| <= 2^31 - 1 (intPlanFinish / the binding check this), each product da M is a signed
// 32 x 32 -> 64 bit multiply (vpmuldq) with |da M| <= 2^31 (2^31 - 1) < 2^62, so
// t = da M_a + db M_b is exact with |t| < 2^63. Rounding half away from zero by 2^-n is
// r = (|t| + 2^(n-1)) >> n (r = |t| for n = 0), computed unsigned: |t| + 2^61 < 2^64, so exact.
// That is the value addRescaled returns (its BigInt path computes exactly this; its double path
// gives the same integer, see addRescaledOne). Finally q = z +- r clamped to [lo, hi] (int32):
// r is first capped at 2^33, which changes no clamped result (2^33 - 2^31 > any int32) and keeps
// z +- r inside int64.
#include "intadd.h"

#include <immintrin.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cpu.h"
#include "intload.h"

namespace lowbit {

namespace {

// Keeps the compiler from contracting a product with the next addition (exactness).
inline double opaque(double v) {
  __asm__("" : "+x"(v));
  return v;
}

template <IType T>
inline void storeOne(void* p, int64_t i, int32_t v) {
  if constexpr (T == IType::U8) static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(v);
  if constexpr (T == IType::S8) static_cast<int8_t*>(p)[i] = static_cast<int8_t>(v);
  if constexpr (T == IType::I32) static_cast<int32_t*>(p)[i] = v;
}

// addRescaled (intmodel.ts) of the differences da = a - z_a, db = b - z_b: the exact sum
// t = da M_a + db M_b rounded once by 2^-n, half away from zero. Like the TS code, when |da| and
// |db| are below 2^21 it works in doubles (|t| < 2^53 is exact; |t| + 2^(n-1) may round, but never
// across a multiple of 2^n, so the floor is exact too), else exactly (TS: BigInt; here __int128,
// |t| < 2^65).
inline __int128 addRescaledOne(int64_t da, int64_t ma, int64_t db, int64_t mb, int32_t shift) {
  if (std::llabs(da) < (int64_t{1} << 21) && std::llabs(db) < (int64_t{1} << 21)) {
    const double t = opaque(static_cast<double>(da) * static_cast<double>(ma)) + opaque(static_cast<double>(db) * static_cast<double>(mb));
    if (shift == 0) return static_cast<__int128>(t);
    const double p = std::ldexp(1.0, shift);
    const double r = std::floor(opaque(std::fabs(t) + p / 2) / p);
    return static_cast<__int128>(t < 0 ? -r : r);
  }
  const __int128 t = static_cast<__int128>(da) * ma + static_cast<__int128>(db) * mb;
  const __int128 a = t < 0 ? -t : t;
  const __int128 r = shift == 0 ? a : (a + (static_cast<__int128>(1) << (shift - 1))) >> shift;
  return t < 0 ? -r : r;
}

// The scalar path on elements [i0, i0 + n): the reference the vector kernels fall back to.
template <IType A, IType B, IType O>
void addScalar(const IntOp& op, const void* a, const void* b, int64_t i0, int64_t n, void* out) {
  for (int64_t i = i0; i < i0 + n; i++) {
    const int64_t da = loadOne<A>(a, i) - op.zero, db = loadOne<B>(b, i) - op.zero2;
    const __int128 q = addRescaledOne(da, op.multA, db, op.multB, op.addShift) + op.z;
    storeOne<O>(out, i, static_cast<int32_t>(q < op.lo ? op.lo : q > op.hi ? op.hi : q));
  }
}

template <IType A, IType B, IType O>
void addScalarAll(const IntOp& op, const void* a, const void* b, int64_t count, void* out) {
  addScalar<A, B, O>(op, a, b, 0, count, out);
}

// ---------------------------------------------------------------- AVX-512: 8 int64 lanes
// v: 8 lanes already within the output type's range.
template <IType T>
LOWBIT_TARGET_AVX512 inline void store8(void* p, int64_t i, __m512i v) {
  if constexpr (T == IType::I32) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<int32_t*>(p) + i), _mm512_cvtepi64_epi32(v));
  } else {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(p) + i), _mm512_cvtepi64_epi8(v));
  }
}

template <IType A, IType B, IType O>
LOWBIT_TARGET_AVX512 void addAvx512(const IntOp& op, const void* a, const void* b, int64_t count, void* out) {
  const __m512i za = _mm512_set1_epi64(op.zero), zb = _mm512_set1_epi64(op.zero2);
  const __m512i ma = _mm512_set1_epi64(op.multA), mb = _mm512_set1_epi64(op.multB);
  const __m512i half = _mm512_set1_epi64(op.addShift > 0 ? int64_t{1} << (op.addShift - 1) : 0);
  const __m128i shift = _mm_cvtsi32_si128(op.addShift);
  const __m512i cap = _mm512_set1_epi64(int64_t{1} << 33);
  const __m512i z = _mm512_set1_epi64(op.z), lo = _mm512_set1_epi64(op.lo), hi = _mm512_set1_epi64(op.hi);
  const __m512i bias = _mm512_set1_epi64(int64_t{1} << 31), span = _mm512_set1_epi64(int64_t{1} << 32);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m512i da = _mm512_sub_epi64(load8<A>(a, i), za);
    const __m512i db = _mm512_sub_epi64(load8<B>(b, i), zb);
    // d in [-2^31, 2^31) <=> d + 2^31 in [0, 2^32) as an unsigned compare
    const __mmask8 ok = _mm512_cmplt_epu64_mask(_mm512_add_epi64(da, bias), span) & _mm512_cmplt_epu64_mask(_mm512_add_epi64(db, bias), span);
    if (ok != 0xFF) {
      addScalar<A, B, O>(op, a, b, i, 8, out);
      continue;
    }
    const __m512i t = _mm512_add_epi64(_mm512_mul_epi32(da, ma), _mm512_mul_epi32(db, mb));  // exact, |t| < 2^63
    const __mmask8 negative = _mm512_movepi64_mask(t);
    __m512i r = _mm512_srl_epi64(_mm512_add_epi64(_mm512_abs_epi64(t), half), shift);  // unsigned: no overflow
    r = _mm512_min_epu64(r, cap);
    r = _mm512_mask_sub_epi64(r, negative, _mm512_setzero_si512(), r);
    store8<O>(out, i, _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(r, z), lo), hi));
  }
  if (i < count) addScalar<A, B, O>(op, a, b, i, count - i, out);
}

// ---------------------------------------------------------------- AVX2: 4 int64 lanes
// v: 4 lanes already within the output type's range.
template <IType T>
LOWBIT_TARGET_AVX2 inline void store4(void* p, int64_t i, __m256i v) {
  const __m128i low = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
  if constexpr (T == IType::I32) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<int32_t*>(p) + i), low);
  } else {
    const int32_t bytes = _mm_cvtsi128_si32(_mm_shuffle_epi8(low, _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1)));
    std::memcpy(static_cast<uint8_t*>(p) + i, &bytes, 4);
  }
}

// a < b ? b : a, and a > b ? b : a, on signed int64 lanes (AVX2 has no 64-bit min / max)
LOWBIT_TARGET_AVX2 inline __m256i max64(__m256i a, __m256i b) { return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(b, a)); }
LOWBIT_TARGET_AVX2 inline __m256i min64(__m256i a, __m256i b) { return _mm256_blendv_epi8(a, b, _mm256_cmpgt_epi64(a, b)); }

template <IType A, IType B, IType O>
LOWBIT_TARGET_AVX2 void addAvx2(const IntOp& op, const void* a, const void* b, int64_t count, void* out) {
  const __m256i za = _mm256_set1_epi64x(op.zero), zb = _mm256_set1_epi64x(op.zero2);
  const __m256i ma = _mm256_set1_epi64x(op.multA), mb = _mm256_set1_epi64x(op.multB);
  const __m256i half = _mm256_set1_epi64x(op.addShift > 0 ? int64_t{1} << (op.addShift - 1) : 0);
  const __m128i shift = _mm_cvtsi32_si128(op.addShift);
  const __m256i cap = _mm256_set1_epi64x(int64_t{1} << 33);
  const __m256i z = _mm256_set1_epi64x(op.z), lo = _mm256_set1_epi64x(op.lo), hi = _mm256_set1_epi64x(op.hi);
  const __m256i top = _mm256_set1_epi64x(INT32_MAX), bottom = _mm256_set1_epi64x(INT32_MIN), zero = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 4 <= count; i += 4) {
    const __m256i da = _mm256_sub_epi64(load4<A>(a, i), za);
    const __m256i db = _mm256_sub_epi64(load4<B>(b, i), zb);
    const __m256i outside = _mm256_or_si256(_mm256_or_si256(_mm256_cmpgt_epi64(da, top), _mm256_cmpgt_epi64(bottom, da)),
                                            _mm256_or_si256(_mm256_cmpgt_epi64(db, top), _mm256_cmpgt_epi64(bottom, db)));
    if (!_mm256_testz_si256(outside, outside)) {
      addScalar<A, B, O>(op, a, b, i, 4, out);
      continue;
    }
    const __m256i t = _mm256_add_epi64(_mm256_mul_epi32(da, ma), _mm256_mul_epi32(db, mb));  // exact, |t| < 2^63
    const __m256i sign = _mm256_cmpgt_epi64(zero, t);                                         // all ones where t < 0
    const __m256i magnitude = _mm256_sub_epi64(_mm256_xor_si256(t, sign), sign);
    __m256i r = _mm256_srl_epi64(_mm256_add_epi64(magnitude, half), shift);  // unsigned: no overflow; r < 2^63
    r = min64(r, cap);
    r = _mm256_sub_epi64(_mm256_xor_si256(r, sign), sign);
    store4<O>(out, i, min64(max64(_mm256_add_epi64(r, z), lo), hi));
  }
  if (i < count) addScalar<A, B, O>(op, a, b, i, count - i, out);
}

// ---------------------------------------------------------------- dispatch on types and ISA
using AddKernel = void (*)(const IntOp&, const void*, const void*, int64_t, void*);

template <IType A, IType B, IType O>
AddKernel kernelFor(Isa isa) {
  return isa == Isa::Avx512 ? addAvx512<A, B, O> : isa == Isa::Avx2 ? addAvx2<A, B, O> : addScalarAll<A, B, O>;
}

template <IType A, IType B>
AddKernel kernelForOut(IType o, Isa isa) {
  return o == IType::U8 ? kernelFor<A, B, IType::U8>(isa) : o == IType::S8 ? kernelFor<A, B, IType::S8>(isa) : kernelFor<A, B, IType::I32>(isa);
}

template <IType A>
AddKernel kernelForB(IType b, IType o, Isa isa) {
  return b == IType::U8 ? kernelForOut<A, IType::U8>(o, isa) : b == IType::S8 ? kernelForOut<A, IType::S8>(o, isa) : kernelForOut<A, IType::I32>(o, isa);
}

AddKernel kernelForTypes(IType a, IType b, IType o, Isa isa) {
  return a == IType::U8 ? kernelForB<IType::U8>(b, o, isa) : a == IType::S8 ? kernelForB<IType::S8>(b, o, isa) : kernelForB<IType::I32>(b, o, isa);
}

}  // namespace

void intAddRun(const IntOp& op, const void* a, const void* b, int64_t count, void* out) {
  kernelForTypes(op.in, op.in2, op.out, activeIsa())(op, a, b, count, out);
}

const char* intAddPathName() {
  switch (activeIsa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace lowbit
