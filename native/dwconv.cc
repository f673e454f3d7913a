// Depthwise conv2d (see dwconv.h): per (sample, channel) plane, the plane is copied once into a
// zero-padded buffer split by output column phase (dwconv-kernels.inc), then every output row is
// kW outputs per vector with the KH KW taps as broadcast-weight FMAs (forward), the adjoint scatters
// dy rows into the buffer (grad input; then copied back without the padding), and grad weight keeps
// one vector accumulator per tap over the channel's planes of every sample. 3x3 and 5x5 at stride 1
// and 2 are compiled with the loops unrolled; other sizes / strides take the same code with runtime
// bounds. Parallel over planes (forward, grad input) or channels (grad weight, so each dw row is
// summed by one thread in sample order: no reduction across threads). On AVX-512, grad weight of
// 3x3 / 5x5 filters with >= 32 channels runs over blocks of 16 channels, channels-last (dwblocked),
// and so does grad input on maps the tiny-map kernels do not take.
#include "dwconv.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu.h"
#include "scratch.h"
#include "threadpool.h"

namespace lowbit {

namespace {

std::atomic<bool> gEnabled{true};

struct Plane {
  int64_t C, H, W, OH, OW, KH, KW, sh, sw, ph, pw, Hp, Wp, Wq, ps;
  size_t bufFloats() const { return static_cast<size_t>(sw * ps + 64 + KW); }  // + slack: vectors read past the last row
  // grad input's padded dy (dwconv-kernels.inc, backwardInputPlane): mh zero rows above and below, mw
  // zero columns left, and right enough for a vector read at every column [0, Wq)
  int64_t dyMarginH() const { return (KH - 1) / sh + 2; }
  int64_t dyMarginW() const { return (KW - 1) / sw + 1; }
  int64_t dyLd() const { return dyMarginW() + std::max(OW, Wq) + 16; }
  // (also holds the flat variants' stage / flat dy: (OH + 2 KH) Wq + 64 floats at stride 1)
  size_t dyFloats() const { return static_cast<size_t>((OH + 2 * dyMarginH()) * dyLd() + 64); }
  void padDy(const float* dy, float* dyp) const {
    std::memset(dyp, 0, dyFloats() * sizeof(float));
    const int64_t ld = dyLd(), mh = dyMarginH(), mw = dyMarginW();
    for (int64_t oh = 0; oh < OH; oh++) std::memcpy(dyp + (oh + mh) * ld + mw, dy + oh * OW, static_cast<size_t>(OW) * sizeof(float));
  }
};

Plane planeOf(const ConvGeom& g) {
  Plane p{g.C, g.H, g.W, g.OH, g.OW, g.KH, g.KW, g.sh, g.sw, g.ph, g.pw, 0, 0, 0, 0};
  p.Hp = g.H + 2 * g.ph;
  p.Wp = g.W + 2 * g.pw;
  p.Wq = (p.Wp + g.sw - 1) / g.sw;
  p.ps = p.Hp * p.Wq;
  return p;
}

// Stride 2 on AVX-512: the columns of an input row in 32-column steps, split into their even and
// odd ones by two permutes and stored to their phases (column c of the padded row goes to phase
// (c + pw) % 2 at (c + pw) / 2), instead of one scalar copy per value.
LOWBIT_TARGET_AVX512 void fillPhasesStride2(const Plane& p, const float* plane, float* buf) {
  const __m512i evenIdx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i oddIdx = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const auto mask = [](int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1u); };
  for (int64_t ih = 0; ih < p.H; ih++) {
    const float* in = plane + ih * p.W;
    for (int64_t c0 = 0; c0 < p.W; c0 += 32) {
      const __m512 a = _mm512_maskz_loadu_ps(mask(p.W - c0), in + c0), b = _mm512_maskz_loadu_ps(mask(p.W - c0 - 16), in + c0 + 16);
      const __m512 half[2] = {_mm512_permutex2var_ps(a, evenIdx, b), _mm512_permutex2var_ps(a, oddIdx, b)};
      for (int64_t par = 0; par < 2; par++) {
        const int64_t count = (p.W - c0 - par + 1) / 2, r = (par + p.pw) & 1, j = (c0 + par + p.pw) >> 1;
        _mm512_mask_storeu_ps(buf + r * p.ps + (ih + p.ph) * p.Wq + j, mask(count), half[par]);
      }
    }
  }
}

// The adjoint copy of fillPhasesStride2 (extractPhases at stride 2): even and odd columns
// interleaved back by two permutes.
LOWBIT_TARGET_AVX512 void extractPhasesStride2(const Plane& p, const float* buf, float* plane) {
  const __m512i loIdx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hiIdx = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const auto mask = [](int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1u); };
  for (int64_t ih = 0; ih < p.H; ih++) {
    float* out = plane + ih * p.W;
    for (int64_t c0 = 0; c0 < p.W; c0 += 32) {
      __m512 half[2];
      for (int64_t par = 0; par < 2; par++) {
        const int64_t count = (p.W - c0 - par + 1) / 2, r = (par + p.pw) & 1, j = (c0 + par + p.pw) >> 1;
        half[par] = _mm512_maskz_loadu_ps(mask(count), buf + r * p.ps + (ih + p.ph) * p.Wq + j);
      }
      _mm512_mask_storeu_ps(out + c0, mask(p.W - c0), _mm512_permutex2var_ps(half[0], loIdx, half[1]));
      _mm512_mask_storeu_ps(out + c0 + 16, mask(p.W - c0 - 16), _mm512_permutex2var_ps(half[0], hiIdx, half[1]));
    }
  }
}

