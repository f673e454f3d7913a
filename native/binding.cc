// N-API entry points. Every function reads and writes the caller's Float32Arrays in place;
// shapes arrive as plain numbers and are checked against the buffer lengths before any access.
#include <napi.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdlib>
#include <cstring>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "conv.h"
#include "dwconv.h"
#include "intdw.h"
#include "decode-step.h"
#include "cpu.h"
#include "elementwise.h"
#include "gemm.h"
#include "adder.h"
#include "amx.h"
#include "intgemm.h"
#include "conv3x3.h"
#include "intmodel.h"
#include "intadd.h"
#include "intpool.h"
#include "signadd.h"
#include "xnorconv.h"
#include "irnn.h"
#include "intgru.h"
#include "intlmhead.h"
#include "optim.h"
#include "scratch.h"
#include "inttransformer.h"
#include "pool.h"
#include "recurrent.h"
#include "tensorops.h"
#include "threadpool.h"
#include "transformer.h"
#include "batchnorm.h"

namespace {

using lowbit::GemmArgs;

struct F32 {
  float* data = nullptr;
  size_t length = 0;
};

bool fail(const Napi::Env& env, const std::string& message) {
  Napi::TypeError::New(env, "lowbit_native: " + message).ThrowAsJavaScriptException();
  return false;
}

bool argF32(const Napi::CallbackInfo& info, size_t i, F32* out) {
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    return fail(info.Env(), "argument " + std::to_string(i) + " must be a Float32Array");
  }
  auto array = info[i].As<Napi::Float32Array>();
  out->data = array.Data();
  out->length = array.ElementLength();
  return true;
}

bool argInt(const Napi::CallbackInfo& info, size_t i, int64_t* out) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    return fail(info.Env(), "argument " + std::to_string(i) + " must be a number");
  }
  *out = info[i].As<Napi::Number>().Int64Value();
  return true;
}

// Reads `count` integers from an Int32Array argument (the geometry of conv and pool calls).
bool argInts(const Napi::CallbackInfo& info, size_t i, int64_t* out, size_t count) {
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    return fail(info.Env(), "argument " + std::to_string(i) + " must be an Int32Array");
  }
  auto array = info[i].As<Napi::Int32Array>();
  if (array.ElementLength() != count) return fail(info.Env(), "argument " + std::to_string(i) + " has wrong length");
  for (size_t k = 0; k < count; k++) out[k] = array[k];
  return true;
}

// Largest element index + 1 that a (rows, cols) matrix with row stride ld touches.
int64_t extent(int64_t rows, int64_t cols, int64_t ld) { return rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols; }

// ---------------------------------------------------------------- info, threads, probe

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("isa", lowbit::isaName(lowbit::activeIsa()));
  out.Set("threads", lowbit::poolThreads());
  Napi::Array features = Napi::Array::New(env);
  uint32_t n = 0;
  for (const auto& f : lowbit::cpuFeatures()) features.Set(n++, f);
  out.Set("features", features);
  out.Set("amx", lowbit::amxStatus());
  return out;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  int64_t n = 0;
  if (!argInt(info, 0, &n)) return info.Env().Undefined();
  if (n < 1 || n > 256) {
    fail(info.Env(), "threads must be in [1, 256]");
    return info.Env().Undefined();
  }
  lowbit::poolSetThreads(static_cast<int>(n));
  return info.Env().Undefined();
}

// fmaPeak(threads, seconds?) and loadFedPeak(threads, seconds?): GFLOP/s of a probe (cpu.h).
Napi::Value RunProbe(const Napi::CallbackInfo& info, double (*probe)(int, double)) {
  int64_t threads = 1;
  if (!argInt(info, 0, &threads)) return info.Env().Undefined();
  double seconds = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0.2;
  if (threads < 1 || threads > 256) threads = 1;
  return Napi::Number::New(info.Env(), probe(static_cast<int>(threads), seconds));
}
Napi::Value FmaPeak(const Napi::CallbackInfo& info) { return RunProbe(info, lowbit::fmaPeakGflops); }
Napi::Value LoadFedPeak(const Napi::CallbackInfo& info) { return RunProbe(info, lowbit::loadFedFmaGflops); }

// ---------------------------------------------------------------- optimizers
// Reads `count` numbers starting at argument i.
bool argNumbers(const Napi::CallbackInfo& info, size_t i, double* out, size_t count) {
  for (size_t k = 0; k < count; k++) {
    if (i + k >= info.Length() || !info[i + k].IsNumber()) return fail(info.Env(), "argument " + std::to_string(i + k) + " must be a number");
    out[k] = info[i + k].As<Napi::Number>().DoubleValue();
  }
  return true;
}

// sgdMomentumStep(w, g, buf, lr, momentum, keep, weightDecay, sign, first, nesterov): in place
Napi::Value SgdMomentumStep(const Napi::CallbackInfo& info) {
  F32 w, g, buf;
  double h[5];
  if (!argF32(info, 0, &w) || !argF32(info, 1, &g) || !argF32(info, 2, &buf) || !argNumbers(info, 3, h, 5)) return info.Env().Undefined();
  if (g.length != w.length || buf.length != w.length) {
    fail(info.Env(), "sgdMomentumStep: w, g and buf must have one length");
    return info.Env().Undefined();
  }
  const bool first = info.Length() > 8 && info[8].ToBoolean().Value();
  const bool nesterov = info.Length() > 9 && info[9].ToBoolean().Value();
  lowbit::sgdMomentumStep(w.data, g.data, buf.data, static_cast<int64_t>(w.length), h[0], h[1], h[2], h[3], h[4], first, nesterov);
  return info.Env().Undefined();
}

// adamStep(w, g, m, v, vMax | null, beta1, beta2, l2, decay, stepSize, bias2Sqrt, eps, sign): in place
Napi::Value AdamStep(const Napi::CallbackInfo& info) {
  F32 w, g, m, v, vMax;
  double h[8];
  const bool amsgrad = info.Length() > 4 && !info[4].IsNull() && !info[4].IsUndefined();
  if (!argF32(info, 0, &w) || !argF32(info, 1, &g) || !argF32(info, 2, &m) || !argF32(info, 3, &v) ||
      (amsgrad && !argF32(info, 4, &vMax)) || !argNumbers(info, 5, h, 8)) {
    return info.Env().Undefined();
  }
  if (g.length != w.length || m.length != w.length || v.length != w.length || (amsgrad && vMax.length != w.length)) {
    fail(info.Env(), "adamStep: w, g, m, v (and vMax) must have one length");
    return info.Env().Undefined();
  }
  lowbit::adamStep(w.data, g.data, m.data, v.data, amsgrad ? vMax.data : nullptr, static_cast<int64_t>(w.length), h[0], h[1], h[2], h[3],
                   h[4], h[5], h[6], h[7]);
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- sgemm
// sgemm(transA, transB, M, N, K, A, lda, B, ldb, beta, C, ldc, batch, strideA, strideB, strideC)
Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  GemmArgs g;
  F32 a, b, c;
  int64_t batch = 1, sa = 0, sb = 0, sc = 0;
  if (info.Length() < 16) {
    fail(env, "sgemm expects 16 arguments");
    return env.Undefined();
  }
  g.transA = info[0].ToBoolean().Value();
  g.transB = info[1].ToBoolean().Value();
  if (!argInt(info, 2, &g.M) || !argInt(info, 3, &g.N) || !argInt(info, 4, &g.K) || !argF32(info, 5, &a) ||
      !argInt(info, 6, &g.lda) || !argF32(info, 7, &b) || !argInt(info, 8, &g.ldb) || !argF32(info, 10, &c) ||
      !argInt(info, 11, &g.ldc) || !argInt(info, 12, &batch) || !argInt(info, 13, &sa) || !argInt(info, 14, &sb) ||
      !argInt(info, 15, &sc)) {
    return env.Undefined();
  }
  g.beta = static_cast<float>(info[9].As<Napi::Number>().DoubleValue());
  const int64_t aRows = g.transA ? g.K : g.M, aCols = g.transA ? g.M : g.K;
  const int64_t bRows = g.transB ? g.N : g.K, bCols = g.transB ? g.K : g.N;
  const bool bad = g.M < 0 || g.N < 0 || g.K < 0 || batch < 1 || sa < 0 || sb < 0 || sc < 0 || g.lda < aCols ||
                   g.ldb < bCols || g.ldc < g.N;
  if (bad || (batch - 1) * sa + extent(aRows, aCols, g.lda) > static_cast<int64_t>(a.length) ||
      (batch - 1) * sb + extent(bRows, bCols, g.ldb) > static_cast<int64_t>(b.length) ||
      (batch - 1) * sc + extent(g.M, g.N, g.ldc) > static_cast<int64_t>(c.length)) {
    fail(env, "sgemm: bad sizes or buffers too small");
    return env.Undefined();
  }
  g.A = a.data;
  g.B = b.data;
  g.C = c.data;
  lowbit::sgemmBatched(g, batch, sa, sb, sc);
  return env.Undefined();
}

// ---------------------------------------------------------------- conv2d
// conv2d(x, w, y, geom), conv2dBackwardInput(dy, w, dx, geom), conv2dBackwardWeight(x, dy, dw, geom)
// geom: Int32Array [N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups]
bool argConvGeom(const Napi::CallbackInfo& info, size_t i, lowbit::ConvGeom* g) {
  int64_t v[16];
  if (!argInts(info, i, v, 16)) return false;
  *g = lowbit::ConvGeom{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
  const bool positive = g->N >= 0 && g->C > 0 && g->H > 0 && g->W > 0 && g->O > 0 && g->KH > 0 && g->KW > 0 &&
                        g->OH > 0 && g->OW > 0 && g->sh > 0 && g->sw > 0 && g->ph >= 0 && g->pw >= 0 && g->dh > 0 &&
                        g->dw > 0 && g->groups > 0;
  if (!positive || g->C % g->groups != 0 || g->O % g->groups != 0 ||
      g->OH != (g->H + 2 * g->ph - g->dh * (g->KH - 1) - 1) / g->sh + 1 ||
      g->OW != (g->W + 2 * g->pw - g->dw * (g->KW - 1) - 1) / g->sw + 1) {
    return fail(info.Env(), "bad conv2d geometry");
  }
  return true;
}

// Checks that each buffer holds at least its required number of elements.
bool checkSizes(const Napi::CallbackInfo& info, std::initializer_list<std::pair<const F32*, int64_t>> items) {
  for (const auto& [buffer, need] : items) {
    if (static_cast<int64_t>(buffer->length) < need) return fail(info.Env(), "buffer too small for the given shape");
  }
  return true;
}

// Element counts of a convolution's input x, output y and weight w for geometry g.
struct ConvSizes {
  int64_t x, y, w;
};
ConvSizes convSizes(const lowbit::ConvGeom& g) {
  return {g.N * g.C * g.H * g.W, g.N * g.O * g.OH * g.OW, g.O * (g.C / g.groups) * g.KH * g.KW};
}

// setDepthwiseConv(on: boolean) -> boolean (the previous setting): whether conv2d and its adjoints
// run the depthwise kernels (dwconv.h) for groups = C = O; off runs the generic grouped path
// (benchmarks, cross-checks). Process-wide.
Napi::Value SetDepthwiseConv(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBoolean()) {
    fail(info.Env(), "setDepthwiseConv: expected a boolean");
    return info.Env().Undefined();
  }
  return Napi::Boolean::New(info.Env(), lowbit::setDepthwiseConvEnabled(info[0].As<Napi::Boolean>().Value()));
}

enum class ConvKind { Forward, BackwardInput, BackwardWeight };

template <ConvKind kind>
Napi::Value Conv(const Napi::CallbackInfo& info) {
  F32 in0, in1, out;
  lowbit::ConvGeom g;
  if (!argF32(info, 0, &in0) || !argF32(info, 1, &in1) || !argF32(info, 2, &out) || !argConvGeom(info, 3, &g)) {
    return info.Env().Undefined();
  }
  const auto [xSize, ySize, wSize] = convSizes(g);
  if (kind == ConvKind::Forward) {  // (x, w) -> y
    if (checkSizes(info, {{&in0, xSize}, {&in1, wSize}, {&out, ySize}})) lowbit::conv2dForward(g, in0.data, in1.data, out.data);
  } else if (kind == ConvKind::BackwardInput) {  // (dy, w) -> dx
    if (checkSizes(info, {{&in0, ySize}, {&in1, wSize}, {&out, xSize}})) {
      lowbit::conv2dBackwardInput(g, in0.data, in1.data, out.data);
    }
  } else {  // (x, dy) -> dw
    if (checkSizes(info, {{&in0, xSize}, {&in1, ySize}, {&out, wSize}})) {
      lowbit::conv2dBackwardWeight(g, in0.data, in1.data, out.data);
    }
  }
  return info.Env().Undefined();
}

// adderConv2d(x, w, y, geom); adderConv2dGrad(part 0 input / 1 weight, gy, x, w, out, geom) -- geom as conv2d's
Napi::Value AdderConv(const Napi::CallbackInfo& info) {
  F32 x, w, y;
  lowbit::ConvGeom g;
  if (!argF32(info, 0, &x) || !argF32(info, 1, &w) || !argF32(info, 2, &y) || !argConvGeom(info, 3, &g)) {
    return info.Env().Undefined();
  }
  const auto [xSize, ySize, wSize] = convSizes(g);
  if (checkSizes(info, {{&x, xSize}, {&w, wSize}, {&y, ySize}})) lowbit::adderConv2dForward(g, x.data, w.data, y.data);
  return info.Env().Undefined();
}

Napi::Value AdderConvGrad(const Napi::CallbackInfo& info) {
  int64_t part;
  F32 gy, x, w, out;
  lowbit::ConvGeom g;
  if (!argInt(info, 0, &part) || !argF32(info, 1, &gy) || !argF32(info, 2, &x) || !argF32(info, 3, &w) ||
      !argF32(info, 4, &out) || !argConvGeom(info, 5, &g)) {
    return info.Env().Undefined();
  }
  if (part != 0 && part != 1) {
    fail(info.Env(), "adderConv2dGrad: part must be 0 (input) or 1 (weight)");
    return info.Env().Undefined();
  }
  const auto [xSize, ySize, wSize] = convSizes(g);
  if (!checkSizes(info, {{&gy, ySize}, {&x, xSize}, {&w, wSize}, {&out, part == 0 ? xSize : wSize}})) {
    return info.Env().Undefined();
  }
  if (part == 0) lowbit::adderConv2dGradInput(g, gy.data, x.data, w.data, out.data);
  else lowbit::adderConv2dGradWeight(g, gy.data, x.data, w.data, out.data);
  return info.Env().Undefined();
}

// conv2dFused(x, w, bias, y, geom, epilogue[, hi[, scale]]): y = maxPool(min(relu(conv2d(x, w) * scale
// + bias), hi)); bias may be null; epilogue: Int32Array [relu 0/1, pool kh, pool kw, pool sh, pool sw]
// (pool kh 0 = no pooling); hi: a number, the upper clamp (undefined: none); scale: per output
// channel (absent: none).
Napi::Value ConvFused(const Napi::CallbackInfo& info) {
  F32 x, w, bias, y, scale;
  lowbit::ConvGeom g;
  int64_t epi[5];
  const bool hasBias = info.Length() > 2 && !info[2].IsNull();
  const bool hasScale = info.Length() > 7 && !info[7].IsUndefined();
  if (hasScale && !argF32(info, 7, &scale)) return info.Env().Undefined();
  if (!argF32(info, 0, &x) || !argF32(info, 1, &w) || (hasBias && !argF32(info, 2, &bias)) || !argF32(info, 3, &y) ||
      !argConvGeom(info, 4, &g) || !argInts(info, 5, epi, 5)) {
    return info.Env().Undefined();
  }
  float hi = lowbit::kNoClamp;
  if (info.Length() > 6 && !info[6].IsUndefined()) {
    if (!info[6].IsNumber() || std::isnan(info[6].As<Napi::Number>().DoubleValue())) {
      fail(info.Env(), "conv2dFused: the upper clamp must be a number");
      return info.Env().Undefined();
    }
    hi = static_cast<float>(info[6].As<Napi::Number>().DoubleValue());
  }
  const bool pool = epi[1] != 0;
  if (epi[1] < 0 || epi[2] < 0 || (pool && (epi[2] <= 0 || epi[3] <= 0 || epi[4] <= 0 || epi[1] > g.OH || epi[2] > g.OW))) {
    fail(info.Env(), "bad conv2dFused pooling window");
    return info.Env().Undefined();
  }
  const int64_t PH = pool ? (g.OH - epi[1]) / epi[3] + 1 : g.OH, PW = pool ? (g.OW - epi[2]) / epi[4] + 1 : g.OW;
  const int64_t xSize = g.N * g.C * g.H * g.W, ySize = g.N * g.O * PH * PW;
  const int64_t wSize = g.O * (g.C / g.groups) * g.KH * g.KW;
  if (!checkSizes(info, {{&x, xSize}, {&w, wSize}, {&y, ySize}})) return info.Env().Undefined();
  if (hasBias && !checkSizes(info, {{&bias, g.O}})) return info.Env().Undefined();
  if (hasScale && !checkSizes(info, {{&scale, g.O}})) return info.Env().Undefined();
  lowbit::conv2dFused(g, x.data, w.data, hasScale ? scale.data : nullptr, hasBias ? bias.data : nullptr, epi[0] != 0, hi,
                      pool ? epi[1] : 0, epi[2], epi[3],
                      epi[4], y.data);
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- pooling
// geom: Int32Array [N, C, H, W, OH, OW, KH, KW, sh, sw, ph, pw, relu 0/1 (max pooling only)]
bool argPoolGeom(const Napi::CallbackInfo& info, size_t i, lowbit::PoolGeom* g) {
  int64_t v[13];
  if (!argInts(info, i, v, 13)) return false;
  *g = lowbit::PoolGeom{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12] == 1};
  if (g->N < 0 || g->C < 0 || g->H <= 0 || g->W <= 0 || g->OH < 0 || g->OW < 0 || g->KH <= 0 || g->KW <= 0 ||
      g->sh <= 0 || g->sw <= 0 || g->ph < 0 || g->pw < 0 || (v[12] != 0 && v[12] != 1)) {
    return fail(info.Env(), "bad pool geometry");
  }
  return true;
}

enum class PoolKind { Max, MaxBackward, MaxGather, Avg, AvgBackward };

