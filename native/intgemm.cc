// Integer GEMM kernels (see intgemm.h for the contracts and layouts).
#include "intgemm.h"

#include <immintrin.h>

#include <algorithm>
#include <ctime>
#include <cstring>
#include <vector>

#include "cpu.h"
#include "threadpool.h"

#define LOWBIT_TARGET_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,avx2")))
#define LOWBIT_TARGET_VPOPCNT \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vpopcntdq,fma,avx2,popcnt")))
#define LOWBIT_TARGET_AVX2I __attribute__((target("avx2,fma,popcnt")))
#define LOWBIT_TARGET_AVXVNNI __attribute__((target("avx2,fma,avxvnni")))

namespace lowbit {

namespace {

// AvxVnni: the AVX2 ISA with AVX-VNNI (VEX vpdpbusd on ymm; Intel client CPUs from Alder Lake on),
// int8 only (the binary paths never take it).
enum class IntPath { Scalar = 0, Avx2 = 1, Avx512 = 2, AvxVnni = 3 };

IntPath detectInt8Path() {
  __builtin_cpu_init();
  const Isa isa = activeIsa();
  if (isa == Isa::Avx512 && __builtin_cpu_supports("avx512vnni")) return IntPath::Avx512;
  if (isa >= Isa::Avx2) return avxVnniActive() ? IntPath::AvxVnni : IntPath::Avx2;
  return IntPath::Scalar;
}

IntPath detectBinaryPath() {
  __builtin_cpu_init();
  const Isa isa = activeIsa();
  if (isa == Isa::Avx512 && __builtin_cpu_supports("avx512vpopcntdq")) return IntPath::Avx512;
  if (isa >= Isa::Avx2) return IntPath::Avx2;
  return IntPath::Scalar;
}

IntPath int8Path() {
  static const IntPath p = detectInt8Path();
  return p;
}

IntPath binaryPath() {
  static const IntPath p = detectBinaryPath();
  return p;
}

constexpr int64_t kPanel = 16;  // output channels per panel (one zmm of int32)
constexpr int64_t kBlock = 64;  // output channels per packed block: 4 panels side by side
constexpr int64_t kKRow = kBlock * 4;  // bytes per k-group of a block (4 panels x 16 lanes x 4 k)
#ifndef LB_MR
#define LB_MR 6
#endif
#ifndef LB_NP
#define LB_NP 4
#endif
constexpr int kMR = LB_MR;  // rows of the AVX-512 micro-kernel
constexpr int kNP = LB_NP;  // panels of the AVX-512 micro-kernel (16 columns each)
static_assert(kNP * 16 == 64, "an AVX-512 column block is one packed 64-channel block");
#ifndef LB_KC4
#define LB_KC4 256
#endif
#ifndef LB_MC
#define LB_MC 96
#endif
// K blocking: at most kKC4 k-groups (1024 bytes of K) per block, the blocks of equal size.
// Every block after the first reloads the micro-tile's partial sums from C (by then out of L1),
// which cost ~3 % at K = 1024 with 512-byte blocks; a 64 x 1024 weight block (64 KB) read from
// L2 costs less than that (bench int-kernels, n = 1024).
constexpr int64_t kKC4 = LB_KC4;
constexpr int64_t kMC = LB_MC;  // rows per task tile
inline int64_t kBlockK4(int64_t k4n) {
  const int64_t blocks = (k4n + kKC4 - 1) / kKC4;
  return (k4n + blocks - 1) / blocks;
}

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Element (m, n) of a sign output stage from its accumulator (the scalar form of the fused kernels).
inline void signStoreOne(const SignOutput& s, int64_t m, int64_t n, int64_t acc) {
  const bool on = acc >= s.lower[n] && acc <= s.upper[n];
  if (s.bits) {
    uint64_t& word = static_cast<uint64_t*>(s.out)[m * s.ldo + n / 64];
    const uint64_t bit = uint64_t{1} << (n % 64);
    word = on ? word | bit : word & ~bit;
  } else {
    static_cast<int8_t*>(s.out)[m * s.ldo + n] = on ? 1 : -1;
  }
}

// Activations as u8 rows of Kp bytes (int8 gets +128 via xor 0x80), zero padded.
void packActivations(int64_t M, int64_t K, int64_t Kp, const uint8_t* a, bool aSigned, uint8_t* out) {
  const uint8_t flip = aSigned ? 0x80 : 0;
  parallelFor(M, static_cast<double>(M) * K, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; m++) {
      const uint8_t* src = a + m * K;
      uint8_t* dst = out + m * Kp;
      if (flip) {
        for (int64_t k = 0; k < K; k++) dst[k] = src[k] ^ 0x80;
      } else {
        std::memcpy(dst, src, static_cast<size_t>(K));
      }
      for (int64_t k = K; k < Kp; k++) dst[k] = 0;
    }
  });
}

// ---------------------------------------------------------------- AVX-512 VNNI int8 core
// The micro-kernel: MR rows x NP panels of 16 columns, accumulators in named variables (GCC keeps
// an array of 24 vectors on the stack, a store after every vpdpbusd) and the multiply-add as inline
// asm for the same reason; `if constexpr` drops the names a shape does not use.
#define LB_DPBUSD(acc, a, w) __asm__("vpdpbusd %[wv], %[av], %[cv]" : [cv] "+v"(acc) : [av] "v"(a), [wv] "v"(w))
#define LB_P(X, i) X(i, 0) X(i, 1) X(i, 2) X(i, 3)
#define LB_ALL(X) LB_P(X, 0) LB_P(X, 1) LB_P(X, 2) LB_P(X, 3) LB_P(X, 4) LB_P(X, 5) LB_P(X, 6) LB_P(X, 7)
#define LB_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
// Signed: the sign output stage of the rows (SignOutput, `sign` with lower / upper / out at this
// tile's first column and row) instead of storing the accumulators to C.
template <int MR, int NP, bool Signed>
LOWBIT_TARGET_VNNI void kernelVnni(const uint8_t* A, int64_t lda, const int8_t* B, int64_t panelStride, int64_t k4n,
                                   int32_t* C, int64_t ldc, int64_t ncols, bool first, const int32_t* rowSums,
                                   int32_t negZero, const SignOutput* sign) {
  static_assert(MR >= 1 && MR <= 8 && NP >= 1 && NP <= 4, "micro-kernel shape");
  __mmask16 mask[4];
  for (int p = 0; p < 4; p++) {
    const int64_t valid = std::min<int64_t>(16, std::max<int64_t>(0, ncols - 16 * p));
    mask[p] = static_cast<__mmask16>((1u << valid) - 1u);
  }
  __m512i bias[4] = {};
  if (first) {
    const __m512i nz = _mm512_set1_epi32(negZero);
    for (int p = 0; p < NP; p++) bias[p] = _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(mask[p], rowSums + 16 * p), nz);
  }
#define LB_DECL(i, p)                                                                                       \
  __m512i c##i##p;                                                                                          \
  if constexpr (MR > i && NP > p) c##i##p = first ? bias[p] : _mm512_maskz_loadu_epi32(mask[p], C + (i) * ldc + 16 * (p));
  LB_ALL(LB_DECL)
#undef LB_DECL
  // (unrolled: the loop counter's ALU uops would otherwise take vpdpbusd issue slots)
