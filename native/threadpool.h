// A small persistent thread pool: the caller thread plus (threads - 1) workers that spin briefly
// and then sleep between jobs. Tasks are claimed dynamically (the caller never waits for a
// worker that has not started), so tasks of one job must not wait for each other. Nested calls
// from inside a job run inline.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

namespace lowbit {

// A job: `task` in [0, ntasks).
using TaskFn = void (*)(void* ctx, int task, int ntasks);

// Below this many (flop-like) operations a parallel loop runs inline on the caller.
constexpr double kInlineWork = 150000.0;

void poolSetThreads(int threads);  // >= 1; takes effect for the next job
int poolThreads();
bool poolInsideJob();  // true on any thread while it runs a task

// Runs fn(ctx, t, ntasks) for every t in [0, ntasks); the caller runs some tasks itself.
void poolRun(int ntasks, TaskFn fn, void* ctx);

// Runs body(begin, end) over `ntasks` contiguous, near-equal chunks of [0, n) on the pool
// (chunks are claimed dynamically), or inline as one chunk when the total `work` is small, the pool
// has one thread, n == 1, or we are nested. Shared by parallelFor and parallelForEach.
template <class Body>
void parallelChunks(int64_t n, double work, int64_t ntasks, Body& body) {
  if (n <= 0) return;
  if (poolThreads() <= 1 || n == 1 || work < kInlineWork || poolInsideJob()) {
    body(int64_t{0}, n);
    return;
  }
  struct Ctx {
    Body* body;
    int64_t n;
  } ctx{&body, n};
  poolRun(static_cast<int>(std::min<int64_t>(ntasks, n)), [](void* raw, int t, int nt) {
    auto* c = static_cast<Ctx*>(raw);
    const int64_t begin = c->n * t / nt, end = c->n * (t + 1) / nt;
    if (begin < end) (*c->body)(begin, end);
  }, &ctx);
}

// parallelFor(n, work, body): body(begin, end) over contiguous chunks of [0, n) (a few chunks per
// thread, claimed dynamically); inline when the total `work` is small, the pool has one thread,
// or we are nested.
template <class Body>
void parallelFor(int64_t n, double work, Body&& body) {
  const int threads = poolThreads();
  parallelChunks(n, work, work < 8 * kInlineWork ? threads : 4 * threads, body);
}

// As parallelFor, with up to `maxTasks` (default 1024) tasks of about n / tasks items each instead
// of a few per thread: for loops over many equal, independent tiles, where a thread that finishes
// early takes the next tile instead of waiting for the others.
template <class Body>
void parallelForEach(int64_t n, double work, Body&& body, int64_t maxTasks = 1024) {
  parallelChunks(n, work, std::min<int64_t>(maxTasks, 65535), body);
}

}  // namespace lowbit
