// Stride-1 convolutions as wide implicit GEMMs (see convwide.h).
//
// Forward, per sample (parallel over the batch): pad the input once into a per-thread buffer,
// run wide (Og, Nw) = w_g (Og, R) . B with B's row k = padded input + koff[k] (register tiles of
// R <= 8 output channels x V <= 4 vectors of 16 wide pixels), then the epilogue.
// Backward in w, per task (a range of samples): pad the inputs and lay dy out wide (junk columns
// zero) for a chunk of samples, then dw_g (Og, R) = sum over samples and wide pixels of
// dy_wide (Og, Nw) . B^T, with (4 x 6) tiles of 16-lane partial sums kept in registers over the
// whole chunk; the lanes are reduced once at the end and the tasks' partial dw summed.
#include "convwide.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu.h"
#include "scratch.h"
#include "threadpool.h"

namespace lowbit {

namespace {

thread_local ScratchBuffer tPadded, tWide, tDyWide;

inline __mmask16 tailMask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
}

struct Layout {
  int64_t Cg, Og, R, Hp, Wp, Nw, plane;  // plane = Hp * Wp
  std::vector<int64_t> koff;
};

Layout layoutOf(const ConvGeom& g) {
  Layout l;
  l.Cg = g.C / g.groups;
  l.Og = g.O / g.groups;
  l.R = l.Cg * g.KH * g.KW;
  l.Hp = g.H + 2 * g.ph;
  l.Wp = g.W + 2 * g.pw;
  l.Nw = (g.OH - 1) * l.Wp + g.OW;
  l.plane = l.Hp * l.Wp;
  l.koff.resize(static_cast<size_t>(l.R));
  for (int64_t c = 0; c < l.Cg; c++)
    for (int64_t kh = 0; kh < g.KH; kh++)
      for (int64_t kw = 0; kw < g.KW; kw++)
        l.koff[static_cast<size_t>((c * g.KH + kh) * g.KW + kw)] = (c * l.Hp + kh * g.dh) * l.Wp + kw * g.dw;
  return l;
}

// Copies the C planes (H, W) of one sample into pad (C, Hp, Wp) whose borders are already zero
// (short rows: an inline vector loop instead of one memcpy call per row).
LOWBIT_TARGET_AVX512 void padInto(const ConvGeom& g, const Layout& l, const float* xn, float* pad) {
  for (int64_t c = 0; c < g.C; c++) {
    for (int64_t h = 0; h < g.H; h++) {
      const float* src = xn + (c * g.H + h) * g.W;
      float* dst = pad + (c * l.Hp + h + g.ph) * l.Wp + g.pw;
      for (int64_t w = 0; w < g.W; w += 16) {
        const __mmask16 m = tailMask(g.W - w);
        _mm512_mask_storeu_ps(dst + w, m, _mm512_maskz_loadu_ps(m, src + w));
      }
    }
  }
}

// Lays dy (O planes of OH x OW) of one sample out in wide rows: plane o at dst + o * ldy, row oh
// at oh * Wp, columns OW..Wp-1 zero (they meet real input pixels). Short rows: one masked vector
// copy per 16 columns instead of a memcpy and a memset call per row.
LOWBIT_TARGET_AVX512 void wideRowsInto(const ConvGeom& g, const Layout& l, const float* dyn, float* dst, int64_t ldy) {
  for (int64_t o = 0; o < g.O; o++) {
    for (int64_t oh = 0; oh < g.OH; oh++) {
      const float* src = dyn + (o * g.OH + oh) * g.OW;
      float* row = dst + o * ldy + oh * l.Wp;
      const int64_t width = oh + 1 < g.OH ? l.Wp : g.OW;  // the last row ends the plane
      for (int64_t w = 0; w < width; w += 16) {
        const __mmask16 keep = tailMask(width - w), real = tailMask(g.OW - w);
        _mm512_mask_storeu_ps(row + w, keep, _mm512_maskz_loadu_ps(real, src + w));
      }
    }
  }
}

// The start of an R x (16 V) register tile at column j0 of N: the lane masks of its V vectors
// (left = N - j0 columns remain) and zeroed accumulators.
template <int R, int V>
LOWBIT_TARGET_AVX512 __attribute__((always_inline)) inline void startTile(int64_t left, __mmask16 (&m)[V], __m512 (&acc)[R][V]) {
#pragma GCC unroll 4
  for (int v = 0; v < V; v++) m[v] = tailMask(left - 16 * v);
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();
}

// Vector load / store: plain when the whole tile is inside the row (Full), else with the lane mask
// (masked accesses in the hot loops of full tiles cost ~10 % of these kernels' time).
template <bool Full>
LOWBIT_TARGET_AVX512 __attribute__((always_inline)) inline __m512 loadLanes(__mmask16 m, const float* p) {
  if constexpr (Full) return _mm512_loadu_ps(p);
  return _mm512_maskz_loadu_ps(m, p);
}
template <bool Full>
LOWBIT_TARGET_AVX512 __attribute__((always_inline)) inline void storeLanes(float* p, __mmask16 m, __m512 v) {
  if constexpr (Full) return _mm512_storeu_ps(p, v);
  _mm512_mask_storeu_ps(p, m, v);
}

// ---------------------------------------------------------------- forward tiles
// One R x 16V chunk of wideTile at column j0.
template <int R, int V, bool Full>
LOWBIT_TARGET_AVX512 __attribute__((always_inline)) inline void wideChunk(int64_t N, int64_t j0, int64_t K, const float* a,
                                                                        int64_t lda, const float* b, const int64_t* koff,
                                                                        float* c, int64_t ldc) {
  __mmask16 m[V];
  __m512 acc[R][V];
  startTile<R, V>(N - j0, m, acc);
  const float* bj = b + j0;
  for (int64_t k = 0; k < K; k++) {
    const float* bk = bj + koff[k];
    __m512 bv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) bv[v] = loadLanes<Full>(m[v], bk + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) storeLanes<Full>(c + r * ldc + j0 + 16 * v, m[v], acc[r][v]);
}

// c (R, N) with row stride ldc = a (R, K) (row stride lda) . B, B row k = b + koff[k].
template <int R, int V>
LOWBIT_TARGET_AVX512 void wideTile(int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                                   const int64_t* koff, float* c, int64_t ldc) {
  int64_t j0 = 0;
  for (; j0 + 16 * V <= N; j0 += 16 * V) wideChunk<R, V, true>(N, j0, K, a, lda, b, koff, c, ldc);
  if (j0 < N) wideChunk<R, V, false>(N, j0, K, a, lda, b, koff, c, ldc);
}

using WideTileFn = void (*)(int64_t, int64_t, const float*, int64_t, const float*, const int64_t*, float*, int64_t);
constexpr int kMaxTileRows = 8;
#define LOWBIT_WIDE_ROW(R) {wideTile<R, 1>, wideTile<R, 2>, wideTile<R, 3>, wideTile<R, 4>}
constexpr WideTileFn kWideTiles[kMaxTileRows][4] = {
    LOWBIT_WIDE_ROW(1), LOWBIT_WIDE_ROW(2), LOWBIT_WIDE_ROW(3), LOWBIT_WIDE_ROW(4),
    LOWBIT_WIDE_ROW(5), LOWBIT_WIDE_ROW(6), LOWBIT_WIDE_ROW(7), LOWBIT_WIDE_ROW(8),
};
#undef LOWBIT_WIDE_ROW

// c (M, N) = a (M, K) . B: row blocks of at most 8, each with the vector count V that minimises
// the estimated cycles per chunk of 16V columns, K * max(R*V FMAs, R + V loads) / 2, plus the
// chunk's fixed cost (R*V stores and set-up), times the number of chunks.
void wideGemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, const int64_t* koff,
              float* c, int64_t ldc) {
  const int64_t blocks = (M + kMaxTileRows - 1) / kMaxTileRows;
  for (int64_t blk = 0; blk < blocks; blk++) {
    const int64_t i0 = M * blk / blocks, i1 = M * (blk + 1) / blocks;
    const int rows = static_cast<int>(i1 - i0);
    int bestV = 1;
    int64_t bestCost = std::numeric_limits<int64_t>::max();
    for (int v = 1; v <= 4; v++) {
      const int64_t chunks = (N + 16 * v - 1) / (16 * v);
      const int64_t cost = chunks * (K * std::max<int64_t>(rows * v, rows + v) + 4 * rows * v + 20);
      if (cost < bestCost) bestCost = cost, bestV = v;
    }
    kWideTiles[rows - 1][bestV - 1](N, K, a + i0 * lda, lda, b, koff, c + i0 * ldc, ldc);
  }
}