#pragma GCC unroll 4
  for (int64_t k = 0; k < k4n; k++) {
    __m512i b0, b1, b2, b3;
    const int8_t* bk = B + k * kKRow;
    b0 = _mm512_loadu_si512(bk);
    if constexpr (NP > 1) b1 = _mm512_loadu_si512(bk + panelStride);
    if constexpr (NP > 2) b2 = _mm512_loadu_si512(bk + 2 * panelStride);
    if constexpr (NP > 3) b3 = _mm512_loadu_si512(bk + 3 * panelStride);
#define LB_DP(i, p) \
  if constexpr (NP > p) LB_DPBUSD(c##i##p, av, b##p);
#define LB_ROW(i)                                    \
  if constexpr (MR > i) {                            \
    int32_t word;                                    \
    std::memcpy(&word, A + (i) * lda + k * 4, 4);    \
    const __m512i av = _mm512_set1_epi32(word);      \
    LB_P(LB_DP, i)                                   \
  }
    LB_ROWS(LB_ROW)
#undef LB_ROW
#undef LB_DP
  }
  if constexpr (Signed) {
    // per row, 16 channels per panel: on = lower <= acc <= upper (channels past ncols off)
    __m512i lo[4], hi[4];
    for (int p = 0; p < NP; p++) {
      lo[p] = _mm512_maskz_loadu_epi32(mask[p], sign->lower + 16 * p);
      hi[p] = _mm512_maskz_loadu_epi32(mask[p], sign->upper + 16 * p);
    }
#define LB_ON(i, p) \
  if constexpr (MR > i && NP > p) on##i[p] = _mm512_mask_cmple_epi32_mask(_mm512_mask_cmpge_epi32_mask(mask[p], c##i##p, lo[p]), c##i##p, hi[p]);
#define LB_SIGNROW(i)                                                                                                 \
  if constexpr (MR > i) {                                                                                             \
    __mmask16 on##i[4] = {0, 0, 0, 0};                                                                                \
    LB_P(LB_ON, i)                                                                                                    \
    if (sign->bits) {                                                                                                 \
      const uint64_t word = uint64_t{on##i[0]} | uint64_t{on##i[1]} << 16 | uint64_t{on##i[2]} << 32 | uint64_t{on##i[3]} << 48; \
      static_cast<uint64_t*>(sign->out)[(i) * sign->ldo] = word;                                                      \
    } else {                                                                                                          \
      int8_t* row = static_cast<int8_t*>(sign->out) + (i) * sign->ldo;                                               \
      for (int p = 0; p < NP; p++) {                                                                                  \
        _mm_mask_storeu_epi8(row + 16 * p, mask[p], _mm_mask_blend_epi8(on##i[p], _mm_set1_epi8(-1), _mm_set1_epi8(1))); \
      }                                                                                                               \
    }                                                                                                                 \
  }
    LB_ROWS(LB_SIGNROW)
#undef LB_SIGNROW
#undef LB_ON
  } else {
#define LB_STORE(i, p) \
  if constexpr (MR > i && NP > p) _mm512_mask_storeu_epi32(C + (i) * ldc + 16 * (p), mask[p], c##i##p);
    LB_ALL(LB_STORE)
#undef LB_STORE
  }
}
#undef LB_ROWS
#undef LB_ALL
#undef LB_P
#undef LB_DPBUSD

using VnniFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*, int64_t, int64_t, bool,
                        const int32_t*, int32_t, const SignOutput*);

template <int MR, bool Signed>
VnniFn vnniFor(int np) {
  switch (np) {
    case 1: return kernelVnni<MR, 1, Signed>;
    case 2: return kernelVnni<MR, 2, Signed>;
    case 3: return kernelVnni<MR, 3, Signed>;
    default: return kernelVnni<MR, 4, Signed>;
  }
}

template <bool Signed>
VnniFn vnniKernelOf(int mr, int np) {
  switch (mr) {
    case 1: return vnniFor<1, Signed>(np);
    case 2: return vnniFor<2, Signed>(np);
    case 3: return vnniFor<3, Signed>(np);
    case 4: return vnniFor<4, Signed>(np);
    case 5: return vnniFor<5, Signed>(np);
    case 6: return vnniFor<6, Signed>(np);
    case 7: return vnniFor<7, Signed>(np);
    default: return vnniFor<8, Signed>(np);
  }
}

VnniFn vnniKernel(int mr, int np, bool sign = false) { return sign ? vnniKernelOf<true>(mr, np) : vnniKernelOf<false>(mr, np); }

// Row tiles of a serial GEMM over M rows: ceil(M / kMR) tiles of near-equal height (M = 32: 5, 5,
// 6, 5, 5, 6 rather than five of 6 and one of 2, whose 4 weight loads per 8 vpdpbusd make it
// bound by L2 bandwidth); f(m0, rows).
template <class F>
inline void forRowTiles(int64_t M, F&& f) {
  const int64_t tiles = (M + kMR - 1) / kMR;
  for (int64_t t = 0; t < tiles; t++) {
    const int64_t m0 = M * t / tiles, m1 = M * (t + 1) / tiles;
    f(m0, static_cast<int>(m1 - m0));
  }
}

// ---------------------------------------------------------------- AVX2 int8 core (exact: s16 x s16 madd)
// Two rows x one 16-channel panel; per k-group the panel's 64 bytes are 4 quarters of 4 channels.
template <int MR>
LOWBIT_TARGET_AVX2I void kernelAvx2(const uint8_t* A, int64_t lda, const int8_t* B, int64_t k4n, int32_t* C,
                                    int64_t ldc, int64_t ncols, bool first, const int32_t* rowSums, int32_t negZero) {
  __m256i acc[MR][4];
  for (int i = 0; i < MR; i++)
    for (int q = 0; q < 4; q++) acc[i][q] = _mm256_setzero_si256();
  for (int64_t k = 0; k < k4n; k++) {
    __m256i b[4];
    for (int q = 0; q < 4; q++) {
      b[q] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(B + k * kKRow + 16 * q)));
    }
    for (int i = 0; i < MR; i++) {
      int32_t word;
      std::memcpy(&word, A + i * lda + k * 4, 4);
      const __m256i av = _mm256_cvtepu8_epi16(_mm_set1_epi32(word));
      for (int q = 0; q < 4; q++) acc[i][q] = _mm256_add_epi32(acc[i][q], _mm256_madd_epi16(av, b[q]));
    }
  }
  for (int i = 0; i < MR; i++) {
    alignas(32) int32_t out[16];
    for (int h = 0; h < 2; h++) {
      // acc[2h] holds channels 8h+0..3 as pairs, acc[2h+1] channels 8h+4..7.
      const __m256i s = _mm256_hadd_epi32(acc[i][2 * h], acc[i][2 * h + 1]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out + 8 * h), _mm256_permute4x64_epi64(s, 0xD8));
    }
    for (int64_t j = 0; j < ncols; j++) {
      const int32_t base = first ? static_cast<int32_t>(static_cast<uint32_t>(rowSums[j]) * static_cast<uint32_t>(negZero))
                                 : C[i * ldc + j];
      C[i * ldc + j] = static_cast<int32_t>(static_cast<uint32_t>(base) + static_cast<uint32_t>(out[j]));
    }
  }
}

