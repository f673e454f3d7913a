// AMX-INT8 GEMM (see amx.h for the availability rules and the packed layout).
#include "amx.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "cpu.h"
#include "threadpool.h"
#include "scratch.h"

#if defined(__x86_64__) && defined(__linux__) && (defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11)
#define LOWBIT_HAVE_AMX 1
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace lowbit {

int64_t amxPackedBytes(int64_t N, int64_t K) { return amxPaddedN(N) * amxPaddedK(K); }

void packAmx(const int8_t* w, int64_t N, int64_t K, int8_t* packed) {
  const int64_t KT = amxPaddedK(K) / 64;
  std::memset(packed, 0, static_cast<size_t>(amxPackedBytes(N, K)));
  for (int64_t n = 0; n < N; n++) {
    const int64_t nt = n / 16, j = n % 16;
    for (int64_t k = 0; k < K; k++) {
      const int64_t kt = k / 64, r = (k % 64) / 4, i = k % 4;
      packed[(nt * KT + kt) * 1024 + r * 64 + 4 * j + i] = w[n * K + k];
    }
  }
}

int64_t amxConvPackedBytes(int64_t N, int64_t kh, int64_t kw, int64_t C) {
  const int64_t rowBytes = (kw * C + 3) / 4 * 4;
  return amxPaddedN(N) / 16 * kh * (rowBytes / 4) * 64;
}

void packAmxConv(const int8_t* w, int64_t N, int64_t kh, int64_t kw, int64_t C, int8_t* packed) {
  const int64_t run = kw * C, rows = (run + 3) / 4, K = kh * run;
  std::memset(packed, 0, static_cast<size_t>(amxConvPackedBytes(N, kh, kw, C)));
  for (int64_t n = 0; n < N; n++) {
    const int64_t nt = n / 16, j = n % 16;
    for (int64_t ky = 0; ky < kh; ky++) {
      for (int64_t b = 0; b < run; b++) packed[((nt * kh + ky) * rows + b / 4) * 64 + 4 * j + b % 4] = w[n * K + ky * run + b];
    }
  }
}

int64_t amxGatherKp(int64_t K) { return K <= 32 ? 32 : 64; }

bool amxGatherTables(const int64_t* off, int64_t K, int64_t step, std::vector<uint8_t>* idx, std::vector<uint64_t>* masks) {
  __builtin_cpu_init();
  if (K <= 0 || K > 64 || !__builtin_cpu_supports("avx512vbmi")) return false;
  const int64_t Kp = amxGatherKp(K), vectors = Kp / 4;  // 16 rows of Kp bytes = Kp / 4 vectors of 64 bytes
  if (off[K - 1] + 15 * step >= 192) return false;
  for (int64_t t = 0; t < K; t++) {
    if (off[t] < 0 || off[t] + 15 * step >= 192) return false;
  }
  // vector v: [indexes into the first 128 bytes (vpermi2b)][indexes into bytes 128..191 (vpermb)]
  idx->assign(static_cast<size_t>(vectors * 128), 0);
  masks->assign(static_cast<size_t>(vectors * 2), 0);
  for (int64_t v = 0; v < vectors; v++) {
    for (int64_t i = 0; i < 64; i++) {
      const int64_t byte = v * 64 + i, row = byte / Kp, t = byte % Kp;
      if (t >= K) continue;
      const int64_t o = off[t] + row * step;
      const int hi = o >= 128 ? 1 : 0;
      (*idx)[static_cast<size_t>(v * 128 + hi * 64 + i)] = static_cast<uint8_t>(o - 128 * hi);
      (*masks)[static_cast<size_t>(v * 2 + hi)] |= uint64_t{1} << i;
    }
  }
  return true;
}

#if defined(LOWBIT_HAVE_AMX)

namespace {

constexpr int kArchReqXcompPerm = 0x1023;  // arch_prctl: request permission for an XSAVE feature
constexpr int kXfeatureXtiledata = 18;

const char* detectAmx() {
  const char* flag = std::getenv("LOWBIT_AMX");
  if (flag != nullptr && std::strcmp(flag, "0") == 0) return "disabled by LOWBIT_AMX=0";
  if (activeIsa() != Isa::Avx512) return "needs the AVX-512 ISA";
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return "CPU without AMX-INT8";
  if (!(d & (1u << 24)) || !(d & (1u << 25))) return "CPU without AMX-INT8";
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return "OS without XSAVE";  // OSXSAVE
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & (3u << 17)) != (3u << 17)) return "OS did not enable the AMX tile state";
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return "kernel refused the AMX tile data permission";
  return nullptr;
}

