// Fused LSTM / GRU sequences.
//
// The sequences of a batch do not interact, so the batch is split once between the pool threads and
// each thread runs the whole recurrence (every step, forward or backward) for its rows: no
// synchronisation between steps. Per step, one small SGEMM for the hidden product (h_{t-1} W_hh^T
// forward, d(gates) W_hh backward) on the caller's thread, then the gate arithmetic row by row. The
// transcendentals use exp/tanh approximations written with plain float and integer arithmetic, so the
// compiler vectorises the row loops in the AVX-512 / AVX2 wrappers (to a few float32 ulp of the
// reference; the native tests state the tolerance).
#include "recurrent.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <immintrin.h>

#include "cpu.h"
#include "gemm.h"
#include "threadpool.h"

#define LOWBIT_INLINE inline __attribute__((always_inline))

namespace lowbit {

namespace {

// e^x within about 2 ulp where the result is a normal float; x is clamped to [-87, 88] (so no
// overflow or denormals), NaN stays NaN. Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, then
// the degree-7 Taylor polynomial of e^r (truncation below 6e-9) and 2^n built in the exponent bits.
LOWBIT_INLINE float expApprox(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504f + kRound) - kRound;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

LOWBIT_INLINE float sigmoidApprox(float x) { return 1.0f / (1.0f + expApprox(-x)); }

// tanh x: the odd Taylor polynomial to x^15 for |x| < 0.5 (truncation below 1e-8 relative), else
// sign(x) (1 - 2 / (e^{2|x|} + 1)), |x| capped at 9.5 where tanh rounds to 1 in float.
LOWBIT_INLINE float tanhApprox(float x) {
  const float a = std::fabs(x);
  const float e = expApprox(2.0f * std::min(a, 9.5f));
  const float large = std::copysign(1.0f - 2.0f / (e + 1.0f), x);
  const float u = x * x;
  float p = -929569.0f / 638512875.0f;
  p = p * u + 21844.0f / 6081075.0f;
  p = p * u + -1382.0f / 155925.0f;
  p = p * u + 62.0f / 2835.0f;
  p = p * u + -17.0f / 315.0f;
  p = p * u + 2.0f / 15.0f;
  p = p * u + -1.0f / 3.0f;
  const float small = x + x * u * p;
  return a < 0.5f ? small : large;
}

// ---- row bodies (default target, always inlined into the ISA wrappers below)

// One LSTM row: pre = x + (hh + bias) (4H each, gates i f g o), c = f cPrev + i g, h = o tanh(c).
LOWBIT_INLINE void lstmRowBody(int64_t H, const float* __restrict x, const float* __restrict hh,
                               const float* __restrict bias, const float* __restrict cPrev, float* __restrict h,
                               float* __restrict c, float* __restrict gi, float* __restrict gf, float* __restrict gg,
                               float* __restrict go) {
  for (int64_t j = 0; j < H; j++) {
    const float i = sigmoidApprox(x[j] + (hh[j] + bias[j]));
    const float f = sigmoidApprox(x[H + j] + (hh[H + j] + bias[H + j]));
    const float g = tanhApprox(x[2 * H + j] + (hh[2 * H + j] + bias[2 * H + j]));
    const float o = sigmoidApprox(x[3 * H + j] + (hh[3 * H + j] + bias[3 * H + j]));
    const float cv = f * cPrev[j] + i * g;
    c[j] = cv;
    h[j] = o * tanhApprox(cv);
    gi[j] = i;
    gf[j] = f;
    gg[j] = g;
    go[j] = o;
  }
}

// The saved values of one LSTM row and the upstream gradients of its six parts.
struct LstmRow {
  const float *c, *i, *f, *g, *o, *cPrev;
  const float *dh, *dc, *di, *df, *dg, *dO;  // upstream gradient of h, c, i, f, g, o
};

// One LSTM row backwards: dhRec, dcRec (H) hold the gradients arriving from step t + 1; writes
// d(pre) (4H) and dcRec <- dc_t f. dhRec is read only (the caller overwrites it with d(pre) W_hh).
LOWBIT_INLINE void lstmRowBackBody(int64_t H, const LstmRow* v, const float* __restrict dhRec,
                                   float* __restrict dcRec, float* __restrict dPre) {
  const float* __restrict c = v->c;
  const float* __restrict gi = v->i;
  const float* __restrict gf = v->f;
  const float* __restrict gg = v->g;
  const float* __restrict go = v->o;
  const float* __restrict cPrev = v->cPrev;
  const float* __restrict uh = v->dh;
  const float* __restrict uc = v->dc;
  const float* __restrict ui = v->di;
  const float* __restrict uf = v->df;
  const float* __restrict ug = v->dg;
  const float* __restrict uo = v->dO;
  for (int64_t j = 0; j < H; j++) {
    const float tc = tanhApprox(c[j]);
    const float i = gi[j], f = gf[j], g = gg[j], o = go[j];
    const float dhT = uh[j] + dhRec[j];
    const float dcT = uc[j] + dcRec[j] + dhT * o * (1.0f - tc * tc);
    dPre[j] = (dcT * g + ui[j]) * i * (1.0f - i);
    dPre[H + j] = (dcT * cPrev[j] + uf[j]) * f * (1.0f - f);
    dPre[2 * H + j] = (dcT * i + ug[j]) * (1.0f - g * g);
    dPre[3 * H + j] = (dhT * tc + uo[j]) * o * (1.0f - o);
    dcRec[j] = dcT * f;
  }
}

// One GRU row: r, z = sigma((x + bi) + (hh + b)), hn = hh_n + b_n, n = tanh((x_n + bi_n) + r hn),
// h = n + z (hPrev - n).
LOWBIT_INLINE void gruRowBody(int64_t H, const float* __restrict x, const float* __restrict hh,
                              const float* __restrict biasIh, const float* __restrict bias,
                              const float* __restrict hPrev, float* __restrict h, float* __restrict gr,
                              float* __restrict gz, float* __restrict gn, float* __restrict ghn) {
  for (int64_t j = 0; j < H; j++) {
    const float r = sigmoidApprox((x[j] + biasIh[j]) + (hh[j] + bias[j]));
    const float z = sigmoidApprox((x[H + j] + biasIh[H + j]) + (hh[H + j] + bias[H + j]));
    const float hn = hh[2 * H + j] + bias[2 * H + j];
    const float n = tanhApprox((x[2 * H + j] + biasIh[2 * H + j]) + r * hn);
    h[j] = n + z * (hPrev[j] - n);
    gr[j] = r;
    gz[j] = z;
    gn[j] = n;
    ghn[j] = hn;
  }
}

struct GruRow {
  const float *r, *z, *n, *hn, *hPrev;
  const float *dh, *dr, *dz, *dn, *dhn;  // upstream gradient of h, r, z, n, hn
};

// One GRU row backwards: dh (H) holds the gradient arriving from step t + 1 and becomes dh_t z (the
// caller adds d(hiddenGates) W_hh); writes d(gates) and d(hiddenGates) (3H each).
LOWBIT_INLINE void gruRowBackBody(int64_t H, const GruRow* v, float* __restrict dh, float* __restrict dIn,
                                  float* __restrict dHid) {
  const float* __restrict gr = v->r;
  const float* __restrict gz = v->z;
  const float* __restrict gn = v->n;
  const float* __restrict ghn = v->hn;
  const float* __restrict hPrev = v->hPrev;
  const float* __restrict uh = v->dh;
  const float* __restrict ur = v->dr;
  const float* __restrict uz = v->dz;
  const float* __restrict un = v->dn;
  const float* __restrict uhn = v->dhn;
  for (int64_t j = 0; j < H; j++) {
    const float r = gr[j], z = gz[j], n = gn[j], hn = ghn[j];
    const float dhT = uh[j] + dh[j];
    const float dPreN = (dhT * (1.0f - z) + un[j]) * (1.0f - n * n);
    const float dR = (dPreN * hn + ur[j]) * r * (1.0f - r);
    const float dZ = (dhT * (hPrev[j] - n) + uz[j]) * z * (1.0f - z);
    dIn[j] = dR;
    dIn[H + j] = dZ;
    dIn[2 * H + j] = dPreN;
    dHid[j] = dR;
    dHid[H + j] = dZ;
    dHid[2 * H + j] = dPreN * r + uhn[j];
    dh[j] = dhT * z;
  }
}

#define LOWBIT_RNN_WRAPPERS(name)                                                     \
  template <class... Args>                                                            \
  LOWBIT_TARGET_AVX512 void name##Avx512(Args... args) { name##Body(args...); }       \
  template <class... Args>                                                            \
  LOWBIT_TARGET_AVX2 void name##Avx2(Args... args) { name##Body(args...); }           \
  template <class... Args>                                                            \
  void name(Isa isa, Args... args) {                                                  \
    if (isa == Isa::Avx512) return name##Avx512(args...);                             \
    if (isa == Isa::Avx2) return name##Avx2(args...);                                 \
    name##Body(args...);                                                              \
  }
LOWBIT_RNN_WRAPPERS(lstmRow)
LOWBIT_RNN_WRAPPERS(lstmRowBack)
LOWBIT_RNN_WRAPPERS(gruRow)
LOWBIT_RNN_WRAPPERS(gruRowBack)

// Row arithmetic of a sequence: which step is processed s-th, and where rows live.
struct Layout {
  RecurrentShape s;
  int64_t plane;      // L N H: one output part
  int64_t rowStride;  // rows between sequence n and n + 1 at one step
  int64_t step(int64_t k) const { return s.reverse ? s.steps - 1 - k : k; }
  // The step processed before step t's (valid when t is not the first one processed).
  int64_t previous(int64_t t) const { return s.reverse ? t + 1 : t - 1; }
  int64_t row(int64_t t, int64_t n) const { return s.batchFirst ? n * s.steps + t : t * s.batch + n; }
};

Layout layoutOf(const RecurrentShape& s) {
  return Layout{s, s.steps * s.batch * s.hidden, s.batchFirst ? s.steps : 1};
}

// C (rows, cols) = beta C + A (rows, K, row stride lda) . B (K, cols, contiguous rows) on the calling
// thread: AVX-512's unpacked small-matrix kernel while B fits in about 1 MB (these products are a few
// rows deep, and packing B at every step costs as much as the product: 1.5-2x faster at 16 rows, K and
// cols 64-1024), else the packed SGEMM (faster from there: 1.3-2x at K x cols = 512 x 1024 and up).
void product(int64_t rows, int64_t cols, int64_t K, const float* A, int64_t lda, const float* B, float beta,
             float* C) {
  if (activeIsa() == Isa::Avx512 && K * cols <= (int64_t{1} << 18)) {
    return sgemmSmallNN(rows, cols, K, A, lda, 1, B, cols, beta, C, cols);
  }
  GemmArgs g;
  g.M = rows;
  g.N = cols;
  g.K = K;
  g.A = A;
  g.lda = lda;
  g.B = B;
  g.ldb = cols;
  g.beta = beta;
  g.C = C;
  g.ldc = cols;
  sgemmSerial(g);
}

// W_hh^T (H, G H) from W_hh (G H, H): the forward products' right operand.
std::vector<float> transposed(const float* w, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t c = 0; c < cols; c++) t[static_cast<size_t>(c * rows + r)] = w[r * cols + c];
  }
  return t;
}