// ---------------------------------------------------------------- AVX-VNNI int8 core (ymm)
// MR rows (<= 6) x one 16-channel panel: per k-group the panel's 64 bytes are two ymm of 8 channels
// x 4 k (channel order, so lane j of the pair's first / second accumulator is channel j / 8 + j).
// VEX encoding reaches only ymm0-15: 12 accumulators + 2 weight vectors + 1 broadcast. vpdpbusd
// (not vpdpbusds) adds the four u8 x s8 products to each int32 lane without saturation, wrapping
// like the scalar core. The accumulators are named variables (an array would live on the stack).
constexpr int kVnniMR = 6;
template <int MR>
LOWBIT_TARGET_AVXVNNI void kernelAvxVnni(const uint8_t* A, int64_t lda, const int8_t* B, int64_t k4n, int32_t* C,
                                         int64_t ldc, int64_t ncols, bool first, const int32_t* rowSums, int32_t negZero) {
  static_assert(MR >= 1 && MR <= kVnniMR, "micro-kernel shape");
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i maskLo = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(ncols)), lane);
  const __m256i maskHi = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(ncols) - 8), lane);
  // a whole panel (the common case) loads and stores plainly: vpmaskmovd stores are slow on AMD cores
  const bool full = ncols >= 16;
#define LB_LOADC(p) _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
  __m256i biasLo = _mm256_setzero_si256(), biasHi = _mm256_setzero_si256();
  if (first) {
    const __m256i nz = _mm256_set1_epi32(negZero);
    biasLo = _mm256_mullo_epi32(full ? LB_LOADC(rowSums) : _mm256_maskload_epi32(rowSums, maskLo), nz);
    biasHi = _mm256_mullo_epi32(full ? LB_LOADC(rowSums + 8) : _mm256_maskload_epi32(rowSums + 8, maskHi), nz);
  }
#define LB_VROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define LB_VDECL(i)                                                                                  \
  __m256i lo##i, hi##i;                                                                              \
  if constexpr (MR > i) {                                                                            \
    lo##i = first ? biasLo : full ? LB_LOADC(C + (i) * ldc) : _mm256_maskload_epi32(C + (i) * ldc, maskLo);   \
    hi##i = first ? biasHi : full ? LB_LOADC(C + (i) * ldc + 8) : _mm256_maskload_epi32(C + (i) * ldc + 8, maskHi); \
  }
  LB_VROWS(LB_VDECL)
#undef LB_VDECL
#pragma GCC unroll 4
  for (int64_t k = 0; k < k4n; k++) {
    const int8_t* bk = B + k * kKRow;
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bk));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bk + 32));
#define LB_VROW(i)                                          \
  if constexpr (MR > i) {                                   \
    int32_t word;                                           \
    std::memcpy(&word, A + (i) * lda + k * 4, 4);           \
    const __m256i av = _mm256_set1_epi32(word);             \
    lo##i = _mm256_dpbusd_avx_epi32(lo##i, av, b0);         \
    hi##i = _mm256_dpbusd_avx_epi32(hi##i, av, b1);         \
  }
    LB_VROWS(LB_VROW)
#undef LB_VROW
  }
#define LB_VSTORE(i)                                                \
  if constexpr (MR > i) {                                           \
    if (full) {                                                     \
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + (i) * ldc), lo##i);     \
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + (i) * ldc + 8), hi##i); \
    } else {                                                        \
      _mm256_maskstore_epi32(C + (i) * ldc, maskLo, lo##i);         \
      _mm256_maskstore_epi32(C + (i) * ldc + 8, maskHi, hi##i);     \
    }                                                               \
  }
  LB_VROWS(LB_VSTORE)
#undef LB_VSTORE
#undef LB_VROWS
#undef LB_LOADC
}

using AvxVnniFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int32_t*, int64_t, int64_t, bool, const int32_t*, int32_t);

AvxVnniFn avxVnniKernel(int mr) {
  switch (mr) {
    case 1: return kernelAvxVnni<1>;
    case 2: return kernelAvxVnni<2>;
    case 3: return kernelAvxVnni<3>;
    case 4: return kernelAvxVnni<4>;
    case 5: return kernelAvxVnni<5>;
    default: return kernelAvxVnni<6>;
  }
}

// Rows [0, M) in ceil(M / kVnniMR) tiles of near-equal height (as forRowTiles); f(m0, rows).
template <class F>
inline void forVnniRowTiles(int64_t M, F&& f) {
  const int64_t tiles = (M + kVnniMR - 1) / kVnniMR;
  for (int64_t t = 0; t < tiles; t++) {
    const int64_t m0 = M * t / tiles, m1 = M * (t + 1) / tiles;
    f(m0, static_cast<int>(m1 - m0));
  }
}

