// conv2d forward and its two adjoints via im2col + SGEMM, parallel over the batch.
//
// For sample n and group gr, with Cg = C/groups, Og = O/groups, P = OH*OW:
//   col   (Cg*KH*KW, P) : col[(c,kh,kw), (oh,ow)] = x[n, gr*Cg + c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
//   y_g   (Og, P)       = w_g (Og, Cg*KH*KW) . col
//   dcol  (Cg*KH*KW, P) = w_g^T . dy_g           then col2im adds dcol back into dx
//   dw_g  (Og, Cg*KH*KW) += dy_g (Og, P) . col^T   summed over the batch
#include "conv.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "convwide.h"
#include "dwconv.h"
#include "cpu.h"
#include "gemm.h"
#include "scratch.h"
#include "threadpool.h"

namespace lowbit {

namespace {

thread_local ScratchBuffer tCol;

int64_t channelsPerGroup(const ConvGeom& g) { return g.C / g.groups; }
int64_t colRows(const ConvGeom& g) { return channelsPerGroup(g) * g.KH * g.KW; }
int64_t outPixels(const ConvGeom& g) { return g.OH * g.OW; }

// A 1x1, stride 1, unpadded conv reads x itself as its column matrix.
bool isPointwise(const ConvGeom& g) {
  return g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
}

// The output columns [lo, hi) of a row whose input column iw0 + ow * sw lies inside [0, W).
void validColumns(const ConvGeom& g, int64_t iw0, int64_t* lo, int64_t* hi) {
  *lo = iw0 >= 0 ? 0 : std::min(g.OW, (-iw0 + g.sw - 1) / g.sw);
  *hi = g.W - iw0 <= 0 ? 0 : std::min(g.OW, (g.W - iw0 + g.sw - 1) / g.sw);
  if (*hi < *lo) *hi = *lo;
}

// out[ow] = in[2 ow] for ow in [lo, hi), hi - lo <= 16: the even columns of up to 32 input floats
// by one two-source permute (the stride-2 rows of a stem conv's column matrix).
LOWBIT_TARGET_AVX512 void evenColumns16(const float* in, int64_t lo, int64_t hi, float* out) {
  const int64_t n = hi - lo, span = 2 * n - 1;  // input floats read: in[2 lo] .. in[2 (hi - 1)]
  const __m512 a = _mm512_maskz_loadu_ps(span >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << span) - 1u), in + 2 * lo);
  const __m512 b = span > 16 ? _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (span - 16)) - 1u), in + 2 * lo + 16) : _mm512_setzero_ps();
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  _mm512_mask_storeu_ps(out + lo, static_cast<__mmask16>((1u << n) - 1u), _mm512_permutex2var_ps(a, even, b));
}

// xg is (Cg, H, W) (the group's channels of one sample); col is (Cg*KH*KW, OH*OW).
void im2col(const ConvGeom& g, const float* xg, float* col) {
  const bool even16 = g.sw == 2 && activeIsa() == Isa::Avx512;
  const int64_t Cg = channelsPerGroup(g);
  for (int64_t c = 0; c < Cg; c++) {
    const float* plane = xg + c * g.H * g.W;
    for (int64_t kh = 0; kh < g.KH; kh++) {
      for (int64_t kw = 0; kw < g.KW; kw++) {
        float* row = col + ((c * g.KH + kh) * g.KW + kw) * outPixels(g);
        const int64_t iw0 = -g.pw + kw * g.dw;
        int64_t lo, hi;
        validColumns(g, iw0, &lo, &hi);
        for (int64_t oh = 0; oh < g.OH; oh++) {
          const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
          float* out = row + oh * g.OW;
          if (ih < 0 || ih >= g.H) {
            std::memset(out, 0, static_cast<size_t>(g.OW) * sizeof(float));
            continue;
          }
          const float* in = plane + ih * g.W + iw0;
          for (int64_t ow = 0; ow < lo; ow++) out[ow] = 0.f;
          if (g.sw == 1 && hi - lo >= 64) {
            std::memcpy(out + lo, in + lo, static_cast<size_t>(hi - lo) * sizeof(float));
          } else if (g.sw == 1) {  // short rows: an inline loop beats a memcpy call
            for (int64_t ow = lo; ow < hi; ow++) out[ow] = in[ow];
          } else if (even16 && hi - lo <= 16) {
            if (hi > lo) evenColumns16(in, lo, hi, out);
          } else {
            for (int64_t ow = lo; ow < hi; ow++) out[ow] = in[ow * g.sw];
          }
          for (int64_t ow = hi; ow < g.OW; ow++) out[ow] = 0.f;
        }
      }
    }
  }
}

