// SGEMM with packed panels, cache blocking and register-blocked micro-kernels per ISA.
//
// Loop nest: jc over N by NC -> pc over K by KC (pack B block: NR-wide panels) -> ic over M by
// MC (pack A block: MR-tall panels) -> ir by MR -> jr by NR -> micro-kernel, which keeps an
// (MR, NR) tile of C in registers over kc steps. The A micro-panel (MR x KC) stays in L1 while
// the B panels of the block (KC x NC, in L2) stream past it; C tiles come from L3 (prefetched by
// the kernel).
#include "gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu.h"
#include "threadpool.h"

namespace lowbit {

namespace {

// c (mr, nr) with row stride ldc  =  cscale * c + a_panel^T-ish product:
//   c[i][j] = cscale * c[i][j] + sum_k a[k * MR + i] * b[k * NR + j]
// a is a packed (kc, MR) panel, b a packed (kc, NR) panel; cscale == 0 never reads c.
using MicroKernel = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr,
                             float cscale);

struct Blocking {
  int MR, NR;
  int64_t KC, MC, NC;
  MicroKernel kernel;
};

// ---------------------------------------------------------------- AVX-512: 9 x 48 of zmm
// 27 accumulators + 3 B vectors + 1 broadcast = 31 of the 32 zmm registers. Per k step: 3 vector
// loads and 9 broadcasts feed 27 FMAs (0.44 loads per FMA; 14 x 32 needs 0.57). With panels in
// L1, 9 x 48 runs 3-5 points of the FMA peak above 14 x 32, 12 x 32, 8 x 48, 6 x 64, 5 x 80 and
// 4 x 96 on this machine (bench/probes/kernel-shapes.cc).
constexpr int kMr512 = 9, kNr512 = 48, kVec512 = kNr512 / 16;

// An R x (16 V) tile, V = the vectors of the 48-wide panel that hold valid columns (nr <= 16 V);
// the packed B panel keeps its 48-float row stride.
template <int R, int V>
LOWBIT_TARGET_AVX512 void kernelAvx512Rows(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int nr,
                                           float cscale) {
  __m512 acc[R][V];
#pragma GCC unroll 9
  for (int r = 0; r < R; r++)
#pragma GCC unroll 3
    for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();
  // One k step: V B vectors times R broadcasts of A. No software prefetch of B: the panel is read
  // in order and the hardware prefetchers keep up, while prefetch instructions cost load slots
  // (with a prefetch of the line 8 steps ahead per B vector, this tile ran 3-5 points of the peak
  // slower on panels in the GEMM's access pattern).
#define LOWBIT_K512_STEP()                                                                            \
  do {                                                                                                \
    __m512 bv[V];                                                                                     \
    _Pragma("GCC unroll 3") for (int v = 0; v < V; v++) bv[v] = _mm512_load_ps(b + 16 * v);           \
    _Pragma("GCC unroll 9") for (int r = 0; r < R; r++) {                                             \
      const __m512 av = _mm512_set1_ps(a[r]);                                                         \
      _Pragma("GCC unroll 3") for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]); \
    }                                                                                                 \
    a += kMr512;                                                                                      \
    b += kNr512;                                                                                      \
  } while (0)
  // Bring the C tile towards L2 now; it is only read after the k loop.
#pragma GCC unroll 9
  for (int r = 0; r < R; r++)
#pragma GCC unroll 3
    for (int v = 0; v < V; v++) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * v), _MM_HINT_T1);
  // The C tile is read after the k loop: fetch one of its R * V lines per step over the last
  // R * V steps (earlier, its lines -- ldc apart, often in one L1 set -- would be evicted before use).
  constexpr int kLines = R * V;
  const int64_t tail = std::min<int64_t>(kc, kLines);
#pragma GCC unroll 4
  for (int64_t k = tail; k < kc; k++) LOWBIT_K512_STEP();
  for (int64_t t = 0; t < tail; t++) {
    const int64_t line = t + kLines - tail;
    _mm_prefetch(reinterpret_cast<const char*>(c + (line / V) * ldc + (line % V) * 16), _MM_HINT_T0);
    LOWBIT_K512_STEP();
  }
#undef LOWBIT_K512_STEP
  __mmask16 m[V];
#pragma GCC unroll 3
  for (int v = 0; v < V; v++) {
    const int cols = nr - 16 * v;
    m[v] = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  }
  const __m512 s = _mm512_set1_ps(cscale);
#pragma GCC unroll 9
  for (int r = 0; r < R; r++) {
    float* row = c + r * ldc;
#pragma GCC unroll 3
    for (int v = 0; v < V; v++) {
      if (cscale != 0.f) acc[r][v] = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m[v], row + 16 * v), acc[r][v]);
      _mm512_mask_storeu_ps(row + 16 * v, m[v], acc[r][v]);
    }
  }
}

template <int V>
void kernelAvx512Cols(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, float cscale) {
  switch (mr) {
#define LOWBIT_ROWS(R) \
  case R: return kernelAvx512Rows<R, V>(kc, a, b, c, ldc, nr, cscale);
    LOWBIT_ROWS(1) LOWBIT_ROWS(2) LOWBIT_ROWS(3) LOWBIT_ROWS(4) LOWBIT_ROWS(5) LOWBIT_ROWS(6) LOWBIT_ROWS(7)
    LOWBIT_ROWS(8) LOWBIT_ROWS(9)
#undef LOWBIT_ROWS
    default: return;
  }
}

// Edge panels (nr <= 32 or <= 16 valid columns) run a 2- or 1-vector tile: no FMAs on padding.
void kernelAvx512(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr, float cscale) {
  if (nr > 32) return kernelAvx512Cols<3>(kc, a, b, c, ldc, mr, nr, cscale);
  if (nr > 16) return kernelAvx512Cols<2>(kc, a, b, c, ldc, mr, nr, cscale);
  return kernelAvx512Cols<1>(kc, a, b, c, ldc, mr, nr, cscale);
}

// ---------------------------------------------------------------- AVX2: 6 x 16 of ymm
constexpr int kMr256 = 6, kNr256 = 16;