// ---------------------------------------------------------------- scalar int8 core
void kernelScalar(int64_t mr, const uint8_t* A, int64_t lda, const int8_t* B, int64_t k4n, int32_t* C, int64_t ldc,
                  int64_t ncols, bool first, const int32_t* rowSums, int32_t negZero) {
  for (int64_t i = 0; i < mr; i++) {
    for (int64_t j = 0; j < ncols; j++) {
      uint32_t s = first ? static_cast<uint32_t>(rowSums[j]) * static_cast<uint32_t>(negZero)
                         : static_cast<uint32_t>(C[i * ldc + j]);
      const uint8_t* a = A + i * lda;
      const int8_t* b = B + j * 4;
      for (int64_t k = 0; k < k4n; k++) {
        const int8_t* bk = b + k * kKRow;
        s += static_cast<uint32_t>(a[4 * k] * bk[0] + a[4 * k + 1] * bk[1] + a[4 * k + 2] * bk[2] + a[4 * k + 3] * bk[3]);
      }
      C[i * ldc + j] = static_cast<int32_t>(s);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------- packing
int64_t int8PackedBytes(int64_t N, int64_t K) { return ceilDiv(N, kBlock) * kBlock * ceilDiv(K, 4) * 4; }

static void packFrom(int64_t N, int64_t K, int8_t* packed, int32_t* rowSums, int8_t (*get)(const void*, int64_t, int64_t, int64_t),
                     const void* src) {
  const int64_t k4n = ceilDiv(K, 4);
  std::memset(packed, 0, static_cast<size_t>(int8PackedBytes(N, K)));
  for (int64_t n = 0; n < N; n++) {
    int8_t* base = packed + (n / kBlock) * k4n * kKRow + (n % kBlock) * 4;
    uint32_t sum = 0;
    for (int64_t k = 0; k < K; k++) {
      const int8_t v = get(src, N, K, n * K + k);
      base[(k >> 2) * kKRow + (k & 3)] = v;
      sum += static_cast<uint32_t>(static_cast<int32_t>(v));
    }
    rowSums[n] = static_cast<int32_t>(sum);
  }
}

void packInt8(const int8_t* w, int64_t N, int64_t K, int8_t* packed, int32_t* rowSums) {
  packFrom(N, K, packed, rowSums, [](const void* s, int64_t, int64_t, int64_t i) { return static_cast<const int8_t*>(s)[i]; }, w);
}

void packLowBit(const uint8_t* w, int bits, int64_t N, int64_t K, int8_t* packed, int32_t* rowSums) {
  const int64_t k4n = ceilDiv(K, 4);
  const int perByte = 8 / bits;
  const int64_t rowBytes = ceilDiv(K, perByte);
  const int shiftUp = 8 - bits;  // sign extension: move the field to the top, arithmetic shift back
  const int64_t blocks = ceilDiv(N, kBlock);
  // One task per 64-channel block: clears its part of the panel, then unpacks its rows byte by byte.
  parallelFor(blocks, static_cast<double>(N) * K * 2, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; blk++) {
      std::memset(packed + blk * k4n * kKRow, 0, static_cast<size_t>(k4n * kKRow));
      const int64_t n1 = std::min(N, (blk + 1) * kBlock);
      for (int64_t n = blk * kBlock; n < n1; n++) {
        int8_t* base = packed + blk * k4n * kKRow + (n % kBlock) * 4;
        const uint8_t* row = w + n * rowBytes;
        int32_t sum = 0;
        for (int64_t byte = 0; byte < rowBytes; byte++) {
          const int bv = row[byte];
          const int64_t k0 = byte * perByte;
          const int count = static_cast<int>(std::min<int64_t>(perByte, K - k0));
          for (int j = 0; j < count; j++) {
            const int8_t v = static_cast<int8_t>(static_cast<int8_t>((bv >> (j * bits)) << shiftUp) >> shiftUp);
            const int64_t k = k0 + j;
            base[(k >> 2) * kKRow + (k & 3)] = v;
            sum += v;
          }
        }
        rowSums[n] = sum;  // |sum| <= 8 K: no overflow for K < 2^28
      }
    }
  });
}

// ---------------------------------------------------------------- int8 GEMM driver
void gemmInt8Packed(int64_t M, int64_t N, int64_t K, const uint8_t* a, bool aSigned, int32_t aZero,
                    const int8_t* packed, const int32_t* rowSums, int32_t* c) {
  if (M <= 0 || N <= 0) return;
  const int64_t k4n = ceilDiv(K, 4), Kp = k4n * 4;
  if (K <= 0) {  // empty sum
    std::memset(c, 0, static_cast<size_t>(M * N) * sizeof(int32_t));
    return;
  }
  // Reused per calling thread: a fresh multi-megabyte vector costs page faults on every call.
  // Unsigned activations with K a multiple of 4 are read in place.
  thread_local std::vector<uint8_t> ap;
  const bool inPlace = !aSigned && Kp == K;
  if (!inPlace) {
    if (ap.size() < static_cast<size_t>(M * Kp)) ap.resize(static_cast<size_t>(M * Kp));
    packActivations(M, K, Kp, a, aSigned, ap.data());
  }
  const int64_t kc4 = kBlockK4(k4n);
  const int32_t negZero = static_cast<int32_t>(-(static_cast<int64_t>(aZero) + (aSigned ? 128 : 0)));
  const IntPath path = int8Path();
  const int64_t nb = path == IntPath::Avx512 ? kNP * kPanel : kPanel;  // columns per block
  const int64_t nBlocks = ceilDiv(N, nb), mBlocks = ceilDiv(M, kMC);
  const int64_t blockStride = k4n * kKRow;  // bytes per 64-channel block
  const uint8_t* A = inPlace ? a : ap.data();
  // Tiles claimed one at a time (parallelForEach), so that the threads finish together. One thread:
  // row-block major, so that consecutive tiles share their rows of A (kept in L2) and the weight
  // blocks stream from L2 (~3 % over column-block major at n = 1024). Several threads: column-block
  // major, so that the tiles running side by side share one weight block (~3 % over row-block
  // major at n = 1024 on 2 threads; both measured as CPU-time fractions of the vpdpbusd peak,
  // variants interleaved in one session).
  const bool columnMajor = poolThreads() > 1;
  parallelForEach(nBlocks * mBlocks, 2.0 * M * N * K / 8.0, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++) {
      const int64_t ib = columnMajor ? t % mBlocks : t / nBlocks, jb = columnMajor ? t / mBlocks : t % nBlocks;
      const int64_t n0 = jb * nb, ncols = std::min(nb, N - n0);
      const int64_t m0 = ib * kMC, m1 = std::min(M, m0 + kMC);
      const int8_t* B = packed + (n0 / kBlock) * blockStride + (n0 % kBlock) * 4;  // panel (n0 % 64) / 16
      for (int64_t k0 = 0; k0 < k4n; k0 += kc4) {
        const int64_t kn = std::min(kc4, k4n - k0);
        const bool first = k0 == 0;
        if (path == IntPath::Avx512) {
          const int np = static_cast<int>(ceilDiv(ncols, kPanel));
          for (int64_t m = m0; m < m1; m += kMR) {
            const int mr = static_cast<int>(std::min<int64_t>(kMR, m1 - m));
            vnniKernel(mr, np)(A + m * Kp + k0 * 4, Kp, B + k0 * kKRow, kPanel * 4, kn, c + m * N + n0, N, ncols, first,
                               rowSums + n0, negZero, nullptr);
          }
        } else if (path == IntPath::AvxVnni) {
          forVnniRowTiles(m1 - m0, [&](int64_t m, int mr) {
            avxVnniKernel(mr)(A + (m0 + m) * Kp + k0 * 4, Kp, B + k0 * kKRow, kn, c + (m0 + m) * N + n0, N, ncols, first,
                              rowSums + n0, negZero);
          });
        } else if (path == IntPath::Avx2) {
          for (int64_t m = m0; m < m1; m += 2) {
            if (m + 1 < m1) {
              kernelAvx2<2>(A + m * Kp + k0 * 4, Kp, B + k0 * kKRow, kn, c + m * N + n0, N, ncols, first, rowSums + n0, negZero);
            } else {
              kernelAvx2<1>(A + m * Kp + k0 * 4, Kp, B + k0 * kKRow, kn, c + m * N + n0, N, ncols, first, rowSums + n0, negZero);
            }
          }
        } else {
          kernelScalar(m1 - m0, A + m0 * Kp + k0 * 4, Kp, B + k0 * kKRow, kn, c + m0 * N + n0, N, ncols, first, rowSums + n0,
                       negZero);
        }
      }
    }
  });
}

void gemmInt8Serial(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* packed,
                    const int32_t* rowSums, int32_t negZero, int32_t* c, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const int64_t k4n = ceilDiv(K, 4);
  if (K <= 0) {
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++) c[m * ldc + n] = 0;
    return;
  }
  const IntPath path = int8Path();
  const int64_t nb = path == IntPath::Avx512 ? kNP * kPanel : kPanel;
  const int64_t kc4 = kBlockK4(k4n);
  const int64_t blockStride = k4n * kKRow;
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    const int64_t ncols = std::min(nb, N - n0);
    const int8_t* B = packed + (n0 / kBlock) * blockStride + (n0 % kBlock) * 4;
    for (int64_t k0 = 0; k0 < k4n; k0 += kc4) {
      const int64_t kn = std::min(kc4, k4n - k0);
      const bool first = k0 == 0;
      if (path == IntPath::Avx512) {
        const int np = static_cast<int>(ceilDiv(ncols, kPanel));
        forRowTiles(M, [&](int64_t m, int mr) {
          vnniKernel(mr, np)(A + m * lda + k0 * 4, lda, B + k0 * kKRow, kPanel * 4, kn, c + m * ldc + n0, ldc, ncols, first,
                             rowSums + n0, negZero, nullptr);
        });
      } else if (path == IntPath::AvxVnni) {
        forVnniRowTiles(M, [&](int64_t m, int mr) {
          avxVnniKernel(mr)(A + m * lda + k0 * 4, lda, B + k0 * kKRow, kn, c + m * ldc + n0, ldc, ncols, first, rowSums + n0, negZero);
        });
      } else if (path == IntPath::Avx2) {
        for (int64_t m = 0; m < M; m += 2) {
          if (m + 1 < M) {
            kernelAvx2<2>(A + m * lda + k0 * 4, lda, B + k0 * kKRow, kn, c + m * ldc + n0, ldc, ncols, first, rowSums + n0, negZero);
          } else {
            kernelAvx2<1>(A + m * lda + k0 * 4, lda, B + k0 * kKRow, kn, c + m * ldc + n0, ldc, ncols, first, rowSums + n0, negZero);
          }
        }
      } else {
        kernelScalar(M, A + k0 * 4, lda, B + k0 * kKRow, kn, c + n0, ldc, ncols, first, rowSums + n0, negZero);
      }
    }
  }
}