// buf = the phases of the zero-padded plane (H, W); everything else (slack included) zero.
void fillPhases(const Plane& p, const float* plane, float* buf) {
  std::memset(buf, 0, p.bufFloats() * sizeof(float));
  if (p.sw == 2 && activeIsa() == Isa::Avx512) return fillPhasesStride2(p, plane, buf);
  if (p.sw == 1) {
    for (int64_t ih = 0; ih < p.H; ih++) std::memcpy(buf + (ih + p.ph) * p.Wq + p.pw, plane + ih * p.W, static_cast<size_t>(p.W) * sizeof(float));
    return;
  }
  for (int64_t r = 0; r < p.sw; r++) {
    // phase r, column j: padded column j sw + r, input column j sw + r - pw in [0, W)
    const int64_t j0 = std::max<int64_t>(0, (p.pw - r + p.sw - 1) / p.sw), j1 = std::min(p.Wq, (p.W + p.pw - r + p.sw - 1) / p.sw);
    for (int64_t ih = 0; ih < p.H; ih++) {
      const float* in = plane + ih * p.W + r - p.pw;
      float* row = buf + r * p.ps + (ih + p.ph) * p.Wq;
      for (int64_t j = j0; j < j1; j++) row[j] = in[j * p.sw];
    }
  }
}

// plane (H, W) = the unpadded part of the phase buffer.
void extractPhases(const Plane& p, const float* buf, float* plane) {
  if (p.sw == 2 && activeIsa() == Isa::Avx512) return extractPhasesStride2(p, buf, plane);
  if (p.sw == 1) {
    for (int64_t ih = 0; ih < p.H; ih++) std::memcpy(plane + ih * p.W, buf + (ih + p.ph) * p.Wq + p.pw, static_cast<size_t>(p.W) * sizeof(float));
    return;
  }
  for (int64_t r = 0; r < p.sw; r++) {
    const int64_t j0 = std::max<int64_t>(0, (p.pw - r + p.sw - 1) / p.sw), j1 = std::min(p.Wq, (p.W + p.pw - r + p.sw - 1) / p.sw);
    for (int64_t ih = 0; ih < p.H; ih++) {
      float* out = plane + ih * p.W + r - p.pw;
      const float* row = buf + r * p.ps + (ih + p.ph) * p.Wq;
      for (int64_t j = j0; j < j1; j++) out[j * p.sw] = row[j];
    }
  }
}

alignas(64) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

}  // namespace

