// Native executor of an IntModel (src/runtime/intmodel.ts): the whole integer forward pass in one
// call, bit-identical to the TypeScript reference executor.
//
// The plan is a list of ops (a chain, or a DAG with value slots) compiled by the TS side
// (src/runtime/native-plan.ts). Activations between ops live in NHWC order (per sample: [H, W, C],
// or [F] after a flatten), as u8 / s8 bytes, int32, packed sign bits (rows of ceil(F / 64) words, bit 1 = +1) or float32 (the logits).
// A batch is split into chunks of samples, one pool task per chunk, and each task runs the whole
// plan on its chunk with per-thread scratch buffers (no allocation once they have grown).
//
// Arithmetic (the same as the TS reference, see intmodel.ts):
//   quantize:   q = clamp(roundHalfEven(x / s) + z, qmin, qmax) (double division), or ±1 (x >= 0)
//   conv/linear: acc[c] = sum_k (x_k - z_x) w[c, k] (int32), im2col with padding = z_x
//   requantize: clamp(round((acc 2^k + bias[c]) M0[c] 2^-n[c]) + z, lo, hi), one rounding of the
//               exact product, half away from zero
//   sign:       +1 if d[c] acc >= t[c] else -1
//   dequantize: y = float(double(acc) S[c] + double(B[c]))
//   per-group linear: acc replaced by the exact int64 A[c] = sum_g r[c, g] acc[c, g] (see IntOp::groupSize)
//   max / average pooling and clamps as ops.ts.
//   add:        clamp(z + addRescaled(a - z_a, M_a, b - z_b, M_b, n), lo, hi) (intmodel.ts: one
//               rounding of the exact sum, half away from zero, mirroring its double fast path;
//               vector kernels in intadd.cc)
//   permute:    out[p] = in[gather[p]] per sample (puts an add's second input into the first one's
//               layout when they differ, e.g. a flattened NHWC map and a Linear output)
//
// Values live in slots (IntOp::src / src2 / dst): src = -1 is the model input x, the last op writes
// the model output. A plan built without slots (IntPlan::slots false) is a chain: intPlanFinish
// gives op i the input slot (i - 1) % 2 and the output slot i % 2.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lowbit {

struct Conv3x3Plan;  // conv3x3.h

enum class IType : int32_t { U8 = 0, S8 = 1, I32 = 2, Bits = 3, F32 = 4 };
enum class IOpKind : int32_t { Quantize = 0, Conv = 1, Linear = 2, MaxPool = 3, AvgPool = 4, Clamp = 5, Add = 6, Permute = 7 };
enum class IOutMode : int32_t { Requantize = 0, Sign = 1, Dequantize = 2 };

