// The integer LM head (intlmhead.h): the int8 VNNI GEMM (gemmInt8Serial) on blocks of rows, each
// block's int32 accumulators dequantized to float32 while they are still in L1/L2.
#include "intlmhead.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu.h"
#include "intgemm.h"
#include "threadpool.h"

namespace lowbit {

namespace {

// Rows per task: 8 rows of 2000 accumulators are 64 KB.
constexpr int64_t kRowsPerTask = 8;

// Plain double arithmetic in the reference's order; compiled with -std=c++17 (ISO mode), so GCC does
// not contract the multiply and add into an FMA (which would round differently).
template <int kDummy>
inline void dequantRows(int64_t rows, int64_t N, const int32_t* acc, const float* scale, const float* bias, double hs, float* out) {
  for (int64_t m = 0; m < rows; m++) {
    const int32_t* a = acc + m * N;
    float* o = out + m * N;
    for (int64_t n = 0; n < N; n++) {
      double v = static_cast<double>(a[n]) * static_cast<double>(scale[n]);
      v = v * hs;
      v = v + static_cast<double>(bias[n]);
      o[n] = static_cast<float>(v);
    }
  }
}

LOWBIT_TARGET_AVX512 void dequantAvx512(int64_t rows, int64_t N, const int32_t* acc, const float* scale, const float* bias, double hs,
                                        float* out) {
  dequantRows<0>(rows, N, acc, scale, bias, hs, out);
}

LOWBIT_TARGET_AVX2 void dequantAvx2(int64_t rows, int64_t N, const int32_t* acc, const float* scale, const float* bias, double hs,
                                    float* out) {
  dequantRows<1>(rows, N, acc, scale, bias, hs, out);
}

void dequantScalar(int64_t rows, int64_t N, const int32_t* acc, const float* scale, const float* bias, double hs, float* out) {
  dequantRows<2>(rows, N, acc, scale, bias, hs, out);
}

}  // namespace

void intLmHead(int64_t M, int64_t N, int64_t K, const int8_t* h, const int8_t* packed, const int32_t* rowSums,
               const float* scale, const float* bias, double hiddenScale, float* out) {
  if (M <= 0 || N <= 0) return;
  const int64_t Kp = (K + 3) / 4 * 4;
  // Signed activations as u8 (xor 0x80, the zero point 128 removed through rowSums), rows padded to Kp.
  thread_local std::vector<uint8_t> ap;
  if (ap.size() < static_cast<size_t>(M * Kp)) ap.resize(static_cast<size_t>(M * Kp));
  for (int64_t m = 0; m < M; m++) {
    uint8_t* row = ap.data() + m * Kp;
    for (int64_t k = 0; k < K; k++) row[k] = static_cast<uint8_t>(h[m * K + k]) ^ 0x80u;
    for (int64_t k = K; k < Kp; k++) row[k] = 0x80u;  // multiplies zero weights
  }
  const Isa isa = activeIsa();
  const uint8_t* A = ap.data();
  const int64_t tasks = (M + kRowsPerTask - 1) / kRowsPerTask;
  parallelForEach(tasks, 2.0 * static_cast<double>(M * N * K) / 8.0, [&](int64_t begin, int64_t end) {
    thread_local std::vector<int32_t> acc;
    if (acc.size() < static_cast<size_t>(kRowsPerTask * N)) acc.resize(static_cast<size_t>(kRowsPerTask * N));
    for (int64_t t = begin; t < end; t++) {
      const int64_t m0 = t * kRowsPerTask, rows = std::min(kRowsPerTask, M - m0);
      gemmInt8Serial(rows, N, K, A + m0 * Kp, Kp, packed, rowSums, -128, acc.data(), N);
      if (isa == Isa::Avx512) dequantAvx512(rows, N, acc.data(), scale, bias, hiddenScale, out + m0 * N);
      else if (isa >= Isa::Avx2) dequantAvx2(rows, N, acc.data(), scale, bias, hiddenScale, out + m0 * N);
      else dequantScalar(rows, N, acc.data(), scale, bias, hiddenScale, out + m0 * N);
    }
  });
}

}  // namespace lowbit
