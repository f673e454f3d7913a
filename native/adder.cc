// AdderNet kernels. One generic loop nest per pass, written so that the compiler vectorises the
// innermost loop: over output positions (tap-major patches) in the forward pass and the input
// gradient, over the receptive field (position-major patches) in the weight gradient and, when an
// image has fewer than 16 output positions (adderLinear), in all three. Each is inlined into one
// wrapper per ISA (AVX-512, AVX2, baseline x86-64) compiled with that ISA's target attribute, and
// the wrapper for activeIsa() runs. No -ffast-math: fabsf, the comparisons of HardTanh and the
// gy != 0 tests keep the reference's NaN behaviour.
#include "adder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu.h"
#include "scratch.h"
#include "threadpool.h"

#define LOWBIT_INLINE inline __attribute__((always_inline))

namespace lowbit {

namespace {

struct Dims {
  int64_t cg, og, k, l;
};

Dims dimsOf(const ConvGeom& g) {
  const int64_t cg = g.C / g.groups;
  return Dims{cg, g.O / g.groups, cg * g.KH * g.KW, g.OH * g.OW};
}

// Calls f(j, pos, xIndex) for every receptive-field element j (channel, ky, kx order, as w's row)
// of every output position pos, xIndex = offset in the group's planes or -1 in the padding.
template <class F>
LOWBIT_INLINE void forEachTap(const ConvGeom& g, const Dims& d, F&& f) {
  int64_t j = 0;
  for (int64_t ci = 0; ci < d.cg; ci++) {
    for (int64_t ky = 0; ky < g.KH; ky++) {
      for (int64_t kx = 0; kx < g.KW; kx++, j++) {
        for (int64_t oy = 0; oy < g.OH; oy++) {
          const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
          const bool rowInside = iy >= 0 && iy < g.H;
          const int64_t rowBase = (ci * g.H + iy) * g.W;
          for (int64_t ox = 0; ox < g.OW; ox++) {
            const int64_t ix = ox * g.sw - g.pw + kx * g.dw;
            f(j, oy * g.OW + ox, rowInside && ix >= 0 && ix < g.W ? rowBase + ix : -1);
          }
        }
      }
    }
  }
}

// Calls f(j, oy, rowInside, xRow, oxLo, oxHi) for every receptive-field element j and output row
// oy: output columns [oxLo, oxHi) read x at xRow + ox * sw (an offset in the group's planes), the
// others (and all of a row outside the image) lie in the padding.
template <class F>
LOWBIT_INLINE void forEachTapRow(const ConvGeom& g, const Dims& d, F&& f) {
  int64_t j = 0;
  for (int64_t ci = 0; ci < d.cg; ci++) {
    for (int64_t ky = 0; ky < g.KH; ky++) {
      for (int64_t kx = 0; kx < g.KW; kx++, j++) {
        const int64_t off = kx * g.dw - g.pw;  // ix = ox * sw + off
        int64_t oxLo = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
        int64_t oxHi = g.W - 1 - off < 0 ? 0 : (g.W - 1 - off) / g.sw + 1;
        oxLo = std::min(oxLo, g.OW);
        oxHi = std::max(oxLo, std::min(oxHi, g.OW));
        for (int64_t oy = 0; oy < g.OH; oy++) {
          const int64_t iy = oy * g.sh - g.ph + ky * g.dh;
          f(j, oy, iy >= 0 && iy < g.H, (ci * g.H + iy) * g.W + off, oxLo, oxHi);
        }
      }
    }
  }
}

// col [k, l] (tap-major): col[j * l + pos].
LOWBIT_INLINE void patchesTapMajor(const ConvGeom& g, const Dims& d, const float* xg, float* col) {
  const int64_t sw = g.sw;
  forEachTapRow(g, d, [&](int64_t j, int64_t oy, bool rowInside, int64_t xRow, int64_t oxLo, int64_t oxHi) {
    float* dst = col + j * d.l + oy * g.OW;
    if (!rowInside) {
      for (int64_t ox = 0; ox < g.OW; ox++) dst[ox] = 0.f;
      return;
    }
    const float* src = xg + xRow;
    for (int64_t ox = 0; ox < oxLo; ox++) dst[ox] = 0.f;
    for (int64_t ox = oxLo; ox < oxHi; ox++) dst[ox] = src[ox * sw];
    for (int64_t ox = oxHi; ox < g.OW; ox++) dst[ox] = 0.f;
  });
}

// Adds tap-major dcol [k, l] back into x's cells (padded cells dropped): patchesTapMajor's adjoint.
LOWBIT_INLINE void scatterTapMajor(const ConvGeom& g, const Dims& d, const float* dcol, float* dxg) {
  const int64_t sw = g.sw;
  forEachTapRow(g, d, [&](int64_t j, int64_t oy, bool rowInside, int64_t xRow, int64_t oxLo, int64_t oxHi) {
    if (!rowInside) return;
    const float* src = dcol + j * d.l + oy * g.OW;
    float* dst = dxg + xRow;
    for (int64_t ox = oxLo; ox < oxHi; ox++) dst[ox * sw] += src[ox];
  });
}

// P [l, k] (position-major, as the reference's buffer): P[pos * k + j].
LOWBIT_INLINE void patchesPosMajor(const ConvGeom& g, const Dims& d, const float* xg, float* p) {
  forEachTap(g, d, [&](int64_t j, int64_t pos, int64_t xi) { p[pos * d.k + j] = xi >= 0 ? xg[xi] : 0.f; });
}

// Outputs per image and channel below which the passes vectorise over the receptive field instead
// of over output positions (1x1 outputs: adderLinear).
constexpr int64_t kFewPositions = 16;
constexpr int64_t kLanes = 16;

// sum_j |p[j] - w[j]| over k elements: kLanes independent partial sums (one vector register, or
// several on narrower ISAs) added in lane order, then the tail; the same order on every ISA.
LOWBIT_INLINE float absDiffSum(const float* __restrict p, const float* __restrict w, int64_t k) {
  float part[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= k; j += kLanes) {
    for (int64_t t = 0; t < kLanes; t++) part[t] += std::fabs(p[j + t] - w[j + t]);
  }
  float s = 0.f;
  for (int64_t t = 0; t < kLanes; t++) s += part[t];
  for (; j < k; j++) s += std::fabs(p[j] - w[j]);
  return s;
}

// One (image, group) of the forward pass: y rows of the group's output channels.
LOWBIT_INLINE void forwardItem(const ConvGeom& g, const Dims& d, const float* x, const float* w, float* y, int64_t img,
                               int64_t grp, float* __restrict col) {
  const float* xg = x + (img * g.C + grp * d.cg) * g.H * g.W;
  if (d.l < kFewPositions) {
    patchesPosMajor(g, d, xg, col);
    for (int64_t oc = grp * d.og; oc < (grp + 1) * d.og; oc++) {
      float* yr = y + (img * g.O + oc) * d.l;
      for (int64_t pos = 0; pos < d.l; pos++) yr[pos] = -absDiffSum(col + pos * d.k, w + oc * d.k, d.k);
    }
    return;
  }
  patchesTapMajor(g, d, xg, col);
  for (int64_t oc = grp * d.og; oc < (grp + 1) * d.og; oc++) {
    float* __restrict yr = y + (img * g.O + oc) * d.l;
    const float* wr = w + oc * d.k;
    for (int64_t pos = 0; pos < d.l; pos++) yr[pos] = 0.f;
    for (int64_t j = 0; j < d.k; j++) {
      const float wj = wr[j];
      const float* __restrict cr = col + j * d.l;
      for (int64_t pos = 0; pos < d.l; pos++) yr[pos] += std::fabs(cr[pos] - wj);
    }
    for (int64_t pos = 0; pos < d.l; pos++) yr[pos] = -yr[pos];
  }
}

LOWBIT_INLINE float hardTanh(float t) { return t > 1.f ? 1.f : t < -1.f ? -1.f : t; }

// One (image, group) of the input gradient: overwrites that group's planes of dx. An output with
// gy == 0 contributes nothing (not gy * HardTanh(NaN)).
LOWBIT_INLINE void gradInputItem(const ConvGeom& g, const Dims& d, const float* gy, const float* x, const float* w,
                                 float* dx, int64_t img, int64_t grp, float* __restrict p, float* __restrict dp) {
  const int64_t xOff = (img * g.C + grp * d.cg) * g.H * g.W;
  const bool few = d.l < kFewPositions;
  if (few) patchesPosMajor(g, d, x + xOff, p);
  else patchesTapMajor(g, d, x + xOff, p);
  std::memset(dp, 0, static_cast<size_t>(d.k * d.l) * sizeof(float));
  for (int64_t oc = grp * d.og; oc < (grp + 1) * d.og; oc++) {
    const float* __restrict gr = gy + (img * g.O + oc) * d.l;
    const float* __restrict wr = w + oc * d.k;
    if (few) {
      for (int64_t pos = 0; pos < d.l; pos++) {
        const float gv = gr[pos];
        if (gv == 0.f) continue;
        const float* __restrict pr = p + pos * d.k;
        float* __restrict dr = dp + pos * d.k;
        for (int64_t j = 0; j < d.k; j++) dr[j] += gv * hardTanh(wr[j] - pr[j]);
      }
    } else {
      for (int64_t j = 0; j < d.k; j++) {
        const float wj = wr[j];
        const float* __restrict pr = p + j * d.l;
        float* __restrict dr = dp + j * d.l;
        for (int64_t pos = 0; pos < d.l; pos++) {
          const float gv = gr[pos];
          const float c = gv * hardTanh(wj - pr[pos]);
          dr[pos] += gv != 0.f ? c : 0.f;
        }
      }
    }
  }
  float* dxg = dx + xOff;
  std::memset(dxg, 0, static_cast<size_t>(d.cg * g.H * g.W) * sizeof(float));
  if (few) {
    forEachTap(g, d, [&](int64_t j, int64_t pos, int64_t xi) {
      if (xi >= 0) dxg[xi] += dp[pos * d.k + j];
    });
  } else {
    scatterTapMajor(g, d, dp, dxg);
  }
}

// Output channels [lo, hi) of group grp, image img, of the weight gradient, added to acc (double).
LOWBIT_INLINE void gradWeightItem(const ConvGeom& g, const Dims& d, const float* gy, const float* x, const float* w,
                                  double* acc, int64_t img, int64_t grp, int64_t lo, int64_t hi, float* __restrict p,
                                  float* __restrict s) {
  patchesPosMajor(g, d, x + (img * g.C + grp * d.cg) * g.H * g.W, p);
  for (int64_t oc = lo; oc < hi; oc++) {
    const float* gr = gy + (img * g.O + oc) * d.l;
    for (int64_t j = 0; j < d.k; j++) s[j] = 0.f;
    double gSum = 0;
    for (int64_t pos = 0; pos < d.l; pos++) {
      const float gv = gr[pos];
      if (gv == 0.f) continue;
      gSum += gv;
      const float* __restrict pr = p + pos * d.k;
      for (int64_t j = 0; j < d.k; j++) s[j] += gv * pr[j];
    }
    double* ar = acc + oc * d.k;
    const float* wr = w + oc * d.k;
    for (int64_t j = 0; j < d.k; j++) ar[j] += static_cast<double>(s[j]) - gSum * wr[j];
  }
}

#define LOWBIT_ADDER_VARIANTS(SUFFIX, TARGET)                                                                        \
  TARGET void forward##SUFFIX(const ConvGeom& g, const Dims& d, const float* x, const float* w, float* y, int64_t img, \
                              int64_t grp, float* col) {                                                            \
    forwardItem(g, d, x, w, y, img, grp, col);                                                                      \
  }                                                                                                                  \
  TARGET void gradInput##SUFFIX(const ConvGeom& g, const Dims& d, const float* gy, const float* x, const float* w,    \
                                float* dx, int64_t img, int64_t grp, float* p, float* dp) {                          \
    gradInputItem(g, d, gy, x, w, dx, img, grp, p, dp);                                                             \
  }                                                                                                                  \
  TARGET void gradWeight##SUFFIX(const ConvGeom& g, const Dims& d, const float* gy, const float* x, const float* w,   \
                                 double* acc, int64_t img, int64_t grp, int64_t lo, int64_t hi, float* p, float* s) { \
    gradWeightItem(g, d, gy, x, w, acc, img, grp, lo, hi, p, s);                                                    \
  }

