// AMX-INT8 GEMM (Intel Advanced Matrix Extensions: 8 tile registers of 16 rows x 64 bytes, and
// tdpbusd, a 16 x 16 x 64 u8 x s8 -> int32 multiply-add per instruction, wrapping like vpdpbusd).
//
// Availability (decided once, at first use): CPUID leaf 7 reports AMX-TILE (edx bit 24) and
// AMX-INT8 (edx bit 25), the OS enabled the tile state (XCR0 bits 17 and 18), the active ISA is
// AVX-512 (the epilogues around the GEMM are AVX-512), the kernel grants this process the tile
// data (arch_prctl ARCH_REQ_XCOMP_PERM), and LOWBIT_AMX is not "0". Any failure means no AMX,
// silently; amxStatus() says why. The code is compiled with target attributes in this file only,
// so the addon builds with compilers that know AMX and loads on any x86-64 CPU; without compiler
// support (no LOWBIT_HAVE_AMX) every entry point reports "not compiled in".
//
// Weights (N, K) int8 are packed once into B tiles: K padded with zeros to Kp = 64 ceil(K / 64),
// N to 16 ceil(N / 16); tile (nt, kt) is 1024 contiguous bytes at ((nt * KT) + kt) * 1024, KT =
// Kp / 64, whose row r holds columns 16 nt .. 16 nt + 15 of k-group 16 kt + r, 4 bytes each
// (byte (r, 4 j + i) = w[16 nt + j, 4 (16 kt + r) + i]).
#pragma once
#include <cstdint>
#include <vector>

namespace lowbit {

bool amxAvailable();
// "amx-int8" when available, else the reason ("LOWBIT_AMX=0", "CPU without AMX-INT8", ...).
const char* amxStatus();

inline int64_t amxPaddedK(int64_t K) { return (K + 63) / 64 * 64; }
inline int64_t amxPaddedN(int64_t N) { return (N + 15) / 16 * 16; }
int64_t amxPackedBytes(int64_t N, int64_t K);
// w (N, K) int8 row-major -> packed (amxPackedBytes).
void packAmx(const int8_t* w, int64_t N, int64_t K, int8_t* packed);

// Serial AMX GEMM (for callers inside a pool task, between amxRelease() calls; requires amxAvailable()):
//   c[m * ldc + n] = colBias[n] + sum_k A[m * lda + k] w[n, k]   (int32, wrapping)
// for m < Mp = 16 ceil(M / 16), n < amxPaddedN(N). A is u8, and rows [0, Mp) must be readable
// up to amxPaddedK(K) bytes each (bytes past K meet zero weights); c must hold Mp rows of
// amxPaddedN(N) columns (ldc >= amxPaddedN(N)); colBias holds amxPaddedN(N) values.
void gemmAmxSerial(int64_t M, int64_t N, int64_t K, const uint8_t* A, int64_t lda, const int8_t* packed,
                   const int32_t* colBias, int32_t* c, int64_t ldc);

// Convolution with implicit im2col ("direct tile loads"): for a stride-1-dilation, unpadded conv
// whose kernel row of input bytes (kw C, in (kx, c) order) fits a tile row, the activation tile of
// 16 output positions (oy, ox0 .. ox0 + 15) and kernel row ky is loaded straight from the NHWC
// input: row r at x + ((oy sh + ky) W + (ox0 + r) sw) C, row stride sw C, rowBytes = 4 ceil(kw C / 4)
// bytes (those past kw C meet zero weights). Weights (N, kh kw C) pack per 16 channels and kernel row
// into B tiles of rowBytes / 4 rows: amxConvPackedBytes / packAmxConv.
int64_t amxConvPackedBytes(int64_t N, int64_t kh, int64_t kw, int64_t C);
void packAmxConv(const int8_t* w, int64_t N, int64_t kh, int64_t kw, int64_t C, int8_t* packed);
// c[(oy OW + ox) ldc + n] = colBias[n] + conv (oy < OH, ox < OW, n < amxPaddedN(N)) for one sample x
// [H, W, C] u8; reads up to 16 sw C + rowBytes bytes past the sample's last row, and writes up to
// 16 rows past OH OW (c must hold OH OW + 16 rows); colBias = nullptr: no column bias (the caller
// adds it). Requires amxAvailable().
void amxConvImplicit(const uint8_t* x, int64_t W, int64_t C, int64_t OH, int64_t OW, int64_t sh, int64_t sw, int64_t kh,
                     int64_t kw, int64_t N, const int8_t* packed, const int32_t* colBias, int32_t* c, int64_t ldc);

// Small-K convolution with gathered activation tiles: for a conv whose K = kh kw C taps fit one
// tile row (K <= 64, padded to Kp = 32 or 64 bytes; e.g. a pruned LeNet-5 conv2: 2 channels, 5 x 5,
// K = 50), an activation tile (16 output positions (oy, ox0 .. ox0 + 15) x Kp bytes) is gathered in
// registers by byte permutes from the 192 bytes at pad + oy sh rowBytes + ox0 step of a padded
// input image (rows of rowBytes bytes), tap t of position r at offset off[t] + r step (off[t] =
// ky dh rowBytes + kx dw C + c); bytes past K meet zero weights. amxGatherTables builds the
// permute tables (Kp / 4 vectors: indexes and byte masks) and returns false when some offset is
// >= 192 or the CPU lacks AVX512-VBMI; the weights are packAmx's (N, K) tiles (K <= 64: one k-tile).
int64_t amxGatherKp(int64_t K);
bool amxGatherTables(const int64_t* off, int64_t K, int64_t step, std::vector<uint8_t>* idx, std::vector<uint64_t>* masks);
// c[(oy OW + ox) ldc + n] = sum_t A[., t] w[n, t] (no column bias: the caller adds it; oy < OH,
// ox < OW, n < amxPaddedN(N)) for one padded image; reads up to 192 bytes from the last tile's
// first position and writes up to 16 rows past OH OW (c must hold OH OW + 16 rows). Requires
// amxAvailable() and the tables.
void amxConvGather(const uint8_t* pad, int64_t rowBytes, int64_t OH, int64_t OW, int64_t sh, int64_t step, int64_t K, int64_t N,
                   const uint8_t* idx, const uint64_t* masks, const int8_t* packed, int32_t* c, int64_t ldc);

// c (M, N) = sum_k (a[m, k] - aZero) w[n, k] on the pool threads, weights from packAmx and rowSums
// (sum_k w[n, k]); a signed (int8, +128 applied) or unsigned. Same contract as gemmInt8Packed.
// A C of 1 MB or more whose rows start on 64-byte lines (c aligned, N a multiple of 16) is written
// with non-temporal stores (it bypasses the caches; see amx.cc).
void gemmInt8Amx(int64_t M, int64_t N, int64_t K, const uint8_t* a, bool aSigned, int32_t aZero, const int8_t* packed,
                 const int32_t* rowSums, int32_t* c);

// Returns the calling thread's tile registers to their init state (tilerelease) if it configured
// them. Call at the start of a job that uses gemmAmxSerial / amxConvImplicit (the tile
// configuration is cached per thread within a job; other code may change it between jobs) and at
// its end (idle threads then carry no AMX state through context switches).
void amxRelease();

// tdpbusd throughput on `threads` threads (GOP/s, 2 ops per multiply-add) over each thread's CPU
// time, like vnniPeakGops; 0 without AMX.
double amxPeakGops(int threads, double seconds);

}  // namespace lowbit
