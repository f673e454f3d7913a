// The IntModel add op's arithmetic (intmodel.h: IOpKind::Add), scalar and vectorised.
//
//   out[i] = clamp(z + addRescaled(a[i] - z_a, M_a, b[i] - z_b, M_b, n), lo, hi)
//
// addRescaled (src/runtime/intmodel.ts) rounds the exact sum t = da M_a + db M_b once by 2^-n,
// half away from zero. Every path here gives its integers bit for bit.
#pragma once
#include <cstdint>

#include "intmodel.h"

namespace lowbit {

// The add of `count` values: a of type op.in, b of op.in2, out of op.out (u8, s8 or int32 each),
// with op's zero points, multipliers, shift, output zero point and range. Runs the AVX-512 or AVX2
// kernel of activeIsa() where it is exact, else the scalar code.
void intAddRun(const IntOp& op, const void* a, const void* b, int64_t count, void* out);

// Name of the add kernel intAddRun uses: "avx512", "avx2" or "scalar".
const char* intAddPathName();

}  // namespace lowbit