template <PoolKind kind>
Napi::Value Pool(const Napi::CallbackInfo& info) {
  // Max (x, y, geom); MaxBackward (dy, x, dx, geom); MaxGather (gx, x, y, geom);
  // Avg (x, y, geom); AvgBackward (dy, dx, geom)
  const bool three = kind == PoolKind::MaxBackward || kind == PoolKind::MaxGather;
  F32 a, b, c;
  lowbit::PoolGeom g;
  if (!argF32(info, 0, &a) || !argF32(info, 1, &b) || (three && !argF32(info, 2, &c)) ||
      !argPoolGeom(info, three ? 3 : 2, &g)) {
    return info.Env().Undefined();
  }
  const int64_t xSize = g.N * g.C * g.H * g.W, ySize = g.N * g.C * g.OH * g.OW;
  if (g.relu && (kind == PoolKind::Avg || kind == PoolKind::AvgBackward)) {
    fail(info.Env(), "avgPool2d: no fused relu");
    return info.Env().Undefined();
  }
  switch (kind) {
    case PoolKind::Max:
      if (checkSizes(info, {{&a, xSize}, {&b, ySize}})) lowbit::maxPool2d(g, a.data, b.data);
      break;
    case PoolKind::MaxBackward:
      if (checkSizes(info, {{&a, ySize}, {&b, xSize}, {&c, xSize}})) lowbit::maxPool2dBackward(g, a.data, b.data, c.data);
      break;
    case PoolKind::MaxGather:
      if (checkSizes(info, {{&a, xSize}, {&b, xSize}, {&c, ySize}})) lowbit::maxPool2dGather(g, a.data, b.data, c.data);
      break;
    case PoolKind::Avg:
      if (checkSizes(info, {{&a, xSize}, {&b, ySize}})) lowbit::avgPool2d(g, a.data, b.data);
      break;
    case PoolKind::AvgBackward:
      if (checkSizes(info, {{&a, ySize}, {&b, xSize}})) lowbit::avgPool2dBackward(g, a.data, b.data);
      break;
  }
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- elementwise
// unary(op, x, y): op indexes lowbit::UnaryOp
Napi::Value Unary(const Napi::CallbackInfo& info) {
  int64_t op = 0;
  F32 x, y;
  if (!argInt(info, 0, &op) || !argF32(info, 1, &x) || !argF32(info, 2, &y)) return info.Env().Undefined();
  if (op < 0 || op > static_cast<int64_t>(lowbit::UnaryOp::RoundBf16) || y.length < x.length) {
    fail(info.Env(), "unary: bad op or output too small");
    return info.Env().Undefined();
  }
  lowbit::unary(static_cast<lowbit::UnaryOp>(op), x.data, y.data, static_cast<int64_t>(x.length));
  return info.Env().Undefined();
}

// binary(op, a, b, out, layout): layout Int32Array [d0, d1, d2, as0, as1, as2, bs0, bs1, bs2]
Napi::Value Binary(const Napi::CallbackInfo& info) {
  int64_t op = 0, layout[9];
  F32 a, b, out;
  if (!argInt(info, 0, &op) || !argF32(info, 1, &a) || !argF32(info, 2, &b) || !argF32(info, 3, &out) ||
      !argInts(info, 4, layout, 9)) {
    return info.Env().Undefined();
  }
  const int64_t* dims = layout;
  const int64_t *as = layout + 3, *bs = layout + 6;
  int64_t aLast = 0, bLast = 0;
  bool ok = op >= 0 && op <= static_cast<int64_t>(lowbit::BinaryOp::ReluBackward);
  for (int d = 0; d < 3; d++) {
    ok = ok && dims[d] > 0 && as[d] >= 0 && bs[d] >= 0;
    aLast += (dims[d] - 1) * as[d];
    bLast += (dims[d] - 1) * bs[d];
  }
  ok = ok && (as[2] == 0 || as[2] == 1) && (bs[2] == 0 || bs[2] == 1);
  if (!ok || aLast >= static_cast<int64_t>(a.length) || bLast >= static_cast<int64_t>(b.length) ||
      dims[0] * dims[1] * dims[2] > static_cast<int64_t>(out.length)) {
    fail(info.Env(), "binary: bad layout");
    return info.Env().Undefined();
  }
  lowbit::binary(static_cast<lowbit::BinaryOp>(op), a.data, as, b.data, bs, out.data, dims);
  return info.Env().Undefined();
}

// where(cond: Float32Array | Int32Array, a, b, out), all of one length
Napi::Value Where(const Napi::CallbackInfo& info) {
  F32 a, b, out;
  if (!argF32(info, 1, &a) || !argF32(info, 2, &b) || !argF32(info, 3, &out)) return info.Env().Undefined();
  if (!info[0].IsTypedArray()) {
    fail(info.Env(), "where: cond must be a typed array");
    return info.Env().Undefined();
  }
  auto cond = info[0].As<Napi::TypedArray>();
  const size_t n = out.length;
  if (cond.ElementLength() != n || a.length != n || b.length != n) {
    fail(info.Env(), "where: lengths differ");
    return info.Env().Undefined();
  }
  if (cond.TypedArrayType() == napi_float32_array) {
    lowbit::where(cond.As<Napi::Float32Array>().Data(), nullptr, a.data, b.data, out.data, static_cast<int64_t>(n));
  } else if (cond.TypedArrayType() == napi_int32_array) {
    lowbit::where(nullptr, cond.As<Napi::Int32Array>().Data(), a.data, b.data, out.data, static_cast<int64_t>(n));
  } else {
    fail(info.Env(), "where: cond must be float32 or int32");
  }
  return info.Env().Undefined();
}

// sumInner(x, y, outer, inner) / sumOuter(x, y, outer, inner) with x (outer, inner)
template <bool inner>
Napi::Value Sum(const Napi::CallbackInfo& info) {
  F32 x, y;
  int64_t rows = 0, cols = 0;
  if (!argF32(info, 0, &x) || !argF32(info, 1, &y) || !argInt(info, 2, &rows) || !argInt(info, 3, &cols)) {
    return info.Env().Undefined();
  }
  if (rows < 0 || cols < 0 || rows * cols > static_cast<int64_t>(x.length) ||
      (inner ? rows : cols) > static_cast<int64_t>(y.length)) {
    fail(info.Env(), "sum: bad sizes");
    return info.Env().Undefined();
  }
  if (inner) {
    lowbit::sumInner(x.data, y.data, rows, cols);
  } else {
    lowbit::sumOuter(x.data, y.data, rows, cols);
  }
  return info.Env().Undefined();
}

// The fused recurrent sequences, as f(inputs..., result, dims) with dims an Int32Array
// [L, N, H, batchFirst, reverse] (shapes and layouts in recurrent.h):
//   lstmSequence(gates, w, bias, h0, c0, out)    lstmSequenceBackward(g, out, w, c0, grads)
//   gruSequence(gates, w, biasIh, biasHh, h0, out)  gruSequenceBackward(g, out, w, h0, grads)
// The recurrent bindings' checks: every array has its expected element count (else a typed error
// naming the argument), and the shape from dims [L, N, H, batchFirst, reverse, ...].
bool lengthsAre(const Napi::CallbackInfo& info, const char* name, const F32* a, const std::vector<int64_t>& expected) {
  for (size_t i = 0; i < expected.size(); i++) {
    if (static_cast<int64_t>(a[i].length) != expected[i]) {
      fail(info.Env(), std::string(name) + ": argument " + std::to_string(i) + " has " + std::to_string(a[i].length) +
                           " elements, expected " + std::to_string(expected[i]));
      return false;
    }
  }
  return true;
}

lowbit::RecurrentShape recurrentShape(const int64_t* d) {
  lowbit::RecurrentShape shape;
  shape.steps = d[0];
  shape.batch = d[1];
  shape.hidden = d[2];
  shape.batchFirst = d[3] != 0;
  shape.reverse = d[4] != 0;
  return shape;
}

enum class RnnKind { Lstm, LstmBackward, Gru, GruBackward };

template <RnnKind kind>
Napi::Value Recurrent(const Napi::CallbackInfo& info) {
  constexpr bool lstm = kind == RnnKind::Lstm || kind == RnnKind::LstmBackward;
  constexpr const char* name = kind == RnnKind::Lstm ? "lstmSequence"
                               : kind == RnnKind::LstmBackward ? "lstmSequenceBackward"
                               : kind == RnnKind::Gru ? "gruSequence" : "gruSequenceBackward";
  constexpr bool forward = kind == RnnKind::Lstm || kind == RnnKind::Gru;
  constexpr size_t arrays = forward ? 6 : 5;  // inputs, then the result
  F32 a[arrays];
  int64_t d[5];
  for (size_t i = 0; i < arrays; i++) {
    if (!argF32(info, i, &a[i])) return info.Env().Undefined();
  }
  if (!argInts(info, arrays, d, 5)) return info.Env().Undefined();
  if (d[0] < 1 || d[1] < 1 || d[2] < 1 || (d[3] != 0 && d[3] != 1) || (d[4] != 0 && d[4] != 1)) {
    fail(info.Env(), std::string(name) + ": bad dims");
    return info.Env().Undefined();
  }
  const int64_t L = d[0], N = d[1], H = d[2], G = lstm ? 4 : 3, parts = lstm ? 6 : 5;
  const int64_t plane = L * N * H, state = N * H, gates = L * N * G * H, weights = G * H * H;
  const std::vector<int64_t> expected =
      kind == RnnKind::Lstm           ? std::vector<int64_t>{gates, weights, G * H, state, state, parts * plane}
      : kind == RnnKind::LstmBackward ? std::vector<int64_t>{parts * plane, parts * plane, weights, state, gates + 2 * state}
      : kind == RnnKind::Gru          ? std::vector<int64_t>{gates, weights, G * H, G * H, state, parts * plane}
                                      : std::vector<int64_t>{parts * plane, parts * plane, weights, state, 2 * gates + state};
  if (!lengthsAre(info, name, a, expected)) return info.Env().Undefined();
  const lowbit::RecurrentShape shape = recurrentShape(d);
  switch (kind) {
    case RnnKind::Lstm: lowbit::lstmSequence(shape, a[0].data, a[1].data, a[2].data, a[3].data, a[4].data, a[arrays - 1].data); break;
    case RnnKind::LstmBackward: lowbit::lstmSequenceBackward(shape, a[0].data, a[1].data, a[2].data, a[3].data, a[arrays - 1].data); break;
    case RnnKind::Gru: lowbit::gruSequence(shape, a[0].data, a[1].data, a[2].data, a[3].data, a[4].data, a[arrays - 1].data); break;
    case RnnKind::GruBackward: lowbit::gruSequenceBackward(shape, a[0].data, a[1].data, a[2].data, a[3].data, a[arrays - 1].data); break;
  }
  return info.Env().Undefined();
}

// The inference-only recurrent sequences (recurrent.h), dims an Int32Array
// [L, N, H, batchFirst, reverse, E, finalOnly]:
//   lstmInference(x, wIh, wHh, bias, h0, c0, out)   out = [h per step | h_N | c_N]
//   gruInference(x, wIh, wHh, biasIh, biasHh, h0, out)   out = [h per step | h_N]
// (without the per-step h when finalOnly)
template <bool gru>
Napi::Value RecurrentInference(const Napi::CallbackInfo& info) {
  constexpr const char* name = gru ? "gruInference" : "lstmInference";
  constexpr size_t arrays = 7;
  F32 a[arrays];
  int64_t d[7];
  for (size_t i = 0; i < arrays; i++) {
    if (!argF32(info, i, &a[i])) return info.Env().Undefined();
  }
  if (!argInts(info, arrays, d, 7)) return info.Env().Undefined();
  if (d[0] < 1 || d[1] < 1 || d[2] < 1 || d[5] < 1 || (d[3] != 0 && d[3] != 1) || (d[4] != 0 && d[4] != 1) ||
      (d[6] != 0 && d[6] != 1)) {
    fail(info.Env(), std::string(name) + ": bad dims");
    return info.Env().Undefined();
  }
  const int64_t L = d[0], N = d[1], H = d[2], E = d[5], G = gru ? 3 : 4;
  const bool finalOnly = d[6] != 0;
  const int64_t plane = finalOnly ? 0 : L * N * H, state = N * H;
  const std::vector<int64_t> expected =
      gru ? std::vector<int64_t>{L * N * E, G * H * E, G * H * H, G * H, G * H, state, plane + state}
          : std::vector<int64_t>{L * N * E, G * H * E, G * H * H, G * H, state, state, plane + 2 * state};
  if (!lengthsAre(info, name, a, expected)) return info.Env().Undefined();
  const lowbit::RecurrentShape shape = recurrentShape(d);
  if (gru) {
    lowbit::gruInference(shape, E, finalOnly, a[0].data, a[1].data, a[2].data, a[3].data, a[4].data, a[5].data, a[6].data);
  } else {
    lowbit::lstmInference(shape, E, finalOnly, a[0].data, a[1].data, a[2].data, a[3].data, a[4].data, a[5].data, a[6].data);
  }
  return info.Env().Undefined();
}

// softmax(x, y, rows, cols, log)
Napi::Value Softmax(const Napi::CallbackInfo& info) {
  F32 x, y;
  int64_t rows = 0, cols = 0;
  if (!argF32(info, 0, &x) || !argF32(info, 1, &y) || !argInt(info, 2, &rows) || !argInt(info, 3, &cols)) {
    return info.Env().Undefined();
  }
  if (rows < 0 || cols < 0 || rows * cols > static_cast<int64_t>(x.length) || rows * cols > static_cast<int64_t>(y.length)) {
    fail(info.Env(), "softmax: bad sizes");
    return info.Env().Undefined();
  }
  lowbit::softmaxRows(x.data, y.data, rows, cols, info[4].ToBoolean().Value());
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- fused Transformer layers (transformer.h)

// Whether `count` elements (>= 0) fit every listed buffer.
bool fits(const Napi::Env& env, const char* what, int64_t count, std::initializer_list<const F32*> buffers) {
  bool ok = count >= 0;
  for (const F32* b : buffers) ok = ok && count <= static_cast<int64_t>(b->length);
  return ok || fail(env, std::string(what) + ": bad sizes");
}

// layerNorm(x, w, b, y, rows, width, eps)
Napi::Value LayerNormFwd(const Napi::CallbackInfo& info) {
  F32 x, w, b, y;
  int64_t rows = 0, width = 0;
  if (!argF32(info, 0, &x) || !argF32(info, 1, &w) || !argF32(info, 2, &b) || !argF32(info, 3, &y) || !argInt(info, 4, &rows) ||
      !argInt(info, 5, &width) || !info[6].IsNumber()) {
    return info.Env().Undefined();
  }
  if (rows < 0 || width < 1 || !fits(info.Env(), "layerNorm", rows * width, {&x, &y}) || !fits(info.Env(), "layerNorm", width, {&w, &b})) {
    return info.Env().Undefined();
  }
  lowbit::layerNormForward(x.data, w.data, b.data, y.data, rows, width, info[6].As<Napi::Number>().FloatValue());
  return info.Env().Undefined();
}

// layerNormBackward(g, x, w, out, rows, width, eps): out = [dx (rows * width), dw (width), db (width)]
Napi::Value LayerNormBwd(const Napi::CallbackInfo& info) {
  F32 g, x, w, out;
  int64_t rows = 0, width = 0;
  if (!argF32(info, 0, &g) || !argF32(info, 1, &x) || !argF32(info, 2, &w) || !argF32(info, 3, &out) || !argInt(info, 4, &rows) ||
      !argInt(info, 5, &width) || !info[6].IsNumber()) {
    return info.Env().Undefined();
  }
  if (rows < 0 || width < 1 || !fits(info.Env(), "layerNormBackward", rows * width, {&g, &x}) ||
      !fits(info.Env(), "layerNormBackward", width, {&w}) || !fits(info.Env(), "layerNormBackward", rows * width + 2 * width, {&out})) {
    return info.Env().Undefined();
  }
  const int64_t n = rows * width;
  lowbit::layerNormBackward(g.data, x.data, w.data, out.data, out.data + n, out.data + n + width, rows, width,
                            info[6].As<Napi::Number>().FloatValue());
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- training-mode BatchNorm, clamp (batchnorm.h)

// Reads n, c, s at args i..i+2 (n, c >= 1, s >= 0) and checks that n*c*s elements fit every buffer.
bool bnDims(const Napi::CallbackInfo& info, size_t i, const char* what, std::initializer_list<const F32*> buffers, int64_t* dims) {
  if (!argInt(info, i, &dims[0]) || !argInt(info, i + 1, &dims[1]) || !argInt(info, i + 2, &dims[2])) return false;
  if (dims[0] < 1 || dims[1] < 1 || dims[2] < 0) return fail(info.Env(), std::string(what) + ": bad sizes");
  return fits(info.Env(), what, dims[0] * dims[1] * dims[2], buffers);
}

// The optional [mean (c), variance (c)] statistics at argument i (absent or undefined: none).
bool bnStatsArg(const Napi::CallbackInfo& info, size_t i, int64_t c, F32* stats, bool* has) {
  *has = info.Length() > i && !info[i].IsUndefined();
  if (!*has) return true;
  return argF32(info, i, stats) && fits(info.Env(), "batchNorm statistics", 2 * c, {stats});
}

// The optional clamp at arguments i, i + 1 (numbers lo, hi; absent or undefined: none) and, for
// the backward, the BatchNorm bias at i + 2.
bool bnClampArg(const Napi::CallbackInfo& info, size_t i, int64_t c, bool backward, F32* bias, lowbit::BnClamp* clamp, bool* has) {
  *has = info.Length() > i && !info[i].IsUndefined();
  if (!*has) return true;
  if (!info[i].IsNumber() || !info[i + 1].IsNumber()) return fail(info.Env(), "batchNorm: the clamp bounds must be numbers");
  clamp->lo = info[i].As<Napi::Number>().FloatValue();
  clamp->hi = info[i + 1].As<Napi::Number>().FloatValue();
  if (std::isnan(clamp->lo) || std::isnan(clamp->hi)) return fail(info.Env(), "batchNorm: the clamp bounds must not be NaN");
  clamp->bias = nullptr;
  if (!backward) return true;
  if (!argF32(info, i + 2, bias) || !fits(info.Env(), "batchNormBackward bias", c, {bias})) return false;
  clamp->bias = bias->data;
  return true;
}

// batchNorm(x, w, b, y, n, c, s, eps[, stats[, lo, hi]])
Napi::Value BatchNormFwd(const Napi::CallbackInfo& info) {
  F32 x, w, b, y, stats, unused;
  int64_t d[3];
  bool hasStats = false, hasClamp = false;
  lowbit::BnClamp clamp{};
  if (!argF32(info, 0, &x) || !argF32(info, 1, &w) || !argF32(info, 2, &b) || !argF32(info, 3, &y) || !bnDims(info, 4, "batchNorm", {&x, &y}, d) ||
      !info[7].IsNumber() || !fits(info.Env(), "batchNorm", d[1], {&w, &b}) || !bnStatsArg(info, 8, d[1], &stats, &hasStats) ||
      !bnClampArg(info, 9, d[1], false, &unused, &clamp, &hasClamp)) {
    return info.Env().Undefined();
  }
  lowbit::batchNormForward(x.data, w.data, b.data, hasStats ? stats.data : nullptr, hasClamp ? &clamp : nullptr, y.data, d[0], d[1],
                           d[2], info[7].As<Napi::Number>().FloatValue());
  return info.Env().Undefined();
}

// batchNormBackward(g, x, w, out, n, c, s, eps[, stats[, lo, hi, bias]]): out = [dx (n*c*s), dw (c), db (c)]
Napi::Value BatchNormBwd(const Napi::CallbackInfo& info) {
  F32 g, x, w, out, stats, bias;
  int64_t d[3];
  bool hasStats = false, hasClamp = false;
  lowbit::BnClamp clamp{};
  if (!argF32(info, 0, &g) || !argF32(info, 1, &x) || !argF32(info, 2, &w) || !argF32(info, 3, &out) ||
      !bnDims(info, 4, "batchNormBackward", {&g, &x}, d) || !info[7].IsNumber() || !fits(info.Env(), "batchNormBackward", d[1], {&w}) ||
      !fits(info.Env(), "batchNormBackward", d[0] * d[1] * d[2] + 2 * d[1], {&out}) || !bnStatsArg(info, 8, d[1], &stats, &hasStats) ||
      !bnClampArg(info, 9, d[1], true, &bias, &clamp, &hasClamp)) {
    return info.Env().Undefined();
  }
  const int64_t n = d[0] * d[1] * d[2];
  lowbit::batchNormBackward(g.data, x.data, w.data, hasStats ? stats.data : nullptr, hasClamp ? &clamp : nullptr, out.data, out.data + n,
                            out.data + n + d[1], d[0], d[1], d[2], info[7].As<Napi::Number>().FloatValue());
  return info.Env().Undefined();
}

// batchNormStats(x, out, n, c, s): out = [mean (c), biased variance (c)]
Napi::Value BatchNormStatsFn(const Napi::CallbackInfo& info) {
  F32 x, out;
  int64_t d[3];
  if (!argF32(info, 0, &x) || !argF32(info, 1, &out) || !bnDims(info, 2, "batchNormStats", {&x}, d) ||
      !fits(info.Env(), "batchNormStats", 2 * d[1], {&out})) {
    return info.Env().Undefined();
  }
  lowbit::batchNormStats(x.data, out.data, d[0], d[1], d[2]);
  return info.Env().Undefined();
}

// batchNormStatsBackward(g, x, stats, dx, n, c, s): dx = (x - mean) * 2 g_var / M + g_mean / M
Napi::Value BatchNormStatsBwd(const Napi::CallbackInfo& info) {
  F32 g, x, stats, dx;
  int64_t d[3];
  if (!argF32(info, 0, &g) || !argF32(info, 1, &x) || !argF32(info, 2, &stats) || !argF32(info, 3, &dx) ||
      !bnDims(info, 4, "batchNormStatsBackward", {&x, &dx}, d) || !fits(info.Env(), "batchNormStatsBackward", 2 * d[1], {&g, &stats})) {
    return info.Env().Undefined();
  }
  lowbit::batchNormStatsBackward(g.data, x.data, stats.data, dx.data, d[0], d[1], d[2]);
  return info.Env().Undefined();
}

// clamp(x, y, count, lo, hi)
Napi::Value ClampFwd(const Napi::CallbackInfo& info) {
  F32 x, y;
  int64_t count = 0;
  if (!argF32(info, 0, &x) || !argF32(info, 1, &y) || !argInt(info, 2, &count) || !info[3].IsNumber() || !info[4].IsNumber() ||
      !fits(info.Env(), "clamp", count, {&x, &y})) {
    return info.Env().Undefined();
  }
  lowbit::clampForward(x.data, y.data, count, info[3].As<Napi::Number>().FloatValue(), info[4].As<Napi::Number>().FloatValue());
  return info.Env().Undefined();
}

// clampBackward(g, x, dx, count, lo, hi)
Napi::Value ClampBwd(const Napi::CallbackInfo& info) {
  F32 g, x, dx;
  int64_t count = 0;
  if (!argF32(info, 0, &g) || !argF32(info, 1, &x) || !argF32(info, 2, &dx) || !argInt(info, 3, &count) || !info[4].IsNumber() ||
      !info[5].IsNumber() || !fits(info.Env(), "clampBackward", count, {&g, &x, &dx})) {
    return info.Env().Undefined();
  }
  lowbit::clampBackward(g.data, x.data, dx.data, count, info[4].As<Napi::Number>().FloatValue(), info[5].As<Napi::Number>().FloatValue());
  return info.Env().Undefined();
}

// gelu(x, y, n, tanh)
Napi::Value GeluFwd(const Napi::CallbackInfo& info) {
  F32 x, y;
  int64_t n = 0;
  if (!argF32(info, 0, &x) || !argF32(info, 1, &y) || !argInt(info, 2, &n) || !fits(info.Env(), "gelu", n, {&x, &y})) return info.Env().Undefined();
  lowbit::geluForward(x.data, y.data, n, info[3].ToBoolean().Value());
  return info.Env().Undefined();
}

// geluBackward(g, x, dx, n, tanh)
Napi::Value GeluBwd(const Napi::CallbackInfo& info) {
  F32 g, x, dx;
  int64_t n = 0;
  if (!argF32(info, 0, &g) || !argF32(info, 1, &x) || !argF32(info, 2, &dx) || !argInt(info, 3, &n) ||
      !fits(info.Env(), "geluBackward", n, {&g, &x, &dx})) {
    return info.Env().Undefined();
  }
  lowbit::geluBackward(g.data, x.data, dx.data, n, info[4].ToBoolean().Value());
  return info.Env().Undefined();
}

// Reads [batch, length, embed, heads] and checks them (embed divisible by heads).
bool attentionDims(const Napi::CallbackInfo& info, size_t first, int64_t dims[4]) {
  for (size_t i = 0; i < 4; i++) {
    if (!argInt(info, first + i, &dims[i])) return false;
  }
  if (dims[0] < 0 || dims[1] < 1 || dims[2] < 1 || dims[3] < 1 || dims[2] % dims[3] != 0) return fail(info.Env(), "attention: bad dims");
  return true;
}

// attention(qkv, out, batch, length, embed, heads, causal)
Napi::Value AttentionFwd(const Napi::CallbackInfo& info) {
  F32 qkv, out;
  int64_t d[4];
  if (!argF32(info, 0, &qkv) || !argF32(info, 1, &out) || !attentionDims(info, 2, d)) return info.Env().Undefined();
  const int64_t tokens = d[0] * d[1];
  if (!fits(info.Env(), "attention", tokens * 3 * d[2], {&qkv}) || !fits(info.Env(), "attention", tokens * d[2], {&out})) return info.Env().Undefined();
  lowbit::attentionForward(qkv.data, out.data, d[0], d[1], d[2], d[3], info[6].ToBoolean().Value());
  return info.Env().Undefined();
}

// attentionBackward(g, qkv, dqkv, batch, length, embed, heads, causal)
Napi::Value AttentionBwd(const Napi::CallbackInfo& info) {
  F32 g, qkv, dqkv;
  int64_t d[4];
  if (!argF32(info, 0, &g) || !argF32(info, 1, &qkv) || !argF32(info, 2, &dqkv) || !attentionDims(info, 3, d)) return info.Env().Undefined();
  const int64_t tokens = d[0] * d[1];
  if (!fits(info.Env(), "attentionBackward", tokens * 3 * d[2], {&qkv, &dqkv}) || !fits(info.Env(), "attentionBackward", tokens * d[2], {&g})) {
    return info.Env().Undefined();
  }
  lowbit::attentionBackward(g.data, qkv.data, dqkv.data, d[0], d[1], d[2], d[3], info[7].ToBoolean().Value());
  return info.Env().Undefined();
}

// decodeAttention(qkv, keys, values, out, dims [batch, steps, capacity, embed, heads, past])
Napi::Value DecodeAttention(const Napi::CallbackInfo& info) {
  F32 qkv, keys, values, out;
  int64_t d[6];
  if (!argF32(info, 0, &qkv) || !argF32(info, 1, &keys) || !argF32(info, 2, &values) || !argF32(info, 3, &out)) return info.Env().Undefined();
  for (size_t i = 0; i < 6; i++) {
    if (!argInt(info, 4 + i, &d[i])) return info.Env().Undefined();
  }
  const int64_t batch = d[0], steps = d[1], capacity = d[2], embed = d[3], heads = d[4], past = d[5];
  if (batch < 0 || steps < 1 || embed < 1 || heads < 1 || embed % heads != 0 || past < 0 || past + steps > capacity) {
    fail(info.Env(), "decodeAttention: bad dims");
    return info.Env().Undefined();
  }
  if (!fits(info.Env(), "decodeAttention", batch * steps * 3 * embed, {&qkv}) || !fits(info.Env(), "decodeAttention", batch * capacity * embed, {&keys, &values}) ||
      !fits(info.Env(), "decodeAttention", batch * steps * embed, {&out})) {
    return info.Env().Undefined();
  }
  lowbit::decodeAttention(qkv.data, keys.data, values.data, out.data, batch, steps, capacity, embed, heads, past);
  return info.Env().Undefined();
}

// Reads an Int32Array argument.
bool argI32(const Napi::CallbackInfo& info, size_t i, const int32_t** data, size_t* length) {
  if (i >= info.Length() || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    return fail(info.Env(), "argument " + std::to_string(i) + " must be an Int32Array");
  }
  auto array = info[i].As<Napi::Int32Array>();
  *data = array.Data();
  *length = array.ElementLength();
  return true;
}

// crossEntropyLoss(x, targets, loss, rows, classes) -> false when a target is out of range
Napi::Value CrossEntropyFwd(const Napi::CallbackInfo& info) {
  F32 x, loss;
  const int32_t* targets = nullptr;
  size_t nt = 0;
  int64_t rows = 0, classes = 0;
  if (!argF32(info, 0, &x) || !argI32(info, 1, &targets, &nt) || !argF32(info, 2, &loss) || !argInt(info, 3, &rows) || !argInt(info, 4, &classes)) {
    return info.Env().Undefined();
  }
  if (classes < 1 || !fits(info.Env(), "crossEntropyLoss", rows * classes, {&x}) || !fits(info.Env(), "crossEntropyLoss", rows, {&loss}) ||
      rows > static_cast<int64_t>(nt)) {
    if (rows > static_cast<int64_t>(nt)) fail(info.Env(), "crossEntropyLoss: bad sizes");
    return info.Env().Undefined();
  }
  return Napi::Boolean::New(info.Env(), lowbit::crossEntropyForward(x.data, targets, loss.data, rows, classes));
}

// crossEntropyLossBackward(g, x, targets, dx, rows, classes) -> false when a target is out of range
Napi::Value CrossEntropyBwd(const Napi::CallbackInfo& info) {
  F32 g, x, dx;
  const int32_t* targets = nullptr;
  size_t nt = 0;
  int64_t rows = 0, classes = 0;
  if (!argF32(info, 0, &g) || !argF32(info, 1, &x) || !argI32(info, 2, &targets, &nt) || !argF32(info, 3, &dx) || !argInt(info, 4, &rows) ||
      !argInt(info, 5, &classes)) {
    return info.Env().Undefined();
  }
  if (classes < 1 || !fits(info.Env(), "crossEntropyLossBackward", rows * classes, {&x, &dx}) || !fits(info.Env(), "crossEntropyLossBackward", rows, {&g}) ||
      rows > static_cast<int64_t>(nt)) {
    if (rows > static_cast<int64_t>(nt)) fail(info.Env(), "crossEntropyLossBackward: bad sizes");
    return info.Env().Undefined();
  }
  return Napi::Boolean::New(info.Env(), lowbit::crossEntropyBackward(g.data, x.data, targets, dx.data, rows, classes));
}

// transpose(x, y, spec): spec Int32Array [d0, d1, d2, d3, p0, p1, p2, p3]
Napi::Value Transpose(const Napi::CallbackInfo& info) {
  F32 x, y;
  int64_t spec[8];
  if (!argF32(info, 0, &x) || !argF32(info, 1, &y) || !argInts(info, 2, spec, 8)) return info.Env().Undefined();
  int64_t size = 1;
  bool seen[4] = {false, false, false, false}, ok = true;
  for (int d = 0; d < 4; d++) {
    ok = ok && spec[d] > 0 && spec[4 + d] >= 0 && spec[4 + d] < 4 && !seen[spec[4 + d]];
    if (ok) seen[spec[4 + d]] = true;
    size *= spec[d] > 0 ? spec[d] : 0;
  }
  if (!ok || size > static_cast<int64_t>(x.length) || size > static_cast<int64_t>(y.length)) {
    fail(info.Env(), "transpose: bad spec");
    return info.Env().Undefined();
  }
  lowbit::transpose4(x.data, y.data, spec, spec + 4);
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- reductions, indexing, copies
// A float32 or int32 array as 4-byte words; *type is napi_float32_array or napi_int32_array.
bool arg32(const Napi::CallbackInfo& info, size_t i, uint32_t** data, size_t* length, napi_typedarray_type* type) {
  if (i >= info.Length() || !info[i].IsTypedArray()) {
    return fail(info.Env(), "argument " + std::to_string(i) + " must be a Float32Array or Int32Array");
  }
  auto array = info[i].As<Napi::TypedArray>();
  *type = array.TypedArrayType();
  if (*type != napi_float32_array && *type != napi_int32_array) {
    return fail(info.Env(), "argument " + std::to_string(i) + " must be a Float32Array or Int32Array");
  }
  *data = reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset());
  *length = array.ElementLength();
  return true;
}

bool argI32(const Napi::CallbackInfo& info, size_t i, int32_t** data, size_t* length) {
  if (i >= info.Length() || !info[i].IsTypedArray() ||
      info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    return fail(info.Env(), "argument " + std::to_string(i) + " must be an Int32Array");
  }
  auto array = info[i].As<Napi::Int32Array>();
  *data = array.Data();
  *length = array.ElementLength();
  return true;
}

// reduce(op: 0 sum | 1 max, x, y, groups: Int32Array, reduced: Int32Array (0/1 per group))
Napi::Value Reduce(const Napi::CallbackInfo& info) {
  int64_t op = 0;
  F32 x, y;
  int32_t *groups32, *reduced32;
  size_t ng = 0, nr = 0;
  if (!argInt(info, 0, &op) || !argF32(info, 1, &x) || !argF32(info, 2, &y) || !argI32(info, 3, &groups32, &ng) ||
      !argI32(info, 4, &reduced32, &nr)) {
    return info.Env().Undefined();
  }
  int64_t groups[16];
  bool reduced[16];
  int64_t total = 1, kept = 1;
  bool ok = ng == nr && ng <= 16 && (op == 0 || op == 1);
  for (size_t i = 0; ok && i < ng; i++) {
    groups[i] = groups32[i];
    reduced[i] = reduced32[i] != 0;
    ok = groups[i] >= 1;
    total *= groups[i];
    kept *= reduced[i] ? 1 : groups[i];
  }
  if (!ok || total > static_cast<int64_t>(x.length) || kept > static_cast<int64_t>(y.length) || total == 0) {
    fail(info.Env(), "reduce: bad groups or buffers too small");
    return info.Env().Undefined();
  }
  if (op == 0) {
    lowbit::reduceSum(x.data, y.data, groups, reduced, static_cast<int>(ng));
  } else {
    lowbit::reduceMax(x.data, y.data, groups, reduced, static_cast<int>(ng));
  }
  return info.Env().Undefined();
}

// argmax(x, y: Int32Array, outer, len, inner)
Napi::Value Argmax(const Napi::CallbackInfo& info) {
  F32 x;
  int32_t* y;
  size_t ny = 0;
  int64_t outer = 0, len = 0, inner = 0;
  if (!argF32(info, 0, &x) || !argI32(info, 1, &y, &ny) || !argInt(info, 2, &outer) || !argInt(info, 3, &len) ||
      !argInt(info, 4, &inner)) {
    return info.Env().Undefined();
  }
  if (outer < 0 || len < 1 || inner < 0 || outer * len * inner > static_cast<int64_t>(x.length) ||
      outer * inner > static_cast<int64_t>(ny)) {
    fail(info.Env(), "argmax: bad sizes");
    return info.Env().Undefined();
  }
  lowbit::argmaxAxis(x.data, y, outer, len, inner);
  return info.Env().Undefined();
}

// gather(x, idx, y, outer, len, inner) / scatterAdd(u, idx, y, outer, len, inner): returns false
// when an index is out of range (the caller then falls back to the reference kernel).
template <bool scatter>
Napi::Value GatherScatter(const Napi::CallbackInfo& info) {
  uint32_t *a, *c;
  size_t na = 0, nc = 0, ni = 0;
  napi_typedarray_type ta, tc;
  int32_t* idx;
  int64_t outer = 0, len = 0, inner = 0;
  if (!arg32(info, 0, &a, &na, &ta) || !argI32(info, 1, &idx, &ni) || !arg32(info, 2, &c, &nc, &tc) ||
      !argInt(info, 3, &outer) || !argInt(info, 4, &len) || !argInt(info, 5, &inner)) {
    return info.Env().Undefined();
  }
  const int64_t m = static_cast<int64_t>(ni);
  const int64_t small = outer * m * inner, big = outer * len * inner;
  if (ta != tc || (scatter && ta != napi_float32_array) || outer < 0 || len < 0 || inner < 0 ||
      (scatter ? small : big) > static_cast<int64_t>(na) || (scatter ? big : small) > static_cast<int64_t>(nc)) {
    fail(info.Env(), "gather/scatterAdd: bad sizes or types");
    return info.Env().Undefined();
  }
  const bool ok = scatter ? lowbit::scatterAddAxis(reinterpret_cast<const float*>(a), idx, reinterpret_cast<float*>(c),
                                                   outer, len, inner, m)
                          : lowbit::gatherAxis(a, idx, c, outer, len, inner, m);
  return Napi::Boolean::New(info.Env(), ok);
}

// copyStrided(src, srcOff, dst, dstOff, spec: Int32Array [shape x r, srcStrides x r, dstStrides x r])
Napi::Value CopyStrided(const Napi::CallbackInfo& info) {
  uint32_t *src, *dst;
  size_t ns = 0, nd = 0, nspec = 0;
  napi_typedarray_type ts, td;
  int32_t* spec;
  int64_t srcOff = 0, dstOff = 0;
  if (!arg32(info, 0, &src, &ns, &ts) || !argInt(info, 1, &srcOff) || !arg32(info, 2, &dst, &nd, &td) ||
      !argInt(info, 3, &dstOff) || !argI32(info, 4, &spec, &nspec)) {
    return info.Env().Undefined();
  }
  const int rank = static_cast<int>(nspec / 3);
  bool ok = ts == td && nspec % 3 == 0 && rank <= 8 && srcOff >= 0 && dstOff >= 0;
  int64_t shape[8], ss[8], ds[8];
  int64_t srcLast = srcOff, dstLast = dstOff;
  bool empty = false;
  for (int d = 0; ok && d < rank; d++) {
    shape[d] = spec[d], ss[d] = spec[rank + d], ds[d] = spec[2 * rank + d];
    ok = shape[d] >= 0 && ss[d] >= 0 && ds[d] >= 0;
    empty = empty || shape[d] == 0;
    srcLast += (shape[d] - 1) * ss[d];
    dstLast += (shape[d] - 1) * ds[d];
  }
  if (!ok || (!empty && (srcLast >= static_cast<int64_t>(ns) || dstLast >= static_cast<int64_t>(nd)))) {
    fail(info.Env(), "copyStrided: bad spec");
    return info.Env().Undefined();
  }
  if (!empty) lowbit::copyStrided(src, srcOff, ss, dst, dstOff, ds, shape, rank);
  return info.Env().Undefined();
}

// cast(x, y): float32 -> int32 (truncating, ToInt32) or int32 -> float32, equal lengths
Napi::Value Cast(const Napi::CallbackInfo& info) {
  uint32_t *x, *y;
  size_t nx = 0, ny = 0;
  napi_typedarray_type tx, ty;
  if (!arg32(info, 0, &x, &nx, &tx) || !arg32(info, 1, &y, &ny, &ty)) return info.Env().Undefined();
  if (nx != ny || tx == ty) {
    fail(info.Env(), "cast: lengths differ or same type");
    return info.Env().Undefined();
  }
  if (tx == napi_float32_array) {
    lowbit::castF32ToI32(reinterpret_cast<const float*>(x), reinterpret_cast<int32_t*>(y), static_cast<int64_t>(nx));
  } else {
    lowbit::castI32ToF32(reinterpret_cast<const int32_t*>(x), reinterpret_cast<float*>(y), static_cast<int64_t>(nx));
  }
  return info.Env().Undefined();
}

// fakeQuantize(x, s, z, y, sMid, sInner, zMid, zInner, qmin, qmax)
Napi::Value FakeQuantize(const Napi::CallbackInfo& info) {
  F32 x, s, z, y;
  int64_t sMid = 0, sInner = 0, zMid = 0, zInner = 0;
  if (!argF32(info, 0, &x) || !argF32(info, 1, &s) || !argF32(info, 2, &z) || !argF32(info, 3, &y) ||
      !argInt(info, 4, &sMid) || !argInt(info, 5, &sInner) || !argInt(info, 6, &zMid) || !argInt(info, 7, &zInner) ||
      !info[8].IsNumber() || !info[9].IsNumber()) {
    return info.Env().Undefined();
  }
  if (sMid < 1 || sInner < 1 || zMid < 1 || zInner < 1 || sMid > static_cast<int64_t>(s.length) ||
      zMid > static_cast<int64_t>(z.length) || y.length < x.length) {
    fail(info.Env(), "fakeQuantize: bad layout");
    return info.Env().Undefined();
  }
  lowbit::fakeQuantize(x.data, s.data, sMid, sInner, z.data, zMid, zInner, y.data, static_cast<int64_t>(x.length),
                       info[8].As<Napi::Number>().DoubleValue(), info[9].As<Napi::Number>().DoubleValue());
  return info.Env().Undefined();
}

// fakeQuantizeGrad(g, x, s, z, y, sMid, sInner, zMid, zInner, qmin, qmax, part): one part of the
// gradient (0 x ste, 1 x clipped, 2 scale, 3 zero point) elementwise into y.
// fakeQuantizeGradSum(same arguments): part 2 (scale) or 3 (zero point) summed to its operand; y holds
// that operand's mid values. Both read the same arguments; Sum selects the kernel and its layout check.
template <bool Sum>
Napi::Value FakeQuantizeGradT(const Napi::CallbackInfo& info) {
  const char* name = Sum ? "fakeQuantizeGradSum" : "fakeQuantizeGrad";
  F32 g, x, s, z, y;
  int64_t sMid = 0, sInner = 0, zMid = 0, zInner = 0, part = 0;
  if (!argF32(info, 0, &g) || !argF32(info, 1, &x) || !argF32(info, 2, &s) || !argF32(info, 3, &z) ||
      !argF32(info, 4, &y) || !argInt(info, 5, &sMid) || !argInt(info, 6, &sInner) || !argInt(info, 7, &zMid) ||
      !argInt(info, 8, &zInner) || !info[9].IsNumber() || !info[10].IsNumber() || !argInt(info, 11, &part)) {
    return info.Env().Undefined();
  }
  bool ok = sMid >= 1 && sInner >= 1 && zMid >= 1 && zInner >= 1 && sMid <= static_cast<int64_t>(s.length) &&
            zMid <= static_cast<int64_t>(z.length) && g.length >= x.length;
  if (Sum) ok = ok && (part == 2 || part == 3) && static_cast<int64_t>(y.length) >= (part == 2 ? sMid : zMid);
  else ok = ok && y.length >= x.length && part >= 0 && part <= 3;
  if (!ok) {
    fail(info.Env(), std::string(name) + ": bad layout");
    return info.Env().Undefined();
  }
  const double qmin = info[9].As<Napi::Number>().DoubleValue(), qmax = info[10].As<Napi::Number>().DoubleValue();
  const int64_t n = static_cast<int64_t>(x.length);
  if (Sum) lowbit::fakeQuantizeGradSum(g.data, x.data, s.data, sMid, sInner, z.data, zMid, zInner, y.data, n, qmin, qmax, static_cast<int>(part));
  else lowbit::fakeQuantizeGrad(g.data, x.data, s.data, sMid, sInner, z.data, zMid, zInner, y.data, n, qmin, qmax, static_cast<int>(part));
  return info.Env().Undefined();
}

// fakeQuantizeGradXScale(g, x, s, z, gx, gs, sMid, sInner, zMid, zInner, qmin, qmax, xPart): the x
// part (xPart 0 ste, 1 clipped) into gx and the scale part summed to the scale into gs, one pass.
Napi::Value FakeQuantizeGradXScale(const Napi::CallbackInfo& info) {
  F32 g, x, s, z, gx, gs;
  int64_t sMid = 0, sInner = 0, zMid = 0, zInner = 0, xPart = 0;
  if (!argF32(info, 0, &g) || !argF32(info, 1, &x) || !argF32(info, 2, &s) || !argF32(info, 3, &z) ||
      !argF32(info, 4, &gx) || !argF32(info, 5, &gs) || !argInt(info, 6, &sMid) || !argInt(info, 7, &sInner) ||
      !argInt(info, 8, &zMid) || !argInt(info, 9, &zInner) || !info[10].IsNumber() || !info[11].IsNumber() ||
      !argInt(info, 12, &xPart)) {
    return info.Env().Undefined();
  }
  const bool ok = sMid >= 1 && sInner >= 1 && zMid >= 1 && zInner >= 1 && sMid <= static_cast<int64_t>(s.length) &&
                  zMid <= static_cast<int64_t>(z.length) && g.length >= x.length && gx.length >= x.length &&
                  static_cast<int64_t>(gs.length) >= sMid && (xPart == 0 || xPart == 1);
  if (!ok) {
    fail(info.Env(), "fakeQuantizeGradXScale: bad layout");
    return info.Env().Undefined();
  }
  lowbit::fakeQuantizeGradXScale(g.data, x.data, s.data, sMid, sInner, z.data, zMid, zInner, gx.data, gs.data,
                                 static_cast<int64_t>(x.length), info[10].As<Napi::Number>().DoubleValue(),
                                 info[11].As<Napi::Number>().DoubleValue(), static_cast<int>(xPart));
  return info.Env().Undefined();
}

// estimator(op: 0 roundSte | 1 signSte, x, y)
Napi::Value Estimator(const Napi::CallbackInfo& info) {
  int64_t op = 0;
  F32 x, y;
  if (!argInt(info, 0, &op) || !argF32(info, 1, &x) || !argF32(info, 2, &y)) return info.Env().Undefined();
  if (y.length < x.length || op < 0 || op > 1) {
    fail(info.Env(), "estimator: bad op or output too small");
    return info.Env().Undefined();
  }
  if (op == 0) {
    lowbit::roundHalfEven(x.data, y.data, static_cast<int64_t>(x.length));
  } else {
    lowbit::signPlusMinus(x.data, y.data, static_cast<int64_t>(x.length));
  }
  return info.Env().Undefined();
}

// ================================================================ integer kernels (intgemm.h)
// Owned by the integer-runtime kernels (src/runtime/kernels); byte arrays may be Int8Array or
// Uint8Array (the activations' signedness is read from the array type).
struct Bytes {
  uint8_t* data = nullptr;
  size_t length = 0;
  bool isSigned = false;
};

bool argBytes(const Napi::CallbackInfo& info, size_t i, Bytes* out) {
  if (i >= info.Length() || !info[i].IsTypedArray()) {
    return fail(info.Env(), "argument " + std::to_string(i) + " must be an Int8Array or Uint8Array");
  }
  auto array = info[i].As<Napi::TypedArray>();
  const napi_typedarray_type t = array.TypedArrayType();
  if (t != napi_int8_array && t != napi_uint8_array) {
    return fail(info.Env(), "argument " + std::to_string(i) + " must be an Int8Array or Uint8Array");
  }
  out->data = static_cast<uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
  out->length = array.ElementLength();
  out->isSigned = t == napi_int8_array;
  return true;
}

bool argInt32s(const Napi::CallbackInfo& info, size_t i, int32_t** data, size_t* length) { return argI32(info, i, data, length); }

bool shapeOk(const Napi::CallbackInfo& info, int64_t M, int64_t N, int64_t K) {
  const int64_t lim = int64_t{1} << 31;
  if (M < 0 || N < 0 || K < 0 || M >= lim || N >= lim || K >= lim) return fail(info.Env(), "bad shape");
  return true;
}

// alignmentPad(view: TypedArray) -> bytes to skip from the view's first byte to the next 64-byte
// (cache line) boundary. The int8 kernels read their packed weights a whole line per load; a panel
// that starts mid-line splits every load in two (about 7 % of the VNNI GEMM at n = 1024). Typed
// array backing stores do not move, so a subarray at this offset stays aligned.
Napi::Value AlignmentPad(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray()) {
    fail(info.Env(), "alignmentPad: argument 0 must be a typed array");
    return info.Env().Undefined();
  }
  auto array = info[0].As<Napi::TypedArray>();
  const auto* first = static_cast<const uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
  return Napi::Number::New(info.Env(), static_cast<double>(lowbit::cacheLinePad(first)));
}

// int8PackedBytes(N, K) -> bytes of the VNNI panel
Napi::Value Int8PackedBytes(const Napi::CallbackInfo& info) {
  int64_t N = 0, K = 0;
  if (!argInt(info, 0, &N) || !argInt(info, 1, &K) || !shapeOk(info, 1, N, K)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), static_cast<double>(lowbit::int8PackedBytes(N, K)));
}

// packInt8(w: Int8Array (N, K), N, K, packed: Int8Array, rowSums: Int32Array (N))
// packLowBit(w: Uint8Array, bits: 4 | 2, N, K, packed: Int8Array, rowSums: Int32Array (N))
template <bool lowBit>
Napi::Value PackWeights(const Napi::CallbackInfo& info) {
  Bytes w, packed;
  int64_t bits = 8, N = 0, K = 0;
  int32_t* sums = nullptr;
  size_t nsums = 0;
  const size_t o = lowBit ? 1 : 0;
  if (!argBytes(info, 0, &w) || (lowBit && !argInt(info, 1, &bits)) || !argInt(info, o + 1, &N) ||
      !argInt(info, o + 2, &K) || !argBytes(info, o + 3, &packed) || !argInt32s(info, o + 4, &sums, &nsums) ||
      !shapeOk(info, 1, N, K)) {
    return info.Env().Undefined();
  }
  const int64_t perByte = 8 / bits;
  const int64_t need = lowBit ? N * ((K + perByte - 1) / perByte) : N * K;
  if ((bits != 8 && bits != 4 && bits != 2) || (lowBit && bits == 8) || static_cast<int64_t>(w.length) < need ||
      static_cast<int64_t>(packed.length) < lowbit::int8PackedBytes(N, K) || static_cast<int64_t>(nsums) < N) {
    fail(info.Env(), "pack: bad bits or buffers too small");
    return info.Env().Undefined();
  }
  if (lowBit) {
    lowbit::packLowBit(w.data, static_cast<int>(bits), N, K, reinterpret_cast<int8_t*>(packed.data), sums);
  } else {
    lowbit::packInt8(reinterpret_cast<const int8_t*>(w.data), N, K, reinterpret_cast<int8_t*>(packed.data), sums);
  }
  return info.Env().Undefined();
}

// The arguments shared by gemmInt8Packed and gemmInt8Amx:
// (M, N, K, a: Int8Array | Uint8Array (M, K), aZero, packed, rowSums, c: Int32Array (M, N)),
// checked against the packed layout's size `packedBytes(N, K)`.
struct Int8GemmArgs {
  int64_t M = 0, N = 0, K = 0, zero = 0;
  Bytes a, packed;
  int32_t *sums = nullptr, *c = nullptr;
};

static bool parseInt8GemmArgs(const Napi::CallbackInfo& info, const char* name, int64_t (*packedBytes)(int64_t, int64_t),
                              Int8GemmArgs* g) {
  size_t nsums = 0, nc = 0;
  if (!argInt(info, 0, &g->M) || !argInt(info, 1, &g->N) || !argInt(info, 2, &g->K) || !argBytes(info, 3, &g->a) ||
      !argInt(info, 4, &g->zero) || !argBytes(info, 5, &g->packed) || !argInt32s(info, 6, &g->sums, &nsums) ||
      !argInt32s(info, 7, &g->c, &nc) || !shapeOk(info, g->M, g->N, g->K)) {
    return false;
  }
  if (static_cast<int64_t>(g->a.length) < g->M * g->K || static_cast<int64_t>(g->packed.length) < packedBytes(g->N, g->K) ||
      static_cast<int64_t>(nsums) < g->N || static_cast<int64_t>(nc) < g->M * g->N || g->zero < -(int64_t{1} << 31) ||
      g->zero >= (int64_t{1} << 31)) {
    fail(info.Env(), std::string(name) + ": bad zero point or buffers too small");
    return false;
  }
  return true;
}

// gemmInt8Packed(M, N, K, a: Int8Array | Uint8Array (M, K), aZero, packed, rowSums, c: Int32Array (M, N))
Napi::Value GemmInt8Packed(const Napi::CallbackInfo& info) {
  Int8GemmArgs g;
  if (!parseInt8GemmArgs(info, "gemmInt8", lowbit::int8PackedBytes, &g)) return info.Env().Undefined();
  lowbit::gemmInt8Packed(g.M, g.N, g.K, g.a.data, g.a.isSigned, static_cast<int32_t>(g.zero),
                         reinterpret_cast<const int8_t*>(g.packed.data), g.sums, g.c);
  return info.Env().Undefined();
}

// gemmLowBit(bits: 4 | 2, M, N, K, a, aZero, w: Uint8Array (N rows of ceil(K*bits/8) bytes), c)
Napi::Value GemmLowBit(const Napi::CallbackInfo& info) {
  int64_t bits = 0, M = 0, N = 0, K = 0, zero = 0;
  Bytes a, w;
  int32_t* c = nullptr;
  size_t nc = 0;
  if (!argInt(info, 0, &bits) || !argInt(info, 1, &M) || !argInt(info, 2, &N) || !argInt(info, 3, &K) ||
      !argBytes(info, 4, &a) || !argInt(info, 5, &zero) || !argBytes(info, 6, &w) || !argInt32s(info, 7, &c, &nc) ||
      !shapeOk(info, M, N, K)) {
    return info.Env().Undefined();
  }
  const int64_t perByte = bits == 4 ? 2 : 4;
  if ((bits != 4 && bits != 2) || static_cast<int64_t>(a.length) < M * K ||
      static_cast<int64_t>(w.length) < N * ((K + perByte - 1) / perByte) || static_cast<int64_t>(nc) < M * N ||
      zero < -(int64_t{1} << 31) || zero >= (int64_t{1} << 31)) {
    fail(info.Env(), "gemmLowBit: bad bits, zero point or buffers too small");
    return info.Env().Undefined();
  }
  // reused across calls (packLowBit overwrites it); the panel starts on a cache line (see AlignmentPad)
  thread_local std::vector<int8_t> packed;
  thread_local std::vector<int32_t> sums;
  int8_t* panel = lowbit::cacheAligned(packed, static_cast<size_t>(lowbit::int8PackedBytes(N, K)));
  if (sums.size() < static_cast<size_t>(N)) sums.resize(static_cast<size_t>(N));
  lowbit::packLowBit(w.data, static_cast<int>(bits), N, K, panel, sums.data());
  lowbit::gemmInt8Packed(M, N, K, a.data, a.isSigned, static_cast<int32_t>(zero), panel, sums.data(), c);
  return info.Env().Undefined();
}

// gemmBinary(M, N, K, a: Uint8Array (M rows of ceil(K/64)*8 bytes), w: Uint8Array (N rows), c: Int32Array (M, N))
Napi::Value GemmBinary(const Napi::CallbackInfo& info) {
  int64_t M = 0, N = 0, K = 0;
  Bytes a, w;
  int32_t* c = nullptr;
  size_t nc = 0;
  if (!argInt(info, 0, &M) || !argInt(info, 1, &N) || !argInt(info, 2, &K) || !argBytes(info, 3, &a) ||
      !argBytes(info, 4, &w) || !argInt32s(info, 5, &c, &nc) || !shapeOk(info, M, N, K)) {
    return info.Env().Undefined();
  }
  const int64_t rowBytes = (K + 63) / 64 * 8;
  if (static_cast<int64_t>(a.length) < M * rowBytes || static_cast<int64_t>(w.length) < N * rowBytes ||
      static_cast<int64_t>(nc) < M * N) {
    fail(info.Env(), "gemmBinary: buffers too small");
    return info.Env().Undefined();
  }
  lowbit::gemmBinary(M, N, K, reinterpret_cast<const uint64_t*>(a.data), reinterpret_cast<const uint64_t*>(w.data), c);
  return info.Env().Undefined();
}

// requantize(acc: Int32Array (M, N), M, N, mult: Int32Array (N), shift: Int32Array (N), zOut, qmin, qmax, out)
Napi::Value Requantize(const Napi::CallbackInfo& info) {
  int64_t M = 0, N = 0, zOut = 0, qmin = 0, qmax = 0;
  int32_t *acc = nullptr, *mult = nullptr, *shift = nullptr;
  size_t nacc = 0, nmult = 0, nshift = 0;
  Bytes out;
  if (!argInt32s(info, 0, &acc, &nacc) || !argInt(info, 1, &M) || !argInt(info, 2, &N) ||
      !argInt32s(info, 3, &mult, &nmult) || !argInt32s(info, 4, &shift, &nshift) || !argInt(info, 5, &zOut) ||
      !argInt(info, 6, &qmin) || !argInt(info, 7, &qmax) || !argBytes(info, 8, &out) || !shapeOk(info, M, N, 0)) {
    return info.Env().Undefined();
  }
  bool ok = static_cast<int64_t>(nacc) >= M * N && static_cast<int64_t>(nmult) >= N &&
            static_cast<int64_t>(nshift) >= N && static_cast<int64_t>(out.length) >= M * N && qmin <= qmax &&
            zOut >= -(int64_t{1} << 31) && zOut < (int64_t{1} << 31) &&
            qmin >= (out.isSigned ? -128 : 0) && qmax <= (out.isSigned ? 127 : 255);
  for (int64_t n = 0; ok && n < N; n++) ok = shift[n] >= -31 && shift[n] <= 31;
  if (!ok) {
    fail(info.Env(), "requantize: bad shift, range or buffers too small");
    return info.Env().Undefined();
  }
  lowbit::requantize(acc, M, N, mult, shift, static_cast<int32_t>(zOut), static_cast<int32_t>(qmin),
                     static_cast<int32_t>(qmax), out.data, out.isSigned);
  return info.Env().Undefined();
}

// vnniPeakGops(threads, seconds?) / popcountPeakGbits(threads, seconds?): 0 when the path is missing
template <bool vnni>
Napi::Value IntPeak(const Napi::CallbackInfo& info) {
  int64_t threads = 1;
  if (!argInt(info, 0, &threads)) return info.Env().Undefined();
  double seconds = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0.2;
  if (threads < 1 || threads > 256) threads = 1;
  const int t = static_cast<int>(threads);
  return Napi::Number::New(info.Env(), vnni ? lowbit::vnniPeakGops(t, seconds) : lowbit::popcountPeakGbits(t, seconds));
}

Napi::Value IntKernelsInfo(const Napi::CallbackInfo& info) {
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("int8", lowbit::int8PathName());
  out.Set("binary", lowbit::binaryPathName());
  out.Set("amx", lowbit::amxStatus());
  return out;
}

// amxPackedBytes(N, K) -> bytes of the AMX weight tiles (amx.h)
Napi::Value AmxPackedBytes(const Napi::CallbackInfo& info) {
  int64_t N = 0, K = 0;
  if (!argInt(info, 0, &N) || !argInt(info, 1, &K) || !shapeOk(info, 1, N, K)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), static_cast<double>(lowbit::amxPackedBytes(N, K)));
}

