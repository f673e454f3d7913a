// Fused float32 Transformer layers (see transformer.h).
//
// The elementwise and row loops are written once (default target, always inlined) and instantiated
// inside LOWBIT_TARGET_AVX512 / LOWBIT_TARGET_AVX2 wrappers, where the compiler vectorises them, and
// as the scalar fallback, chosen by activeIsa() (LOWBIT_ISA lowers it for tests). exp and erfc are
// branch-free polynomials on float bits (Cephes' expf, Numerical Recipes' erfcc), so the vector
// paths need no libm calls; every path evaluates the same expressions (no FMA contraction:
// -std=c++17 sets -ffp-contract=off), so the ISAs agree bit for bit.
#include "transformer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu.h"
#include "threadpool.h"

#define LOWBIT_INLINE inline __attribute__((always_inline))

namespace lowbit {

namespace {

#define LOWBIT_TF_WRAPPERS(name)                                                      \
  template <class... Args>                                                            \
  LOWBIT_TARGET_AVX512 void name##Avx512(Args... args) { name(args...); }             \
  template <class... Args>                                                            \
  LOWBIT_TARGET_AVX2 void name##Avx2(Args... args) { name(args...); }

#define LOWBIT_TF_DISPATCH(isa, name, ...)                                  \
  ((isa) == Isa::Avx512 ? name##Avx512(__VA_ARGS__)                         \
   : (isa) == Isa::Avx2 ? name##Avx2(__VA_ARGS__) : name(__VA_ARGS__))

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluTanhA = 0.044715f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;
// Elements per task of the elementwise loops (a multiple of 16: whole AVX-512 vectors).
constexpr int64_t kChunk = 4096;

// exp(x) (Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, degree-7 polynomial, 2^n from the exponent
// bits); relative error ~ 2 ulp. Below -87 it flushes to 0 (float32's normal range ends at
// exp(-87.3); so a saturated softmax gives exact zeros and ones, as expf does), above 88 it gives
// exp(88); NaN in gives NaN out.
LOWBIT_INLINE float expPoly(float x) {
  const bool flush = x < -87.f;
  x = flush ? -87.f : x;
  x = x > 88.f ? 88.f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return flush ? 0.f : p * scale;
}

// Phi(x) = 0.5 erfc(-x / sqrt 2) with Numerical Recipes' erfcc (fractional error < 1.2e-7 for
// every argument): erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z >= 0.
LOWBIT_INLINE float normalCdf(float x) {
  const float z = std::fabs(x) * kInvSqrt2;
  const float t = 1.f / (1.f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float half = 0.5f * t * expPoly(p - z * z);
  return x >= 0.f ? 1.f - half : half;
}

// GELU (tanh form) = x sigmoid(2u), u = sqrt(2/pi) (x + a x^3); e = exp(-2u).
LOWBIT_INLINE float geluTanhValue(float x) {
  const float u = kSqrt2OverPi * (x + kGeluTanhA * (x * x * x));
  return x / (1.f + expPoly(-2.f * u));
}

// d/dx: s + 2 x s (1 - s) u' with s = sigmoid(2u), 1 - s = e s.
LOWBIT_INLINE float geluTanhSlope(float x) {
  const float x2 = x * x;
  const float u = kSqrt2OverPi * (x + kGeluTanhA * (x2 * x));
  const float e = expPoly(-2.f * u);
  const float s = 1.f / (1.f + e);
  const float du = kSqrt2OverPi * (1.f + 3.f * kGeluTanhA * x2);
  return s + 2.f * x * (s * s * e) * du;
}

LOWBIT_INLINE float geluErfValue(float x) { return x * normalCdf(x); }

// d/dx: Phi(x) + x phi(x).
LOWBIT_INLINE float geluErfSlope(float x) { return normalCdf(x) + x * (kInvSqrt2Pi * expPoly(-0.5f * (x * x))); }

LOWBIT_INLINE void geluForwardBody(const float* x, float* y, int64_t i0, int64_t i1, bool tanh) {
  if (tanh) {
    for (int64_t i = i0; i < i1; i++) y[i] = geluTanhValue(x[i]);
  } else {
    for (int64_t i = i0; i < i1; i++) y[i] = geluErfValue(x[i]);
  }
}
LOWBIT_TF_WRAPPERS(geluForwardBody)

LOWBIT_INLINE void geluBackwardBody(const float* g, const float* x, float* dx, int64_t i0, int64_t i1, bool tanh) {
  if (tanh) {
    for (int64_t i = i0; i < i1; i++) dx[i] = g[i] * geluTanhSlope(x[i]);
  } else {
    for (int64_t i = i0; i < i1; i++) dx[i] = g[i] * geluErfSlope(x[i]);
  }
}
LOWBIT_TF_WRAPPERS(geluBackwardBody)

// body(i0, i1) over [0, n) in chunks of kChunk on the pool (inline when small).
template <class Body>
void chunked(int64_t n, double costPerElement, Body&& body) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallelForEach(chunks, static_cast<double>(n) * costPerElement, [&](int64_t c0, int64_t c1) {
    body(c0 * kChunk, std::min(n, c1 * kChunk));
  });
}

// ---------------------------------------------------------------- LayerNorm

// Mean and rstd of one row, in double over eight chains (a fixed order whatever the ISA).
LOWBIT_INLINE void rowStats(const float* x, int64_t width, float eps, float* mean, float* rstd) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= width; k += 8) {
    for (int l = 0; l < 8; l++) acc[l] += x[k + l];
  }
  for (; k < width; k++) acc[0] += x[k];
  const double m = (((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))) / static_cast<double>(width);
  double sq[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  k = 0;
  for (; k + 8 <= width; k += 8) {
    for (int l = 0; l < 8; l++) {
      const double c = x[k + l] - m;
      sq[l] += c * c;
    }
  }
  for (; k < width; k++) {
    const double c = x[k] - m;
    sq[0] += c * c;
  }
  const double var = (((sq[0] + sq[1]) + (sq[2] + sq[3])) + ((sq[4] + sq[5]) + (sq[6] + sq[7]))) / static_cast<double>(width);
  *mean = static_cast<float>(m);
  *rstd = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
}

LOWBIT_INLINE void layerNormRows(const float* x, const float* w, const float* b, float* y, int64_t width, float eps,
                                 int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * width;
    float* yr = y + r * width;
    float mean, rstd;
    rowStats(xr, width, eps, &mean, &rstd);
    for (int64_t k = 0; k < width; k++) yr[k] = (xr[k] - mean) * rstd * w[k] + b[k];
  }
}
LOWBIT_TF_WRAPPERS(layerNormRows)

// Rows [r0, r1) of the backward pass: dx, and this block's sums of g x-hat and g into dwPart /
// dbPart (width doubles each, overwritten).
LOWBIT_INLINE void layerNormBackwardRows(const float* g, const float* x, const float* w, float* dx, double* dwPart,
                                         double* dbPart, int64_t width, float eps, int64_t r0, int64_t r1,
                                         float* xhat, float* gh) {
  for (int64_t k = 0; k < width; k++) dwPart[k] = dbPart[k] = 0.0;
  for (int64_t r = r0; r < r1; r++) {
    const float* xr = x + r * width;
    const float* gr = g + r * width;
    float* dxr = dx + r * width;
    float mean, rstd;
    rowStats(xr, width, eps, &mean, &rstd);
    double sg[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sgx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t k = 0; k < width; k++) {
      xhat[k] = (xr[k] - mean) * rstd;
      gh[k] = gr[k] * w[k];
    }
    int64_t k = 0;
    for (; k + 8 <= width; k += 8) {
      for (int l = 0; l < 8; l++) {
        sg[l] += gh[k + l];
        sgx[l] += static_cast<double>(gh[k + l]) * xhat[k + l];
      }
    }
    for (; k < width; k++) {
      sg[0] += gh[k];
      sgx[0] += static_cast<double>(gh[k]) * xhat[k];
    }
    const double inv = 1.0 / static_cast<double>(width);
    const float meanG = static_cast<float>((((sg[0] + sg[1]) + (sg[2] + sg[3])) + ((sg[4] + sg[5]) + (sg[6] + sg[7]))) * inv);
    const float meanGX = static_cast<float>((((sgx[0] + sgx[1]) + (sgx[2] + sgx[3])) + ((sgx[4] + sgx[5]) + (sgx[6] + sgx[7]))) * inv);
    for (int64_t c = 0; c < width; c++) {
      dxr[c] = rstd * (gh[c] - meanG - xhat[c] * meanGX);
      dwPart[c] += static_cast<double>(gr[c]) * xhat[c];
      dbPart[c] += gr[c];
    }
  }
}
LOWBIT_TF_WRAPPERS(layerNormBackwardRows)

// Rows per block of the weight / bias sums (fixed: the sums do not depend on the thread count).
constexpr int64_t kLnBlock = 32;

// ---------------------------------------------------------------- attention

// a . b over n elements in four interleaved chains (latency-bound otherwise at head widths ~ 16-64).
LOWBIT_INLINE float dot(const float* a, const float* b, int64_t n) {
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
  int64_t c = 0;
  for (; c + 4 <= n; c += 4) {
    s0 += a[c] * b[c];
    s1 += a[c + 1] * b[c + 1];
    s2 += a[c + 2] * b[c + 2];
    s3 += a[c + 3] * b[c + 3];
  }
  for (; c < n; c++) s0 += a[c] * b[c];
  return (s0 + s1) + (s2 + s3);
}

// Attention weights of query row i of one (batch row, head): p[0 .. seen) (masked keys excluded).
LOWBIT_INLINE void attentionRow(const float* q, const float* keys, int64_t rowStride, int64_t d, int64_t seen,
                                float scale, float* p) {
  float m = -INFINITY;
  for (int64_t j = 0; j < seen; j++) {
    p[j] = dot(q, keys + j * rowStride, d) * scale;
    m = std::max(m, p[j]);
  }
  float sum = 0.f;
  for (int64_t j = 0; j < seen; j++) {
    p[j] = expPoly(p[j] - m);
    sum += p[j];
  }
  const float inv = 1.f / sum;
  for (int64_t j = 0; j < seen; j++) p[j] *= inv;
}

// (batch row, head) pairs [t0, t1) of the forward pass.
LOWBIT_INLINE void attentionForwardTasks(const float* qkv, float* out, int64_t length, int64_t embed, int64_t heads,
                                         bool causal, int64_t t0, int64_t t1, float* p) {
  const int64_t d = embed / heads, row = 3 * embed;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  for (int64_t t = t0; t < t1; t++) {
    const int64_t n = t / heads, h = t % heads;
    const float* base = qkv + n * length * row + h * d;
    for (int64_t i = 0; i < length; i++) {
      const int64_t seen = causal ? i + 1 : length;
      attentionRow(base + i * row, base + embed, row, d, seen, scale, p);
      float* o = out + (n * length + i) * embed + h * d;
      for (int64_t c = 0; c < d; c++) o[c] = 0.f;
      for (int64_t j = 0; j < seen; j++) {
        const float pj = p[j];
        const float* vj = base + 2 * embed + j * row;
        for (int64_t c = 0; c < d; c++) o[c] += pj * vj[c];
      }
    }
  }
}
LOWBIT_TF_WRAPPERS(attentionForwardTasks)

// (batch row, head) pairs [t0, t1) of the backward pass; a (L x L) and ds (L x L) are scratch.
LOWBIT_INLINE void attentionBackwardTasks(const float* g, const float* qkv, float* dqkv, int64_t length, int64_t embed,
                                          int64_t heads, bool causal, int64_t t0, int64_t t1, float* a, float* ds) {
  const int64_t d = embed / heads, row = 3 * embed, L = length;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  for (int64_t t = t0; t < t1; t++) {
    const int64_t n = t / heads, h = t % heads;
    const float* base = qkv + n * L * row + h * d;
    const float* gb = g + n * L * embed + h * d;
    float* db = dqkv + n * L * row + h * d;
    for (int64_t i = 0; i < L; i++) {
      const int64_t seen = causal ? i + 1 : L;
      float* ai = a + i * L;
      float* dsi = ds + i * L;
      attentionRow(base + i * row, base + embed, row, d, seen, scale, ai);
      const float* gi = gb + i * embed;
      float weighted = 0.f;
      for (int64_t j = 0; j < seen; j++) {
        const float s = dot(gi, base + 2 * embed + j * row, d);
        dsi[j] = s;
        weighted += s * ai[j];
      }
      for (int64_t j = 0; j < seen; j++) dsi[j] = ai[j] * (dsi[j] - weighted);
      for (int64_t j = seen; j < L; j++) ai[j] = dsi[j] = 0.f;
    }
    for (int64_t s = 0; s < L; s++) {
      float* dq = db + s * row;
      float* dk = dq + embed;
      float* dv = dq + 2 * embed;
      for (int64_t c = 0; c < d; c++) dq[c] = dk[c] = dv[c] = 0.f;
      // dQ_s = scale sum_j ds[s][j] K_j (j <= s when causal)
      const int64_t seen = causal ? s + 1 : L;
      for (int64_t j = 0; j < seen; j++) {
        const float w = ds[s * L + j] * scale;
        const float* kj = base + embed + j * row;
        for (int64_t c = 0; c < d; c++) dq[c] += w * kj[c];
      }
      // dK_s = scale sum_i ds[i][s] Q_i, dV_s = sum_i a[i][s] G_i (i >= s when causal)
      for (int64_t i = causal ? s : 0; i < L; i++) {
        const float w = ds[i * L + s] * scale;
        const float av = a[i * L + s];
        const float* qi = base + i * row;
        const float* gi = gb + i * embed;
        for (int64_t c = 0; c < d; c++) {
          dk[c] += w * qi[c];
          dv[c] += av * gi[c];
        }
      }
    }
  }
}
LOWBIT_TF_WRAPPERS(attentionBackwardTasks)

// (batch row, head) pairs [t0, t1) of decoding: query s of qkv (position past + s) against the cache
// rows 0 .. past + s of keys / values (batch, capacity, embed); p holds past + steps weights.
LOWBIT_INLINE void decodeAttentionTasks(const float* qkv, const float* keys, const float* values, float* out,
                                        int64_t steps, int64_t capacity, int64_t embed, int64_t heads, int64_t past,
                                        int64_t t0, int64_t t1, float* p) {
  const int64_t d = embed / heads;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  for (int64_t t = t0; t < t1; t++) {
    const int64_t n = t / heads, h = t % heads;
    const float* k = keys + n * capacity * embed + h * d;
    const float* v = values + n * capacity * embed + h * d;
    for (int64_t s = 0; s < steps; s++) {
      const int64_t seen = past + s + 1;
      attentionRow(qkv + (n * steps + s) * 3 * embed + h * d, k, embed, d, seen, scale, p);
      float* o = out + (n * steps + s) * embed + h * d;
      for (int64_t c = 0; c < d; c++) o[c] = 0.f;
      for (int64_t j = 0; j < seen; j++) {
        const float pj = p[j];
        const float* vj = v + j * embed;
        for (int64_t c = 0; c < d; c++) o[c] += pj * vj[c];
      }
    }
  }
}
LOWBIT_TF_WRAPPERS(decodeAttentionTasks)

// ---------------------------------------------------------------- softmax cross-entropy

// logsumexp of one row (max in 16 lanes, exp sums in 16 float lanes combined in double); -inf for
// a row of -inf.
LOWBIT_INLINE float rowLogSumExp(const float* x, int64_t classes) {
  float lanes[16];
  for (int l = 0; l < 16; l++) lanes[l] = -INFINITY;
  int64_t c = 0;
  for (; c + 16 <= classes; c += 16) {
    for (int l = 0; l < 16; l++) lanes[l] = x[c + l] > lanes[l] ? x[c + l] : lanes[l];
  }
  float m = -INFINITY;
  for (int l = 0; l < 16; l++) m = std::max(m, lanes[l]);
  for (; c < classes; c++) m = std::max(m, x[c]);
  if (m == -INFINITY) return m;
  float sums[16];
  for (int l = 0; l < 16; l++) sums[l] = 0.f;
  c = 0;
  for (; c + 16 <= classes; c += 16) {
    for (int l = 0; l < 16; l++) sums[l] += expPoly(x[c + l] - m);
  }
  double total = 0.0;
  for (; c < classes; c++) total += expPoly(x[c] - m);
  for (int l = 0; l < 16; l++) total += sums[l];
  return static_cast<float>(static_cast<double>(m) + std::log(total));
}

LOWBIT_INLINE void crossEntropyRows(const float* x, const int32_t* targets, float* loss, int64_t classes, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) {
    const float* row = x + r * classes;
    loss[r] = rowLogSumExp(row, classes) - row[targets[r]];
  }
}
LOWBIT_TF_WRAPPERS(crossEntropyRows)

