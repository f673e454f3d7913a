// Direct 3x3 conv (see conv3x3.h).
#include "conv3x3.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <utility>

#include "cpu.h"
#include "intmodel.h"

#define LOWBIT_TARGET_C3 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,avx2")))

namespace lowbit {

namespace {

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

constexpr int kMaxR1 = 14;  // pixels per register block with one channel block (14 accumulators)
constexpr int kMaxR2 = 12;  // ... with two (24 accumulators + 2 weight vectors + 1 broadcast)
constexpr size_t kPadSlack = 128;  // bytes past the padded image (a 4-byte broadcast never reads past it)

// The accumulation of R pixels x NB channel blocks. q: the padded input at the first pixel's window
// origin; ps: bytes between neighbouring pixels' windows (stride C); rowBytes: padded row; j4n: 4-byte
// groups per window row (3 C / 4; ceil(kw C / 4) in general); kh: kernel rows; w: the first block's weights ([k4][64 bytes]), wStride bytes to the
// next block; bias: the blocks' initial values; tile: R rows of ldt int32, the blocks' 16 NB columns.
// Accumulators are named variables and the multiply-add is inline asm (as intgemm.cc's micro-kernel:
// GCC would otherwise keep an array of accumulators on the stack).
#define C3_DP(acc, a, w) __asm__("vpdpbusd %[wv], %[av], %[cv]" : [cv] "+v"(acc) : [av] "v"(a), [wv] "v"(w))
#define C3_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
template <int R, int NB, int PS>
LOWBIT_TARGET_C3 void accBlock(const uint8_t* q, int64_t psRun, int64_t rowBytes, int64_t kh, int64_t j4n, const int8_t* w, int64_t wStride,
                               const int32_t* bias, int32_t* tile, int64_t ldt) {
  static_assert(R >= 1 && R <= kMaxR1 && NB >= 1 && NB <= 2 && (NB == 1 || R <= kMaxR2), "register block");
  const int64_t ps = PS > 0 ? PS : psRun;
  const __m512i b0 = _mm512_loadu_si512(bias);
  const __m512i b1 = NB > 1 ? _mm512_loadu_si512(bias + 16) : b0;
#define C3_DECL(r)  \
  __m512i a##r##0, a##r##1; \
  if constexpr (R > r) {    \
    a##r##0 = b0;           \
    a##r##1 = b1;           \
  }
  C3_ROWS(C3_DECL)
#undef C3_DECL
  for (int64_t ky = 0; ky < kh; ky++) {
    const uint8_t* row = q + ky * rowBytes;
    const int8_t* wk = w + ky * j4n * 64;
    for (int64_t j = 0; j < j4n; j++) {
      const __m512i w0 = _mm512_loadu_si512(wk + 64 * j);
      __m512i w1;
      if constexpr (NB > 1) w1 = _mm512_loadu_si512(wk + wStride + 64 * j);
      const uint8_t* src = row + 4 * j;
#define C3_STEP(r)                                  \
  if constexpr (R > r) {                            \
    int32_t word;                                   \
    std::memcpy(&word, src + (r) * ps, 4);          \
    const __m512i av = _mm512_set1_epi32(word);     \
    C3_DP(a##r##0, av, w0);                         \
    if constexpr (NB > 1) C3_DP(a##r##1, av, w1);   \
  }
      C3_ROWS(C3_STEP)
#undef C3_STEP
    }
  }
#define C3_STORE(r)                                                         \
  if constexpr (R > r) {                                                    \
    _mm512_storeu_si512(tile + (r) * ldt, a##r##0);                         \
    if constexpr (NB > 1) _mm512_storeu_si512(tile + (r) * ldt + 16, a##r##1); \
  }
  C3_ROWS(C3_STORE)
#undef C3_STORE
}
#undef C3_ROWS
#undef C3_DP

using BlockFn = void (*)(const uint8_t*, int64_t, int64_t, int64_t, int64_t, const int8_t*, int64_t, const int32_t*, int32_t*, int64_t);

template <int NB, int PS, size_t... I>
constexpr std::array<BlockFn, sizeof...(I)> blockTable(std::index_sequence<I...>) {
  return {accBlock<static_cast<int>(I) + 1, NB, PS>...};
}

// Register-block kernels by pixel count R (index R - 1); the pixel step PS is a constant for the
// common C S = 16, 32, 64, 128 (then every broadcast address is one base register plus an
// immediate; with a run-time step GCC spends general registers and stack reloads on them).
struct BlockTables {
  std::array<BlockFn, kMaxR1> one;
  std::array<BlockFn, kMaxR2> two;
};

template <int PS>
constexpr BlockTables tablesFor() {
  return {blockTable<1, PS>(std::make_index_sequence<kMaxR1>()), blockTable<2, PS>(std::make_index_sequence<kMaxR2>())};
}

const BlockTables kTables[5] = {tablesFor<0>(), tablesFor<16>(), tablesFor<32>(), tablesFor<64>(), tablesFor<128>()};

const BlockTables& tablesOf(int64_t ps) {
  switch (ps) {
    case 16: return kTables[1];
    case 32: return kTables[2];
    case 64: return kTables[3];
    case 128: return kTables[4];
    default: return kTables[0];
  }
}

// dst[i] = src[i] ^ flip for i < len.
LOWBIT_TARGET_C3 void copyFlip(uint8_t* dst, const uint8_t* src, int64_t len, uint8_t flip) {
  const __m512i f = _mm512_set1_epi8(static_cast<char>(flip));
  for (int64_t i = 0; i < len; i += 64) {
    const __mmask64 m = len - i >= 64 ? ~__mmask64{0} : (__mmask64{1} << (len - i)) - 1;
    _mm512_mask_storeu_epi8(dst + i, m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src + i), f));
  }
}

// Requantizes one output row (OW pixels, tile rows of ldt int32) to bytes: the integer path of
// intmodel.cc (IntOp::intRequant: with S = acc M0 + bmh, q = (S + 2^(n' - 1) - [S < 0 and bml = 0])
// >> n', then clamp(q + z, lo, hi)) on 16 channels at once. The even channels' accumulators are the
// low halves of the int64 lanes and the odd ones' the high halves (vpmuldq reads the low 32 bits,
// signed), so no lane shuffle widens them; q is clamped to [lo - z, hi - z] in int64 (the same as
// clamping q + z to [lo, hi]), the two halves are merged back into 16 int32 lanes, z is added and
// vpmovdb packs the bytes in a register, stored with one (masked, for the last block) 16-byte store.
LOWBIT_TARGET_C3 void requantRow(const Conv3x3Plan& plan, const IntOp& op, const int32_t* tile, int64_t ldt, int64_t OW, uint8_t* out) {
  const int64_t OC = op.OC;
  const __m512i lo = _mm512_set1_epi64(op.lo - op.z), hi = _mm512_set1_epi64(op.hi - op.z), z = _mm512_set1_epi32(op.z);
  const __m512i one = _mm512_set1_epi64(1);
  for (int64_t b = 0; b < plan.blocks; b++) {
    const int64_t* k = plan.rq.data() + b * 64;
    const __m512i m0e = _mm512_loadu_si512(k), m0o = _mm512_loadu_si512(k + 8);
    const __m512i bhe = _mm512_loadu_si512(k + 16), bho = _mm512_loadu_si512(k + 24);
    const __m512i hfe = _mm512_loadu_si512(k + 32), hfo = _mm512_loadu_si512(k + 40);
    const __m512i she = _mm512_loadu_si512(k + 48), sho = _mm512_loadu_si512(k + 56);
    const uint16_t lz = plan.lowZero[static_cast<size_t>(b)];
    __mmask8 lze = 0, lzo = 0;
    for (int i = 0; i < 8; i++) {
      lze = static_cast<__mmask8>(lze | (((lz >> (2 * i)) & 1) << i));
      lzo = static_cast<__mmask8>(lzo | (((lz >> (2 * i + 1)) & 1) << i));
    }
    const int64_t valid = std::min<int64_t>(16, OC - 16 * b);
    const __mmask16 store = static_cast<__mmask16>((1u << valid) - 1u);
    for (int64_t ox = 0; ox < OW; ox++) {
      const __m512i acc = _mm512_loadu_si512(tile + ox * ldt + 16 * b);
      __m512i te = _mm512_add_epi64(_mm512_mul_epi32(acc, m0e), bhe);
      __m512i to = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(acc, 32), m0o), bho);
      // S < 0 exactly when t = S + 2^(n' - 1) < 2^(n' - 1)
      te = _mm512_mask_sub_epi64(te, _mm512_mask_cmplt_epi64_mask(lze, te, hfe), te, one);
      to = _mm512_mask_sub_epi64(to, _mm512_mask_cmplt_epi64_mask(lzo, to, hfo), to, one);
      const __m512i qe = _mm512_min_epi64(_mm512_max_epi64(_mm512_srav_epi64(te, she), lo), hi);
      const __m512i qo = _mm512_min_epi64(_mm512_max_epi64(_mm512_srav_epi64(to, sho), lo), hi);
      const __m512i q = _mm512_add_epi32(_mm512_mask_blend_epi32(0xAAAA, qe, _mm512_slli_epi64(qo, 32)), z);
      const __m128i bytes = _mm512_cvtepi32_epi8(q);
      uint8_t* dst = out + ox * OC + 16 * b;
      if (valid == 16) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), bytes);
      } else {
        _mm_mask_storeu_epi8(dst, store, bytes);
      }
    }
  }
}