// packInt8Amx(w: Int8Array (N, K), N, K, packed: Int8Array (amxPackedBytes))
Napi::Value PackInt8Amx(const Napi::CallbackInfo& info) {
  Bytes w, packed;
  int64_t N = 0, K = 0;
  if (!argBytes(info, 0, &w) || !argInt(info, 1, &N) || !argInt(info, 2, &K) || !argBytes(info, 3, &packed) ||
      !shapeOk(info, 1, N, K)) {
    return info.Env().Undefined();
  }
  if (static_cast<int64_t>(w.length) < N * K || static_cast<int64_t>(packed.length) < lowbit::amxPackedBytes(N, K)) {
    fail(info.Env(), "packInt8Amx: buffers too small");
    return info.Env().Undefined();
  }
  lowbit::packAmx(reinterpret_cast<const int8_t*>(w.data), N, K, reinterpret_cast<int8_t*>(packed.data));
  return info.Env().Undefined();
}

// gemmInt8Amx(M, N, K, a: Int8Array | Uint8Array (M, K), aZero, packed (packInt8Amx), rowSums, c: Int32Array (M, N));
// throws when AMX is unavailable (see intKernelsInfo().amx)
Napi::Value GemmInt8Amx(const Napi::CallbackInfo& info) {
  Int8GemmArgs g;
  if (!parseInt8GemmArgs(info, "gemmInt8Amx", lowbit::amxPackedBytes, &g)) return info.Env().Undefined();
  if (!lowbit::amxAvailable()) {
    fail(info.Env(), std::string("gemmInt8Amx: AMX unavailable (") + lowbit::amxStatus() + ")");
    return info.Env().Undefined();
  }
  lowbit::gemmInt8Amx(g.M, g.N, g.K, g.a.data, g.a.isSigned, static_cast<int32_t>(g.zero),
                      reinterpret_cast<const int8_t*>(g.packed.data), g.sums, g.c);
  return info.Env().Undefined();
}

