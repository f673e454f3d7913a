/**
 * The raw interface of the C++ addon (build/Release/lowbit_native.node, built by
 * scripts/build-native.mjs; loaded by load.ts). Every function reads and writes the given
 * Float32Arrays in place.
 */

/** The raw functions of the addon; shapes are plain numbers, geometry packed in Int32Arrays. */
export interface NativeAddon {
  info(): { isa: 'avx512' | 'avx2' | 'scalar'; threads: number; features: string[]; /** 'amx-int8' or why AMX is off */ amx?: string };
  setThreads(threads: number): void;
  /** Measured fp32 FMA GFLOP/s of the active ISA on `threads` threads, running about `seconds`. */
  fmaPeak(threads: number, seconds?: number): number;
  /** The FMA probe with the SGEMM micro-kernel's loads per step (panels in L1, no C traffic); 0 on the scalar ISA. */
  loadFedPeak(threads: number, seconds?: number): number;
  /** SGD-with-momentum step in place, per element in double precision as src/optim/sgd.ts. */
  sgdMomentumStep(w: Float32Array, g: Float32Array, buf: Float32Array, lr: number, momentum: number, keep: number, weightDecay: number, sign: number, first: boolean, nesterov: boolean): void;
  /** Adam/AdamW step in place (vMax null: no AMSGrad), per element in double precision as src/optim/adam.ts. */
  adamStep(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, vMax: Float32Array | null, beta1: number, beta2: number, l2: number, decay: number, stepSize: number, bias2Sqrt: number, eps: number, sign: number): void;
  /** Batched C = op(A)·op(B) + beta·C (row-major, leading dimensions in elements). */
  sgemm(
    transA: boolean, transB: boolean, m: number, n: number, k: number,
    a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number,
    batch: number, strideA: number, strideB: number, strideC: number,
  ): void;
  /** geom: [N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups] */
  conv2d(x: Float32Array, w: Float32Array, y: Float32Array, geom: Int32Array): void;
  conv2dBackwardInput(dy: Float32Array, w: Float32Array, dx: Float32Array, geom: Int32Array): void;
  conv2dBackwardWeight(x: Float32Array, dy: Float32Array, dw: Float32Array, geom: Int32Array): void;
  /** Depthwise conv kernels (groups = C = O, native/dwconv.cc) on / off; returns the previous setting. Absent from older addons. */
  setDepthwiseConv?(on: boolean): boolean;
  /**
   * y = maxPool(relu(conv2d(x, w) + bias)); epilogue: [relu 0/1, pool kh, pool kw, pool sh, pool sw]
   * (pool kh 0 = no pooling; pooling has no padding); bias null = no bias.
   */
  conv2dFused(x: Float32Array, w: Float32Array, bias: Float32Array | null, y: Float32Array, geom: Int32Array, epilogue: Int32Array, clampMax?: number, scale?: Float32Array): void;
  /** AdderNet: y = -Σ|patch - w| (geom as conv2d's). Absent from addons built before it existed. */
  adderConv2d?(x: Float32Array, w: Float32Array, y: Float32Array, geom: Int32Array): void;
  /** AdderNet's estimator gradient: part 0 'input' (out like x), 1 'weight' (out like w). */
  adderConv2dGrad?(part: 0 | 1, g: Float32Array, x: Float32Array, w: Float32Array, out: Float32Array, geom: Int32Array): void;
  /** geom: [N, C, H, W, OH, OW, KH, KW, sh, sw, ph, pw] */
  maxPool2d(x: Float32Array, y: Float32Array, geom: Int32Array): void;
  maxPool2dBackward(dy: Float32Array, x: Float32Array, dx: Float32Array, geom: Int32Array): void;
  maxPool2dGather(g: Float32Array, x: Float32Array, y: Float32Array, geom: Int32Array): void;
  avgPool2d(x: Float32Array, y: Float32Array, geom: Int32Array): void;
  avgPool2dBackward(dy: Float32Array, dx: Float32Array, geom: Int32Array): void;
  /** op: index in UNARY_OPS */
  unary(op: number, x: Float32Array, y: Float32Array): void;
  /** op: index in BINARY_OPS; layout: [d0, d1, d2, aStrides x3, bStrides x3] */
  binary(op: number, a: Float32Array, b: Float32Array, out: Float32Array, layout: Int32Array): void;
  where(cond: Float32Array | Int32Array, a: Float32Array, b: Float32Array, out: Float32Array): void;
  softmax(x: Float32Array, y: Float32Array, rows: number, cols: number, log: boolean): void;
  /** spec: [d0, d1, d2, d3, p0, p1, p2, p3] (rank 4) */
  transpose(x: Float32Array, y: Float32Array, spec: Int32Array): void;
  /**
   * The fused Transformer layers (native/transformer.h; absent from addons built before them):
   * layerNorm over rows of `width`; layerNormBackward writes [dx, dw, db] into `out`; gelu / geluBackward
   * (tanh: the tanh form); attention on qkv [batch, length, 3·embed] -> [batch, length, embed].
   */
  layerNorm?(x: Float32Array, w: Float32Array, b: Float32Array, y: Float32Array, rows: number, width: number, eps: number): void;
  layerNormBackward?(g: Float32Array, x: Float32Array, w: Float32Array, out: Float32Array, rows: number, width: number, eps: number): void;
  /**
   * Training-mode BatchNorm of x [n, c, s] (batch statistics per channel); batchNormBackward writes
   * [dx, dw, db] into `out`; batchNormStats writes [mean (c), biased variance (c)], which
   * batchNorm / batchNormBackward take as `stats` instead of computing them. clamp /
   * clampBackward: number-bound clamp (ReLU6) and its gradient mask.
   */
  batchNorm?(x: Float32Array, w: Float32Array, b: Float32Array, y: Float32Array, n: number, c: number, s: number, eps: number, stats?: Float32Array, lo?: number, hi?: number): void;
  batchNormBackward?(g: Float32Array, x: Float32Array, w: Float32Array, out: Float32Array, n: number, c: number, s: number, eps: number, stats?: Float32Array, lo?: number, hi?: number, bias?: Float32Array): void;
  batchNormStats?(x: Float32Array, out: Float32Array, n: number, c: number, s: number): void;
  /** batchNormStats's adjoint: dx = (x − mean)·2·g[1]/M + g[0]/M per channel (stats = batchNormStats(x)). */
  batchNormStatsBackward?(g: Float32Array, x: Float32Array, stats: Float32Array, dx: Float32Array, n: number, c: number, s: number): void;
  clamp?(x: Float32Array, y: Float32Array, count: number, lo: number, hi: number): void;
  clampBackward?(g: Float32Array, x: Float32Array, dx: Float32Array, count: number, lo: number, hi: number): void;
  gelu?(x: Float32Array, y: Float32Array, n: number, tanh: boolean): void;
  geluBackward?(g: Float32Array, x: Float32Array, dx: Float32Array, n: number, tanh: boolean): void;
  attention?(qkv: Float32Array, out: Float32Array, batch: number, length: number, embed: number, heads: number, causal: boolean): void;
  /** Softmax cross-entropy per row / its gradient; false (nothing written) when a target is out of [0, classes). */
  crossEntropyLoss?(x: Float32Array, targets: Int32Array, loss: Float32Array, rows: number, classes: number): boolean;
  crossEntropyLossBackward?(g: Float32Array, x: Float32Array, targets: Int32Array, dx: Float32Array, rows: number, classes: number): boolean;
  attentionBackward?(g: Float32Array, qkv: Float32Array, dqkv: Float32Array, batch: number, length: number, embed: number, heads: number, causal: boolean): void;
  /** Decoding over a KV cache: qkv [batch, steps, 3·embed], keys / values [batch, capacity, embed] -> out [batch, steps, embed] (the decodeAttention primitive). */
  decodeAttention?(qkv: Float32Array, keys: Float32Array, values: Float32Array, out: Float32Array, batch: number, steps: number, capacity: number, embed: number, heads: number, past: number): void;
  /**
   * A float32 TransformerLM step over its KV caches in one call (native/decode-step.h floatTfDecode): embedding,
   * every pre-LN block (the new keys / values written into the caches), lnFinal and the head's logits; the
   * intermediates stay in native scratch. dims = [batch, steps, past, capacity, E, heads, V, maxContext, numBlocks,
   * mlpDim, activation (0 GELU erf, 1 GELU tanh, 2 ReLU)], eps = [ln1, ln2 per block, lnFinal]; a block is
   * [ln1.w, ln1.b, qkv.W, qkv.b, proj.W, proj.b, ln2.w, ln2.b, fc1.W, fc1.b, fc2.W, fc2.b, keys, values] (a null bias
   * = none), final = [lnFinal.w, lnFinal.b, head.W, head.b]; logits [batch, steps, V]. Argument checks: binding.cc FloatTfDecode.
   */
  floatTfDecode?(
    dims: Int32Array, eps: Float32Array, ids: Int32Array, embed: readonly [Float32Array, Float32Array],
    blocks: readonly (readonly (Float32Array | null)[])[], final: readonly (Float32Array | null)[], logits: Float32Array,
  ): void;
  /**
   * The fused recurrent sequences (src/backend/primitives.ts), dims = [L, N, H, batchFirst 0/1, reverse 0/1]:
   * lstmSequence(gates, w, bias, h0, c0, out), lstmSequenceBackward(g, out, w, c0, grads),
   * gruSequence(gates, w, biasIh, biasHh, h0, out), gruSequenceBackward(g, out, w, h0, grads).
   */
  lstmSequence(gates: Float32Array, w: Float32Array, bias: Float32Array, h0: Float32Array, c0: Float32Array, out: Float32Array, dims: Int32Array): void;
  lstmSequenceBackward(a0: Float32Array, a1: Float32Array, a2: Float32Array, a3: Float32Array, result: Float32Array, dims: Int32Array): void;
  gruSequence(gates: Float32Array, w: Float32Array, biasIh: Float32Array, biasHh: Float32Array, h0: Float32Array, out: Float32Array, dims: Int32Array): void;
  gruSequenceBackward(a0: Float32Array, a1: Float32Array, a2: Float32Array, a3: Float32Array, result: Float32Array, dims: Int32Array): void;
  /**
   * Inference-only recurrent layer-directions (native/recurrent.h), input projection included, no
   * gate activations kept; dims [L, N, H, batchFirst, reverse, E]. out = [h per step (x's row order)
   * | h_N | c_N] for the LSTM, [h per step | h_N] for the GRU.
   */
  lstmInference(x: Float32Array, wIh: Float32Array, wHh: Float32Array, bias: Float32Array, h0: Float32Array, c0: Float32Array, out: Float32Array, dims: Int32Array): void;
  gruInference(x: Float32Array, wIh: Float32Array, wHh: Float32Array, biasIh: Float32Array, biasHh: Float32Array, h0: Float32Array, out: Float32Array, dims: Int32Array): void;
  /**
   * op 0 = sum (float64 accumulation), 1 = max (NaN propagates) of x viewed as `groups`
   * (merged dims, row-major), reducing the groups flagged 1 in `reduced`; y holds the kept ones.
   */
  reduce(op: 0 | 1, x: Float32Array, y: Float32Array, groups: Int32Array, reduced: Int32Array): void;
  /** x (outer, len, inner) -> y (outer, inner): index of the first maximum */
  argmax(x: Float32Array, y: Int32Array, outer: number, len: number, inner: number): void;
  /** x (outer, len, inner), idx (m) -> y (outer, m, inner); false when an index is out of range */
  gather<T extends Float32Array | Int32Array>(x: T, idx: Int32Array, y: T, outer: number, len: number, inner: number): boolean;
  /** y (outer, len, inner, zeroed) += u (outer, m, inner) at idx; false when an index is out of range */
  scatterAdd(u: Float32Array, idx: Int32Array, y: Float32Array, outer: number, len: number, inner: number): boolean;
  /** dst[dstOff + i·dstStrides] = src[srcOff + i·srcStrides] over the box; spec = [shape, srcStrides, dstStrides] */
  copyStrided<T extends Float32Array | Int32Array>(src: T, srcOff: number, dst: T, dstOff: number, spec: Int32Array): void;
  /** float32 -> int32 (truncate, ToInt32 wrap) or int32 -> float32 */
  cast(x: Float32Array | Int32Array, y: Float32Array | Int32Array): void;
  /** y = (clamp(roundHalfEven(x / s) + z, qmin, qmax) - z) * s with s, z read at (i / inner) % mid */
  fakeQuantize(
    x: Float32Array, s: Float32Array, z: Float32Array, y: Float32Array,
    sMid: number, sInner: number, zMid: number, zInner: number, qmin: number, qmax: number,
  ): void;
  /** One part of fakeQuantize's gradient: part 0 = x (ste), 1 = x (clipped), 2 = scale, 3 = zero point */
  fakeQuantizeGrad(
    g: Float32Array, x: Float32Array, s: Float32Array, z: Float32Array, y: Float32Array,
    sMid: number, sInner: number, zMid: number, zInner: number, qmin: number, qmax: number, part: 0 | 1 | 2 | 3,
  ): void;
  /**
   * Part 2 (scale) or 3 (zero point) of fakeQuantizeGrad summed to its operand: y[p] for p below
   * that operand's mid, float64 sums over fixed chunks (independent of the thread count)
   */
  fakeQuantizeGradSum(
    g: Float32Array, x: Float32Array, s: Float32Array, z: Float32Array, y: Float32Array,
    sMid: number, sInner: number, zMid: number, zInner: number, qmin: number, qmax: number, part: 2 | 3,
  ): void;
  /**
   * Part 1 (x, clipped; xPart 1) or 0 (x, ste; xPart 0) into gx and part 2 (scale) summed as
   * fakeQuantizeGradSum into gs, in one pass. Optional so that an older addon build still loads.
   */
  fakeQuantizeGradXScale?(
    g: Float32Array, x: Float32Array, s: Float32Array, z: Float32Array, gx: Float32Array, gs: Float32Array,
    sMid: number, sInner: number, zMid: number, zInner: number, qmin: number, qmax: number, xPart: 0 | 1,
  ): void;
  /** op 0 = roundHalfEven, 1 = sign with sign(0) = +1 */
  estimator(op: 0 | 1, x: Float32Array, y: Float32Array): void;