// The fused 2 x 2, stride 2 max pooling of two conv rows (tile rows [0, OW) and [OW, 2 OW)) into
// tile rows [0, POW): per channel the max of the window's accumulators, or the min when M0 < 0
// (the requantization is then non-increasing; IntOp::poolKh). Pooled pixel px only reads conv
// pixels 2 px and 2 px + 1 >= px, so it may overwrite row px in place.
LOWBIT_TARGET_C3 void pool2x2(const IntOp& op, const Conv3x3Plan& plan, int32_t* tile, int64_t ldt, int64_t OW, int64_t POW) {
  for (int64_t b = 0; b < plan.blocks; b++) {
    const __mmask16 neg = _mm_cmpneq_epi8_mask(_mm_loadu_si128(reinterpret_cast<const __m128i*>(op.mneg.data() + 16 * b)), _mm_setzero_si128());
    for (int64_t px = 0; px < POW; px++) {
      const int32_t* a = tile + 2 * px * ldt + 16 * b;
      const __m512i v0 = _mm512_loadu_si512(a), v1 = _mm512_loadu_si512(a + ldt);
      const __m512i v2 = _mm512_loadu_si512(a + OW * ldt), v3 = _mm512_loadu_si512(a + (OW + 1) * ldt);
      const __m512i hi = _mm512_max_epi32(_mm512_max_epi32(v0, v1), _mm512_max_epi32(v2, v3));
      const __m512i lo = _mm512_min_epi32(_mm512_min_epi32(v0, v1), _mm512_min_epi32(v2, v3));
      _mm512_storeu_si512(tile + px * ldt + 16 * b, _mm512_mask_blend_epi32(neg, hi, lo));
    }
  }
}


// The stem (C = 1..3): Q[y][x] = the 3 C elements P[y][x C .. x C + 3 C) of the padded image P (the
// window row of output column x: taps kx = 0..2, all channels), zero up to G elements; then the
// conv is the kernels' loop with one "pixel" of G elements per window row (G / 4 groups). P rows
// hold PW C elements and at least 8 bytes of slack past the image (the 8-byte loads).
template <typename T, int C, int G>
void buildStem(const T* P, int64_t PH, int64_t PW, T* Q) {
  static_assert(3 * C <= G && G * sizeof(T) % 4 == 0, "stem group");
  constexpr int bytes = 3 * C * static_cast<int>(sizeof(T)), chunks = (G * static_cast<int>(sizeof(T)) + 7) / 8;
  const int64_t QW = PW - 2;
  for (int64_t y = 0; y < PH; y++) {
    const uint8_t* src = reinterpret_cast<const uint8_t*>(P + y * PW * C);
    uint8_t* dst = reinterpret_cast<uint8_t*>(Q + y * QW * G);
    for (int64_t x = 0; x < QW; x++) {
      for (int k = 0; k < chunks; k++) {
        uint64_t v;
        std::memcpy(&v, src + x * C * static_cast<int64_t>(sizeof(T)) + 8 * k, 8);
        const int keep = bytes - 8 * k;  // the window's bytes in this chunk (the rest: zero)
        if (keep < 8) v = keep <= 0 ? 0 : v & ((uint64_t{1} << (8 * keep)) - 1);
        constexpr int last = G * static_cast<int>(sizeof(T)) - 8 * (chunks - 1);
        std::memcpy(dst + x * G * static_cast<int64_t>(sizeof(T)) + 8 * k, &v, k + 1 < chunks ? 8 : last);
      }
    }
  }
}