// dxg (Cg, H, W) += col2im(col); col is (Cg*KH*KW, OH*OW).
void col2imAdd(const ConvGeom& g, const float* col, float* dxg) {
  const int64_t Cg = channelsPerGroup(g);
  for (int64_t c = 0; c < Cg; c++) {
    float* plane = dxg + c * g.H * g.W;
    for (int64_t kh = 0; kh < g.KH; kh++) {
      for (int64_t kw = 0; kw < g.KW; kw++) {
        const float* row = col + ((c * g.KH + kh) * g.KW + kw) * outPixels(g);
        const int64_t iw0 = -g.pw + kw * g.dw;
        int64_t lo, hi;
        validColumns(g, iw0, &lo, &hi);
        for (int64_t oh = 0; oh < g.OH; oh++) {
          const int64_t ih = oh * g.sh - g.ph + kh * g.dh;
          if (ih < 0 || ih >= g.H) continue;
          float* out = plane + ih * g.W + iw0;
          const float* in = row + oh * g.OW;
          if (g.sw == 1) {
            for (int64_t ow = lo; ow < hi; ow++) out[ow] += in[ow];
          } else {
            for (int64_t ow = lo; ow < hi; ow++) out[ow * g.sw] += in[ow];
          }
        }
      }
    }
  }
}

// The unpacked kernels (sgemmSmallNN / sgemmDotNT) beat packing for the skinny per-sample
// products of small convolutions; they are AVX-512 only (elsewhere the packed SGEMM runs).
bool smallKernels() { return activeIsa() == Isa::Avx512; }

// Runs body(n, parallelGemm) for every sample: in parallel over samples when there are enough
// of them (each sample then uses the serial SGEMM), else one by one with a parallel SGEMM.
template <class Body>
void forEachSample(const ConvGeom& g, double flopsPerSample, Body&& body) {
  if (g.N >= poolThreads()) {
    parallelFor(g.N, flopsPerSample * static_cast<double>(g.N), [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; n++) body(n, false);
    });
  } else {
    for (int64_t n = 0; n < g.N; n++) body(n, true);
  }
}

void runGemm(const GemmArgs& args, bool parallel) {
  if (parallel) {
    sgemm(args);
  } else {
    sgemmSerial(args);
  }
}

double convFlops(const ConvGeom& g) {
  return 2.0 * static_cast<double>(g.O) * static_cast<double>(colRows(g)) * static_cast<double>(outPixels(g));
}

thread_local ScratchBuffer tPad, tLanes;

// Stride-1 (in W) convolution with few output channels, without a column matrix: the input is
// zero-padded once per sample and group, and each output row is a small GEMM whose B rows are
// the padded input rows shifted by each tap (sgemmSmallOffsets).
bool useImplicit(const ConvGeom& g) {
  return smallKernels() && g.sw == 1 && g.O / g.groups <= 32 && !isPointwise(g);
}

// An ungrouped 1x1 conv (AVX-512) whose per-image product is small: few output channels, few
// input channels or a small map (MobileNet's 1x1 convs; at P <= 64 even 128 x 128 channels ran
// 2-3x slower through the packed SGEMM, one image at a time). It runs several images per call.
bool pointwiseSamples(const ConvGeom& g) {
  return smallKernels() && isPointwise(g) && g.groups == 1 && (g.O <= 24 || g.C <= 32 || outPixels(g) <= 64);
}

// Images per sgemmSmallNNSamples call: three (each weight broadcast then feeds three FMAs), fewer
// when the batch would otherwise leave a pool thread idle (batch 2 on 2 threads: one each).
int64_t imagesPerCall(const ConvGeom& g) { return std::clamp<int64_t>(g.N / std::max(1, poolThreads()), 1, 3); }

