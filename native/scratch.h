// A growable per-thread scratch buffer: `get(n)` returns at least n floats, reusing the storage of
// earlier calls (declare it thread_local so pool workers never share one); cache-line alignment of
// byte buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lowbit {

// Bytes from p to the next 64-byte (cache line) boundary: 0..63.
inline size_t cacheLinePad(const void* p) { return (64 - reinterpret_cast<uintptr_t>(p) % 64) % 64; }

// `count` elements of v starting on a cache line (v grows by up to 64 bytes of slack to allow it).
template <class T>
T* cacheAligned(std::vector<T>& v, size_t count) {
  static_assert(64 % sizeof(T) == 0, "element size must divide a cache line");
  if (v.size() < count + 64 / sizeof(T)) v.resize(count + 64 / sizeof(T));
  return v.data() + cacheLinePad(v.data()) / sizeof(T);
}

struct ScratchBuffer {
  std::vector<float> data;
  float* get(size_t n) {
    if (data.size() < n) data.resize(n);
    return data.data();
  }
};

}  // namespace lowbit