LOWBIT_TARGET_AVX2 void kernelAvx2Full(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr,
                                       float cscale) {
  __m256 acc0[kMr256], acc1[kMr256];
  for (int r = 0; r < kMr256; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < kMr256; r++) {
      const __m256 av = _mm256_broadcast_ss(a + r);
      acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
    }
    a += kMr256;
    b += kNr256;
  }
  const __m256 s = _mm256_set1_ps(cscale);
  for (int r = 0; r < mr; r++) {
    float* row = c + r * ldc;
    if (cscale != 0.f) {
      acc0[r] = _mm256_fmadd_ps(s, _mm256_loadu_ps(row), acc0[r]);
      acc1[r] = _mm256_fmadd_ps(s, _mm256_loadu_ps(row + 8), acc1[r]);
    }
    _mm256_storeu_ps(row, acc0[r]);
    _mm256_storeu_ps(row + 8, acc1[r]);
  }
}

// Edge tiles (nr < NR) go through a temporary full tile, then the valid part is combined.
template <int MR, int NR, void (*Full)(int64_t, const float*, const float*, float*, int64_t, int, float)>
void kernelWithEdges(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, int nr,
                     float cscale) {
  if (nr == NR) return Full(kc, a, b, c, ldc, mr, cscale);
  alignas(64) float tile[MR * NR];
  Full(kc, a, b, tile, NR, mr, 0.f);
  for (int i = 0; i < mr; i++) {
    for (int j = 0; j < nr; j++) {
      const float prev = cscale == 0.f ? 0.f : cscale * c[i * ldc + j];
      c[i * ldc + j] = prev + tile[i * NR + j];
    }
  }
}

// ---------------------------------------------------------------- scalar: 4 x 16
constexpr int kMrScalar = 4, kNrScalar = 16;

void kernelScalarFull(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr, float cscale) {
  float acc[kMrScalar][kNrScalar] = {};
  for (int64_t k = 0; k < kc; k++) {
    for (int r = 0; r < kMrScalar; r++) {
      const float av = a[r];
      for (int j = 0; j < kNrScalar; j++) acc[r][j] += av * b[j];
    }
    a += kMrScalar;
    b += kNrScalar;
  }
  for (int r = 0; r < mr; r++) {
    for (int j = 0; j < kNrScalar; j++) {
      const float prev = cscale == 0.f ? 0.f : cscale * c[r * ldc + j];
      c[r * ldc + j] = prev + acc[r][j];
    }
  }
}

const Blocking& blocking() {
  // KC: an A micro-panel (MR x KC) stays in L1 while B panels stream past it;
  // NC: the packed B block (KC x NC) stays in L2; MC: rows of A packed at a time.
  static const Blocking chosen = [] {
    switch (activeIsa()) {
      case Isa::Avx512: return Blocking{kMr512, kNr512, 256, kMr512 * 24, kNr512 * 22, kernelAvx512};
      case Isa::Avx2:
        return Blocking{kMr256, kNr256, 256, 6 * 48, 1024, kernelWithEdges<kMr256, kNr256, kernelAvx2Full>};
      default:
        return Blocking{kMrScalar, kNrScalar, 256, 4 * 32, 1024,
                        kernelWithEdges<kMrScalar, kNrScalar, kernelScalarFull>};
    }
  }();
  return chosen;
}

// A 64-byte aligned scratch buffer that only grows.
struct Scratch {
  float* data = nullptr;
  size_t size = 0;
  float* get(size_t n) {
    if (n > size) {
      std::free(data);
      size = (n + 15) & ~size_t{15};
      data = static_cast<float*>(std::aligned_alloc(64, size * sizeof(float)));
    }
    return data;
  }
  ~Scratch() { std::free(data); }
};
thread_local Scratch tPackA, tPackB, tPackB2;

// ---------------------------------------------------------------- AVX-512 packing
// In-register transpose of a 16 x 16 float block: r[i] lane j  ->  r[j] lane i.
LOWBIT_TARGET_AVX512 inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // t[4q + 0/1] hold rows 4q, 4q+1 interleaved (low/high pairs), t[4q + 2/3] rows 4q+2, 4q+3.
#pragma GCC unroll 4
  for (int q = 0; q < 4; q++) {
    const __m512d a = _mm512_castps_pd(t[4 * q]), b = _mm512_castps_pd(t[4 * q + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * q + 2]), d = _mm512_castps_pd(t[4 * q + 3]);
    r[4 * q + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));  // column 4L+0 of rows 4q..4q+3
    r[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));  // column 4L+1
    r[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));  // column 4L+2
    r[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));  // column 4L+3
  }
  // r[4q + c] lane L = rows 4q..4q+3 of column 4L + c.
#pragma GCC unroll 4
  for (int c = 0; c < 4; c++) {
    t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);       // cols c, 8+c of rows 0-7
    t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);   // cols 4+c, 12+c of rows 0-7
    t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
    t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; c++) {
    r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);            // column c
    r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);        // column 8 + c
    r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);   // column 4 + c
    r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);  // column 12 + c
  }
}