// body(n0, n1) for chunks of the batch, one per pool thread when the work is worth it (the per-step
// products with W_hh, `gates` x H rows of H, and about 40 operations per hidden unit).
template <class Body>
void splitBatch(const RecurrentShape& s, int64_t gates, Body&& body) {
  const double work = static_cast<double>(s.steps * s.batch) * static_cast<double>(s.hidden) *
                      (2.0 * static_cast<double>(gates * s.hidden) + 40.0);
  parallelChunks(s.batch, work, std::min<int64_t>(poolThreads(), s.batch), body);
}

// The forward recurrence shared by LSTM (G = 4) and GRU (G = 3): per chunk of the batch and per
// step in processing order, hh (rows, G H) = h_{t-1} W_hh^T in one product, then
// cell(n, t, tp, first, hh row of sequence n) for each sequence of the chunk.
template <class Cell>
void forwardSteps(const RecurrentShape& s, const Layout& lay, int64_t gates, const float* w, const float* h0,
                  const float* out, Cell&& cell) {
  const int64_t H = s.hidden, G = gates * H;
  const std::vector<float> wt = transposed(w, G, H);
  splitBatch(s, gates, [&](int64_t n0, int64_t n1) {
    const int64_t rows = n1 - n0;
    std::vector<float> hh(static_cast<size_t>(rows * G));
    for (int64_t k = 0; k < s.steps; k++) {
      const int64_t t = lay.step(k);
      const bool first = k == 0;
      const int64_t tp = first ? 0 : lay.previous(t);
      const float* hPrev = first ? h0 + n0 * H : out + lay.row(tp, n0) * H;
      product(rows, G, H, hPrev, first ? H : lay.rowStride * H, wt.data(), 0.0f, hh.data());
      for (int64_t n = n0; n < n1; n++) cell(n, t, tp, first, hh.data() + (n - n0) * G);
    }
  });
}