// amxPeakGops(threads, seconds?): tdpbusd peak (0 without AMX)
Napi::Value AmxPeak(const Napi::CallbackInfo& info) {
  int64_t threads = 1;
  if (!argInt(info, 0, &threads)) return info.Env().Undefined();
  double seconds = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0.2;
  if (threads < 1 || threads > 256) threads = 1;
  return Napi::Number::New(info.Env(), lowbit::amxPeakGops(static_cast<int>(threads), seconds));
}

// ---------------------------------------------------------------- native IntModel executor (intmodel.h)
template <class T, napi_typedarray_type kType>
bool optArray(const Napi::Object& o, const char* key, std::vector<T>* out, const Napi::Env& env) {
  if (!o.Has(key)) return true;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return true;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != kType) {
    return fail(env, std::string("intPlanCreate: '") + key + "' has the wrong array type");
  }
  auto a = v.As<Napi::TypedArray>();
  const T* data = reinterpret_cast<const T*>(static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  out->assign(data, data + a.ElementLength());
  return true;
}

// intPlanCreate(ops: {meta: Int32Array(32), f64: Float64Array(4), w?, wbits?, mult?, shift?, bias?,
//   threshold?, direction?, S?, B?}[], direct = true, amx = true, fuse = true, intRequant = true, xnor = auto) ->
//   External plan (direct: allow the direct one-input-channel conv kernel; false forces im2col +
//   GEMM; amx: use AMX when available; fuse: fuse max pooling into the preceding conv; intRequant:
//   requantize in int64 lanes where the constants fit, else in doubles; false for cross-checks; xnor: true: a conv
//   with meta[32] = 1 (its input is +-1) and +-1 weights runs XNOR-popcount, false: never, absent: only where the
//   int8 GEMM is scalar, xnorconv.h). meta: kind, in, out, C, H, W, OC, OH, OW,
//   kh, kw, sh, sw, ph, pw, dh, dw, groups, zero, qmin, qmax, sign|outMode, z, lo, hi, biasShift,
//   fracBits, K, slots (1: meta[29..31] = src, src2, dst; a DAG, see intmodel.h); f64: scale, clamp lo,
//   clamp hi. An add (kind 6): zero = z_a, qmin = z_b, qmax = type of b, biasShift = shift, f64 = [_, M_a, M_b].
Napi::Value IntPlanCreate(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) {
    fail(env, "intPlanCreate: expected an array of ops");
    return env.Undefined();
  }
  auto list = info[0].As<Napi::Array>();
  auto plan = std::make_unique<lowbit::IntPlan>();
  std::vector<std::pair<size_t, std::vector<int8_t>>> deferredDirect;  // convs that may use the direct kernel
  std::vector<std::pair<size_t, std::vector<int8_t>>> deferredAmx;     // int8 layers that may use AMX
  const bool allowAmx = !(info.Length() > 2 && info[2].IsBoolean() && !info[2].As<Napi::Boolean>().Value());
  const bool allowFuse = !(info.Length() > 3 && info[3].IsBoolean() && !info[3].As<Napi::Boolean>().Value());
  const bool allowIntRequant = !(info.Length() > 4 && info[4].IsBoolean() && !info[4].As<Napi::Boolean>().Value());
  // xnor: true forces XNOR-popcount for eligible convs, false disables it, absent = where it is faster (xnorconv.h)
  const bool xnorGiven = info.Length() > 5 && info[5].IsBoolean();
  const bool allowXnor = !xnorGiven || info[5].As<Napi::Boolean>().Value();
  const bool forceXnor = xnorGiven && info[5].As<Napi::Boolean>().Value();
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Value item = list.Get(i);
    if (!item.IsObject()) {
      fail(env, "intPlanCreate: op " + std::to_string(i) + " is not an object");
      return env.Undefined();
    }
    auto o = item.As<Napi::Object>();
    std::vector<int32_t> meta, mult, shift, bias, thr, dir, index, groupMult;
    std::vector<double> f64;
    std::vector<int8_t> w;
    std::vector<uint8_t> wbits;
    std::vector<float> S, B;
    if (!optArray<int32_t, napi_int32_array>(o, "meta", &meta, env) || !optArray<double, napi_float64_array>(o, "f64", &f64, env) ||
        !optArray<int8_t, napi_int8_array>(o, "w", &w, env) || !optArray<uint8_t, napi_uint8_array>(o, "wbits", &wbits, env) ||
        !optArray<int32_t, napi_int32_array>(o, "mult", &mult, env) || !optArray<int32_t, napi_int32_array>(o, "shift", &shift, env) ||
        !optArray<int32_t, napi_int32_array>(o, "bias", &bias, env) || !optArray<int32_t, napi_int32_array>(o, "threshold", &thr, env) ||
        !optArray<int32_t, napi_int32_array>(o, "direction", &dir, env) || !optArray<float, napi_float32_array>(o, "S", &S, env) ||
        !optArray<float, napi_float32_array>(o, "B", &B, env) || !optArray<int32_t, napi_int32_array>(o, "index", &index, env) ||
        !optArray<int32_t, napi_int32_array>(o, "groupMult", &groupMult, env)) {
      return env.Undefined();
    }
    if (meta.size() < 28 || f64.size() < 3) {
      fail(env, "intPlanCreate: op " + std::to_string(i) + " needs meta (28 ints) and f64 (3 doubles)");
      return env.Undefined();
    }
    lowbit::IntOp op;
    if (meta[0] < 0 || meta[0] > 7 || meta[1] < 0 || meta[1] > 4 || meta[2] < 0 || meta[2] > 4 || meta[21] < 0 || meta[21] > 2) {
      fail(env, "intPlanCreate: op " + std::to_string(i) + " has a bad kind, type or mode");
      return env.Undefined();
    }
    op.kind = static_cast<lowbit::IOpKind>(meta[0]);
    op.in = static_cast<lowbit::IType>(meta[1]);
    op.out = static_cast<lowbit::IType>(meta[2]);
    op.C = meta[3], op.H = meta[4], op.W = meta[5], op.OC = meta[6], op.OH = meta[7], op.OW = meta[8];
    op.kh = meta[9], op.kw = meta[10], op.sh = meta[11], op.sw = meta[12], op.ph = meta[13], op.pw = meta[14];
    op.dh = meta[15], op.dw = meta[16], op.groups = meta[17];
    op.zero = meta[18], op.qmin = meta[19], op.qmax = meta[20];
    op.sign = op.kind == lowbit::IOpKind::Quantize && meta[21] == 1;
    op.outMode = static_cast<lowbit::IOutMode>(op.kind == lowbit::IOpKind::Quantize ? 0 : meta[21]);
    op.z = meta[22], op.lo = meta[23], op.hi = meta[24];
    const int32_t biasShift = meta[25];
    op.fracBits = meta[26];
    op.K = meta[27];
    op.scale = f64[0], op.clo = f64[1], op.chi = f64[2];
    if (meta.size() >= 32 && meta[28] == 1) {  // a slot plan (a DAG): src, src2, dst
      if (i == 0) plan->slots = true;
      op.src = meta[29], op.src2 = meta[30], op.dst = meta[31];
    }
    if ((meta.size() >= 32 && meta[28] == 1) != plan->slots) {
      fail(env, "intPlanCreate: op " + std::to_string(i) + ": either every op has slots (meta[28] = 1) or none");
      return env.Undefined();
    }
    if (op.kind == lowbit::IOpKind::Add) {
      // add: zero = z_a, meta[19] = z_b, meta[20] = type of b, meta[25] = shift, f64[1], f64[2] = M_a, M_b
      if (meta[20] < 0 || meta[20] > 4 || !(std::fabs(f64[1]) <= INT32_MAX) || !(std::fabs(f64[2]) <= INT32_MAX) ||
          f64[1] != std::trunc(f64[1]) || f64[2] != std::trunc(f64[2])) {
        fail(env, "intPlanCreate: op " + std::to_string(i) + ": add needs int32 multipliers and a second input type");
        return env.Undefined();
      }
      op.zero2 = meta[19], op.in2 = static_cast<lowbit::IType>(meta[20]), op.addShift = meta[25];
      op.multA = static_cast<int64_t>(f64[1]), op.multB = static_cast<int64_t>(f64[2]);
      // meta[21] = 1: the sign of the sum (int8 +-1, signadd.h), else the requantized sum
      op.outMode = meta[21] == 1 ? lowbit::IOutMode::Sign : lowbit::IOutMode::Requantize;
    }
    if (op.kind == lowbit::IOpKind::Permute) op.gather = std::move(index);  // checked by intPlanFinish
    // a per-group linear (meta[33] = G > 0): raw weights, relative multipliers and the column gather, checked by intPlanFinish
    const bool grouped = op.kind == lowbit::IOpKind::Linear && meta.size() >= 34 && meta[33] > 0;
    if (grouped) {
      op.groupSize = meta[33];
      op.wgroup.assign(w.begin(), w.end());
      op.groupMult = std::move(groupMult);
      op.gather = std::move(index);
    }
    op.signInput = op.kind == lowbit::IOpKind::Conv && meta.size() >= 33 && meta[32] == 1;  // a +-1 input (xnorconv.h)
    const bool layer = op.kind == lowbit::IOpKind::Conv || op.kind == lowbit::IOpKind::Linear;
    if (layer) {
      if (op.groups <= 0 || op.OC <= 0 || op.K < 0 || op.OC % op.groups != 0 || op.OC > (1 << 24) || op.K > (1 << 26)) {
        fail(env, "intPlanCreate: op " + std::to_string(i) + " has a bad shape");
        return env.Undefined();
      }
      const int64_t og = op.OC / op.groups;
      if (op.in == lowbit::IType::Bits) {
        const int64_t words = (op.K + 63) / 64;
        if (static_cast<int64_t>(wbits.size()) < op.OC * words * 8) {
          fail(env, "intPlanCreate: op " + std::to_string(i) + ": bit weights too short");
          return env.Undefined();
        }
        op.wbits.resize(static_cast<size_t>(op.OC * words));
        std::memcpy(op.wbits.data(), wbits.data(), op.wbits.size() * 8);
        if (lowbit::binaryUsesPanels()) {
          op.wpanels.resize(static_cast<size_t>(lowbit::binaryPanelWords(op.OC, op.K)));
          lowbit::packBinaryPanels(op.wbits.data(), op.OC, op.K, op.wpanels.data());
        }
      } else {
        if (static_cast<int64_t>(w.size()) < op.OC * op.K) {
          fail(env, "intPlanCreate: op " + std::to_string(i) + ": weights too short");
          return env.Undefined();
        }
        op.packedStride = lowbit::int8PackedBytes(og, op.K);
        op.packed.resize(static_cast<size_t>(op.packedStride * op.groups));
        op.rowSums.resize(static_cast<size_t>(op.OC));
        for (int64_t g = 0; g < op.groups; g++) {
          lowbit::packInt8(w.data() + g * og * op.K, og, op.K, op.packed.data() + g * op.packedStride, op.rowSums.data() + g * og);
        }
        op.direct = false;
        if (allowXnor && !grouped) lowbit::intPrepareXnorConv(&op, w.data(), forceXnor);
        if (!op.xnor && !grouped && !(info.Length() > 1 && info[1].IsBoolean() && !info[1].As<Napi::Boolean>().Value())) deferredDirect.push_back({plan->ops.size(), w});
        if (!op.xnor && !grouped && allowAmx && lowbit::amxAvailable()) deferredAmx.push_back({plan->ops.size(), std::move(w)});
      }
      const size_t O = static_cast<size_t>(op.OC);
      if (op.outMode == lowbit::IOutMode::Requantize) {
        if (mult.size() < O || shift.size() < O || bias.size() < O || biasShift < 0 || biasShift > 30) {
          fail(env, "intPlanCreate: op " + std::to_string(i) + ": requantize tensors");
          return env.Undefined();
        }
        op.up = std::ldexp(1.0, biasShift);
        op.mscale.resize(O);
        op.bias.resize(O);
        op.mneg.assign(O + 8, 0);
        for (size_t c = 0; c < O; c++) {
          if (shift[c] < -200 || shift[c] > 200) {
            fail(env, "intPlanCreate: op " + std::to_string(i) + ": shift out of range");
            return env.Undefined();
          }
          op.mscale[c] = std::ldexp(std::fabs(static_cast<double>(mult[c])), -shift[c]);
          op.mneg[c] = mult[c] < 0 ? 1 : 0;
          op.bias[c] = bias[c];
        }
        if (allowIntRequant && !grouped) lowbit::intPrepareRequant(&op, mult.data(), shift.data(), bias.data(), biasShift);
      } else if (op.outMode == lowbit::IOutMode::Sign) {
        if (thr.size() < O || dir.size() < O) {
          fail(env, "intPlanCreate: op " + std::to_string(i) + ": sign tensors");
          return env.Undefined();
        }
        op.lower.resize(O);
        op.upper.resize(O);
        constexpr int64_t lo32 = INT32_MIN, hi32 = INT32_MAX;
        for (size_t c = 0; c < O; c++) {
          // bit = d acc >= t, as an interval lower <= acc <= upper (empty: lower = max, upper = min)
          const int64_t t = thr[c];
          int64_t lower = lo32, upper = hi32;
          if (dir[c] > 0) {
            lower = t;
          } else if (dir[c] < 0) {
            upper = -t;
          } else if (t > 0) {
            lower = hi32, upper = lo32;
          }
          if (lower > hi32 || upper < lo32) lower = hi32, upper = lo32;
          op.lower[c] = static_cast<int32_t>(std::max(lower, lo32));
          op.upper[c] = static_cast<int32_t>(std::min(upper, hi32));
        }
      } else {
        op.S = S;
        op.B = B;
      }
    }
    plan->ops.push_back(std::move(op));
  }
  const std::string err = lowbit::intPlanFinish(plan.get());
  if (!err.empty()) {
    fail(env, "intPlanCreate: " + err);
    return env.Undefined();
  }
  for (auto& op : plan->ops) if (op.groupSize > 0) lowbit::intPrepareGroupLinear(&op);
  for (auto& [index, weights] : deferredDirect) lowbit::intPrepareDirectConv(&plan->ops[index], weights.data());
  for (auto& [index, weights] : deferredAmx) {
    lowbit::intPrepareAmx(&plan->ops[index], weights.data());
    plan->usesAmx = plan->usesAmx || plan->ops[index].amx;
  }
  if (allowFuse) {
    lowbit::intPlanFuse(plan.get());
    lowbit::intPlanShareConv(plan.get());
  }
  return Napi::External<lowbit::IntPlan>::New(env, plan.release(), [](Napi::Env, lowbit::IntPlan* p) { delete p; });
}