// Packs MR = 9 row panels of op(A)[ic : ic+mc, pc : pc+kc] (see packA): A (M, K) goes through
// 16 x 16 register transposes, A (K, M) is one masked 9-float copy per k.
LOWBIT_TARGET_AVX512 void packA512(const GemmArgs& g, int64_t ic, int64_t pc, int64_t mc, int64_t kc, float* dst) {
  constexpr __mmask16 kRowMask = (1u << kMr512) - 1;
  for (int64_t p = 0; p < mc; p += kMr512, dst += kMr512 * kc) {
    const int rows = static_cast<int>(std::min<int64_t>(kMr512, mc - p));
    if (g.transA) {
      const float* src = g.A + pc * g.lda + ic + p;
      const __mmask16 m = static_cast<__mmask16>((1u << rows) - 1);
      for (int64_t k = 0; k < kc; k++, src += g.lda) _mm512_mask_storeu_ps(dst + k * kMr512, kRowMask, _mm512_maskz_loadu_ps(m, src));
      continue;
    }
    const float* src = g.A + (ic + p) * g.lda + pc;
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const int kn = static_cast<int>(std::min<int64_t>(16, kc - k0));
      __m512 r[16];
      if (kn == 16 && rows == kMr512) {
#pragma GCC unroll 9
        for (int i = 0; i < kMr512; i++) r[i] = _mm512_loadu_ps(src + i * g.lda + k0);
      } else {
        const __mmask16 km = static_cast<__mmask16>((1u << kn) - 1);
        for (int i = 0; i < kMr512; i++) r[i] = i < rows ? _mm512_maskz_loadu_ps(km, src + i * g.lda + k0) : _mm512_setzero_ps();
      }
      for (int i = kMr512; i < 16; i++) r[i] = _mm512_setzero_ps();
      transpose16x16(r);
      float* out = dst + k0 * kMr512;
      if (kn == 16) {
#pragma GCC unroll 16
        for (int k = 0; k < 16; k++) _mm512_mask_storeu_ps(out + k * kMr512, kRowMask, r[k]);
      } else {
        for (int k = 0; k < kn; k++) _mm512_mask_storeu_ps(out + k * kMr512, kRowMask, r[k]);
      }
    }
  }
}

// Packs NR = 48 column panels [q0, q1) of op(B) (see packB): B (K, N) is copied in bands of 8
// rows, B (N, K) goes through 16 x 16 register transposes.
LOWBIT_TARGET_AVX512 void packB512(const GemmArgs& g, int64_t pc, int64_t jc, int64_t kc, int64_t nc, int64_t q0,
                                   int64_t q1, float* dst) {
  if (!g.transB) {
    // Eight source rows at a time across all the panels: every row slice is read in one pass
    // and each panel receives 1.5 KiB contiguous runs (the hardware prefetchers follow both).
    for (int64_t k0 = 0; k0 < kc; k0 += 8) {
      const int64_t kn = std::min<int64_t>(8, kc - k0);
      for (int64_t q = q0; q < q1; q++) {
        const float* src = g.B + (pc + k0) * g.ldb + jc + q * kNr512;
        float* out = dst + q * kNr512 * kc + k0 * kNr512;
        const int cols = static_cast<int>(std::min<int64_t>(kNr512, nc - q * kNr512));
        if (cols == kNr512) {
          for (int64_t k = 0; k < kn; k++, src += g.ldb, out += kNr512) {
#pragma GCC unroll 3
            for (int v = 0; v < kVec512; v++) _mm512_store_ps(out + 16 * v, _mm512_loadu_ps(src + 16 * v));
          }
        } else {
          __mmask16 m[kVec512];
          for (int v = 0; v < kVec512; v++) {
            const int left = cols - 16 * v;
            m[v] = left >= 16 ? 0xFFFF : left > 0 ? static_cast<__mmask16>((1u << left) - 1) : 0;
          }
          for (int64_t k = 0; k < kn; k++, src += g.ldb, out += kNr512) {
            for (int v = 0; v < kVec512; v++) _mm512_store_ps(out + 16 * v, _mm512_maskz_loadu_ps(m[v], src + 16 * v));
          }
        }
      }
    }
    return;
  }
  for (int64_t q = q0; q < q1; q++) {
    float* panel = dst + q * kNr512 * kc;
    const int64_t j0 = q * kNr512;
    const int cols = static_cast<int>(std::min<int64_t>(kNr512, nc - j0));
    for (int v = 0; v < kVec512; v++) {
      const int jn = std::min(16, cols - 16 * v);
      float* out = panel + 16 * v;
      if (jn <= 0) {
        for (int64_t k = 0; k < kc; k++) _mm512_store_ps(out + k * kNr512, _mm512_setzero_ps());
        continue;
      }
      const float* src = g.B + (jc + j0 + 16 * v) * g.ldb + pc;
      for (int64_t k0 = 0; k0 < kc; k0 += 16) {
        const int kn = static_cast<int>(std::min<int64_t>(16, kc - k0));
        __m512 r[16];
        if (kn == 16 && jn == 16) {
#pragma GCC unroll 16
          for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(src + j * g.ldb + k0);
        } else {
          const __mmask16 km = static_cast<__mmask16>((1u << kn) - 1);
          for (int j = 0; j < 16; j++) r[j] = j < jn ? _mm512_maskz_loadu_ps(km, src + j * g.ldb + k0) : _mm512_setzero_ps();
        }
        transpose16x16(r);
        if (kn == 16) {
#pragma GCC unroll 16
          for (int k = 0; k < 16; k++) _mm512_store_ps(out + (k0 + k) * kNr512, r[k]);
        } else {
          for (int k = 0; k < kn; k++) _mm512_store_ps(out + (k0 + k) * kNr512, r[k]);
        }
      }
    }
  }
}

// Packs op(A)[ic : ic+mc, pc : pc+kc] into ceil(mc / MR) panels, each (kc, MR), rows past mc zero.
void packA(const GemmArgs& g, int64_t ic, int64_t pc, int64_t mc, int64_t kc, int MR, float* dst) {
  if (MR == kMr512) return packA512(g, ic, pc, mc, kc, dst);
  for (int64_t p = 0; p < mc; p += MR, dst += MR * kc) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, mc - p));
    if (!g.transA) {  // A is (M, K): rows of op(A) are contiguous; read MR row streams, write in order
      const float* src = g.A + (ic + p) * g.lda + pc;
      for (int64_t k = 0; k < kc; k++) {
        for (int i = 0; i < rows; i++) dst[k * MR + i] = src[i * g.lda + k];
      }
    } else {  // A is (K, M): columns of op(A) are contiguous
      for (int64_t k = 0; k < kc; k++) {
        const float* src = g.A + (pc + k) * g.lda + ic + p;
        for (int i = 0; i < rows; i++) dst[k * MR + i] = src[i];
      }
    }
    if (rows < MR) {
      for (int64_t k = 0; k < kc; k++) {
        for (int i = rows; i < MR; i++) dst[k * MR + i] = 0.f;
      }
    }
  }
}

