// Direct 3x3 conv of the native IntModel executor for byte inputs with C % 4 == 0 input channels
// (ResNet's 16..64-channel block convs), without im2col.
//
// The same kernels run unpadded 1x1 convs (ResNet's stride-2 shortcuts) and 5x5 convs (LeNet-5):
// they loop over kh kernel rows, and a window row of kw C bytes is read as ceil(kw C / 4) 4-byte
// groups (int16 pairs: the same count times 2), the bytes past kw C -- the next pixel's, or the
// padded image's slack -- meeting zero weights. Below "3 C" is that window row for the 3x3 case.
//
// Per sample the input is copied once into a padded image (NHWC rows of (W + 2 pw) C bytes; int8
// inputs get +128 by xor 0x80; the border holds the zero point, the byte im2col fills padded cells
// with). An output pixel's 16-channel accumulator block is a zmm: for each kernel row ky and each
// group of 4 consecutive bytes j of the window row (3 C bytes: taps kx = 0..2, all channels, contiguous
// in NHWC), one vpdpbusd adds the broadcast 4 activation bytes times the 16 channels' 4 weight bytes.
// A register block is R pixels of one output row x NB (1 or 2) channel blocks, R NB independent
// accumulator chains (vpdpbusd: latency 4 cycles, 2 per cycle here, bench/native/vpdpbusd.cc).
// The accumulators start at negZero rowSums[c] (negZero = -(zero point (+128 for int8))), so every
// int32 equals the im2col + GEMM path's: sum_k x'_k w_k - (z (+128)) sum_k w_k, wrapping mod 2^32 in
// both. One output row at a time is then requantized: byte outputs with the int64 requantization
// by the kernel's own 16-channel output stage, others by the executor's epilogue. A fused 2x2
// stride-2 max pooling (IntOp::poolKh) pools two conv rows of accumulators first.
//
// On the AVX2 ISA the same loop runs on ymm blocks of 8 channels (R <= 12 pixels x 1 block or
// R <= 6 x 2: 16 registers): with AVX-VNNI one VEX vpdpbusd per 4-byte group; without it the
// padded image is widened to uint16 and each int16 pair of the window (2 bytes: C is even) is
// broadcast and multiplied with the 8 channels' int16 weight pairs by vpmaddwd, as the AVX2 GEMM
// (intgemm.cc) does: u8 x s8 products and their pair sums fit int16 x int16 -> int32 exactly (no
// vpmaddubsw saturation). Both keep the same int32 accumulators; byte outputs with the int64
// requantization get an AVX2 output stage of 8 channels (requantRowY), others the executor's epilogue.
//
// The stem (C = 1..3) runs the same kernels on a packed image: Q[y][x] = the 3 C elements of the
// padded image from column x (one output column's window row), zero up to G = 4, 8 or 12 (so one
// "pixel" of G elements per window row, G / 4 groups), with the weights packed to match.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace lowbit {

struct IntOp;

// The kernel's instruction set (chosen once, conv3x3Kind()).
enum class Conv3x3Kind {
  None = 0,
  Avx512Vnni,  // zmm accumulators of 16 channels, vpdpbusd
  AvxVnni,     // ymm accumulators of 8 channels, VEX vpdpbusd (AVX-VNNI)
  Avx2,        // ymm accumulators of 8 channels, vpmaddwd on int16 pairs (exact; no VNNI)
};