const char* amxReason() {
  static const char* reason = detectAmx();
  return reason;
}

// Tile registers: 0-3 accumulators (2 x 2 blocks of 16 x 16 int32), 4-5 A (16 rows x 64 bytes),
// 6-7 B (16 k-groups x 16 columns x 4 bytes). The asm statements clobber memory so that stores
// into the operand buffers are never moved past a tile load.
#define LB_TLOAD(t, base, stride) __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"(static_cast<long>(stride)) : "memory")
#define LB_TSTORE(t, base, stride) __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"(static_cast<long>(stride)) : "memory")
#define LB_TDP(d, a, b) __asm__ volatile("tdpbusd %%tmm" #b ", %%tmm" #a ", %%tmm" #d ::: "memory")

struct alignas(64) TileConfig {
  uint8_t palette = 1, startRow = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Loads a tile configuration when the thread's current one differs. aBytes = 0: the GEMM layout
// (every tile 16 x 64 bytes); else the implicit conv layout: tiles 0-3 16 x 64 (int32 accumulators),
// 4-6 16 rows x aBytes (activations), 7 aBytes / 4 rows x 64 (weights); nBytes < 64 narrows the
// accumulators 0-3 and the weights 7 to nBytes / 4 columns (fewer output channels).
// The configuration this thread loaded last (-1: none, or released). Valid only within one of our
// jobs: every job starts with amxRelease(), since other code may use the tiles between our jobs.
thread_local int tCurrentConfig = -1;

inline void configureTiles(int aBytes = 0, int nBytes = 64) {
  int& current = tCurrentConfig;
  const int key = aBytes | (nBytes << 8);
  if (current == key) return;
  TileConfig cfg;
  for (int t = 0; t < 8; t++) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  if (aBytes > 0) {
    for (int t = 4; t < 7; t++) cfg.colsb[t] = static_cast<uint16_t>(aBytes);
    cfg.rows[7] = static_cast<uint8_t>(aBytes / 4);
  }
  for (int t : {0, 1, 2, 3, 7}) cfg.colsb[t] = static_cast<uint16_t>(nBytes);
  __asm__ volatile("ldtilecfg %0" ::"m"(cfg));
  current = key;
}

// One block of MT x NT 16 x 16 tiles over all KT k-tiles: c = bias + A B.
template <int MT, int NT>
void amxBlock(const uint8_t* A, int64_t lda, const int8_t* B, int64_t ntStride, int64_t KT, const int32_t* bias, int32_t* c,
              int64_t ldc) {
  LB_TLOAD(0, bias, 0);
  if constexpr (NT > 1) LB_TLOAD(1, bias + 16, 0);
  if constexpr (MT > 1) LB_TLOAD(2, bias, 0);
  if constexpr (MT > 1 && NT > 1) LB_TLOAD(3, bias + 16, 0);
  for (int64_t kt = 0; kt < KT; kt++) {
    LB_TLOAD(4, A + kt * 64, lda);
    LB_TLOAD(6, B + kt * 1024, 64);
    if constexpr (MT > 1) LB_TLOAD(5, A + 16 * lda + kt * 64, lda);
    if constexpr (NT > 1) LB_TLOAD(7, B + ntStride + kt * 1024, 64);
    LB_TDP(0, 4, 6);
    if constexpr (NT > 1) LB_TDP(1, 4, 7);
    if constexpr (MT > 1) LB_TDP(2, 5, 6);
    if constexpr (MT > 1 && NT > 1) LB_TDP(3, 5, 7);
  }
  const int64_t ldb = ldc * 4;
  LB_TSTORE(0, c, ldb);
  if constexpr (NT > 1) LB_TSTORE(1, c + 16, ldb);
  if constexpr (MT > 1) LB_TSTORE(2, c + 16 * ldc, ldb);
  if constexpr (MT > 1 && NT > 1) LB_TSTORE(3, c + 16 * ldc + 16, ldb);
}

// Tiles [mt0, mt1) x [nt0, nt1) of the product (see gemmAmxSerial).
void amxTiles(int64_t mt0, int64_t mt1, int64_t nt0, int64_t nt1, int64_t KT, const uint8_t* A, int64_t lda, const int8_t* packed,
              const int32_t* colBias, int32_t* c, int64_t ldc) {
  configureTiles();
  const int64_t ntStride = KT * 1024;
  for (int64_t nt = nt0; nt < nt1; nt += 2) {
    const bool twoN = nt + 1 < nt1;
    const int8_t* B = packed + nt * ntStride;
    for (int64_t mt = mt0; mt < mt1; mt += 2) {
      const bool twoM = mt + 1 < mt1;
      const uint8_t* a = A + mt * 16 * lda;
      int32_t* cc = c + mt * 16 * ldc + nt * 16;
      const int32_t* bias = colBias + nt * 16;
      if (twoM && twoN) {
        amxBlock<2, 2>(a, lda, B, ntStride, KT, bias, cc, ldc);
      } else if (twoM) {
        amxBlock<2, 1>(a, lda, B, ntStride, KT, bias, cc, ldc);
      } else if (twoN) {
        amxBlock<1, 2>(a, lda, B, ntStride, KT, bias, cc, ldc);
      } else {
        amxBlock<1, 1>(a, lda, B, ntStride, KT, bias, cc, ldc);
      }
    }
  }
}

double threadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The probe loop: 4 independent accumulators (tiles 0-3) fed by resident A (4, 5) and B (6, 7).
int32_t amxLoop(long iters) {
  tCurrentConfig = -1;  // (re)load the configuration: other code may have changed it
  configureTiles();
  alignas(64) static const uint8_t a[1024] = {1, 2, 3};
  alignas(64) static const int8_t b[1024] = {1, -1, 2};
  alignas(64) int32_t out[256];
  __asm__ volatile("tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2\n\ttilezero %%tmm3" ::: "memory");
  LB_TLOAD(4, a, 64);
  LB_TLOAD(5, a, 64);
  LB_TLOAD(6, b, 64);
  LB_TLOAD(7, b, 64);
  for (long i = 0; i < iters; i++) {
    LB_TDP(0, 4, 6);
    LB_TDP(1, 4, 7);
    LB_TDP(2, 5, 6);
    LB_TDP(3, 5, 7);
  }
  LB_TSTORE(0, out, 64);
  return out[0];
}

struct ProbeCtx {
  long iters;
  volatile int32_t sink;
  double cpuSeconds[256];
};

}  // namespace

