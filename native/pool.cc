// Max and average pooling over NCHW planes, parallel over the N*C planes.
#include "pool.h"

#include <cstring>
#include <limits>

#include "threadpool.h"

namespace lowbit {

namespace {

template <class Body>
void forEachPlane(const PoolGeom& g, Body&& body) {
  const double work = static_cast<double>(g.N * g.C * g.OH * g.OW * g.KH * g.KW);
  parallelFor(g.N * g.C, work, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) body(p);
  });
}

// Index (ih * W + iw) of the first maximum of window (oh, ow) in plane x (H, W); -1 when the
// window lies entirely in the padding.
int64_t argmaxWindow(const PoolGeom& g, const float* x, int64_t oh, int64_t ow) {
  float best = -std::numeric_limits<float>::infinity();
  int64_t bestIndex = -1;
  for (int64_t kh = 0; kh < g.KH; kh++) {
    const int64_t ih = oh * g.sh - g.ph + kh;
    if (ih < 0 || ih >= g.H) continue;
    for (int64_t kw = 0; kw < g.KW; kw++) {
      const int64_t iw = ow * g.sw - g.pw + kw;
      if (iw < 0 || iw >= g.W) continue;
      const float v = x[ih * g.W + iw];
      if (bestIndex < 0 || v > best) {
        best = v;
        bestIndex = ih * g.W + iw;
      }
    }
  }
  return bestIndex;
}

}  // namespace

void maxPool2d(const PoolGeom& g, const float* x, float* y) {
  forEachPlane(g, [&](int64_t p) {
    const float* xp = x + p * g.H * g.W;
    float* yp = y + p * g.OH * g.OW;
    for (int64_t oh = 0; oh < g.OH; oh++) {
      for (int64_t ow = 0; ow < g.OW; ow++) {
        const int64_t i = argmaxWindow(g, xp, oh, ow);
        yp[oh * g.OW + ow] = i < 0 ? -std::numeric_limits<float>::infinity() : xp[i];
      }
    }
  });
}

void maxPool2dBackward(const PoolGeom& g, const float* dy, const float* x, float* dx) {
  forEachPlane(g, [&](int64_t p) {
    const float* xp = x + p * g.H * g.W;
    const float* dyp = dy + p * g.OH * g.OW;
    float* dxp = dx + p * g.H * g.W;
    std::memset(dxp, 0, static_cast<size_t>(g.H * g.W) * sizeof(float));
    for (int64_t oh = 0; oh < g.OH; oh++) {
      for (int64_t ow = 0; ow < g.OW; ow++) {
        const int64_t i = argmaxWindow(g, xp, oh, ow);
        if (i >= 0) dxp[i] += dyp[oh * g.OW + ow];
      }
    }
  });
}

void maxPool2dGather(const PoolGeom& g, const float* gx, const float* x, float* y) {
  forEachPlane(g, [&](int64_t p) {
    const float* xp = x + p * g.H * g.W;
    const float* gp = gx + p * g.H * g.W;
    float* yp = y + p * g.OH * g.OW;
    for (int64_t oh = 0; oh < g.OH; oh++) {
      for (int64_t ow = 0; ow < g.OW; ow++) {
        const int64_t i = argmaxWindow(g, xp, oh, ow);
        yp[oh * g.OW + ow] = i < 0 ? 0.f : gp[i];
      }
    }
  });
}

void avgPool2d(const PoolGeom& g, const float* x, float* y) {
  const float scale = 1.f / static_cast<float>(g.KH * g.KW);
  forEachPlane(g, [&](int64_t p) {
    const float* xp = x + p * g.H * g.W;
    float* yp = y + p * g.OH * g.OW;
    for (int64_t oh = 0; oh < g.OH; oh++) {
      for (int64_t ow = 0; ow < g.OW; ow++) {
        float sum = 0.f;
        for (int64_t kh = 0; kh < g.KH; kh++) {
          const int64_t ih = oh * g.sh - g.ph + kh;
          if (ih < 0 || ih >= g.H) continue;
          for (int64_t kw = 0; kw < g.KW; kw++) {
            const int64_t iw = ow * g.sw - g.pw + kw;
            if (iw >= 0 && iw < g.W) sum += xp[ih * g.W + iw];
          }
        }
        yp[oh * g.OW + ow] = sum * scale;
      }
    }
  });
}

void avgPool2dBackward(const PoolGeom& g, const float* dy, float* dx) {
  const float scale = 1.f / static_cast<float>(g.KH * g.KW);
  forEachPlane(g, [&](int64_t p) {
    const float* dyp = dy + p * g.OH * g.OW;
    float* dxp = dx + p * g.H * g.W;
    std::memset(dxp, 0, static_cast<size_t>(g.H * g.W) * sizeof(float));
    for (int64_t oh = 0; oh < g.OH; oh++) {
      for (int64_t ow = 0; ow < g.OW; ow++) {
        const float share = dyp[oh * g.OW + ow] * scale;
        for (int64_t kh = 0; kh < g.KH; kh++) {
          const int64_t ih = oh * g.sh - g.ph + kh;
          if (ih < 0 || ih >= g.H) continue;
          for (int64_t kw = 0; kw < g.KW; kw++) {
            const int64_t iw = ow * g.sw - g.pw + kw;
            if (iw >= 0 && iw < g.W) dxp[ih * g.W + iw] += share;
          }
        }
      }
    }
  });
}

}  // namespace lowbit
