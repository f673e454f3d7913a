// Times the pieces of the native executor's im2col + GEMM conv path (native/intmodel.cc runConv)
// for one conv geometry, per image, on one thread (not part of the addon). Build and run:
//   g++ -O3 -std=c++17 -pthread -Inative -o /tmp/conv-pieces bench/native/conv-pieces.cc \
//     native/intgemm.cc native/cpu.cc native/threadpool.cc native/intadd.cc native/amx.cc native/conv3x3.cc
//   nice -n 10 /tmp/conv-pieces > bench/results/native-conv-pieces.json   (ResNet-8's five 3x3 geometries)
//   nice -n 10 /tmp/conv-pieces C OC H stride                              (one geometry)
// Prints a JSON array, one object per geometry (times in µs per image).
// It includes intmodel.cc to reach its internal im2col / epilogue. Pieces, each timed over whole
// images (best of several repetitions, thread CPU time): the im2col blocks alone, the GEMM on
// them alone, the requantizing epilogue alone, the whole runConv (im2col + GEMM + epilogue), and
// the whole conv on the direct 3x3 kernel (native/conv3x3.cc) with a check that its output bytes
// equal the im2col path's ("same").
#include "../../native/intmodel.cc"

#include <cstdio>
#include <cstdlib>
#include <random>

namespace {

double cpuNow() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

template <class F>
double bestUs(int images, F f) {
  double best = 1e30;
  for (int r = 0; r < 15; r++) {
    const double t0 = cpuNow();
    f();
    best = std::min(best, cpuNow() - t0);
  }
  return best * 1e6 / images;
}

}  // namespace

void measure(int64_t C, int64_t OC, int64_t H, int64_t stride) {
  using namespace lowbit;
  IntOp op;
  op.kind = IOpKind::Conv;
  op.in = IType::U8;
  op.out = IType::U8;
  op.C = C, op.H = H, op.W = H, op.OC = OC, op.kh = 3, op.kw = 3, op.sh = stride, op.sw = stride, op.ph = 1, op.pw = 1;
  op.OH = (H + 2 - 3) / stride + 1, op.OW = op.OH;
  op.K = 9 * C;
  op.zero = 7;
  std::mt19937 rng(1);
  std::vector<int8_t> w(static_cast<size_t>(OC * op.K));
  for (auto& v : w) v = static_cast<int8_t>(static_cast<int>(rng() % 256) - 128);
  op.packedStride = int8PackedBytes(OC, op.K);
  op.packed.resize(static_cast<size_t>(op.packedStride));
  op.rowSums.resize(static_cast<size_t>(OC));
  packInt8(w.data(), OC, op.K, op.packed.data(), op.rowSums.data());
  std::vector<int32_t> mult(OC, 1 << 30), shift(OC, 40), bias(OC, 100);
  op.up = 1;
  op.mscale.assign(OC, std::ldexp(1.0 * (1 << 30), -40));
  op.bias.assign(OC, 100);
  op.mneg.assign(OC + 8, 0);
  op.z = 3, op.lo = 0, op.hi = 255;
  intPrepareRequant(&op, mult.data(), shift.data(), bias.data(), 0);
  const int images = 64;
  const int64_t inPer = H * H * C, P = op.OH * op.OW;
  std::vector<uint8_t> x(static_cast<size_t>(images * inPer) + kActSlack);
  for (auto& v : x) v = static_cast<uint8_t>(rng());
  std::vector<uint8_t> out(static_cast<size_t>(images * P * OC) + 64), out2(out.size());
  const int64_t Kp = ceilDiv(op.K, 4) * 4, ldt = OC;
  std::vector<uint8_t> col(static_cast<size_t>(kConvRows * Kp) + kSlack);
  std::vector<int32_t> tile(static_cast<size_t>(kConvRows * ldt) + 64);
  Scratch s;
  const double tIm2col = bestUs(images, [&] {
    for (int i = 0; i < images; i++)
      for (int64_t p0 = 0; p0 < P; p0 += kConvRows) im2col(op, x.data() + i * inPer, 0, p0, std::min(P, p0 + kConvRows), col.data(), Kp);
  });
  const double tGemm = bestUs(images, [&] {
    for (int i = 0; i < images; i++)
      for (int64_t p0 = 0; p0 < P; p0 += kConvRows)
        layerGemm(op, 0, std::min(kConvRows, P - p0), col.data(), Kp, tile.data(), ldt);
  });
  const double tEpi = bestUs(images, [&] {
    for (int i = 0; i < images; i++)
      for (int64_t p0 = 0; p0 < P; p0 += kConvRows)
        epilogue(op, tile.data(), ldt, std::min(kConvRows, P - p0), 0, OC, out.data() + i * P * OC + p0 * OC, OC);
  });
  const double tAll = bestUs(images, [&] { runConv(op, x.data(), images, out.data(), nullptr, s); });
  std::printf("{\"C\":%lld,\"OC\":%lld,\"H\":%lld,\"stride\":%lld,\"im2colUs\":%.2f,\"gemmUs\":%.2f,\"epilogueUs\":%.2f,\"runConvUs\":%.2f",
              static_cast<long long>(C), static_cast<long long>(OC), static_cast<long long>(H), static_cast<long long>(stride), tIm2col,
              tGemm, tEpi, tAll);
#ifndef NO_CONV3X3
  // the same conv on the direct 3x3 kernel, checked against the im2col path
  op.conv3x3 = conv3x3Prepare(op, w.data());
  if (op.conv3x3) {
    const double tDirect = bestUs(images, [&] { runConv(op, x.data(), images, out2.data(), nullptr, s); });
    runConv(op, x.data(), images, out2.data(), nullptr, s);
    op.conv3x3.reset();
    runConv(op, x.data(), images, out.data(), nullptr, s);
    std::printf(",\"direct3x3Us\":%.2f,\"same\":%s", tDirect, std::memcmp(out.data(), out2.data(), static_cast<size_t>(images * P * OC)) ? "false" : "true");
  }
#endif
  const double macs = static_cast<double>(P) * OC * op.K;
  std::printf(",\"floorUs\":%.2f}", macs / 64 / 2 / 3.97e3);  // 2 vpdpbusd zmm per cycle at 3.97 GHz (bench/native/vpdpbusd.cc)
}

int main(int argc, char** argv) {
  std::printf("[");
  if (argc > 4) {
    measure(std::atoll(argv[1]), std::atoll(argv[2]), std::atoll(argv[3]), std::atoll(argv[4]));
  } else {
    const int64_t geometries[5][4] = {{16, 16, 28, 1}, {16, 32, 28, 2}, {32, 32, 14, 1}, {32, 64, 14, 2}, {64, 64, 7, 1}};
    for (int i = 0; i < 5; i++) {
      if (i) std::printf(",\n");
      measure(geometries[i][0], geometries[i][1], geometries[i][2], geometries[i][3]);
    }
  }
  std::printf("]\n");
  return 0;
}