bool amxAvailable() { return amxReason() == nullptr; }

void amxRelease() {
  if (tCurrentConfig == -1) return;
  __asm__ volatile("tilerelease" ::: "memory");
  tCurrentConfig = -1;
}

const char* amxStatus() { return amxReason() == nullptr ? "amx-int8" : amxReason(); }

void gemmAmxSerial(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* packed,
                   const int32_t* colBias, int32_t* c, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  amxTiles(0, (M + 15) / 16, 0, amxPaddedN(N) / 16, amxPaddedK(K) / 64, A, lda, packed, colBias, c, ldc);
}

void amxConvImplicit(const uint8_t* x, int64_t W, int64_t C, int64_t OH, int64_t OW, int64_t sh, int64_t sw, int64_t kh,
                     int64_t kw, int64_t N, const int8_t* packed, const int32_t* colBias, int32_t* c, int64_t ldc) {
  const int64_t rowBytes = (kw * C + 3) / 4 * 4, bTile = rowBytes / 4 * 64;
  configureTiles(static_cast<int>(rowBytes));
  const int64_t NT = amxPaddedN(N) / 16, perRow = (OW + 15) / 16, MT = OH * perRow;
  const int64_t lda = sw * C, ldb = ldc * 4;
  // activation tile j of a group: m-tile mt0 + j, kernel row ky
  auto aTile = [&](int64_t mt, int64_t ky) {
    const int64_t oy = mt / perRow, ox0 = (mt % perRow) * 16;
    return x + ((oy * sh + ky) * W + ox0 * sw) * C;
  };
  auto cTile = [&](int64_t mt, int64_t nt) { return c + ((mt / perRow) * OW + (mt % perRow) * 16) * ldc + nt * 16; };
  for (int64_t nt = 0; nt < NT; nt++) {
    const int32_t* bias = colBias ? colBias + nt * 16 : nullptr;
    const int8_t* B = packed + nt * kh * bTile;
    // groups of 4 m-tiles (accumulators 0-3), stored in increasing position order: a tile's rows
    // past OW spill into the next output row, which a later store overwrites
    for (int64_t mt0 = 0; mt0 < MT; mt0 += 4) {
      const int64_t cnt = std::min<int64_t>(4, MT - mt0);
      if (colBias) {
        LB_TLOAD(0, bias, 0);
        if (cnt > 1) LB_TLOAD(1, bias, 0);
        if (cnt > 2) LB_TLOAD(2, bias, 0);
        if (cnt > 3) LB_TLOAD(3, bias, 0);
      } else {
        __asm__ volatile("tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2\n\ttilezero %%tmm3" ::: "memory");
      }
      for (int64_t ky = 0; ky < kh; ky++) {
        LB_TLOAD(7, B + ky * bTile, 64);
        LB_TLOAD(4, aTile(mt0, ky), lda);
        LB_TDP(0, 4, 7);
        if (cnt > 1) {
          LB_TLOAD(5, aTile(mt0 + 1, ky), lda);
          LB_TDP(1, 5, 7);
        }
        if (cnt > 2) {
          LB_TLOAD(6, aTile(mt0 + 2, ky), lda);
          LB_TDP(2, 6, 7);
        }
        if (cnt > 3) {
          LB_TLOAD(4, aTile(mt0 + 3, ky), lda);
          LB_TDP(3, 4, 7);
        }
      }
      LB_TSTORE(0, cTile(mt0, nt), ldb);
      if (cnt > 1) LB_TSTORE(1, cTile(mt0 + 1, nt), ldb);
      if (cnt > 2) LB_TSTORE(2, cTile(mt0 + 2, nt), ldb);
      if (cnt > 3) LB_TSTORE(3, cTile(mt0 + 3, nt), ldb);
    }
  }
}

