// The head of the integer next-word LM (src/cli/lm-irnn.ts, IntNextWordModel.logits): int8 h (M, K)
// times int8 per-row weights (N, K, packed by packInt8) with int32 accumulators, then per logit
//   out[m, n] = float32(((double) acc[m, n] * (double) scale[n]) * hiddenScale + (double) bias[n])
// in that order (the TypeScript loop's double arithmetic, no fused multiply-add), rounded once to
// float32. Rows are split over the pool; each task keeps its accumulators in a reused buffer.
#pragma once
#include <cstdint>

namespace lowbit {

void intLmHead(int64_t M, int64_t N, int64_t K, const int8_t* h, const int8_t* packed, const int32_t* rowSums,
               const float* scale, const float* bias, double hiddenScale, float* out);

}  // namespace lowbit
