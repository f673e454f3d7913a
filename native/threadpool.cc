// A small persistent thread pool (see threadpool.h).
#include "threadpool.h"

#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lowbit {

namespace {

thread_local bool tInsideJob = false;

// How long an idle worker spins before it sleeps: long enough to bridge the gap between two
// consecutive small ops issued from JS, short enough not to burn a core when JS is busy.
constexpr auto kSpin = std::chrono::microseconds(200);

class Pool {
 public:
  ~Pool() { resize(1); }

  int threads() const { return threads_; }

  void resize(int threads) {
    if (threads < 1) threads = 1;
    if (threads == threads_) return;
    stopWorkers();
    threads_ = threads;
    stop_ = false;
    // A worker waits for the generation after the current one: read it here, not in the new
    // thread, or a job published before the thread starts would be missed.
    const uint64_t seen = generation_.load(std::memory_order_acquire);
    for (int w = 1; w < threads_; w++) workers_.emplace_back([this, w, seen] { workerLoop(w, seen); });
  }

  void run(int ntasks, TaskFn fn, void* ctx) {
    const std::lock_guard<std::mutex> serialize(runMutex_);  // one job at a time
    fn_ = fn;
    ctx_ = ctx;
    ntasks_ = ntasks;
    pending_.store(threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { const std::lock_guard<std::mutex> lock(mutex_); }
      wake_.notify_all();
    }
    runTasks(0);
    while (pending_.load(std::memory_order_acquire) != 0) _mm_pause();
  }

 private:
  void runTasks(int worker) {
    tInsideJob = true;
    for (int t = worker; t < ntasks_; t += threads_) fn_(ctx_, t, ntasks_);
    tInsideJob = false;
  }

  void workerLoop(int worker, uint64_t seen) {
    for (;;) {
      // Spin, then sleep, until a new job (or stop) is published.
      auto deadline = std::chrono::steady_clock::now() + kSpin;
      int spins = 0;
      while (generation_.load(std::memory_order_acquire) == seen) {
        _mm_pause();
        if (++spins % 64 == 0 && std::chrono::steady_clock::now() > deadline) {
          std::unique_lock<std::mutex> lock(mutex_);
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          wake_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
          sleepers_.fetch_sub(1, std::memory_order_relaxed);
        }
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stop_) return;
      runTasks(worker);
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }

  void stopWorkers() {
    if (workers_.empty()) return;
    stop_ = true;
    generation_.fetch_add(1, std::memory_order_seq_cst);
    { const std::lock_guard<std::mutex> lock(mutex_); }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  int threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex runMutex_, mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int ntasks_ = 0;
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
  if (ntasks == 1 || pool().threads() == 1 || tInsideJob) {
    const bool outer = tInsideJob;
    tInsideJob = true;
    for (int t = 0; t < ntasks; t++) fn(ctx, t, ntasks);
    tInsideJob = outer;
    return;
  }
  pool().run(ntasks, fn, ctx);
}

}  // namespace lowbit