namespace {

// Gathers one activation tile (16 rows x Kp bytes, Kp / 4 vectors) from the 192 bytes at src.
template <int V>
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void gatherTile(const uint8_t* src, const uint8_t* idx,
                                                                                            const uint64_t* masks, bool high, uint8_t* dst) {
  const __m512i l0 = _mm512_loadu_si512(src), l1 = _mm512_loadu_si512(src + 64);
  if (high) {
    const __m512i l2 = _mm512_loadu_si512(src + 128);
    for (int v = 0; v < V; v++) {
      __m512i a = _mm512_maskz_permutex2var_epi8(masks[2 * v], l0, _mm512_loadu_si512(idx + 128 * v), l1);
      a = _mm512_mask_permutexvar_epi8(a, masks[2 * v + 1], _mm512_loadu_si512(idx + 128 * v + 64), l2);
      _mm512_store_si512(dst + 64 * v, a);
    }
  } else {
    for (int v = 0; v < V; v++) {
      _mm512_store_si512(dst + 64 * v, _mm512_maskz_permutex2var_epi8(masks[2 * v], l0, _mm512_loadu_si512(idx + 128 * v), l1));
    }
  }
}

template <int V>
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void convGatherTiles(const uint8_t* pad, int64_t rowBytes, int64_t OH, int64_t OW,
                                                                             int64_t sh, int64_t step, int64_t N, const uint8_t* idx,
                                                                             const uint64_t* masks, const int8_t* packed, int32_t* c,
                                                                             int64_t ldc) {
  constexpr int Kp = 4 * V, tileBytes = 16 * Kp;
  constexpr int64_t kAhead = 3, kRing = 4;  // tiles gathered ahead of their load, ring slots
  bool high = false;
  for (int v = 0; v < V; v++) high = high || masks[2 * v + 1] != 0;
  const int64_t NT = amxPaddedN(N) / 16, perRow = (OW + 15) / 16, MT = OH * perRow, ldb = ldc * 4;
  alignas(64) uint8_t ring[kRing][tileBytes];
  auto gather = [&](int64_t mt) {
    if (mt < MT) gatherTile<V>(pad + (mt / perRow) * sh * rowBytes + (mt % perRow) * 16 * step, idx, masks, high, ring[mt % kRing]);
  };
  auto cTile = [&](int64_t mt, int64_t nt) { return c + ((mt / perRow) * OW + (mt % perRow) * 16) * ldc + nt * 16; };
  // with one column tile, accumulators and weights only as wide as the N channels
  configureTiles(Kp, NT == 1 ? static_cast<int>(4 * N) : 64);
  // A tile load waits until the stores into its buffer retire, so tile mt is gathered kAhead
  // iterations before its load; a tile store waits for its product, so accumulator tiles rotate
  // (0-3, activations 4-6, weights 7) and tile mt is stored three products later (NT = 1). Stores
  // go in increasing position order: a tile's rows past OW spill into the next output row, which
  // a later store overwrites.
  for (int64_t mt = 0; mt < kAhead; mt++) gather(mt);
  if (NT == 1) {
    LB_TLOAD(7, packed, 64);
#define LB_GSTEP(i, A, D, S)                                  \
  case i:                                                     \
    LB_TLOAD(A, ring[mt % kRing], Kp);                        \
    __asm__ volatile("tilezero %%tmm" #D ::: "memory");       \
    LB_TDP(D, A, 7);                                          \
    if (mt >= 3) LB_TSTORE(S, cTile(mt - 3, 0), ldb);         \
    break;
    for (int64_t mt = 0; mt < MT; mt++) {
      switch (mt % 12) {
        LB_GSTEP(0, 4, 0, 1)
        LB_GSTEP(1, 5, 1, 2)
        LB_GSTEP(2, 6, 2, 3)
        LB_GSTEP(3, 4, 3, 0)
        LB_GSTEP(4, 5, 0, 1)
        LB_GSTEP(5, 6, 1, 2)
        LB_GSTEP(6, 4, 2, 3)
        LB_GSTEP(7, 5, 3, 0)
        LB_GSTEP(8, 6, 0, 1)
        LB_GSTEP(9, 4, 1, 2)
        LB_GSTEP(10, 5, 2, 3)
        default: LB_GSTEP(11, 6, 3, 0)
      }
      gather(mt + kAhead);
    }
#undef LB_GSTEP
    // the last three tiles (tile mt is in accumulator mt % 4)
    for (int64_t mt = std::max<int64_t>(0, MT - 3); mt < MT; mt++) {
      switch (mt % 4) {
        case 0: LB_TSTORE(0, cTile(mt, 0), ldb); break;
        case 1: LB_TSTORE(1, cTile(mt, 0), ldb); break;
        case 2: LB_TSTORE(2, cTile(mt, 0), ldb); break;
        default: LB_TSTORE(3, cTile(mt, 0), ldb); break;
      }
    }
    return;
  }
  // NT > 1: one activation tile at a time in tile 4 (alternating with 5), per 16 channels
  // accumulators 0-3 in rotation and the weights in 7 (reloaded)
  int acc = 0;
  for (int64_t mt = 0; mt < MT; mt++) {
    const bool odd = mt & 1;
    if (odd) {
      LB_TLOAD(5, ring[mt % kRing], Kp);
    } else {
      LB_TLOAD(4, ring[mt % kRing], Kp);
    }
    gather(mt + kAhead);
    for (int64_t nt = 0; nt < NT; nt++, acc = (acc + 1) & 3) {
      LB_TLOAD(7, packed + nt * 1024, 64);
      int32_t* dst = cTile(mt, nt);
#define LB_GACC(D)                                      \
  __asm__ volatile("tilezero %%tmm" #D ::: "memory");   \
  if (odd) {                                            \
    LB_TDP(D, 5, 7);                                    \
  } else {                                              \
    LB_TDP(D, 4, 7);                                    \
  }                                                     \
  LB_TSTORE(D, dst, ldb);
      switch (acc) {
        case 0: LB_GACC(0) break;
        case 1: LB_GACC(1) break;
        case 2: LB_GACC(2) break;
        default: LB_GACC(3) break;
      }
#undef LB_GACC
    }
  }
}

}  // namespace

void amxConvGather(const uint8_t* pad, int64_t rowBytes, int64_t OH, int64_t OW, int64_t sh, int64_t step, int64_t K, int64_t N,
                   const uint8_t* idx, const uint64_t* masks, const int8_t* packed, int32_t* c, int64_t ldc) {
  if (amxGatherKp(K) == 32) {
    convGatherTiles<8>(pad, rowBytes, OH, OW, sh, step, N, idx, masks, packed, c, ldc);
  } else {
    convGatherTiles<16>(pad, rowBytes, OH, OW, sh, step, N, idx, masks, packed, c, ldc);
  }
}

namespace {

#ifndef LB_AMX_RT
#define LB_AMX_RT 2
#endif
// Row tiles (16 rows each) per GEMM task: the task packs its rows of A once (kRowTiles KT KB, read
// by every column pair from L1) and sweeps all columns with them. 2 (32 rows, one 2 x 2 block
// high) measured best at n = 1024: with 4, the 64 KB of activations at K = 1024 no longer fit L1.
constexpr int64_t kRowTiles = LB_AMX_RT;
static_assert(kRowTiles % 2 == 0, "tasks are whole 2 x 2 blocks high");

// Rows q in [q0, q1) of a task's activations in tile order: row q = 16 j + r of the task (rows from
// m0) goes to row r of tiles (j, kt), the 1024 bytes at (j KT + kt) 1024, as a[m0 + q, 64 kt ..
// 64 kt + 63] (xor flip); rows past M and bytes past K are zero. out is 64-byte aligned.
__attribute__((target("avx512f,avx512bw"))) void packRows(const uint8_t* a, int64_t M, int64_t K, int64_t m0, int64_t q0, int64_t q1,
                                                          int64_t KT, uint8_t flip, uint8_t* out) {
  const __m512i f = _mm512_set1_epi8(static_cast<char>(flip));
  for (int64_t q = q0; q < q1; q++) {
    const int64_t m = m0 + q;
    uint8_t* dst = out + (q / 16) * KT * 1024 + (q % 16) * 64;
    if (m >= M) {
      for (int64_t kt = 0; kt < KT; kt++) _mm512_store_si512(dst + kt * 1024, _mm512_setzero_si512());
      continue;
    }
    const uint8_t* src = a + m * K;
    for (int64_t kt = 0; kt < KT; kt++) {
      const int64_t left = K - 64 * kt;
      const __mmask64 mk = left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
      const __m512i v = _mm512_maskz_loadu_epi8(mk, src + 64 * kt);
      _mm512_store_si512(dst + kt * 1024, _mm512_maskz_mov_epi8(mk, _mm512_xor_si512(v, f)));
    }
  }
}

// A finished 2 x 2 block waiting in its buffer to be written to C (rows x cols of it, cols <= 32).
struct PendingBlock {
  const int32_t* tile = nullptr;  // 32 rows of 32 int32
  const int32_t* bias = nullptr;  // the block's 32 column biases
  int32_t* c = nullptr;
  int64_t ldc = 0, rows = 0, cols = 0;
  bool stream = false;  // whole 64-byte lines of C written with non-temporal stores
};

// c[r, j] = tile[r, j] + bias[j] for r in [r0, min(r1, rows)), j < cols.
__attribute__((target("avx512f"))) void writeBlock(const PendingBlock& p, int64_t r0 = 0, int64_t r1 = 32) {
  if (p.tile == nullptr) return;
  r1 = std::min(r1, p.rows);
  const __m512i b0 = _mm512_loadu_si512(p.bias), b1 = _mm512_loadu_si512(p.bias + 16);
  if (p.stream && p.cols == 32) {
    for (int64_t r = r0; r < r1; r++) {
      int32_t* dst = p.c + r * p.ldc;
      _mm512_stream_si512(reinterpret_cast<__m512i*>(dst), _mm512_add_epi32(_mm512_load_si512(p.tile + r * 32), b0));
      _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + 16), _mm512_add_epi32(_mm512_load_si512(p.tile + r * 32 + 16), b1));
    }
    return;
  }
  const __mmask16 m0 = p.cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << p.cols) - 1);
  const __mmask16 m1 = p.cols >= 32 ? 0xFFFF : p.cols <= 16 ? 0 : static_cast<__mmask16>((1u << (p.cols - 16)) - 1);
  for (int64_t r = r0; r < r1; r++) {
    int32_t* dst = p.c + r * p.ldc;
    _mm512_mask_storeu_epi32(dst, m0, _mm512_add_epi32(_mm512_load_si512(p.tile + r * 32), b0));
    _mm512_mask_storeu_epi32(dst + 16, m1, _mm512_add_epi32(_mm512_load_si512(p.tile + r * 32 + 16), b1));
  }
}