// The stem group G (elements of Q per window row) for C = 1..3: 3 C rounded up to 4.
inline int64_t stemGroup(int64_t C) { return (3 * C + 3) / 4 * 4; }

template <typename T>
void buildStemFor(int64_t C, const T* P, int64_t PH, int64_t PW, T* Q) {
  switch (C) {
    case 1: return buildStem<T, 1, 4>(P, PH, PW, Q);
    case 2: return buildStem<T, 2, 8>(P, PH, PW, Q);
    default: return buildStem<T, 3, 12>(P, PH, PW, Q);
  }
}

// ---------------------------------------------------------------- AVX2: ymm blocks of 8 channels
#define LOWBIT_TARGET_C3V __attribute__((target("avx2,fma,avxvnni")))
#define LOWBIT_TARGET_C3W __attribute__((target("avx2,fma")))

constexpr int kMaxY1 = 12;  // pixels per register block with one 8-channel block (12 accumulators)
constexpr int kMaxY2 = 6;   // ... with two (12 accumulators + 2 weight vectors + broadcast (+ product))

#define C3Y_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define C3Y_DECL(r)         \
  __m256i a##r##0, a##r##1; \
  if constexpr (R > r) {    \
    a##r##0 = b0;           \
    a##r##1 = b1;           \
  }
#define C3Y_STORE(r)                                                                          \
  if constexpr (R > r) {                                                                      \
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + (r) * ldt), a##r##0);               \
    if constexpr (NB > 1) _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + (r) * ldt + 8), a##r##1); \
  }

// AVX-VNNI: as accBlock with 8-channel ymm blocks; w: [k4][32 bytes] per block, wStride bytes apart.
template <int R, int NB, int PS>
LOWBIT_TARGET_C3V void accBlockVnni(const void* qv, int64_t psRun, int64_t rowBytes, int64_t kh, int64_t j4n, const void* wv, int64_t wStride,
                                    const int32_t* bias, int32_t* tile, int64_t ldt) {
  static_assert(R >= 1 && R <= kMaxY1 && NB >= 1 && NB <= 2 && (NB == 1 || R <= kMaxY2), "register block");
  const uint8_t* q = static_cast<const uint8_t*>(qv);
  const int8_t* w = static_cast<const int8_t*>(wv);
  const int64_t ps = PS > 0 ? PS : psRun;
  const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias));
  const __m256i b1 = NB > 1 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + 8)) : b0;
  C3Y_ROWS(C3Y_DECL)
  for (int64_t ky = 0; ky < kh; ky++) {
    const uint8_t* row = q + ky * rowBytes;
    const int8_t* wk = w + ky * j4n * 32;
    for (int64_t j = 0; j < j4n; j++) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + 32 * j));
      __m256i w1;
      if constexpr (NB > 1) w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + wStride + 32 * j));
      const uint8_t* src = row + 4 * j;
#define C3Y_STEP(r)                                                  \
  if constexpr (R > r) {                                             \
    int32_t word;                                                    \
    std::memcpy(&word, src + (r) * ps, 4);                           \
    const __m256i av = _mm256_set1_epi32(word);                      \
    a##r##0 = _mm256_dpbusd_avx_epi32(a##r##0, av, w0);              \
    if constexpr (NB > 1) a##r##1 = _mm256_dpbusd_avx_epi32(a##r##1, av, w1); \
  }
      C3Y_ROWS(C3Y_STEP)
#undef C3Y_STEP
    }
  }
  C3Y_ROWS(C3Y_STORE)
}

// AVX2 without VNNI: q is the uint16 padded image (ps, rowBytes in uint16 elements), j2n the int16
// pairs of a window row (3 C / 2; 2 ceil(kw C / 4) in general), w: [pair][8 channels][2 int16] per block, wStride int16 apart.
// vpmaddwd of the broadcast pair (x0, x1) (0..255 each) and the weight pairs (-128..127) gives
// x0 w0 + x1 w1 per channel exactly (|.| <= 2 255 128).
template <int R, int NB, int PS>
LOWBIT_TARGET_C3W void accBlockMadd(const void* qv, int64_t psRun, int64_t rowElems, int64_t kh, int64_t j2n, const void* wv, int64_t wStride,
                                    const int32_t* bias, int32_t* tile, int64_t ldt) {
  static_assert(R >= 1 && R <= kMaxY1 && NB >= 1 && NB <= 2 && (NB == 1 || R <= kMaxY2), "register block");
  const uint16_t* q = static_cast<const uint16_t*>(qv);
  const int16_t* w = static_cast<const int16_t*>(wv);
  const int64_t ps = PS > 0 ? PS : psRun;
  const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias));
  const __m256i b1 = NB > 1 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bias + 8)) : b0;
  C3Y_ROWS(C3Y_DECL)
  for (int64_t ky = 0; ky < kh; ky++) {
    const uint16_t* row = q + ky * rowElems;
    const int16_t* wk = w + ky * j2n * 16;
    for (int64_t j = 0; j < j2n; j++) {
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + 16 * j));
      __m256i w1;
      if constexpr (NB > 1) w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + wStride + 16 * j));
      const uint16_t* src = row + 2 * j;