// The backward recurrence shared by LSTM and GRU: per chunk of the batch, dh (the gradient reaching
// the current step from the next, zeroed first; it ends as d h0) and, per step in reverse processing
// order, cell(n, t, tp, first, dh row of sequence n) for each sequence of the chunk, then
// dh (rows, H) = beta dh + d(gates_t) W_hh with d(gates_t) read from `gateGrads` (rows of G H).
template <class Cell>
void backwardSteps(const RecurrentShape& s, const Layout& lay, int64_t gates, const float* w, float* dh0,
                   const float* gateGrads, float beta, Cell&& cell) {
  const int64_t H = s.hidden, G = gates * H;
  splitBatch(s, gates, [&](int64_t n0, int64_t n1) {
    const int64_t rows = n1 - n0;
    float* dh = dh0 + n0 * H;
    std::fill(dh, dh + rows * H, 0.0f);
    for (int64_t k = s.steps - 1; k >= 0; k--) {
      const int64_t t = lay.step(k);
      const bool first = k == 0;
      const int64_t tp = first ? 0 : lay.previous(t);
      for (int64_t n = n0; n < n1; n++) cell(n, t, tp, first, dh + (n - n0) * H);
      product(rows, H, G, gateGrads + lay.row(t, n0) * G, lay.rowStride * G, w, beta, dh);
    }
  });
}


