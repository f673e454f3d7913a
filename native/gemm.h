// SGEMM: C = op(A) * op(B) + beta * C on float32 row-major buffers.
#pragma once
#include <cstdint>

namespace lowbit {

// op(A) is (M, K): A is (M, K) with row stride lda, or (K, M) when transA.
// op(B) is (K, N): B is (K, N) with row stride ldb, or (N, K) when transB.
// C is (M, N) with row stride ldc. beta == 0 never reads C.
struct GemmArgs {
  bool transA = false, transB = false;
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  int64_t lda = 0;
  const float* B = nullptr;
  int64_t ldb = 0;
  float beta = 0.f;
  float* C = nullptr;
  int64_t ldc = 0;
};

// Runs on the calling thread only.
void sgemmSerial(const GemmArgs& g);

// Splits C between the pool's threads when the problem is big enough.
void sgemm(const GemmArgs& g);

// `batch` independent products; A, B, C advance by strideA, strideB, strideC elements per item
// (a stride of 0 reuses the same matrix).
void sgemmBatched(const GemmArgs& g, int64_t batch, int64_t strideA, int64_t strideB, int64_t strideC);

// Unpacked kernels for the skinny products of small convolutions (serial, on the caller):
// C (M, N) = beta * C + A (M, K) . B (K, N) with A(i, k) = A[i * rsA + k * csA] and B rows
// contiguous (row stride ldb). Best when M or K is small (no packing at all).
void sgemmSmallNN(int64_t M, int64_t N, int64_t K, const float* A, int64_t rsA, int64_t csA, const float* B,
                  int64_t ldb, float beta, float* C, int64_t ldc);
// sgemmSmallNN with beta = 0 for `samples` products that share A: B and C advance by strideB,
// strideC per sample (a 1x1 conv over several images); equal bit for bit to one call per sample.
// AVX-512 only, as sgemmDotNTAcc (its callers are the conv paths behind smallKernels()).
// With `ep`, row i of every C is stored as min(hi, relu(C * scale[i] + bias[i])): the product
// rounded on its own before the add, a null bias adds 0, NaN stays NaN (conv2dFused's epilogue,
// bit for bit as convEpiloguePlane applies it afterwards).
struct RowEpilogue {
  const float* scale = nullptr;
  const float* bias = nullptr;
  bool relu = false;
  float hi = 0.f;
};
void sgemmSmallNNSamples(int64_t samples, int64_t M, int64_t N, int64_t K, const float* A, int64_t rsA, int64_t csA,
                         const float* B, int64_t ldb, int64_t strideB, float* C, int64_t ldc, int64_t strideC,
                         const RowEpilogue* ep = nullptr);
// As sgemmSmallNN with beta = 0, but row k of B starts at B + koff[k] (an implicit im2col: a
// stride-1 convolution reads its input rows at per-tap offsets, no column matrix needed).
void sgemmSmallOffsets(int64_t M, int64_t N, int64_t K, const float* A, int64_t rsA, int64_t csA, const float* B,
                       const int64_t* koff, float* C, int64_t ldc);
// C (M, N) = beta * C + A (M, K) . B^T with B (N, K): dot products of contiguous rows; for small
// M and N with long K.
void sgemmDotNT(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                float beta, float* C, int64_t ldc);

// Lane-wise accumulation for summing many sgemmDotNT products (e.g. over a batch): acc
// (M, N, 16 lanes) += the unreduced 16-lane partial dot products; sgemmDotNTReduce then adds
// the lanes of each (i, j) into C (M, N) (ldc). AVX-512 only (callers check activeIsa()).
void sgemmDotNTAcc(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                   float* acc);
void sgemmDotNTReduce(int64_t M, int64_t N, const float* acc, float* C, int64_t ldc);

}  // namespace lowbit
