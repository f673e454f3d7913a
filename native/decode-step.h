// A float32 pre-LayerNorm Transformer LM step over a KV cache in one call (the inference path of
// TransformerLM.forwardCached; the specification is the composed path of src/nn/models/transformer-lm.ts).
#pragma once
#include <cstdint>

namespace lowbit {

// Weights of one block, PyTorch layouts: ln (E), qkvW (3E, E) rows [W_q; W_k; W_v], projW (E, E),
// fc1W (F, E), fc2W (E, F); a bias pointer may be null (no bias). keys / values (batch, capacity, E)
// are the block's KV cache, written at rows past .. past + steps - 1.
struct FloatTfBlock {
  const float *ln1w = nullptr, *ln1b = nullptr, *qkvW = nullptr, *qkvB = nullptr, *projW = nullptr, *projB = nullptr;
  const float *ln2w = nullptr, *ln2b = nullptr, *fc1W = nullptr, *fc1B = nullptr, *fc2W = nullptr, *fc2B = nullptr;
  float *keys = nullptr, *values = nullptr;
  float eps1 = 1e-5f, eps2 = 1e-5f;
  int64_t F = 0;  // MLP width
};

enum class FloatTfActivation { GeluErf = 0, GeluTanh = 1, Relu = 2 };

struct FloatTfModel {
  int64_t E = 0, heads = 0, V = 0, maxContext = 0;
  FloatTfActivation activation = FloatTfActivation::GeluErf;
  const float* tokens = nullptr;     // (V, E)
  const float* positions = nullptr;  // (maxContext, E)
  const FloatTfBlock* blocks = nullptr;
  int64_t numBlocks = 0;
  const float *lnFw = nullptr, *lnFb = nullptr;
  float epsF = 1e-5f;
  const float* headW = nullptr;  // (V, E): the head Linear's weight, or the token table when tied
  const float* headB = nullptr;  // (V) or null
};

// ids (batch, steps) at positions past .. past + steps - 1 (ids in [0, V), past + steps <= capacity <= maxContext,
// checked by the caller) -> logits (batch, steps, V); every block's cache gets the new keys and values.
// x = tokens[id] + positions[p]; per block x += proj(attn(ln1(x))); x += fc2(act(fc1(ln2(x))));
// logits = head(lnF(x)). Intermediates live in per-thread scratch.
void floatTfDecode(const FloatTfModel& m, int64_t batch, int64_t steps, int64_t past, int64_t capacity, const int32_t* ids,
                   float* logits);

}  // namespace lowbit