LOWBIT_INLINE void crossEntropyBackwardRows(const float* g, const float* x, const int32_t* targets, float* dx, int64_t classes,
                                            int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; r++) {
    const float* row = x + r * classes;
    float* out = dx + r * classes;
    const float lse = rowLogSumExp(row, classes);
    const float gr = g[r];
    for (int64_t c = 0; c < classes; c++) out[c] = gr * expPoly(row[c] - lse);
    out[targets[r]] -= gr;
  }
}
LOWBIT_TF_WRAPPERS(crossEntropyBackwardRows)

bool targetsInRange(const int32_t* targets, int64_t rows, int64_t classes) {
  for (int64_t r = 0; r < rows; r++) {
    if (targets[r] < 0 || targets[r] >= classes) return false;
  }
  return true;
}

}  // namespace

void geluForward(const float* x, float* y, int64_t n, bool tanh) {
  const Isa isa = activeIsa();
  chunked(n, 30.0, [&](int64_t i0, int64_t i1) { LOWBIT_TF_DISPATCH(isa, geluForwardBody, x, y, i0, i1, tanh); });
}

void geluBackward(const float* g, const float* x, float* dx, int64_t n, bool tanh) {
  const Isa isa = activeIsa();
  chunked(n, 40.0, [&](int64_t i0, int64_t i1) { LOWBIT_TF_DISPATCH(isa, geluBackwardBody, g, x, dx, i0, i1, tanh); });
}