#define C3Y_STEP(r)                                                                             \
  if constexpr (R > r) {                                                                        \
    int32_t word;                                                                               \
    std::memcpy(&word, src + (r) * ps, 4);                                                      \
    const __m256i av = _mm256_set1_epi32(word);                                                 \
    a##r##0 = _mm256_add_epi32(a##r##0, _mm256_madd_epi16(av, w0));                             \
    if constexpr (NB > 1) a##r##1 = _mm256_add_epi32(a##r##1, _mm256_madd_epi16(av, w1));       \
  }
      C3Y_ROWS(C3Y_STEP)
#undef C3Y_STEP
    }
  }
  C3Y_ROWS(C3Y_STORE)
}
#undef C3Y_STORE
#undef C3Y_DECL
#undef C3Y_ROWS

using BlockFnY = void (*)(const void*, int64_t, int64_t, int64_t, int64_t, const void*, int64_t, const int32_t*, int32_t*, int64_t);

template <bool VNNI, int NB, int PS, size_t... I>
constexpr std::array<BlockFnY, sizeof...(I)> blockTableY(std::index_sequence<I...>) {
  if constexpr (VNNI) {
    return {accBlockVnni<static_cast<int>(I) + 1, NB, PS>...};
  } else {
    return {accBlockMadd<static_cast<int>(I) + 1, NB, PS>...};
  }
}

struct BlockTablesY {
  std::array<BlockFnY, kMaxY1> one;
  std::array<BlockFnY, kMaxY2> two;
};

template <bool VNNI, int PS>
constexpr BlockTablesY tablesForY() {
  return {blockTableY<VNNI, 1, PS>(std::make_index_sequence<kMaxY1>()), blockTableY<VNNI, 2, PS>(std::make_index_sequence<kMaxY2>())};
}

const BlockTablesY kTablesVnni[5] = {tablesForY<true, 0>(), tablesForY<true, 16>(), tablesForY<true, 32>(), tablesForY<true, 64>(),
                                     tablesForY<true, 128>()};
const BlockTablesY kTablesMadd[5] = {tablesForY<false, 0>(), tablesForY<false, 16>(), tablesForY<false, 32>(), tablesForY<false, 64>(),
                                     tablesForY<false, 128>()};

const BlockTablesY& tablesOfY(bool vnni, int64_t ps) {
  const BlockTablesY* t = vnni ? kTablesVnni : kTablesMadd;
  switch (ps) {
    case 16: return t[1];
    case 32: return t[2];
    case 64: return t[3];
    case 128: return t[4];
    default: return t[0];
  }
}

// One sample's input rows into the padded image: bytes (x ^ flip) for AVX-VNNI, uint16 for the
// int16 path.
LOWBIT_TARGET_C3W void copyRowsY(bool wide, void* pad, const uint8_t* xs, int64_t H, int64_t inRow, int64_t rowElems, int64_t first,
                                 uint8_t flip) {
  for (int64_t iy = 0; iy < H; iy++) {
    const uint8_t* src = xs + iy * inRow;
    if (wide) {
      uint16_t* dst = static_cast<uint16_t*>(pad) + first + iy * rowElems;
      for (int64_t i = 0; i < inRow; i++) dst[i] = static_cast<uint16_t>(src[i] ^ flip);
    } else {
      uint8_t* dst = static_cast<uint8_t*>(pad) + first + iy * rowElems;
      for (int64_t i = 0; i < inRow; i++) dst[i] = static_cast<uint8_t>(src[i] ^ flip);
    }
  }
}

// pool2x2 on 8-channel ymm blocks.
LOWBIT_TARGET_C3W void pool2x2Y(const IntOp& op, const Conv3x3Plan& plan, int32_t* tile, int64_t ldt, int64_t OW, int64_t POW) {
  for (int64_t b = 0; b < plan.blocks; b++) {
    alignas(32) int32_t negs[8];
    for (int64_t i = 0; i < 8; i++) {
      const int64_t c = 8 * b + i;
      negs[i] = c < op.OC && op.mneg[static_cast<size_t>(c)] ? -1 : 0;
    }
    const __m256i neg = _mm256_load_si256(reinterpret_cast<const __m256i*>(negs));
    for (int64_t px = 0; px < POW; px++) {
      const int32_t* a = tile + 2 * px * ldt + 8 * b;
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + ldt));
      const __m256i v2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + OW * ldt));
      const __m256i v3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + (OW + 1) * ldt));
      const __m256i hi = _mm256_max_epi32(_mm256_max_epi32(v0, v1), _mm256_max_epi32(v2, v3));
      const __m256i lo = _mm256_min_epi32(_mm256_min_epi32(v0, v1), _mm256_min_epi32(v2, v3));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(tile + px * ldt + 8 * b), _mm256_blendv_epi8(hi, lo, neg));
    }
  }
}

