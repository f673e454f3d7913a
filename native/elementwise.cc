// Elementwise, reduction, softmax and transpose kernels: plain loops the compiler vectorises,
// split between threads when the arrays are large.
#include "elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "threadpool.h"

namespace lowbit {

namespace {

// Cost hints (operations per element) for the inline/parallel decision.
constexpr double kCheap = 1.0, kTranscendental = 20.0;

template <class F>
void mapRange(int64_t n, double cost, F&& f) {
  parallelFor(n, static_cast<double>(n) * cost, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) f(i);
  });
}

template <class Op>
void binaryLoop(const float* a, const int64_t as[3], const float* b, const int64_t bs[3], float* out,
                const int64_t d[3], Op op) {
  const int64_t rows = d[0] * d[1], inner = d[2];
  parallelFor(rows, static_cast<double>(rows * inner), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const int64_t i = r / d[1], j = r % d[1];
      const float* ap = a + i * as[0] + j * as[1];
      const float* bp = b + i * bs[0] + j * bs[1];
      float* o = out + r * inner;
      if (as[2] == 1 && bs[2] == 1) {
        for (int64_t k = 0; k < inner; k++) o[k] = op(ap[k], bp[k]);
      } else if (as[2] == 1) {
        const float bv = bp[0];
        for (int64_t k = 0; k < inner; k++) o[k] = op(ap[k], bv);
      } else if (bs[2] == 1) {
        const float av = ap[0];
        for (int64_t k = 0; k < inner; k++) o[k] = op(av, bp[k]);
      } else {
        const float v = op(ap[0], bp[0]);
        for (int64_t k = 0; k < inner; k++) o[k] = v;
      }
    }
  });
}

}  // namespace

void unary(UnaryOp op, const float* x, float* y, int64_t n) {
  switch (op) {
    case UnaryOp::Neg: return mapRange(n, kCheap, [&](int64_t i) { y[i] = -x[i]; });
    case UnaryOp::Abs: return mapRange(n, kCheap, [&](int64_t i) { y[i] = std::fabs(x[i]); });
    case UnaryOp::Relu: return mapRange(n, kCheap, [&](int64_t i) { y[i] = x[i] > 0.f ? x[i] : 0.f; });
    case UnaryOp::Sqrt: return mapRange(n, kCheap, [&](int64_t i) { y[i] = std::sqrt(x[i]); });
    case UnaryOp::Exp: return mapRange(n, kTranscendental, [&](int64_t i) { y[i] = std::exp(x[i]); });
    case UnaryOp::Log: return mapRange(n, kTranscendental, [&](int64_t i) { y[i] = std::log(x[i]); });
    case UnaryOp::Tanh: return mapRange(n, kTranscendental, [&](int64_t i) { y[i] = std::tanh(x[i]); });
    case UnaryOp::Sigmoid:
      return mapRange(n, kTranscendental, [&](int64_t i) { y[i] = 1.f / (1.f + std::exp(-x[i])); });
  }
}

void binary(BinaryOp op, const float* a, const int64_t as[3], const float* b, const int64_t bs[3], float* out,
            const int64_t d[3]) {
  switch (op) {
    case BinaryOp::Add: return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return u + v; });
    case BinaryOp::Sub: return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return u - v; });
    case BinaryOp::Mul: return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return u * v; });
    case BinaryOp::Div: return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return u / v; });
    // NaN propagates as in Math.max / Math.min
    case BinaryOp::Maximum:
      return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return u != u || v != v ? NAN : u > v ? u : v; });
    case BinaryOp::Minimum:
      return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return u != u || v != v ? NAN : u < v ? u : v; });
    case BinaryOp::Greater: return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return u > v ? 1.f : 0.f; });
    case BinaryOp::GreaterEqual:
      return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return u >= v ? 1.f : 0.f; });
    case BinaryOp::Equal: return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return u == v ? 1.f : 0.f; });
    case BinaryOp::ReluBackward: return binaryLoop(a, as, b, bs, out, d, [](float u, float v) { return v > 0.f ? u : 0.f; });
  }
}