namespace dwavx512 {
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")
struct V {
  using T = __m512;
  static constexpr int64_t kW = 16;
  static T zero() { return _mm512_setzero_ps(); }
  static T set1(float v) { return _mm512_set1_ps(v); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static T loadn(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static void storen(float* p, T v, int64_t n) { _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(T v) { return _mm512_reduce_add_ps(v); }
};
#include "dwconv-kernels.inc"
#pragma GCC pop_options
}  // namespace dwavx512

namespace dwavx2 {
#pragma GCC push_options
#pragma GCC target("avx2,fma")
struct V {
  using T = __m256;
  static constexpr int64_t kW = 8;
  static __m256i mask(int64_t n) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n)); }
  static T zero() { return _mm256_setzero_ps(); }
  static T set1(float v) { return _mm256_set1_ps(v); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static T loadn(const float* p, int64_t n) { return _mm256_maskload_ps(p, mask(n)); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static void storen(float* p, T v, int64_t n) { _mm256_maskstore_ps(p, mask(n), v); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(T v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};
#include "dwconv-kernels.inc"
#pragma GCC pop_options
}  // namespace dwavx2

namespace dwscalar {
struct V {
  using T = float;
  static constexpr int64_t kW = 1;
  static T zero() { return 0.f; }
  static T set1(float v) { return v; }
  static T load(const float* p) { return *p; }
  static T loadn(const float* p, int64_t) { return *p; }
  static void store(float* p, T v) { *p = v; }
  static void storen(float* p, T v, int64_t) { *p = v; }
  static T fma(T a, T b, T c) { return a * b + c; }
  static float hsum(T v) { return v; }
};
#include "dwconv-kernels.inc"
}  // namespace dwscalar

namespace {

thread_local ScratchBuffer tDwBuf;

double planeFlops(const ConvGeom& g) { return 2.0 * static_cast<double>(g.KH * g.KW * g.OH * g.OW); }

}  // namespace

// conv2dFused's no-pooling epilogue for channel c on a vector of outputs in the registers: * scale
// (its own rounding, as convEpiloguePlane: GCC would contract a plain multiply and the add into
// an FMA), + bias, ReLU, min(., hi); NaN stays NaN (maxps(0, NaN) and minps(hi, NaN) return it).
LOWBIT_TARGET_AVX512 inline __m512 epilogueRegs(__m512 a, const ConvEpilogue* e, int64_t c) {
  if (e == nullptr) return a;
  if (e->scale != nullptr) a = _mm512_mul_round_ps(a, _mm512_set1_ps(e->scale[c]), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (e->bias != nullptr) a = _mm512_add_ps(a, _mm512_set1_ps(e->bias[c]));
  if (e->relu) a = _mm512_max_ps(_mm512_setzero_ps(), a);
  return _mm512_min_ps(_mm512_set1_ps(e->hi), a);
}

// ---------------------------------------------------------------- tiny planes (AVX-512)
// A map of at most 64 values (8x8 and smaller: the late stages of a small MobileNet) fits in R <= 4
// vectors. Tap t of output vector v is then a permutation of the input vectors with zeros where
// the tap falls in the padding, from index tables built once per call: no padded buffer and no
// per-row loops, which cost more than the arithmetic on 4x4 and 7x7 planes. The adjoint (grad
// input) uses the inverse tables, the weight gradient the forward ones.
namespace dwtiny {

constexpr int64_t kMaxPlane = 64, kMaxTaps = 25;

struct Tables {
  int R = 0, Ro = 0, T = 0;
  std::vector<int32_t> fwdIdx;   // [Ro][T][16]: input lane feeding each output lane
  std::vector<uint16_t> fwdMask; // [Ro][T]: output lanes whose tap is inside the input
  std::vector<int32_t> bwdIdx;   // [R][T][16]: output lane reading each input lane
  std::vector<uint16_t> bwdMask; // [R][T]
};

bool supported(const ConvGeom& g) {
  return activeIsa() == Isa::Avx512 && g.H * g.W <= kMaxPlane && g.OH * g.OW <= kMaxPlane && g.KH * g.KW <= kMaxTaps;
}

Tables build(const ConvGeom& g) {
  Tables t;
  t.R = static_cast<int>((g.H * g.W + 15) / 16);
  t.Ro = static_cast<int>((g.OH * g.OW + 15) / 16);
  t.T = static_cast<int>(g.KH * g.KW);
  t.fwdIdx.assign(static_cast<size_t>(t.Ro * t.T * 16), 0);
  t.fwdMask.assign(static_cast<size_t>(t.Ro * t.T), 0);
  t.bwdIdx.assign(static_cast<size_t>(t.R * t.T * 16), 0);
  t.bwdMask.assign(static_cast<size_t>(t.R * t.T), 0);
  for (int64_t kh = 0; kh < g.KH; kh++) {
    for (int64_t kw = 0; kw < g.KW; kw++) {
      const int64_t tap = kh * g.KW + kw;
      for (int64_t oh = 0; oh < g.OH; oh++) {
        for (int64_t ow = 0; ow < g.OW; ow++) {
          const int64_t ih = oh * g.sh - g.ph + kh, iw = ow * g.sw - g.pw + kw;
          if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
          const int64_t o = oh * g.OW + ow, i = ih * g.W + iw;
          t.fwdIdx[static_cast<size_t>(((o / 16) * t.T + tap) * 16 + o % 16)] = static_cast<int32_t>(i);
          t.fwdMask[static_cast<size_t>((o / 16) * t.T + tap)] |= static_cast<uint16_t>(1u << (o % 16));
          t.bwdIdx[static_cast<size_t>(((i / 16) * t.T + tap) * 16 + i % 16)] = static_cast<int32_t>(o);
          t.bwdMask[static_cast<size_t>((i / 16) * t.T + tap)] |= static_cast<uint16_t>(1u << (i % 16));
        }
      }
    }
  }
  return t;
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")

// Lanes idx of the S-vector map r (S <= 4; r[3] zero when S = 3), zero outside mask m.
template <int S>
inline __m512 pick(const __m512* r, __m512i idx, __mmask16 m) {
  if constexpr (S == 1) {
    return _mm512_maskz_permutexvar_ps(m, idx, r[0]);
  } else if constexpr (S == 2) {
    return _mm512_maskz_permutex2var_ps(m, r[0], idx, r[1]);
  } else {
    const __m512 lo = _mm512_permutex2var_ps(r[0], idx, r[1]);
    const __m512 hi = _mm512_permutex2var_ps(r[2], idx, r[3]);
    return _mm512_maskz_mov_ps(m, _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)), lo, hi));
  }
}

inline __mmask16 lanes(int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u); }

// The S vectors of an n-value map (zeros past n and in unused vectors).
inline void loadMap(const float* src, int64_t n, __m512* r) {
  for (int v = 0; v < 4; v++) r[v] = v * 16 < n ? _mm512_maskz_loadu_ps(lanes(n - v * 16), src + v * 16) : _mm512_setzero_ps();
}

// dst (n values) = sum over taps of w[t] * pick<S>(src map, idx[v][t], mask[v][t]) for each of its
// vectors v, then (e != nullptr, no pooling) channel c's epilogue in the registers: * scale (its
// own rounding, as convEpiloguePlane), + bias, ReLU, min(., hi).
template <int S>
void correlate(const Tables& t, const int32_t* idx, const uint16_t* mask, const __m512* src, const float* w, int64_t n,
               const ConvEpilogue* e, int64_t c, float* dst) {
  for (int64_t v = 0; v * 16 < n; v++) {
    __m512 acc = _mm512_setzero_ps();
    for (int tap = 0; tap < t.T; tap++) {
      const size_t k = static_cast<size_t>(v * t.T + tap);
      acc = _mm512_fmadd_ps(_mm512_set1_ps(w[tap]), pick<S>(src, _mm512_loadu_si512(idx + k * 16), mask[k]), acc);
    }
    _mm512_mask_storeu_ps(dst + v * 16, lanes(n - v * 16), epilogueRegs(acc, e, c));
  }
}

template <int S>
void correlatePlanes(const Tables& t, bool forward, const ConvGeom& g, const float* in, const float* w, const ConvEpilogue* e,
                     float* out, int64_t q0, int64_t q1) {
  const int64_t nIn = forward ? g.H * g.W : g.OH * g.OW, nOut = forward ? g.OH * g.OW : g.H * g.W;
  const int32_t* idx = forward ? t.fwdIdx.data() : t.bwdIdx.data();
  const uint16_t* mask = forward ? t.fwdMask.data() : t.bwdMask.data();
  __m512 r[4];
  for (int64_t q = q0; q < q1; q++) {
    loadMap(in + q * nIn, nIn, r);
    correlate<S>(t, idx, mask, r, w + (q % g.C) * t.T, nOut, e, q % g.C, out + q * nOut);
  }
}

// dw rows of channels [c0, c1): each tap's sum over the samples of dy times its picked inputs.
template <int R>
void weightChannels(const Tables& t, const ConvGeom& g, const float* x, const float* dy, float* dw, int64_t c0, int64_t c1) {
  const int64_t nIn = g.H * g.W, nOut = g.OH * g.OW;
  __m512 acc[kMaxTaps], r[4], d[4];
  for (int64_t c = c0; c < c1; c++) {
    for (int tap = 0; tap < t.T; tap++) acc[tap] = _mm512_setzero_ps();
    for (int64_t n = 0; n < g.N; n++) {
      const int64_t q = n * g.C + c;
      loadMap(x + q * nIn, nIn, r);
      loadMap(dy + q * nOut, nOut, d);
      for (int v = 0; v < t.Ro; v++) {
        for (int tap = 0; tap < t.T; tap++) {
          const size_t k = static_cast<size_t>(v * t.T + tap);
          acc[tap] = _mm512_fmadd_ps(d[v], pick<R>(r, _mm512_loadu_si512(t.fwdIdx.data() + k * 16), t.fwdMask[k]), acc[tap]);
        }
      }
    }
    for (int tap = 0; tap < t.T; tap++) dw[c * t.T + tap] = _mm512_reduce_add_ps(acc[tap]);
  }
}

#pragma GCC pop_options

// S = the number of source vectors: 1, 2 or 4 (3 runs as 4 with a zero vector).
template <class F>
void bySources(int sources, F&& f) {
  if (sources == 1) f(std::integral_constant<int, 1>{});
  else if (sources == 2) f(std::integral_constant<int, 2>{});
  else f(std::integral_constant<int, 4>{});
}

}  // namespace dwtiny

// ---------------------------------------------------------------- stride-2 3x3 forward on narrow maps (AVX-512)
// A 3x3 stride-2 conv reads padded row 2 oh + kh and column 2 ow + kw. Split the padded plane by
// row AND column parity into four phase planes of pitch 8 (phase (a, b) row i, column j = padded
// (2 i + a, 2 j + b)); output (oh, ow) at flat f = 8 oh + ow then reads phase (kh & 1, kw & 1) at
// f + 8 (kh >> 1) + (kw >> 1): every tap is one unaligned vector load of 16 outputs (two output
// rows) and one FMA, with no per-row loop. The padding positions of the phase planes are never
// written, so a thread zeroes its buffers once per call; each input row goes to its two column
// phases with two permutes and two masked stores; the outputs are compacted (7 of every 8 lanes
// on a 14x14 map) by one compress per vector, with the fused epilogue in the registers. Taken for
// maps of at most 14 + 2 pw columns that the tiny-map kernels do not take (MobileNet's 14x14 ->
// 7x7 stage): the per-plane path there spent ~230 ns a plane on its buffer, row loops and a
// separate epilogue pass.
namespace dws2 {

constexpr int64_t kPitch = 8;

bool supported(const ConvGeom& g) {
  return activeIsa() == Isa::Avx512 && g.KH == 3 && g.KW == 3 && g.sh == 2 && g.sw == 2 && g.ph <= 2 && g.pw <= 2 &&
         g.W + 2 * g.pw <= 2 * kPitch && g.OW <= kPitch - 1 && !dwtiny::supported(g);
}

// Floats of one phase plane: its rows plus what the last output vector's taps read past them.
int64_t phaseFloats(const ConvGeom& g) {
  const int64_t rows = (g.H + 2 * g.ph + 1) / 2, vectors = (g.OH + 1) / 2;
  return std::max(rows * kPitch, vectors * 16 + kPitch + 1) + 16;
}

struct Fill {
  alignas(64) int32_t idx[2][16];
  uint16_t store[2];
  int64_t offset[2];  // the first column j of each column phase that holds an input value
};

// Column phase b holds input columns iw = 2 j + b - pw: lane k of the permuted row is column
// 2 (j0 + k) + b - pw, stored at j0 + k.
Fill fillPlan(const ConvGeom& g) {
  Fill f{};
  for (int b = 0; b < 2; b++) {
    const int64_t j0 = (g.pw - b + 1) / 2;  // smallest j with 2 j + b - pw >= 0
    uint32_t m = 0;
    for (int64_t k = 0; k < 16; k++) {
      const int64_t iw = 2 * (j0 + k) + b - g.pw;
      f.idx[b][k] = 0;
      if (iw < g.W && j0 + k < kPitch) f.idx[b][k] = static_cast<int32_t>(iw), m |= 1u << k;
    }
    f.store[b] = static_cast<uint16_t>(m);
    f.offset[b] = j0;
  }
  return f;
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")

inline void fillPlane(const ConvGeom& g, const Fill& f, int64_t S, const float* plane, float* buf) {
  const __mmask16 row = static_cast<__mmask16>((1u << g.W) - 1u);
  const __m512i idx0 = _mm512_load_si512(f.idx[0]), idx1 = _mm512_load_si512(f.idx[1]);
  for (int64_t ih = 0; ih < g.H; ih++) {
    const int64_t r = ih + g.ph;
    const __m512 v = _mm512_maskz_loadu_ps(row, plane + ih * g.W);
    float* base = buf + (r & 1) * 2 * S + (r >> 1) * kPitch;
    _mm512_mask_storeu_ps(base + f.offset[0], f.store[0], _mm512_permutexvar_ps(idx0, v));
    _mm512_mask_storeu_ps(base + S + f.offset[1], f.store[1], _mm512_permutexvar_ps(idx1, v));
  }
}

// Output vectors [v0, v0 + NV) of one plane (vector v = output rows 2 v and 2 v + 1): the taps
// outermost, so the NV accumulators are independent FMA chains.
template <int NV>
inline void planeVectors(const ConvGeom& g, int64_t S, const float* buf, const __m512* wv, const ConvEpilogue* e, int64_t c,
                         int64_t v0, float* y) {
  __m512 acc[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; v++) acc[v] = _mm512_setzero_ps();
#pragma GCC unroll 9
  for (int t = 0; t < 9; t++) {
    const int kh = t / 3, kw = t % 3;
    const float* src = buf + ((kh & 1) * 2 + (kw & 1)) * S + v0 * 16 + (kh >> 1) * kPitch + (kw >> 1);
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) acc[v] = _mm512_fmadd_ps(wv[t], _mm512_loadu_ps(src + v * 16), acc[v]);
  }
  const uint32_t rowMask = (1u << g.OW) - 1u;
#pragma GCC unroll 4
  for (int v = 0; v < NV; v++) {
    const __m512 a = epilogueRegs(acc[v], e, c);
    const int64_t oh = 2 * (v0 + v);
    const uint32_t m = rowMask | (oh + 1 < g.OH ? rowMask << 8 : 0u);
    const int n = __builtin_popcount(m);
    _mm512_mask_storeu_ps(y + oh * g.OW, static_cast<__mmask16>((1u << n) - 1u), _mm512_maskz_compress_ps(static_cast<__mmask16>(m), a));
  }
}

inline void planeOut(const ConvGeom& g, int64_t S, const float* buf, const float* w, const ConvEpilogue* e, int64_t c, float* y) {
  __m512 wv[9];
  for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(w[t]);
  const int64_t nv = (g.OH + 1) / 2;
  int64_t v0 = 0;
  for (; v0 + 4 <= nv; v0 += 4) planeVectors<4>(g, S, buf, wv, e, c, v0, y);
  switch (nv - v0) {
    case 3: planeVectors<3>(g, S, buf, wv, e, c, v0, y); break;
    case 2: planeVectors<2>(g, S, buf, wv, e, c, v0, y); break;
    case 1: planeVectors<1>(g, S, buf, wv, e, c, v0, y); break;
    default: break;
  }
}

// Planes [q0, q1) (plane q = n C + c). Two phase buffers: plane q + 1 is split while plane q's
// taps load from the other one, so the loads do not wait on the stores just issued.
void forwardPlanes(const ConvGeom& g, const Fill& f, const float* x, const float* w, const ConvEpilogue* e, float* y, int64_t q0,
                   int64_t q1, float* bufs) {
  const int64_t S = phaseFloats(g), P = g.OH * g.OW;
  std::memset(bufs, 0, static_cast<size_t>(8 * S) * sizeof(float));
  if (q0 >= q1) return;
  fillPlane(g, f, S, x + q0 * g.H * g.W, bufs);
  const int64_t planeBytes = g.H * g.W * static_cast<int64_t>(sizeof(float));
  for (int64_t q = q0; q < q1; q++) {
    float* cur = bufs + ((q - q0) & 1) * 4 * S;
    // The previous layer's output has left L2 at MobileNet batch sizes; the hardware prefetcher
    // does not run far enough ahead of these short rows (L3-resident planes: 76 -> 35 ns a plane).
    if (q + 4 < q1) {
      const char* next = reinterpret_cast<const char*>(x + (q + 4) * g.H * g.W);
      for (int64_t b = 0; b < planeBytes; b += 64) _mm_prefetch(next + b, _MM_HINT_T0);
    }
    if (q + 1 < q1) fillPlane(g, f, S, x + (q + 1) * g.H * g.W, bufs + ((q + 1 - q0) & 1) * 4 * S);
    planeOut(g, S, cur, w + (q % g.C) * 9, e, q % g.C, y + q * P);
  }
}

#pragma GCC pop_options

}  // namespace dws2

// ---------------------------------------------------------------- channel-blocked grad weight (AVX-512)
// The weight gradient of 3x3 and 5x5 depthwise convs over 16 channels at a time: per sample, the
// block's input planes are transposed (one gather per position) into a zero-padded channels-last
// buffer [Hp][Wp][16], and then every tap of every output position is one FMA of 16 channels, with
// no phase split, permute or masked row. Each lane (channel) sums its samples in order, one thread
// per block, so the result does not depend on the thread count. On the small maps of a MobileNet
// (14x14 stride 2, 7x7, 4x4) the per-plane kernels above spend most of their time on copies,
// permutes and partly filled vectors.
namespace dwblocked {

// Taken for 3x3 and 5x5 filters with at least 32 channels (two blocks, so both threads of a 2-core
// machine get one); a fixed rule, not one that depends on the thread count.
bool supported(const ConvGeom& g) {
  return activeIsa() == Isa::Avx512 && g.KH == g.KW && (g.KH == 3 || g.KH == 5) && g.C >= 32 && g.H * g.W * 16 < (int64_t{1} << 31);
}

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")

using dwtiny::lanes;

// [0, stride, 2 stride, ..., 15 stride]: the gather indices of 16 values `stride` floats apart.
inline __m512i laneStride(int64_t stride) {
  return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int32_t>(stride)));
}

// Asks for the cache lines of floats [p, p + count): the next sample's block (a contiguous run)
// while this one is worked on (the gathers alone leave 16 short streams to the hardware prefetcher).
inline void prefetchRun(const float* p, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (int64_t off = 0; off < count * 4; off += 64) _mm_prefetch(bytes + off, _MM_HINT_T0);
}

// The 16 (fewer: lanes past m zero) planes [H][W] at src, src + planeStride, ... as channels-last
// vectors in dst, position (ih, iw) at ((ih + ph) Wp + iw + pw) 16 (the padding is left as it is).
inline void toBlock(const float* src, int64_t planeStride, __mmask16 m, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t Wp, float* dst) {
  const __m512i idx = laneStride(planeStride);
  for (int64_t ih = 0; ih < H; ih++) {
    float* row = dst + ((ih + ph) * Wp + pw) * 16;
    for (int64_t iw = 0; iw < W; iw++) _mm512_storeu_ps(row + iw * 16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, src + ih * W + iw, 4));
  }
}

