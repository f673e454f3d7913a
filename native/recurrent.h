// Fused LSTM / GRU sequences: the lstmSequence, gruSequence primitives and their backward passes
// (definitions and layouts in src/backend/primitives.ts; the reference kernels in
// src/backend/reference/recurrent.ts are the specification).
#pragma once
#include <cstdint>

namespace lowbit {

// L steps, N sequences, hidden size H. A per-step tensor of width W is (L, N, W) row-major, or
// (N, L, W) when batchFirst; outputs are (parts, L, N, H) in the same row order. reverse runs the
// recurrence from step L - 1 down to 0.
struct RecurrentShape {
  int64_t steps = 0, batch = 0, hidden = 0;
  bool batchFirst = false, reverse = false;
};

// gates (L, N, 4H) = W_ih x, w (4H, H), bias (4H) = b_ih + b_hh, h0 and c0 (N, H) -> out (6, L, N, H):
// h, c, i, f, g, o per step.
void lstmSequence(const RecurrentShape& s, const float* gates, const float* w, const float* bias, const float* h0,
                  const float* c0, float* out);
// g and out (6, L, N, H), w (4H, H), c0 (N, H) -> grads [d gates (L, N, 4H) | d h0 (N, H) | d c0 (N, H)].
void lstmSequenceBackward(const RecurrentShape& s, const float* g, const float* out, const float* w, const float* c0,
                          float* grads);
// gates (L, N, 3H) = W_ih x, w (3H, H), biasIh = b_ih and bias = b_hh (3H), h0 (N, H) -> out (5, L, N, H):
// h, r, z, n, hn per step.
void gruSequence(const RecurrentShape& s, const float* gates, const float* w, const float* biasIh, const float* bias,
                 const float* h0, float* out);
// g and out (5, L, N, H), w (3H, H), h0 (N, H) ->
// grads [d gates (L, N, 3H) | d hiddenGates (L, N, 3H) | d h0 (N, H)].
void gruSequenceBackward(const RecurrentShape& s, const float* g, const float* out, const float* w, const float* h0,
                         float* grads);

}  // namespace lowbit

namespace lowbit {

// Inference-only forward of one LSTM layer-direction, input projection included, no gate
// activations kept: x (L, N, E) per-step rows (layout as above), wIh (4H, E), wHh (4H, H),
// bias (4H) = b_ih + b_hh, h0 and c0 (N, H) -> out [h per step (L, N, H) | h_N (N, H) | c_N (N, H)]
// where h_N, c_N are the states at the step the recurrence ends on; with finalOnly, out is
// [h_N | c_N] (the per-step h stay in per-thread scratch).
void lstmInference(const RecurrentShape& s, int64_t E, bool finalOnly, const float* x, const float* wIh,
                   const float* wHh, const float* bias, const float* h0, const float* c0, float* out);
// The same for a GRU: wIh (3H, E), wHh (3H, H), biasIh = b_ih, biasHh = b_hh (3H), h0 (N, H) ->
// out [h per step (L, N, H) | h_N (N, H)] ([h_N] with finalOnly).
void gruInference(const RecurrentShape& s, int64_t E, bool finalOnly, const float* x, const float* wIh,
                  const float* wHh, const float* biasIh, const float* biasHh, const float* h0, float* out);

}  // namespace lowbit