// weight tiles: loaded with the streaming hint (tileloaddt1), so that they do not push the task's
// activation tiles, reused by every column pair, out of L1 (~15 % at n = 1024)
#define LB_TLOADB(t, base, stride) __asm__ volatile("tileloaddt1 (%0,%1,1), %%tmm" #t ::"r"(base), "r"(static_cast<long>(stride)) : "memory")

// One block of 2 x 2 tiles (32 rows x 32 columns) over all KT k-tiles into out (32 rows of 32
// int32, without the bias): A = two packed row tiles (the second KT KB after the first), B = two
// weight tiles (the second ntStride bytes after the first). Loads interleave with the products, so
// that a tile register is refilled as soon as its last reader of the step has issued. The previous
// block (`pending`) is written to C a few rows per k step, so that its stores overlap this block's
// products (written at once, they filled the store buffer and stalled the tile instructions).
void amxBlock22(const uint8_t* A, int64_t KT, const int8_t* B, int64_t ntStride, int32_t* out, const PendingBlock& pending) {
  __asm__ volatile("tilezero %%tmm0\n\ttilezero %%tmm1\n\ttilezero %%tmm2\n\ttilezero %%tmm3" ::: "memory");
  const uint8_t* A1 = A + KT * 1024;
  const int8_t* B1 = B + ntStride;
  const int64_t perStep = (32 + KT - 1) / KT;  // rows of the pending block written per k step
  for (int64_t kt = 0; kt < KT; kt++) {
    LB_TLOAD(4, A + kt * 1024, 64);
    LB_TLOADB(6, B + kt * 1024, 64);
    LB_TDP(0, 4, 6);
    LB_TLOADB(7, B1 + kt * 1024, 64);
    LB_TDP(1, 4, 7);
    LB_TLOAD(5, A1 + kt * 1024, 64);
    LB_TDP(2, 5, 6);
    LB_TDP(3, 5, 7);
    writeBlock(pending, kt * perStep, (kt + 1) * perStep);
  }
  LB_TSTORE(0, out, 128);
  LB_TSTORE(1, out + 16, 128);
  LB_TSTORE(2, out + 16 * 32, 128);
  LB_TSTORE(3, out + 16 * 32 + 16, 128);
}
#undef LB_TLOADB

}  // namespace