struct IntOp {
  IOpKind kind = IOpKind::Quantize;
  IType in = IType::F32, out = IType::F32;
  // value slots: input, second input (add), output (-1: the model input / the model output)
  int32_t src = -1, src2 = -1, dst = -1;
  // add: type and zero point of the second input (the first one's is `zero`), multipliers, shift
  IType in2 = IType::F32;
  int32_t zero2 = 0, addShift = 0;
  int64_t multA = 0, multB = 0;
  // Per-sample input [H, W, C] and output [OH, OW, OC] (a flat vector is H = W = 1).
  int64_t C = 0, H = 0, W = 0, OC = 0, OH = 0, OW = 0;
  // Window geometry (conv, pooling).
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, groups = 1;
  // quantize
  double scale = 1;
  bool sign = false;
  int32_t qmin = 0, qmax = 0;
  // layer input zero point (0 for sign / bits inputs); pooling zero point; quantize zero point
  int32_t zero = 0;
  // layer: K per group (conv: (C / groups) kh kw, in (ky, kx, c) order), packed weights per group
  int64_t K = 0, packedStride = 0;
  std::vector<int8_t> packed;
  std::vector<int32_t> rowSums;
  std::vector<uint64_t> wbits, wpanels;  // binary weights with a bits input (and of an xnor conv)
  // conv: the input is +-1 (a sign stage or sign add feeds it; plan meta[32] = 1); with +-1 weights
  // it runs XNOR-popcount (xnorconv.h; intPrepareXnorConv): wbits / wpanels and per (o, tap) weight sums
  bool signInput = false, xnor = false;
  std::vector<int32_t> xnorTapSums;
  // direct one-input-channel conv (intPrepareDirectConv): weights as 32-bit words [o][g] (taps
  // 4 g .. 4 g + 3 in (ky, kx) order), per group g a source mode and byte permute tables (128 bytes,
  // two 64-bit masks) that spread the group's taps of 16 positions over the int32 lanes
  bool direct = false;
  std::vector<int32_t> wdirect;
  std::vector<uint8_t> directIdx, directMode;
  std::vector<uint64_t> directMask;
  // AMX (amx.h; set by intPrepareAmx): weight tiles per group (amxStride bytes each) and the column
  // bias negZero * rowSums[c] per group, padded to amxPaddedN(OC / groups) columns
  bool amx = false;
  bool amxImplicit = false;  // conv: activation tiles read from the input (amxConvImplicit), no im2col
  // conv with K <= 64 (e.g. one input channel): activation tiles gathered from a padded copy of the
  // input by byte permutes (amxConvGather; tables from amxGatherTables), weights as packAmx
  bool amxGather = false;
  std::vector<uint8_t> gatherIdx;
  std::vector<uint64_t> gatherMasks;
  int64_t amxStride = 0;
  std::vector<int8_t> amxPacked;
  std::vector<int32_t> colBias;
  // A max pooling fused into this conv (intPlanFuse): the requantization is monotone in the
  // accumulator (non-decreasing, non-increasing when M0 < 0), so pooling the int32 accumulators
  // (max, or min for M0 < 0) and requantizing the pooled ones gives the same integers. The conv
  // then writes the pooled map [POH, POW, OC]; poolKh = 0: no pooling fused.
  int64_t poolKh = 0, poolKw = 0, poolSh = 1, poolSw = 1, POH = 0, POW = 0;
  // direct 3x3 conv of a C % 4 == 0 byte input (conv3x3.h; set by intPrepareDirectConv), run when conv3x3Runs(op)
  std::shared_ptr<const Conv3x3Plan> conv3x3;
  // depthwise conv (groups = C = OC; intdw.h, set by intPrepareDirectConv): channel block (32 AVX-512,
  // 16 AVX2, 0 scalar), channels padded to it, per tap the padded-input byte offset (2 per tap pair),
  // weights [tap][C] (scalar) and as interleaved tap pairs [pair][block][lo, hi][B] with the initial
  // values -zero sum_t w in the same lane order (intdw.cc)
  bool dwConv = false;
  int64_t dwBlock = 0, dwCp = 0;
  std::vector<int64_t> dwTapOff;
  std::vector<int16_t> dwRaw, dwW;
  std::vector<int32_t> dwBias;
  IOutMode outMode = IOutMode::Requantize;
  // A second output stage (intPlanShareConv): another conv of the same input with the same weights
  // that differs only in its requantization (ResNet's stem feeds a block conv and an add in two
  // quantization domains). Its requantize fields and output type are `second`'s; the same int32
  // accumulators are requantized twice, the second result written to slot dst2.
  std::shared_ptr<const IntOp> second;
  int32_t dst2 = -1;
  // requantize: |M0| 2^-n as a double (exact), sign of M0, bias, 2^k; output zero point and range
  std::vector<double> mscale, bias;
  std::vector<uint8_t> mneg;
  double up = 1;
  int32_t z = 0, lo = 0, hi = 0;
  // the same requantization in int64 lanes (intPrepareRequant), when every channel's constants fit:
  // with k = biasShift, n' = shift - k >= 1, bias M0 = bmh 2^k + bml (0 <= bml < 2^k), the exact
  // product is (acc M0 + bmh) 2^k + bml, so with S = acc M0 + bmh the rounded value (half away
  // from zero) is (S + 2^(n' - 1) - [S < 0 and bml = 0]) >> n' (arithmetic shift)
  bool intRequant = false;
  std::vector<int64_t> rqM0, rqBmh, rqHalf, rqShift;
  std::vector<uint8_t> rqLowZero;  // bml = 0 (OC + 16 flags)
  // sign: bit = lower[c] <= acc <= upper[c]
  std::vector<int32_t> lower, upper;
  // linear: the sign stage runs inside the GEMM's micro-kernel (intgemm.h SignOutput; set by
  // intPlanFuse), with a bits input on the thresholds in popcount terms (binarySignThresholds)
  bool fusedSign = false;
  std::vector<int32_t> popLo, popRange;
  // dequantize
  std::vector<float> S, B;
  // average pooling
  int32_t fracBits = 0;
  // clamp (doubles: +-inf allowed)
  double clo = 0, chi = 0;
  // permute: per-sample source index of each output element (C H W values in [0, C H W))
  // (a per-group linear: gather[k] = the input position of its column k, when the columns are
  // permuted; empty = the identity)
  std::vector<int32_t> gather;
  // per-group linear (graph version 3, intmodel.ts): groupSize G > 0, weights [OC, K] in the TS
  // column order (wgroup), relative multipliers r [OC, K / G]; the int64 sums
  // A[c] = sum_g r[c, g] sum_{k in g} (x_k - z) w[c, k] go through the requantize / dequantize stage
  // in place of the int32 accumulator (exact: |A 2^k + bias| < 2^53, checked by the TS validator)
  int64_t groupSize = 0;
  std::vector<int16_t> wgroup;  // [OC, K] as int16 (the kernel's madd operand)
  std::vector<int32_t> groupMult;
  // the VNNI path (intPrepareGroupLinear): the int8 weights packed in panels of 16 rows
  // ([ceil(OC / 16)][K / 4][16 rows][4 k], zero rows past OC), r per panel and group as 32 int32
  // (the panel's 16 r in order, then the odd rows' r at the even lanes: vpmuldq operands) and per
  // row the zero-point term
  bool groupVnni = false;
  std::vector<int8_t> groupPacked;
  std::vector<int32_t> groupRPacked;
  std::vector<int64_t> groupCorr;
};

