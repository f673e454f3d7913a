// Optimizer steps (see optim.h). Plain double-precision loops: no FMA contraction (this file is
// built for the baseline ISA, which has none), so every product and sum is rounded as in JS.
#include "optim.h"

#include <cmath>

#include "threadpool.h"

namespace lowbit {

void sgdMomentumStep(float* w, const float* g, float* buf, int64_t n, double lr, double momentum, double keep,
                     double weightDecay, double sign, bool first, bool nesterov) {
  parallelFor(n, 4.0 * static_cast<double>(n), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      const double wi = w[i];
      const double d = sign * static_cast<double>(g[i]) + weightDecay * wi;
      const double b = first ? d : momentum * static_cast<double>(buf[i]) + keep * d;
      buf[i] = static_cast<float>(b);
      w[i] = static_cast<float>(wi - lr * (nesterov ? d + momentum * b : b));
    }
  });
}

void adamStep(float* w, const float* g, float* m, float* v, float* vMax, int64_t n, double beta1, double beta2,
              double l2, double decay, double stepSize, double bias2Sqrt, double eps, double sign) {
  const double oneMinusBeta1 = 1 - beta1, oneMinusBeta2 = 1 - beta2;
  parallelFor(n, 8.0 * static_cast<double>(n), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
      const double theta = w[i];
      const double gi = sign * static_cast<double>(g[i]) + l2 * theta;
      const double mi = beta1 * static_cast<double>(m[i]) + oneMinusBeta1 * gi;
      const double vi = beta2 * static_cast<double>(v[i]) + oneMinusBeta2 * gi * gi;
      m[i] = static_cast<float>(mi);
      v[i] = static_cast<float>(vi);
      double second = vi;
      if (vMax != nullptr) {
        const double vm = vMax[i];  // Math.max: NaN if either is NaN
        second = std::isnan(vm) || std::isnan(vi) ? NAN : vm > vi ? vm : vi;
        vMax[i] = static_cast<float>(second);
      }
      w[i] = static_cast<float>(theta * decay - (stepSize * mi) / (std::sqrt(second) / bias2Sqrt + eps));
    }
  });
}

}  // namespace lowbit
