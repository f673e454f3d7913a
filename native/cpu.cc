// CPU feature detection, runtime ISA choice and the FMA peak probe.
#include "cpu.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
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
    if (std::strcmp(forced, "avx2") == 0 || std::strcmp(forced, "avx2-novnni") == 0) want = Isa::Avx2;
    if (std::strcmp(forced, "avx512") == 0) want = Isa::Avx512;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;
  }
  return best;
}

Isa activeIsa() {
  static const Isa isa = detectIsa();
  return isa;
}

bool avxVnniActive() {
  static const bool on = [] {
    __builtin_cpu_init();
    const char* forced = std::getenv("LOWBIT_ISA");
    const bool off = forced != nullptr && std::strcmp(forced, "avx2-novnni") == 0;
    return !off && activeIsa() >= Isa::Avx2 && __builtin_cpu_supports("avxvnni");
  }();
  return on;
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
  LOWBIT_FEATURE("avxvnni")
  LOWBIT_FEATURE("avx512vnni")
  LOWBIT_FEATURE("avx512vpopcntdq")
  LOWBIT_FEATURE("avx512bf16")
#undef LOWBIT_FEATURE
  return out;
}

// ---- FMA probe: 24 independent accumulator chains (latency 4 x 2 ports needs >= 8).
constexpr int kChains = 24;
// Probe runs per measurement; the peak is the best of them.
constexpr int kProbeRuns = 5;

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

// ---- Load-fed probe: the SGEMM micro-kernel's step without its memory hierarchy. Each step
// broadcasts MR values of an A panel, loads NR / lanes vectors of a B panel and does MR x NR / lanes
// FMAs into register tiles -- the same loads and FMAs per step as the GEMM kernels of gemm.cc
// (AVX-512 9 x 48, AVX2 6 x 16) -- with both panels (kLoadSteps steps, ~29 KB) always in L1 and
// no C traffic. It bounds what any kernel of that shape can reach on this core.
constexpr int kLoadSteps = 128;
alignas(64) static float gProbeA[kLoadSteps * 9];
alignas(64) static float gProbeB[kLoadSteps * 48];
static const bool gProbePanelsReady = [] {
  for (int i = 0; i < kLoadSteps * 9; i++) gProbeA[i] = 1e-6f * static_cast<float>(i % 7);
  for (int i = 0; i < kLoadSteps * 48; i++) gProbeB[i] = 1e-6f * static_cast<float>(i % 5);
  return true;
}();

LOWBIT_TARGET_AVX512 static float loadLoopAvx512(long iters) {
  __m512 acc[9][3];
  for (int r = 0; r < 9; r++) acc[r][0] = acc[r][1] = acc[r][2] = _mm512_setzero_ps();
  for (long i = 0; i < iters; i++) {
    const float* a = gProbeA;
    const float* b = gProbeB;
#pragma GCC unroll 4
    for (int k = 0; k < kLoadSteps; k++, a += 9, b += 48) {
      const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32);
#pragma GCC unroll 9
      for (int r = 0; r < 9; r++) {
        const __m512 av = _mm512_set1_ps(a[r]);
        acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(av, b2, acc[r][2]);
      }
    }
  }
  __m512 sum = _mm512_setzero_ps();
  for (int r = 0; r < 9; r++) sum = _mm512_add_ps(sum, _mm512_add_ps(acc[r][0], _mm512_add_ps(acc[r][1], acc[r][2])));
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  return lanes[0] + lanes[15];
}

LOWBIT_TARGET_AVX2 static float loadLoopAvx2(long iters) {
  __m256 acc0[6], acc1[6];
  for (int r = 0; r < 6; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
  for (long i = 0; i < iters; i++) {
    const float* a = gProbeA;
    const float* b = gProbeB;
#pragma GCC unroll 4
    for (int k = 0; k < kLoadSteps; k++, a += 6, b += 16) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
      for (int r = 0; r < 6; r++) {
        const __m256 av = _mm256_broadcast_ss(a + r);
        acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
        acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
      }
    }
  }
  __m256 sum = acc0[0];
  for (int r = 1; r < 6; r++) sum = _mm256_add_ps(sum, _mm256_add_ps(acc0[r], acc1[r]));
  sum = _mm256_add_ps(sum, acc1[0]);
  float out[8];
  _mm256_storeu_ps(out, sum);
  return out[0] + out[7];
}

// The probe loop of the active ISA and the flops of one of its iterations; loop is null when the
// ISA has no such probe (the load-fed probe on the scalar ISA).
struct ProbeLoop {
  float (*loop)(long iters);
  double flopsPerIter;
};