// max(a, b) that keeps a NaN of either operand (as torch's max pooling); maxps alone returns b
// when either is NaN, so a NaN in a is put back.
LOWBIT_TARGET_AVX512 inline __m512 nanMax(__m512 a, __m512 b) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), _mm512_max_ps(a, b), a);
}
// ReLU that keeps NaN: maxps(0, v) returns v when v is NaN.
LOWBIT_TARGET_AVX512 inline __m512 reluKeepNan(__m512 v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }
// The epilogue's activation: ReLU when `relu`, then min(v, hi) (hi = +inf: none); NaN stays NaN
// (minps returns its second operand when either is NaN).
LOWBIT_TARGET_AVX512 inline __m512 actKeepNan(__m512 v, bool relu, float hi) {
  if (relu) v = reluKeepNan(v);
  return _mm512_min_ps(_mm512_set1_ps(hi), v);
}

// ---------------------------------------------------------------- pooled row pairs
// For 2x2 / stride 2 max pooling of rows of at most 32 pixels: one tile computes output rows
// 2ph and 2ph + 1 (VR vectors each) for R channels and pools them in registers -- the vertical
// max of the two rows, then the max of even and odd columns -- adds the bias, applies ReLU and
// stores the pooled row; no wide buffer, no separate epilogue pass.
template <int R, int VR>
LOWBIT_TARGET_AVX512 void pooledPairTile(int64_t K, const float* a, int64_t lda, const float* row0, int64_t Wp,
                                         const int64_t* koff, int64_t OW, const float* bias, bool relu, float hi, int64_t PW,
                                         float* y, int64_t ldy) {
  __mmask16 m[VR];
#pragma GCC unroll 2
  for (int v = 0; v < VR; v++) m[v] = tailMask(OW - 16 * v);
  __m512 acc[R][2 * VR];
#pragma GCC unroll 12
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < 2 * VR; v++) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    const float* p = row0 + koff[k];
    __m512 bv[2 * VR];
#pragma GCC unroll 2
    for (int v = 0; v < VR; v++) {
      bv[v] = _mm512_maskz_loadu_ps(m[v], p + 16 * v);
      bv[VR + v] = _mm512_maskz_loadu_ps(m[v], p + Wp + 16 * v);
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < 2 * VR; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  const __m512i evenIdx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i oddIdx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __mmask16 out = tailMask(PW);
#pragma GCC unroll 12
  for (int r = 0; r < R; r++) {
    const __m512 lo = nanMax(acc[r][0], acc[r][VR]);
    const __m512 up = VR == 2 ? nanMax(acc[r][1], acc[r][VR + 1]) : lo;
    __m512 v = nanMax(_mm512_permutex2var_ps(lo, evenIdx, up), _mm512_permutex2var_ps(lo, oddIdx, up));
    v = _mm512_add_ps(v, _mm512_set1_ps(bias[r]));
    v = actKeepNan(v, relu, hi);
    _mm512_mask_storeu_ps(y + r * ldy, out, v);
  }
}

using PooledPairFn = void (*)(int64_t, const float*, int64_t, const float*, int64_t, const int64_t*, int64_t,
                              const float*, bool, float, int64_t, float*, int64_t);
constexpr int kPairRows = 6;
constexpr PooledPairFn kPooledPairs[2][kPairRows] = {
    {pooledPairTile<1, 1>, pooledPairTile<2, 1>, pooledPairTile<3, 1>, pooledPairTile<4, 1>, pooledPairTile<5, 1>, pooledPairTile<6, 1>},
    {pooledPairTile<1, 2>, pooledPairTile<2, 2>, pooledPairTile<3, 2>, pooledPairTile<4, 2>, pooledPairTile<5, 2>, pooledPairTile<6, 2>},
};