// Packs NR-wide panels [q0, q1) of op(B)[pc : pc+kc, jc : jc+nc]; panel q is (kc, NR) at
// dst + q * NR * kc, columns past nc zero.
void packB(const GemmArgs& g, int64_t pc, int64_t jc, int64_t kc, int64_t nc, int NR, int64_t q0, int64_t q1,
           float* dst) {
  if (NR == kNr512) return packB512(g, pc, jc, kc, nc, q0, q1, dst);
  for (int64_t q = q0; q < q1; q++) {
    float* panel = dst + q * NR * kc;
    const int64_t j0 = q * NR;
    const int cols = static_cast<int>(std::min<int64_t>(NR, nc - j0));
    if (!g.transB) {  // B is (K, N)
      for (int64_t k = 0; k < kc; k++) {
        const float* src = g.B + (pc + k) * g.ldb + jc + j0;
        float* out = panel + k * NR;
        for (int j = 0; j < cols; j++) out[j] = src[j];
        for (int j = cols; j < NR; j++) out[j] = 0.f;
      }
    } else {  // B is (N, K)
      for (int j = 0; j < cols; j++) {
        const float* src = g.B + (jc + j0 + j) * g.ldb + pc;
        for (int64_t k = 0; k < kc; k++) panel[k * NR + j] = src[k];
      }
      if (cols < NR) {
        for (int64_t k = 0; k < kc; k++) {
          for (int j = cols; j < NR; j++) panel[k * NR + j] = 0.f;
        }
      }
    }
  }
}

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// C[i0:i1, jc:jc+nc] (+)= op(A)[i0:i1, pc:pc+kc] * packedB, packing A by MC rows into bufA.
// Loop order: an A micro-panel (MR x KC, 9 KB) stays in L1 while the B panels stream from L2.
// Measured alternatives (session 9, 1024^3, interleaved runs): the BLIS order (B micro-panel in L1,
// KC 128-192) ran 4-8 points of the peak lower; and pinning every call to one B panel and one C
// tile (wrong results, all operands in L1) gained nothing -- the losses are in the kernel and the
// packing, not in L2 traffic.
void multiplyRows(const GemmArgs& g, const Blocking& bl, int64_t i0, int64_t i1, int64_t jc, int64_t nc, int64_t pc,
                  int64_t kc, const float* packedB, float* bufA) {
  const float cscale = pc == 0 ? g.beta : 1.f;
  for (int64_t ic = i0; ic < i1; ic += bl.MC) {
    const int64_t mc = std::min(bl.MC, i1 - ic);
    packA(g, ic, pc, mc, kc, bl.MR, bufA);
    for (int64_t ir = 0; ir < mc; ir += bl.MR) {
      const int mr = static_cast<int>(std::min<int64_t>(bl.MR, mc - ir));
      float* cRow = g.C + (ic + ir) * g.ldc + jc;
      for (int64_t jr = 0; jr < nc; jr += bl.NR) {
        const int nr = static_cast<int>(std::min<int64_t>(bl.NR, nc - jr));
        bl.kernel(kc, bufA + ir * kc, packedB + jr * kc, cRow + jr, g.ldc, mr, nr, cscale);
      }
    }
  }
}

// C (M, N) = beta * C, for K == 0.
void scaleC(const GemmArgs& g) {
  for (int64_t i = 0; i < g.M; i++) {
    float* row = g.C + i * g.ldc;
    for (int64_t j = 0; j < g.N; j++) row[j] = g.beta == 0.f ? 0.f : g.beta * row[j];
  }
}

size_t packASize(const Blocking& bl, int64_t M) {
  return static_cast<size_t>(bl.KC * ceilDiv(std::min(bl.MC, M), bl.MR) * bl.MR);
}
size_t packBSize(const Blocking& bl, int64_t N) {
  return static_cast<size_t>(bl.KC * ceilDiv(std::min(bl.NC, N), bl.NR) * bl.NR);
}

// Columns of C are split between threads in units of one vector (every ISA's NR is a multiple):
// equal column blocks even when the NR-wide panels do not divide evenly (N = 256 on 2 threads:
// 128 + 128 columns, not the 144 + 112 of a split at 48-wide panels).
constexpr int64_t kColUnit = 16;

// Each thread runs the whole blocked loop on its own (tm, tn) block of C.
void sgemmBlocks(const GemmArgs& g, int threads, int tm) {
  const Blocking& bl = blocking();
  struct Ctx {
    const GemmArgs* g;
    int tm, tn;
    int64_t tilesM, unitsN;  // MR-row tiles and kColUnit-column units of C
    int MR;
  } ctx{&g, tm, threads / tm, ceilDiv(g.M, bl.MR), ceilDiv(g.N, kColUnit), bl.MR};
  poolRun(threads, [](void* raw, int t, int) {
    const Ctx& c = *static_cast<Ctx*>(raw);
    const int bm = t / c.tn, bn = t % c.tn;
    const int64_t i0 = std::min(c.g->M, c.tilesM * bm / c.tm * c.MR);
    const int64_t i1 = std::min(c.g->M, c.tilesM * (bm + 1) / c.tm * c.MR);
    const int64_t j0 = std::min(c.g->N, c.unitsN * bn / c.tn * kColUnit);
    const int64_t j1 = std::min(c.g->N, c.unitsN * (bn + 1) / c.tn * kColUnit);
    if (i0 >= i1 || j0 >= j1) return;
    GemmArgs part = *c.g;
    part.M = i1 - i0;
    part.N = j1 - j0;
    part.A += c.g->transA ? i0 : i0 * c.g->lda;
    part.B += c.g->transB ? j0 * c.g->ldb : j0;
    part.C += i0 * c.g->ldc + j0;
    sgemmSerial(part);
  }, &ctx);
}

