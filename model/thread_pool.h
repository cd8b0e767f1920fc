// ThreadPool: a fixed set of worker threads that run one parallel loop at a
// time, the caller's thread taking part.
//
// ParallelFor hands out task indices dynamically, so which thread runs a task
// varies from run to run; callers keep results deterministic by giving every
// task its own outputs (no shared reductions). One ParallelFor at a time:
// the pool is used by the engine's stepping thread only.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvtier {

class ThreadPool {
 public:
  // threads <= 0: one per hardware thread. The caller counts as one.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(i) for every i in [0, tasks) and returns when all are done.
  void ParallelFor(int64_t tasks, const std::function<void(int64_t)>& fn);

 private:
  void WorkerLoop();
  void RunTasks(const std::function<void(int64_t)>& fn, int64_t tasks);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  // Guarded by mu_: the current loop, its generation and who is still in it.
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t tasks_ = 0;
  uint64_t generation_ = 0;
  int active_ = 0;
  bool stop_ = false;
  // The next task to claim; reset under mu_ before a generation starts.
  std::atomic<int64_t> next_{0};
};

}  // namespace kvtier