void layerNormForward(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t width, float eps) {
  const Isa isa = activeIsa();
  parallelFor(rows, static_cast<double>(rows * width) * 6.0, [&](int64_t r0, int64_t r1) {
    LOWBIT_TF_DISPATCH(isa, layerNormRows, x, w, b, y, width, eps, r0, r1);
  });
}

void layerNormBackward(const float* g, const float* x, const float* w, float* dx, float* dw, float* db, int64_t rows,
                       int64_t width, float eps) {
  const Isa isa = activeIsa();
  const int64_t blocks = (rows + kLnBlock - 1) / kLnBlock;
  std::vector<double> parts(static_cast<size_t>(std::max<int64_t>(blocks, 1) * 2 * width), 0.0);
  parallelForEach(blocks, static_cast<double>(rows * width) * 12.0, [&](int64_t b0, int64_t b1) {
    std::vector<float> scratch(static_cast<size_t>(2 * width));
    for (int64_t blk = b0; blk < b1; blk++) {
      double* part = parts.data() + blk * 2 * width;
      LOWBIT_TF_DISPATCH(isa, layerNormBackwardRows, g, x, w, dx, part, part + width, width, eps, blk * kLnBlock,
                         std::min(rows, (blk + 1) * kLnBlock), scratch.data(), scratch.data() + width);
    }
  });
  for (int64_t c = 0; c < width; c++) {
    double sw = 0.0, sb = 0.0;
    for (int64_t blk = 0; blk < blocks; blk++) {
      sw += parts[static_cast<size_t>(blk * 2 * width + c)];
      sb += parts[static_cast<size_t>(blk * 2 * width + width + c)];
    }
    dw[c] = static_cast<float>(sw);
    db[c] = static_cast<float>(sb);
  }
}

