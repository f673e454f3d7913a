// The elementwise and attention loops of the integer-only Transformer LM of quant.irnn
// (src/quant/irnn/transformer.ts is the specification: these kernels equal its TypeScript loops bit
// for bit; the int8 GEMMs stay in intgemm.cc). Notation of that file:
//   rq(a; M, n)     = round(a·M·2^−n), half away from zero, exact (src/runtime/requantize.ts)
//   roundShift(v, s) = floor((v + 2^(s−1)) / 2^s)
// Layouts: residual x [rows, E] int32; qkv codes [rows, 3E] int32 (Q | K | V); KV cache keys, values
// [batch, H, capacity, d] int8 (head hd of sequence n at position j is row (n·H + hd)·capacity + j).
#pragma once
#include <cstdint>

namespace lowbit {

// x[(n·steps + t)·E + e] = clamp(rq(table[id·E + e]; mult[id], shift[id]) + positions[(past + t)·E + e], ±2^24)
// for id = ids[n·steps + t] (the caller checked 0 <= id < V).
void intTfEmbed(int64_t rows, int64_t steps, int64_t past, int64_t E, const int32_t* ids, const int8_t* table,
                const int32_t* mult, const int32_t* shift, const int32_t* positions, int32_t* x);

struct IntTfLayerNorm {
  int64_t size = 0;
  const int32_t* gamma = nullptr;  // [size], |γ| <= 32767
  const int32_t* beta = nullptr;   // [size]
  int64_t epsCode = 0;             // [0, 2^30]
  int32_t multiplier = 0, shift = 0;
  int64_t sqrtSize = 0;            // round(√size·2^20)
  int32_t outMin = 0, outMax = 0;
};

// The integer LayerNorm of `rows` rows of x [rows, size] (|x| <= 2^24) into int8 out [rows, size]
// (quant/irnn/layernorm.ts intLayerNormRow).
void intTfLayerNormRows(const IntTfLayerNorm& p, int64_t rows, const int32_t* x, int8_t* out);

// The output stage of an integer Linear over acc [M, R]: v = clamp(rq(acc + bias[r]; mult[r], shift[r]), lo, hi), then
// mode 0: out32[i] = v; mode 1: out32[i] = clamp(out32[i] + v, ±2^24) (the residual add); mode 2: out8[i] = v.
void intTfRequantize(int64_t M, int64_t R, const int32_t* acc, const int32_t* bias, const int32_t* mult,
                     const int32_t* shift, int32_t lo, int32_t hi, int mode, int32_t* out32, int8_t* out8);

// i-GELU: out[i] = clamp(rq(t·(2^15 + intErf(t)); M, n), lo, hi) with intErf(t) = sign(t)·(roundShift(erfA·c², 24) + 2^15),
// c = min(|t|, erfClip) − erfClip, for |t| <= 2^20.
void intTfGelu(int64_t count, const int32_t* t, int32_t multiplier, int32_t shift, int32_t lo, int32_t hi,
               int32_t erfClip, int32_t erfA, int8_t* out);

// i-GELU's parameters (intTfGelu's): out = clamp(rq(t·(2^15 + intErf(t)); multiplier, shift), lo, hi).
struct IntTfGelu {
  int32_t multiplier = 0, shift = 0, lo = 0, hi = 0, erfClip = 0, erfA = 0;
};

// fc1's output stage and i-GELU fused: t = clamp(rq(acc + bias[r]; mult[r], shift[r]), lo, hi) (|lo|, |hi| <= 2^20),
// out[i] = i-GELU(t) (int8): intTfRequantize mode 0 then intTfGelu, without the int32 codes in memory.
void intTfRequantizeGelu(int64_t M, int64_t R, const int32_t* acc, const int32_t* bias, const int32_t* mult, const int32_t* shift,
                         int32_t lo, int32_t hi, const IntTfGelu& g, int8_t* out);

// The head's float step: out[m·V + r] = float((acc[m·V + r] + bias[r])·scale[r]) with the product in double
// (the TypeScript loop's rounding: one double rounding, then to float32).
void intTfHead(int64_t M, int64_t V, const int32_t* acc, const int32_t* bias, const float* scale, float* out);

struct IntTfAttention {
  int64_t batch = 0, steps = 0, past = 0, capacity = 0, heads = 0, headDim = 0;
  int32_t scoreMult = 0, scoreShift = 0;  // Σ q·k → scores at 2^−12, clamp ±2^24
  int32_t probsMult = 0, probsShift = 0, probsMax = 0;  // p at 2^−16 → codes in [0, probsMax]
  int32_t contextMult = 0, contextShift = 0, contextMin = 0, contextMax = 0;  // Σ p·v → context codes
};

// Appends the K and V codes of the new positions past..past+steps−1 (from qkv) to keys and values, then
// runs the causal attention of every new query (scores, I-BERT i-exp softmax, A·V) into context [rows, E].
void intTfAttention(const IntTfAttention& p, const int32_t* qkv, int8_t* keys, int8_t* values, int8_t* context);
// The same with the Q, K, V codes as int8 (intTfRequantize mode 2): a quarter of the bytes.
void intTfAttention(const IntTfAttention& p, const int8_t* qkv, int8_t* keys, int8_t* values, int8_t* context);

// Which loops run: "avx512" (8 int64 lanes per vector; each loop falls back to the scalar one where its
// bounds do not hold: a requantization shift outside [16, 63], a constant LayerNorm row, ...) or "scalar"
// (an ISA below AVX-512, or the vector loops turned off). Both give the same integers.
const char* intTfLoops();

// Allows (default) or forbids the AVX-512 loops (benchmarks and tests compare both in one process).
void intTfSetVector(bool on);

// Why the kernels cannot run these requantization shifts exactly (nullptr when they can): the
// shifts must lie in [-32, 100].
const char* intTfShiftProblem(int32_t shift);

// ---------------------------------------------------------------- the fused forward
// An integer Linear with its weights packed once (intgemm.h packInt8: VNNI panel + row sums) and its
// output stage: clamp(rq(Σ x·w[r] + bias[r]; mult[r], shift[r]), lo, hi) on int8 inputs x (zero point 0).
struct IntTfLinear {
  int64_t in = 0, out = 0;
  const int8_t* packed = nullptr;
  const int32_t* rowSums = nullptr;
  const int32_t* bias = nullptr;
  const int32_t* mult = nullptr;
  const int32_t* shift = nullptr;
  int32_t lo = 0, hi = 0;
};

// One pre-LN block: x += proj(attention(qkv(ln1(x)))); x += fc2(act(fc1(ln2(x)))). The Q, K, V codes are int8
// (qkv.lo >= −128, qkv.hi <= 127); act = i-GELU fused with fc1's output stage (|fc1.lo|, |fc1.hi| <= 2^20) or,
// gelu false, ReLU as fc1's int8 codes (fc1.lo >= −128, fc1.hi <= 127). keys / values: the block's KV cache.
struct IntTfBlock {
  IntTfLayerNorm ln1, ln2;
  IntTfLinear qkv, proj, fc1, fc2;
  IntTfAttention attention;  // the requantization scalars and heads; batch, steps, past, capacity come per call
  bool gelu = true;
  IntTfGelu g;
  int8_t* keys = nullptr;
  int8_t* values = nullptr;
};

struct IntTfModel {
  int64_t E = 0, V = 0, maxContext = 0;
  const int8_t* table = nullptr;      // [V, E]
  const int32_t* tokenMult = nullptr;  // [V]
  const int32_t* tokenShift = nullptr; // [V]
  const int32_t* positions = nullptr;  // [maxContext, E]
  const IntTfBlock* blocks = nullptr;
  int64_t numBlocks = 0;
  IntTfLayerNorm lnFinal;
  const int8_t* headPacked = nullptr;  // [V, E] packed
  const int32_t* headRowSums = nullptr;
  const int32_t* headBias = nullptr;
  const float* headScale = nullptr;
};

// The whole forward of ids [batch, steps] at positions past..past+steps−1 (KV caches of `capacity` positions)
// in one call: the same integers as intTfEmbed, then per block the calls above (intTfLayerNormRows,
// gemmInt8Packed + intTfRequantize, intTfAttention, intTfRequantizeGelu, ...), then lnFinal and the head's
// float step (intTfHead). The work is split by groups of whole sequences (one pool task each, claimed
// dynamically; intTfForwardGroup), every stage of a group running on that thread over its rows with the serial int8 GEMM, so
// the int32 accumulators and int8 codes of a group stay in its core's cache and the pool wakes once per call.
// x [batch·steps, E] receives the residual stream after the last block; headMode 0: no logits, 1: logits
// [batch·steps, V] of every row, 2: logits [batch, V] of each sequence's last row.
void intTfForward(const IntTfModel& m, int64_t batch, int64_t steps, int64_t past, int64_t capacity, const int32_t* ids, int32_t* x,
                  int headMode, float* logits);

// Sequences per task of intTfForward for `batch` sequences of `steps` new positions: about 128 rows per task, and
// at least 2 tasks per pool thread when the batch has enough sequences.
int64_t intTfForwardGroup(int64_t batch, int64_t steps);

// intTfForward's stage timers: the stages, in the order of intTfProfile's array.
enum IntTfStage {
  kTfEmbed, kTfLayerNorm, kTfQkvGemm, kTfQkvOut, kTfAttention, kTfProjGemm, kTfProjOut, kTfFc1Gemm, kTfFc1Out, kTfFc2Gemm, kTfFc2Out,
  kTfHeadGemm, kTfHeadOut, kTfStages
};

// Turns the stage timers on or off; with `seconds` (kTfStages values) first reads and resets them: the wall
// seconds of each stage summed over the threads since the last read.
void intTfProfile(bool on, double* seconds);

}  // namespace lowbit