// ---------------------------------------------------------------- inference (no saved activations)
//
// Per step and per block of up to kMaxRows sequences, each group of 16 hidden units gets the
// pre-activations of its gates in registers: acc (rows, 4 vectors) = bias + [x_t, h_{t-1}] . W, one K
// loop over E + H, then the cell runs on the 16 lanes and writes h_t (and the LSTM's c_t) directly.
// W is packed once per call (a few tens of microseconds, no cache to invalidate when an optimizer
// updates the weights in place): per group, E + H rows of V vectors of 16 (LSTM V = 4: i f g o; GRU
// V = 3: r z n). The GRU keeps n's input and hidden parts in separate accumulators (r multiplies only
// the hidden part), so its four accumulators are r, z, nx, nh. The input projection of every step is
// thereby part of the recurrent product and no (L, N, G H) gate tensor is ever written.

constexpr int kUnits = 16;    // hidden units per group: one zmm
constexpr int kAccs = 4;      // accumulator vectors per row
constexpr int kMaxRows = 6;   // rows per register tile: 24 accumulators + 4 B vectors + 1 broadcast

struct InferPlan {
  int64_t E, H, groups;
  const float* packed;  // groups x (E + H) x V x 16
  const float* bias;    // groups x 4 x 16: the accumulators' starting values
};

// One row block of one step: x rows at x + r xs, h_{t-1} rows at hp + r hs, h_t rows written at
// ho + r hs2, the LSTM's c rows at c + r H (updated in place).
struct BlockArgs {
  const InferPlan* plan;
  const float* x;
  int64_t xs;
  const float* hp;
  int64_t hs;
  float* ho;
  int64_t hos;
  float* c;
};

