// Depthwise conv2d (groups = C = O: one KHxKW filter per channel, NCHW activations) forward and its
// two adjoints, without a column matrix; the generic grouped path (conv.cc) would run im2col and a
// one-row GEMM per channel. See dwconv.cc.
#pragma once
#include <cstdint>

#include "conv.h"
#include "convwide.h"

namespace lowbit {

// Whether the depthwise kernels take g: groups = C = O (channel multiplier 1), dilation 1, and they
// are enabled (setDepthwiseConvEnabled). Any kernel size, stride and padding.
bool depthwiseConvSupported(const ConvGeom& g);

// Switches the depthwise kernels on or off (the generic grouped path then runs; for benchmarks and
// cross-checks); returns the previous setting. Process-wide, default on.
bool setDepthwiseConvEnabled(bool on);

// As conv2dForward / conv2dBackwardInput / conv2dBackwardWeight for a geometry depthwiseConvSupported takes.
// With `e` (no pooling: e->pkh == 0), each output plane gets the epilogue in place right after it
// is computed, while it is in L1.
void depthwiseConvForward(const ConvGeom& g, const float* x, const float* w, float* y, const ConvEpilogue* e = nullptr);
void depthwiseConvBackwardInput(const ConvGeom& g, const float* dy, const float* w, float* dx);
void depthwiseConvBackwardWeight(const ConvGeom& g, const float* x, const float* dy, float* dw);

// The kernel family the depthwise kernels run on here: "avx512", "avx2" or "scalar".
const char* depthwiseConvPathName();

}  // namespace lowbit