// ---------------------------------------------------------------- epilogues
LOWBIT_TARGET_AVX512 void epilogueNoPool(int64_t OH, int64_t OW, const float* src, int64_t ld, const float* scale,
                                         float bias, bool relu, float hi, float* dst) {
  const __m512 b = _mm512_set1_ps(bias);
  const __m512 sc = _mm512_set1_ps(scale != nullptr ? *scale : 1.f);
  for (int64_t oh = 0; oh < OH; oh++) {
    const float* in = src + oh * ld;
    float* out = dst + oh * OW;
    for (int64_t ow = 0; ow < OW; ow += 16) {
      const __mmask16 m = tailMask(OW - ow);
      __m512 v = _mm512_maskz_loadu_ps(m, in + ow);
      // An explicitly rounded product: GCC would otherwise contract this multiply and the add
      // below into one FMA, and the result would differ from BatchNorm's mul then add by an ulp.
      if (scale != nullptr) v = _mm512_mul_round_ps(v, sc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm512_add_ps(v, b);
      v = actKeepNan(v, relu, hi);
      _mm512_mask_storeu_ps(out + ow, m, v);
    }
  }
}

// 2x2 windows, stride 2: max of the four, then bias and ReLU (both monotone, so they commute
// with the max exactly).
LOWBIT_TARGET_AVX512 void epiloguePool2x2(int64_t PH, int64_t PW, const float* src, int64_t ld, float bias, bool relu, float hi,
                                          float* dst) {
  const __m512i evenIdx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i oddIdx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512 b = _mm512_set1_ps(bias);
  for (int64_t ph = 0; ph < PH; ph++) {
    const float* r0 = src + 2 * ph * ld;
    const float* r1 = r0 + ld;
    float* out = dst + ph * PW;
    for (int64_t pw = 0; pw < PW; pw += 16) {
      const int64_t n = std::min<int64_t>(16, PW - pw);
      const __mmask16 m0 = tailMask(2 * n), m1 = tailMask(2 * n - 16);
      const __m512 a0 = _mm512_maskz_loadu_ps(m0, r0 + 2 * pw), a1 = _mm512_maskz_loadu_ps(m1, r0 + 2 * pw + 16);
      const __m512 c0 = _mm512_maskz_loadu_ps(m0, r1 + 2 * pw), c1 = _mm512_maskz_loadu_ps(m1, r1 + 2 * pw + 16);
      const __m512 top = nanMax(_mm512_permutex2var_ps(a0, evenIdx, a1), _mm512_permutex2var_ps(a0, oddIdx, a1));
      const __m512 bot = nanMax(_mm512_permutex2var_ps(c0, evenIdx, c1), _mm512_permutex2var_ps(c0, oddIdx, c1));
      __m512 v = _mm512_add_ps(nanMax(top, bot), b);
      v = actKeepNan(v, relu, hi);
      _mm512_mask_storeu_ps(out + pw, tailMask(n), v);
    }
  }
}

float applyAct(float v, bool relu, float hi) {
  if (relu && !(v > 0.f)) v = v != v ? v : 0.f;
  return v > hi ? hi : v;
}

}  // namespace

void convEpiloguePlane(const ConvEpilogue& e, int64_t OH, int64_t OW, const float* src, int64_t ld, int64_t oc,
                       float* dst) {
  const bool avx512 = activeIsa() == Isa::Avx512;
  const float bias = e.bias != nullptr ? e.bias[oc] : 0.f;
  const float* scale = e.scale != nullptr ? e.scale + oc : nullptr;
  // Rounded to float before the bias is added, as separate multiply and add ops round it (the
  // volatile store keeps GCC from contracting the product and the sum into an FMA).
  const auto scaled = [scale](float v) {
    if (scale == nullptr) return v;
    volatile float p = v * *scale;
    return static_cast<float>(p);
  };
  if (e.pkh == 0) {
    // A contiguous plane (ld == OW) is one row of OH * OW values: no half-empty vectors per row.
    if (avx512 && ld == OW) return epilogueNoPool(1, OH * OW, src, OH * OW, scale, bias, e.relu, e.hi, dst);
    if (avx512) return epilogueNoPool(OH, OW, src, ld, scale, bias, e.relu, e.hi, dst);
    for (int64_t oh = 0; oh < OH; oh++)
      for (int64_t ow = 0; ow < OW; ow++) dst[oh * OW + ow] = applyAct(scaled(src[oh * ld + ow]) + bias, e.relu, e.hi);
    return;
  }
  const int64_t PH = (OH - e.pkh) / e.psh + 1, PW = (OW - e.pkw) / e.psw + 1;
  if (avx512 && scale == nullptr && e.pkh == 2 && e.pkw == 2 && e.psh == 2 && e.psw == 2) {
    return epiloguePool2x2(PH, PW, src, ld, bias, e.relu, e.hi, dst);
  }
  // The bias, ReLU and clamp are monotone and commute with the max; a scale (maybe negative) does
  // not, so it is applied to every window element.
  for (int64_t ph = 0; ph < PH; ph++) {
    for (int64_t pw = 0; pw < PW; pw++) {
      float best = -std::numeric_limits<float>::infinity();
      bool first = true;
      for (int64_t kh = 0; kh < e.pkh; kh++)
        for (int64_t kw = 0; kw < e.pkw; kw++) {
          const float v = scaled(src[(ph * e.psh + kh) * ld + pw * e.psw + kw]);
          if (first || v > best || v != v) best = v, first = false;
        }
      dst[ph * PW + pw] = applyAct(best + bias, e.relu, e.hi);
    }
  }
}

// ---------------------------------------------------------------- output channels in the lanes
// For many output channels per group (>= 12) the lanes hold 16 output channels of one pixel:
// acc[j] (16 channels of pixel j of a row segment) += broadcast(input tap of pixel j) * wt[k],
// with wt (R, O16) the weights transposed and zero-padded to 16-channel blocks. No lane is wasted
// on junk columns; the epilogue pools pixel vectors and scatters channels into NCHW.
namespace {

constexpr int kMaxPixels = 14;

template <int T>
LOWBIT_TARGET_AVX512 void channelTile(int64_t K, const float* wt, int64_t ldw, const float* in, const int64_t* koff,
                                      float* out) {
  __m512 acc[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; j++) acc[j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    const __m512 wv = _mm512_loadu_ps(wt + k * ldw);
    const float* src = in + koff[k];
#pragma GCC unroll 16
    for (int j = 0; j < T; j++) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(src[j]), wv, acc[j]);
  }
#pragma GCC unroll 16
  for (int j = 0; j < T; j++) _mm512_storeu_ps(out + j * 16, acc[j]);
}

