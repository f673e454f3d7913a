// vpdpbusd throughput and latency on this CPU (not part of the addon). Build and run:
//   g++ -O2 -std=c++17 -o /tmp/vpdpbusd bench/native/vpdpbusd.cc && nice -n 10 /tmp/vpdpbusd > bench/results/native-vpdpbusd.json
// (prints a JSON array, one object per measurement)
// The core clock is estimated from a chain of dependent 64-bit adds (latency 1 cycle on every x86
// core this runs on), timed over the thread's CPU time so time slices lost to other processes do
// not count. Then, for k = 1 .. 24 independent accumulator chains, 'iters' rounds of k vpdpbusd
// (zmm, ymm) are timed: cycles per instruction = 1 / throughput once k covers the latency; with
// k = 1 the figure is the latency.
#include <immintrin.h>

#include <cstdint>
#include <cstdio>
#include <ctime>

namespace {

double cpuSeconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// 8 dependent adds per round
__attribute__((noinline)) uint64_t addChain(long iters) {
  uint64_t a = 1;
  for (long i = 0; i < iters; i++) {
    __asm__ volatile(
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
        "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
        : "+r"(a));
  }
  return a;
}

#define DP_Z(i) __asm__ volatile("vpdpbusd %%zmm30, %%zmm31, %%zmm" #i ::: "xmm" #i);
#define DP_Y(i) __asm__ volatile("vpdpbusd %%ymm14, %%ymm15, %%ymm" #i ::: "xmm" #i);

template <int K, bool Wide>
__attribute__((noinline, target("avx512f,avx512bw,avx512vl,avx512vnni"))) void dpChains(long iters) {
  __asm__ volatile("vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31" ::: "xmm30", "xmm31");
  for (long i = 0; i < iters; i++) {
    if constexpr (Wide) {
      if constexpr (K > 0) DP_Z(0)
      if constexpr (K > 1) DP_Z(1)
      if constexpr (K > 2) DP_Z(2)
      if constexpr (K > 3) DP_Z(3)
      if constexpr (K > 4) DP_Z(4)
      if constexpr (K > 5) DP_Z(5)
      if constexpr (K > 6) DP_Z(6)
      if constexpr (K > 7) DP_Z(7)
      if constexpr (K > 8) DP_Z(8)
      if constexpr (K > 9) DP_Z(9)
      if constexpr (K > 10) DP_Z(10)
      if constexpr (K > 11) DP_Z(11)
      if constexpr (K > 12) DP_Z(12)
      if constexpr (K > 13) DP_Z(13)
      if constexpr (K > 14) DP_Z(14)
      if constexpr (K > 15) DP_Z(15)
      if constexpr (K > 16) DP_Z(16)
      if constexpr (K > 17) DP_Z(17)
      if constexpr (K > 18) DP_Z(18)
      if constexpr (K > 19) DP_Z(19)
      if constexpr (K > 20) DP_Z(20)
      if constexpr (K > 21) DP_Z(21)
      if constexpr (K > 22) DP_Z(22)
      if constexpr (K > 23) DP_Z(23)
    } else {
      // ymm: only 14 chains (ymm0..13; 14 and 15 are the operands, VEX encoding below 16)
      if constexpr (K > 0) DP_Y(0)
      if constexpr (K > 1) DP_Y(1)
      if constexpr (K > 2) DP_Y(2)
      if constexpr (K > 3) DP_Y(3)
      if constexpr (K > 4) DP_Y(4)
      if constexpr (K > 5) DP_Y(5)
      if constexpr (K > 6) DP_Y(6)
      if constexpr (K > 7) DP_Y(7)
      if constexpr (K > 8) DP_Y(8)
      if constexpr (K > 9) DP_Y(9)
      if constexpr (K > 10) DP_Y(10)
      if constexpr (K > 11) DP_Y(11)
      if constexpr (K > 12) DP_Y(12)
      if constexpr (K > 13) DP_Y(13)
    }
  }
}

// vpdpbusd plus a broadcast load from memory per row (the GEMM micro-kernel's mix: one vpbroadcastd
// per row, NP vpdpbusd per broadcast, Rows x NP accumulator chains)
#define BC(r) __asm__ volatile("vpbroadcastd %0, %%zmm29" ::"m"(a[r]) : "xmm29");
#define DPW(w, c) __asm__ volatile("vpdpbusd %%zmm" #w ", %%zmm29, %%zmm" #c ::: "xmm" #c);
template <int Rows, int NP>
__attribute__((noinline, target("avx512f,avx512bw,avx512vl,avx512vnni"))) void dpWithBroadcast(long iters, const int32_t* a) {
  for (long i = 0; i < iters; i++) {
    if constexpr (Rows > 0) {
      BC(0)
      if constexpr (NP == 1) { DPW(30, 0) }
      if constexpr (NP == 2) { DPW(30, 0) DPW(29, 1) }
      if constexpr (NP == 4) { DPW(30, 0) DPW(29, 1) DPW(28, 2) DPW(27, 3) }
    }
    if constexpr (Rows > 1) {
      BC(1)
      if constexpr (NP == 1) { DPW(30, 1) }
      if constexpr (NP == 2) { DPW(30, 2) DPW(29, 3) }
      if constexpr (NP == 4) { DPW(30, 4) DPW(29, 5) DPW(28, 6) DPW(27, 7) }
    }
    if constexpr (Rows > 2) {
      BC(2)
      if constexpr (NP == 1) { DPW(30, 2) }
      if constexpr (NP == 2) { DPW(30, 4) DPW(29, 5) }
      if constexpr (NP == 4) { DPW(30, 8) DPW(29, 9) DPW(28, 10) DPW(27, 11) }
    }
    if constexpr (Rows > 3) {
      BC(3)
      if constexpr (NP == 1) { DPW(30, 3) }
      if constexpr (NP == 2) { DPW(30, 6) DPW(29, 7) }
      if constexpr (NP == 4) { DPW(30, 12) DPW(29, 13) DPW(28, 14) DPW(27, 15) }
    }
    if constexpr (Rows > 4) {
      BC(4)
      if constexpr (NP == 1) { DPW(30, 4) }
      if constexpr (NP == 2) { DPW(30, 8) DPW(29, 9) }
      if constexpr (NP == 4) { DPW(30, 16) DPW(29, 17) DPW(28, 18) DPW(27, 19) }
    }
    if constexpr (Rows > 5) {
      BC(5)
      if constexpr (NP == 1) { DPW(30, 5) }
      if constexpr (NP == 2) { DPW(30, 10) DPW(29, 11) }
      if constexpr (NP == 4) { DPW(30, 20) DPW(29, 21) DPW(28, 22) DPW(27, 23) }
    }
    if constexpr (Rows > 6) {
      BC(6)
      if constexpr (NP == 1) { DPW(30, 6) }
      if constexpr (NP == 2) { DPW(30, 12) DPW(29, 13) }
    }
    if constexpr (Rows > 7) {
      BC(7)
      if constexpr (NP == 1) { DPW(30, 7) }
      if constexpr (NP == 2) { DPW(30, 14) DPW(29, 15) }
    }
    if constexpr (Rows > 8) {
      BC(8)
      if constexpr (NP == 1) { DPW(30, 8) }
      if constexpr (NP == 2) { DPW(30, 16) DPW(29, 17) }
    }
    if constexpr (Rows > 9) {
      BC(9)
      if constexpr (NP == 1) { DPW(30, 9) }
      if constexpr (NP == 2) { DPW(30, 18) DPW(29, 19) }
    }
    if constexpr (Rows > 10) {
      BC(10)
      if constexpr (NP == 1) { DPW(30, 10) }
      if constexpr (NP == 2) { DPW(30, 20) DPW(29, 21) }
    }
    if constexpr (Rows > 11) {
      BC(11)
      if constexpr (NP == 1) { DPW(30, 11) }
      if constexpr (NP == 2) { DPW(30, 22) DPW(29, 23) }
    }
  }
}
#undef DPW
#undef BC

template <class F>
double bestSeconds(F f) {
  double best = 1e30;
  for (int r = 0; r < 7; r++) {
    const double t0 = cpuSeconds();
    f();
    const double t = cpuSeconds() - t0;
    if (t < best) best = t;
  }
  return best;
}

template <int K, bool Wide>
void row(double ghz, long iters) {
  const double s = bestSeconds([&] { dpChains<K, Wide>(iters); });
  const double cyc = s * ghz * 1e9 / (static_cast<double>(iters) * K);
  std::printf(",{\"kind\":\"%s\",\"chains\":%d,\"cyclesPerInstr\":%.3f,\"perCycle\":%.3f,\"gmacs\":%.1f}\n", Wide ? "zmm" : "ymm", K, cyc,
              1.0 / cyc, (Wide ? 64.0 : 32.0) * static_cast<double>(iters) * K / s * 1e-9);
}

}  // namespace

