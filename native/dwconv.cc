// Depthwise conv2d (see dwconv.h): per (sample, channel) plane, the plane is copied once into a
// zero-padded buffer split by output column phase (dwconv-kernels.inc), then every output row is
// kW outputs per vector with the KH KW taps as broadcast-weight FMAs (forward), the adjoint scatters
// dy rows into the buffer (grad input; then copied back without the padding), and grad weight keeps
// one vector accumulator per tap over the channel's planes of every sample. 3x3 and 5x5 at stride 1
// and 2 are compiled with the loops unrolled; other sizes / strides take the same code with runtime
// bounds. Parallel over planes (forward, grad input) or channels (grad weight, so each dw row is
// summed by one thread in sample order: no reduction across threads).
#include "dwconv.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>

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

// buf = the phases of the zero-padded plane (H, W); everything else (slack included) zero.
void fillPhases(const Plane& p, const float* plane, float* buf) {
  std::memset(buf, 0, p.bufFloats() * sizeof(float));
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