void where(const float* condF, const int32_t* condI, const float* a, const float* b, float* out, int64_t n) {
  if (condF != nullptr) {
    mapRange(n, kCheap, [&](int64_t i) { out[i] = condF[i] != 0.f ? a[i] : b[i]; });
  } else {
    mapRange(n, kCheap, [&](int64_t i) { out[i] = condI[i] != 0 ? a[i] : b[i]; });
  }
}

void sumInner(const float* x, float* y, int64_t outer, int64_t inner) {
  parallelFor(outer, static_cast<double>(outer * inner), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* row = x + r * inner;
      double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // eight chains, double to match the reference
      int64_t k = 0;
      for (; k + 8 <= inner; k += 8) {
        for (int l = 0; l < 8; l++) acc[l] += row[k + l];
      }
      for (; k < inner; k++) acc[0] += row[k];
      y[r] = static_cast<float>(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
    }
  });
}

void sumOuter(const float* x, float* y, int64_t outer, int64_t inner) {
  // Columns are independent: split them between threads; accumulate in double per column block.
  parallelFor(inner, static_cast<double>(outer * inner), [&](int64_t c0, int64_t c1) {
    constexpr int64_t kBlock = 256;
    double acc[kBlock];
    for (int64_t cb = c0; cb < c1; cb += kBlock) {
      const int64_t width = std::min(kBlock, c1 - cb);
      for (int64_t c = 0; c < width; c++) acc[c] = 0.0;
      for (int64_t r = 0; r < outer; r++) {
        const float* row = x + r * inner + cb;
        for (int64_t c = 0; c < width; c++) acc[c] += row[c];
      }
      for (int64_t c = 0; c < width; c++) y[cb + c] = static_cast<float>(acc[c]);
    }
  });
}

void softmaxRows(const float* x, float* y, int64_t rows, int64_t cols, bool log) {
  parallelFor(rows, static_cast<double>(rows * cols) * kTranscendental, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* in = x + r * cols;
      float* out = y + r * cols;
      float maxValue = -INFINITY;
      for (int64_t c = 0; c < cols; c++) maxValue = std::max(maxValue, in[c]);
      if (maxValue == -INFINITY) maxValue = 0.f;  // a row of -inf: avoid inf - inf
      double sum = 0.0;
      if (log) {
        for (int64_t c = 0; c < cols; c++) sum += std::exp(static_cast<double>(in[c] - maxValue));
        const float logSum = static_cast<float>(std::log(sum));
        for (int64_t c = 0; c < cols; c++) out[c] = in[c] - maxValue - logSum;
      } else {
        for (int64_t c = 0; c < cols; c++) {
          const float e = std::exp(in[c] - maxValue);
          out[c] = e;
          sum += e;
        }
        const float inv = static_cast<float>(1.0 / sum);
        for (int64_t c = 0; c < cols; c++) out[c] *= inv;
      }
    }
  });
}

void transpose4(const float* x, float* y, const int64_t dims[4], const int64_t perm[4]) {
  int64_t xStrides[4];
  xStrides[3] = 1;
  for (int d = 2; d >= 0; d--) xStrides[d] = xStrides[d + 1] * dims[d + 1];
  int64_t outDims[4], s[4];  // s[d]: stride in x of output dim d
  for (int d = 0; d < 4; d++) {
    outDims[d] = dims[perm[d]];
    s[d] = xStrides[perm[d]];
  }
  const int64_t rows = outDims[0] * outDims[1] * outDims[2];
  parallelFor(rows, static_cast<double>(rows * outDims[3]) * 2, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const int64_t i2 = r % outDims[2], i1 = (r / outDims[2]) % outDims[1], i0 = r / (outDims[2] * outDims[1]);
      const float* src = x + i0 * s[0] + i1 * s[1] + i2 * s[2];
      float* dst = y + r * outDims[3];
      if (s[3] == 1) {
        std::memcpy(dst, src, static_cast<size_t>(outDims[3]) * sizeof(float));
      } else {
        for (int64_t i3 = 0; i3 < outDims[3]; i3++) dst[i3] = src[i3 * s[3]];
      }
    }
  });
}

}  // namespace lowbit
