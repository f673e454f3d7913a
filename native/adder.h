// AdderNet's convolution (y = -sum |x_patch - w|) and its estimator gradient, as the reference
// kernels in src/backend/reference/adder.ts (same sums; float32 accumulation instead of float64).
#pragma once
#include <cstdint>

#include "conv.h"

namespace lowbit {

// y (N, O, OH, OW) = -sum over each receptive field of |patch - w|; zero padding counts as x = 0.
void adderConv2dForward(const ConvGeom& g, const float* x, const float* w, float* y);
// dx (like x, overwritten) = sum over outputs of gy * HardTanh(w - patch), scattered back to x's
// cells (padded cells dropped); outputs with gy == 0 are skipped (a NaN patch there adds nothing).
void adderConv2dGradInput(const ConvGeom& g, const float* gy, const float* x, const float* w, float* dx);
// dw (like w, overwritten) = sum over images and positions with gy != 0 of gy * (patch - w),
// summed per image as (sum gy * patch) - (sum gy) * w, across images in double.
void adderConv2dGradWeight(const ConvGeom& g, const float* gy, const float* x, const float* w, float* dw);

}  // namespace lowbit