using ChannelTileFn = void (*)(int64_t, const float*, int64_t, const float*, const int64_t*, float*);
constexpr ChannelTileFn kChannelTiles[kMaxPixels] = {
    channelTile<1>, channelTile<2>, channelTile<3>, channelTile<4>,  channelTile<5>,  channelTile<6>,  channelTile<7>,
    channelTile<8>, channelTile<9>, channelTile<10>, channelTile<11>, channelTile<12>, channelTile<13>, channelTile<14>,
};

// As channelTile for kernels KW wide (3 or 5, no dilation along W): per input row of a tap row
// (c, kh), each input pixel is broadcast once and multiplied into the KW output pixels that read
// it, with the row's KW weight vectors held in registers -- one broadcast per KW FMAs instead of
// one per FMA. rowOff[q] is the offset of tap row q = (c, kh); wt rows are (q * KW + kw).
template <int T, int KW>
LOWBIT_TARGET_AVX512 void channelRowTile(int64_t rows, const float* wt, int64_t ldw, const float* in,
                                         const int64_t* rowOff, float* out) {
  __m512 acc[T];
#pragma GCC unroll 16
  for (int j = 0; j < T; j++) acc[j] = _mm512_setzero_ps();
  for (int64_t q = 0; q < rows; q++) {
    const float* src = in + rowOff[q];
    const float* wq = wt + q * KW * ldw;
    __m512 wv[KW];
#pragma GCC unroll 8
    for (int kw = 0; kw < KW; kw++) wv[kw] = _mm512_loadu_ps(wq + kw * ldw);
#pragma GCC unroll 24
    for (int i = 0; i < T + KW - 1; i++) {
      const __m512 bv = _mm512_set1_ps(src[i]);
#pragma GCC unroll 8
      for (int kw = 0; kw < KW; kw++) {
        const int j = i - kw;
        if (j >= 0 && j < T) acc[j] = _mm512_fmadd_ps(bv, wv[kw], acc[j]);
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < T; j++) _mm512_storeu_ps(out + j * 16, acc[j]);
}

using ChannelRowTileFn = void (*)(int64_t, const float*, int64_t, const float*, const int64_t*, float*);
#define LOWBIT_ROW_TILES(KW)                                                                                        \
  {channelRowTile<1, KW>, channelRowTile<2, KW>, channelRowTile<3, KW>, channelRowTile<4, KW>,                    \
   channelRowTile<5, KW>, channelRowTile<6, KW>, channelRowTile<7, KW>, channelRowTile<8, KW>,                    \
   channelRowTile<9, KW>, channelRowTile<10, KW>, channelRowTile<11, KW>, channelRowTile<12, KW>,                 \
   channelRowTile<13, KW>, channelRowTile<14, KW>}
constexpr ChannelRowTileFn kChannelRowTiles3[kMaxPixels] = LOWBIT_ROW_TILES(3);
constexpr ChannelRowTileFn kChannelRowTiles5[kMaxPixels] = LOWBIT_ROW_TILES(5);
#undef LOWBIT_ROW_TILES

// Pools (or just copies) the pixel-major block px (OH*OW, 16) of channels [o0, o0 + lanes) into
// y planes (PH, PW) at yBase + o * PH * PW, with bias and ReLU.
LOWBIT_TARGET_AVX512 void channelEpilogue(const ConvEpilogue& e, int64_t OH, int64_t OW, const float* px,
                                          const float* bias16, int lanes, float* yBase) {
  const bool pool = e.pkh != 0;
  const int64_t PH = pool ? (OH - e.pkh) / e.psh + 1 : OH, PW = pool ? (OW - e.pkw) / e.psw + 1 : OW;
  const __mmask16 m = tailMask(lanes);
  const __m512i planes = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(static_cast<int>(PH * PW)));
  const __m512 b = _mm512_loadu_ps(bias16);
  for (int64_t ph = 0; ph < PH; ph++) {
    for (int64_t pw = 0; pw < PW; pw++) {
      __m512 v;
      if (pool) {
        v = _mm512_loadu_ps(px + ((ph * e.psh) * OW + pw * e.psw) * 16);
        for (int64_t kh = 0; kh < e.pkh; kh++)
          for (int64_t kw = 0; kw < e.pkw; kw++)
            v = nanMax(v, _mm512_loadu_ps(px + ((ph * e.psh + kh) * OW + pw * e.psw + kw) * 16));
      } else {
        v = _mm512_loadu_ps(px + (ph * OW + pw) * 16);
      }
      v = _mm512_add_ps(v, b);
      v = actKeepNan(v, e.relu, e.hi);
      _mm512_mask_i32scatter_ps(yBase + ph * PW + pw, m, planes, v, 4);
    }
  }
}

thread_local ScratchBuffer tPixels;

}  // namespace

// Lane use of the channel layout vs the wide layout for g.
static bool preferChannels(const ConvGeom& g, const Layout& l) {
  if (l.Og < 12 || g.OW > 4 * kMaxPixels) return false;
  const auto lanes = [](int64_t n) { return static_cast<double>((n + 15) / 16 * 16); };
  const double channelUse = static_cast<double>(l.Og) / lanes(l.Og);
  const double wideUse = static_cast<double>(g.OH * g.OW) / lanes(l.Nw);
  return channelUse >= wideUse;
}

