// One TransformerLM step over a KV cache in one call (see decode-step.h). Built from the existing
// kernels (transformer.h's layerNormForward, geluForward, decodeAttention; gemm.h's products), so
// each stage computes what the composed path's primitive computes; only the glue is new: the
// intermediates stay in per-thread scratch, the KV rows are copied in place and the residual adds
// go straight into the running activations.
#include "decode-step.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu.h"
#include "gemm.h"
#include "scratch.h"
#include "threadpool.h"
#include "transformer.h"

namespace lowbit {

namespace {

// Up to this many rows a linear layer runs as dot products of contiguous rows (sgemmDotNT, no
// packing of the weight); above it as the packed SGEMM. Measured once with a temporary switch
// (not kept) on the CLI-sized model (E = 80, V = 2000), greedy generate, tokens per CPU-second on
// one thread, busy machine (load ~11, so rough): batch 1 ~18k dot vs ~12k packed; batch 16 ~60-67k
// dot vs ~73-79k packed (packing the head's 2000 x 80 weight pays at 16 rows).
constexpr int64_t kDotRows = 4;

// out (rows, n) = [out if accumulate] + x (rows, k) . W (n, k)^T + b (n; may be null).
void linearRows(const float* x, int64_t rows, int64_t k, const float* W, const float* b, int64_t n, float* out, bool accumulate) {
  if (!accumulate) {
    for (int64_t r = 0; r < rows; r++) {
      if (b) std::memcpy(out + r * n, b, static_cast<size_t>(n) * sizeof(float));
      else std::memset(out + r * n, 0, static_cast<size_t>(n) * sizeof(float));
    }
  }
  // sgemmDotNT's tiles are AVX-512; below it the packed SGEMM has the vector kernels.
  if (rows <= kDotRows && activeIsa() == Isa::Avx512) {
    // Column blocks of 64 outputs on the pool (inline when the product is small).
    const int64_t blocks = (n + 63) / 64;
    parallelFor(blocks, 2.0 * static_cast<double>(rows * n * k), [&](int64_t b0, int64_t b1) {
      const int64_t j0 = b0 * 64, j1 = std::min(n, b1 * 64);
      sgemmDotNT(rows, j1 - j0, k, x, k, W + j0 * k, k, 1.f, out + j0, n);
    });
  } else {
    GemmArgs g;
    g.transB = true;
    g.M = rows;
    g.N = n;
    g.K = k;
    g.A = x;
    g.lda = k;
    g.B = W;
    g.ldb = k;
    g.beta = 1.f;
    g.C = out;
    g.ldc = n;
    sgemm(g);
  }
  if (accumulate && b) {
    for (int64_t r = 0; r < rows; r++) {
      float* o = out + r * n;
      for (int64_t j = 0; j < n; j++) o[j] += b[j];
    }
  }
}

thread_local ScratchBuffer tX, tA, tQkv, tAtt, tH;

}  // namespace

void floatTfDecode(const FloatTfModel& m, int64_t batch, int64_t steps, int64_t past, int64_t capacity, const int32_t* ids,
                   float* logits) {
  const int64_t E = m.E, rows = batch * steps;
  int64_t F = 1;
  for (int64_t i = 0; i < m.numBlocks; i++) F = std::max(F, m.blocks[i].F);
  float* x = tX.get(static_cast<size_t>(rows * E));      // the residual stream
  float* a = tA.get(static_cast<size_t>(rows * E));      // a LayerNorm's output
  float* qkv = tQkv.get(static_cast<size_t>(rows * 3 * E));
  float* att = tAtt.get(static_cast<size_t>(rows * E));  // attention context
  float* h = tH.get(static_cast<size_t>(rows * F));      // MLP hidden
  // x = tokens[id] + positions[past + s]
  for (int64_t bi = 0; bi < batch; bi++) {
    for (int64_t s = 0; s < steps; s++) {
      const int64_t r = bi * steps + s;
      const float* t = m.tokens + static_cast<int64_t>(ids[r]) * E;
      const float* p = m.positions + (past + s) * E;
      float* xr = x + r * E;
      for (int64_t c = 0; c < E; c++) xr[c] = t[c] + p[c];
    }
  }
  for (int64_t li = 0; li < m.numBlocks; li++) {
    const FloatTfBlock& b = m.blocks[li];
    layerNormForward(x, b.ln1w, b.ln1b, a, rows, E, b.eps1);
    linearRows(a, rows, E, b.qkvW, b.qkvB, 3 * E, qkv, false);
    // The new positions' keys and values into the cache (rows past .. past + steps - 1).
    for (int64_t bi = 0; bi < batch; bi++) {
      for (int64_t s = 0; s < steps; s++) {
        const float* src = qkv + (bi * steps + s) * 3 * E;
        const int64_t dst = (bi * capacity + past + s) * E;
        std::memcpy(b.keys + dst, src + E, static_cast<size_t>(E) * sizeof(float));
        std::memcpy(b.values + dst, src + 2 * E, static_cast<size_t>(E) * sizeof(float));
      }
    }
    decodeAttention(qkv, b.keys, b.values, att, batch, steps, capacity, E, m.heads, past);
    linearRows(att, rows, E, b.projW, b.projB, E, x, true);  // x += proj(att)
    layerNormForward(x, b.ln2w, b.ln2b, a, rows, E, b.eps2);
    linearRows(a, rows, E, b.fc1W, b.fc1B, b.F, h, false);
    const int64_t hn = rows * b.F;
    if (m.activation == FloatTfActivation::Relu) {
      for (int64_t i = 0; i < hn; i++) h[i] = h[i] <= 0.f ? 0.f : h[i];  // NaN stays NaN, as relu
    } else {
      geluForward(h, h, hn, m.activation == FloatTfActivation::GeluTanh);
    }
    linearRows(h, rows, b.F, b.fc2W, b.fc2B, E, x, true);  // x += fc2(act(fc1(ln2(x))))
  }
  layerNormForward(x, m.lnFw, m.lnFb, a, rows, E, m.epsF);
  linearRows(a, rows, E, m.headW, m.headB, m.V, logits, false);
}

}  // namespace lowbit