// Shared-panel parallel SGEMM for large products. The (jc, pc) blocks of B are packed into two
// shared buffers in turn: one job packs the first block, then each job computes C row blocks
// against the current block (a few MR panels per task, each task packing its own rows of A)
// while its first tasks pack the next block into the other buffer -- one job per block, packing
// overlapped with compute. Tasks are claimed dynamically and never wait for each other, so a
// descheduled worker only costs the task it holds; shrinking row tasks keep the tail short.
void sgemmShared(const GemmArgs& g, int threads) {
  const Blocking& bl = blocking();
  // The caller's buffers, shared with the tasks.
  float* bufs[2] = {tPackB.get(packBSize(bl, g.N)), tPackB2.get(packBSize(bl, g.N))};
  const int64_t panelsM = ceilDiv(g.M, bl.MR);
  // Row tasks of decreasing size (guided): each takes 1 / (4 * threads) of the MR panels still
  // left (at most MC rows), down to single panels, so that the threads finish a block together --
  // the idle tail is at most one small task, not one of ~8 equal tasks per thread.
  // Reused across calls (no allocation per product); only read by the tasks of this call.
  thread_local std::vector<int64_t> taskStart;
  taskStart.assign(1, 0);
  for (int64_t left = panelsM; left > 0;) {
    const int64_t size = std::min({left, bl.MC / bl.MR, std::max<int64_t>(1, left / (4 * threads))});
    left -= size;
    taskStart.push_back(panelsM - left);
  }
  const int rowTasks = static_cast<int>(taskStart.size()) - 1;
  struct Block {
    int64_t jc, nc, pc, kc, panelsB;
    float* buf;
  };
  thread_local std::vector<Block> blocks;
  blocks.clear();
  int which = 0;
  for (int64_t jc = 0; jc < g.N; jc += bl.NC) {
    const int64_t nc = std::min(bl.NC, g.N - jc);
    for (int64_t pc = 0; pc < g.K; pc += bl.KC) {
      blocks.push_back(Block{jc, nc, pc, std::min(bl.KC, g.K - pc), ceilDiv(nc, bl.NR), bufs[which]});
      which ^= 1;
    }
  }
  struct Ctx {
    const GemmArgs* g;
    const Blocking* bl;
    const Block* cur;   // computed by the row tasks (null in the first job)
    const Block* next;  // packed by the first packTasks tasks (null when none is left)
    int packTasks;
    const int64_t* taskStart;  // row task r covers MR panels [taskStart[r], taskStart[r + 1])
  } ctx{&g, &bl, nullptr, nullptr, 0, taskStart.data()};
  const auto packTasksFor = [&](const Block& b) { return static_cast<int>(std::min<int64_t>(b.panelsB, 2 * threads)); };
  const TaskFn fn = [](void* raw, int t, int) {
    const Ctx& c = *static_cast<Ctx*>(raw);
    if (t < c.packTasks) {
      const Block& b = *c.next;
      packB(*c.g, b.pc, b.jc, b.kc, b.nc, c.bl->NR, b.panelsB * t / c.packTasks, b.panelsB * (t + 1) / c.packTasks, b.buf);
      return;
    }
    const int r = t - c.packTasks;
    const Block& b = *c.cur;
    const int64_t i0 = c.taskStart[r] * c.bl->MR;
    const int64_t i1 = std::min(c.g->M, c.taskStart[r + 1] * c.bl->MR);
    if (i0 >= i1) return;
    float* bufA = tPackA.get(packASize(*c.bl, i1 - i0));
    multiplyRows(*c.g, *c.bl, i0, i1, b.jc, b.nc, b.pc, b.kc, b.buf, bufA);
  };
  ctx.next = &blocks[0];
  ctx.packTasks = packTasksFor(blocks[0]);
  poolRun(ctx.packTasks, fn, &ctx);
  for (size_t i = 0; i < blocks.size(); i++) {
    ctx.cur = &blocks[i];
    ctx.next = i + 1 < blocks.size() ? &blocks[i + 1] : nullptr;
    ctx.packTasks = ctx.next != nullptr ? packTasksFor(*ctx.next) : 0;
    poolRun(ctx.packTasks + rowTasks, fn, &ctx);
  }
}

// ---------------------------------------------------------------- unpacked small kernels
template <int R>
LOWBIT_TARGET_AVX512 void smallNNAvx512(int64_t N, int64_t K, const float* A, int64_t rsA, int64_t csA,
                                        const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t j0 = 0; j0 < N; j0 += 32) {
    const int64_t left = N - j0;
    const __mmask16 m0 = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
    const __mmask16 m1 = left >= 32 ? 0xFFFF : left > 16 ? static_cast<__mmask16>((1u << (left - 16)) - 1) : 0;
    __m512 acc0[R], acc1[R];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
    const float* a = A;
    const float* b = B + j0;
    if (m1 != 0) {
      for (int64_t k = 0; k < K; k++, a += csA, b += ldb) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_maskz_loadu_ps(m1, b + 16);
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
          const __m512 av = _mm512_set1_ps(a[r * rsA]);
          acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
          acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
        }
      }
    } else {
      for (int64_t k = 0; k < K; k++, a += csA, b += ldb) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) acc0[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r * rsA]), b0, acc0[r]);
      }
    }
    const __m512 s = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
      float* row = C + r * ldc + j0;
      if (beta != 0.f) {
        acc0[r] = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m0, row), acc0[r]);
        if (m1 != 0) acc1[r] = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m1, row + 16), acc1[r]);
      }
      _mm512_mask_storeu_ps(row, m0, acc0[r]);
      if (m1 != 0) _mm512_mask_storeu_ps(row + 16, m1, acc1[r]);
    }
  }
}

using SmallNNFn = void (*)(int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, float, float*,
                           int64_t);
constexpr SmallNNFn kSmallNN[13] = {
    nullptr, smallNNAvx512<1>, smallNNAvx512<2>, smallNNAvx512<3>, smallNNAvx512<4>,  smallNNAvx512<5>,  smallNNAvx512<6>,
    smallNNAvx512<7>, smallNNAvx512<8>, smallNNAvx512<9>, smallNNAvx512<10>, smallNNAvx512<11>, smallNNAvx512<12>,
};