bool int8SignFusable() { return int8Path() == IntPath::Avx512; }

void gemmInt8SignSerial(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* packed,
                        const int32_t* rowSums, int32_t negZero, const SignOutput& sign) {
  if (M <= 0 || N <= 0 || int8Path() != IntPath::Avx512) return;
  const int64_t k4n = ceilDiv(K, 4);
  if (K <= 0) {  // every accumulator is 0
    for (int64_t m = 0; m < M; m++) {
      if (sign.bits) std::memset(static_cast<uint64_t*>(sign.out) + m * sign.ldo, 0, static_cast<size_t>(ceilDiv(N, 64)) * 8);
      for (int64_t n = 0; n < N; n++) signStoreOne(sign, m, n, 0);
    }
    return;
  }
  const int64_t kc4 = kBlockK4(k4n);
  const int64_t blockStride = k4n * kKRow;
  // with several K blocks the partial sums of one 64-column block wait in `part` (M x 64)
  thread_local std::vector<int32_t> partBuf;
  int32_t* part = nullptr;
  if (kc4 < k4n) {
    if (partBuf.size() < static_cast<size_t>(M * kBlock)) partBuf.resize(static_cast<size_t>(M * kBlock));
    part = partBuf.data();
  }
  for (int64_t n0 = 0; n0 < N; n0 += kBlock) {
    const int64_t ncols = std::min(kBlock, N - n0);
    const int np = static_cast<int>(ceilDiv(ncols, kPanel));
    const int8_t* B = packed + (n0 / kBlock) * blockStride;
    for (int64_t k0 = 0; k0 < k4n; k0 += kc4) {
      const int64_t kn = std::min(kc4, k4n - k0);
      const bool first = k0 == 0, last = k0 + kn >= k4n;
      forRowTiles(M, [&](int64_t m, int mr) {
        const SignOutput at{sign.lower + n0, sign.upper + n0,
                            sign.bits ? static_cast<void*>(static_cast<uint64_t*>(sign.out) + m * sign.ldo + n0 / 64)
                                      : static_cast<void*>(static_cast<int8_t*>(sign.out) + m * sign.ldo + n0),
                            sign.ldo, sign.bits};
        vnniKernel(mr, np, last)(A + m * lda + k0 * 4, lda, B + k0 * kKRow, kPanel * 4, kn, part ? part + m * kBlock : nullptr, kBlock,
                                 ncols, first, rowSums + n0, negZero, &at);
      });
    }
  }
}

// ---------------------------------------------------------------- binary GEMM
namespace {

inline uint64_t load64(const uint64_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

constexpr int kBinMR = 6, kBinNP = 3;  // 6 rows x 48 columns (3 panels of 16 weight rows)
constexpr int64_t kBinPanel = 16;       // weight rows per panel: one zmm of 32-bit words

inline uint32_t load32(const uint32_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The sign stage of the popcount kernel in popcount terms (from SignOutput, per column n):
// lower <= K - 2 pc <= upper  <=>  lo <= pc <= hi with lo = ceil((K - upper) / 2), hi = floor((K -
// lower) / 2), clipped to pc's range [0, K]  <=>  (uint32) (pc - lo) <= range = hi - lo; an empty
// interval gets lo = K + 1 (pc - lo wraps to >= 2^31) and range 0.
struct PopSign {
  const int32_t* lo;
  const int32_t* range;
  void* out;    // at the tile's first row and column: bits as bytes (a tile starts on a multiple of 16 columns)
  int64_t ldo;  // row stride: 64-bit words (bits) or bytes (int8)
  bool bits;
};

// A (rows of w32 32-bit words; w32 = 2 ceil(K / 64): the 64-bit rows read as 32-bit words);
// wt: panels of 16 weight rows, 32-bit-word-major: wt[(p * w32 + k) * 16 + r] = word k of row 16p + r.
// Per step one 32-bit activation word (broadcast) meets 16 weight rows of each panel in the
// 32-bit lanes (vpopcntd), so each accumulator holds 16 columns and the output stage handles
// 16 columns per vector. Signed: the sign stage (PopSign, `sign` at this tile) instead of
// storing K - 2 pc to C.
template <int MR, int NP, bool Signed>
LOWBIT_TARGET_VPOPCNT void kernelPopcnt(const uint32_t* A, int64_t w32, const uint32_t* wt, int64_t K, int32_t* C,
                                        int64_t ldc, int64_t ncols, const PopSign* sign) {
  // (every loop over i and p unrolled, so that GCC keeps acc in registers rather than in a stack
  // array copied in before and out after the word loop)
  __m512i acc[MR][NP];
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int p = 0; p < NP; p++) acc[i][p] = _mm512_setzero_si512();
  for (int64_t k = 0; k < w32; k++) {
    __m512i b[NP];
    for (int p = 0; p < NP; p++) b[p] = _mm512_loadu_si512(wt + (p * w32 + k) * kBinPanel);
    for (int i = 0; i < MR; i++) {
      const __m512i av = _mm512_set1_epi32(static_cast<int>(load32(A + i * w32 + k)));
      // (one asm statement per xor-popcount-add: GCC otherwise hoists every xor ahead of the
      // popcounts, runs out of registers and keeps accumulators on the stack)
      for (int p = 0; p < NP; p++) {
        __m512i t;
        __asm__("vpxord %[b], %[a], %[t]\n\tvpopcntd %[t], %[t]\n\tvpaddd %[t], %[c], %[c]"
                : [c] "+v"(acc[i][p]), [t] "=&v"(t)
                : [a] "v"(av), [b] "v"(b[p]));
      }
    }
  }
  // (the output fields in locals: stores through `out` could otherwise alias *sign and reload it)
  void* const out = Signed ? sign->out : nullptr;
  const int64_t ldo = Signed ? sign->ldo : 0;
  const bool bits = Signed && sign->bits;
  const __m512i kv = _mm512_set1_epi32(static_cast<int>(K));
#pragma GCC unroll 4
  for (int p = 0; p < NP; p++) {
    const int64_t valid = std::min<int64_t>(kBinPanel, std::max<int64_t>(0, ncols - kBinPanel * p));
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
    if constexpr (Signed) {
      // (a panel past ncols has mask 0: its loads, compares and stores do nothing)
      const __m512i lo = _mm512_maskz_loadu_epi32(mask, sign->lo + kBinPanel * p);
      const __m512i range = _mm512_maskz_loadu_epi32(mask, sign->range + kBinPanel * p);
#pragma GCC unroll 8
      for (int i = 0; i < MR; i++) {
        const __mmask16 on = _mm512_mask_cmple_epu32_mask(mask, _mm512_sub_epi32(acc[i][p], lo), range);
        if (bits) {
          // columns 16p .. 16p + 15 are bytes 2p, 2p + 1 of the tile's row (in the row: see gemmBinarySignSerial)
          const uint16_t word = static_cast<uint16_t>(on);
          if (valid > 0) std::memcpy(static_cast<uint8_t*>(out) + i * ldo * 8 + 2 * p, &word, 2);
        } else {
          const __m128i v = _mm_mask_blend_epi8(on, _mm_set1_epi8(-1), _mm_set1_epi8(1));
          int8_t* dst = static_cast<int8_t*>(out) + i * ldo + kBinPanel * p;
          if (valid == kBinPanel) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), v);
          } else {
            _mm_mask_storeu_epi8(dst, mask, v);
          }
        }
      }
    } else {
#pragma GCC unroll 8
      for (int i = 0; i < MR; i++) {
        _mm512_mask_storeu_epi32(C + i * ldc + kBinPanel * p, mask, _mm512_sub_epi32(kv, _mm512_slli_epi32(acc[i][p], 1)));
      }
    }
  }
}

