// Depthwise int8 conv (see intdw.h).
//
// Lane order: a block of B channels (B = 32 on AVX-512, 16 on AVX2) is B int16 lanes; vpunpcklwd /
// vpunpckhwd of two taps' inputs a, b give per 128-bit lane l the pairs (a, b) of channels
// 8 l + j (lo) and 8 l + 4 + j (hi), j < 4, and vpmaddwd against the weight pairs in the same order
// gives int32 element e = 4 l + j of channel 8 l + 4 h + j (h = 0 lo, 1 hi). The weights (dwW) and
// the initial values (dwBias = -zero sum_t w) are stored in that order; the two accumulators go back
// to channel order by a lane permute before the store.
#include "intdw.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu.h"
#include "intmodel.h"

namespace lowbit {

namespace {

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

int64_t padRowBytes(const IntOp& op) { return (op.W + 2 * op.pw) * op.dwCp; }

// The channel of element e of half h (0: lo, 1: hi) in a block.
inline int64_t laneChannel(int64_t e, int64_t h) { return 8 * (e / 4) + 4 * h + e % 4; }

template <bool Signed>
void tileScalar(const IntOp& op, const uint8_t* pad, int64_t p0, int64_t p1, int32_t* tile) {
  const int64_t C = op.C, Cp = op.dwCp, T = op.kh * op.kw, rowBytes = padRowBytes(op);
  for (int64_t p = p0; p < p1; p++) {
    const int64_t oy = p / op.OW, ox = p % op.OW;
    const uint8_t* base = pad + (oy * op.sh) * rowBytes + (ox * op.sw) * Cp;
    int32_t* row = tile + (p - p0) * Cp;
    for (int64_t c = 0; c < Cp; c++) row[c] = 0;
    for (int64_t t = 0; t < T; t++) {
      const uint8_t* src = base + op.dwTapOff[static_cast<size_t>(t)];
      const int16_t* w = op.dwRaw.data() + t * C;
      for (int64_t c = 0; c < C; c++) {
        const int32_t x = Signed ? static_cast<int32_t>(static_cast<int8_t>(src[c])) : static_cast<int32_t>(src[c]);
        row[c] += (x - op.zero) * w[c];
      }
    }
  }
}

// R output positions (bases q[0..R)) x one block of 32 channels: the weights of a tap pair are
// loaded once for the R positions.
template <bool Signed, int R>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2"))) inline void blockAvx512(const IntOp& op, const uint8_t* const* q, int64_t b,
                                                                                            int64_t nb, int64_t pairs, int32_t* const* rows) {
  const int64_t* off = op.dwTapOff.data();  // 2 pairs entries (the odd tap count's last pair repeats a tap, weight 0)
  // channel order from (lo, hi): lanes [lo.0, hi.0, lo.1, hi.1] and [lo.2, hi.2, lo.3, hi.3]
  const __m512i idx0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i idx1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const int16_t* w = op.dwW.data() + b * 64;
  __m512i lo[R], hi[R];
  const __m512i lo0 = _mm512_loadu_si512(op.dwBias.data() + b * 32), hi0 = _mm512_loadu_si512(op.dwBias.data() + b * 32 + 16);
  for (int r = 0; r < R; r++) lo[r] = lo0, hi[r] = hi0;
  for (int64_t j = 0; j < pairs; j++) {
    const int16_t* wj = w + j * nb * 64;
    const __m512i wl = _mm512_loadu_si512(wj), wh = _mm512_loadu_si512(wj + 32);
    const int64_t o0 = off[2 * j] + b * 32, o1 = off[2 * j + 1] + b * 32;
    for (int r = 0; r < R; r++) {
      const __m256i ra = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[r] + o0));
      const __m256i rb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[r] + o1));
      const __m512i a = Signed ? _mm512_cvtepi8_epi16(ra) : _mm512_cvtepu8_epi16(ra);
      const __m512i c = Signed ? _mm512_cvtepi8_epi16(rb) : _mm512_cvtepu8_epi16(rb);
      lo[r] = _mm512_add_epi32(lo[r], _mm512_madd_epi16(_mm512_unpacklo_epi16(a, c), wl));
      hi[r] = _mm512_add_epi32(hi[r], _mm512_madd_epi16(_mm512_unpackhi_epi16(a, c), wh));
    }
  }
  for (int r = 0; r < R; r++) {
    _mm512_storeu_si512(rows[r] + b * 32, _mm512_permutex2var_epi32(lo[r], idx0, hi[r]));
    _mm512_storeu_si512(rows[r] + b * 32 + 16, _mm512_permutex2var_epi32(lo[r], idx1, hi[r]));
  }
}