// intPlanRun(plan, x: Float32Array (n, inputSize), n, out: Float32Array (n, outputSize))
Napi::Value IntPlanRun(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsExternal()) {
    fail(env, "intPlanRun: argument 0 must be a plan from intPlanCreate");
    return env.Undefined();
  }
  const lowbit::IntPlan* plan = info[0].As<Napi::External<lowbit::IntPlan>>().Data();
  F32 x, out;
  int64_t n = 0;
  if (!argF32(info, 1, &x) || !argInt(info, 2, &n) || !argF32(info, 3, &out)) return env.Undefined();
  if (n < 0 || static_cast<int64_t>(x.length) < n * plan->inputSize || static_cast<int64_t>(out.length) < n * plan->outputSize) {
    fail(env, "intPlanRun: buffers too small");
    return env.Undefined();
  }
  lowbit::intPlanRun(*plan, x.data, n, out.data);
  return env.Undefined();
}

// intPlanProfile(plan, x, n, out, threads, nanos: Float64Array (ops)): intPlanRun serially on the
// calling thread in the chunks of a `threads`-thread run, adding each op's thread CPU time (ns) to nanos.
Napi::Value IntPlanProfile(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[0].IsExternal() || !info[5].IsTypedArray() ||
      info[5].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    fail(env, "intPlanProfile: expected (plan, x, n, out, threads, nanos: Float64Array)");
    return env.Undefined();
  }
  const lowbit::IntPlan* plan = info[0].As<Napi::External<lowbit::IntPlan>>().Data();
  F32 x, out;
  int64_t n = 0, threads = 1;
  if (!argF32(info, 1, &x) || !argInt(info, 2, &n) || !argF32(info, 3, &out) || !argInt(info, 4, &threads)) return env.Undefined();
  Napi::Float64Array nanos = info[5].As<Napi::Float64Array>();
  if (n < 0 || static_cast<int64_t>(x.length) < n * plan->inputSize || static_cast<int64_t>(out.length) < n * plan->outputSize ||
      nanos.ElementLength() < plan->ops.size() || threads < 1) {
    fail(env, "intPlanProfile: buffers too small");
    return env.Undefined();
  }
  lowbit::intPlanProfile(*plan, x.data, n, out.data, static_cast<int>(threads), nanos.Data());
  return env.Undefined();
}

// intPlanKernels(plan) -> one string per executed op naming its kernel, e.g. "conv direct+maxpool
// (int64 requantize)", "conv amx (double requantize)", "linear avx512-vnni", "linear binary", "maxpool"; a per-group
// linear: "linear group-vnni g32 (double requantize)" on its VNNI path, "linear group g32 ..." otherwise
// The IntModel value type of a Uint8Array (u8), Int8Array (s8) or Int32Array (int32); false otherwise.
bool typeOf(const Napi::Value& v, lowbit::IType* t) {
  if (!v.IsTypedArray()) return false;
  switch (v.As<Napi::TypedArray>().TypedArrayType()) {
    case napi_uint8_array: *t = lowbit::IType::U8; return true;
    case napi_int8_array: *t = lowbit::IType::S8; return true;
    case napi_int32_array: *t = lowbit::IType::I32; return true;
    default: return false;
  }
}

// intAddValues(a, b, params: Float64Array [z_a, z_b, M_a, M_b, shift, z, lo, hi], out): the add op of
//   the executor (its vector kernel where exact) on a, b, out each a Uint8Array (u8), Int8Array (s8)
//   or Int32Array (int32) of one length; tests compare it with addRescaled.
Napi::Value IntAddValues(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  lowbit::IType ta, tb, to;
  if (info.Length() < 4 || !typeOf(info[0], &ta) || !typeOf(info[1], &tb) || !typeOf(info[3], &to) || !info[2].IsTypedArray() ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) {
    fail(env, "intAddValues: expected (a, b: Uint8Array | Int8Array | Int32Array, params: Float64Array(8), out: Uint8Array | Int8Array | Int32Array)");
    return env.Undefined();
  }
  auto a = info[0].As<Napi::TypedArray>(), b = info[1].As<Napi::TypedArray>(), out = info[3].As<Napi::TypedArray>();
  auto p = info[2].As<Napi::Float64Array>();
  if (p.ElementLength() < 8 || b.ElementLength() != a.ElementLength() || out.ElementLength() != a.ElementLength()) {
    fail(env, "intAddValues: params needs 8 values and a, b, out equal lengths");
    return env.Undefined();
  }
  const auto isInt32 = [](double v) { return v == std::trunc(v) && v >= INT32_MIN && v <= INT32_MAX; };
  for (size_t k = 0; k < 8; k++) {
    if (!isInt32(p[k]) || (k == 4 && (p[k] < 0 || p[k] > 62)) || ((k == 2 || k == 3) && p[k] == INT32_MIN)) {
      fail(env, "intAddValues: params[" + std::to_string(k) + "] out of range");
      return env.Undefined();
    }
  }
  if (p[6] > p[7] || (to == lowbit::IType::U8 && (p[6] < 0 || p[7] > 255)) || (to == lowbit::IType::S8 && (p[6] < -128 || p[7] > 127))) {
    fail(env, "intAddValues: the range [lo, hi] = [" + std::to_string(p[6]) + ", " + std::to_string(p[7]) + "] does not fit the output array's type");
    return env.Undefined();
  }
  lowbit::IntOp op;
  op.kind = lowbit::IOpKind::Add;
  op.in = ta, op.in2 = tb, op.out = to;
  op.zero = static_cast<int32_t>(p[0]), op.zero2 = static_cast<int32_t>(p[1]);
  op.multA = static_cast<int64_t>(p[2]), op.multB = static_cast<int64_t>(p[3]), op.addShift = static_cast<int32_t>(p[4]);
  op.z = static_cast<int32_t>(p[5]), op.lo = static_cast<int32_t>(p[6]), op.hi = static_cast<int32_t>(p[7]);
  const auto data = [](Napi::TypedArray t) { return static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset(); };
  lowbit::intAddValues(op, data(a), data(b), static_cast<int64_t>(a.ElementLength()), data(out));
  return env.Undefined();
}

// intSignAddValues(a, b, params: Float64Array [z_a, z_b, M_a, M_b], out: Int8Array): the sign add
//   op of the executor (+1 where (a - z_a) M_a + (b - z_b) M_b >= 0, else -1) on a, b each a
//   Uint8Array (u8), Int8Array (s8) or Int32Array (int32) of out's length; tests compare it with signOfSum.
Napi::Value IntSignAddValues(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  lowbit::IType ta, tb;
  if (info.Length() < 4 || !typeOf(info[0], &ta) || !typeOf(info[1], &tb) || !info[2].IsTypedArray() ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array || !info[3].IsTypedArray() ||
      info[3].As<Napi::TypedArray>().TypedArrayType() != napi_int8_array) {
    fail(env, "intSignAddValues: expected (a, b: Uint8Array | Int8Array | Int32Array, params: Float64Array(4), out: Int8Array)");
    return env.Undefined();
  }
  auto a = info[0].As<Napi::TypedArray>(), b = info[1].As<Napi::TypedArray>(), out = info[3].As<Napi::TypedArray>();
  auto p = info[2].As<Napi::Float64Array>();
  if (p.ElementLength() < 4 || b.ElementLength() != a.ElementLength() || out.ElementLength() != a.ElementLength()) {
    fail(env, "intSignAddValues: params needs 4 values and a, b, out equal lengths");
    return env.Undefined();
  }
  for (size_t k = 0; k < 4; k++) {
    const double v = p[k];
    if (v != std::trunc(v) || v < INT32_MIN || v > INT32_MAX || (k >= 2 && v == INT32_MIN)) {
      fail(env, "intSignAddValues: params[" + std::to_string(k) + "] = " + std::to_string(v) + " is not an int32" + (k >= 2 ? " multiplier (|M| <= 2^31 - 1)" : ""));
      return env.Undefined();
    }
  }
  lowbit::IntOp op;
  op.kind = lowbit::IOpKind::Add;
  op.outMode = lowbit::IOutMode::Sign;
  op.in = ta, op.in2 = tb, op.out = lowbit::IType::S8;
  op.zero = static_cast<int32_t>(p[0]), op.zero2 = static_cast<int32_t>(p[1]);
  op.multA = static_cast<int64_t>(p[2]), op.multB = static_cast<int64_t>(p[3]);
  const auto data = [](Napi::TypedArray t) { return static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset(); };
  lowbit::intSignAddRun(op, data(a), data(b), static_cast<int64_t>(a.ElementLength()), reinterpret_cast<int8_t*>(data(out)));
  return env.Undefined();
}

