// The integer-only LSTM cell of quant.irnn (src/quant/irnn/intlstm.ts is the specification: its
// TypeScript cell is the reference this kernel equals bit for bit).
//
// One step for one sequence, all integers (int32 accumulators accX = W_ih x, accH = W_hh h):
//   z_r  = clamp16(rq(accX_r; Mih_r, nih_r) + rq(accH_r; Mhh_r, nhh_r) + b_r)         Q3.12
//   i, f, g, o = PWL_sigmoid, PWL_sigmoid, PWL_tanh, PWL_sigmoid (z)                    Q0.15
//   c'   = clamp16(roundShift(f c, 15) + roundShift(i g, 19))                           Q4.11
//   h'   = clamp(rq(roundShift(o PWL_tanh(2 c'), 15); Mout, nout), -127, 127)           int8
// rq(a; M, n) = round(a M 2^-n) half away from zero (src/runtime/requantize.ts), roundShift(v, s) =
// floor((v + 2^(s-1)) / 2^s), PWL(z) = clamp(values[k] + roundShift((v - knots[k]) slopes[k], shift),
// outMin, outMax) with v = z clamped to [knots[0], knots[n]] and k the last segment with knots[k] <= v.
#pragma once
#include <cstdint>

namespace lowbit {

struct IntPwlTable {
  const int32_t* knots = nullptr;   // n + 1, strictly increasing
  const int32_t* values = nullptr;  // n
  const int32_t* slopes = nullptr;  // n
  int32_t n = 0;
  int32_t shift = 0;  // slopeFrac + inputFrac - outputFrac
  int32_t outMin = 0, outMax = 0;
};

struct IntLstmCell {
  int64_t hidden = 0;
  // Per gate row (4H, gates in the order i, f, g, o): requantization of the two accumulators, bias (Q3.12).
  const int32_t *multIh = nullptr, *shiftIh = nullptr, *multHh = nullptr, *shiftHh = nullptr, *bias = nullptr;
  int32_t outMult = 0, outShift = 0;
  IntPwlTable sigmoid, tanh;
};

// Why the kernel cannot run these parameters exactly (nullptr when it can): every shift of the
// accumulator and output requantizations must lie in [10, 62] (then every intermediate is exact in
// int64 and in the reference's doubles), the tables must have strictly increasing knots, shifts in
// [1, 40] and an int16 output clamp.
const char* intLstmCellProblem(const IntLstmCell& p);

// The elementwise part of one step for `batch` sequences: accX and accH (batch, 4H) int32, c (batch, H)
// int16 updated in place, h (batch, H) int8 written. Runs on the pool when the batch is large.
void intLstmCellStep(const IntLstmCell& p, int64_t batch, const int32_t* accX, const int32_t* accH, int16_t* c,
                     int8_t* h);

// A whole sequence: x (steps, batch, input) int8; W_ih (4H rows, `input` columns) and W_hh (4H rows, H
// columns) packed by packInt8 with their rowSums; h0 (batch, H); c (batch, H) in: initial cell, out:
// final cell; out (steps, batch, H) int8 h of every step. Blocks of 16 sequences per pool task, each
// through every step: the serial int8 GEMM for W_ih x and W_hh h on the block's rows, then the cell.
void intLstmSequence(const IntLstmCell& p, int64_t steps, int64_t batch, int64_t input, const int8_t* x,
                     const int8_t* packedIh, const int32_t* rowSumsIh, const int8_t* packedHh, const int32_t* rowSumsHh,
                     const int8_t* h0, int16_t* c, int8_t* out);

// The cell path the active ISA and these tables take: "avx512", "avx2" (vectors of 8 rows), "avx2-loop"
// (the int64 row loop compiled for AVX2: tables the vector PWL cannot hold) or "scalar".
const char* intLstmPathName(const IntLstmCell& p);

}  // namespace lowbit