// The adjoint copy: channels c < bc of the channels-last rows (ih + ph, pw .. pw + W) of src into
// planes [H][W] at dst + c planeStride (one gather per 16 values of a row).
inline void fromBlock(const float* src, int64_t bc, int64_t H, int64_t W, int64_t ph, int64_t pw, int64_t Wp, float* dst, int64_t planeStride) {
  const __m512i idx = laneStride(16);
  for (int64_t c = 0; c < bc; c++) {
    float* plane = dst + c * planeStride;
    for (int64_t ih = 0; ih < H; ih++) {
      const float* row = src + ((ih + ph) * Wp + pw) * 16 + c;
      for (int64_t iw0 = 0; iw0 < W; iw0 += 16) {
        const __mmask16 m = lanes(W - iw0);
        _mm512_mask_storeu_ps(plane + ih * W + iw0, m, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, row + iw0 * 16, 4));
      }
    }
  }
}

// The block's weights, one vector per tap (lane l: channel c0 + l).
template <int T>
inline void tapVectors(const float* w, int64_t c0, __mmask16 m, __m512* wv) {
  const __m512i idx = laneStride(T);
  for (int t = 0; t < T; t++) wv[t] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, w + c0 * T + t, 4);
}

// dw rows of the channel blocks [b0, b1) (block b: channels 16 b ..). xt: scratch of Hp Wp 16 floats.
template <int K>
void weightBlocks(const ConvGeom& g, const float* x, const float* dy, float* dw, int64_t b0, int64_t b1, float* xt) {
  constexpr int T = K * K;
  const int64_t Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw, HW = g.H * g.W, P = g.OH * g.OW;
  std::memset(xt, 0, static_cast<size_t>(Hp * Wp * 16) * sizeof(float));  // the padding stays zero
  const __m512i dyIdx = laneStride(P);
  for (int64_t b = b0; b < b1; b++) {
    const int64_t c0 = b * 16;
    const __mmask16 m = lanes(g.C - c0);
    __m512 acc[T];
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    const int64_t bc = std::min<int64_t>(16, g.C - c0);
    for (int64_t n = 0; n < g.N; n++) {
      const float* xs = x + (n * g.C + c0) * HW;
      const float* ds = dy + (n * g.C + c0) * P;
      if (n + 1 < g.N) {
        prefetchRun(xs + g.C * HW, bc * HW);
        prefetchRun(ds + g.C * P, bc * P);
      }
      toBlock(xs, HW, m, g.H, g.W, g.ph, g.pw, Wp, xt);
      for (int64_t oh = 0; oh < g.OH; oh++) {
        for (int64_t ow = 0; ow < g.OW; ow++) {
          const __m512 d = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, dyIdx, ds + oh * g.OW + ow, 4);
          const float* base = xt + (oh * g.sh * Wp + ow * g.sw) * 16;
          for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) acc[kh * K + kw] = _mm512_fmadd_ps(d, _mm512_loadu_ps(base + (kh * Wp + kw) * 16), acc[kh * K + kw]);
        }
      }
    }
    alignas(64) float sums[T][16];
    for (int t = 0; t < T; t++) _mm512_store_ps(sums[t], acc[t]);
    for (int64_t c = c0; c < std::min(g.C, c0 + 16); c++)
      for (int t = 0; t < T; t++) dw[c * T + t] = sums[t][c - c0];
  }
}

