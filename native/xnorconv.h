// XNOR-popcount for binary convs with padding (IntOp::xnor): a conv whose input is +-1 (a sign
// stage or a sign add) and whose weights are all +-1 runs on bit rows instead of the +-1 int8 GEMM.
//
// Per output position the im2col row holds one bit per (ky, kx, c) tap, bit 1 = +1 (the weights'
// order, intmodel.h); the binary GEMM gives K - 2 popcount(a xor w) = sum over all taps of x w with
// every padded tap read as -1 (its bit is 0). A padded cell is 0 in the reference (its input is
// centred at zero point 0), so the accumulator of a border position is corrected by adding back
// sum_c w[o, ky, kx, c] for each padded tap (per-tap weight sums kept per output channel):
//   acc[p, o] = K - 2 popcount(a_p xor w_o) + sum_{padded taps t of p} tapSum[o, t]
// which equals the int8 GEMM's sum_k x_k w[o, k] exactly. Interior positions need no correction.
#pragma once
#include <cstdint>

#include "intmodel.h"

namespace lowbit {

// Chooses the XNOR path for a conv op whose input is marked +-1 (IntOp::signInput) when it has one
// group, an int8 input, and every weight of `w` (OC, K) in the (ky, kx, c) order is +-1: packs the
// weight bits (and the popcount panels) and the per-tap weight sums. Leaves op->xnor false otherwise.
// `force` false: only where the int8 GEMM is the scalar one. Measured on the Bi-Real ResNet-8
// (bench/binary/native.ts, docs/binary.md), XNOR made the whole plan 1.2x slower than the int8
// GEMM with AVX-512 VNNI, about equal with AVX2, 2x faster with the scalar kernels: at these
// channel counts (16..64, K = 144..576) the im2col gather costs as much as the VNNI GEMM.
void intPrepareXnorConv(IntOp* op, const int8_t* w, bool force);

// Runs an XNOR conv op on n samples x (n, H, W, C) int8 +-1 (a value >= 0 counts as +1) into out
// (the op's output stage, as the GEMM path writes it).
void intXnorConvRun(const IntOp& op, const int8_t* x, int64_t n, void* out);

}  // namespace lowbit