using PopFn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, int32_t*, int64_t, int64_t, const PopSign*);

template <int MR, bool Signed>
PopFn popFor(int np) {
  switch (np) {
    case 1: return kernelPopcnt<MR, 1, Signed>;
    case 2: return kernelPopcnt<MR, 2, Signed>;
    default: return kernelPopcnt<MR, 3, Signed>;
  }
}

template <bool Signed>
PopFn popKernelOf(int mr, int np) {
  switch (mr) {
    case 1: return popFor<1, Signed>(np);
    case 2: return popFor<2, Signed>(np);
    case 3: return popFor<3, Signed>(np);
    case 4: return popFor<4, Signed>(np);
    case 5: return popFor<5, Signed>(np);
    default: return popFor<6, Signed>(np);
  }
}

PopFn popKernel(int mr, int np, bool sign = false) { return sign ? popKernelOf<true>(mr, np) : popKernelOf<false>(mr, np); }

// AVX2: nibble-table popcount (pshufb) of 4 words at a time, bytes summed with vpsadbw.
LOWBIT_TARGET_AVX2I int64_t popXorAvx2(const uint64_t* a, const uint64_t* w, int64_t words) {
  const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2,
                                         2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  __m256i acc = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 4 <= words; k += 4) {
    const __m256i x = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k)),
                                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k)));
    const __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(x, low)),
                                        _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)));
    acc = _mm256_add_epi64(acc, _mm256_sad_epu8(cnt, _mm256_setzero_si256()));
  }
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc);
  int64_t total = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; k < words; k++) total += __builtin_popcountll(load64(a + k) ^ load64(w + k));
  return total;
}

__attribute__((target("popcnt"))) int64_t popXorScalar(const uint64_t* a, const uint64_t* w, int64_t words) {
  int64_t total = 0;
  for (int64_t k = 0; k < words; k++) total += __builtin_popcountll(load64(a + k) ^ load64(w + k));
  return total;
}

}  // namespace

namespace {

// Cache blocking over words: a tile's 48 weight rows of kWc 32-bit words take 48 * kWc * 4 bytes.
constexpr int64_t kWc = 256;  // 48 KB of weights per block (K <= 8192 bits: one block), 6 rows of 1 KB activations

// Rows [m0, m1) x columns [n0, n0 + ncols) (ncols <= 48) of the AVX-512 binary GEMM, panels `wt`
// (words = ceil(K / 64) 64-bit words per row), into c or (sign not null) through the sign stage
// `sign` with its SignOutput `whole` (whole-matrix pointers; lo / range per column).
void popBlock(const uint64_t* a, int64_t words, const uint64_t* wt, int64_t K, int32_t* c, int64_t ldc, int64_t m0,
              int64_t m1, int64_t n0, int64_t ncols, const PopSign* sign = nullptr, const SignOutput* whole = nullptr) {
  const int np = static_cast<int>(ceilDiv(ncols, kBinPanel));
  const int64_t w32 = 2 * words;
  const uint32_t* a32 = reinterpret_cast<const uint32_t*>(a);
  const uint32_t* wt32 = reinterpret_cast<const uint32_t*>(wt);
  if (w32 <= kWc) {
    for (int64_t m = m0; m < m1; m += kBinMR) {
      const int mr = static_cast<int>(std::min<int64_t>(kBinMR, m1 - m));
      if (sign) {
        const PopSign at{sign->lo + n0, sign->range + n0,
                         sign->bits ? static_cast<void*>(static_cast<uint8_t*>(sign->out) + m * sign->ldo * 8 + n0 / 8)
                                    : static_cast<void*>(static_cast<int8_t*>(sign->out) + m * sign->ldo + n0),
                         sign->ldo, sign->bits};
        popKernel(mr, np, true)(a32 + m * w32, w32, wt32 + (n0 / kBinPanel) * w32 * kBinPanel, K, nullptr, 0, ncols, &at);
      } else {
        popKernel(mr, np)(a32 + m * w32, w32, wt32 + (n0 / kBinPanel) * w32 * kBinPanel, K, c + m * ldc + n0, ldc, ncols, nullptr);
      }
    }
    return;
  }
  // Words in blocks: partial results K_b - 2 pc_b summed over blocks give K - 2 pc exactly
  // when K_b of the blocks add to K (we pass the block's bit count, the last one takes the rest).
  // The kernel reads its rows contiguously, so each block of A and of the panels is copied.
  thread_local std::vector<uint32_t> ablk(kBinMR * kWc), wblk(kBinNP * kWc * kBinPanel);
  constexpr int64_t ld = kBinNP * kBinPanel;
  for (int64_t m = m0; m < m1; m += kBinMR) {
    const int mr = static_cast<int>(std::min<int64_t>(kBinMR, m1 - m));
    int32_t part[kBinMR * ld];
    int32_t sum[kBinMR * ld] = {0};
    for (int64_t k0 = 0; k0 < w32; k0 += kWc) {
      const int64_t wn = std::min(kWc, w32 - k0);
      for (int i = 0; i < mr; i++) std::memcpy(ablk.data() + i * wn, a32 + (m + i) * w32 + k0, static_cast<size_t>(wn) * 4);
      for (int p = 0; p < np; p++) {
        std::memcpy(wblk.data() + p * wn * kBinPanel, wt32 + ((n0 / kBinPanel + p) * w32 + k0) * kBinPanel, static_cast<size_t>(wn) * kBinPanel * 4);
      }
      popKernel(mr, np)(ablk.data(), wn, wblk.data(), wn * 32, part, ld, ncols, nullptr);
      for (int i = 0; i < mr; i++)
        for (int64_t j = 0; j < ncols; j++) sum[i * ld + j] += part[i * ld + j];
    }
    // sum = sum_b (32 wn_b - 2 pc_b) = 64 words - 2 pc; correct to K - 2 pc.
    const int32_t fix = static_cast<int32_t>(K - 64 * words);
    for (int i = 0; i < mr; i++) {
      for (int64_t j = 0; j < ncols; j++) {
        if (whole) {
          signStoreOne(*whole, m + i, n0 + j, sum[i * ld + j] + fix);
        } else {
          c[(m + i) * ldc + n0 + j] = sum[i * ld + j] + fix;
        }
      }
    }
  }
}

}  // namespace

int64_t binaryPanelWords(int64_t N, int64_t K) { return ceilDiv(N, kBinPanel) * kBinPanel * ceilDiv(K, 64); }