struct IntPlan {
  std::vector<IntOp> ops;
  bool slots = false;      // the ops carry their own src / src2 / dst (a DAG); else a chain
  int32_t slotCount = 0;   // value buffers per thread (set by intPlanFinish)
  int64_t inputSize = 0;   // floats per sample
  int64_t outputSize = 0;  // floats per sample
  size_t maxActBytes = 0;  // largest activation per sample, bytes
  size_t maxColBytes = 0;  // largest im2col per sample and group, bytes
  size_t maxTile = 0;      // largest GEMM tile, int32 elements per sample
  bool usesAmx = false;    // some op runs on AMX tiles (set with intPrepareAmx): release them after a chunk
};

// Chooses the direct kernel for a one-input-channel conv when the CPU has VNNI + VBMI; `w` is the
// (O, kh, kw) int8 weight. Call after the op's fields are set.
void intPrepareDirectConv(IntOp* op, const int8_t* w);

// Chooses the VNNI kernel of a per-group linear (IntOp::groupVnni) when it applies; call after
// intPlanFinish checked the op.
void intPrepareGroupLinear(IntOp* op);

// Fills the integer requantization constants (IntOp::intRequant) from the int32 multipliers M0,
// shifts n and bias (call after the requantize fields are set); leaves intRequant false when some
// channel's constants do not fit.
void intPrepareRequant(IntOp* op, const int32_t* mult, const int32_t* shift, const int32_t* bias, int32_t biasShift);

// Packs the AMX weight tiles of a conv / linear op with int8 weights `w` (OC, K) (per group) when
// AMX is available; call after the op's fields and rowSums are set.
void intPrepareAmx(IntOp* op, const int8_t* w);

// Fuses every max pooling without padding that directly follows a requantizing conv into it (see
// IntOp::poolKh; a direct conv only takes a 2 x 2, stride 2 pooling), and a Linear's sign stage into
// its GEMM micro-kernel (IntOp::fusedSign). Call after intPlanFinish, intPrepareDirectConv and
// intPrepareAmx.
void intPlanFuse(IntPlan* plan);

// Merges a direct conv that reads the same value with the same weights and geometry as an earlier
// direct conv (no fused pooling, requantizing to bytes) into that one as its second output stage
// (IntOp::second), when moving its write earlier changes no value another op reads. Call after
// intPlanFuse.
void intPlanShareConv(IntPlan* plan);

// The add op's arithmetic on `count` values of its input types (a: op.in, b: op.in2) into op.out;
// what the executor runs for an add (exposed for tests against addRescaled).
void intAddValues(const IntOp& op, const void* a, const void* b, int64_t count, void* out);

// The output stage of a conv / linear op (requantize, sign or dequantize) on `rows` rows of int32
// accumulators `tile` (row stride ldt, channels [c0, c0 + nc)) into out (element (r, c) at r * ldo + c).
void intLayerOutput(const IntOp& op, const int32_t* tile, int64_t ldt, int64_t rows, int64_t c0, int64_t nc, void* out, int64_t ldo);

// Bytes per sample of a value of type t with `elements` values.
size_t itypeBytes(IType t, int64_t elements);

// Checks the plan (slots, types, dimensions, tensor sizes) and fills the plan's buffer sizes; returns an
// error message or "" when the plan is valid.
std::string intPlanFinish(IntPlan* plan);

// Runs `n` samples: x (n, inputSize) float32 NCHW per sample -> out (n, outputSize).
void intPlanRun(const IntPlan& plan, const float* x, int64_t n, float* out);

// Profiling: runs the n samples serially on the calling thread, in the chunks intPlanRun uses on
// `threads` threads, and adds each op's thread CPU time (ns) to nanos[op] (plan.ops.size() values).
void intPlanProfile(const IntPlan& plan, const float* x, int64_t n, float* out, int threads, double* nanos);

}  // namespace lowbit
