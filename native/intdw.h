// Depthwise int8 conv of the IntModel native executor (groups = C = OC: one kh x kw filter per
// channel). NHWC byte input (uint8 or int8), int8 weights, int32 accumulators
// sum_taps (x - zero) w per (position, channel) -- the same integers as im2col + the int8 GEMM, so
// the executor's existing output stages (requantize / sign, fused max pooling) give identical
// results. Channels lie in the vector lanes: the image is copied once per sample into a padded
// buffer (border = the zero point, channels padded to the vector block), each pair of taps is one
// int16 multiply-add (vpmaddwd) of the two taps' inputs interleaved against pre-interleaved
// weights; no VNNI. AVX-512: 32 channels per step; AVX2: 16; else scalar loops.
#pragma once
#include <cstdint>

namespace lowbit {

struct IntOp;

// Whether op is a depthwise conv the kernel takes (kind Conv, groups = C = OC > 1, byte input, any
// kernel size, stride, padding, dilation); then fills op->dw* from the (OC, kh kw) int8 weights w.
bool intDepthwisePrepare(IntOp* op, const int8_t* w);

// Bytes of the padded input buffer intDepthwisePad writes (plus readable slack).
int64_t intDepthwisePadBytes(const IntOp& op);

// The padded copy of one sample's input xs [H, W, C].
void intDepthwisePad(const IntOp& op, const uint8_t* xs, uint8_t* pad);

// int32 accumulators of output positions [p0, p1) (row-major over [OH, OW]) from the padded
// input: row p - p0 of `tile` (ldt = op.dwCp int32), channel c at column c (columns >= C: zero).
void intDepthwiseTile(const IntOp& op, const uint8_t* pad, int64_t p0, int64_t p1, int32_t* tile);

// "avx512", "avx2" or "scalar": the path intDepthwisePrepare chose.
const char* intDepthwisePathName(const IntOp& op);

}  // namespace lowbit