// requantRow on 8-channel ymm blocks (plan.rq: per block 40 int64, see conv3x3Prepare). AVX2 has
// no int64 arithmetic right shift, min or max: q >> n' is ((t ^ s) >>> n') ^ s with s the sign
// mask of t (floor division either way), the clamps are compare + blend. When every channel has
// n' >= 32 (plan.rqHigh) the shift is instead the int32 high halves of t (floor(t / 2^32), all 8
// channels in one register after one blend) shifted right by n' - 32 with vpsravd (a count past
// 31 gives the sign, as floor does), and the clamps are int32 min / max.
template <bool HIGH>
LOWBIT_TARGET_C3W void requantRowY(const Conv3x3Plan& plan, const IntOp& op, const int32_t* tile, int64_t ldt, int64_t OW, uint8_t* out) {
  const int64_t OC = op.OC;
  const __m256i lo = _mm256_set1_epi64x(op.lo - op.z), hi = _mm256_set1_epi64x(op.hi - op.z), z = _mm256_set1_epi32(op.z);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i lo32 = _mm256_set1_epi32(op.lo - op.z), hi32 = _mm256_set1_epi32(op.hi - op.z);
  const bool s8 = op.out == IType::S8;
  for (int64_t b = 0; b < plan.blocks; b++) {
    const __m256i* k = reinterpret_cast<const __m256i*>(plan.rq.data() + b * 40);
    const __m256i m0e = _mm256_loadu_si256(k), m0o = _mm256_loadu_si256(k + 1);
    const __m256i bhe = _mm256_loadu_si256(k + 2), bho = _mm256_loadu_si256(k + 3);
    const __m256i hfe = _mm256_loadu_si256(k + 4), hfo = _mm256_loadu_si256(k + 5);
    const __m256i she = _mm256_loadu_si256(k + 6), sho = _mm256_loadu_si256(k + 7);
    const __m256i lze = _mm256_loadu_si256(k + 8), lzo = _mm256_loadu_si256(k + 9);
    const __m256i sh32 = HIGH ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(plan.rqShift32.data() + 8 * b)) : zero;
    const int64_t valid = std::min<int64_t>(8, OC - 8 * b);
    for (int64_t ox = 0; ox < OW; ox++) {
      const __m256i acc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + ox * ldt + 8 * b));
      __m256i te = _mm256_add_epi64(_mm256_mul_epi32(acc, m0e), bhe);
      __m256i to = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(acc, 32), m0o), bho);
      // S < 0 exactly when t = S + 2^(n' - 1) < 2^(n' - 1): then t - 1 for the bml = 0 channels
      te = _mm256_add_epi64(te, _mm256_and_si256(_mm256_cmpgt_epi64(hfe, te), lze));
      to = _mm256_add_epi64(to, _mm256_and_si256(_mm256_cmpgt_epi64(hfo, to), lzo));
      __m256i q;
      if constexpr (HIGH) {
        const __m256i h = _mm256_blend_epi32(_mm256_srli_epi64(te, 32), to, 0xAA);  // floor(t / 2^32), channel order
        q = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(_mm256_srav_epi32(h, sh32), lo32), hi32), z);
      } else {
        const __m256i se = _mm256_cmpgt_epi64(zero, te), so = _mm256_cmpgt_epi64(zero, to);
        __m256i qe = _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(te, se), she), se);
        __m256i qo = _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(to, so), sho), so);
        qe = _mm256_blendv_epi8(qe, lo, _mm256_cmpgt_epi64(lo, qe));
        qe = _mm256_blendv_epi8(qe, hi, _mm256_cmpgt_epi64(qe, hi));
        qo = _mm256_blendv_epi8(qo, lo, _mm256_cmpgt_epi64(lo, qo));
        qo = _mm256_blendv_epi8(qo, hi, _mm256_cmpgt_epi64(qo, hi));
        q = _mm256_add_epi32(_mm256_blend_epi32(qe, _mm256_slli_epi64(qo, 32), 0xAA), z);
      }
      // 8 int32 in [lo, hi] (a byte range) -> 8 bytes
      const __m128i l = _mm256_castsi256_si128(q), h = _mm256_extracti128_si256(q, 1);
      const __m128i bytes = s8 ? _mm_packs_epi16(_mm_packs_epi32(l, h), _mm_setzero_si128())
                               : _mm_packus_epi16(_mm_packus_epi32(l, h), _mm_setzero_si128());
      uint8_t* dst = out + ox * OC + 8 * b;
      if (valid == 8) {
        _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), bytes);
      } else {
        alignas(16) uint8_t tmp[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
        std::memcpy(dst, tmp, static_cast<size_t>(valid));
      }
    }
  }
}