// conv2dFused's no-pooling epilogue (nullptr: none) in the form the GEMM kernels apply it.
RowEpilogue rowEpilogueOf(const ConvEpilogue* e) {
  RowEpilogue ep;
  if (e != nullptr) ep.scale = e->scale, ep.bias = e->bias, ep.relu = e->relu, ep.hi = e->hi;
  return ep;
}

// The no-pooling epilogue of conv2dFused on sample n's output planes, in place (nullptr: none).
void sampleEpilogue(const ConvGeom& g, const ConvEpilogue* e, int64_t n, float* y) {
  if (e == nullptr) return;
  const int64_t P = outPixels(g);
  for (int64_t o = 0; o < g.O; o++) {
    float* plane = y + (n * g.O + o) * P;
    convEpiloguePlane(*e, g.OH, g.OW, plane, g.OW, o, plane);
  }
}

void convForwardImplicit(const ConvGeom& g, const float* x, const float* w, const ConvEpilogue* e, float* y) {
  const int64_t Cg = channelsPerGroup(g), Og = g.O / g.groups, R = colRows(g), P = outPixels(g);
  const int64_t Hp = g.H + 2 * g.ph, Wp = g.W + 2 * g.pw;
  std::vector<int64_t> koff(static_cast<size_t>(R));
  for (int64_t c = 0; c < Cg; c++)
    for (int64_t kh = 0; kh < g.KH; kh++)
      for (int64_t kw = 0; kw < g.KW; kw++) koff[(c * g.KH + kh) * g.KW + kw] = (c * Hp + kh * g.dh) * Wp + kw * g.dw;
  const bool padded = g.ph != 0 || g.pw != 0;
  parallelFor(g.N, convFlops(g) * static_cast<double>(g.N), [&](int64_t n0, int64_t n1) {
    float* pad = padded ? tPad.get(static_cast<size_t>(Cg * Hp * Wp)) : nullptr;
    if (padded) std::memset(pad, 0, static_cast<size_t>(Cg * Hp * Wp) * sizeof(float));
    for (int64_t n = n0; n < n1; n++) {
      for (int64_t gr = 0; gr < g.groups; gr++) {
        const float* xg = x + (n * g.C + gr * Cg) * g.H * g.W;
        const float* src = xg;
        if (padded) {  // borders stay zero from the memset above
          for (int64_t c = 0; c < Cg; c++)
            for (int64_t h = 0; h < g.H; h++)
              std::memcpy(pad + (c * Hp + h + g.ph) * Wp + g.pw, xg + (c * g.H + h) * g.W,
                          static_cast<size_t>(g.W) * sizeof(float));
          src = pad;
        }
        float* yg = y + (n * g.O + gr * Og) * P;
        const float* wg = w + gr * Og * R;
        for (int64_t oh = 0; oh < g.OH; oh++) {
          sgemmSmallOffsets(Og, g.OW, R, wg, R, 1, src + oh * g.sh * Wp, koff.data(), yg + oh * g.OW, P);
        }
      }
      sampleEpilogue(g, e, n, y);
    }
  });
}