void packBinaryPanels(const uint64_t* w, int64_t N, int64_t K, uint64_t* wt) {
  const int64_t words = ceilDiv(K, 64), w32 = 2 * words;
  std::memset(wt, 0, static_cast<size_t>(binaryPanelWords(N, K)) * 8);
  uint32_t* wt32 = reinterpret_cast<uint32_t*>(wt);
  for (int64_t n = 0; n < N; n++) {
    const int64_t p = n / kBinPanel, r = n % kBinPanel;
    for (int64_t k = 0; k < words; k++) {
      const uint64_t v = load64(w + n * words + k);
      wt32[(p * w32 + 2 * k) * kBinPanel + r] = static_cast<uint32_t>(v);
      wt32[(p * w32 + 2 * k + 1) * kBinPanel + r] = static_cast<uint32_t>(v >> 32);
    }
  }
}

bool binaryUsesPanels() { return binaryPath() == IntPath::Avx512; }

void gemmBinarySerial(int64_t M, int64_t N, int64_t K, const uint64_t* a, const uint64_t* w, const uint64_t* panels,
                      int32_t* c, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const int64_t words = ceilDiv(K, 64);
  const IntPath path = binaryPath();
  if (path != IntPath::Avx512) {
    for (int64_t m = 0; m < M; m++) {
      for (int64_t n = 0; n < N; n++) {
        const int64_t pc = path == IntPath::Avx2 ? popXorAvx2(a + m * words, w + n * words, words)
                                                 : popXorScalar(a + m * words, w + n * words, words);
        c[m * ldc + n] = static_cast<int32_t>(K - 2 * pc);
      }
    }
    return;
  }
  const int64_t nb = kBinNP * kBinPanel;
  for (int64_t n0 = 0; n0 < N; n0 += nb) popBlock(a, words, panels, K, c, ldc, 0, M, n0, std::min(nb, N - n0));
}

void binarySignThresholds(int64_t N, int64_t K, const int32_t* lower, const int32_t* upper, int32_t* lo, int32_t* range) {
  for (int64_t n = 0; n < N; n++) {
    const int64_t l = std::max<int64_t>(0, (K - static_cast<int64_t>(upper[n]) + 1) >> 1);  // ceil(x / 2) = floor((x + 1) / 2)
    const int64_t h = std::min<int64_t>(K, (K - static_cast<int64_t>(lower[n])) >> 1);
    lo[n] = static_cast<int32_t>(l <= h ? l : K + 1);
    range[n] = static_cast<int32_t>(l <= h ? h - l : 0);
  }
}

void gemmBinarySignSerial(int64_t M, int64_t N, int64_t K, const uint64_t* a, const uint64_t* panels, const SignOutput& sign) {
  if (M <= 0 || N <= 0 || binaryPath() != IntPath::Avx512 || !sign.popLo || !sign.popRange) return;
  const int64_t words = ceilDiv(K, 64);
  if (sign.bits) {
    // the kernel writes 2 bytes per 16-column panel (the last one's bits past N zero); the rest of
    // each row is padding (a panel starts on a multiple of 16 bits, so its 2 bytes end at most at
    // 64 ceil(N / 64) bits: inside the row)
    const int64_t used = ceilDiv(N, kBinPanel) * 2, rowBytes = ceilDiv(N, 64) * 8;
    for (int64_t m = 0; m < M; m++) std::memset(static_cast<uint8_t*>(sign.out) + m * sign.ldo * 8 + used, 0, static_cast<size_t>(rowBytes - used));
  }
  const PopSign pop{sign.popLo, sign.popRange, sign.out, sign.ldo, sign.bits};
  const int64_t nb = kBinNP * kBinPanel;
  for (int64_t n0 = 0; n0 < N; n0 += nb) popBlock(a, words, panels, K, nullptr, 0, 0, M, n0, std::min(nb, N - n0), &pop, &sign);
}

void gemmBinary(int64_t M, int64_t N, int64_t K, const uint64_t* a, const uint64_t* w, int32_t* c) {
  if (M <= 0 || N <= 0) return;
  const int64_t words = ceilDiv(K, 64);
  const IntPath path = binaryPath();
  const double work = static_cast<double>(M) * N * static_cast<double>(words) * 4.0;
  if (path != IntPath::Avx512) {
    parallelFor(M, work, [&](int64_t begin, int64_t end) {
      gemmBinarySerial(end - begin, N, K, a + begin * words, w, nullptr, c + begin * N, N);
    });
    return;
  }
  std::vector<uint64_t> wt(static_cast<size_t>(binaryPanelWords(N, K)));
  packBinaryPanels(w, N, K, wt.data());
  const int64_t nb = kBinNP * kBinPanel, nBlocks = ceilDiv(N, nb), mBlocks = ceilDiv(M, kMC);
  parallelFor(nBlocks * mBlocks, work, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++) {
      const int64_t jb = t / mBlocks, ib = t % mBlocks;
      const int64_t n0 = jb * nb, m0 = ib * kMC;
      popBlock(a, words, wt.data(), K, c, N, m0, std::min(M, m0 + kMC), n0, std::min(nb, N - n0));
    }
  });
}

// ---------------------------------------------------------------- requantize
static inline int32_t srdhm(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));  // truncates toward zero
}

static inline int32_t rdbpot(int32_t x, int exponent) {
  const int64_t mask = (int64_t{1} << exponent) - 1;
  const int64_t remainder = static_cast<int64_t>(x) & mask;
  const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<int32_t>((static_cast<int64_t>(x) >> exponent) + (remainder > threshold ? 1 : 0));
}

void requantize(const int32_t* acc, int64_t M, int64_t N, const int32_t* mult, const int32_t* shift, int32_t zOut,
                int32_t qmin, int32_t qmax, void* out, bool outSigned) {
  parallelFor(M, static_cast<double>(M) * N * 4, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; m++) {
      for (int64_t n = 0; n < N; n++) {
        const int32_t s = shift[n];
        const int left = s < 0 ? -s : 0, right = s > 0 ? s : 0;
        const int32_t x = static_cast<int32_t>(static_cast<uint32_t>(acc[m * N + n]) << left);
        int64_t v = static_cast<int64_t>(rdbpot(srdhm(x, mult[n]), right)) + zOut;
        v = std::min<int64_t>(qmax, std::max<int64_t>(qmin, v));
        if (outSigned) {
          static_cast<int8_t*>(out)[m * N + n] = static_cast<int8_t>(v);
        } else {
          static_cast<uint8_t*>(out)[m * N + n] = static_cast<uint8_t>(v);
        }
      }
    }
  });
}

// ---------------------------------------------------------------- probes
namespace {

constexpr int kProbeChains = 24;

// 24 independent accumulator chains in named variables (a 24-vector array would be kept in
// memory by GCC, measuring store bandwidth instead), each step one inline-asm instruction.
// The VNNI chains use the operand pattern of a GEMM micro-kernel: 5 activation and 4 weight
// registers, every pair once (20 chains + 9 sources fit the 32 registers without reloads).
#define LB_VCHAINS(X) \
  X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19)
#define LB_CHAINS(X) \
  X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)