// pre (R, 64) = the four accumulators of every row of group g (portable version, vectorised by the
// compiler in the AVX2 wrapper).
template <bool kGru, int R>
LOWBIT_INLINE void tileGeneric(const BlockArgs& a, int64_t g, float* __restrict pre) {
  constexpr int V = kGru ? 3 : 4;
  const InferPlan& p = *a.plan;
  const float* b = p.packed + g * (p.E + p.H) * V * kUnits;
  const float* bias = p.bias + g * kAccs * kUnits;
  for (int r = 0; r < R; r++)
    for (int q = 0; q < kAccs * kUnits; q++) pre[r * kAccs * kUnits + q] = bias[q];
  for (int64_t k = 0; k < p.E; k++, b += V * kUnits) {
    for (int r = 0; r < R; r++) {
      const float av = a.x[r * a.xs + k];
      float* __restrict acc = pre + r * kAccs * kUnits;
      for (int q = 0; q < V * kUnits; q++) acc[q] += av * b[q];
    }
  }
  for (int64_t k = 0; k < p.H; k++, b += V * kUnits) {
    for (int r = 0; r < R; r++) {
      const float av = a.hp[r * a.hs + k];
      float* __restrict acc = pre + r * kAccs * kUnits;
      for (int q = 0; q < 2 * kUnits; q++) acc[q] += av * b[q];
      // The GRU's hidden n part goes to the fourth accumulator.
      float* __restrict last = acc + (kGru ? 3 : 2) * kUnits;
      for (int q = 0; q < (kGru ? 1 : 2) * kUnits; q++) last[q] += av * b[2 * kUnits + q];
    }
  }
}

template <bool kGru, int R>
LOWBIT_TARGET_AVX512 void tileAvx512(const BlockArgs& a, int64_t g, float* pre) {
  constexpr int V = kGru ? 3 : 4;
  const InferPlan& p = *a.plan;
  const float* b = p.packed + g * (p.E + p.H) * V * kUnits;
  const float* bias = p.bias + g * kAccs * kUnits;
  __m512 acc[R][kAccs];
#pragma GCC unroll 4
  for (int v = 0; v < kAccs; v++) {
    const __m512 start = _mm512_loadu_ps(bias + v * kUnits);
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) acc[r][v] = start;
  }
  const float* x = a.x;
#pragma GCC unroll 2
  for (int64_t k = 0; k < p.E; k++, b += V * kUnits) {
    __m512 bv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) bv[v] = _mm512_load_ps(b + v * kUnits);
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
      const __m512 av = _mm512_set1_ps(x[r * a.xs + k]);
#pragma GCC unroll 4
      for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  const float* h = a.hp;
#pragma GCC unroll 2
  for (int64_t k = 0; k < p.H; k++, b += V * kUnits) {
    __m512 bv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++) bv[v] = _mm512_load_ps(b + v * kUnits);
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
      const __m512 av = _mm512_set1_ps(h[r * a.hs + k]);
#pragma GCC unroll 4
      for (int v = 0; v < V; v++) {
        const int to = kGru && v == 2 ? 3 : v;
        acc[r][to] = _mm512_fmadd_ps(av, bv[v], acc[r][to]);
      }
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < kAccs; v++) _mm512_store_ps(pre + (r * kAccs + v) * kUnits, acc[r][v]);
}