// intAvgPoolValues(x, dims: Float64Array [n, C, H, W, kh, kw, sh, sw, ph, pw, zero, fracBits], out: Int32Array)
//   -> kernel name: the average pooling op of the executor (its vector kernel where exact) on n
//   samples [H, W, C] of x (Uint8Array u8, Int8Array s8 or Int32Array int32) into out [n, OH, OW, C];
//   tests compare it with avgPoolInt.
Napi::Value IntAvgPoolValues(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  lowbit::IType tx = lowbit::IType::F32;
  if (info.Length() >= 3 && info[0].IsTypedArray()) {
    switch (info[0].As<Napi::TypedArray>().TypedArrayType()) {
      case napi_uint8_array: tx = lowbit::IType::U8; break;
      case napi_int8_array: tx = lowbit::IType::S8; break;
      case napi_int32_array: tx = lowbit::IType::I32; break;
      default: break;
    }
  }
  const auto isType = [](const Napi::Value& v, napi_typedarray_type t) { return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == t; };
  if (tx == lowbit::IType::F32 || !isType(info[1], napi_float64_array) || !isType(info[2], napi_int32_array)) {
    fail(env, "intAvgPoolValues: expected (x: Uint8Array | Int8Array | Int32Array, dims: Float64Array(12), out: Int32Array)");
    return env.Undefined();
  }
  auto x = info[0].As<Napi::TypedArray>();
  auto p = info[1].As<Napi::Float64Array>();
  auto out = info[2].As<Napi::Int32Array>();
  if (p.ElementLength() < 12) {
    fail(env, "intAvgPoolValues: dims needs 12 values");
    return env.Undefined();
  }
  static const char* const names[] = {"n", "C", "H", "W", "kh", "kw", "sh", "sw", "ph", "pw", "zero", "fracBits"};
  for (size_t k = 0; k < 12; k++) {
    const double v = p[k];
    const double lo = k == 10 ? INT32_MIN : k >= 8 ? 0 : k == 0 ? 0 : 1, hi = k == 10 ? INT32_MAX : k == 11 ? 24 : 65536;
    if (v != std::trunc(v) || v < lo || v > hi) {
      fail(env, std::string("intAvgPoolValues: dims ") + names[k] + " = " + std::to_string(v) + " out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
      return env.Undefined();
    }
  }
  if (p[0] * p[1] * p[2] * p[3] > 1e9) {
    fail(env, "intAvgPoolValues: n C H W = " + std::to_string(p[0] * p[1] * p[2] * p[3]) + " values is over 1e9");
    return env.Undefined();
  }
  lowbit::IntOp op;
  op.kind = lowbit::IOpKind::AvgPool;
  op.in = tx, op.out = lowbit::IType::I32;
  const int64_t n = static_cast<int64_t>(p[0]);
  op.C = op.OC = static_cast<int64_t>(p[1]), op.H = static_cast<int64_t>(p[2]), op.W = static_cast<int64_t>(p[3]);
  op.kh = static_cast<int64_t>(p[4]), op.kw = static_cast<int64_t>(p[5]), op.sh = static_cast<int64_t>(p[6]), op.sw = static_cast<int64_t>(p[7]);
  op.ph = static_cast<int64_t>(p[8]), op.pw = static_cast<int64_t>(p[9]);
  op.zero = static_cast<int32_t>(p[10]), op.fracBits = static_cast<int32_t>(p[11]);
  if (2 * op.ph > op.kh || 2 * op.pw > op.kw || op.H + 2 * op.ph < op.kh || op.W + 2 * op.pw < op.kw) {
    fail(env, "intAvgPoolValues: padding over half the window or a window larger than the padded input");
    return env.Undefined();
  }
  op.OH = (op.H + 2 * op.ph - op.kh) / op.sh + 1, op.OW = (op.W + 2 * op.pw - op.kw) / op.sw + 1;
  if (static_cast<int64_t>(x.ElementLength()) != n * op.H * op.W * op.C || static_cast<int64_t>(out.ElementLength()) != n * op.OH * op.OW * op.C) {
    fail(env, "intAvgPoolValues: x needs n H W C = " + std::to_string(n * op.H * op.W * op.C) + " values and out n OH OW C = " + std::to_string(n * op.OH * op.OW * op.C));
    return env.Undefined();
  }
  const auto data = [](Napi::TypedArray t) { return static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset(); };
  lowbit::intAvgPoolRun(op, data(x), n, reinterpret_cast<int32_t*>(data(out)));
  return Napi::String::New(env, lowbit::intAvgPoolPathName(op));
}

Napi::Value IntPlanKernels(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsExternal()) {
    fail(env, "intPlanKernels: argument 0 must be a plan from intPlanCreate");
    return env.Undefined();
  }
  const lowbit::IntPlan* plan = info[0].As<Napi::External<lowbit::IntPlan>>().Data();
  static const char* const kinds[] = {"quantize", "conv", "linear", "maxpool", "avgpool", "clamp", "add", "permute"};
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& op : plan->ops) {
    std::string name = kinds[static_cast<int>(op.kind)];
    if (op.kind == lowbit::IOpKind::Conv || op.kind == lowbit::IOpKind::Linear) {
      name += op.groupSize > 0 ? std::string(op.groupVnni ? " group-vnni g" : " group g") + std::to_string(op.groupSize)
              : op.in == lowbit::IType::Bits ? " binary"
              : op.xnor                   ? " xnor"
              : op.direct                 ? " direct"
              : op.dwConv                 ? std::string(" depthwise ") + lowbit::intDepthwisePathName(op)
              : lowbit::conv3x3Runs(op)   ? " direct" + std::to_string(op.kh) + "x" + std::to_string(op.kw) + " " + lowbit::conv3x3KindName(op.conv3x3->kind)
              : op.amxGather              ? " amx-gather"
              : op.amxImplicit            ? " amx-implicit"
              : op.amx                    ? " amx"
                                          : std::string(" ") + lowbit::int8PathName();
      if (op.poolKh > 0) name += "+maxpool";
      if (op.fusedSign) name += op.out == lowbit::IType::Bits ? "+sign bits" : "+sign";
      if (op.second) name += "+2nd output";
      if (op.outMode == lowbit::IOutMode::Requantize) name += op.intRequant ? " (int64 requantize)" : " (double requantize)";
    }
    if (op.kind == lowbit::IOpKind::AvgPool) name += std::string(" ") + lowbit::intAvgPoolPathName(op);
    if (op.kind == lowbit::IOpKind::Add) name += std::string(op.outMode == lowbit::IOutMode::Sign ? " sign " : " ") + lowbit::intAddPathName();
    out.Set(i++, name);
  }
  return out;
}

// ---------------------------------------------------------------- integer LSTM cell (irnn.h)
// The parameters shared by intLstmPath and intLstmSequence:
//   dims: Int32Array [steps, batch, hidden, input, outMult, outShift, sigmoid shift, min, max, tanh shift, min, max],
//   rows: Int32Array (5 * 4H: multIh | shiftIh | multHh | shiftHh | bias),
//   sigmoid, tanh: Int32Array (3n + 1: knots (n + 1) | values (n) | slopes (n)).
struct IntLstmArgs {
  int64_t steps = 0, batch = 0, input = 0;
  lowbit::IntLstmCell cell;
};

// What parseIntLstm and parseIntGru share: dims (12 values), rows (rowsPerHidden * hidden values) and the
// sigmoid and tanh tables, each checked and the tables filled in; the caller points the cell at rows.
struct IrnnCommonArgs {
  int32_t *dims = nullptr, *rows = nullptr;
  int64_t hidden = 0;
};

bool parseIrnnCommon(const Napi::CallbackInfo& info, const char* name, int64_t rowsPerHidden, int64_t* steps, int64_t* batch,
                     int64_t* input, lowbit::IntPwlTable* sigmoid, lowbit::IntPwlTable* tanh, IrnnCommonArgs* r) {
  int32_t *dims = nullptr, *rows = nullptr, *tables[2] = {nullptr, nullptr};
  size_t ndims = 0, nrows = 0, ntables[2] = {0, 0};
  if (!argI32(info, 0, &dims, &ndims) || !argI32(info, 1, &rows, &nrows) || !argI32(info, 2, &tables[0], &ntables[0]) ||
      !argI32(info, 3, &tables[1], &ntables[1])) {
    return false;
  }
  if (ndims != 12) return fail(info.Env(), std::string(name) + ": dims must hold 12 values");
  *steps = dims[0];
  *batch = dims[1];
  const int64_t H = dims[2];
  *input = dims[3];
  if (*steps < 1 || *batch < 1 || H < 1 || H > 65536 || *input < 1 || *input > 65536 ||
      static_cast<int64_t>(nrows) != rowsPerHidden * H) {
    return fail(info.Env(), std::string(name) + ": bad sizes");
  }
  lowbit::IntPwlTable* t[2] = {sigmoid, tanh};
  for (int j = 0; j < 2; j++) {
    if (ntables[j] < 4 || (ntables[j] - 1) % 3 != 0) return fail(info.Env(), std::string(name) + ": a PWL table must hold 3n + 1 values");
    const int32_t n = static_cast<int32_t>((ntables[j] - 1) / 3);
    t[j]->n = n;
    t[j]->knots = tables[j];
    t[j]->values = tables[j] + n + 1;
    t[j]->slopes = tables[j] + 2 * n + 1;
    t[j]->shift = dims[6 + 3 * j];
    t[j]->outMin = dims[7 + 3 * j];
    t[j]->outMax = dims[8 + 3 * j];
  }
  r->dims = dims;
  r->rows = rows;
  r->hidden = H;
  return true;
}

bool parseIntLstm(const Napi::CallbackInfo& info, const char* name, IntLstmArgs* a) {
  lowbit::IntLstmCell& c = a->cell;
  IrnnCommonArgs r;
  if (!parseIrnnCommon(info, name, 5 * 4, &a->steps, &a->batch, &a->input, &c.sigmoid, &c.tanh, &r)) return false;
  const int64_t H = r.hidden;
  c.hidden = H;
  c.multIh = r.rows;
  c.shiftIh = r.rows + 4 * H;
  c.multHh = r.rows + 8 * H;
  c.shiftHh = r.rows + 12 * H;
  c.bias = r.rows + 16 * H;
  c.outMult = r.dims[4];
  c.outShift = r.dims[5];
  if (const char* problem = lowbit::intLstmCellProblem(c)) return fail(info.Env(), std::string(name) + ": " + problem);
  return true;
}

// intLstmPath(dims, rows, sigmoid, tanh) -> "avx512" | "avx2" | "scalar" (throws when the kernel refuses them)
Napi::Value IntLstmPath(const Napi::CallbackInfo& info) {
  IntLstmArgs a;
  if (!parseIntLstm(info, "intLstmPath", &a)) return info.Env().Undefined();
  return Napi::String::New(info.Env(), lowbit::intLstmPathName(a.cell));
}

// intLstmSequence(dims, rows, sigmoid, tanh, x: Int8Array (L, N, I), packedIh: Int8Array (int8PackedBytes(4H, I)),
//   rowSumsIh: Int32Array (4H), packedHh: Int8Array (int8PackedBytes(4H, H)), rowSumsHh: Int32Array (4H),
//   h0: Int8Array (N, H), c: Int16Array (N, H; in: c0, out: final c), out: Int8Array (L, N, H))
Napi::Value IntLstmSequence(const Napi::CallbackInfo& info) {
  IntLstmArgs a;
  if (!parseIntLstm(info, "intLstmSequence", &a)) return info.Env().Undefined();
  int32_t *sumsIh = nullptr, *sumsHh = nullptr;
  size_t nsumsIh = 0, nsumsHh = 0;
  Bytes x, packedIh, packedHh, h0, out;
  if (!argBytes(info, 4, &x) || !argBytes(info, 5, &packedIh) || !argI32(info, 6, &sumsIh, &nsumsIh) ||
      !argBytes(info, 7, &packedHh) || !argI32(info, 8, &sumsHh, &nsumsHh) || !argBytes(info, 9, &h0) ||
      !argBytes(info, 11, &out)) {
    return info.Env().Undefined();
  }
  if (info.Length() <= 10 || !info[10].IsTypedArray() || info[10].As<Napi::TypedArray>().TypedArrayType() != napi_int16_array) {
    fail(info.Env(), "intLstmSequence: argument 10 must be an Int16Array");
    return info.Env().Undefined();
  }
  auto cArray = info[10].As<Napi::Int16Array>();
  const int64_t H = a.cell.hidden, I = a.input, L = a.steps, N = a.batch;
  if (L * N * std::max(I, 4 * H) >= (int64_t{1} << 40) || !x.isSigned || static_cast<int64_t>(x.length) != L * N * I ||
      static_cast<int64_t>(packedIh.length) < lowbit::int8PackedBytes(4 * H, I) || static_cast<int64_t>(nsumsIh) != 4 * H ||
      static_cast<int64_t>(packedHh.length) < lowbit::int8PackedBytes(4 * H, H) || static_cast<int64_t>(nsumsHh) != 4 * H ||
      !h0.isSigned || !out.isSigned || static_cast<int64_t>(h0.length) != N * H ||
      static_cast<int64_t>(cArray.ElementLength()) != N * H || static_cast<int64_t>(out.length) != L * N * H) {
    fail(info.Env(), "intLstmSequence: buffer sizes or types do not match the dims");
    return info.Env().Undefined();
  }
  lowbit::intLstmSequence(a.cell, L, N, I, reinterpret_cast<const int8_t*>(x.data), reinterpret_cast<const int8_t*>(packedIh.data),
                          sumsIh, reinterpret_cast<const int8_t*>(packedHh.data), sumsHh,
                          reinterpret_cast<const int8_t*>(h0.data), cArray.Data(), reinterpret_cast<int8_t*>(out.data));
  return info.Env().Undefined();
}

// intLmHead(M, N, K, h: Int8Array (M, K), packed: Int8Array (int8PackedBytes(N, K)), rowSums: Int32Array (N),
//   scale: Float32Array (N), bias: Float32Array (N), hiddenScale: number, out: Float32Array (M, N))
Napi::Value IntLmHead(const Napi::CallbackInfo& info) {
  int64_t M = 0, N = 0, K = 0;
  Bytes h, packed;
  int32_t* sums = nullptr;
  size_t nsums = 0;
  F32 scale, bias, out;
  double hs = 0;
  if (!argInt(info, 0, &M) || !argInt(info, 1, &N) || !argInt(info, 2, &K) || !argBytes(info, 3, &h) || !argBytes(info, 4, &packed) ||
      !argI32(info, 5, &sums, &nsums) || !argF32(info, 6, &scale) || !argF32(info, 7, &bias) || !argNumbers(info, 8, &hs, 1) ||
      !argF32(info, 9, &out)) {
    return info.Env().Undefined();
  }
  if (M < 1 || N < 1 || K < 1 || M >= (int64_t{1} << 31) || N >= (int64_t{1} << 31) || K >= (int64_t{1} << 28) || M * N >= (int64_t{1} << 40) ||
      !h.isSigned || static_cast<int64_t>(h.length) != M * K || static_cast<int64_t>(packed.length) < lowbit::int8PackedBytes(N, K) ||
      static_cast<int64_t>(nsums) != N || static_cast<int64_t>(scale.length) != N || static_cast<int64_t>(bias.length) != N ||
      static_cast<int64_t>(out.length) != M * N || !std::isfinite(hs)) {
    fail(info.Env(), "intLmHead: bad dims, buffer sizes or types, or a non-finite hidden scale");
    return info.Env().Undefined();
  }
  lowbit::intLmHead(M, N, K, reinterpret_cast<const int8_t*>(h.data), reinterpret_cast<const int8_t*>(packed.data), sums, scale.data,
                    bias.data, hs, out.data);
  return info.Env().Undefined();
}

// ---------------------------------------------------------------- integer GRU cell (intgru.h)
// The parameters shared by intGruPath and intGruSequence:
//   dims: Int32Array [steps, batch, hidden, input, outMult, outShift, sigmoid shift, min, max, tanh shift, min, max],
//   rows: Int32Array (5 * 3H + H: multIh | shiftIh | multHh | shiftHh | bias (3H each) | biasHn (H)),
//   sigmoid, tanh: Int32Array (3n + 1: knots (n + 1) | values (n) | slopes (n)).
struct IntGruArgs {
  int64_t steps = 0, batch = 0, input = 0;
  lowbit::IntGruCell cell;
};

bool parseIntGru(const Napi::CallbackInfo& info, const char* name, IntGruArgs* a) {
  lowbit::IntGruCell& c = a->cell;
  IrnnCommonArgs r;
  if (!parseIrnnCommon(info, name, 16, &a->steps, &a->batch, &a->input, &c.sigmoid, &c.tanh, &r)) return false;
  const int64_t H = r.hidden;
  c.hidden = H;
  c.multIh = r.rows;
  c.shiftIh = r.rows + 3 * H;
  c.multHh = r.rows + 6 * H;
  c.shiftHh = r.rows + 9 * H;
  c.bias = r.rows + 12 * H;
  c.biasHn = r.rows + 15 * H;
  c.outMult = r.dims[4];
  c.outShift = r.dims[5];
  if (const char* problem = lowbit::intGruCellProblem(c)) return fail(info.Env(), std::string(name) + ": " + problem);
  return true;
}

// intGruPath(dims, rows, sigmoid, tanh) -> "avx512" | "avx2" | "avx2-loop" | "scalar", the best path for them
// (throws when the kernel refuses them)
Napi::Value IntGruPath(const Napi::CallbackInfo& info) {
  IntGruArgs a;
  if (!parseIntGru(info, "intGruPath", &a)) return info.Env().Undefined();
  return Napi::String::New(info.Env(), lowbit::intGruPathName(lowbit::intGruBestPath(a.cell)));
}

// intGruSequence(dims, rows, sigmoid, tanh, x: Int8Array (L, N, I), packedIh: Int8Array (int8PackedBytes(3H, I)),
//   rowSumsIh: Int32Array (3H), packedHh: Int8Array (int8PackedBytes(3H, H)), rowSumsHh: Int32Array (3H),
//   h0: Int8Array (N, H), out: Int8Array (L, N, H)[, path: string])
// path (optional, for benchmarks and tests): a cell path to run instead of the best one; throws when it cannot run here.
Napi::Value IntGruSequence(const Napi::CallbackInfo& info) {
  IntGruArgs a;
  if (!parseIntGru(info, "intGruSequence", &a)) return info.Env().Undefined();
  int32_t *sumsIh = nullptr, *sumsHh = nullptr;
  size_t nsumsIh = 0, nsumsHh = 0;
  Bytes x, packedIh, packedHh, h0, out;
  if (!argBytes(info, 4, &x) || !argBytes(info, 5, &packedIh) || !argI32(info, 6, &sumsIh, &nsumsIh) ||
      !argBytes(info, 7, &packedHh) || !argI32(info, 8, &sumsHh, &nsumsHh) || !argBytes(info, 9, &h0) ||
      !argBytes(info, 10, &out)) {
    return info.Env().Undefined();
  }
  const int64_t H = a.cell.hidden, I = a.input, L = a.steps, N = a.batch;
  if (L * N * std::max(I, 3 * H) >= (int64_t{1} << 40) || !x.isSigned || static_cast<int64_t>(x.length) != L * N * I ||
      static_cast<int64_t>(packedIh.length) < lowbit::int8PackedBytes(3 * H, I) || static_cast<int64_t>(nsumsIh) != 3 * H ||
      static_cast<int64_t>(packedHh.length) < lowbit::int8PackedBytes(3 * H, H) || static_cast<int64_t>(nsumsHh) != 3 * H ||
      !h0.isSigned || !out.isSigned || static_cast<int64_t>(h0.length) != N * H || static_cast<int64_t>(out.length) != L * N * H) {
    fail(info.Env(), "intGruSequence: buffer sizes or types do not match the dims");
    return info.Env().Undefined();
  }
  lowbit::IntGruPath path = lowbit::intGruBestPath(a.cell);
  if (info.Length() > 11 && !info[11].IsUndefined()) {
    if (!info[11].IsString() || !lowbit::intGruPathFromName(info[11].As<Napi::String>().Utf8Value(), &path)) {
      fail(info.Env(), "intGruSequence: argument 11 must name a cell path: 'avx512', 'avx2', 'avx2-loop' or 'scalar'");
      return info.Env().Undefined();
    }
    if (const char* problem = lowbit::intGruPathProblem(a.cell, path)) {
      fail(info.Env(), std::string("intGruSequence: the ") + lowbit::intGruPathName(path) + " cell path cannot run here: it " + problem);
      return info.Env().Undefined();
    }
  }
  lowbit::intGruSequence(a.cell, path, L, N, I, reinterpret_cast<const int8_t*>(x.data), reinterpret_cast<const int8_t*>(packedIh.data),
                         sumsIh, reinterpret_cast<const int8_t*>(packedHh.data), sumsHh,
                         reinterpret_cast<const int8_t*>(h0.data), reinterpret_cast<int8_t*>(out.data));
  return info.Env().Undefined();
}

void initIntGruKernels(Napi::Env env, Napi::Object exports) {
  exports.Set("intGruPath", Napi::Function::New(env, IntGruPath));
  exports.Set("intGruSequence", Napi::Function::New(env, IntGruSequence));
}
// ---------------------------------------------------------------- end of integer GRU cell

void initIntKernels(Napi::Env env, Napi::Object exports) {
  exports.Set("intLstmPath", Napi::Function::New(env, IntLstmPath));
  exports.Set("intLstmSequence", Napi::Function::New(env, IntLstmSequence));
  exports.Set("intLmHead", Napi::Function::New(env, IntLmHead));
  exports.Set("intPlanKernels", Napi::Function::New(env, IntPlanKernels));
  exports.Set("intAddValues", Napi::Function::New(env, IntAddValues));
  exports.Set("intAvgPoolValues", Napi::Function::New(env, IntAvgPoolValues));
  exports.Set("intSignAddValues", Napi::Function::New(env, IntSignAddValues));
  exports.Set("intPlanCreate", Napi::Function::New(env, IntPlanCreate));
  exports.Set("intPlanRun", Napi::Function::New(env, IntPlanRun));
  exports.Set("intPlanProfile", Napi::Function::New(env, IntPlanProfile));
  exports.Set("alignmentPad", Napi::Function::New(env, AlignmentPad));
  exports.Set("int8PackedBytes", Napi::Function::New(env, Int8PackedBytes));
  exports.Set("packInt8", Napi::Function::New(env, PackWeights<false>));
  exports.Set("packLowBit", Napi::Function::New(env, PackWeights<true>));
  exports.Set("gemmInt8Packed", Napi::Function::New(env, GemmInt8Packed));
  exports.Set("gemmLowBit", Napi::Function::New(env, GemmLowBit));
  exports.Set("gemmBinary", Napi::Function::New(env, GemmBinary));
  exports.Set("requantize", Napi::Function::New(env, Requantize));
  exports.Set("vnniPeakGops", Napi::Function::New(env, IntPeak<true>));
  exports.Set("popcountPeakGbits", Napi::Function::New(env, IntPeak<false>));
  exports.Set("intKernelsInfo", Napi::Function::New(env, IntKernelsInfo));
  exports.Set("amxPackedBytes", Napi::Function::New(env, AmxPackedBytes));
  exports.Set("packInt8Amx", Napi::Function::New(env, PackInt8Amx));
  exports.Set("gemmInt8Amx", Napi::Function::New(env, GemmInt8Amx));
  exports.Set("amxPeakGops", Napi::Function::New(env, AmxPeak));
}
// ================================================================ end of integer kernels

// ---------------------------------------------------------------- integer Transformer LM loops (inttransformer.h)
// The elementwise and attention loops of quant.irnn's IntTransformerLM (src/quant/irnn/transformer.ts, whose
// TypeScript loops they equal bit for bit). Every function validates its dims against the buffers it is given.