template <bool Signed>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2"))) void tileAvx512(const IntOp& op, const uint8_t* pad, int64_t p0,
                                                                                     int64_t p1, int32_t* tile) {
  constexpr int R = 4;  // positions per step (8 accumulators)
  const int64_t Cp = op.dwCp, nb = Cp / 32, pairs = ceilDiv(op.kh * op.kw, 2), rowBytes = padRowBytes(op);
  const uint8_t* q[R];
  int32_t* rows[R];
  int64_t p = p0;
  for (; p < p1; p += R) {
    const int n = static_cast<int>(std::min<int64_t>(R, p1 - p));
    for (int r = 0; r < n; r++) {
      const int64_t oy = (p + r) / op.OW, ox = (p + r) % op.OW;
      q[r] = pad + (oy * op.sh) * rowBytes + (ox * op.sw) * Cp;
      rows[r] = tile + (p + r - p0) * Cp;
    }
    for (int64_t b = 0; b < nb; b++) {
      if (n == R) {
        blockAvx512<Signed, R>(op, q, b, nb, pairs, rows);
      } else {
        for (int r = 0; r < n; r++) blockAvx512<Signed, 1>(op, q + r, b, nb, pairs, rows + r);
      }
    }
  }
}

template <bool Signed>
__attribute__((target("avx2"))) void tileAvx2(const IntOp& op, const uint8_t* pad, int64_t p0, int64_t p1, int32_t* tile) {
  const int64_t Cp = op.dwCp, nb = Cp / 16, pairs = ceilDiv(op.kh * op.kw, 2), rowBytes = padRowBytes(op);
  const int64_t* off = op.dwTapOff.data();
  for (int64_t p = p0; p < p1; p++) {
    const int64_t oy = p / op.OW, ox = p % op.OW;
    const uint8_t* base = pad + (oy * op.sh) * rowBytes + (ox * op.sw) * Cp;
    int32_t* row = tile + (p - p0) * Cp;
    for (int64_t b = 0; b < nb; b++) {
      const int16_t* w = op.dwW.data() + b * 32;
      __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(op.dwBias.data() + b * 16));
      __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(op.dwBias.data() + b * 16 + 8));
      const uint8_t* src = base + b * 16;
      for (int64_t j = 0; j < pairs; j++) {
        const __m128i ra = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + off[2 * j]));
        const __m128i rb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + off[2 * j + 1]));
        const __m256i a = Signed ? _mm256_cvtepi8_epi16(ra) : _mm256_cvtepu8_epi16(ra);
        const __m256i c = Signed ? _mm256_cvtepi8_epi16(rb) : _mm256_cvtepu8_epi16(rb);
        const int16_t* wj = w + j * nb * 32;
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, c), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wj))));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, c), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wj + 16))));
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + b * 16), _mm256_permute2x128_si256(lo, hi, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + b * 16 + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
  }
}

}  // namespace