// y = conv2d(x, w), then the no-pooling epilogue `e` (nullptr: none) on each sample's planes as soon
// as they are computed (in place, while they are in cache).
void convForward(const ConvGeom& g, const float* x, const float* w, const ConvEpilogue* e, float* y) {
  if (depthwiseConvSupported(g)) return depthwiseConvForward(g, x, w, y, e);
  if (convWideSupported(g) && !isPointwise(g) && (e == nullptr || e->scale == nullptr)) {
    return convWideForward(g, x, w, e != nullptr ? *e : ConvEpilogue{}, y);
  }
  if (useImplicit(g)) return convForwardImplicit(g, x, w, e, y);
  const int64_t Cg = channelsPerGroup(g), Og = g.O / g.groups, R = colRows(g), P = outPixels(g);
  const RowEpilogue ep = rowEpilogueOf(e);
  const int64_t per = imagesPerCall(g), calls = (g.N + per - 1) / per;
  if (pointwiseSamples(g)) {
    // Up to three images per call, so that each weight broadcast feeds up to three FMAs;
    // conv2dFused's epilogue (no pooling here) is applied to the accumulators before the store.
    parallelFor(calls, convFlops(g) * static_cast<double>(g.N), [&](int64_t t0, int64_t t1) {
      const int64_t n0 = per * t0, n1 = std::min(g.N, per * t1);
      sgemmSmallNNSamples(n1 - n0, g.O, P, g.C, w, g.C, 1, x + n0 * g.C * P, P, g.C * P, y + n0 * g.O * P, P, g.O * P,
                          e != nullptr ? &ep : nullptr);
    });
    return;
  }
  if (smallKernels() && g.groups == 1 && (Og <= 24 || R <= 32)) {
    // The same product over the images' column matrices (a strided stem conv: 1 -> 16 channels,
    // 3x3, stride 2), the epilogue in its registers.
    parallelFor(calls, convFlops(g) * static_cast<double>(g.N), [&](int64_t t0, int64_t t1) {
      float* col = tCol.get(static_cast<size_t>(per * R * P));
      for (int64_t t = t0; t < t1; t++) {
        const int64_t n0 = per * t, n1 = std::min(g.N, n0 + per);
        for (int64_t n = n0; n < n1; n++) im2col(g, x + n * g.C * g.H * g.W, col + (n - n0) * R * P);
        sgemmSmallNNSamples(n1 - n0, g.O, P, R, w, R, 1, col, P, R * P, y + n0 * g.O * P, P, g.O * P, e != nullptr ? &ep : nullptr);
      }
    });
    return;
  }
  forEachSample(g, convFlops(g), [&](int64_t n, bool parallel) {
    float* col = isPointwise(g) ? nullptr : tCol.get(static_cast<size_t>(R * P));
    for (int64_t gr = 0; gr < g.groups; gr++) {
      const float* xg = x + (n * g.C + gr * Cg) * g.H * g.W;
      if (col != nullptr) im2col(g, xg, col);
      const float* colg = col != nullptr ? col : xg;
      float* yg = y + (n * g.O + gr * Og) * P;
      if (smallKernels() && (Og <= 24 || R <= 32)) {
        sgemmSmallNN(Og, P, R, w + gr * Og * R, R, 1, colg, P, 0.f, yg, P);
        continue;
      }
      GemmArgs args;  // y_g (Og, P) = w_g (Og, R) . col (R, P)
      args.M = Og, args.N = P, args.K = R;
      args.A = w + gr * Og * R, args.lda = R;
      args.B = col != nullptr ? col : xg, args.ldb = P;
      args.C = y + (n * g.O + gr * Og) * P, args.ldc = P;
      runGemm(args, parallel);
    }
    sampleEpilogue(g, e, n, y);
  });
}

}  // namespace

void conv2dForward(const ConvGeom& g, const float* x, const float* w, float* y) { convForward(g, x, w, nullptr, y); }