// One row block of one step on ISA kIsa (2 AVX-512, 1 AVX2, 0 scalar): per group, the tile, then the
// cell on its valid lanes. LSTM: [i f g o] = [s s tanh s](pre), c = f c + i g, h = o tanh(c). GRU:
// r, z = s(pre), n = tanh(nx + r nh), h = n + z (h_{t-1} - n).
template <int kIsa, bool kGru, int R>
LOWBIT_INLINE void blockBody(const BlockArgs& a) {
  const InferPlan& p = *a.plan;
  alignas(64) float pre[R * kAccs * kUnits];
  for (int64_t g = 0; g < p.groups; g++) {
    if constexpr (kIsa == 2) {
      tileAvx512<kGru, R>(a, g, pre);
    } else {
      tileGeneric<kGru, R>(a, g, pre);
    }
    const int64_t u0 = g * kUnits;
    const int64_t units = std::min<int64_t>(kUnits, p.H - u0);
    for (int r = 0; r < R; r++) {
      const float* __restrict q = pre + r * kAccs * kUnits;
      float* __restrict h = a.ho + r * a.hos + u0;
      if constexpr (kGru) {
        const float* __restrict hPrev = a.hp + r * a.hs + u0;
        for (int64_t j = 0; j < units; j++) {
          const float rg = sigmoidApprox(q[j]);
          const float z = sigmoidApprox(q[kUnits + j]);
          const float n = tanhApprox(q[2 * kUnits + j] + rg * q[3 * kUnits + j]);
          h[j] = n + z * (hPrev[j] - n);
        }
      } else {
        float* __restrict c = a.c + r * p.H + u0;
        for (int64_t j = 0; j < units; j++) {
          const float i = sigmoidApprox(q[j]);
          const float f = sigmoidApprox(q[kUnits + j]);
          const float gg = tanhApprox(q[2 * kUnits + j]);
          const float o = sigmoidApprox(q[3 * kUnits + j]);
          const float cv = f * c[j] + i * gg;
          c[j] = cv;
          h[j] = o * tanhApprox(cv);
        }
      }
    }
  }
}

template <bool kGru, int R>
LOWBIT_TARGET_AVX512 void blockAvx512(const BlockArgs& a) { blockBody<2, kGru, R>(a); }
template <bool kGru, int R>
LOWBIT_TARGET_AVX2 void blockAvx2(const BlockArgs& a) { blockBody<1, kGru, R>(a); }
template <bool kGru, int R>
void blockScalar(const BlockArgs& a) { blockBody<0, kGru, R>(a); }

using BlockFn = void (*)(const BlockArgs&);

template <bool kGru, int R>
BlockFn blockFor(Isa isa) {
  if (isa == Isa::Avx512) return blockAvx512<kGru, R>;
  if (isa == Isa::Avx2) return blockAvx2<kGru, R>;
  return blockScalar<kGru, R>;
}

template <bool kGru>
BlockFn blockFn(Isa isa, int64_t rows) {
  switch (rows) {
    case 1: return blockFor<kGru, 1>(isa);
    case 2: return blockFor<kGru, 2>(isa);
    case 3: return blockFor<kGru, 3>(isa);
    case 4: return blockFor<kGru, 4>(isa);
    case 5: return blockFor<kGru, 5>(isa);
    default: return blockFor<kGru, kMaxRows>(isa);
  }
}

// A 64-byte aligned float buffer of the calling thread that only grows.
float* scratch(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n + 16) v.resize(static_cast<size_t>(n + 16));
  const uintptr_t at = reinterpret_cast<uintptr_t>(v.data());
  return v.data() + ((64 - at % 64) % 64) / sizeof(float);
}

// packed[g][k][v][lane] = W(v H + 16 g + lane, k) with W = [W_ih | W_hh] (V H, E + H), 0 past H;
// written in order (each read cache line of W serves 16 consecutive k).
void packInference(int64_t E, int64_t H, int V, const float* wIh, const float* wHh, float* packed) {
  const int64_t K = E + H, groups = (H + kUnits - 1) / kUnits;
  float* dst = packed;
  for (int64_t g = 0; g < groups; g++) {
    const int64_t units = std::min<int64_t>(kUnits, H - g * kUnits);
    for (int64_t k = 0; k < K; k++) {
      const float* w = k < E ? wIh + k : wHh + (k - E);
      const int64_t ld = k < E ? E : H;
      for (int v = 0; v < V; v++, dst += kUnits) {
        const float* col = w + (v * H + g * kUnits) * ld;
        int64_t lane = 0;
        for (; lane < units; lane++) dst[lane] = col[lane * ld];
        for (; lane < kUnits; lane++) dst[lane] = 0.0f;
      }
    }
  }
}

