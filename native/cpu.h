// CPU feature detection, runtime ISA choice and the FMA peak probe.
#pragma once
#include <string>
#include <vector>

#define LOWBIT_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")))
#define LOWBIT_TARGET_AVX2 __attribute__((target("avx2,fma")))

namespace lowbit {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// The ISA every kernel dispatches on, chosen once at load: the best the CPU supports,
// lowered by LOWBIT_ISA=avx2|avx2-novnni|scalar (never raised).
Isa activeIsa();

// Whether kernels may use AVX-VNNI (VEX vpdpbusd on ymm): the CPU has it, the active ISA is at
// least AVX2 and LOWBIT_ISA is not avx2-novnni (which tests the AVX2 paths without it).
bool avxVnniActive();
const char* isaName(Isa isa);

// Names of the relevant features the CPU reports (avx2, fma, avx512f, ...).
std::vector<std::string> cpuFeatures();

// Measured fp32 FMA throughput of the active ISA on `threads` threads (GFLOP/s): the best of 5
// runs of a loop of independent FMA chains (about `seconds` in all), each run with one loop per
// pool thread started together and counted only when the loops overlapped (same method for any
// thread count).
double fmaPeakGflops(int threads, double seconds);

// The same measurement for a loop with the SGEMM micro-kernel's loads and FMAs per step (AVX-512:
// 9 broadcasts + 3 vector loads + 27 FMAs; AVX2: 6 + 2 + 12) from panels kept in L1, with no C
// traffic: the most a kernel of that shape can reach here. 0 on the scalar ISA.
double loadFedFmaGflops(int threads, double seconds);

}  // namespace lowbit
