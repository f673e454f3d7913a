// Reductions over any axes, argmax, gather / scatterAdd, strided copies (broadcastTo, slice,
// pad, concat), casts and the quantization-estimator forwards, on 4-byte element buffers.
#pragma once
#include <cstdint>

namespace lowbit {

// x is viewed as groups[0..n) (row-major, each > 1 after merging), reduced[g] saying whether
// group g is summed / maxed away; y holds the kept groups in order. Sums accumulate in float64.
void reduceSum(const float* x, float* y, const int64_t* groups, const bool* reduced, int n);
// Max with NaN propagation (a NaN anywhere in the reduced set gives NaN); empty sets give -inf.
void reduceMax(const float* x, float* y, const int64_t* groups, const bool* reduced, int n);

// x (outer, len, inner) -> y (outer, inner): index of the first maximum along len.
void argmaxAxis(const float* x, int32_t* y, int64_t outer, int64_t len, int64_t inner);

// x (outer, len, inner), idx (m) -> y (outer, m, inner). Returns false (nothing written past the
// first bad row) when an index is outside [0, len).
bool gatherAxis(const uint32_t* x, const int32_t* idx, uint32_t* y, int64_t outer, int64_t len, int64_t inner,
                int64_t m);
// y (outer, len, inner) += u (outer, m, inner) scattered at idx along len (y pre-zeroed).
bool scatterAddAxis(const float* u, const int32_t* idx, float* y, int64_t outer, int64_t len, int64_t inner,
                    int64_t m);

// dst[dstOff + sum_d i_d * dstStrides[d]] = src[srcOff + sum_d i_d * srcStrides[d]] over the
// index box `shape` (rank <= 8); a source stride 0 repeats (broadcast).
void copyStrided(const uint32_t* src, int64_t srcOff, const int64_t* srcStrides, uint32_t* dst, int64_t dstOff,
                 const int64_t* dstStrides, const int64_t* shape, int rank);
void fill32(uint32_t* dst, uint32_t value, int64_t n);

// float32 <-> int32 (float -> int truncates and wraps like JavaScript's ToInt32).
void castF32ToI32(const float* x, int32_t* y, int64_t n);
void castI32ToF32(const int32_t* x, float* y, int64_t n);

// (clamp(roundHalfEven(x / s) + z, qmin, qmax) - z) * s in float64, like the reference.
// s and z are read at (i / inner) % mid with their own (mid, inner) (mid = 1: per tensor).
void fakeQuantize(const float* x, const float* s, int64_t sMid, int64_t sInner, const float* z, int64_t zMid,
                  int64_t zInner, float* y, int64_t n, double qmin, double qmax);
// One part of fakeQuantize's gradient (see the fakeQuantizeGrad primitive): part 0 = x with the
// plain STE, 1 = x clipped, 2 = scale (LSQ), 3 = zero point. g and y have x's shape.
void fakeQuantizeGrad(const float* g, const float* x, const float* s, int64_t sMid, int64_t sInner, const float* z,
                      int64_t zMid, int64_t zInner, float* y, int64_t n, double qmin, double qmax, int part);
// Part 2 (scale) or 3 (zero point) of fakeQuantizeGrad summed to its operand: y[p] (p < mid of
// that operand) = float64 sum of the float32 terms of the elements reading parameter p. Fixed
// chunks of partial sums added in order: the result does not depend on the thread count.
void fakeQuantizeGradSum(const float* g, const float* x, const float* s, int64_t sMid, int64_t sInner, const float* z,
                         int64_t zMid, int64_t zInner, float* y, int64_t n, double qmin, double qmax, int part);
// Parts 1 (x, clipped; xPart 1) or 0 (x, plain STE; xPart 0) and 2 (scale, summed as
// fakeQuantizeGradSum does) in one pass: gx has x's shape, gs holds sMid sums.
void fakeQuantizeGradXScale(const float* g, const float* x, const float* s, int64_t sMid, int64_t sInner, const float* z,
                            int64_t zMid, int64_t zInner, float* gx, float* gs, int64_t n, double qmin, double qmax, int xPart);
void roundHalfEven(const float* x, float* y, int64_t n);
void signPlusMinus(const float* x, float* y, int64_t n);  // x >= 0 ? 1 : -1

}  // namespace lowbit