// The whole inference sequence: weights packed on the caller, then per chunk of the batch (one per pool
// thread) every step in processing order, row blocks of up to kMaxRows sequences.
template <bool kGru>
void inferenceSequence(const RecurrentShape& s, int64_t E, bool finalOnly, const float* x, const float* wIh,
                       const float* wHh, const float* bias0, const float* bias1, const float* h0, const float* c0,
                       float* out) {
  const Layout lay = layoutOf(s);
  const int V = kGru ? 3 : 4;
  const int64_t H = s.hidden, K = E + H, groups = (H + kUnits - 1) / kUnits;
  thread_local std::vector<float> packedStore, biasStore;
  float* packed = scratch(packedStore, groups * K * V * kUnits);
  float* bias = scratch(biasStore, groups * kAccs * kUnits);
  packInference(E, H, V, wIh, wHh, packed);
  std::fill(bias, bias + groups * kAccs * kUnits, 0.0f);
  for (int64_t u = 0; u < H; u++) {
    float* b = bias + (u / kUnits) * kAccs * kUnits + u % kUnits;
    for (int v = 0; v < kAccs; v++) {
      // LSTM: b_ih + b_hh per gate. GRU: r and z sum both biases; nx starts at b_in, nh at b_hn.
      b[v * kUnits] = !kGru ? bias0[v * H + u] : v < 2 ? bias0[v * H + u] + bias1[v * H + u] : v == 2 ? bias0[2 * H + u] : bias1[2 * H + u];
    }
  }
  const InferPlan plan{E, H, groups, packed, bias};
  float* hN = finalOnly ? out : out + lay.plane;
  float* cN = hN + s.batch * H;
  const Isa isa = activeIsa();
  splitBatch(s, V, [&](int64_t n0, int64_t n1) {
    const int64_t rows = n1 - n0;
    std::vector<float> cells(kGru ? 0 : static_cast<size_t>(rows * H));
    if (!kGru) std::copy(c0 + n0 * H, c0 + n1 * H, cells.begin());
    // finalOnly: h_t alternates between two (rows, H) buffers of this chunk instead of going to out.
    std::vector<float> pingPong(finalOnly ? static_cast<size_t>(2 * rows * H) : 0);
    const float* hp = h0 + n0 * H;
    int64_t hs = H;
    for (int64_t k = 0; k < s.steps; k++) {
      const int64_t t = lay.step(k);
      float* ho = finalOnly ? pingPong.data() + (k % 2) * rows * H : out + lay.row(t, n0) * H;
      const int64_t hos = finalOnly ? H : lay.rowStride * H;
      // Blocks of equal size (5 or 6 rows for 128, not 21 of 6 and a slow one of 2).
      const int64_t blocks = (rows + kMaxRows - 1) / kMaxRows;
      for (int64_t b = 0; b < blocks; b++) {
        const int64_t r0 = rows * b / blocks, R = rows * (b + 1) / blocks - r0;
        const BlockArgs a{&plan, x + lay.row(t, n0 + r0) * E, lay.rowStride * E, hp + r0 * hs, hs,
                          ho + r0 * hos, hos, kGru ? nullptr : cells.data() + r0 * H};
        blockFn<kGru>(isa, R)(a);
      }
      hp = ho;
      hs = hos;
    }
    for (int64_t r = 0; r < rows; r++) std::copy(hp + r * hs, hp + r * hs + H, hN + (n0 + r) * H);
    if (!kGru) std::copy(cells.begin(), cells.end(), cN + n0 * H);
  });
}

}  // namespace

void lstmSequence(const RecurrentShape& s, const float* gates, const float* w, const float* bias, const float* h0,
                  const float* c0, float* out) {
  const Layout lay = layoutOf(s);
  const int64_t H = s.hidden, G = 4 * H, P = lay.plane;
  const Isa isa = activeIsa();
  forwardSteps(s, lay, 4, w, h0, out, [&](int64_t n, int64_t t, int64_t tp, bool first, const float* hh) {
    const int64_t at = lay.row(t, n) * H;
    const float* cPrev = first ? c0 + n * H : out + P + lay.row(tp, n) * H;
    lstmRow(isa, H, gates + lay.row(t, n) * G, hh, bias, cPrev, out + at, out + P + at, out + 2 * P + at, out + 3 * P + at,
            out + 4 * P + at, out + 5 * P + at);
  });
}

