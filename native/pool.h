// Max and average pooling over NCHW planes, with their backward passes.
#pragma once
#include <cstdint>

namespace lowbit {

// x is (N, C, H, W), y is (N, C, OH, OW); windows (KH, KW) with stride (sh, sw) and
// padding (ph, pw) on both sides. relu (max pooling only): a ReLU fused in front -- each window's
// maximum m becomes m > 0 ? m : 0, and the backward passes route nothing through a window whose
// maximum is not positive (maxPool(relu(x)) and its gradient, without relu(x)).
struct PoolGeom {
  int64_t N, C, H, W, OH, OW, KH, KW, sh, sw, ph, pw;
  bool relu;
};

// y = max over each window (padding is -inf)
void maxPool2d(const PoolGeom& g, const float* x, float* y);
// dx (like x) = dy routed to the first maximum of each window
void maxPool2dBackward(const PoolGeom& g, const float* dy, const float* x, float* dx);
// y (like dy) = gx (like x) read at the first maximum of each window (0 where relu drops it)
void maxPool2dGather(const PoolGeom& g, const float* gx, const float* x, float* y);
// y = mean over each window, padded cells count in the divisor
void avgPool2d(const PoolGeom& g, const float* x, float* y);
// dx (like x) = adjoint of avgPool2d applied to dy
void avgPool2dBackward(const PoolGeom& g, const float* dy, float* dx);

}  // namespace lowbit
