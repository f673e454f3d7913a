// The IntModel add with a sign output (intmodel.h: IOpKind::Add, outMode Sign), scalar and vectorised.
//
//   out[i] = +1 if (a[i] - z_a) M_a + (b[i] - z_b) M_b >= 0 else -1      (int8)
//
// The exact sign of the integer sum, as signOfSum in src/runtime/intmodel.ts (sign(0) = +1): a
// binary ResNet's residual sum feeding the sign input of the next binary conv.
#pragma once
#include <cstdint>

#include "intmodel.h"

namespace lowbit {

// The sign add of `count` values: a of type op.in, b of op.in2 (u8, s8 or int32 each), out int8
// +-1, with op's zero points (zero, zero2) and multipliers (multA, multB, |M| <= 2^31 - 1). Runs the
// AVX-512 or AVX2 kernel of activeIsa(), falling back to the scalar code for blocks whose
// differences a - z_a, b - z_b leave int32.
void intSignAddRun(const IntOp& op, const void* a, const void* b, int64_t count, int8_t* out);

}  // namespace lowbit