void gemmInt8Amx(int64_t M, int64_t N, int64_t K, const uint8_t* a, bool aSigned, int32_t aZero, const int8_t* packed,
                 const int32_t* rowSums, int32_t* c) {
  if (M <= 0 || N <= 0) return;
  const int64_t KT = amxPaddedK(K) / 64, Np = amxPaddedN(N), NT = Np / 16;
  // column bias -(aZero (+128)) rowSums[n], then 16 zeros (a block reads 32 biases even when it has
  // a single column tile)
  thread_local std::vector<int32_t> bias;
  if (bias.size() < static_cast<size_t>(Np + 16)) bias.resize(static_cast<size_t>(Np + 16));
  const uint32_t negZero = static_cast<uint32_t>(-(static_cast<int64_t>(aZero) + (aSigned ? 128 : 0)));
  for (int64_t n = 0; n < Np + 16; n++) bias[n] = n < N ? static_cast<int32_t>(static_cast<uint32_t>(rowSums[n]) * negZero) : 0;
  const int32_t* cb = bias.data();
  const uint8_t flip = aSigned ? 0x80 : 0;
  const int64_t rowTasks = (M + 16 * kRowTiles - 1) / (16 * kRowTiles);
  const int64_t ntStride = KT * 1024;
  // Tasks: kRowTiles row tiles (16 kRowTiles rows) each, all columns, in chunks of consecutive tasks
  // per thread. A task's activation rows are packed into tile order (per-thread buffers, L1 / L2
  // resident) while the previous task of the chunk computes, a few rows after each block; the task
  // then computes 2 x 2 tile blocks over the whole K, each stored once into a small buffer and
  // written to C (with the column bias) while the next block computes. Packing and C stores (the
  // activations come from memory, C goes there) so overlap the tile products instead of stalling
  // them: tile stores straight into a large C ran at half speed, unoverlapped packing cost ~20 %.
  // C of 1 MB or more (past what L2 keeps for the consumer) is written with non-temporal stores when
  // its rows start on cache lines: no read for ownership of lines about to be overwritten
  // (~+3 % of the AMX peak at n = 1024).
  const bool stream = M * N * 4 >= (int64_t{1} << 20) && reinterpret_cast<uintptr_t>(c) % 64 == 0 && N % 16 == 0;
  const int64_t rowsPerTask = 16 * kRowTiles;
  auto taskRows = [&](int64_t t) { return (std::min<int64_t>(kRowTiles, (M - t * rowsPerTask + 15) / 16) + 1) / 2 * 32; };
  parallelFor(rowTasks, 2.0 * M * N * K / 64.0, [&](int64_t begin, int64_t end) {
    amxRelease();  // the configuration may have been changed by other code on this thread since our last job
    configureTiles();
    thread_local std::vector<uint8_t> apStore;
    const size_t bufBytes = static_cast<size_t>(kRowTiles * KT * 1024);
    uint8_t* const apBase = cacheAligned(apStore, 2 * bufBytes);
    alignas(64) int32_t tiles[2][32 * 32];  // the block being computed and the one being written
    PendingBlock pending;
    int cur = 0, buf = 0;
    packRows(a, M, K, begin * rowsPerTask, 0, taskRows(begin), KT, flip, apBase);
    for (int64_t t = begin; t < end; t++) {
      const int64_t m0 = t * rowsPerTask;
      const int64_t rows = taskRows(t);  // rows of A packed for this task: whole 2 x 2 blocks
      const uint8_t* ap = apBase + buf * bufBytes;
      uint8_t* nextAp = apBase + (buf ^ 1) * bufBytes;
      const int64_t nextRows = t + 1 < end ? taskRows(t + 1) : 0;
      const int64_t blocks = (NT + 1) / 2 * (rows / 32);
      const int64_t perBlock = (nextRows + blocks - 1) / blocks;
      int64_t packed1 = 0;  // rows of the next task packed so far
      for (int64_t nt = 0; nt < NT; nt += 2) {
        // an odd last column tile is paired with itself; the copy to C drops the duplicate columns
        const int8_t* B = packed + nt * ntStride;
        const int64_t second = nt + 1 < NT ? ntStride : 0;
        const int64_t cols = std::min<int64_t>(32, N - nt * 16);
        for (int64_t j = 0; j < rows / 16; j += 2) {
          amxBlock22(ap + j * KT * 1024, KT, B, second, tiles[cur], pending);
          const int64_t r0 = m0 + 16 * j;
          pending = PendingBlock{tiles[cur], cb + nt * 16, c + r0 * N + nt * 16, N, std::min<int64_t>(32, M - r0), cols, stream};
          cur ^= 1;
          if (packed1 < nextRows) {
            const int64_t q1 = std::min(nextRows, packed1 + perBlock);
            packRows(a, M, K, m0 + rowsPerTask, packed1, q1, KT, flip, nextAp);
            packed1 = q1;
          }
        }
      }
      if (packed1 < nextRows) packRows(a, M, K, m0 + rowsPerTask, packed1, nextRows, KT, flip, nextAp);
      buf ^= 1;
    }
    writeBlock(pending);
    if (stream) _mm_sfence();  // the streaming stores are weakly ordered: complete them before the task ends
    amxRelease();
  });
}