void conv2dBackwardInput(const ConvGeom& g, const float* dy, const float* w, float* dx) {
  if (depthwiseConvSupported(g)) return depthwiseConvBackwardInput(g, dy, w, dx);
  if (convWideSupported(g) && !isPointwise(g)) return convWideBackwardInput(g, dy, w, dx);
  // Stride 1: dx is the forward convolution of dy, padded by d*(k-1) - p, with the flipped and
  // transposed weights -- the implicit (column-free) path when its padding is non-negative.
  const int64_t padH = g.dh * (g.KH - 1) - g.ph, padW = g.dw * (g.KW - 1) - g.pw;
  if (g.sh == 1 && g.sw == 1 && padH >= 0 && padW >= 0) {
    const int64_t Cg = channelsPerGroup(g), Og = g.O / g.groups;
    ConvGeom t{g.N, g.O, g.OH, g.OW, g.C, g.KH, g.KW, g.H, g.W, 1, 1, padH, padW, g.dh, g.dw, g.groups};
    if (convWideSupported(t) || useImplicit(t)) {
      std::vector<float> wt(static_cast<size_t>(g.C * Og * g.KH * g.KW));
      for (int64_t gr = 0; gr < g.groups; gr++)
        for (int64_t ci = 0; ci < Cg; ci++)
          for (int64_t o = 0; o < Og; o++)
            for (int64_t kh = 0; kh < g.KH; kh++)
              for (int64_t kw = 0; kw < g.KW; kw++) {
                wt[(((gr * Cg + ci) * Og + o) * g.KH + kh) * g.KW + kw] =
                    w[(((gr * Og + o) * Cg + ci) * g.KH + (g.KH - 1 - kh)) * g.KW + (g.KW - 1 - kw)];
              }
      if (convWideSupported(t)) return convWideForward(t, dy, wt.data(), ConvEpilogue{}, dx);
      return convForwardImplicit(t, dy, wt.data(), nullptr, dx);
    }
  }
  const int64_t Cg = channelsPerGroup(g), Og = g.O / g.groups, R = colRows(g), P = outPixels(g);
  if (smallKernels() && isPointwise(g) && g.groups == 1 && (g.O <= 32 || P <= 64)) {
    // dx_n (C, P) = w^T (C, O) . dy_n (O, P), up to three images per call (as the forward)
    const int64_t per = imagesPerCall(g);
    parallelFor((g.N + per - 1) / per, convFlops(g) * static_cast<double>(g.N), [&](int64_t t0, int64_t t1) {
      const int64_t n0 = per * t0, n1 = std::min(g.N, per * t1);
      sgemmSmallNNSamples(n1 - n0, g.C, P, g.O, w, 1, g.C, dy + n0 * g.O * P, P, g.O * P, dx + n0 * g.C * P, P, g.C * P);
    });
    return;
  }
  forEachSample(g, convFlops(g), [&](int64_t n, bool parallel) {
    float* dxn = dx + n * g.C * g.H * g.W;
    const bool direct = isPointwise(g);
    if (!direct) std::memset(dxn, 0, static_cast<size_t>(g.C * g.H * g.W) * sizeof(float));
    float* dcol = direct ? nullptr : tCol.get(static_cast<size_t>(R * P));
    for (int64_t gr = 0; gr < g.groups; gr++) {
      float* target = direct ? dxn + gr * Cg * g.H * g.W : dcol;
      if (smallKernels() && Og <= 32) {  // dcol (R, P) = w_g^T (R, Og) . dy_g (Og, P)
        sgemmSmallNN(R, P, Og, w + gr * Og * R, 1, R, dy + (n * g.O + gr * Og) * P, P, 0.f, target, P);
        if (!direct) col2imAdd(g, dcol, dxn + gr * Cg * g.H * g.W);
        continue;
      }
      GemmArgs args;  // dcol (R, P) = w_g^T (R, Og) . dy_g (Og, P)
      args.transA = true;
      args.M = R, args.N = P, args.K = Og;
      args.A = w + gr * Og * R, args.lda = R;
      args.B = dy + (n * g.O + gr * Og) * P, args.ldb = P;
      args.C = direct ? dxn + gr * Cg * g.H * g.W : dcol, args.ldc = P;
      runGemm(args, parallel);
      if (!direct) col2imAdd(g, dcol, dxn + gr * Cg * g.H * g.W);
    }
  });
}

