// Training-mode BatchNorm over x [N, C, S] (per-channel batch statistics) and number-bound clamp
// (ReLU6), forward and backward: the batchNorm / batchNormBackward / batchNormStats / clamp /
// clampBackward primitives of the native backend (src/backend/reference/batchnorm.ts is the spec).
#pragma once
#include <cstdint>

namespace lowbit {

// A clamp [lo, hi] after the normalization (BatchNorm -> ReLU6 as one op), and for the backward
// the BatchNorm bias (to recompute the unclamped output for clamp's gradient mask).
struct BnClamp {
  float lo, hi;
  const float* bias;
};

// y = (x - mean_c) * (w_c / sqrt(var_c + eps)) + b_c (as one fma), clamped to [lo, hi] when
// `clamp` is set. stats: null, or batchNormStats(x)'s [mean (c), variance (c)], which then stand in
// for the statistics (two passes over x fewer).
void batchNormForward(const float* x, const float* w, const float* b, const float* stats, const BnClamp* clamp, float* y,
                      int64_t n, int64_t c, int64_t s, float eps);
// dx (n*c*s), dw (c), db (c) of batchNormForward for the output gradient g (stats and clamp as there).
void batchNormBackward(const float* g, const float* x, const float* w, const float* stats, const BnClamp* clamp, float* dx,
                       float* dw, float* db, int64_t n, int64_t c, int64_t s, float eps);
// out[ch] = mean, out[c + ch] = biased variance.
void batchNormStats(const float* x, float* out, int64_t n, int64_t c, int64_t s);
// batchNormStats's adjoint: dx = (x - mean_c) * (2 g[c + ch] / M) + g[ch] / M (M = n * s), the
// per-channel factors in double, stats = batchNormStats(x).
void batchNormStatsBackward(const float* g, const float* x, const float* stats, float* dx, int64_t n, int64_t c, int64_t s);
// low = lo > x ? lo : x; y = low > hi ? hi : low.
void clampForward(const float* x, float* y, int64_t count, float lo, float hi);
// dx = g where neither bound clamped x, else 0.
void clampBackward(const float* g, const float* x, float* dx, int64_t count, float lo, float hi);

}  // namespace lowbit