LOWBIT_ADDER_VARIANTS(Avx512, LOWBIT_TARGET_AVX512)
LOWBIT_ADDER_VARIANTS(Avx2, LOWBIT_TARGET_AVX2)
LOWBIT_ADDER_VARIANTS(Scalar, )

struct Variant {
  decltype(&forwardScalar) forward;
  decltype(&gradInputScalar) gradInput;
  decltype(&gradWeightScalar) gradWeight;
};

Variant variant() {
  switch (activeIsa()) {
    case Isa::Avx512: return {forwardAvx512, gradInputAvx512, gradWeightAvx512};
    case Isa::Avx2: return {forwardAvx2, gradInputAvx2, gradWeightAvx2};
    default: return {forwardScalar, gradInputScalar, gradWeightScalar};
  }
}

double workOf(const ConvGeom& g, const Dims& d) { return static_cast<double>(g.N) * g.O * d.k * d.l; }

}  // namespace

void adderConv2dForward(const ConvGeom& g, const float* x, const float* w, float* y) {
  const Dims d = dimsOf(g);
  const Variant v = variant();
  parallelFor(g.N * g.groups, workOf(g, d), [&](int64_t i0, int64_t i1) {
    thread_local ScratchBuffer colBuf;
    float* col = colBuf.get(static_cast<size_t>(d.k * d.l));
    for (int64_t item = i0; item < i1; item++) v.forward(g, d, x, w, y, item / g.groups, item % g.groups, col);
  });
}