void lstmSequenceBackward(const RecurrentShape& s, const float* g, const float* out, const float* w, const float* c0,
                          float* grads) {
  const Layout lay = layoutOf(s);
  const int64_t H = s.hidden, G = 4 * H, P = lay.plane;
  float* dh0 = grads + s.steps * s.batch * G;
  float* dc0 = dh0 + s.batch * H;  // the cell-state gradient reaching the current step, ends as d c0
  std::fill(dc0, dc0 + s.batch * H, 0.0f);
  const Isa isa = activeIsa();
  backwardSteps(s, lay, 4, w, dh0, grads, 0.0f, [&](int64_t n, int64_t t, int64_t tp, bool first, float* dh) {
    const int64_t at = lay.row(t, n) * H;
    LstmRow v{out + P + at, out + 2 * P + at, out + 3 * P + at, out + 4 * P + at, out + 5 * P + at,
              first ? c0 + n * H : out + P + lay.row(tp, n) * H,
              g + at, g + P + at, g + 2 * P + at, g + 3 * P + at, g + 4 * P + at, g + 5 * P + at};
    lstmRowBack(isa, H, &v, dh, dc0 + n * H, grads + lay.row(t, n) * G);
  });
}

void gruSequence(const RecurrentShape& s, const float* gates, const float* w, const float* biasIh, const float* bias,
                 const float* h0, float* out) {
  const Layout lay = layoutOf(s);
  const int64_t H = s.hidden, G = 3 * H, P = lay.plane;
  const Isa isa = activeIsa();
  forwardSteps(s, lay, 3, w, h0, out, [&](int64_t n, int64_t t, int64_t tp, bool first, const float* hh) {
    const int64_t at = lay.row(t, n) * H;
    const float* hp = first ? h0 + n * H : out + lay.row(tp, n) * H;
    gruRow(isa, H, gates + lay.row(t, n) * G, hh, biasIh, bias, hp, out + at, out + P + at, out + 2 * P + at,
           out + 3 * P + at, out + 4 * P + at);
  });
}

void gruSequenceBackward(const RecurrentShape& s, const float* g, const float* out, const float* w, const float* h0,
                         float* grads) {
  const Layout lay = layoutOf(s);
  const int64_t H = s.hidden, G = 3 * H, P = lay.plane;
  float* dHidden = grads + s.steps * s.batch * G;
  float* dh0 = dHidden + s.steps * s.batch * G;
  const Isa isa = activeIsa();
  // dh += d(hiddenGates_t) W_hh: gruRowBack has already put the direct part z * dh_t into dh.
  backwardSteps(s, lay, 3, w, dh0, dHidden, 1.0f, [&](int64_t n, int64_t t, int64_t tp, bool first, float* dh) {
    const int64_t at = lay.row(t, n) * H;
    GruRow v{out + P + at, out + 2 * P + at, out + 3 * P + at, out + 4 * P + at,
             first ? h0 + n * H : out + lay.row(tp, n) * H,
             g + at, g + P + at, g + 2 * P + at, g + 3 * P + at, g + 4 * P + at};
    gruRowBack(isa, H, &v, dh, grads + lay.row(t, n) * G, dHidden + lay.row(t, n) * G);
  });
}

}  // namespace lowbit

namespace lowbit {

void lstmInference(const RecurrentShape& s, int64_t E, bool finalOnly, const float* x, const float* wIh,
                   const float* wHh, const float* bias, const float* h0, const float* c0, float* out) {
  inferenceSequence<false>(s, E, finalOnly, x, wIh, wHh, bias, nullptr, h0, c0, out);
}

void gruInference(const RecurrentShape& s, int64_t E, bool finalOnly, const float* x, const float* wIh,
                  const float* wHh, const float* biasIh, const float* biasHh, const float* h0, float* out) {
  inferenceSequence<true>(s, E, finalOnly, x, wIh, wHh, biasIh, biasHh, h0, nullptr, out);
}

}  // namespace lowbit
