// Register-tile probe: how close to the FMA peak can an AVX-512 SGEMM micro-kernel of a given
// shape run on this machine, with its panels in L1 and no C traffic?
//
// Each kernel keeps an R x (16 V) tile of C in R * V zmm accumulators and, per k step, loads V
// vectors of the packed B panel, broadcasts R values of the packed A panel and issues R * V FMAs
// (the shape of native/gemm.cc's kernel is R = 14, V = 2). The peak is a register-only loop of 24
// independent FMA chains timed in the same run, before each row of results.
//
//   g++ -O2 -march=native -o /tmp/kernel-shapes bench/probes/kernel-shapes.cc && /tmp/kernel-shapes [kc]
//
// Prints, per round, the peak (GFLOP/s, one thread) and each shape's fraction of it.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// 24 independent chains acc = acc * x + y: two FMA ports with 4-cycle latency need >= 8.
__attribute__((noinline)) float registerOnly(int64_t iters) {
  __m512 acc[24];
  for (int c = 0; c < 24; c++) acc[c] = _mm512_set1_ps(1e-3f * c);
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 24
    for (int c = 0; c < 24; c++) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
  }
  __m512 s = acc[0];
  for (int c = 1; c < 24; c++) s = _mm512_add_ps(s, acc[c]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float total = 0.f;
  for (float v : lanes) total += v;
  return total;
}

// c (R, 16 V), row stride ldc  +=  sum over k of a[k * R + r] * b[k * 16 V + j].
template <int R, int V>
__attribute__((noinline)) void tile(int64_t kc, const float* a, const float* b, float* c, int64_t ldc) {
  static_assert(R * V + V + 1 <= 32, "accumulators, B vectors and one broadcast must fit in 32 zmm");
  __m512 acc[R][V];
#pragma GCC unroll 16
  for (int r = 0; r < R; r++)
#pragma GCC unroll 8
    for (int v = 0; v < V; v++) acc[r][v] = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; k++) {
    __m512 bv[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; v++) bv[v] = _mm512_load_ps(b + 16 * v);
#pragma GCC unroll 16
    for (int r = 0; r < R; r++) {
      const __m512 av = _mm512_set1_ps(a[r]);
#pragma GCC unroll 8
      for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
    a += R;
    b += 16 * V;
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; r++)
#pragma GCC unroll 8
    for (int v = 0; v < V; v++) {
      float* p = c + r * ldc + 16 * v;
      _mm512_storeu_ps(p, _mm512_add_ps(acc[r][v], _mm512_loadu_ps(p)));
    }
}

struct Panels {
  float* a;
  float* b;
  float* c;
};

// GFLOP/s of the R x V tile over about 4e8 FMA lanes.
template <int R, int V>
double tileGflops(const Panels& p, int64_t kc) {
  const int64_t calls = 400000000 / (kc * R * V * 16) * 16;
  const Clock::time_point t0 = Clock::now();
  for (int64_t i = 0; i < calls; i++) tile<R, V>(kc, p.a, p.b, p.c, 16 * V);
  return static_cast<double>(calls) * kc * R * V * 32.0 / secondsSince(t0) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t kc = argc > 1 ? std::atol(argv[1]) : 128;
  if (kc < 1 || kc > 4096) {
    std::fprintf(stderr, "kc must be in 1..4096\n");
    return 2;
  }
  // Panels for the largest tile: A (kc, 16), B (kc, 96), C 16 x 96.
  Panels p{static_cast<float*>(std::aligned_alloc(64, kc * 16 * 4)),
           static_cast<float*>(std::aligned_alloc(64, kc * 96 * 4)),
           static_cast<float*>(std::aligned_alloc(64, 16 * 96 * 4))};
  for (int64_t i = 0; i < kc * 16; i++) p.a[i] = 1e-3f * static_cast<float>(i % 7);
  for (int64_t i = 0; i < kc * 96; i++) p.b[i] = 1e-3f * static_cast<float>(i % 5);
  std::memset(p.c, 0, 16 * 96 * 4);
  std::printf("kc %lld; fraction of the register-only FMA peak (one thread, panels in L1)\n",
              static_cast<long long>(kc));
  volatile float sink = 0;
  for (int round = 0; round < 3; round++) {
    const int64_t iters = 50000000;
    const Clock::time_point t0 = Clock::now();
    sink = sink + registerOnly(iters);
    const double peak = static_cast<double>(iters) * 24 * 32.0 / secondsSince(t0) * 1e-9;
    std::printf("peak %5.1f GFLOP/s | 14x32 %.3f  12x32 %.3f  8x48 %.3f  9x48 %.3f  6x64 %.3f  5x80 %.3f  4x96 %.3f\n",
                peak, tileGflops<14, 2>(p, kc) / peak, tileGflops<12, 2>(p, kc) / peak, tileGflops<8, 3>(p, kc) / peak,
                tileGflops<9, 3>(p, kc) / peak, tileGflops<6, 4>(p, kc) / peak, tileGflops<5, 5>(p, kc) / peak,
                tileGflops<4, 6>(p, kc) / peak);
  }
  std::free(p.a);
  std::free(p.b);
  std::free(p.c);
  return 0;
}