static ProbeLoop probeLoop(bool loadFed) {
  switch (activeIsa()) {
    case Isa::Avx512:
      return loadFed ? ProbeLoop{loadLoopAvx512, kLoadSteps * 27 * 16.0 * 2} : ProbeLoop{fmaLoopAvx512, kChains * 16.0 * 2};
    case Isa::Avx2:
      return loadFed ? ProbeLoop{loadLoopAvx2, kLoadSteps * 12 * 8.0 * 2} : ProbeLoop{fmaLoopAvx2, kChains / 2 * 8.0 * 2};
    default:
      return loadFed ? ProbeLoop{nullptr, 0} : ProbeLoop{fmaLoopScalar, 8.0 * 2};
  }
}

struct ProbeCtx {
  ProbeLoop probe;
  long iters;
  int threads;
  std::atomic<int> arrived{0};
  std::chrono::steady_clock::time_point start[64], end[64];
  int ran[64];
  volatile float sink;
};

// One probe run: every task waits (briefly) until all `threads` tasks have started, so that the
// loops run side by side, then times its own loop. The run counts only if every task ran on its
// own thread and the loops overlapped; the rate is all flops over the span of the loops.
static double probeRun(ProbeCtx& ctx) {
  using Clock = std::chrono::steady_clock;
  ctx.arrived.store(0);
  for (int t = 0; t < ctx.threads; t++) ctx.ran[t] = 0;
  poolRun(ctx.threads, [](void* raw, int t, int nt) {
    auto* c = static_cast<ProbeCtx*>(raw);
    c->arrived.fetch_add(1);
    const auto deadline = Clock::now() + std::chrono::milliseconds(20);
    while (c->arrived.load() < nt && Clock::now() < deadline) _mm_pause();
    c->start[t] = Clock::now();
    c->sink = c->probe.loop(c->iters);
    c->end[t] = Clock::now();
    c->ran[t] = 1;
  }, &ctx);
  auto first = ctx.start[0], last = ctx.end[0], latestStart = ctx.start[0], earliestEnd = ctx.end[0];
  for (int t = 0; t < ctx.threads; t++) {
    if (!ctx.ran[t]) return 0;
    first = std::min(first, ctx.start[t]);
    last = std::max(last, ctx.end[t]);
    latestStart = std::max(latestStart, ctx.start[t]);
    earliestEnd = std::min(earliestEnd, ctx.end[t]);
  }
  if (ctx.threads > 1 && latestStart >= earliestEnd) return 0;  // ran one after the other
  const double span = std::chrono::duration<double>(last - first).count();
  return span > 0 ? ctx.probe.flopsPerIter * static_cast<double>(ctx.iters) * ctx.threads / span * 1e-9 : 0;
}

// Shared by both probes: calibrate on one thread, then the best of kProbeRuns runs side by side.
static double probeGflops(const ProbeLoop& probe, int threads, double seconds) {
  using Clock = std::chrono::steady_clock;
  if (probe.loop == nullptr) return 0;
  if (threads < 1) threads = 1;
  if (threads > 64) threads = 64;
  // Calibrate the iteration count on one thread so that one loop lasts about seconds / 5.
  long iters = 1 << 14;
  double elapsed = 0;
  for (;;) {
    auto t0 = Clock::now();
    float s = probe.loop(iters);
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s == 12345.f) iters++;  // keeps the result alive
    if (elapsed > seconds / 20 || iters > (1L << 40)) break;
    iters *= 2;
  }
  iters = std::max(1L, static_cast<long>(iters * (seconds / kProbeRuns / elapsed)));
  ProbeCtx ctx;
  ctx.probe = probe;
  ctx.iters = iters;
  ctx.threads = threads;
  ctx.sink = 0.f;
  const int saved = poolThreads();
  if (threads > saved) poolSetThreads(threads);
  // The same method for every thread count: the best of several runs (a run disturbed by other
  // processes, or whose loops did not overlap, only lowers its own figure).
  double best = 0;
  for (int r = 0; r < kProbeRuns; r++) best = std::max(best, probeRun(ctx));
  if (threads > saved) poolSetThreads(saved);
  return best;
}

double fmaPeakGflops(int threads, double seconds) { return probeGflops(probeLoop(false), threads, seconds); }

double loadFedFmaGflops(int threads, double seconds) {
  (void)gProbePanelsReady;
  return probeGflops(probeLoop(true), threads, seconds);
}

}  // namespace lowbit