// conv3x3Run on the AVX2 kernels (plan.kind AvxVnni or Avx2).
void runY(const IntOp& op, const uint8_t* x, int64_t n, void* out, void* out2, std::vector<uint8_t>& padBuf,
          std::vector<int32_t>& tileBuf, Conv3x3Epilogue epilogue) {
  const Conv3x3Plan& plan = *op.conv3x3;
  const bool vnni = plan.kind == Conv3x3Kind::AvxVnni;
  const int64_t C = op.C, S = op.sh, OW = op.OW, OC = op.OC;
  const int64_t PW = op.W + 2 * op.pw, PH = op.H + 2 * op.ph, rowElems = PW * C, inRow = op.W * C;
  const bool pooled = op.poolKh > 0;
  const int64_t rowsOut = pooled ? op.POH : op.OH, colsOut = pooled ? op.POW : OW, convRows = pooled ? 2 : 1;
  const size_t elem = vnni ? 1 : 2;
  const size_t padElems = static_cast<size_t>(PH * rowElems) + kPadSlack;
  // the stem reads the packed image Q after P (buildStem): G elements per window row, (PW - 2) per row
  const int64_t unit = plan.stem ? plan.gRow : C, imgRow = plan.stem ? (PW - 2) * unit : rowElems;
  const size_t stemElems = plan.stem ? static_cast<size_t>(PH * imgRow) + kPadSlack : 0;
  if (padBuf.size() < (padElems + stemElems) * elem) padBuf.resize((padElems + stemElems) * elem);
  const int64_t imgAt = plan.stem ? static_cast<int64_t>(padElems) : 0;  // the image the kernels read, in elements
  const int64_t ldt = plan.blocks * 8;
  const size_t tileSize = static_cast<size_t>(2 * OW * ldt) + 16;
  if (tileBuf.size() < tileSize) tileBuf.resize(tileSize);
  int32_t* tile = tileBuf.data();
  const uint8_t flip = op.in == IType::S8 ? 0x80 : 0;
  const uint8_t border = static_cast<uint8_t>(op.zero) ^ flip;  // the zero point, as im2col fills it
  if (vnni) {
    std::memset(padBuf.data(), border, padElems);
  } else {
    uint16_t* p16 = reinterpret_cast<uint16_t*>(padBuf.data());
    std::fill(p16, p16 + padElems, static_cast<uint16_t>(border));
  }
  // in the element unit of the image (bytes or uint16): pairs / 4-byte groups per window row
  const int64_t jn = vnni ? plan.gRow / 4 : plan.gRow / 2, ps = S * unit;
  const void* w = vnni ? static_cast<const void*>(plan.w.data()) : static_cast<const void*>(plan.w16.data());
  const int64_t wStride = vnni ? plan.k4n * 32 : plan.k4n * 2 * 16;  // bytes / int16 per block
  const BlockTablesY& tables = tablesOfY(vnni, ps);
  const size_t valueBytes = itypeBytes(op.out, 1);
  const size_t outPer = static_cast<size_t>(rowsOut * colsOut * OC) * valueBytes;
  const int64_t n1 = ceilDiv(OW, kMaxY1), r1 = ceilDiv(OW, n1);
  const int64_t n2 = ceilDiv(OW, kMaxY2), r2 = ceilDiv(OW, n2);
  for (int64_t smp = 0; smp < n; smp++) {
    copyRowsY(!vnni, padBuf.data(), x + smp * op.H * inRow, op.H, inRow, rowElems, op.ph * rowElems + op.pw * C, flip);
    if (plan.stem && vnni) buildStemFor<uint8_t>(C, padBuf.data(), PH, PW, padBuf.data() + imgAt);
    if (plan.stem && !vnni) {
      uint16_t* p16 = reinterpret_cast<uint16_t*>(padBuf.data());
      buildStemFor<uint16_t>(C, p16, PH, PW, p16 + imgAt);
    }
    uint8_t* os = static_cast<uint8_t*>(out) + smp * outPer;
    uint8_t* os2 = out2 ? static_cast<uint8_t*>(out2) + smp * outPer : nullptr;
    for (int64_t yo = 0; yo < rowsOut; yo++) {
      for (int64_t k = 0; k < convRows; k++) {
        const int64_t oy = yo * convRows + k;
        const int64_t at = imgAt + oy * S * imgRow;  // the row's first window, in image elements
        int32_t* t = tile + k * OW * ldt;
        const auto qAt = [&](int64_t ox0) { return static_cast<const void*>(padBuf.data() + (at + ox0 * ps) * static_cast<int64_t>(elem)); };
        const auto wAt = [&](int64_t b) {
          return vnni ? static_cast<const void*>(static_cast<const int8_t*>(w) + b * wStride)
                      : static_cast<const void*>(static_cast<const int16_t*>(w) + b * wStride);
        };
        int64_t b = 0;
        for (; b + 2 <= plan.blocks; b += 2) {
          for (int64_t i = 0; i < n2; i++) {
            const int64_t ox0 = i + 1 < n2 ? i * r2 : OW - r2;
            tables.two[static_cast<size_t>(r2 - 1)](qAt(ox0), ps, imgRow, plan.kh, jn, wAt(b), wStride, plan.bias.data() + 8 * b,
                                                    t + ox0 * ldt + 8 * b, ldt);
          }
        }
        if (b < plan.blocks) {
          for (int64_t i = 0; i < n1; i++) {
            const int64_t ox0 = i + 1 < n1 ? i * r1 : OW - r1;
            tables.one[static_cast<size_t>(r1 - 1)](qAt(ox0), ps, imgRow, plan.kh, jn, wAt(b), wStride, plan.bias.data() + 8 * b,
                                                    t + ox0 * ldt + 8 * b, ldt);
          }
        }
      }
      if (pooled) pool2x2Y(op, plan, tile, ldt, OW, colsOut);
      if (plan.fastOut) {
        (plan.rqHigh ? requantRowY<true> : requantRowY<false>)(plan, op, tile, ldt, colsOut, os + yo * colsOut * OC);
      } else {
        epilogue(op, tile, ldt, colsOut, 0, OC, os + static_cast<size_t>(yo * colsOut * OC) * valueBytes, OC);
      }
      if (os2) {  // a second output stage, as in conv3x3Run
        const IntOp& q2 = *op.second;
        if (q2.conv3x3 && q2.conv3x3->fastOut) {
          (q2.conv3x3->rqHigh ? requantRowY<true> : requantRowY<false>)(*q2.conv3x3, q2, tile, ldt, colsOut, os2 + yo * colsOut * OC);
        } else {
          epilogue(q2, tile, ldt, colsOut, 0, OC, os2 + yo * colsOut * OC, OC);
        }
      }
    }
  }
}

// The geometries the direct kernels take on `kind` (besides conv3x3Prepare's common conditions):
// 3x3 with C % 4 == 0 or the stem (C = 1..3); 1x1 (ResNet's stride-2 shortcuts; no padding);
// 5x5 (LeNet-5's convs), except one input channel on AVX-512 with VBMI, which keeps the permute
// kernel of intmodel.cc (op.direct; not measured against this one). Without VBMI that kernel does
// not exist, so this one takes the conv.
bool directTakes(const IntOp& op, Conv3x3Kind kind) {
  if (op.kh == 3) return op.C % 4 == 0 || op.C <= 3;
  if (op.kh == 1) return op.ph == 0 && op.pw == 0;
  if (op.kh == 5) return !(kind == Conv3x3Kind::Avx512Vnni && op.C == 1 && __builtin_cpu_supports("avx512vbmi"));
  return false;
}

}  // namespace

Conv3x3Kind conv3x3Kind() {
  static const Conv3x3Kind kind = [] {
    __builtin_cpu_init();
    if (activeIsa() == Isa::Avx512 && __builtin_cpu_supports("avx512vnni")) return Conv3x3Kind::Avx512Vnni;
    if (activeIsa() >= Isa::Avx2) return avxVnniActive() ? Conv3x3Kind::AvxVnni : Conv3x3Kind::Avx2;
    return Conv3x3Kind::None;
  }();
  return kind;
}

bool conv3x3Available() { return conv3x3Kind() != Conv3x3Kind::None; }

const char* conv3x3KindName(Conv3x3Kind kind) {
  switch (kind) {
    case Conv3x3Kind::Avx512Vnni: return "avx512-vnni";
    case Conv3x3Kind::AvxVnni: return "avx-vnni";
    case Conv3x3Kind::Avx2: return "avx2";
    default: return "none";
  }
}