double amxPeakGops(int threads, double seconds) {
  if (!amxAvailable()) return 0;
  long iters = 1 << 10;
  double elapsed = 0;
  for (;;) {
    const double t0 = threadCpuSeconds();
    const int32_t s = amxLoop(iters);
    elapsed = threadCpuSeconds() - t0;
    amxRelease();
    if (s == 12345) iters++;
    if (elapsed > seconds / 4 || iters > (1L << 40)) break;
    iters *= 2;
  }
  iters = static_cast<long>(iters * (seconds / elapsed));
  threads = std::max(1, std::min(256, threads));
  ProbeCtx ctx{iters, 0, {}};
  const int saved = poolThreads();
  if (threads != saved) poolSetThreads(threads);
  poolRun(threads, [](void* raw, int t, int) {
    auto* p = static_cast<ProbeCtx*>(raw);
    const double c0 = threadCpuSeconds();
    p->sink = amxLoop(p->iters);
    p->cpuSeconds[t] = threadCpuSeconds() - c0;
    amxRelease();
  }, &ctx);
  if (threads != saved) poolSetThreads(saved);
  // 4 tdpbusd per iteration, each 16 x 16 x 64 multiply-adds = 2 ops each.
  const double perThread = 4.0 * 16 * 16 * 64 * 2 * static_cast<double>(iters);
  double total = 0;
  for (int t = 0; t < threads; t++) total += ctx.cpuSeconds[t] > 0 ? perThread / ctx.cpuSeconds[t] : 0;
  return total * 1e-9;
}

#undef LB_TLOAD
#undef LB_TSTORE
#undef LB_TDP

#else  // no AMX support in this compiler / platform

bool amxAvailable() { return false; }
const char* amxStatus() { return "not compiled in"; }
void gemmAmxSerial(int64_t, int64_t, int64_t, const uint8_t*, int64_t, const int8_t*, const int32_t*, int32_t*, int64_t) {}
void gemmInt8Amx(int64_t, int64_t, int64_t, const uint8_t*, bool, int32_t, const int8_t*, const int32_t*, int32_t*) {}
void amxConvImplicit(const uint8_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int8_t*,
                     const int32_t*, int32_t*, int64_t) {}
void amxConvGather(const uint8_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const uint8_t*, const uint64_t*,
                   const int8_t*, int32_t*, int64_t) {}
double amxPeakGops(int, double) { return 0; }
void amxRelease() {}

#endif

}  // namespace lowbit