static void convChannelsForward(const ConvGeom& g, const Layout& l, const float* x, const float* w,
                                const ConvEpilogue& e, float* y) {
  const bool padded = g.ph != 0 || g.pw != 0;
  const int64_t O16 = (l.Og + 15) / 16 * 16;
  const int64_t PH = e.pkh == 0 ? g.OH : (g.OH - e.pkh) / e.psh + 1;
  const int64_t PW = e.pkh == 0 ? g.OW : (g.OW - e.pkw) / e.psw + 1;
  // wt[gr] (R, O16) = w_g transposed, zero past Og; bias16 per group, zero past Og.
  std::vector<float> wt(static_cast<size_t>(g.groups * l.R * O16), 0.f), bias16(static_cast<size_t>(g.groups * O16), 0.f);
  for (int64_t gr = 0; gr < g.groups; gr++)
    for (int64_t o = 0; o < l.Og; o++) {
      for (int64_t k = 0; k < l.R; k++) wt[static_cast<size_t>((gr * l.R + k) * O16 + o)] = w[(gr * l.Og + o) * l.R + k];
      if (e.bias != nullptr) bias16[static_cast<size_t>(gr * O16 + o)] = e.bias[gr * l.Og + o];
    }
  // Row segments of at most kMaxPixels pixels, split evenly.
  const int64_t segments = (g.OW + kMaxPixels - 1) / kMaxPixels;
  // KW 3 or 5 without W dilation: the broadcast-reuse tiles over tap rows (c, kh).
  const ChannelRowTileFn* rowTiles = g.dw != 1 ? nullptr : g.KW == 3 ? kChannelRowTiles3 : g.KW == 5 ? kChannelRowTiles5 : nullptr;
  std::vector<int64_t> rowOff(static_cast<size_t>(l.Cg * g.KH));
  for (int64_t c = 0; c < l.Cg; c++)
    for (int64_t kh = 0; kh < g.KH; kh++) rowOff[static_cast<size_t>(c * g.KH + kh)] = (c * l.Hp + kh * g.dh) * l.Wp;
  const double flops = 2.0 * static_cast<double>(g.O * l.R * g.OH * g.OW) * static_cast<double>(g.N);
  parallelFor(g.N, flops, [&](int64_t n0, int64_t n1) {
    float* pad = padded ? tPadded.get(static_cast<size_t>(g.C * l.plane)) : nullptr;
    if (padded) std::memset(pad, 0, static_cast<size_t>(g.C * l.plane) * sizeof(float));
    float* px = tPixels.get(static_cast<size_t>(g.OH * g.OW * 16));
    for (int64_t n = n0; n < n1; n++) {
      const float* xn = x + n * g.C * g.H * g.W;
      if (padded) padInto(g, l, xn, pad);
      for (int64_t gr = 0; gr < g.groups; gr++) {
        const float* src = padded ? pad + gr * l.Cg * l.plane : xn + gr * l.Cg * g.H * g.W;
        for (int64_t o0 = 0; o0 < l.Og; o0 += 16) {
          const float* wb = wt.data() + gr * l.R * O16 + o0;
          for (int64_t oh = 0; oh < g.OH; oh++) {
            for (int64_t s = 0; s < segments; s++) {
              const int64_t w0 = g.OW * s / segments, w1 = g.OW * (s + 1) / segments;
              if (rowTiles != nullptr) {
                rowTiles[w1 - w0 - 1](l.Cg * g.KH, wb, O16, src + oh * l.Wp + w0, rowOff.data(), px + (oh * g.OW + w0) * 16);
              } else {
                kChannelTiles[w1 - w0 - 1](l.R, wb, O16, src + oh * l.Wp + w0, l.koff.data(), px + (oh * g.OW + w0) * 16);
              }
            }
          }
          channelEpilogue(e, g.OH, g.OW, px, bias16.data() + gr * O16 + o0, static_cast<int>(std::min<int64_t>(16, l.Og - o0)),
                          y + (n * g.O + gr * l.Og + o0) * PH * PW);
        }
      }
    }
  });
}

bool convWideSupported(const ConvGeom& g) {
  // Every row block re-reads the sample's padded input: keep it within L2 (512 KB per group),
  // else im2col + the packed SGEMM does better.
  const int64_t padded = (g.C / g.groups) * (g.H + 2 * g.ph) * (g.W + 2 * g.pw);
  return activeIsa() == Isa::Avx512 && g.sh == 1 && g.sw == 1 && g.O / g.groups <= 64 && padded <= (int64_t{1} << 17);
}

void convWideForward(const ConvGeom& g, const float* x, const float* w, const ConvEpilogue& e, float* y) {
  const Layout l = layoutOf(g);
  if (preferChannels(g, l)) return convChannelsForward(g, l, x, w, e, y);
  const bool padded = g.ph != 0 || g.pw != 0;
  const int64_t PH = e.pkh == 0 ? g.OH : (g.OH - e.pkh) / e.psh + 1;
  const int64_t PW = e.pkh == 0 ? g.OW : (g.OW - e.pkw) / e.psw + 1;
  const int64_t ldw = g.OH * l.Wp;
  // Without an epilogue, rows of OW pixels can go straight into y when they fill the vectors at
  // least as well as the wide rows do.
  const auto lanes = [](int64_t n) { return (n + 15) / 16 * 16; };
  const bool rowwise = e.bias == nullptr && !e.relu && !(e.hi < kNoClamp) && e.pkh == 0 &&
                       static_cast<double>(g.OW) / static_cast<double>(lanes(g.OW)) >=
                           static_cast<double>(g.OH * g.OW) / static_cast<double>(lanes(l.Nw));
  // 2x2 / stride 2 pooling of rows up to 32 pixels: pooled in registers (pooledPairTile).
  const bool pairs = e.pkh == 2 && e.pkw == 2 && e.psh == 2 && e.psw == 2 && g.OW <= 32 && g.OH >= 2;
  const std::vector<float> zeros(static_cast<size_t>(kPairRows), 0.f);
  const double flops = 2.0 * static_cast<double>(g.O * l.R * g.OH * g.OW) * static_cast<double>(g.N);
  parallelFor(g.N, flops, [&](int64_t n0, int64_t n1) {
    float* pad = padded ? tPadded.get(static_cast<size_t>(g.C * l.plane)) : nullptr;
    if (padded) std::memset(pad, 0, static_cast<size_t>(g.C * l.plane) * sizeof(float));
    float* wide = tWide.get(static_cast<size_t>(l.Og * ldw));
    for (int64_t n = n0; n < n1; n++) {
      const float* xn = x + n * g.C * g.H * g.W;
      if (padded) padInto(g, l, xn, pad);
      for (int64_t gr = 0; gr < g.groups; gr++) {
        const float* src = padded ? pad + gr * l.Cg * l.plane : xn + gr * l.Cg * g.H * g.W;
        if (pairs) {  // 2x2 pooling in registers, straight into y
          const int64_t blocks = (l.Og + kPairRows - 1) / kPairRows;
          for (int64_t blk = 0; blk < blocks; blk++) {
            const int64_t o0 = l.Og * blk / blocks, o1 = l.Og * (blk + 1) / blocks;
            const int64_t oc = gr * l.Og + o0;
            const float* bias = e.bias != nullptr ? e.bias + oc : zeros.data();
            for (int64_t ph = 0; ph < PH; ph++) {
              kPooledPairs[g.OW > 16 ? 1 : 0][o1 - o0 - 1](l.R, w + oc * l.R, l.R, src + 2 * ph * l.Wp, l.Wp, l.koff.data(), g.OW,
                                                            bias, e.relu, e.hi, PW, y + (n * g.O + oc) * PH * PW + ph * PW, PH * PW);
            }
          }
          continue;
        }
        if (rowwise) {  // one GEMM per output row, straight into y
          float* yg = y + (n * g.O + gr * l.Og) * g.OH * g.OW;
          for (int64_t oh = 0; oh < g.OH; oh++) {
            wideGemm(l.Og, g.OW, l.R, w + gr * l.Og * l.R, l.R, src + oh * l.Wp, l.koff.data(), yg + oh * g.OW, g.OH * g.OW);
          }
          continue;
        }
        wideGemm(l.Og, l.Nw, l.R, w + gr * l.Og * l.R, l.R, src, l.koff.data(), wide, ldw);
        for (int64_t o = 0; o < l.Og; o++) {
          const int64_t oc = gr * l.Og + o;
          convEpiloguePlane(e, g.OH, g.OW, wide + o * ldw, l.Wp, oc,
                            y + (n * g.O + oc) * PH * PW);
        }
      }
    }
  });
}

