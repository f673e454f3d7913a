// Optimizer steps over float32 parameters, computed per element in double precision with the
// same operations in the same order as the TypeScript optimizers (src/optim/sgd.ts, adam.ts), so
// both give bit-identical weights; split over the pool's threads.
#pragma once
#include <cstdint>

namespace lowbit {

// SGD with momentum (> 0), per element:
//   d = sign·g + weightDecay·w;  b = first ? d : momentum·buf + keep·d;  buf = b;
//   w = w − lr·(nesterov ? d + momentum·b : b)
void sgdMomentumStep(float* w, const float* g, float* buf, int64_t n, double lr, double momentum, double keep,
                     double weightDecay, double sign, bool first, bool nesterov);

// Adam / AdamW, per element (vMax == nullptr: no AMSGrad):
//   gi = sign·g + l2·w;  m = β1·m + (1−β1)·gi;  v = β2·v + (1−β2)·gi·gi;  s = amsgrad ? max(vMax, v) : v;
//   w = w·decay − (stepSize·m) / (sqrt(s) / bias2Sqrt + eps)
void adamStep(float* w, const float* g, float* m, float* v, float* vMax, int64_t n, double beta1, double beta2,
              double l2, double decay, double stepSize, double bias2Sqrt, double eps, double sign);

}  // namespace lowbit