bool intDepthwisePrepare(IntOp* op, const int8_t* w) {
  op->dwConv = false;
  if (op->kind != IOpKind::Conv || op->groups <= 1 || op->groups != op->C || op->OC != op->C || op->xnor || op->signInput ||
      (op->in != IType::U8 && op->in != IType::S8) || op->K != op->kh * op->kw) {
    return false;
  }
  const Isa isa = activeIsa();
  const int64_t B = isa == Isa::Avx512 ? 32 : isa == Isa::Avx2 ? 16 : 0;
  const int64_t C = op->C, T = op->kh * op->kw;
  op->dwBlock = B;
  op->dwCp = B > 0 ? ceilDiv(C, B) * B : C;
  const int64_t Cp = op->dwCp, rowBytes = padRowBytes(*op);
  op->dwRaw.assign(static_cast<size_t>(T * C), 0);
  for (int64_t c = 0; c < C; c++)
    for (int64_t t = 0; t < T; t++) op->dwRaw[static_cast<size_t>(t * C + c)] = w[c * T + t];
  const int64_t pairs = ceilDiv(T, 2);
  op->dwTapOff.assign(static_cast<size_t>(2 * pairs), 0);
  for (int64_t t = 0; t < 2 * pairs; t++) {
    const int64_t tt = std::min(t, T - 1), ky = tt / op->kw, kx = tt % op->kw;
    op->dwTapOff[static_cast<size_t>(t)] = ky * op->dh * rowBytes + kx * op->dw * Cp;
  }
  if (B > 0) {
    const int64_t nb = Cp / B;
    op->dwW.assign(static_cast<size_t>(pairs * nb * 2 * B), 0);
    op->dwBias.assign(static_cast<size_t>(Cp), 0);
    for (int64_t b = 0; b < nb; b++) {
      for (int64_t h = 0; h < 2; h++) {
        for (int64_t e = 0; e < B / 2; e++) {
          const int64_t c = b * B + laneChannel(e, h);
          if (c >= C) continue;
          int64_t sum = 0;
          for (int64_t t = 0; t < T; t++) sum += w[c * T + t];
          op->dwBias[static_cast<size_t>(b * B + h * (B / 2) + e)] = static_cast<int32_t>(-static_cast<int64_t>(op->zero) * sum);
          for (int64_t j = 0; j < pairs; j++) {
            int16_t* wp = op->dwW.data() + ((j * nb + b) * 2 + h) * B + 2 * e;
            wp[0] = w[c * T + 2 * j];
            wp[1] = 2 * j + 1 < T ? w[c * T + 2 * j + 1] : 0;
          }
        }
      }
    }
  }
  op->dwConv = true;
  return true;
}

int64_t intDepthwisePadBytes(const IntOp& op) { return (op.H + 2 * op.ph) * padRowBytes(op) + 64; }

void intDepthwisePad(const IntOp& op, const uint8_t* xs, uint8_t* pad) {
  const int64_t C = op.C, Cp = op.dwCp, rowBytes = padRowBytes(op);
  // the border (and the channels past C) hold the zero point: those taps add (z - z) w = 0
  std::memset(pad, static_cast<uint8_t>(op.zero), static_cast<size_t>(intDepthwisePadBytes(op)));
  for (int64_t iy = 0; iy < op.H; iy++) {
    uint8_t* dst = pad + (iy + op.ph) * rowBytes + op.pw * Cp;
    const uint8_t* src = xs + iy * op.W * C;
    if (Cp == C) {
      std::memcpy(dst, src, static_cast<size_t>(op.W * C));
    } else {
      for (int64_t ix = 0; ix < op.W; ix++) std::memcpy(dst + ix * Cp, src + ix * C, static_cast<size_t>(C));
    }
  }
}

void intDepthwiseTile(const IntOp& op, const uint8_t* pad, int64_t p0, int64_t p1, int32_t* tile) {
  const bool s = op.in == IType::S8;
  if (op.dwBlock == 32) {
    s ? tileAvx512<true>(op, pad, p0, p1, tile) : tileAvx512<false>(op, pad, p0, p1, tile);
  } else if (op.dwBlock == 16) {
    s ? tileAvx2<true>(op, pad, p0, p1, tile) : tileAvx2<false>(op, pad, p0, p1, tile);
  } else {
    s ? tileScalar<true>(op, pad, p0, p1, tile) : tileScalar<false>(op, pad, p0, p1, tile);
  }
}

const char* intDepthwisePathName(const IntOp& op) { return op.dwBlock == 32 ? "avx512" : op.dwBlock == 16 ? "avx2" : "scalar"; }

}  // namespace lowbit
