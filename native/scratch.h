// A growable per-thread scratch buffer: `get(n)` returns at least n floats, reusing the storage of
// earlier calls (declare it thread_local so pool workers never share one).
#pragma once

#include <cstddef>
#include <vector>

namespace lowbit {

struct ScratchBuffer {
  std::vector<float> data;
  float* get(size_t n) {
    if (data.size() < n) data.resize(n);
    return data.data();
  }
};

}  // namespace lowbit
