// XNOR-popcount convs with padding (xnorconv.h).
#include "xnorconv.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu.h"
#include "intgemm.h"

namespace lowbit {

namespace {

constexpr int64_t kRows = 96;  // output positions per im2col + GEMM + output-stage block

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct XnorScratch {
  std::vector<uint64_t> pixels;  // the sample's input as bit rows: (H W) rows of ceil(C / 64) words
  std::vector<uint64_t> col;     // bit im2col: kRows rows of ceil(K / 64) words
  std::vector<int32_t> tile;     // accumulators (kRows, OC)
  std::vector<uint8_t> border;   // per block row: some tap is padding
};

XnorScratch& scratch() {
  thread_local XnorScratch s;
  return s;
}

// ORs the `bits` low bits of src (words; bits past `bits` are zero) into row starting at bit `at`.
inline void orBits(uint64_t* row, int64_t at, const uint64_t* src, int64_t bits) {
  for (int64_t j = 0; bits > 0; j++, bits -= 64, at += 64) {
    const uint64_t v = src[j];
    const int64_t word = at >> 6, shift = at & 63;
    row[word] |= v << shift;
    if (shift != 0 && bits > 64 - shift) row[word + 1] |= v >> (64 - shift);
  }
}

// One sample's input [H W, C] int8 as bit rows (bit 1: value >= 0), padding bits zero; scalar and
// AVX-512 / AVX2 (sign bits of 64 / 32 bytes at a time; the same bits).
void packPixelsScalar(const int8_t* x, int64_t pixels, int64_t C, uint64_t* out) {
  const int64_t wc = ceilDiv(C, 64);
  std::memset(out, 0, static_cast<size_t>(pixels * wc) * 8);
  for (int64_t p = 0; p < pixels; p++) {
    const int8_t* v = x + p * C;
    uint64_t* row = out + p * wc;
    for (int64_t c = 0; c < C; c++) row[c >> 6] |= static_cast<uint64_t>(v[c] >= 0) << (c & 63);
  }
}

LOWBIT_TARGET_AVX512 void packPixelsAvx512(const int8_t* x, int64_t pixels, int64_t C, uint64_t* out) {
  const int64_t wc = ceilDiv(C, 64);
  for (int64_t p = 0; p < pixels; p++) {
    const int8_t* v = x + p * C;
    for (int64_t j = 0; j < wc; j++) {
      const int64_t n = std::min<int64_t>(64, C - 64 * j);
      const __mmask64 valid = n == 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
      const __mmask64 negative = _mm512_movepi8_mask(_mm512_maskz_loadu_epi8(valid, v + 64 * j));
      out[p * wc + j] = static_cast<uint64_t>(~negative & valid);
    }
  }
}

LOWBIT_TARGET_AVX2 void packPixelsAvx2(const int8_t* x, int64_t pixels, int64_t C, uint64_t* out) {
  const int64_t wc = ceilDiv(C, 64);
  if (C % 32 != 0) {
    packPixelsScalar(x, pixels, C, out);
    return;
  }
  for (int64_t p = 0; p < pixels; p++) {
    const int8_t* v = x + p * C;
    for (int64_t j = 0; j < wc; j++) {
      const uint64_t lo = static_cast<uint32_t>(~_mm256_movemask_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 64 * j))));
      const uint64_t hi = C - 64 * j > 32 ? static_cast<uint32_t>(~_mm256_movemask_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + 64 * j + 32)))) : 0;
      out[p * wc + j] = lo | hi << 32;
    }
  }
}

void packPixels(const int8_t* x, int64_t pixels, int64_t C, uint64_t* out) {
  const Isa isa = activeIsa();
  if (isa == Isa::Avx512) {
    packPixelsAvx512(x, pixels, C, out);
  } else if (isa == Isa::Avx2) {
    packPixelsAvx2(x, pixels, C, out);
  } else {
    packPixelsScalar(x, pixels, C, out);
  }
}

// The taps of output position (oy, ox) into the bit row (zeroed); returns whether a tap is padding.
// One word per pixel (C <= 64): each tap is one shifted OR (two across a word boundary).
inline bool gatherRow(const IntOp& op, const uint64_t* pixels, int64_t wc, int64_t oy, int64_t ox, uint64_t* row) {
  const int64_t C = op.C, H = op.H, W = op.W;
  const int64_t y0 = oy * op.sh - op.ph, x0 = ox * op.sw - op.pw;
  const bool interior = y0 >= 0 && y0 + (op.kh - 1) * op.dh < H && x0 >= 0 && x0 + (op.kw - 1) * op.dw < W;
  bool border = false;
  int64_t at = 0;
  for (int64_t ky = 0; ky < op.kh; ky++) {
    const int64_t iy = y0 + ky * op.dh;
    for (int64_t kx = 0; kx < op.kw; kx++, at += C) {
      const int64_t ix = x0 + kx * op.dw;
      if (!interior && (iy < 0 || iy >= H || ix < 0 || ix >= W)) {
        border = true;
        continue;
      }
      const uint64_t* src = pixels + (iy * W + ix) * wc;
      if (wc == 1) {
        const uint64_t v = src[0];
        const int64_t word = at >> 6, shift = at & 63;
        row[word] |= v << shift;
        if (shift + C > 64) row[word + 1] |= v >> (64 - shift);
      } else {
        orBits(row, at, src, C);
      }
    }
  }
  return border;
}

}  // namespace