std::shared_ptr<const Conv3x3Plan> conv3x3Prepare(const IntOp& op, const int8_t* w) {
  if (op.kind != IOpKind::Conv || op.groups != 1 || op.kh != op.kw || op.dh != 1 || op.dw != 1 || op.sh != op.sw ||
      (op.sh != 1 && op.sh != 2) || op.ph < 0 || op.ph > 2 || op.pw < 0 || op.pw > 2 || (op.in != IType::U8 && op.in != IType::S8) ||
      op.C <= 0 || op.C > 1024 || op.K != op.kh * op.kw * op.C || op.outMode != IOutMode::Requantize || op.OW <= 0 || op.OH <= 0 ||
      static_cast<int64_t>(op.rowSums.size()) < op.OC || !conv3x3Available() || !directTakes(op, conv3x3Kind())) {
    return nullptr;
  }
  auto plan = std::make_shared<Conv3x3Plan>();
  const int64_t OC = op.OC, K = op.K;
  plan->kind = conv3x3Kind();
  plan->kh = op.kh;
  const int64_t L = plan->kind == Conv3x3Kind::Avx512Vnni ? 16 : 8;
  plan->lanes = L;
  plan->blocks = ceilDiv(OC, L);
  // the packed K: kh kernel rows of G bytes: kw C rounded up to 4 (the bytes past kw C meet zero
  // weights), or for the 3x3 stem (C = 1..3) the packed image's 3 C rounded up to 4
  const int64_t rowK = op.kw * op.C;
  plan->stem = op.kh == 3 && op.C < 4;
  plan->gRow = plan->stem ? stemGroup(op.C) : (rowK + 3) / 4 * 4;
  plan->k4n = op.kh * plan->gRow / 4;
  if (plan->kind == Conv3x3Kind::Avx2) {
    plan->w16.assign(static_cast<size_t>(plan->blocks * plan->k4n * 4 * L), 0);
  } else {
    plan->w.assign(static_cast<size_t>(plan->blocks * plan->k4n * 4 * L), 0);
  }
  plan->bias.assign(static_cast<size_t>(plan->blocks * L), 0);
  const int32_t negZero = -(op.zero + (op.in == IType::S8 ? 128 : 0));
  for (int64_t o = 0; o < OC; o++) {
    const int64_t b = o / L, lane = o % L;
    for (int64_t k = 0; k < 4 * plan->k4n; k++) {
      // packed index k = (ky, r): weight w[o, ky, r] for r < kw C, else 0
      const int64_t ky = k / plan->gRow, r = k % plan->gRow;
      const int8_t v = r < rowK ? w[o * K + ky * rowK + r] : 0;
      if (plan->kind == Conv3x3Kind::Avx2) {
        // [block][pair k / 2][lane][k % 2]
        plan->w16[static_cast<size_t>((b * 2 * plan->k4n + k / 2) * 2 * L + lane * 2 + k % 2)] = v;
      } else {
        plan->w[static_cast<size_t>((b * plan->k4n + k / 4) * 4 * L + lane * 4 + k % 4)] = v;
      }
    }
    // wraps mod 2^32 like the GEMM kernels' negZero * rowSums
    plan->bias[static_cast<size_t>(o)] =
        static_cast<int32_t>(static_cast<uint32_t>(negZero) * static_cast<uint32_t>(op.rowSums[static_cast<size_t>(o)]));
  }
  // the byte output stage (requantRow) when the executor requantizes in int64 lanes
  const bool byteRequant = op.intRequant && (op.out == IType::U8 || op.out == IType::S8) && static_cast<int64_t>(op.rqM0.size()) >= OC &&
                           static_cast<int64_t>(op.rqLowZero.size()) >= OC;
  if (byteRequant && plan->kind != Conv3x3Kind::Avx512Vnni) {
    // per 8-channel block 10 vectors of 4 int64: M0, bmh + 2^(n' - 1), 2^(n' - 1), n' and the bml = 0
    // mask (-1 / 0), each for the even channels then the odd ones (requantRowY)
    plan->fastOut = true;
    plan->rq.assign(static_cast<size_t>(plan->blocks * 40), 0);
    plan->rqShift32.assign(static_cast<size_t>(plan->blocks * 8), 0);
    plan->rqHigh = true;
    for (int64_t o = 0; o < OC; o++) {
      const size_t c = static_cast<size_t>(o);
      int64_t* k = plan->rq.data() + (o / 8) * 40 + (o % 2) * 4 + (o % 8) / 2;
      k[0] = op.rqM0[c];
      k[8] = op.rqBmh[c] + op.rqHalf[c];
      k[16] = op.rqHalf[c];
      k[24] = op.rqShift[c];
      k[32] = op.rqLowZero[c] ? -1 : 0;
      if (op.rqShift[c] < 32) plan->rqHigh = false;
      plan->rqShift32[c] = static_cast<int32_t>(std::min<int64_t>(op.rqShift[c] - 32, 63));
    }
  }
  if (byteRequant && plan->kind == Conv3x3Kind::Avx512Vnni) {
    plan->fastOut = true;
    plan->rq.assign(static_cast<size_t>(plan->blocks * 64), 0);
    plan->lowZero.assign(static_cast<size_t>(plan->blocks), 0);
    for (int64_t o = 0; o < OC; o++) {
      const size_t c = static_cast<size_t>(o);
      int64_t* k = plan->rq.data() + (o / 16) * 64 + (o % 2) * 8 + (o % 16) / 2;
      k[0] = op.rqM0[c];
      k[16] = op.rqBmh[c] + op.rqHalf[c];
      k[32] = op.rqHalf[c];
      k[48] = op.rqShift[c];
      if (op.rqLowZero[c]) plan->lowZero[static_cast<size_t>(o / 16)] |= static_cast<uint16_t>(1u << (o % 16));
    }
  }
  return plan;
}

bool conv3x3Runs(const IntOp& op) {
  const bool pool2x2 = op.poolKh == 2 && op.poolKw == 2 && op.poolSh == 2 && op.poolSw == 2;
  return op.conv3x3 && (op.poolKh == 0 || pool2x2) && !op.amx && (!op.second || (op.poolKh == 0 && op.second->conv3x3));
}