// dx planes of the channel blocks [b0, b1): each dy value times each tap added into a zero-padded
// channels-last dx buffer (dxt: Hp Wp 16 floats; outputs in order, taps in order), then its
// interior copied out.
template <int K>
void backwardInputBlocks(const ConvGeom& g, const float* dy, const float* w, float* dx, int64_t b0, int64_t b1, float* dxt) {
  constexpr int T = K * K;
  const int64_t Wp = g.W + 2 * g.pw, HW = g.H * g.W, P = g.OH * g.OW, bufFloats = (g.H + 2 * g.ph) * Wp * 16;
  const __m512i dyIdx = laneStride(P);
  for (int64_t b = b0; b < b1; b++) {
    const int64_t c0 = b * 16, bc = std::min<int64_t>(16, g.C - c0);
    const __mmask16 m = lanes(bc);
    __m512 wv[T];
    tapVectors<T>(w, c0, m, wv);
    for (int64_t n = 0; n < g.N; n++) {
      std::memset(dxt, 0, static_cast<size_t>(bufFloats) * sizeof(float));
      const float* ds = dy + (n * g.C + c0) * P;
      if (n + 1 < g.N) prefetchRun(ds + g.C * P, bc * P);
      for (int64_t oh = 0; oh < g.OH; oh++) {
        for (int64_t ow = 0; ow < g.OW; ow++) {
          const __m512 d = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, dyIdx, ds + oh * g.OW + ow, 4);
          float* base = dxt + (oh * g.sh * Wp + ow * g.sw) * 16;
          for (int kh = 0; kh < K; kh++)
            for (int kw = 0; kw < K; kw++) {
              float* at = base + (kh * Wp + kw) * 16;
              _mm512_storeu_ps(at, _mm512_fmadd_ps(d, wv[kh * K + kw], _mm512_loadu_ps(at)));
            }
        }
      }
      fromBlock(dxt, bc, g.H, g.W, g.ph, g.pw, Wp, dx + (n * g.C + c0) * HW, HW);
    }
  }
}