void intPrepareXnorConv(IntOp* op, const int8_t* w, bool force) {
  op->xnor = false;
  if (!force && std::strcmp(int8PathName(), "scalar") != 0) return;
  if (op->kind != IOpKind::Conv || !op->signInput || op->in != IType::S8 || op->groups != 1 || op->K != op->C * op->kh * op->kw ||
      op->outMode == IOutMode::Dequantize) {
    return;
  }
  const int64_t O = op->OC, K = op->K, C = op->C, T = op->kh * op->kw, words = ceilDiv(K, 64);
  for (int64_t i = 0; i < O * K; i++) {
    if (w[i] != 1 && w[i] != -1) return;
  }
  op->wbits.assign(static_cast<size_t>(O * words), 0);
  op->xnorTapSums.assign(static_cast<size_t>(O * T), 0);
  for (int64_t o = 0; o < O; o++) {
    for (int64_t k = 0; k < K; k++) {
      if (w[o * K + k] > 0) op->wbits[static_cast<size_t>(o * words + (k >> 6))] |= uint64_t{1} << (k & 63);
      op->xnorTapSums[static_cast<size_t>(o * T + k / C)] += w[o * K + k];
    }
  }
  if (binaryUsesPanels()) {
    op->wpanels.assign(static_cast<size_t>(binaryPanelWords(O, K)), 0);
    packBinaryPanels(op->wbits.data(), O, K, op->wpanels.data());
  }
  op->xnor = true;
}

void intXnorConvRun(const IntOp& op, const int8_t* x, int64_t n, void* out) {
  const int64_t C = op.C, H = op.H, W = op.W, OC = op.OC, OW = op.OW, P = op.OH * op.OW, K = op.K, T = op.kh * op.kw;
  const int64_t wc = ceilDiv(C, 64), words = ceilDiv(K, 64);
  XnorScratch& s = scratch();
  if (s.pixels.size() < static_cast<size_t>(H * W * wc)) s.pixels.resize(static_cast<size_t>(H * W * wc));
  if (s.col.size() < static_cast<size_t>(kRows * words + 1)) s.col.resize(static_cast<size_t>(kRows * words + 1));
  if (s.tile.size() < static_cast<size_t>(kRows * OC)) s.tile.resize(static_cast<size_t>(kRows * OC));
  if (s.border.size() < static_cast<size_t>(kRows)) s.border.resize(static_cast<size_t>(kRows));
  uint64_t* pixels = s.pixels.data();
  uint64_t* col = s.col.data();
  int32_t* tile = s.tile.data();
  const size_t valueBytes = itypeBytes(op.out, 1);
  const int32_t* tapSums = op.xnorTapSums.data();
  for (int64_t smp = 0; smp < n; smp++) {
    packPixels(x + smp * H * W * C, H * W, C, pixels);
    uint8_t* os = static_cast<uint8_t*>(out) + static_cast<size_t>(smp * P * OC) * valueBytes;
    for (int64_t p0 = 0; p0 < P; p0 += kRows) {
      const int64_t rows = std::min(kRows, P - p0);
      std::memset(col, 0, static_cast<size_t>(rows * words) * 8);
      for (int64_t r = 0, oy = p0 / OW, ox = p0 % OW; r < rows; r++) {
        s.border[static_cast<size_t>(r)] = gatherRow(op, pixels, wc, oy, ox, col + r * words);
        if (++ox == OW) ox = 0, oy++;
      }
      gemmBinarySerial(rows, OC, K, col, op.wbits.data(), op.wpanels.data(), tile, OC);
      // border positions: a padded tap read as -1 added -sum_c w; the reference adds 0
      for (int64_t r = 0; r < rows; r++) {
        if (!s.border[static_cast<size_t>(r)]) continue;
        const int64_t oy = (p0 + r) / OW, ox = (p0 + r) % OW;
        int32_t* acc = tile + r * OC;
        for (int64_t ky = 0; ky < op.kh; ky++) {
          const int64_t iy = oy * op.sh - op.ph + ky * op.dh;
          for (int64_t kx = 0; kx < op.kw; kx++) {
            const int64_t ix = ox * op.sw - op.pw + kx * op.dw;
            if (iy >= 0 && iy < H && ix >= 0 && ix < W) continue;
            const int64_t t = ky * op.kw + kx;
            for (int64_t o = 0; o < OC; o++) acc[o] += tapSums[o * T + t];
          }
        }
      }
      intLayerOutput(op, tile, OC, rows, 0, OC, os + static_cast<size_t>(p0 * OC) * valueBytes, OC);
    }
  }
}

}  // namespace lowbit