// ---------------------------------------------------------------- backward in w
namespace {

// acc (RI x RJ x 16 lanes) += sum over wide pixels p < N of a_i[p] * (b + koff[j])[p], for each
// of `samples` samples (a advances by aStride, b by bStride per sample).
template <int RI, int RJ>
LOWBIT_TARGET_AVX512 void dotTile(int64_t samples, int64_t N, const float* a, int64_t lda, int64_t aStride,
                                  const float* b, int64_t bStride, const int64_t* koff, float* lanes) {
  __m512 acc[RI][RJ];
#pragma GCC unroll 8
  for (int i = 0; i < RI; i++)
#pragma GCC unroll 6
    for (int j = 0; j < RJ; j++) acc[i][j] = _mm512_loadu_ps(lanes + (i * RJ + j) * 16);
  for (int64_t s = 0; s < samples; s++, a += aStride, b += bStride) {
    const float* bj[RJ];
#pragma GCC unroll 6
    for (int j = 0; j < RJ; j++) bj[j] = b + koff[j];
    int64_t p = 0;
    for (; p + 16 <= N; p += 16) {
      __m512 bv[RJ];
#pragma GCC unroll 6
      for (int j = 0; j < RJ; j++) bv[j] = _mm512_loadu_ps(bj[j] + p);
#pragma GCC unroll 8
      for (int i = 0; i < RI; i++) {
        const __m512 av = _mm512_loadu_ps(a + i * lda + p);
#pragma GCC unroll 6
        for (int j = 0; j < RJ; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
      }
    }
    if (p < N) {
      const __mmask16 m = tailMask(N - p);
      __m512 bv[RJ];
#pragma GCC unroll 6
      for (int j = 0; j < RJ; j++) bv[j] = _mm512_maskz_loadu_ps(m, bj[j] + p);
#pragma GCC unroll 8
      for (int i = 0; i < RI; i++) {
        const __m512 av = _mm512_maskz_loadu_ps(m, a + i * lda + p);
#pragma GCC unroll 6
        for (int j = 0; j < RJ; j++) acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < RI; i++)
#pragma GCC unroll 6
    for (int j = 0; j < RJ; j++) _mm512_storeu_ps(lanes + (i * RJ + j) * 16, acc[i][j]);
}

using DotTileFn = void (*)(int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, const int64_t*,
                           float*);
constexpr int kDotRows = 6, kDotCols = 6;
#define LOWBIT_DOT_ROW(I) {dotTile<I, 1>, dotTile<I, 2>, dotTile<I, 3>, dotTile<I, 4>, dotTile<I, 5>, dotTile<I, 6>}
constexpr DotTileFn kDotTiles[kDotRows][kDotCols] = {LOWBIT_DOT_ROW(1), LOWBIT_DOT_ROW(2), LOWBIT_DOT_ROW(3),
                                                     LOWBIT_DOT_ROW(4), LOWBIT_DOT_ROW(5), LOWBIT_DOT_ROW(6)};
#undef LOWBIT_DOT_ROW

// Tile shape for Og output channels: all of them when Og <= 6 (then 24 / Og taps), else 4 x 6.
void dotTileShape(int64_t Og, int64_t* rows, int64_t* cols) {
  *rows = Og <= kDotRows ? Og : 4;
  *cols = std::min<int64_t>(kDotCols, 24 / *rows);
}

LOWBIT_TARGET_AVX512 float laneSum(const float* lanes) { return _mm512_reduce_add_ps(_mm512_loadu_ps(lanes)); }

// Per-thread staging of a chunk of samples: padded inputs and wide dy.
thread_local ScratchBuffer tStageX, tStageDy, tTileLanes;

}  // namespace

void convWideBackwardWeight(const ConvGeom& g, const float* x, const float* dy, float* dw) {
  const Layout l = layoutOf(g);
  const bool padded = g.ph != 0 || g.pw != 0;
  const int64_t weightSize = g.O * l.R;
  const int64_t xSample = padded ? g.C * l.plane : g.C * g.H * g.W;
  // Wide dy rows of one sample, each padded to whole vectors so that every load of dy is aligned.
  const int64_t ldy = (l.Nw + 15) / 16 * 16;
  const int64_t dySample = g.O * ldy;
  // Samples staged at a time: what stays in L1 (~32 KB) while every tile sweeps it.
  const int64_t chunk = std::max<int64_t>(1, (int64_t{8} << 10) / (dySample + xSample));
  const double work = 2.0 * static_cast<double>(weightSize * g.OH * g.OW) * static_cast<double>(g.N);
  const int tasks = static_cast<int>(std::min<int64_t>(
      g.N, work < kInlineWork || poolInsideJob() ? 1 : poolThreads()));
  std::vector<float> partials(static_cast<size_t>(std::max(0, tasks - 1)) * static_cast<size_t>(weightSize));
  struct Ctx {
    const ConvGeom* g;
    const Layout* l;
    const float *x, *dy;
    float *dw, *partials;
    bool padded;
    int64_t weightSize, xSample, dySample, ldy, chunk;
  } ctx{&g, &l, x, dy, dw, partials.data(), padded, weightSize, xSample, dySample, ldy, chunk};
  auto task = [](void* raw, int t, int nt) {
    const Ctx& c = *static_cast<Ctx*>(raw);
    const ConvGeom& g = *c.g;
    const Layout& l = *c.l;
    float* out = t == 0 ? c.dw : c.partials + (t - 1) * c.weightSize;
    int64_t tr, tc;
    dotTileShape(l.Og, &tr, &tc);
    const int64_t n0 = g.N * t / nt, n1 = g.N * (t + 1) / nt;
    // lanes: (O, R, 16) partial sums in tile order, zeroed once.
    float* lanes = tTileLanes.get(static_cast<size_t>(c.weightSize * 16));
    std::memset(lanes, 0, static_cast<size_t>(c.weightSize * 16) * sizeof(float));
    const int64_t chunk = std::min(c.chunk, std::max<int64_t>(1, n1 - n0));
    float* stageX = c.padded ? tStageX.get(static_cast<size_t>(chunk * c.xSample)) : nullptr;
    if (c.padded) std::memset(stageX, 0, static_cast<size_t>(chunk * c.xSample) * sizeof(float));
    float* stageDy = tStageDy.get(static_cast<size_t>(chunk * c.dySample + 16));
    stageDy += cacheLinePad(stageDy) / sizeof(float);
    for (int64_t s0 = n0; s0 < n1; s0 += chunk) {
      const int64_t count = std::min(chunk, n1 - s0);
      for (int64_t s = 0; s < count; s++) {
        if (c.padded) padInto(g, l, c.x + (s0 + s) * g.C * g.H * g.W, stageX + s * c.xSample);
        wideRowsInto(g, l, c.dy + (s0 + s) * g.O * g.OH * g.OW, stageDy + s * c.dySample, c.ldy);
      }
      const float* xBase = c.padded ? stageX : c.x + s0 * g.C * g.H * g.W;
      // Sweep the tiles over sub-chunks of samples whose staged data stays in L1 (~32 KB).
      const int64_t perSample = (c.dySample + c.xSample) * static_cast<int64_t>(sizeof(float));
      const int64_t sub = std::max<int64_t>(1, (int64_t{32} << 10) / perSample);
      for (int64_t s1 = 0; s1 < count; s1 += sub) {
        const int64_t subCount = std::min(sub, count - s1);
        for (int64_t gr = 0; gr < g.groups; gr++) {
          for (int64_t i0 = 0; i0 < l.Og; i0 += tr) {
            const int ri = static_cast<int>(std::min<int64_t>(tr, l.Og - i0));
            for (int64_t j0 = 0; j0 < l.R; j0 += tc) {
              const int rj = static_cast<int>(std::min<int64_t>(tc, l.R - j0));
              float* tileLanes = lanes + ((gr * l.Og + i0) * l.R + j0 * ri) * 16;
              kDotTiles[ri - 1][rj - 1](subCount, l.Nw, stageDy + s1 * c.dySample + (gr * l.Og + i0) * c.ldy, c.ldy,
                                        c.dySample, xBase + s1 * c.xSample + gr * l.Cg * (c.padded ? l.plane : g.H * g.W),
                                        c.xSample, l.koff.data() + j0, tileLanes);
            }
          }
        }
      }
    }
    // Reduce: the tile (i0, j0) of ri x rj lanes sits at ((gr*Og + i0) * R + j0 * ri) * 16.
    for (int64_t gr = 0; gr < g.groups; gr++) {
      for (int64_t i0 = 0; i0 < l.Og; i0 += tr) {
        const int64_t ri = std::min<int64_t>(tr, l.Og - i0);
        for (int64_t j0 = 0; j0 < l.R; j0 += tc) {
          const int64_t rj = std::min<int64_t>(tc, l.R - j0);
          const float* tileLanes = lanes + ((gr * l.Og + i0) * l.R + j0 * ri) * 16;
          for (int64_t i = 0; i < ri; i++)
            for (int64_t j = 0; j < rj; j++) out[(gr * l.Og + i0 + i) * l.R + j0 + j] = laneSum(tileLanes + (i * rj + j) * 16);
        }
      }
    }
  };
  if (tasks <= 1) {
    task(&ctx, 0, 1);
    return;
  }
  poolRun(tasks, task, &ctx);
  for (int t = 1; t < tasks; t++) {
    const float* part = partials.data() + static_cast<size_t>(t - 1) * static_cast<size_t>(weightSize);
    for (int64_t i = 0; i < weightSize; i++) dw[i] += part[i];
  }
}

// ---------------------------------------------------------------- backward in x
namespace {

// For taps k0..k0+R-1 (a = w + k0, a[r + o * lda] = w[o][k0 + r]) and wide pixels of dy (rows of
// Og, row stride ldy): dcol (R, N) = a^T . dy, added straight from registers into
// dst + koff[r] + p (the col2im scatter, on contiguous vectors).
template <int R, int V, bool Full>
LOWBIT_TARGET_AVX512 __attribute__((always_inline)) inline void scatterChunk(int64_t N, int64_t j0, int64_t Og, const float* a,
                                                                           int64_t lda, const float* dyw, int64_t ldy,
                                                                           const int64_t* koff, float* dst) {
  __mmask16 m[V];
  __m512 acc[R][V];
  startTile<R, V>(N - j0, m, acc);
  for (int64_t o = 0; o < Og; o++) {
    const float* row = dyw + o * ldy + j0;
    __m512 bv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) bv[v] = loadLanes<Full>(m[v], row + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const __m512 av = _mm512_set1_ps(a[r + o * lda]);
#pragma GCC unroll 4
      for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    float* d = dst + koff[r] + j0;
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) storeLanes<Full>(d + 16 * v, m[v], _mm512_add_ps(loadLanes<Full>(m[v], d + 16 * v), acc[r][v]));
  }
}

template <int R, int V>
LOWBIT_TARGET_AVX512 void scatterTile(int64_t N, int64_t Og, const float* a, int64_t lda, const float* dyw, int64_t ldy,
                                      const int64_t* koff, float* dst) {
  int64_t j0 = 0;
  for (; j0 + 16 * V <= N; j0 += 16 * V) scatterChunk<R, V, true>(N, j0, Og, a, lda, dyw, ldy, koff, dst);
  if (j0 < N) scatterChunk<R, V, false>(N, j0, Og, a, lda, dyw, ldy, koff, dst);
}

using ScatterTileFn = void (*)(int64_t, int64_t, const float*, int64_t, const float*, int64_t, const int64_t*, float*);
#define LOWBIT_SCATTER_ROW(R) {scatterTile<R, 1>, scatterTile<R, 2>, scatterTile<R, 3>, scatterTile<R, 4>}
constexpr ScatterTileFn kScatterTiles[kMaxTileRows][4] = {
    LOWBIT_SCATTER_ROW(1), LOWBIT_SCATTER_ROW(2), LOWBIT_SCATTER_ROW(3), LOWBIT_SCATTER_ROW(4),
    LOWBIT_SCATTER_ROW(5), LOWBIT_SCATTER_ROW(6), LOWBIT_SCATTER_ROW(7), LOWBIT_SCATTER_ROW(8),
};
#undef LOWBIT_SCATTER_ROW

int bestVectors(int64_t rows, int64_t N) {
  int bestV = 1;
  int64_t bestCost = std::numeric_limits<int64_t>::max();
  for (int v = 1; v <= 4; v++) {
    const int64_t chunks = (N + 16 * v - 1) / (16 * v);
    const int64_t cost = chunks * std::max<int64_t>(rows * v, rows + v);
    if (cost < bestCost) bestCost = cost, bestV = v;
  }
  return bestV;
}

thread_local ScratchBuffer tDxPadded;

}  // namespace

void convWideBackwardInput(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  const Layout l = layoutOf(g);
  const bool padded = g.ph != 0 || g.pw != 0;
  const double flops = 2.0 * static_cast<double>(g.O * l.R * g.OH * g.OW) * static_cast<double>(g.N);
  // A tile's rows add their results into dx at the offsets of their taps. Taps of one channel
  // (c, kh, kw order) are a pixel or a row apart, so each read-modify-write overlaps the vector
  // stored just before and waits for it (no store forwarding on a partial overlap). With enough
  // channels, tiles instead take one tap over several channels -- rows in different planes --
  // with the weights and offsets reordered to (kh, kw, c).
  const int64_t taps = g.KH * g.KW;
  const bool tapMajor = l.Cg >= 4;
  std::vector<float> wTap;
  std::vector<int64_t> koffTap;
  if (tapMajor) {
    wTap.resize(static_cast<size_t>(g.O * l.R));
    koffTap.resize(static_cast<size_t>(l.R));
    for (int64_t c = 0; c < l.Cg; c++)
      for (int64_t t = 0; t < taps; t++) koffTap[static_cast<size_t>(t * l.Cg + c)] = l.koff[static_cast<size_t>(c * taps + t)];
    for (int64_t o = 0; o < g.O; o++)
      for (int64_t c = 0; c < l.Cg; c++)
        for (int64_t t = 0; t < taps; t++) wTap[static_cast<size_t>(o * l.R + t * l.Cg + c)] = w[o * l.R + c * taps + t];
  }
  parallelFor(g.N, flops, [&](int64_t n0, int64_t n1) {
    float* dyw = tDyWide.get(static_cast<size_t>(g.O * l.Nw));
    float* pad = padded ? tDxPadded.get(static_cast<size_t>(g.C * l.plane)) : nullptr;
    for (int64_t n = n0; n < n1; n++) {
      // dy in wide rows, junk columns zero (they would scatter into real pixels).
      wideRowsInto(g, l, dy + n * g.O * g.OH * g.OW, dyw, l.Nw);
      float* dxn = dx + n * g.C * g.H * g.W;
      float* target = padded ? pad : dxn;
      std::memset(target, 0, static_cast<size_t>(g.C * (padded ? l.plane : g.H * g.W)) * sizeof(float));
      for (int64_t gr = 0; gr < g.groups; gr++) {
        float* tg = target + gr * l.Cg * (padded ? l.plane : g.H * g.W);
        const float* dyg = dyw + gr * l.Og * l.Nw;
        if (tapMajor) {  // tiles of one tap (kh, kw) over up to 8 channels: rows in disjoint planes
          const float* wg = wTap.data() + gr * l.Og * l.R;
          const int64_t blocks = (l.Cg + kMaxTileRows - 1) / kMaxTileRows;
          for (int64_t t = 0; t < taps; t++) {
            for (int64_t blk = 0; blk < blocks; blk++) {
              const int64_t c0 = l.Cg * blk / blocks, c1 = l.Cg * (blk + 1) / blocks;
              const int64_t k0 = t * l.Cg + c0, rows = c1 - c0;
              kScatterTiles[rows - 1][bestVectors(rows, l.Nw) - 1](l.Nw, l.Og, wg + k0, l.R, dyg, l.Nw, koffTap.data() + k0, tg);
            }
          }
          continue;
        }
        const float* wg = w + gr * l.Og * l.R;
        const int64_t blocks = (l.R + kMaxTileRows - 1) / kMaxTileRows;
        for (int64_t blk = 0; blk < blocks; blk++) {
          const int64_t k0 = l.R * blk / blocks, k1 = l.R * (blk + 1) / blocks;
          const int64_t rows = k1 - k0;
          kScatterTiles[rows - 1][bestVectors(rows, l.Nw) - 1](l.Nw, l.Og, wg + k0, l.R, dyg, l.Nw, l.koff.data() + k0, tg);
        }
      }
      if (padded) {
        for (int64_t c = 0; c < g.C; c++)
          for (int64_t h = 0; h < g.H; h++)
            std::memcpy(dxn + (c * g.H + h) * g.W, pad + (c * l.Hp + h + g.ph) * l.Wp + g.pw, static_cast<size_t>(g.W) * sizeof(float));
      }
    }
  });
}

}  // namespace lowbit