void adderConv2dGradInput(const ConvGeom& g, const float* gy, const float* x, const float* w, float* dx) {
  const Dims d = dimsOf(g);
  const Variant v = variant();
  parallelFor(g.N * g.groups, workOf(g, d), [&](int64_t i0, int64_t i1) {
    thread_local ScratchBuffer pBuf, dpBuf;
    float* p = pBuf.get(static_cast<size_t>(d.k * d.l));
    float* dp = dpBuf.get(static_cast<size_t>(d.k * d.l));
    for (int64_t item = i0; item < i1; item++) v.gradInput(g, d, gy, x, w, dx, item / g.groups, item % g.groups, p, dp);
  });
}

void adderConv2dGradWeight(const ConvGeom& g, const float* gy, const float* x, const float* w, float* dw) {
  const Dims d = dimsOf(g);
  const Variant v = variant();
  const int64_t size = g.O * d.k;
  std::vector<double> acc(static_cast<size_t>(size), 0.0);
  double* a = acc.data();
  // Chunks of output channels, each walking every image in order (patches rebuilt per chunk), so a
  // weight's sum over images has the same order whatever the thread count.
  auto body = [&](int64_t o0, int64_t o1) {
    thread_local ScratchBuffer pBuf, sBuf;
    float* p = pBuf.get(static_cast<size_t>(d.k * d.l));
    float* s = sBuf.get(static_cast<size_t>(d.k));
    for (int64_t img = 0; img < g.N; img++) {
      for (int64_t grp = o0 / d.og; grp * d.og < o1; grp++) {
        const int64_t lo = std::max(o0, grp * d.og), hi = std::min(o1, (grp + 1) * d.og);
        v.gradWeight(g, d, gy, x, w, a, img, grp, lo, hi, p, s);
      }
    }
  };
  parallelChunks(g.O, workOf(g, d), poolThreads(), body);
  for (int64_t i = 0; i < size; i++) dw[i] = static_cast<float>(acc[i]);
}

}  // namespace lowbit