void attentionForward(const float* qkv, float* out, int64_t batch, int64_t length, int64_t embed, int64_t heads,
                      bool causal) {
  const Isa isa = activeIsa();
  const int64_t tasks = batch * heads;
  const double work = static_cast<double>(tasks) * static_cast<double>(length * length) * static_cast<double>(embed / heads) * 4.0;
  parallelFor(tasks, work, [&](int64_t t0, int64_t t1) {
    std::vector<float> p(static_cast<size_t>(length));
    LOWBIT_TF_DISPATCH(isa, attentionForwardTasks, qkv, out, length, embed, heads, causal, t0, t1, p.data());
  });
}

void attentionBackward(const float* g, const float* qkv, float* dqkv, int64_t batch, int64_t length, int64_t embed,
                       int64_t heads, bool causal) {
  const Isa isa = activeIsa();
  const int64_t tasks = batch * heads;
  const double work = static_cast<double>(tasks) * static_cast<double>(length * length) * static_cast<double>(embed / heads) * 10.0;
  parallelFor(tasks, work, [&](int64_t t0, int64_t t1) {
    std::vector<float> scratch(static_cast<size_t>(2 * length * length));
    LOWBIT_TF_DISPATCH(isa, attentionBackwardTasks, g, qkv, dqkv, length, embed, heads, causal, t0, t1, scratch.data(),
                       scratch.data() + length * length);
  });
}