bool conv3x3SameWeights(const IntOp& a, const IntOp& b) {
  if (!a.conv3x3 || !b.conv3x3) return !a.conv3x3 && !b.conv3x3;
  const Conv3x3Plan &p = *a.conv3x3, &q = *b.conv3x3;
  return p.kind == q.kind && p.kh == q.kh && p.gRow == q.gRow && p.w == q.w && p.w16 == q.w16 && p.bias == q.bias;
}

void conv3x3Run(const IntOp& op, const uint8_t* x, int64_t n, void* out, void* out2, std::vector<uint8_t>& padBuf,
                std::vector<int32_t>& tileBuf, Conv3x3Epilogue epilogue) {
  if (op.conv3x3->kind != Conv3x3Kind::Avx512Vnni) return runY(op, x, n, out, out2, padBuf, tileBuf, epilogue);
  const Conv3x3Plan& plan = *op.conv3x3;
  const int64_t C = op.C, S = op.sh, OW = op.OW, OC = op.OC;
  const int64_t PW = op.W + 2 * op.pw, PH = op.H + 2 * op.ph, rowBytes = PW * C, inRow = op.W * C;
  // a fused 2 x 2, stride 2 max pooling (IntOp::poolKh): two conv rows per pooled row, pooled in the
  // tile before the output stage; the output map is then [POH, POW]
  const bool pooled = op.poolKh > 0;
  const int64_t rowsOut = pooled ? op.POH : op.OH, colsOut = pooled ? op.POW : OW, convRows = pooled ? 2 : 1;
  const size_t padBytes = static_cast<size_t>(PH * rowBytes) + kPadSlack;
  // the stem reads the packed image Q after P (buildStem): G bytes per window row, (PW - 2) per row
  const int64_t unit = plan.stem ? plan.gRow : C, imgRow = plan.stem ? (PW - 2) * unit : rowBytes;
  const size_t stemBytes = plan.stem ? static_cast<size_t>(PH * imgRow) + kPadSlack : 0;
  if (padBuf.size() < padBytes + stemBytes) padBuf.resize(padBytes + stemBytes);
  const int64_t ldt = plan.blocks * 16;
  const size_t tileSize = static_cast<size_t>(2 * OW * ldt) + 16;
  if (tileBuf.size() < tileSize) tileBuf.resize(tileSize);
  uint8_t* pad = padBuf.data();
  int32_t* tile = tileBuf.data();
  const uint8_t flip = op.in == IType::S8 ? 0x80 : 0;
  std::memset(pad, static_cast<uint8_t>(op.zero) ^ flip, padBytes);  // the border: the zero point, as im2col fills it
  const int64_t j4n = plan.gRow / 4, wStride = plan.k4n * 64, ps = S * unit;
  const uint8_t* img = plan.stem ? pad + padBytes : pad;
  const BlockTables& tables = tablesOf(ps);
  const size_t valueBytes = itypeBytes(op.out, 1);
  const size_t outPer = static_cast<size_t>(rowsOut * colsOut * OC) * valueBytes;
  // pixels per register block: the row split into equal blocks (the last one may overlap the one
  // before it; its pixels are computed twice, to the same values)
  const int64_t n1 = ceilDiv(OW, kMaxR1), r1 = ceilDiv(OW, n1);
  const int64_t n2 = ceilDiv(OW, kMaxR2), r2 = ceilDiv(OW, n2);
  for (int64_t smp = 0; smp < n; smp++) {
    const uint8_t* xs = x + smp * op.H * inRow;
    for (int64_t iy = 0; iy < op.H; iy++) copyFlip(pad + (iy + op.ph) * rowBytes + op.pw * C, xs + iy * inRow, inRow, flip);
    if (plan.stem) buildStemFor<uint8_t>(C, pad, PH, PW, pad + padBytes);
    uint8_t* os = static_cast<uint8_t*>(out) + smp * outPer;
    uint8_t* os2 = out2 ? static_cast<uint8_t*>(out2) + smp * outPer : nullptr;
    for (int64_t yo = 0; yo < rowsOut; yo++) {
      for (int64_t k = 0; k < convRows; k++) {
        const int64_t oy = yo * convRows + k;
        const uint8_t* q = img + oy * S * imgRow;
        int32_t* t = tile + k * OW * ldt;
        int64_t b = 0;
        for (; b + 2 <= plan.blocks; b += 2) {
          for (int64_t i = 0; i < n2; i++) {
            const int64_t ox0 = i + 1 < n2 ? i * r2 : OW - r2;
            tables.two[static_cast<size_t>(r2 - 1)](q + ox0 * ps, ps, imgRow, plan.kh, j4n, plan.w.data() + b * wStride, wStride,
                                                    plan.bias.data() + 16 * b, t + ox0 * ldt + 16 * b, ldt);
          }
        }
        if (b < plan.blocks) {
          for (int64_t i = 0; i < n1; i++) {
            const int64_t ox0 = i + 1 < n1 ? i * r1 : OW - r1;
            tables.one[static_cast<size_t>(r1 - 1)](q + ox0 * ps, ps, imgRow, plan.kh, j4n, plan.w.data() + b * wStride, wStride,
                                                    plan.bias.data() + 16 * b, t + ox0 * ldt + 16 * b, ldt);
          }
        }
      }
      if (pooled) pool2x2(op, plan, tile, ldt, OW, colsOut);
      if (plan.fastOut) {
        requantRow(plan, op, tile, ldt, colsOut, os + yo * colsOut * OC);
      } else {
        epilogue(op, tile, ldt, colsOut, 0, OC, os + static_cast<size_t>(yo * colsOut * OC) * valueBytes, OC);
      }
      // a second output stage (IntOp::second; no pooling, byte outputs): its own plan's constants
      if (os2) {
        const IntOp& q2 = *op.second;
        if (q2.conv3x3 && q2.conv3x3->fastOut) {
          requantRow(*q2.conv3x3, q2, tile, ldt, colsOut, os2 + yo * colsOut * OC);
        } else {
          epilogue(q2, tile, ldt, colsOut, 0, OC, os2 + yo * colsOut * OC, OC);
        }
      }
    }
  }
}

}  // namespace lowbit