LOWBIT_TARGET_VNNI int32_t vnniLoop(long iters) {
#define LB_DECL(i) __m512i c##i = _mm512_set1_epi32(i);
  LB_VCHAINS(LB_DECL)
#undef LB_DECL
  const __m512i x0 = _mm512_set1_epi32(0x01020304), x1 = _mm512_set1_epi32(0x05060708),
                x2 = _mm512_set1_epi32(0x090a0b0c), x3 = _mm512_set1_epi32(0x0d0e0f10),
                x4 = _mm512_set1_epi32(0x11121314);
  const __m512i y0 = _mm512_set1_epi32(0x01ff0102), y1 = _mm512_set1_epi32(0x03fe0405),
                y2 = _mm512_set1_epi32(0x06fd0708), y3 = _mm512_set1_epi32(0x09fc0a0b);
  for (long i = 0; i < iters; i++) {
#define LB_STEP(c, x, y) __asm__("vpdpbusd %[wv], %[av], %[cv]" : [cv] "+v"(c) : [av] "v"(x), [wv] "v"(y));
#define LB_ROW(r, a, b, cc, d, x) LB_STEP(c##a, x, y0) LB_STEP(c##b, x, y1) LB_STEP(c##cc, x, y2) LB_STEP(c##d, x, y3)
    LB_ROW(0, 0, 1, 2, 3, x0)
    LB_ROW(1, 4, 5, 6, 7, x1)
    LB_ROW(2, 8, 9, 10, 11, x2)
    LB_ROW(3, 12, 13, 14, 15, x3)
    LB_ROW(4, 16, 17, 18, 19, x4)
#undef LB_ROW
#undef LB_STEP
  }
  __m512i s = _mm512_setzero_si512();
#define LB_SUM(i) s = _mm512_add_epi32(s, c##i);
  LB_VCHAINS(LB_SUM)
#undef LB_SUM
  return _mm512_reduce_add_epi32(s);
}

LOWBIT_TARGET_VPOPCNT int64_t popLoop(long iters) {
#define LB_DECL(i) __m512i c##i = _mm512_set1_epi64(0x0123456789abcdefLL * ((i) + 1));
  LB_CHAINS(LB_DECL)
#undef LB_DECL
  const __m512i x0 = _mm512_set1_epi64(0x5555aaaa3333ccccLL), x1 = _mm512_set1_epi64(0x0f0f00ff12345678LL),
                x2 = _mm512_set1_epi64(0x7777111122228888LL);
  for (long i = 0; i < iters; i++) {
#define LB_STEP(i) __asm__("vpxorq %[xv], %[cv], %[cv]\n\tvpopcntq %[cv], %[cv]" : [cv] "+v"(c##i) : [xv] "v"((i) % 3 == 0 ? x0 : (i) % 3 == 1 ? x1 : x2));
    LB_CHAINS(LB_STEP)
#undef LB_STEP
  }
  __m512i s = _mm512_setzero_si512();
#define LB_SUM(i) s = _mm512_add_epi64(s, c##i);
  LB_CHAINS(LB_SUM)
#undef LB_SUM
  return _mm512_reduce_add_epi64(s);
}
#undef LB_CHAINS
#undef LB_VCHAINS

// The AVX-VNNI (ymm, VEX) form: 12 chains, 3 activation and 1 weight vectors (the 16 ymm VEX reaches).
LOWBIT_TARGET_AVXVNNI int32_t vnniYmmLoop(long iters) {
#define LB_YCHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define LB_DECL(i) __m256i c##i = _mm256_set1_epi32(i);
  LB_YCHAINS(LB_DECL)
#undef LB_DECL
  const __m256i x0 = _mm256_set1_epi32(0x01020304), x1 = _mm256_set1_epi32(0x05060708), x2 = _mm256_set1_epi32(0x090a0b0c);
  const __m256i y0 = _mm256_set1_epi32(0x01ff0102);
  for (long i = 0; i < iters; i++) {
// (inline asm as in vnniLoop: with the intrinsic GCC stores every chain to the stack each step)
#define LB_STEP(i) \
  __asm__("%{vex%} vpdpbusd %[wv], %[av], %[cv]" : [cv] "+x"(c##i) : [av] "x"((i) % 3 == 0 ? x0 : (i) % 3 == 1 ? x1 : x2), [wv] "x"(y0));
    LB_YCHAINS(LB_STEP)
#undef LB_STEP
  }
  __m256i s = _mm256_setzero_si256();
#define LB_SUM(i) s = _mm256_add_epi32(s, c##i);
  LB_YCHAINS(LB_SUM)
#undef LB_SUM
#undef LB_YCHAINS
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

// What a probe runs: vpdpbusd on zmm (20 chains), on ymm (AVX-VNNI, 12 chains) or xor + vpopcntq.
enum class ProbeKind { Zmm, Ymm, Pop };

int64_t probeLoop(ProbeKind kind, long iters) {
  return kind == ProbeKind::Zmm ? vnniLoop(iters) : kind == ProbeKind::Ymm ? vnniYmmLoop(iters) : popLoop(iters);
}

struct ProbeCtx {
  long iters;
  ProbeKind kind;
  volatile int64_t sink;
  double cpuSeconds[256];
};

double threadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

double probe(int threads, double seconds, ProbeKind kind) {
  long iters = 1 << 12;
  double elapsed = 0;
  for (;;) {
    const double t0 = threadCpuSeconds();
    const int64_t s = probeLoop(kind, iters);
    elapsed = threadCpuSeconds() - t0;
    if (s == 12345) iters++;
    if (elapsed > seconds / 4 || iters > (1L << 40)) break;
    iters *= 2;
  }
  iters = static_cast<long>(iters * (seconds / elapsed));
  if (threads < 1) threads = 1;
  if (threads > 256) threads = 256;
  ProbeCtx ctx{iters, kind, 0, {}};
  const int saved = poolThreads();
  if (threads != saved) poolSetThreads(threads);
  poolRun(threads, [](void* raw, int t, int) {
    auto* c = static_cast<ProbeCtx*>(raw);
    const double c0 = threadCpuSeconds();
    c->sink = probeLoop(c->kind, c->iters);
    c->cpuSeconds[t] = threadCpuSeconds() - c0;
  }, &ctx);
  if (threads != saved) poolSetThreads(saved);
  // zmm vnni: 64 u8 x s8 multiply-adds = 128 ops per instruction (ymm: 64); popcount: 512 bits per
  // instruction. Each thread's rate is taken over its own CPU time (not wall time), so that time
  // slices lost to other processes on a shared machine do not count; the rates of the threads add up.
  const double perIter = kind == ProbeKind::Zmm ? 128.0 * 20 : kind == ProbeKind::Ymm ? 64.0 * 12 : 512.0 * kProbeChains;
  const double perThread = perIter * static_cast<double>(iters);
  double total = 0;
  for (int t = 0; t < threads; t++) total += ctx.cpuSeconds[t] > 0 ? perThread / ctx.cpuSeconds[t] : 0;
  return total * 1e-9;
}

}  // namespace

double vnniPeakGops(int threads, double seconds) {
  if (int8Path() == IntPath::AvxVnni) return probe(threads, seconds, ProbeKind::Ymm);
  if (int8Path() != IntPath::Avx512) return 0;
  return probe(threads, seconds, ProbeKind::Zmm);
}

double popcountPeakGbits(int threads, double seconds) {
  if (binaryPath() != IntPath::Avx512) return 0;
  return probe(threads, seconds, ProbeKind::Pop);
}

const char* int8PathName() {
  switch (int8Path()) {
    case IntPath::Avx512: return "avx512-vnni";
    case IntPath::AvxVnni: return "avx-vnni";
    case IntPath::Avx2: return "avx2";
    default: return "scalar";
  }
}

const char* binaryPathName() {
  switch (binaryPath()) {
    case IntPath::Avx512: return "avx512-vpopcntdq";
    case IntPath::Avx2: return "avx2-pshufb";
    default: return "scalar";
  }
}

}  // namespace lowbit
