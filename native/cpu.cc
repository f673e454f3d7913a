// CPU feature detection, runtime ISA choice and the FMA peak probe.
#include "cpu.h"

#include <immintrin.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "threadpool.h"

namespace lowbit {

static Isa detectIsa() {
  __builtin_cpu_init();
  Isa best = Isa::Scalar;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::Avx2;
  if (best == Isa::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    best = Isa::Avx512;
  }
  const char* forced = std::getenv("LOWBIT_ISA");
  if (forced != nullptr) {
    Isa want = best;
    if (std::strcmp(forced, "scalar") == 0) want = Isa::Scalar;
    if (std::strcmp(forced, "avx2") == 0) want = Isa::Avx2;
    if (std::strcmp(forced, "avx512") == 0) want = Isa::Avx512;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;
  }
  return best;
}

Isa activeIsa() {
  static const Isa isa = detectIsa();
  return isa;
}

const char* isaName(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "scalar";
  }
}

std::vector<std::string> cpuFeatures() {
  __builtin_cpu_init();
  std::vector<std::string> out;
#define LOWBIT_FEATURE(name) \
  if (__builtin_cpu_supports(name)) out.emplace_back(name);
  LOWBIT_FEATURE("sse4.2")
  LOWBIT_FEATURE("avx")
  LOWBIT_FEATURE("avx2")
  LOWBIT_FEATURE("fma")
  LOWBIT_FEATURE("f16c")
  LOWBIT_FEATURE("avx512f")
  LOWBIT_FEATURE("avx512bw")
  LOWBIT_FEATURE("avx512vl")
  LOWBIT_FEATURE("avx512dq")
  LOWBIT_FEATURE("avx512vnni")
  LOWBIT_FEATURE("avx512vpopcntdq")
  LOWBIT_FEATURE("avx512bf16")
#undef LOWBIT_FEATURE
  return out;
}

// ---- FMA probe: 24 independent accumulator chains (latency 4 x 2 ports needs >= 8).
constexpr int kChains = 24;

LOWBIT_TARGET_AVX512 static float fmaLoopAvx512(long iters) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; c++) acc[c] = _mm512_set1_ps(static_cast<float>(c) * 1e-3f);
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (long i = 0; i < iters; i++) {
#pragma GCC unroll 24
    for (int c = 0; c < kChains; c++) acc[c] = _mm512_fmadd_ps(acc[c], x, y);
  }
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; c++) sum = _mm512_add_ps(sum, acc[c]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  return lanes[0] + lanes[15];
}

LOWBIT_TARGET_AVX2 static float fmaLoopAvx2(long iters) {
  __m256 acc[kChains / 2];
  for (int c = 0; c < kChains / 2; c++) acc[c] = _mm256_set1_ps(static_cast<float>(c) * 1e-3f);
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (long i = 0; i < iters; i++) {
#pragma GCC unroll 12
    for (int c = 0; c < kChains / 2; c++) acc[c] = _mm256_fmadd_ps(acc[c], x, y);
  }
  float out[8];
  __m256 sum = acc[0];
  for (int c = 1; c < kChains / 2; c++) sum = _mm256_add_ps(sum, acc[c]);
  _mm256_storeu_ps(out, sum);
  return out[0] + out[7];
}

static float fmaLoopScalar(long iters) {
  float acc[8];
  for (int c = 0; c < 8; c++) acc[c] = static_cast<float>(c);
  for (long i = 0; i < iters; i++) {
    for (int c = 0; c < 8; c++) acc[c] = acc[c] * 0.999999f + 1e-7f;
  }
  return acc[0] + acc[7];
}

// Flops of one iteration of the probe loop of the active ISA.
static double flopsPerIter() {
  switch (activeIsa()) {
    case Isa::Avx512: return kChains * 16.0 * 2;
    case Isa::Avx2: return kChains / 2 * 8.0 * 2;
    default: return 8.0 * 2;
  }
}

static float fmaLoop(long iters) {
  switch (activeIsa()) {
    case Isa::Avx512: return fmaLoopAvx512(iters);
    case Isa::Avx2: return fmaLoopAvx2(iters);
    default: return fmaLoopScalar(iters);
  }
}

struct ProbeCtx {
  long iters;
  volatile float sink;
};

double fmaPeakGflops(int threads, double seconds) {
  using Clock = std::chrono::steady_clock;
  // Calibrate the iteration count on one thread so that one run lasts `seconds`.
  long iters = 1 << 14;
  double elapsed = 0;
  for (;;) {
    auto t0 = Clock::now();
    float s = fmaLoop(iters);
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s == 12345.f) iters++;  // keeps the result alive
    if (elapsed > seconds / 4 || iters > (1L << 40)) break;
    iters *= 2;
  }
  iters = static_cast<long>(iters * (seconds / elapsed));
  if (threads < 1) threads = 1;
  ProbeCtx ctx{iters, 0.f};
  const int saved = poolThreads();
  if (threads > saved) poolSetThreads(threads);
  auto t0 = Clock::now();
  poolRun(threads, [](void* raw, int, int) {
    auto* c = static_cast<ProbeCtx*>(raw);
    c->sink = fmaLoop(c->iters);
  }, &ctx);
  elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  if (threads > saved) poolSetThreads(saved);
  return flopsPerIter() * static_cast<double>(iters) * threads / elapsed * 1e-9;
}

}  // namespace lowbit
