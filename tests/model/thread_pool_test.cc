#include "model/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace kvtier {
namespace {

TEST(ThreadPoolTest, RunsEveryTaskExactlyOnce) {
  ThreadPool pool(3);
  EXPECT_EQ(pool.size(), 3);
  for (int round = 0; round < 200; ++round) {
    const int tasks = 1 + round % 37;
    std::vector<std::atomic<int>> hits(tasks);
    pool.ParallelFor(tasks, [&](int64_t i) { hits[i].fetch_add(1); });
    for (int i = 0; i < tasks; ++i) ASSERT_EQ(hits[i].load(), 1) << round << " " << i;
  }
}

}  // namespace
}  // namespace kvtier