// S samples at once (B and C advance by sB, sC per sample): each broadcast of A feeds S FMAs, one
// per sample, where smallNNAvx512 reuses it for at most two vectors of one sample; the products
// of small maps (MobileNet's 1x1 convs on 7x7 and 4x4 maps: one to four vectors per row) were
// bound by those broadcasts. R <= 8 rows x S <= 3 samples: 24 accumulators. Each output is the
// same k-ordered FMA chain as smallNNAvx512's, so the results are equal bit for bit.
template <int R, int S>
LOWBIT_TARGET_AVX512 void smallNNSamplesAvx512(int64_t N, int64_t K, const float* A, int64_t rsA, int64_t csA, const float* B,
                                               int64_t ldb, int64_t sB, float* C, int64_t ldc, int64_t sC, const RowEpilogue* ep,
                                               int64_t row0) {
  for (int64_t j0 = 0; j0 < N; j0 += 16) {
    const int64_t left = N - j0;
    const __mmask16 m = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
    __m512 acc[R][S];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
      for (int s = 0; s < S; s++) acc[r][s] = _mm512_setzero_ps();
    const float* a = A;
    const float* b = B + j0;
    for (int64_t k = 0; k < K; k++, a += csA, b += ldb) {
      __m512 bv[S];
#pragma GCC unroll 3
      for (int s = 0; s < S; s++) bv[s] = _mm512_maskz_loadu_ps(m, b + s * sB);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const __m512 av = _mm512_set1_ps(a[r * rsA]);
#pragma GCC unroll 3
        for (int s = 0; s < S; s++) acc[r][s] = _mm512_fmadd_ps(av, bv[s], acc[r][s]);
      }
    }
    if (ep != nullptr) {
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const int64_t i = row0 + r;
        const __m512 sc = _mm512_set1_ps(ep->scale != nullptr ? ep->scale[i] : 1.f);
        const __m512 b = _mm512_set1_ps(ep->bias != nullptr ? ep->bias[i] : 0.f);
#pragma GCC unroll 3
        for (int s = 0; s < S; s++) {
          __m512 v = acc[r][s];
          // explicitly rounded: GCC would contract a plain multiply and the add into one FMA
          if (ep->scale != nullptr) v = _mm512_mul_round_ps(v, sc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          v = _mm512_add_ps(v, b);
          if (ep->relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // maxps(0, NaN) = NaN
          acc[r][s] = _mm512_min_ps(_mm512_set1_ps(ep->hi), v);    // minps(hi, NaN) = NaN
        }
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 3
      for (int s = 0; s < S; s++) _mm512_mask_storeu_ps(C + s * sC + r * ldc + j0, m, acc[r][s]);
  }
}

using SmallNNSamplesFn = void (*)(int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*,
                                  int64_t, int64_t, const RowEpilogue*, int64_t);
#define LOWBIT_SAMPLES_ROW(S)                                                                                          \
  {nullptr, smallNNSamplesAvx512<1, S>, smallNNSamplesAvx512<2, S>, smallNNSamplesAvx512<3, S>,                      \
   smallNNSamplesAvx512<4, S>, smallNNSamplesAvx512<5, S>, smallNNSamplesAvx512<6, S>, smallNNSamplesAvx512<7, S>, \
   smallNNSamplesAvx512<8, S>}
constexpr SmallNNSamplesFn kSmallNNSamples[4][9] = {{}, LOWBIT_SAMPLES_ROW(1), LOWBIT_SAMPLES_ROW(2), LOWBIT_SAMPLES_ROW(3)};
#undef LOWBIT_SAMPLES_ROW

template <int R, int V>
LOWBIT_TARGET_AVX512 void smallOffAvx512(int64_t N, int64_t K, const float* A, int64_t rsA, int64_t csA,
                                         const float* B, const int64_t* koff, float* C, int64_t ldc) {
  for (int64_t j0 = 0; j0 < N; j0 += 16 * V) {
    const int64_t left = N - j0;
    const __mmask16 m0 = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
    const __mmask16 m1 = V == 1 ? 0 : left >= 32 ? 0xFFFF : left > 16 ? static_cast<__mmask16>((1u << (left - 16)) - 1) : 0;
    __m512 acc0[R], acc1[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
    const float* a = A;
    const float* b = B + j0;
    for (int64_t k = 0; k < K; k++, a += csA) {
      const float* bk = b + koff[k];
      const __m512 b0 = _mm512_maskz_loadu_ps(m0, bk);
      const __m512 b1 = V == 2 ? _mm512_maskz_loadu_ps(m1, bk + 16) : b0;
#pragma GCC unroll 16
      for (int r = 0; r < R; r++) {
        const __m512 av = _mm512_set1_ps(a[r * rsA]);
        acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
        if (V == 2) acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
      float* row = C + r * ldc + j0;
      _mm512_mask_storeu_ps(row, m0, acc0[r]);
      if (V == 2) _mm512_mask_storeu_ps(row + 16, m1, acc1[r]);
    }
  }
}

using SmallOffFn = void (*)(int64_t, int64_t, const float*, int64_t, int64_t, const float*, const int64_t*, float*,
                            int64_t);
constexpr SmallOffFn kSmallOff1[17] = {
    nullptr, smallOffAvx512<1, 1>, smallOffAvx512<2, 1>, smallOffAvx512<3, 1>, smallOffAvx512<4, 1>,
    smallOffAvx512<5, 1>, smallOffAvx512<6, 1>, smallOffAvx512<7, 1>, smallOffAvx512<8, 1>, smallOffAvx512<9, 1>,
    smallOffAvx512<10, 1>, smallOffAvx512<11, 1>, smallOffAvx512<12, 1>, smallOffAvx512<13, 1>,
    smallOffAvx512<14, 1>, smallOffAvx512<15, 1>, smallOffAvx512<16, 1>,
};
constexpr SmallOffFn kSmallOff2[13] = {
    nullptr, smallOffAvx512<1, 2>, smallOffAvx512<2, 2>, smallOffAvx512<3, 2>, smallOffAvx512<4, 2>,
    smallOffAvx512<5, 2>, smallOffAvx512<6, 2>, smallOffAvx512<7, 2>, smallOffAvx512<8, 2>, smallOffAvx512<9, 2>,
    smallOffAvx512<10, 2>, smallOffAvx512<11, 2>, smallOffAvx512<12, 2>,
};

// A (RI x K) . B^T (K x RJ) as RI*RJ vector dot products over K.
template <int RI, int RJ>
LOWBIT_TARGET_AVX512 void dotTileAvx512(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                                        float beta, float* C, int64_t ldc) {
  __m512 acc[RI][RJ];
  for (int i = 0; i < RI; i++)
    for (int j = 0; j < RJ; j++) acc[i][j] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 bv[RJ];
    for (int j = 0; j < RJ; j++) bv[j] = _mm512_loadu_ps(B + j * ldb + k);
    for (int i = 0; i < RI; i++) {
      const __m512 av = _mm512_loadu_ps(A + i * lda + k);
      for (int j = 0; j < RJ; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
  if (k < K) {
    const __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 bv[RJ];
    for (int j = 0; j < RJ; j++) bv[j] = _mm512_maskz_loadu_ps(m, B + j * ldb + k);
    for (int i = 0; i < RI; i++) {
      const __m512 av = _mm512_maskz_loadu_ps(m, A + i * lda + k);
      for (int j = 0; j < RJ; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < RI; i++) {
    for (int j = 0; j < RJ; j++) {
      const float v = _mm512_reduce_add_ps(acc[i][j]);
      float& c = C[i * ldc + j];
      c = beta == 0.f ? v : beta * c + v;
    }
  }
}

template <int RI, int RJ>
LOWBIT_TARGET_AVX512 void dotTileAccAvx512(int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                                           float* accv, int64_t ldv) {
  __m512 acc[RI][RJ];
  for (int i = 0; i < RI; i++)
    for (int j = 0; j < RJ; j++) acc[i][j] = _mm512_loadu_ps(accv + i * ldv + j * 16);
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 bv[RJ];
    for (int j = 0; j < RJ; j++) bv[j] = _mm512_loadu_ps(B + j * ldb + k);
    for (int i = 0; i < RI; i++) {
      const __m512 av = _mm512_loadu_ps(A + i * lda + k);
      for (int j = 0; j < RJ; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
  if (k < K) {
    const __mmask16 m = static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 bv[RJ];
    for (int j = 0; j < RJ; j++) bv[j] = _mm512_maskz_loadu_ps(m, B + j * ldb + k);
    for (int i = 0; i < RI; i++) {
      const __m512 av = _mm512_maskz_loadu_ps(m, A + i * lda + k);
      for (int j = 0; j < RJ; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < RI; i++)
    for (int j = 0; j < RJ; j++) _mm512_storeu_ps(accv + i * ldv + j * 16, acc[i][j]);
}

using DotTileAccFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t);
constexpr DotTileAccFn kDotTileAcc[4][4] = {
    {dotTileAccAvx512<1, 1>, dotTileAccAvx512<1, 2>, dotTileAccAvx512<1, 3>, dotTileAccAvx512<1, 4>},
    {dotTileAccAvx512<2, 1>, dotTileAccAvx512<2, 2>, dotTileAccAvx512<2, 3>, dotTileAccAvx512<2, 4>},
    {dotTileAccAvx512<3, 1>, dotTileAccAvx512<3, 2>, dotTileAccAvx512<3, 3>, dotTileAccAvx512<3, 4>},
    {dotTileAccAvx512<4, 1>, dotTileAccAvx512<4, 2>, dotTileAccAvx512<4, 3>, dotTileAccAvx512<4, 4>},
};

LOWBIT_TARGET_AVX512 void dotReduceAvx512(int64_t M, int64_t N, const float* acc, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) C[i * ldc + j] += _mm512_reduce_add_ps(_mm512_loadu_ps(acc + (i * N + j) * 16));
}

using DotTileFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, float, float*, int64_t);
constexpr DotTileFn kDotTile[4][4] = {
    {dotTileAvx512<1, 1>, dotTileAvx512<1, 2>, dotTileAvx512<1, 3>, dotTileAvx512<1, 4>},
    {dotTileAvx512<2, 1>, dotTileAvx512<2, 2>, dotTileAvx512<2, 3>, dotTileAvx512<2, 4>},
    {dotTileAvx512<3, 1>, dotTileAvx512<3, 2>, dotTileAvx512<3, 3>, dotTileAvx512<3, 4>},
    {dotTileAvx512<4, 1>, dotTileAvx512<4, 2>, dotTileAvx512<4, 3>, dotTileAvx512<4, 4>},
};

}  // namespace

void sgemmSmallNN(int64_t M, int64_t N, int64_t K, const float* A, int64_t rsA, int64_t csA, const float* B,
                  int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (activeIsa() == Isa::Avx512) {
    const int64_t blocks = (M + 11) / 12;
    for (int64_t blk = 0; blk < blocks; blk++) {
      const int64_t i0 = M * blk / blocks, i1 = M * (blk + 1) / blocks;
      kSmallNN[i1 - i0](N, K, A + i0 * rsA, rsA, csA, B, ldb, beta, C + i0 * ldc, ldc);
    }
    return;
  }
  for (int64_t i = 0; i < M; i++) {
    float* c = C + i * ldc;
    for (int64_t j = 0; j < N; j++) c[j] = beta == 0.f ? 0.f : beta * c[j];
    for (int64_t k = 0; k < K; k++) {
      const float a = A[i * rsA + k * csA];
      const float* b = B + k * ldb;
      for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
    }
  }
}

void sgemmSmallNNSamples(int64_t samples, int64_t M, int64_t N, int64_t K, const float* A, int64_t rsA, int64_t csA,
                         const float* B, int64_t ldb, int64_t strideB, float* C, int64_t ldc, int64_t strideC,
                         const RowEpilogue* ep) {
  if (M <= 0 || N <= 0 || samples <= 0) return;
  const int64_t blocks = (M + 7) / 8;
  for (int64_t s0 = 0; s0 < samples; s0 += 3) {
    const int64_t S = std::min<int64_t>(3, samples - s0);
    for (int64_t blk = 0; blk < blocks; blk++) {
      const int64_t i0 = M * blk / blocks, i1 = M * (blk + 1) / blocks;
      kSmallNNSamples[S][i1 - i0](N, K, A + i0 * rsA, rsA, csA, B + s0 * strideB, ldb, strideB, C + s0 * strideC + i0 * ldc, ldc,
                                  strideC, ep, i0);
    }
  }
}

void sgemmSmallOffsets(int64_t M, int64_t N, int64_t K, const float* A, int64_t rsA, int64_t csA, const float* B,
                       const int64_t* koff, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (activeIsa() == Isa::Avx512) {
    const bool one = N <= 16;
    const int64_t maxRows = one ? 16 : 12;
    const int64_t blocks = (M + maxRows - 1) / maxRows;
    for (int64_t blk = 0; blk < blocks; blk++) {
      const int64_t i0 = M * blk / blocks, i1 = M * (blk + 1) / blocks;
      (one ? kSmallOff1 : kSmallOff2)[i1 - i0](N, K, A + i0 * rsA, rsA, csA, B, koff, C + i0 * ldc, ldc);
    }
    return;
  }
  for (int64_t i = 0; i < M; i++) {
    float* c = C + i * ldc;
    for (int64_t j = 0; j < N; j++) c[j] = 0.f;
    for (int64_t k = 0; k < K; k++) {
      const float a = A[i * rsA + k * csA];
      const float* b = B + koff[k];
      for (int64_t j = 0; j < N; j++) c[j] += a * b[j];
    }
  }
}

void sgemmDotNTAcc(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                   float* acc) {
  for (int64_t i = 0; i < M; i += 4) {
    const int ri = static_cast<int>(std::min<int64_t>(4, M - i));
    for (int64_t j = 0; j < N; j += 4) {
      const int rj = static_cast<int>(std::min<int64_t>(4, N - j));
      kDotTileAcc[ri - 1][rj - 1](K, A + i * lda, lda, B + j * ldb, ldb, acc + (i * N + j) * 16, N * 16);
    }
  }
}

void sgemmDotNTReduce(int64_t M, int64_t N, const float* acc, float* C, int64_t ldc) {
  dotReduceAvx512(M, N, acc, C, ldc);
}

void sgemmDotNT(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (activeIsa() == Isa::Avx512) {
    for (int64_t i = 0; i < M; i += 4) {
      const int ri = static_cast<int>(std::min<int64_t>(4, M - i));
      for (int64_t j = 0; j < N; j += 4) {
        const int rj = static_cast<int>(std::min<int64_t>(4, N - j));
        kDotTile[ri - 1][rj - 1](K, A + i * lda, lda, B + j * ldb, ldb, beta, C + i * ldc + j, ldc);
      }
    }
    return;
  }
  for (int64_t i = 0; i < M; i++) {
    for (int64_t j = 0; j < N; j++) {
      float s = 0.f;
      for (int64_t k = 0; k < K; k++) s += A[i * lda + k] * B[j * ldb + k];
      float& c = C[i * ldc + j];
      c = beta == 0.f ? s : beta * c + s;
    }
  }
}

void sgemmSerial(const GemmArgs& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0) return scaleC(g);
  const Blocking& bl = blocking();
  float* bufB = tPackB.get(packBSize(bl, g.N));
  float* bufA = tPackA.get(packASize(bl, g.M));
  for (int64_t jc = 0; jc < g.N; jc += bl.NC) {
    const int64_t nc = std::min(bl.NC, g.N - jc);
    for (int64_t pc = 0; pc < g.K; pc += bl.KC) {
      const int64_t kc = std::min(bl.KC, g.K - pc);
      packB(g, pc, jc, kc, nc, bl.NR, 0, ceilDiv(nc, bl.NR), bufB);
      multiplyRows(g, bl, 0, g.M, jc, nc, pc, kc, bufB, bufA);
    }
  }
}

void sgemm(const GemmArgs& g) {
  const int threads = poolThreads();
  const double flops = 2.0 * static_cast<double>(g.M) * static_cast<double>(g.N) * static_cast<double>(g.K);
  if (threads <= 1 || flops < kInlineWork || poolInsideJob() || g.K <= 0) return sgemmSerial(g);
  const Blocking& bl0 = blocking();
  // Shared B panels pay off from a few hundred rows; below that (the batch of a linear layer, e.g.
  // M = 128) each thread packing its own column block of B is 5-15 % faster (measured at M = 128,
  // 192, 256 against N, K = 512-1024 on 2 threads; equal at M = 1024).
  if (flops >= 4e6 && g.M >= std::max<int64_t>(4 * threads * bl0.MR, 512) && g.N >= 2 * bl0.NR) return sgemmShared(g, threads);
  // Choose the (tm, tn) grid of C blocks that wastes the fewest micro-tiles.
  const Blocking& bl = blocking();
  const int64_t tilesM = ceilDiv(g.M, bl.MR), tilesN = ceilDiv(g.N, bl.NR);
  int bestTm = 1;
  double bestEff = -1;
  for (int tm = threads; tm >= 1; tm--) {
    if (threads % tm != 0) continue;
    const int tn = threads / tm;
    const double effM = static_cast<double>(tilesM) / static_cast<double>(tm * ceilDiv(tilesM, tm));
    const double effN = static_cast<double>(tilesN) / static_cast<double>(tn * ceilDiv(tilesN, tn));
    if (effM * effN > bestEff + 1e-9) {
      bestEff = effM * effN;
      bestTm = tm;
    }
  }
  sgemmBlocks(g, threads, bestTm);
}

void sgemmBatched(const GemmArgs& g, int64_t batch, int64_t strideA, int64_t strideB, int64_t strideC) {
  const double flops = 2.0 * static_cast<double>(g.M) * static_cast<double>(g.N) * static_cast<double>(g.K);
  auto item = [&](int64_t b) {
    GemmArgs one = g;
    one.A += b * strideA;
    one.B += b * strideB;
    one.C += b * strideC;
    return one;
  };
  if (batch >= poolThreads() && flops < 4e6) {  // many small products: one thread per item
    parallelFor(batch, flops * static_cast<double>(batch), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; b++) sgemmSerial(item(b));
    });
    return;
  }
  for (int64_t b = 0; b < batch; b++) sgemm(item(b));
}

}  // namespace lowbit
