// Loads of IntModel values (uint8 / int8 / int32, IType) widened to int64, for the element-wise
// integer kernels (intadd.cc, signadd.cc, intpool.cc): one value, 8 lanes (AVX-512) or 4 lanes (AVX2).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu.h"
#include "intmodel.h"

namespace lowbit {

template <IType T>
inline int64_t loadOne(const void* p, int64_t i) {
  if constexpr (T == IType::U8) return static_cast<const uint8_t*>(p)[i];
  if constexpr (T == IType::S8) return static_cast<const int8_t*>(p)[i];
  return static_cast<const int32_t*>(p)[i];
}

template <IType T>
LOWBIT_TARGET_AVX512 inline __m512i load8(const void* p, int64_t i) {
  if constexpr (T == IType::U8) return _mm512_cvtepu8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const uint8_t*>(p) + i)));
  if constexpr (T == IType::S8) return _mm512_cvtepi8_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(p) + i)));
  return _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const int32_t*>(p) + i)));
}

template <IType T>
LOWBIT_TARGET_AVX2 inline __m256i load4(const void* p, int64_t i) {
  if constexpr (T == IType::I32) return _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const int32_t*>(p) + i)));
  int32_t bytes;
  std::memcpy(&bytes, static_cast<const uint8_t*>(p) + i, 4);
  if constexpr (T == IType::U8) return _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(bytes));
  return _mm256_cvtepi8_epi64(_mm_cvtsi32_si128(bytes));
}

}  // namespace lowbit