#pragma GCC pop_options

}  // namespace dwblocked

namespace {

// body(K, b0, b1, buf) over the channel blocks of g in parallel: K the kernel size as a
// compile-time constant (3 or 5: dwblocked::supported), buf this thread's scratch for one padded
// channels-last map (Hp Wp 16 floats).
template <class Body>
void forBlocks(const ConvGeom& g, Body&& body) {
  const int64_t blocks = (g.C + 15) / 16, bufFloats = (g.H + 2 * g.ph) * (g.W + 2 * g.pw) * 16;
  parallelFor(blocks, planeFlops(g) * static_cast<double>(g.N * g.C), [&](int64_t b0, int64_t b1) {
    float* buf = tDwBuf.get(static_cast<size_t>(bufFloats));
    if (g.KH == 3) body(std::integral_constant<int, 3>{}, b0, b1, buf);
    else body(std::integral_constant<int, 5>{}, b0, b1, buf);
  });
}

}  // namespace

bool depthwiseConvSupported(const ConvGeom& g) {
  return gEnabled.load(std::memory_order_relaxed) && g.groups == g.C && g.O == g.C && g.groups > 1 && g.dh == 1 && g.dw == 1 &&
         g.sh >= 1 && g.sw >= 1;
}

bool setDepthwiseConvEnabled(bool on) { return gEnabled.exchange(on); }