bool tfDims(const Napi::CallbackInfo& info, const char* name, size_t count, int32_t** dims) {
  size_t n = 0;
  if (!argI32(info, 0, dims, &n)) return false;
  if (n != count) return fail(info.Env(), std::string(name) + ": dims must hold " + std::to_string(count) + " values");
  return true;
}

// Whether every v[i] lies in [lo, hi]: a min/max scan without an early exit (the compiler vectorizes it;
// the buffers are the model's activations, checked on every call).
bool tfWithin(const int32_t* v, size_t n, int32_t lo, int32_t hi) {
  int32_t least = lo, most = hi;
  for (size_t i = 0; i < n; i++) {
    least = std::min(least, v[i]);
    most = std::max(most, v[i]);
  }
  return least >= lo && most <= hi;
}

bool tfShifts(const Napi::CallbackInfo& info, const char* name, const int32_t* shifts, size_t count) {
  for (size_t i = 0; i < count; i++) {
    if (const char* problem = lowbit::intTfShiftProblem(shifts[i])) return fail(info.Env(), std::string(name) + ": " + problem);
  }
  return true;
}

// intTfEmbed(dims [rows, steps, past, E, V, maxContext], ids: Int32Array (rows), table: Int8Array (V·E),
//   mult: Int32Array (V), shift: Int32Array (V), positions: Int32Array (maxContext·E), x: Int32Array (rows·E))
Napi::Value IntTfEmbed(const Napi::CallbackInfo& info) {
  int32_t *dims = nullptr, *ids = nullptr, *mult = nullptr, *shift = nullptr, *positions = nullptr, *x = nullptr;
  size_t nids = 0, nmult = 0, nshift = 0, npos = 0, nx = 0;
  Bytes table;
  if (!tfDims(info, "intTfEmbed", 6, &dims) || !argI32(info, 1, &ids, &nids) || !argBytes(info, 2, &table) ||
      !argI32(info, 3, &mult, &nmult) || !argI32(info, 4, &shift, &nshift) || !argI32(info, 5, &positions, &npos) ||
      !argI32(info, 6, &x, &nx)) {
    return info.Env().Undefined();
  }
  const int64_t rows = dims[0], steps = dims[1], past = dims[2], E = dims[3], V = dims[4], C = dims[5];
  if (rows < 1 || steps < 1 || rows % steps != 0 || past < 0 || E < 1 || V < 1 || C < 1 || past + steps > C ||
      static_cast<int64_t>(nids) != rows || !table.isSigned || static_cast<int64_t>(table.length) != V * E ||
      static_cast<int64_t>(nmult) != V || static_cast<int64_t>(nshift) != V || static_cast<int64_t>(npos) != C * E ||
      static_cast<int64_t>(nx) != rows * E) {
    fail(info.Env(), "intTfEmbed: buffer sizes or types do not match the dims");
    return info.Env().Undefined();
  }
  for (int64_t i = 0; i < rows; i++) {
    if (ids[i] < 0 || ids[i] >= V) {
      fail(info.Env(), "intTfEmbed: word id " + std::to_string(ids[i]) + " is outside [0, V)");
      return info.Env().Undefined();
    }
  }
  if (!tfShifts(info, "intTfEmbed", shift, nshift)) return info.Env().Undefined();
  lowbit::intTfEmbed(rows, steps, past, E, ids, reinterpret_cast<const int8_t*>(table.data), mult, shift, positions, x);
  return info.Env().Undefined();
}

// intTfLayerNorm(dims [rows, size, epsCode, multiplier, shift, sqrtSize, outMin, outMax], gamma: Int32Array (size),
//   beta: Int32Array (size), x: Int32Array (rows·size, |x| <= 2^24), out: Int8Array (rows·size))
Napi::Value IntTfLayerNorm(const Napi::CallbackInfo& info) {
  int32_t *dims = nullptr, *gamma = nullptr, *beta = nullptr, *x = nullptr;
  size_t ngamma = 0, nbeta = 0, nx = 0;
  Bytes out;
  if (!tfDims(info, "intTfLayerNorm", 8, &dims) || !argI32(info, 1, &gamma, &ngamma) || !argI32(info, 2, &beta, &nbeta) ||
      !argI32(info, 3, &x, &nx) || !argBytes(info, 4, &out)) {
    return info.Env().Undefined();
  }
  lowbit::IntTfLayerNorm p;
  const int64_t rows = dims[0];
  p.size = dims[1];
  p.epsCode = dims[2];
  p.multiplier = dims[3];
  p.shift = dims[4];
  p.sqrtSize = dims[5];
  p.outMin = dims[6];
  p.outMax = dims[7];
  p.gamma = gamma;
  p.beta = beta;
  bool ok = rows >= 1 && p.size >= 1 && p.size <= (1 << 18) && p.epsCode >= 0 && p.epsCode <= (int64_t{1} << 30) && p.sqrtSize >= 1 &&
            p.outMin <= p.outMax && p.outMin >= -128 && p.outMax <= 127 && static_cast<int64_t>(ngamma) == p.size &&
            static_cast<int64_t>(nbeta) == p.size && static_cast<int64_t>(nx) == rows * p.size && out.isSigned &&
            static_cast<int64_t>(out.length) == rows * p.size;
  ok = ok && tfWithin(gamma, ngamma, -32767, 32767) && tfWithin(x, nx, -(1 << 24), 1 << 24);
  if (!ok) {
    fail(info.Env(), "intTfLayerNorm: buffer sizes, types or values do not match the dims");
    return info.Env().Undefined();
  }
  if (!tfShifts(info, "intTfLayerNorm", &p.shift, 1)) return info.Env().Undefined();
  lowbit::intTfLayerNormRows(p, rows, x, reinterpret_cast<int8_t*>(out.data));
  return info.Env().Undefined();
}

// intTfRequantize(dims [M, R, lo, hi, mode], acc: Int32Array (M·R), bias, mult, shift: Int32Array (R),
//   out: Int32Array (mode 0 store, 1 residual add) or Int8Array (mode 2), M·R)
Napi::Value IntTfRequantize(const Napi::CallbackInfo& info) {
  int32_t *dims = nullptr, *acc = nullptr, *bias = nullptr, *mult = nullptr, *shift = nullptr, *out32 = nullptr;
  size_t nacc = 0, nbias = 0, nmult = 0, nshift = 0, nout = 0;
  Bytes out8;
  if (!tfDims(info, "intTfRequantize", 5, &dims) || !argI32(info, 1, &acc, &nacc) || !argI32(info, 2, &bias, &nbias) ||
      !argI32(info, 3, &mult, &nmult) || !argI32(info, 4, &shift, &nshift)) {
    return info.Env().Undefined();
  }
  const int64_t M = dims[0], R = dims[1], mode = dims[4];
  const int32_t lo = dims[2], hi = dims[3];
  if (mode == 2) {
    if (!argBytes(info, 5, &out8)) return info.Env().Undefined();
    nout = out8.length;
  } else if (!argI32(info, 5, &out32, &nout)) {
    return info.Env().Undefined();
  }
  if (M < 1 || R < 1 || lo > hi || mode < 0 || mode > 2 || (mode == 2 && (!out8.isSigned || lo < -128 || hi > 127)) ||
      static_cast<int64_t>(nacc) != M * R || static_cast<int64_t>(nbias) != R || static_cast<int64_t>(nmult) != R ||
      static_cast<int64_t>(nshift) != R || static_cast<int64_t>(nout) != M * R) {
    fail(info.Env(), "intTfRequantize: buffer sizes or types do not match the dims");
    return info.Env().Undefined();
  }
  if (!tfShifts(info, "intTfRequantize", shift, nshift)) return info.Env().Undefined();
  lowbit::intTfRequantize(M, R, acc, bias, mult, shift, lo, hi, static_cast<int>(mode), out32, reinterpret_cast<int8_t*>(out8.data));
  return info.Env().Undefined();
}

// intTfGelu(dims [count, multiplier, shift, lo, hi, erfClip, erfA], t: Int32Array (count, |t| <= 2^20), out: Int8Array (count))
Napi::Value IntTfGelu(const Napi::CallbackInfo& info) {
  int32_t *dims = nullptr, *t = nullptr;
  size_t nt = 0;
  Bytes out;
  if (!tfDims(info, "intTfGelu", 7, &dims) || !argI32(info, 1, &t, &nt) || !argBytes(info, 2, &out)) return info.Env().Undefined();
  const int64_t count = dims[0];
  bool ok = count >= 1 && static_cast<int64_t>(nt) == count && out.isSigned && static_cast<int64_t>(out.length) == count &&
            dims[3] <= dims[4] && dims[3] >= -128 && dims[4] <= 127 && dims[5] >= 0 && dims[5] <= (1 << 20) && dims[6] <= 0 && dims[6] >= -(1 << 20);
  ok = ok && tfWithin(t, nt, -(1 << 20), 1 << 20);
  if (!ok) {
    fail(info.Env(), "intTfGelu: buffer sizes, types or values do not match the dims");
    return info.Env().Undefined();
  }
  if (!tfShifts(info, "intTfGelu", &dims[2], 1)) return info.Env().Undefined();
  lowbit::intTfGelu(count, t, dims[1], dims[2], dims[3], dims[4], dims[5], dims[6], reinterpret_cast<int8_t*>(out.data));
  return info.Env().Undefined();
}

// intTfRequantizeGelu(dims [M, R, lo, hi, geluMult, geluShift, geluLo, geluHi, erfClip, erfA], acc: Int32Array (M·R),
//   bias, mult, shift: Int32Array (R), out: Int8Array (M·R)) — intTfRequantize mode 0 (|lo|, |hi| <= 2^20) then intTfGelu
Napi::Value IntTfRequantizeGelu(const Napi::CallbackInfo& info) {
  int32_t *dims = nullptr, *acc = nullptr, *bias = nullptr, *mult = nullptr, *shift = nullptr;
  size_t nacc = 0, nbias = 0, nmult = 0, nshift = 0;
  Bytes out;
  if (!tfDims(info, "intTfRequantizeGelu", 10, &dims) || !argI32(info, 1, &acc, &nacc) || !argI32(info, 2, &bias, &nbias) ||
      !argI32(info, 3, &mult, &nmult) || !argI32(info, 4, &shift, &nshift) || !argBytes(info, 5, &out)) {
    return info.Env().Undefined();
  }
  const int64_t M = dims[0], R = dims[1];
  const int32_t lo = dims[2], hi = dims[3];
  lowbit::IntTfGelu g;
  g.multiplier = dims[4];
  g.shift = dims[5];
  g.lo = dims[6];
  g.hi = dims[7];
  g.erfClip = dims[8];
  g.erfA = dims[9];
  if (M < 1 || R < 1 || lo > hi || lo < -(1 << 20) || hi > (1 << 20) || g.lo > g.hi || g.lo < -128 || g.hi > 127 || g.erfClip < 0 ||
      g.erfClip > (1 << 20) || g.erfA > 0 || g.erfA < -(1 << 20) || static_cast<int64_t>(nacc) != M * R || static_cast<int64_t>(nbias) != R ||
      static_cast<int64_t>(nmult) != R || static_cast<int64_t>(nshift) != R || !out.isSigned || static_cast<int64_t>(out.length) != M * R) {
    fail(info.Env(), "intTfRequantizeGelu: buffer sizes, types or values do not match the dims");
    return info.Env().Undefined();
  }
  if (!tfShifts(info, "intTfRequantizeGelu", shift, nshift) || !tfShifts(info, "intTfRequantizeGelu", &g.shift, 1)) return info.Env().Undefined();
  lowbit::intTfRequantizeGelu(M, R, acc, bias, mult, shift, lo, hi, g, reinterpret_cast<int8_t*>(out.data));
  return info.Env().Undefined();
}

// intTfHead(dims [M, V], acc: Int32Array (M·V), bias: Int32Array (V), scale: Float32Array (V), out: Float32Array (M·V))
Napi::Value IntTfHead(const Napi::CallbackInfo& info) {
  int32_t *dims = nullptr, *acc = nullptr, *bias = nullptr;
  size_t nacc = 0, nbias = 0;
  F32 scale, out;
  if (!tfDims(info, "intTfHead", 2, &dims) || !argI32(info, 1, &acc, &nacc) || !argI32(info, 2, &bias, &nbias) ||
      !argF32(info, 3, &scale) || !argF32(info, 4, &out)) {
    return info.Env().Undefined();
  }
  const int64_t M = dims[0], V = dims[1];
  if (M < 1 || V < 1 || static_cast<int64_t>(nacc) != M * V || static_cast<int64_t>(nbias) != V || static_cast<int64_t>(scale.length) != V ||
      static_cast<int64_t>(out.length) != M * V) {
    fail(info.Env(), "intTfHead: buffer sizes do not match the dims");
    return info.Env().Undefined();
  }
  lowbit::intTfHead(M, V, acc, bias, scale.data, out.data);
  return info.Env().Undefined();
}

// intTfAttention(dims [batch, steps, past, capacity, heads, headDim, scoreMult, scoreShift, probsMult, probsShift, probsMax,
//   contextMult, contextShift, contextMin, contextMax], qkv: Int32Array (batch·steps·3E, int8 codes) or Int8Array,
//   keys, values: Int8Array (batch·heads·capacity·headDim), context: Int8Array (batch·steps·E))
Napi::Value IntTfAttention(const Napi::CallbackInfo& info) {
  int32_t *dims = nullptr, *qkv = nullptr;
  size_t nqkv = 0;
  Bytes keys, values, context, qkv8;
  // The codes as an Int32Array (checked to lie in [-128, 127]) or an Int8Array.
  const bool bytes = info.Length() > 1 && info[1].IsTypedArray() && info[1].As<Napi::TypedArray>().TypedArrayType() == napi_int8_array;
  if (!tfDims(info, "intTfAttention", 15, &dims) || !(bytes ? argBytes(info, 1, &qkv8) : argI32(info, 1, &qkv, &nqkv)) ||
      !argBytes(info, 2, &keys) || !argBytes(info, 3, &values) || !argBytes(info, 4, &context)) {
    return info.Env().Undefined();
  }
  if (bytes) nqkv = qkv8.length;
  lowbit::IntTfAttention p;
  p.batch = dims[0];
  p.steps = dims[1];
  p.past = dims[2];
  p.capacity = dims[3];
  p.heads = dims[4];
  p.headDim = dims[5];
  p.scoreMult = dims[6];
  p.scoreShift = dims[7];
  p.probsMult = dims[8];
  p.probsShift = dims[9];
  p.probsMax = dims[10];
  p.contextMult = dims[11];
  p.contextShift = dims[12];
  p.contextMin = dims[13];
  p.contextMax = dims[14];
  const int64_t E = p.heads * p.headDim, rows = p.batch * p.steps;
  // capacity <= 2^16 and probs <= 255: Σ p·v fits int32; headDim <= 2^16: Σ q·k fits int32.
  bool ok = p.batch >= 1 && p.steps >= 1 && p.past >= 0 && p.capacity >= 1 && p.capacity <= (1 << 16) && p.past + p.steps <= p.capacity &&
            p.heads >= 1 && p.headDim >= 1 && p.headDim <= (1 << 16) && E <= (1 << 20) && p.probsMax >= 0 && p.probsMax <= 255 &&
            p.probsMult >= 0 && p.contextMin <= p.contextMax && p.contextMin >= -128 && p.contextMax <= 127 &&
            static_cast<int64_t>(nqkv) == rows * 3 * E && keys.isSigned && values.isSigned && context.isSigned &&
            static_cast<int64_t>(keys.length) == p.batch * p.capacity * E && static_cast<int64_t>(values.length) == p.batch * p.capacity * E &&
            static_cast<int64_t>(context.length) == rows * E;
  ok = ok && (bytes || tfWithin(qkv, nqkv, -128, 127));
  if (!ok) {
    fail(info.Env(), "intTfAttention: buffer sizes, types or values do not match the dims");
    return info.Env().Undefined();
  }
  const int32_t shifts[3] = {p.scoreShift, p.probsShift, p.contextShift};
  if (!tfShifts(info, "intTfAttention", shifts, 3)) return info.Env().Undefined();
  int8_t* k = reinterpret_cast<int8_t*>(keys.data);
  int8_t* v = reinterpret_cast<int8_t*>(values.data);
  int8_t* c = reinterpret_cast<int8_t*>(context.data);
  if (bytes) lowbit::intTfAttention(p, reinterpret_cast<const int8_t*>(qkv8.data), k, v, c);
  else lowbit::intTfAttention(p, qkv, k, v, c);
  return info.Env().Undefined();
}

// Typed-array elements of the JS arrays intTfForward and floatTfDecode take (an element of the wrong
// type or size fails the call; `fn` names the entry in the message).
struct TfArgs {
  const Napi::Env env;
  const char* fn;
  std::string where;
  bool ok = true;
  bool bad(const std::string& what) {
    if (ok) fail(env, std::string(fn) + ": " + where + what);
    ok = false;
    return false;
  }
  int32_t* i32(const Napi::Value& v, int64_t length, const char* what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) return bad(std::string(what) + " must be an Int32Array"), nullptr;
    auto a = v.As<Napi::Int32Array>();
    if (static_cast<int64_t>(a.ElementLength()) != length) return bad(std::string(what) + " must hold " + std::to_string(length) + " values"), nullptr;
    return a.Data();
  }
  int8_t* i8(const Napi::Value& v, int64_t length, bool atLeast, const char* what) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int8_array) return bad(std::string(what) + " must be an Int8Array"), nullptr;
    auto a = v.As<Napi::TypedArray>();
    const int64_t n = static_cast<int64_t>(a.ElementLength());
    if (atLeast ? n < length : n != length) return bad(std::string(what) + " must hold " + std::to_string(length) + " bytes"), nullptr;
    return reinterpret_cast<int8_t*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  }
  // A Float32Array of exactly `length` values; with `optional`, null / undefined gives nullptr.
  float* f32(const Napi::Value& v, int64_t length, const char* what, bool optional = false) {
    if (optional && (v.IsNull() || v.IsUndefined())) return nullptr;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) return bad(std::string(what) + " must be a Float32Array"), nullptr;
    auto a = v.As<Napi::Float32Array>();
    if (static_cast<int64_t>(a.ElementLength()) != length) return bad(std::string(what) + " must hold " + std::to_string(length) + " values"), nullptr;
    return a.Data();
  }
  Napi::Array array(const Napi::Value& v, uint32_t length, const char* what) {
    if (!v.IsArray() || v.As<Napi::Array>().Length() != length) {
      bad(std::string(what) + " must be an array of " + std::to_string(length));
      return Napi::Array::New(env);
    }
    return v.As<Napi::Array>();
  }
  // A LayerNorm from 7 scalars [size, epsCode, multiplier, shift, sqrtSize, outMin, outMax] and its gamma, beta.
  void layerNorm(const int32_t* d, const Napi::Value& gamma, const Napi::Value& beta, int64_t E, lowbit::IntTfLayerNorm* p, const char* what) {
    p->size = d[0];
    p->epsCode = d[1];
    p->multiplier = d[2];
    p->shift = d[3];
    p->sqrtSize = d[4];
    p->outMin = d[5];
    p->outMax = d[6];
    if (p->size != E || p->epsCode < 0 || p->epsCode > (int64_t{1} << 30) || p->sqrtSize < 1 || p->outMin > p->outMax || p->outMin < -128 ||
        p->outMax > 127 || lowbit::intTfShiftProblem(p->shift)) {
      bad(std::string(what) + ": scalars out of range");
      return;
    }
    p->gamma = i32(gamma, E, what);
    p->beta = i32(beta, E, what);
    if (ok && !tfWithin(p->gamma, static_cast<size_t>(E), -32767, 32767)) bad(std::string(what) + ": |gamma| must be <= 32767");
  }
  // A Linear from [panel, rowSums, bias, mult, shift] at arr[i..i+5) and its output clamp.
  void linear(const Napi::Array& arr, uint32_t i, int64_t in, int64_t out, int32_t lo, int32_t hi, lowbit::IntTfLinear* l, const char* what) {
    l->in = in;
    l->out = out;
    l->lo = lo;
    l->hi = hi;
    if (lo > hi) bad(std::string(what) + ": the output clamp is empty");
    l->packed = i8(arr[i], lowbit::int8PackedBytes(out, in), true, what);
    l->rowSums = i32(arr[i + 1], out, what);
    l->bias = i32(arr[i + 2], out, what);
    l->mult = i32(arr[i + 3], out, what);
    l->shift = i32(arr[i + 4], out, what);
    if (!ok) return;
    for (int64_t r = 0; r < out; r++) {
      if (lowbit::intTfShiftProblem(l->shift[r])) {
        bad(std::string(what) + ": a requantization shift is outside [-32, 100]");
        return;
      }
    }
  }
};