struct Conv3x3Plan {
  Conv3x3Kind kind = Conv3x3Kind::None;
  int64_t lanes = 16;       // output channels per block: 16 (zmm) or 8 (ymm)
  int64_t blocks = 0;       // output blocks, ceil(OC / lanes)
  int64_t kh = 3;           // kernel rows (kh = kw: 1, 3 or 5)
  bool stem = false;        // 3x3 with C = 1..3: the kernels read the packed image of window rows (conv3x3.cc, buildStem)
  int64_t gRow = 0;         // elements of a kernel row in the packed K: kw C rounded up to 4 (3 C for C % 4 == 0),
                            // or for the stem 3 C rounded up to 4
  int64_t k4n = 0;          // 4-byte groups of the packed K (kh gRow / 4)
  // Avx512Vnni / AvxVnni: [block][k4n][lanes channels][4 bytes]; Avx2: empty (w16). Channels past OC zero.
  std::vector<int8_t> w;
  // Avx2: the weights as int16 pairs, [block][K / 2][8 channels][2 values]
  std::vector<int16_t> w16;
  std::vector<int32_t> bias;  // negZero rowSums[c], blocks x lanes values (0 past OC)
  // The output stage for byte outputs with the integer requantization (IntOp::intRequant): per
  // block, the constants of its even and of its odd channels as int64 lanes (8 each: M0, bmh +
  // 2^(n' - 1), 2^(n' - 1), n') and the bml = 0 flags; see conv3x3.cc. Else the executor's epilogue.
  bool fastOut = false;
  // Avx512Vnni: [block][8 vectors of 8]: M0 even, M0 odd, bh even, bh odd, half even, half odd, n' even, n' odd;
  // the ymm kinds: [block][10 vectors of 4]: the same and the bml = 0 masks (-1 / 0) even, odd
  std::vector<int64_t> rq;
  bool rqHigh = false;              // the ymm kinds: every channel has n' >= 32 (requantRowY's int32 shift)
  std::vector<int32_t> rqShift32;   // the ymm kinds: n' - 32 per channel, [block][8]
  std::vector<uint16_t> lowZero;  // Avx512Vnni: [block]: bit i = channel 16 b + i has bml = 0
};

// Which kernel the CPU runs: AVX-512 VNNI on the AVX-512 ISA; else, on the AVX2 ISA, AVX-VNNI when
// avxVnniActive() (cpu.h) and the exact int16 multiply-add without it; none on the scalar ISA.
Conv3x3Kind conv3x3Kind();
bool conv3x3Available();
// "avx512-vnni", "avx-vnni", "avx2" or "none" (the executor's kernel names)
const char* conv3x3KindName(Conv3x3Kind kind);

// A plan for the conv op (weights `w` (OC, kh, kw, C) int8, op.rowSums set) when the kernel takes its
// geometry: groups 1, dilation 1, stride 1 or 2, pad <= 2, byte input with C <= 1024, and 3x3 with
// C % 4 == 0 or C = 1..3 (the stem), 1x1 without padding, or 5x5 (not C = 1 on AVX-512: the permute kernel),
// requantizing output; else null. Call after the op's requantization constants are set.
std::shared_ptr<const Conv3x3Plan> conv3x3Prepare(const IntOp& op, const int8_t* w);

// Whether the executor runs the op on this kernel: a plan, no fused pooling other than 2x2 stride 2,
// no AMX tiles, and a second output stage only without pooling and with its own plan.
bool conv3x3Runs(const IntOp& op);

// Whether two ops' plans hold the same weights (intPlanShareConv: one conv, two output stages); true
// when neither has a plan.
bool conv3x3SameWeights(const IntOp& a, const IntOp& b);

// The output stage the executor runs on a tile of int32 accumulators (intmodel.cc's epilogue):
// rows x channels [c0, c0 + nc) of `tile` (row stride ldt) into out (row stride ldo).
using Conv3x3Epilogue = void (*)(const IntOp& op, const int32_t* tile, int64_t ldt, int64_t rows, int64_t c0, int64_t nc,
                                 void* out, int64_t ldo);

// Runs the conv on n samples x (NHWC bytes) into out (NHWC, op.out values) with the op's plan
// (op.conv3x3), and with a second output stage (op.second) the same accumulators requantized by it
// into out2 (else null); `pad` and `tile` are per-thread scratch vectors.
void conv3x3Run(const IntOp& op, const uint8_t* x, int64_t n, void* out, void* out2, std::vector<uint8_t>& pad,
                std::vector<int32_t>& tile, Conv3x3Epilogue epilogue);

}  // namespace lowbit
