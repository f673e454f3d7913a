// Fused float32 Transformer layers: LayerNorm, GELU and multi-head self-attention on a fused Q/K/V
// projection, forward and backward (the layerNorm / gelu / attention primitives and their backward
// primitives; the specification is src/backend/reference/transformer.ts).
#pragma once
#include <cstdint>

namespace lowbit {

// x, y (rows, width); w, b (width): y = (x - mean) * rstd * w + b per row, rstd = 1 / sqrt(var + eps)
// (row statistics in double).
void layerNormForward(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t width, float eps);

// g, x, dx (rows, width); w, dw, db (width): layerNorm's gradients (mean and rstd recomputed).
// dw and db are summed over fixed blocks of rows and then over the blocks in order, so the result
// does not depend on the thread count.
void layerNormBackward(const float* g, const float* x, const float* w, float* dx, float* dw, float* db, int64_t rows,
                       int64_t width, float eps);

// y (n) = GELU(x (n)): tanh = false the erf form x * Phi(x), true the tanh form x * sigmoid(2u).
// Polynomial exp / erfc (relative error ~ 1e-6 of the result, or 1e-7 absolute near zero crossings).
void geluForward(const float* x, float* y, int64_t n, bool tanh);
// dx (n) = g (n) * GELU'(x (n)).
void geluBackward(const float* g, const float* x, float* dx, int64_t n, bool tanh);

// qkv (batch, length, 3 * embed), out (batch, length, embed): per batch row and head h
// (d = embed / heads) out[:, h d .. (h + 1) d] = softmax(Q_h K_h^T / sqrt(d) + causal mask) V_h.
void attentionForward(const float* qkv, float* out, int64_t batch, int64_t length, int64_t embed, int64_t heads,
                      bool causal);
// g (batch, length, embed), dqkv (batch, length, 3 * embed): the gradient of sum(g * attention(qkv))
// with respect to qkv (the attention weights recomputed).
void attentionBackward(const float* g, const float* qkv, float* dqkv, int64_t batch, int64_t length, int64_t embed,
                       int64_t heads, bool causal);

// Decoding with a KV cache: qkv (batch, steps, 3 * embed) (only the Q third read), keys and values
// (batch, capacity, embed) holding positions 0 .. past + steps - 1 -> out (batch, steps, embed): query s
// (position past + s) attends to the cache rows 0 .. past + s, per head as attentionForward (causal).
void decodeAttention(const float* qkv, const float* keys, const float* values, float* out, int64_t batch,
                     int64_t steps, int64_t capacity, int64_t embed, int64_t heads, int64_t past);

// x (rows, classes), targets (rows) -> loss (rows) = logsumexp(row) - row[target]; false (nothing
// written) when a target is outside [0, classes).
bool crossEntropyForward(const float* x, const int32_t* targets, float* loss, int64_t rows, int64_t classes);
// g (rows), x (rows, classes), targets (rows) -> dx (rows, classes) = g (softmax(row) - onehot(target)).
bool crossEntropyBackward(const float* g, const float* x, const int32_t* targets, float* dx, int64_t rows, int64_t classes);

}  // namespace lowbit
