// Stride-1 convolutions as "wide" implicit GEMMs (AVX-512), for the small channel counts where
// packing an im2col matrix costs more than the products (LeNet-style layers).
//
// With the input zero-padded to (Cg, Hp, Wp), output pixel (oh, ow) reads input element
// (oh * Wp + ow) + koff[k] for tap k = (c, kh, kw), koff[k] = (c * Hp + kh * dh) * Wp + kw * dw.
// Computing the output "wide" -- rows of Wp columns, the last Wp - OW of each row junk -- makes
// one sample's convolution a single GEMM  wide (Og, Nw) = w (Og, Cg*KH*KW) . B  whose row k is the
// padded input shifted by koff[k]; Nw = (OH - 1) * Wp + OW. An epilogue turns wide rows into the
// output (bias, ReLU, max pooling).
#pragma once
#include <cstdint>
#include <limits>

#include "conv.h"

namespace lowbit {

constexpr float kNoClamp = std::numeric_limits<float>::infinity();

// What happens to the conv output before it is stored: * scale[o] (when scale != nullptr: a folded
// eval-mode BatchNorm), + bias[o] (when bias != nullptr), then ReLU (when relu), then min(v, hi)
// (hi = kNoClamp: none; ReLU6 is relu with hi 6; NaN stays NaN), then max pooling over (pkh, pkw)
// windows with stride (psh, psw), no padding (pkh == 0: no pooling). y is (N, O, PH, PW) with
// PH = (OH - pkh) / psh + 1 when pooling, else (N, O, OH, OW). The wide kernels take no scale.
struct ConvEpilogue {
  const float* scale = nullptr;
  const float* bias = nullptr;
  bool relu = false;
  float hi = kNoClamp;
  int64_t pkh = 0, pkw = 0, psh = 1, psw = 1;
};

// True when the wide kernels handle g (AVX-512, stride 1, at most 64 output channels per group,
// a padded input of at most 128 K floats per sample and group).
bool convWideSupported(const ConvGeom& g);

// y = epilogue(conv2d(x, w)); requires convWideSupported(g).
void convWideForward(const ConvGeom& g, const float* x, const float* w, const ConvEpilogue& e, float* y);

// dw = adjoint of conv2d in w applied to dy (overwrites dw); requires convWideSupported(g).
void convWideBackwardWeight(const ConvGeom& g, const float* x, const float* dy, float* dw);

// dx = adjoint of conv2d in x applied to dy (overwrites dx); requires convWideSupported(g).
void convWideBackwardInput(const ConvGeom& g, const float* dy, const float* w, float* dx);

// Applies `e` to output channel oc's conv plane src (OH, OW) with row stride ld, writing the plane
// of y (dst may be src when there is no pooling).
void convEpiloguePlane(const ConvEpilogue& e, int64_t OH, int64_t OW, const float* src, int64_t ld, int64_t oc,
                       float* dst);

}  // namespace lowbit