  // ---------------------------------------------------------------- integer kernels (native/intgemm.h)
  // Used by src/runtime/kernels; optional so that an older addon build still loads.
  /** Which integer paths are active: int8 'avx512-vnni' | 'avx-vnni' (ymm, AVX2 ISA with AVX-VNNI) | 'avx2' | 'scalar', binary 'avx512-vpopcntdq' | 'avx2-pshufb' | 'scalar'. */
  intKernelsInfo?(): { int8: string; binary: string; amx?: string };
  /** Bytes of the AMX weight tiles for (N, K) (native/amx.h: K padded to 64, N to 16). */
  amxPackedBytes?(n: number, k: number): number;
  /** w (N, K) int8 -> AMX weight tiles `packed` (amxPackedBytes(N, K)). */
  packInt8Amx?(w: Int8Array, n: number, k: number, packed: Int8Array): void;
  /** As gemmInt8Packed on the AMX tiles (tdpbusd); throws when AMX is unavailable (intKernelsInfo().amx says why). */
  gemmInt8Amx?(m: number, n: number, k: number, a: Int8Array | Uint8Array, aZero: number, packed: Int8Array, rowSums: Int32Array, c: Int32Array): void;
  /** Measured tdpbusd throughput (GOP/s) on `threads` threads; 0 without AMX. */
  amxPeakGops?(threads: number, seconds?: number): number;
  /** Bytes to skip from the view's start to the next 64-byte (cache line) boundary of its data. */
  alignmentPad?(view: ArrayBufferView): number;
  /** Bytes of the VNNI-packed int8 weight panel for (N, K). */
  int8PackedBytes?(n: number, k: number): number;
  /** w (N, K) int8 -> VNNI panel `packed` (int8PackedBytes(N, K)) and rowSums (N). */
  packInt8?(w: Int8Array, n: number, k: number, packed: Int8Array, rowSums: Int32Array): void;
  /** Packed int4 / int2 rows (ceil(K·bits/8) bytes each) -> VNNI panel and rowSums. */
  packLowBit?(w: Uint8Array, bits: 4 | 2, n: number, k: number, packed: Int8Array, rowSums: Int32Array): void;
  /** c (M, N) = Σ_k (a[m, k] − aZero)·w[n, k]; activations int8 or uint8 by array type. */
  gemmInt8Packed?(m: number, n: number, k: number, a: Int8Array | Uint8Array, aZero: number, packed: Int8Array, rowSums: Int32Array, c: Int32Array): void;
  /** As gemmInt8Packed with int4 / int2 weight rows, unpacked into a per-call panel. */
  gemmLowBit?(bits: 4 | 2, m: number, n: number, k: number, a: Int8Array | Uint8Array, aZero: number, w: Uint8Array, c: Int32Array): void;
  /** c (M, N) = K − 2·popcount(a_m xor w_n), rows of ceil(K/64)·8 bytes. */
  gemmBinary?(m: number, n: number, k: number, a: Uint8Array, w: Uint8Array, c: Int32Array): void;
  /** Fixed-point requantization (gemmlowp semantics), per-channel multiplier (Q31) and shift. */
  requantize?(acc: Int32Array, m: number, n: number, mult: Int32Array, shift: Int32Array, zOut: number, qmin: number, qmax: number, out: Int8Array | Uint8Array): void;
  /** Measured vpdpbusd throughput (GOP/s, 2 ops per multiply-add) on `threads` threads; 0 without VNNI. */
  vnniPeakGops?(threads: number, seconds?: number): number;
  /** Measured xor + vpopcntq throughput (Gbit/s) on `threads` threads; 0 without VPOPCNTDQ. */
  popcountPeakGbits?(threads: number, seconds?: number): number;
  /**
   * Compiles an IntModel plan (src/runtime/native-plan.ts builds the op list). Each flag (default
   * true) allows one fast path, false disables it (cross-checks): `direct` the direct one-channel
   * conv kernel, `amx` the AMX-INT8 GEMM (when available), `fuse` max pooling fused into the conv before it and a Linear's sign stage into its GEMM micro-kernel,
   * `intRequant` requantization in int64 lanes (else in doubles; both exact). `xnor`: true forces XNOR-popcount for a
   * conv with ±1 inputs (meta[32] = 1) and ±1 weights, padded ones included; false never; absent (default) only where
   * the int8 GEMM is the scalar one (measured faster there, slower than AVX-512 VNNI; native/xnorconv.h). Both exact.
   */
  intPlanCreate?(ops: readonly NativeIntOp[], direct?: boolean, amx?: boolean, fuse?: boolean, intRequant?: boolean, xnor?: boolean): NativeIntPlan;
  /** The kernel of each executed op of a plan, e.g. 'conv direct+maxpool', 'conv amx', 'linear avx512-vnni', 'linear binary'. */
  intPlanKernels?(plan: NativeIntPlan): string[];
  /**
   * The executor's integer add (plan op kind 6; its AVX-512 / AVX2 kernel where exact): out[i] = clamp(z +
   * addRescaled(a[i] − z_a, M_a, b[i] − z_b, M_b, shift), lo, hi); params = [z_a, z_b, M_a, M_b, shift, z, lo, hi].
   * a, b, out: Uint8Array (u8), Int8Array (s8) or Int32Array (int32), one length; [lo, hi] must fit out's type. For tests.
   */
  intAddValues?(a: Uint8Array | Int8Array | Int32Array, b: Uint8Array | Int8Array | Int32Array, params: Float64Array, out: Uint8Array | Int8Array | Int32Array): void;
  /**
   * The executor's sign add (plan op kind 6 with mode 1; its AVX-512 / AVX2 kernel where exact): out[i] = +1 where
   * (a[i] − z_a)·M_a + (b[i] − z_b)·M_b ≥ 0, else −1; params = [z_a, z_b, M_a, M_b] (int32, |M| ≤ 2^31 − 1).
   * a, b: Uint8Array (u8), Int8Array (s8) or Int32Array (int32) of out's length. For tests.
   */
  intSignAddValues?(a: Uint8Array | Int8Array | Int32Array, b: Uint8Array | Int8Array | Int32Array, params: Float64Array, out: Int8Array): void;
  /**
   * The executor's average pooling (plan op kind 4; its AVX-512 / AVX2 kernel where exact) of n samples [H, W, C] of x
   * (Uint8Array u8, Int8Array s8 or Int32Array int32) into out [n, OH, OW, C]: z + round half to even of the window's
   * Σ (q − z·2^F) / (kh·kw·2^F); dims = [n, C, H, W, kh, kw, sh, sw, ph, pw, z, F]. Returns the kernel's name. For tests.
   */
  intAvgPoolValues?(x: Uint8Array | Int8Array | Int32Array, dims: Float64Array, out: Int32Array): string;
  /** Runs `n` samples of a plan: x (n, inputSize) -> out (n, outputSize) float32 logits. */
  intPlanRun?(plan: NativeIntPlan, x: Float32Array, n: number, out: Float32Array): void;
  /**
   * Profiling (benchmarks): runs `n` samples of a plan serially on the calling thread, in the chunks
   * a `threads`-thread intPlanRun uses, adding each executed op's thread CPU time (ns) to `nanos`.
   */
  intPlanProfile?(plan: NativeIntPlan, x: Float32Array, n: number, out: Float32Array, threads: number, nanos: Float64Array): void;
  /**
   * The integer LSTM cell of quant.irnn (native/irnn.h), whose path for these parameters it returns
   * ('avx512' | 'avx2' | 'avx2-loop' | 'scalar'); throws when the kernel refuses them. dims = [steps, batch, hidden,
   * input, outMult, outShift, sigmoid shift, min, max, tanh shift, min, max]; rows = multIh | shiftIh | multHh |
   * shiftHh | bias (4H each); sigmoid, tanh = knots (n + 1) | values (n) | slopes (n).
   */
  intLstmPath?(dims: Int32Array, rows: Int32Array, sigmoid: Int32Array, tanh: Int32Array): string;
  /**
   * A whole IntLSTM sequence: x (L, N, I) int8, W_ih and W_hh packed by packInt8 with their rowSums,
   * h0 (N, H), c (N, H) initial cell in, final cell out, out (L, N, H) int8 h per step. Bit-identical to
   * IntLSTM's TypeScript cell.
   */
  intLstmSequence?(
    dims: Int32Array, rows: Int32Array, sigmoid: Int32Array, tanh: Int32Array, x: Int8Array, packedIh: Int8Array,
    rowSumsIh: Int32Array, packedHh: Int8Array, rowSumsHh: Int32Array, h0: Int8Array, c: Int16Array, out: Int8Array,
  ): void;
  /**
   * The integer next-word LM head (native/intlmhead.h): out (M, N) float32 =
   * float32((acc · scale[n]) · hiddenScale + bias[n]) in double, acc = h (M, K) int8 × W (N, K) int8
   * packed by packInt8; the same floats as IntNextWordModel's TypeScript loop.
   */
  intLmHead?(m: number, n: number, k: number, h: Int8Array, packed: Int8Array, rowSums: Int32Array, scale: Float32Array, bias: Float32Array, hiddenScale: number, out: Float32Array): void;
  /**
   * The integer GRU cell of quant.irnn (native/intgru.h), whose path for these parameters it returns
   * ('avx512' | 'avx2' | 'avx2-loop' | 'scalar', the best that runs them); throws when the kernel refuses them. dims as intLstmPath's;
   * rows = multIh | shiftIh | multHh | shiftHh | bias (3H each) | biasHn (H).
   */
  intGruPath?(dims: Int32Array, rows: Int32Array, sigmoid: Int32Array, tanh: Int32Array): string;
  /**
   * A whole IntGRU sequence: x (L, N, I) int8, W_ih and W_hh packed by packInt8 with their rowSums, h0
   * (N, H), out (L, N, H) int8 h per step. Bit-identical to IntGRU's TypeScript cell. `path` (benchmarks, tests):
   * a cell path to run instead of the best one; throws when it cannot run here.
   */
  intGruSequence?(
    dims: Int32Array, rows: Int32Array, sigmoid: Int32Array, tanh: Int32Array, x: Int8Array, packedIh: Int8Array,
    rowSumsIh: Int32Array, packedHh: Int8Array, rowSumsHh: Int32Array, h0: Int8Array, out: Int8Array, path?: string,
  ): void;
  // ---------------------------------------------------------------- end of integer kernels
  // ---------------------------------------------------------------- integer Transformer LM loops (native/inttransformer.h)
  /**
   * quant.irnn IntTransformerLM's embedding: x[row, e] = clamp(rq(table[id, e]; mult[id], shift[id]) + positions[past + t, e], ±2^24)
   * for the ids [rows] (row = n·steps + t); dims = [rows, steps, past, E, V, maxContext].
   */
  intTfEmbed?(dims: Int32Array, ids: Int32Array, table: Int8Array, mult: Int32Array, shift: Int32Array, positions: Int32Array, x: Int32Array): void;
  /** The integer LayerNorm (quant.irnn intLayerNormRow) of int32 rows x → int8 out; dims = [rows, size, epsCode, multiplier, shift, sqrtSize, outMin, outMax]. */
  intTfLayerNorm?(dims: Int32Array, gamma: Int32Array, beta: Int32Array, x: Int32Array, out: Int8Array): void;
  /**
   * An integer Linear's output stage over acc [M, R]: v = clamp(rq(acc + bias[r]; mult[r], shift[r]), lo, hi); dims = [M, R, lo, hi, mode],
   * mode 0: out = v (Int32Array), 1: out = clamp(out + v, ±2^24) (Int32Array, the residual add), 2: out = v (Int8Array).
   */
  intTfRequantize?(dims: Int32Array, acc: Int32Array, bias: Int32Array, mult: Int32Array, shift: Int32Array, out: Int32Array | Int8Array): void;
  /** i-GELU of t (int32, grid 2^−12) → clamp(rq(t·(2^15 + intErf(t)); M, n), lo, hi); dims = [count, M, n, lo, hi, erfClip, erfA]. */
  intTfGelu?(dims: Int32Array, t: Int32Array, out: Int8Array): void;
  /**
   * One block's causal attention: appends the new K, V codes of qkv [N·S, 3E] to keys, values [N, H, capacity, d] at positions
   * past.., then scores, i-exp softmax and A·V of every new query into context [N·S, E] (qkv: the codes as int32, checked to
   * lie in [−128, 127], or as int8); dims = [N, S, past, capacity, H, d,
   * scoreMult, scoreShift, probsMult, probsShift, probsMax, contextMult, contextShift, contextMin, contextMax].
   */
  intTfAttention?(dims: Int32Array, qkv: Int32Array | Int8Array, keys: Int8Array, values: Int8Array, context: Int8Array): void;
  /**
   * fc1's output stage and i-GELU in one pass: t = clamp(rq(acc + bias[r]; mult[r], shift[r]), lo, hi) (|lo|, |hi| ≤ 2^20), then
   * out = clamp(rq(t·(2^15 + intErf(t)); geluMult, geluShift), geluLo, geluHi) (Int8Array); dims = [M, R, lo, hi, geluMult,
   * geluShift, geluLo, geluHi, erfClip, erfA]. The same integers as intTfRequantize (mode 0) then intTfGelu.
   */
  intTfRequantizeGelu?(dims: Int32Array, acc: Int32Array, bias: Int32Array, mult: Int32Array, shift: Int32Array, out: Int8Array): void;
  /** The head's logits: out[m, r] = float32((acc[m, r] + bias[r])·scale[r]), the product in float64; dims = [M, V]. */
  intTfHead?(dims: Int32Array, acc: Int32Array, bias: Int32Array, scale: Float32Array, out: Float32Array): void;
  /**
   * The integer Transformer LM's whole forward in one call (native/inttransformer.h intTfForward): embedding, every
   * block (LayerNorms, the four int8 GEMMs on packInt8 panels with their output stages, attention with the KV
   * caches), lnFinal and the head's float logits, split by groups of whole sequences over the pool, each group's
   * stages on one thread. The same integers and logits as the calls above. Argument layout: binding.cc IntTfForward.
   */
  intTfForward?(
    dims: Int32Array, ids: Int32Array, embed: readonly [Int8Array, Int32Array, Int32Array, Int32Array],
    blocks: readonly (readonly (Int32Array | Int8Array)[])[], lnFinal: readonly [Int32Array, Int32Array],
    head: readonly [Int8Array, Int32Array, Int32Array, Float32Array], x: Int32Array, logits: Float32Array | undefined,
  ): void;
  /**
   * intTfForward's stage timers: the CPU seconds (thread CPU time) of each stage summed over the threads since the last call (embed,
   * layerNorm, qkvGemm, qkvOut, attention, projGemm, projOut, fc1Gemm, fc1Out, fc2Gemm, fc2Out, headGemm, headOut),
   * then timers on (`on`) or off. For the profiler.
   */
  intTfProfile?(on: boolean): Float64Array;
  /**
   * Which of those loops run: 'avx512' (the vector loops, each falling back to the scalar one where its bounds
   * fail) or 'scalar' (an ISA below AVX-512, or the vector loops forbidden); `vector` false forbids the
   * vector loops, true allows them again (benchmarks and tests: both give the same integers).
   */
  intTfLoops?(vector?: boolean): string;
  // ---------------------------------------------------------------- end of integer Transformer LM loops
}