void decodeAttention(const float* qkv, const float* keys, const float* values, float* out, int64_t batch,
                     int64_t steps, int64_t capacity, int64_t embed, int64_t heads, int64_t past) {
  const Isa isa = activeIsa();
  const int64_t tasks = batch * heads;
  const double work = static_cast<double>(tasks * steps) * static_cast<double>(past + steps) * static_cast<double>(embed / heads) * 4.0;
  parallelFor(tasks, work, [&](int64_t t0, int64_t t1) {
    std::vector<float> p(static_cast<size_t>(past + steps));
    LOWBIT_TF_DISPATCH(isa, decodeAttentionTasks, qkv, keys, values, out, steps, capacity, embed, heads, past, t0, t1, p.data());
  });
}

bool crossEntropyForward(const float* x, const int32_t* targets, float* loss, int64_t rows, int64_t classes) {
  if (!targetsInRange(targets, rows, classes)) return false;
  const Isa isa = activeIsa();
  parallelFor(rows, static_cast<double>(rows * classes) * 12.0, [&](int64_t r0, int64_t r1) {
    LOWBIT_TF_DISPATCH(isa, crossEntropyRows, x, targets, loss, classes, r0, r1);
  });
  return true;
}

bool crossEntropyBackward(const float* g, const float* x, const int32_t* targets, float* dx, int64_t rows, int64_t classes) {
  if (!targetsInRange(targets, rows, classes)) return false;
  const Isa isa = activeIsa();
  parallelFor(rows, static_cast<double>(rows * classes) * 24.0, [&](int64_t r0, int64_t r1) {
    LOWBIT_TF_DISPATCH(isa, crossEntropyBackwardRows, g, x, targets, dx, classes, r0, r1);
  });
  return true;
}

}  // namespace lowbit
