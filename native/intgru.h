// The integer-only GRU cell of quant.irnn (src/quant/irnn/intgru.ts is the specification: its
// TypeScript cell `gruCellUpdate` is the reference this kernel equals bit for bit).
//
// One step for one sequence, gate rows in PyTorch's order r, z, n, all integers (int32 accumulators
// accX = W_ih x, accH = W_hh h):
//   gx = clamp(rq(accX; Mih, nih), +-2^24),  gh = clamp(rq(accH; Mhh, nhh), +-2^24)    Q3.12 (3H rows)
//   r, z = PWL_sigmoid(clamp16(gx + gh + b))                  (rows r and z)           Q0.15
//   hn   = clamp16(gh_n + b_hn)                                                        Q3.12
//   n    = PWL_tanh(clamp16(gx_n + b_n + roundShift(r hn, 15)))                        Q0.15
//   h'   = clamp(rq(roundShift((2^15 - z) n, 15); Mout, nout) + roundShift(z h, 15), -127, 127)
// rq, roundShift and PWL as in irnn.h (rq rounds half away from zero, roundShift is a floor).
#pragma once
#include <cstdint>
#include <string>

#include "irnn.h"

namespace lowbit {

struct IntGruCell {
  int64_t hidden = 0;
  // Per gate row (3H, gates r, z, n): requantization of the two accumulators; bias (Q3.12: b_ih + b_hh
  // on the r and z rows, b_in on the n rows).
  const int32_t *multIh = nullptr, *shiftIh = nullptr, *multHh = nullptr, *shiftHh = nullptr, *bias = nullptr;
  // Per hidden unit (H): b_hn, Q3.12.
  const int32_t* biasHn = nullptr;
  int32_t outMult = 0, outShift = 0;
  IntPwlTable sigmoid, tanh;
};

// Why the kernel cannot run these parameters exactly (nullptr when it can): every shift of the two
// accumulator requantizations and of the output requantization must lie in [10, 62] (then every
// product is exact in int64), the tables must have strictly increasing knots, shifts in [1, 40] and
// an int16 output clamp. Any int32 biases are exact.
const char* intGruCellProblem(const IntGruCell& p);

// The builds of the cell (intgru.cc): the int64 row loop compiled without AVX2 ("scalar") and with it
// ("avx2-loop"), 8 hidden units per AVX2 vector ("avx2"), 16 per AVX-512 vector ("avx512"). All give the
// same integers.
enum class IntGruPath { Scalar, Avx2Loop, Avx2, Avx512 };

// The path the active ISA (LOWBIT_ISA may lower it) and these tables take: the fastest that runs them.
// Tables the vector PWL cannot hold (more than 16 segments, products past int32) take "avx2-loop" on
// AVX2 and AVX-512 machines.
IntGruPath intGruBestPath(const IntGruCell& p);

// Why `path` cannot run these parameters here (nullptr when it can): a path needs at most the active
// ISA, and the vector paths need tables the vector PWL holds. For benchmarks and tests that time or
// check a lower path than the best.
const char* intGruPathProblem(const IntGruCell& p, IntGruPath path);

const char* intGruPathName(IntGruPath path);
// The path of that name ("avx512", "avx2", "avx2-loop", "scalar"); false when there is none.
bool intGruPathFromName(const std::string& name, IntGruPath* path);

// The elementwise part of one step for `batch` sequences on `path` (one that runs: intGruPathProblem):
// accX and accH (batch, 3H) int32, h (batch, H) int8 the previous state, hOut (batch, H) int8 the new
// one (must not alias h). Runs on the pool when the batch is large.
void intGruCellStep(const IntGruCell& p, IntGruPath path, int64_t batch, const int32_t* accX, const int32_t* accH, const int8_t* h,
                    int8_t* hOut);

// A whole sequence: x (steps, batch, input) int8; W_ih (3H rows, `input` columns) and W_hh (3H rows, H
// columns) packed by packInt8 with their rowSums; h0 (batch, H); out (steps, batch, H) int8 h of every
// step. Blocks of 16 sequences per pool task, each through every step: the serial int8 GEMM for W_ih x
// and W_hh h on the block's rows, then the cell on `path` (the rows intGruCellStep runs).
void intGruSequence(const IntGruCell& p, IntGruPath path, int64_t steps, int64_t batch, int64_t input, const int8_t* x,
                    const int8_t* packedIh, const int32_t* rowSumsIh, const int8_t* packedHh, const int32_t* rowSumsHh,
                    const int8_t* h0, int8_t* out);

}  // namespace lowbit