void conv2dBackwardWeight(const ConvGeom& g, const float* x, const float* dy, float* dw) {
  if (depthwiseConvSupported(g)) return depthwiseConvBackwardWeight(g, x, dy, dw);
  if (convWideSupported(g) && !isPointwise(g)) return convWideBackwardWeight(g, x, dy, dw);
  const int64_t Cg = channelsPerGroup(g), Og = g.O / g.groups, R = colRows(g), P = outPixels(g);
  const int64_t weightSize = g.O * R;
  // Each task sums its samples into its own copy of dw (task 0 into dw itself); then they add up.
  const double work = convFlops(g) * static_cast<double>(g.N);
  const int tasks = static_cast<int>(std::min<int64_t>(
      g.N, work < kInlineWork || poolInsideJob() ? 1 : poolThreads()));
  std::vector<float> partials(static_cast<size_t>(std::max(0, tasks - 1) * weightSize));
  struct Ctx {
    const ConvGeom* g;
    const float *x, *dy;
    float *dw, *partials;
    int64_t Cg, Og, R, P, weightSize;
    bool parallelGemm;
  } ctx{&g, x, dy, dw, partials.data(), Cg, Og, R, P, weightSize, tasks == 1};
  auto task = [](void* raw, int t, int nt) {
    const Ctx& c = *static_cast<Ctx*>(raw);
    const ConvGeom& g = *c.g;
    float* acc = t == 0 ? c.dw : c.partials + (t - 1) * c.weightSize;
    std::memset(acc, 0, static_cast<size_t>(c.weightSize) * sizeof(float));
    float* col = isPointwise(g) ? nullptr : tCol.get(static_cast<size_t>(c.R * c.P));
    // Small layers: 16-lane partial sums over all this task's samples, reduced once at the end.
    // Not on maps of fewer than 64 pixels: there each sample adds only 1-3 vectors per weight to
    // the lane accumulators (16 floats per weight), and moving those costs more than the packed
    // GEMM (MobileNet's 1x1 convs on 4x4 maps: 7x slower).
    float* lanes = nullptr;
    if (smallKernels() && c.Og <= 64 && c.P >= 64) {
      lanes = tLanes.get(static_cast<size_t>(c.weightSize * 16));
      std::memset(lanes, 0, static_cast<size_t>(c.weightSize * 16) * sizeof(float));
    }
    for (int64_t n = g.N * t / nt; n < g.N * (t + 1) / nt; n++) {
      for (int64_t gr = 0; gr < g.groups; gr++) {
        const float* xg = c.x + (n * g.C + gr * c.Cg) * g.H * g.W;
        if (col != nullptr) im2col(g, xg, col);
        const float* colg = col != nullptr ? col : xg;
        if (lanes != nullptr) {  // dw_g (Og, R) += dy_g (Og, P) . col^T (P, R), lane-wise
          sgemmDotNTAcc(c.Og, c.R, c.P, c.dy + (n * g.O + gr * c.Og) * c.P, c.P, colg, c.P, lanes + gr * c.Og * c.R * 16);
          continue;
        }
        GemmArgs args;  // dw_g (Og, R) += dy_g (Og, P) . col^T (P, R)
        args.transB = true;
        args.M = c.Og, args.N = c.R, args.K = c.P;
        args.A = c.dy + (n * g.O + gr * c.Og) * c.P, args.lda = c.P;
        args.B = col != nullptr ? col : xg, args.ldb = c.P;
        args.beta = 1.f;
        args.C = acc + gr * c.Og * c.R, args.ldc = c.R;
        runGemm(args, c.parallelGemm);
      }
    }
    if (lanes != nullptr) sgemmDotNTReduce(g.O, c.R, lanes, acc, c.R);
  };
  if (tasks <= 1) {
    task(&ctx, 0, 1);
    return;
  }
  poolRun(tasks, task, &ctx);
  for (int t = 1; t < tasks; t++) {
    const float* part = partials.data() + (t - 1) * weightSize;
    for (int64_t i = 0; i < weightSize; i++) dw[i] += part[i];
  }
}

void conv2dFused(const ConvGeom& g, const float* x, const float* w, const float* scale, const float* bias, bool relu,
                 float hi, int64_t pkh, int64_t pkw, int64_t psh, int64_t psw, float* y) {
  ConvEpilogue e;
  e.scale = scale;
  e.bias = bias;
  e.relu = relu;
  e.hi = hi;
  e.pkh = pkh, e.pkw = pkw, e.psh = psh, e.psw = psw;
  if (scale == nullptr && convWideSupported(g) && !isPointwise(g)) return convWideForward(g, x, w, e, y);
  // Without pooling the epilogue runs in place on each sample's planes right after the conv.
  if (pkh == 0) return convForward(g, x, w, &e, y);
  // Pooling on other geometries: the plain convolution into a temporary, then the epilogue per plane.
  const int64_t P = outPixels(g);
  const int64_t PH = pkh == 0 ? g.OH : (g.OH - pkh) / psh + 1, PW = pkh == 0 ? g.OW : (g.OW - pkw) / psw + 1;
  std::vector<float> conv(static_cast<size_t>(g.N * g.O * P));
  conv2dForward(g, x, w, conv.data());
  parallelFor(g.N * g.O, static_cast<double>(g.N * g.O * P), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      convEpiloguePlane(e, g.OH, g.OW, conv.data() + p * P, g.OW, p % g.O, y + p * PH * PW);
    }
  });
}

}  // namespace lowbit