const char* depthwiseConvPathName() {
  switch (activeIsa()) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

void depthwiseConvForward(const ConvGeom& g, const float* x, const float* w, float* y, const ConvEpilogue* e) {
  if (dwtiny::supported(g)) {
    const dwtiny::Tables t = dwtiny::build(g);
    parallelFor(g.N * g.C, planeFlops(g) * static_cast<double>(g.N * g.C), [&](int64_t q0, int64_t q1) {
      dwtiny::bySources(t.R, [&](auto S) { dwtiny::correlatePlanes<decltype(S)::value>(t, true, g, x, w, e, y, q0, q1); });
    });
    return;
  }
  if (dws2::supported(g)) {
    const dws2::Fill f = dws2::fillPlan(g);
    parallelFor(g.N * g.C, planeFlops(g) * static_cast<double>(g.N * g.C), [&](int64_t q0, int64_t q1) {
      dws2::forwardPlanes(g, f, x, w, e, y, q0, q1, tDwBuf.get(static_cast<size_t>(8 * dws2::phaseFloats(g))));
    });
    return;
  }
  const Plane p = planeOf(g);
  const Isa isa = activeIsa();
  const auto range = [&](int64_t q0, int64_t q1, float* buf, float* aux) {
    if (isa == Isa::Avx512) dwavx512::forwardRange(p, x, w, y, q0, q1, buf, aux);
    else if (isa == Isa::Avx2) dwavx2::forwardRange(p, x, w, y, q0, q1, buf, aux);
    else dwscalar::forwardRange(p, x, w, y, q0, q1, buf, aux);
  };
  const int64_t P = g.OH * g.OW;
  parallelFor(g.N * g.C, planeFlops(g) * static_cast<double>(g.N * g.C), [&](int64_t q0, int64_t q1) {
    float* buf = tDwBuf.get(p.bufFloats() + p.dyFloats());
    float* aux = buf + p.bufFloats();
    if (e == nullptr) return range(q0, q1, buf, aux);
    for (int64_t q = q0; q < q1; q++) {
      range(q, q + 1, buf, aux);
      float* yq = y + q * P;
      convEpiloguePlane(*e, g.OH, g.OW, yq, g.OW, q % g.C, yq);
    }
  });
}

void depthwiseConvBackwardInput(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  if (dwblocked::supported(g) && !dwtiny::supported(g)) {
    return forBlocks(g, [&](auto K, int64_t b0, int64_t b1, float* buf) { dwblocked::backwardInputBlocks<K>(g, dy, w, dx, b0, b1, buf); });
  }
  if (dwtiny::supported(g)) {
    const dwtiny::Tables t = dwtiny::build(g);
    parallelFor(g.N * g.C, planeFlops(g) * static_cast<double>(g.N * g.C), [&](int64_t q0, int64_t q1) {
      dwtiny::bySources(t.Ro, [&](auto S) { dwtiny::correlatePlanes<decltype(S)::value>(t, false, g, dy, w, nullptr, dx, q0, q1); });
    });
    return;
  }
  const Plane p = planeOf(g);
  const Isa isa = activeIsa();
  parallelFor(g.N * g.C, planeFlops(g) * static_cast<double>(g.N * g.C), [&](int64_t q0, int64_t q1) {
    float* buf = tDwBuf.get(p.bufFloats() + p.dyFloats());
    float* dyp = buf + p.bufFloats();
    if (isa == Isa::Avx512) dwavx512::backwardInputRange(p, dy, w, dx, q0, q1, buf, dyp);
    else if (isa == Isa::Avx2) dwavx2::backwardInputRange(p, dy, w, dx, q0, q1, buf, dyp);
    else dwscalar::backwardInputRange(p, dy, w, dx, q0, q1, buf, dyp);
  });
}

void depthwiseConvBackwardWeight(const ConvGeom& g, const float* x, const float* dy, float* dw) {
  if (dwblocked::supported(g)) {
    return forBlocks(g, [&](auto K, int64_t b0, int64_t b1, float* buf) { dwblocked::weightBlocks<K>(g, x, dy, dw, b0, b1, buf); });
  }
  if (dwtiny::supported(g)) {
    const dwtiny::Tables t = dwtiny::build(g);
    parallelFor(g.C, planeFlops(g) * static_cast<double>(g.N * g.C), [&](int64_t c0, int64_t c1) {
      dwtiny::bySources(t.R, [&](auto S) { dwtiny::weightChannels<decltype(S)::value>(t, g, x, dy, dw, c0, c1); });
    });
    return;
  }
  const Plane p = planeOf(g);
  const Isa isa = activeIsa();
  parallelFor(g.C, planeFlops(g) * static_cast<double>(g.N * g.C), [&](int64_t c0, int64_t c1) {
    float* buf = tDwBuf.get(p.bufFloats() + p.dyFloats());
    float* aux = buf + p.bufFloats();
    if (isa == Isa::Avx512) dwavx512::backwardWeightRange(p, g.N, x, dy, dw, c0, c1, buf, aux);
    else if (isa == Isa::Avx2) dwavx2::backwardWeightRange(p, g.N, x, dy, dw, c0, c1, buf, aux);
    else dwscalar::backwardWeightRange(p, g.N, x, dy, dw, c0, c1, buf, aux);
  });
}

}  // namespace lowbit
