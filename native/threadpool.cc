// A small persistent thread pool (see threadpool.h).
//
// Tasks are claimed dynamically: the caller and every awake worker take task indices from one
// atomic (job id, next task) word until none are left, so a worker that the OS has not
// scheduled yet (a loaded machine) never holds the caller up -- the caller simply runs the
// remaining tasks itself and only waits for tasks that another thread has actually started.
#include "threadpool.h"

#include <immintrin.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace lowbit {

namespace {

thread_local bool tInsideJob = false;

// How long an idle worker polls for the next job before it sleeps: long enough to bridge the
// gap between two consecutive ops issued from JS. After kSpin of pause-spinning it yields the
// core on each poll (cheap for other processes on a loaded machine) until kPoll, then sleeps.
constexpr auto kSpin = std::chrono::microseconds(50);
constexpr auto kPoll = std::chrono::microseconds(400);

class Pool {
 public:
  ~Pool() { resize(1); }

  int threads() const { return threads_.load(std::memory_order_relaxed); }

  // Holds runMutex_: a resize never overlaps a job or another resize (worker_threads of one process
  // share this pool; two of them resizing at once deadlocked joining a pool thread).
  void resize(int threads) {
    const std::lock_guard<std::mutex> serialize(runMutex_);
    if (threads < 1) threads = 1;
    if (threads == threads_.load(std::memory_order_relaxed)) return;
    stopWorkers();
    threads_.store(threads, std::memory_order_relaxed);
    stop_ = false;
    const uint32_t seen = jobId(state_.load(std::memory_order_acquire));
    for (int w = 1; w < threads; w++) workers_.emplace_back([this, seen] { workerLoop(seen); });
  }

  void run(int ntasks, TaskFn fn, void* ctx) {
    const std::lock_guard<std::mutex> serialize(runMutex_);  // one job at a time
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    const uint32_t job = jobId(state_.load(std::memory_order_relaxed)) + 1;
    state_.store(pack(job, 0, static_cast<uint32_t>(ntasks)), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { const std::lock_guard<std::mutex> lock(mutex_); }
      wake_.notify_all();
    }
    work(job);
    // Tasks claimed by workers that are still running: wait for them (short by construction).
    int spins = 0;
    while (done_.load(std::memory_order_acquire) != ntasks) {
      _mm_pause();
      if (++spins > 4096) sched_yield();
    }
  }

 private:
  // state_: job id (32 bits) | task count (16 bits) | next unclaimed task (16 bits), so that a
  // claim (one CAS) checks the job, its size and the index together.
  static uint64_t pack(uint32_t job, uint32_t next, uint32_t ntasks) {
    return (static_cast<uint64_t>(job) << 32) | (static_cast<uint64_t>(ntasks) << 16) | next;
  }
  static uint32_t jobId(uint64_t s) { return static_cast<uint32_t>(s >> 32); }

  // Claims and runs tasks of `job` until none are left (or the job is no longer current).
  void work(uint32_t job) {
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      if (jobId(s) != job) return;
      const TaskFn fn = fn_.load(std::memory_order_relaxed);
      void* ctx = ctx_.load(std::memory_order_relaxed);
      const int ntasks = static_cast<int>((s >> 16) & 0xFFFF);
      const uint32_t next = static_cast<uint32_t>(s & 0xFFFF);
      if (static_cast<int>(next) >= ntasks) return;
      // The claim succeeds only while `job` is current with tasks left, so fn/ctx read above
      // belong to it (they are written before the job is published and only rewritten after
      // every task of it has been claimed and has finished).
      if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      const bool outer = tInsideJob;
      tInsideJob = true;
      fn(ctx, static_cast<int>(next), ntasks);
      tInsideJob = outer;
      done_.fetch_add(1, std::memory_order_acq_rel);
    }
  }

  void workerLoop(uint32_t seen) {
    for (;;) {
      const auto start = std::chrono::steady_clock::now();
      int polls = 0;
      uint32_t job;
      while ((job = jobId(state_.load(std::memory_order_acquire))) == seen) {
        if (stop_.load(std::memory_order_relaxed)) return;
        if (++polls % 32 != 0) {
          _mm_pause();
          continue;
        }
        const auto waited = std::chrono::steady_clock::now() - start;
        if (waited < kSpin) continue;
        if (waited < kPoll) {
          sched_yield();
          continue;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        wake_.wait(lock, [&] {
          return jobId(state_.load(std::memory_order_seq_cst)) != seen || stop_.load(std::memory_order_relaxed);
        });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
      }
      if (stop_.load(std::memory_order_relaxed)) return;
      seen = job;
      work(job);
    }
  }

  void stopWorkers() {
    if (workers_.empty()) return;
    stop_ = true;
    { const std::lock_guard<std::mutex> lock(mutex_); }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::atomic<int> threads_{1};
  std::vector<std::thread> workers_;
  std::mutex runMutex_, mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> state_{0};
  std::atomic<int> done_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::atomic<TaskFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
};

Pool& pool() {
  static Pool* instance = new Pool();  // never destroyed: workers must not outlive a static dtor
  return *instance;
}

}  // namespace

void poolSetThreads(int threads) { pool().resize(threads); }
int poolThreads() { return pool().threads(); }
bool poolInsideJob() { return tInsideJob; }

void poolRun(int ntasks, TaskFn fn, void* ctx) {
  if (ntasks <= 0) return;
  if (ntasks == 1 || pool().threads() == 1 || tInsideJob || ntasks > 0xFFFF) {
    const bool outer = tInsideJob;
    tInsideJob = true;
    for (int t = 0; t < ntasks; t++) fn(ctx, t, ntasks);
    tInsideJob = outer;
    return;
  }
  pool().run(ntasks, fn, ctx);
}

}  // namespace lowbit