/** An opaque native IntModel plan (an N-API external). */
export type NativeIntPlan = { readonly __nativeIntPlan: unique symbol };

/** One op of a native IntModel plan (layout of `meta` / `f64`: native/binding.cc IntPlanCreate). */
export interface NativeIntOp {
  readonly meta: Int32Array;
  readonly f64: Float64Array;
  readonly w?: Int8Array;
  readonly wbits?: Uint8Array;
  readonly mult?: Int32Array;
  readonly shift?: Int32Array;
  readonly bias?: Int32Array;
  readonly threshold?: Int32Array;
  readonly direction?: Int32Array;
  readonly S?: Float32Array;
  readonly B?: Float32Array;
  /** permute op (kind 7): out[p] = in[index[p]] per sample, index values in [0, elements). */
  readonly index?: Int32Array;
  /** A per-group linear (meta[33] = G > 0): r [OC, K/G]; `index` (optional) = the input position of each weight column. */
  readonly groupMult?: Int32Array;
}

/** Operation codes shared with native/elementwise.h (same order as the C++ enums). */
export const UNARY_OPS = ['neg', 'exp', 'log', 'sqrt', 'relu', 'sigmoid', 'tanh', 'abs'] as const;
/** unary() codes after UNARY_OPS: castFloat's rounding to fp16 / bf16 (UnaryOp::RoundFp16 / RoundBf16). */
export const CAST_FLOAT_CODES = { fp16: UNARY_OPS.length, bf16: UNARY_OPS.length + 1 } as const;
export const BINARY_OPS = [
  'add', 'sub', 'mul', 'div', 'maximum', 'minimum', 'greater', 'greaterEqual', 'equal', 'reluBackward',
] as const;