// intTfForward(dims [batch, steps, past, capacity, E, heads, V, maxContext, headMode, numBlocks,
//     lnFinal: size, epsCode, multiplier, shift, sqrtSize, outMin, outMax],
//   ids: Int32Array (batch·steps), embed: [table Int8Array (V·E), mult, shift Int32Array (V), positions Int32Array (maxContext·E)],
//   blocks: per block [scalars Int32Array (39), ln1.gamma, ln1.beta, ln2.gamma, ln2.beta, then for qkv, proj, fc1, fc2:
//     panel Int8Array (packInt8), rowSums, bias, mult, shift Int32Array (out), then keys, values Int8Array (batch·capacity·E)],
//   lnFinal: [gamma, beta], head: [panel, rowSums, bias Int32Array (V), scale Float32Array (V)],
//   x: Int32Array (batch·steps·E), logits: Float32Array (headMode 1: batch·steps·V, 2: batch·V) or undefined (headMode 0)).
// Block scalars: ln1 (7, as lnFinal's), ln2 (7), scoreMult, scoreShift, probsMult, probsShift, probsMax, contextMult,
//   contextShift, contextMin, contextMax, qkv lo, hi, proj lo, hi, fc1 lo, hi, fc2 lo, hi, gelu (0: ReLU codes, 1: i-GELU),
//   geluMult, geluShift, geluLo, geluHi, erfClip, erfA, mlpDim.
Napi::Value IntTfForward(const Napi::CallbackInfo& info) {
  int32_t* dims = nullptr;
  if (!tfDims(info, "intTfForward", 17, &dims)) return info.Env().Undefined();
  const int64_t batch = dims[0], steps = dims[1], past = dims[2], capacity = dims[3], E = dims[4], H = dims[5], V = dims[6], C = dims[7];
  const int headMode = dims[8];
  const int64_t numBlocks = dims[9];
  TfArgs args{info.Env(), "intTfForward", ""};
  if (batch < 1 || steps < 1 || past < 0 || capacity < 1 || capacity > (1 << 16) || past + steps > capacity || capacity > C || E < 1 ||
      E > (1 << 16) || H < 1 || E % H != 0 || V < 1 || headMode < 0 || headMode > 2 || numBlocks < 0 || numBlocks > 1024 || info.Length() < 8) {
    fail(info.Env(), "intTfForward: dims out of range");
    return info.Env().Undefined();
  }
  const int64_t rows = batch * steps;
  lowbit::IntTfModel m;
  m.E = E;
  m.V = V;
  m.maxContext = C;
  const int32_t* ids = args.i32(info[1], rows, "ids");
  Napi::Array embed = args.array(info[2], 4, "embed");
  if (args.ok) {
    m.table = args.i8(embed[0u], V * E, false, "embed table");
    m.tokenMult = args.i32(embed[1u], V, "embed multipliers");
    m.tokenShift = args.i32(embed[2u], V, "embed shifts");
    m.positions = args.i32(embed[3u], C * E, "positions");
  }
  if (args.ok) {
    for (int64_t i = 0; i < rows; i++) {
      if (ids[i] < 0 || ids[i] >= V) {
        fail(info.Env(), "intTfForward: word id " + std::to_string(ids[i]) + " is outside [0, V)");
        return info.Env().Undefined();
      }
    }
    for (int64_t i = 0; i < V && args.ok; i++) {
      if (lowbit::intTfShiftProblem(m.tokenShift[i])) args.bad("embed: a requantization shift is outside [-32, 100]");
    }
  }
  if (!info[3].IsArray() || info[3].As<Napi::Array>().Length() != static_cast<uint32_t>(numBlocks)) args.bad("blocks must be an array of numBlocks");
  std::vector<lowbit::IntTfBlock> blocks(static_cast<size_t>(numBlocks));
  for (int64_t bi = 0; bi < numBlocks && args.ok; bi++) {
    args.where = "block " + std::to_string(bi) + ": ";
    Napi::Array arr = args.array(info[3].As<Napi::Array>()[static_cast<uint32_t>(bi)], 27, "the block");
    if (!args.ok) break;
    const int32_t* d = args.i32(arr[0u], 39, "scalars");
    if (!args.ok) break;
    lowbit::IntTfBlock& b = blocks[static_cast<size_t>(bi)];
    args.layerNorm(d, arr[1u], arr[2u], E, &b.ln1, "ln1");
    args.layerNorm(d + 7, arr[3u], arr[4u], E, &b.ln2, "ln2");
    lowbit::IntTfAttention& a = b.attention;
    a.heads = H;
    a.headDim = E / H;
    a.scoreMult = d[14];
    a.scoreShift = d[15];
    a.probsMult = d[16];
    a.probsShift = d[17];
    a.probsMax = d[18];
    a.contextMult = d[19];
    a.contextShift = d[20];
    a.contextMin = d[21];
    a.contextMax = d[22];
    if (a.probsMax < 0 || a.probsMax > 255 || a.probsMult < 0 || a.contextMin > a.contextMax || a.contextMin < -128 || a.contextMax > 127 ||
        lowbit::intTfShiftProblem(a.scoreShift) || lowbit::intTfShiftProblem(a.probsShift) || lowbit::intTfShiftProblem(a.contextShift)) {
      args.bad("attention scalars out of range");
    }
    const int64_t F = d[38];
    b.gelu = d[31] != 0;
    b.g.multiplier = d[32];
    b.g.shift = d[33];
    b.g.lo = d[34];
    b.g.hi = d[35];
    b.g.erfClip = d[36];
    b.g.erfA = d[37];
    if (F < 1 || F > (1 << 20)) args.bad("mlpDim out of range");
    if (d[23] < -128 || d[24] > 127) args.bad("the qkv codes must be int8");
    if (b.gelu ? (d[27] < -(1 << 20) || d[28] > (1 << 20) || b.g.lo > b.g.hi || b.g.lo < -128 || b.g.hi > 127 || b.g.erfClip < 0 ||
                  b.g.erfClip > (1 << 20) || b.g.erfA > 0 || b.g.erfA < -(1 << 20) || lowbit::intTfShiftProblem(b.g.shift))
               : (d[27] < -128 || d[28] > 127)) {
      args.bad("fc1's output range or the GELU scalars out of range");
    }
    if (!args.ok) break;
    args.linear(arr, 5, E, 3 * E, d[23], d[24], &b.qkv, "qkv");
    args.linear(arr, 10, E, E, d[25], d[26], &b.proj, "proj");
    args.linear(arr, 15, E, F, d[27], d[28], &b.fc1, "fc1");
    args.linear(arr, 20, F, E, d[29], d[30], &b.fc2, "fc2");
    b.keys = args.i8(arr[25u], batch * capacity * E, false, "keys");
    b.values = args.i8(arr[26u], batch * capacity * E, false, "values");
  }
  args.where = "";
  if (args.ok) {
    Napi::Array fin = args.array(info[4], 2, "lnFinal");
    if (args.ok) args.layerNorm(dims + 10, fin[0u], fin[1u], E, &m.lnFinal, "lnFinal");
  }
  if (args.ok) {
    Napi::Array head = args.array(info[5], 4, "head");
    if (args.ok) {
      m.headPacked = args.i8(head[0u], lowbit::int8PackedBytes(V, E), true, "head panel");
      m.headRowSums = args.i32(head[1u], V, "head rowSums");
      m.headBias = args.i32(head[2u], V, "head bias");
      m.headScale = args.f32(head[3u], V, "head scale");
    }
  }
  int32_t* x = args.ok ? args.i32(info[6], rows * E, "x") : nullptr;
  float* logits = nullptr;
  if (args.ok && headMode != 0) logits = args.f32(info[7], (headMode == 1 ? rows : batch) * V, "logits");
  if (!args.ok) return info.Env().Undefined();
  m.blocks = blocks.data();
  m.numBlocks = numBlocks;
  lowbit::intTfForward(m, batch, steps, past, capacity, ids, x, headMode, logits);
  return info.Env().Undefined();
}

// intTfProfile(on: boolean): Float64Array — intTfForward's stage seconds (summed over threads) since the last call,
// in the order embed, layerNorm, qkvGemm, qkvOut, attention, projGemm, projOut, fc1Gemm, fc1Out, fc2Gemm, fc2Out,
// headGemm, headOut; then turns the timers on or off.
Napi::Value IntTfProfile(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsBoolean()) {
    fail(info.Env(), "intTfProfile: the argument must be a boolean");
    return info.Env().Undefined();
  }
  auto out = Napi::Float64Array::New(info.Env(), lowbit::kTfStages);
  lowbit::intTfProfile(info[0].As<Napi::Boolean>().Value(), out.Data());
  return out;
}

// intTfLoops(vector?: boolean): string — which loops run ("avx512", "avx2" or "scalar"), after allowing (true) or
// forbidding (false) the vector loops when the argument is given (for benchmarks and tests).
Napi::Value IntTfLoops(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsBoolean()) {
      fail(info.Env(), "intTfLoops: the argument must be a boolean");
      return info.Env().Undefined();
    }
    lowbit::intTfSetVector(info[0].As<Napi::Boolean>().Value());
  }
  return Napi::String::New(info.Env(), lowbit::intTfLoops());
}


// floatTfDecode(dims Int32Array [batch, steps, past, capacity, E, heads, V, maxContext, numBlocks, mlpDim, activation
//     (0 GELU erf, 1 GELU tanh, 2 ReLU)], eps Float32Array (ln1, ln2 per block, then lnFinal),
//   ids Int32Array (batch·steps), embed [tokens (V·E), positions (maxContext·E)],
//   blocks: per block [ln1.w, ln1.b, qkv.W (3E·E), qkv.b | null, proj.W (E·E), proj.b | null, ln2.w, ln2.b,
//     fc1.W (F·E), fc1.b | null, fc2.W (E·F), fc2.b | null, keys, values (batch·capacity·E)],
//   final [lnFinal.w, lnFinal.b, head.W (V·E), head.b | null], logits Float32Array (batch·steps·V))
// (decode-step.h floatTfDecode).
Napi::Value FloatTfDecode(const Napi::CallbackInfo& info) {
  int32_t* dims = nullptr;
  if (!tfDims(info, "floatTfDecode", 11, &dims)) return info.Env().Undefined();
  const int64_t batch = dims[0], steps = dims[1], past = dims[2], capacity = dims[3], E = dims[4], H = dims[5], V = dims[6], C = dims[7];
  const int64_t numBlocks = dims[8], F = dims[9];
  const int activation = dims[10];
  if (batch < 1 || steps < 1 || past < 0 || capacity < 1 || past + steps > capacity || capacity > C || E < 1 || E > (1 << 20) || H < 1 ||
      E % H != 0 || V < 1 || F < 1 || F > (1 << 24) || numBlocks < 0 || numBlocks > 4096 || activation < 0 || activation > 2 || info.Length() < 7) {
    fail(info.Env(), "floatTfDecode: dims out of range");
    return info.Env().Undefined();
  }
  const int64_t rows = batch * steps;
  TfArgs args{info.Env(), "floatTfDecode", ""};
  lowbit::FloatTfModel m;
  m.E = E;
  m.heads = H;
  m.V = V;
  m.maxContext = C;
  m.activation = static_cast<lowbit::FloatTfActivation>(activation);
  const float* eps = args.f32(info[1], 2 * numBlocks + 1, "eps");
  const int32_t* ids = nullptr;
  size_t nids = 0;
  if (args.ok && !argI32(info, 2, &ids, &nids)) return info.Env().Undefined();
  if (args.ok && static_cast<int64_t>(nids) != rows) args.bad("ids must hold batch·steps values");
  for (int64_t i = 0; i < rows && args.ok; i++) {
    if (ids[i] < 0 || ids[i] >= V) args.bad("word id " + std::to_string(ids[i]) + " is outside [0, V)");
  }
  if (args.ok) {
    Napi::Array embed = args.array(info[3], 2, "embed");
    if (args.ok) m.tokens = args.f32(embed[0u], V * E, "the token table");
    if (args.ok) m.positions = args.f32(embed[1u], C * E, "the position table");
  }
  if (args.ok && (!info[4].IsArray() || info[4].As<Napi::Array>().Length() != static_cast<uint32_t>(numBlocks))) args.bad("blocks must be an array of numBlocks");
  std::vector<lowbit::FloatTfBlock> blocks(static_cast<size_t>(numBlocks));
  for (int64_t bi = 0; bi < numBlocks && args.ok; bi++) {
    args.where = "block " + std::to_string(bi) + ": ";
    Napi::Array arr = args.array(info[4].As<Napi::Array>()[static_cast<uint32_t>(bi)], 14, "the block");
    if (!args.ok) break;
    lowbit::FloatTfBlock& b = blocks[static_cast<size_t>(bi)];
    b.F = F;
    b.eps1 = eps[2 * bi];
    b.eps2 = eps[2 * bi + 1];
    b.ln1w = args.f32(arr[0u], E, "ln1.weight");
    b.ln1b = args.f32(arr[1u], E, "ln1.bias");
    b.qkvW = args.f32(arr[2u], 3 * E * E, "qkv.weight");
    b.qkvB = args.f32(arr[3u], 3 * E, "qkv.bias", true);
    b.projW = args.f32(arr[4u], E * E, "proj.weight");
    b.projB = args.f32(arr[5u], E, "proj.bias", true);
    b.ln2w = args.f32(arr[6u], E, "ln2.weight");
    b.ln2b = args.f32(arr[7u], E, "ln2.bias");
    b.fc1W = args.f32(arr[8u], F * E, "fc1.weight");
    b.fc1B = args.f32(arr[9u], F, "fc1.bias", true);
    b.fc2W = args.f32(arr[10u], E * F, "fc2.weight");
    b.fc2B = args.f32(arr[11u], E, "fc2.bias", true);
    b.keys = args.f32(arr[12u], batch * capacity * E, "keys");
    b.values = args.f32(arr[13u], batch * capacity * E, "values");
  }
  args.where = "";
  if (args.ok) {
    Napi::Array fin = args.array(info[5], 4, "final");
    if (args.ok) {
      m.lnFw = args.f32(fin[0u], E, "lnFinal.weight");
      m.lnFb = args.f32(fin[1u], E, "lnFinal.bias");
      m.headW = args.f32(fin[2u], V * E, "head.weight");
      m.headB = args.f32(fin[3u], V, "head.bias", true);
      m.epsF = eps[2 * numBlocks];
    }
  }
  float* logits = args.ok ? args.f32(info[6], rows * V, "logits") : nullptr;
  if (!args.ok) return info.Env().Undefined();
  m.blocks = blocks.data();
  m.numBlocks = numBlocks;
  lowbit::floatTfDecode(m, batch, steps, past, capacity, ids, logits);
  return info.Env().Undefined();
}

void initIntTransformerKernels(Napi::Env env, Napi::Object exports) {
  exports.Set("intTfLoops", Napi::Function::New(env, IntTfLoops));
  exports.Set("intTfRequantizeGelu", Napi::Function::New(env, IntTfRequantizeGelu));
  exports.Set("intTfHead", Napi::Function::New(env, IntTfHead));
  exports.Set("intTfEmbed", Napi::Function::New(env, IntTfEmbed));
  exports.Set("intTfLayerNorm", Napi::Function::New(env, IntTfLayerNorm));
  exports.Set("intTfRequantize", Napi::Function::New(env, IntTfRequantize));
  exports.Set("intTfGelu", Napi::Function::New(env, IntTfGelu));
  exports.Set("intTfAttention", Napi::Function::New(env, IntTfAttention));
  exports.Set("intTfForward", Napi::Function::New(env, IntTfForward));
  exports.Set("intTfProfile", Napi::Function::New(env, IntTfProfile));
}
// ---------------------------------------------------------------- end of integer Transformer LM loops

// Tensors are JS ArrayBuffers that glibc malloc serves; by default it maps every buffer above a
// (dynamic) threshold freshly and returns freed heap tops to the OS, so each new activation of a
// training step costs page faults and kernel page zeroing. Keeping up to 64 MB of freed heap
// (and serving buffers below 32 MB from it) removes that; LOWBIT_MALLOC_TUNING=0 leaves glibc's
// defaults alone.
void tuneMalloc() {
#if defined(__GLIBC__)
  const char* flag = std::getenv("LOWBIT_MALLOC_TUNING");
  if (flag != nullptr && std::strcmp(flag, "0") == 0) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  tuneMalloc();
  initIntKernels(env, exports);  // integer kernels (block above)
  initIntGruKernels(env, exports);  // integer GRU cell (intgru.h)
  initIntTransformerKernels(env, exports);  // integer Transformer LM loops
  exports.Set("reduce", Napi::Function::New(env, Reduce));
  exports.Set("argmax", Napi::Function::New(env, Argmax));
  exports.Set("gather", Napi::Function::New(env, GatherScatter<false>));
  exports.Set("scatterAdd", Napi::Function::New(env, GatherScatter<true>));
  exports.Set("copyStrided", Napi::Function::New(env, CopyStrided));
  exports.Set("cast", Napi::Function::New(env, Cast));
  exports.Set("fakeQuantize", Napi::Function::New(env, FakeQuantize));
  exports.Set("estimator", Napi::Function::New(env, Estimator));
  exports.Set("fakeQuantizeGrad", Napi::Function::New(env, FakeQuantizeGradT<false>));
  exports.Set("fakeQuantizeGradSum", Napi::Function::New(env, FakeQuantizeGradT<true>));
  exports.Set("fakeQuantizeGradXScale", Napi::Function::New(env, FakeQuantizeGradXScale));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("fmaPeak", Napi::Function::New(env, FmaPeak));
  exports.Set("loadFedPeak", Napi::Function::New(env, LoadFedPeak));
  exports.Set("sgdMomentumStep", Napi::Function::New(env, SgdMomentumStep));
  exports.Set("adamStep", Napi::Function::New(env, AdamStep));
  exports.Set("sgemm", Napi::Function::New(env, Sgemm));
  exports.Set("conv2d", Napi::Function::New(env, Conv<ConvKind::Forward>));
  exports.Set("setDepthwiseConv", Napi::Function::New(env, SetDepthwiseConv));
  exports.Set("conv2dBackwardInput", Napi::Function::New(env, Conv<ConvKind::BackwardInput>));
  exports.Set("conv2dBackwardWeight", Napi::Function::New(env, Conv<ConvKind::BackwardWeight>));
  exports.Set("conv2dFused", Napi::Function::New(env, ConvFused));
  exports.Set("adderConv2d", Napi::Function::New(env, AdderConv));
  exports.Set("adderConv2dGrad", Napi::Function::New(env, AdderConvGrad));
  exports.Set("maxPool2d", Napi::Function::New(env, Pool<PoolKind::Max>));
  exports.Set("maxPool2dBackward", Napi::Function::New(env, Pool<PoolKind::MaxBackward>));
  exports.Set("maxPool2dGather", Napi::Function::New(env, Pool<PoolKind::MaxGather>));
  exports.Set("avgPool2d", Napi::Function::New(env, Pool<PoolKind::Avg>));
  exports.Set("avgPool2dBackward", Napi::Function::New(env, Pool<PoolKind::AvgBackward>));
  exports.Set("unary", Napi::Function::New(env, Unary));
  exports.Set("binary", Napi::Function::New(env, Binary));
  exports.Set("where", Napi::Function::New(env, Where));
  exports.Set("sumInner", Napi::Function::New(env, Sum<true>));
  exports.Set("sumOuter", Napi::Function::New(env, Sum<false>));
  exports.Set("softmax", Napi::Function::New(env, Softmax));
  exports.Set("transpose", Napi::Function::New(env, Transpose));
  exports.Set("layerNorm", Napi::Function::New(env, LayerNormFwd));
  exports.Set("layerNormBackward", Napi::Function::New(env, LayerNormBwd));
  exports.Set("batchNorm", Napi::Function::New(env, BatchNormFwd));
  exports.Set("batchNormBackward", Napi::Function::New(env, BatchNormBwd));
  exports.Set("batchNormStats", Napi::Function::New(env, BatchNormStatsFn));
  exports.Set("batchNormStatsBackward", Napi::Function::New(env, BatchNormStatsBwd));
  exports.Set("clamp", Napi::Function::New(env, ClampFwd));
  exports.Set("clampBackward", Napi::Function::New(env, ClampBwd));
  exports.Set("gelu", Napi::Function::New(env, GeluFwd));
  exports.Set("geluBackward", Napi::Function::New(env, GeluBwd));
  exports.Set("attention", Napi::Function::New(env, AttentionFwd));
  exports.Set("attentionBackward", Napi::Function::New(env, AttentionBwd));
  exports.Set("decodeAttention", Napi::Function::New(env, DecodeAttention));
  exports.Set("floatTfDecode", Napi::Function::New(env, FloatTfDecode));
  exports.Set("crossEntropyLoss", Napi::Function::New(env, CrossEntropyFwd));
  exports.Set("crossEntropyLossBackward", Napi::Function::New(env, CrossEntropyBwd));
  exports.Set("lstmSequence", Napi::Function::New(env, Recurrent<RnnKind::Lstm>));
  exports.Set("lstmSequenceBackward", Napi::Function::New(env, Recurrent<RnnKind::LstmBackward>));
  exports.Set("gruSequence", Napi::Function::New(env, Recurrent<RnnKind::Gru>));
  exports.Set("gruSequenceBackward", Napi::Function::New(env, Recurrent<RnnKind::GruBackward>));
  exports.Set("lstmInference", Napi::Function::New(env, RecurrentInference<false>));
  exports.Set("gruInference", Napi::Function::New(env, RecurrentInference<true>));
  return exports;
}

}  // namespace

NODE_API_MODULE(lowbit_native, Init)
