// conv2d forward and its two adjoints (NCHW activations, OIHW weights) via im2col + SGEMM.
#pragma once
#include <cstdint>

namespace lowbit {

// x is (N, C, H, W), w is (O, C/groups, KH, KW), y is (N, O, OH, OW) with
// OH = (H + 2*ph - dh*(KH-1) - 1) / sh + 1 (same for OW); padding is zeros on both sides.
struct ConvGeom {
  int64_t N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups;
};

// y = conv2d(x, w)
void conv2dForward(const ConvGeom& g, const float* x, const float* w, float* y);
// dx = adjoint of conv2d in x applied to dy (overwrites dx)
void conv2dBackwardInput(const ConvGeom& g, const float* dy, const float* w, float* dx);
// dw = adjoint of conv2d in w applied to dy (overwrites dw)
void conv2dBackwardWeight(const ConvGeom& g, const float* x, const float* dy, float* dw);

// y = maxPool(min(relu(conv2d(x, w) * scale + bias), hi)) with each stage optional: scale and bias
// may be null (per output channel; the product is rounded before the bias is added), relu off,
// hi = +inf for no upper clamp (NaN stays NaN), pkh == 0 means no pooling; pooling windows
// (pkh, pkw), stride (psh, psw), no padding. y is (N, O, PH, PW), PH = (OH - pkh) / psh + 1 (or
// (N, O, OH, OW) without pooling).
void conv2dFused(const ConvGeom& g, const float* x, const float* w, const float* scale, const float* bias, bool relu,
                 float hi, int64_t pkh, int64_t pkw, int64_t psh, int64_t psw, float* y);

}  // namespace lowbit