int main() {
  const long addIters = 50'000'000;
  const double sa = bestSeconds([&] { addChain(addIters); });
  const double ghz = 8.0 * addIters / sa * 1e-9;
  std::printf("[{\"kind\":\"clock\",\"ghz\":%.3f}\n", ghz);
  const long it = 20'000'000;
  row<1, true>(ghz, it);
  row<2, true>(ghz, it);
  row<4, true>(ghz, it);
  row<6, true>(ghz, it);
  row<8, true>(ghz, it);
  row<10, true>(ghz, it);
  row<12, true>(ghz, it);
  row<16, true>(ghz, it);
  row<24, true>(ghz, it);
  row<1, false>(ghz, it);
  row<2, false>(ghz, it);
  row<4, false>(ghz, it);
  row<8, false>(ghz, it);
  row<12, false>(ghz, it);
  row<14, false>(ghz, it);
  alignas(64) int32_t a[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  const long bi = 5'000'000;
  const auto mix = [&](const char* name, int rows, int np, void (*f)(long, const int32_t*)) {
    const double s = bestSeconds([&] { f(bi, a); });
    std::printf(",{\"kind\":\"vpbroadcastd + vpdpbusd\",\"rows\":%d,\"panels\":%d,\"cyclesPerDp\":%.3f}\n", rows, np,
                s * ghz * 1e9 / (static_cast<double>(bi) * rows * np));
    (void)name;
  };
  mix("", 6, 1, dpWithBroadcast<6, 1>);
  mix("", 8, 1, dpWithBroadcast<8, 1>);
  mix("", 12, 1, dpWithBroadcast<12, 1>);
  mix("", 6, 2, dpWithBroadcast<6, 2>);
  mix("", 12, 2, dpWithBroadcast<12, 2>);
  mix("", 6, 4, dpWithBroadcast<6, 4>);
  std::printf("]\n");
  return 0;
}
