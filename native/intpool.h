// The IntModel average pooling op (intmodel.h: IOpKind::AvgPool), scalar and vectorised.
//
//   out = z + round(sum over the window's in-range cells of (q - z 2^F), divided by kh kw 2^F)
//
// rounded half to even on the exact rational (src/runtime/ops.ts avgPoolInt): padded cells are the
// real 0 (they add nothing but count in the divisor). Every path gives its integers bit for bit.
#pragma once
#include <cstdint>

#include "intmodel.h"

namespace lowbit {

// The average pooling of n samples ([H, W, C] each, of type op.in: u8, s8 or int32) into int32
// [OH, OW, C]. Runs the AVX-512 or AVX2 kernel of activeIsa() where it is exact, else scalar code.
void intAvgPoolRun(const IntOp& op, const void* x, int64_t n, int32_t* out);

// Name of the kernel intAvgPoolRun uses for op: "avx512", "avx2" or "scalar".
const char* intAvgPoolPathName(const IntOp& op);

}  // namespace lowbit
