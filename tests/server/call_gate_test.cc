#include "server/call_gate.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

namespace kvtier {
namespace {

TEST(CallGateTest, DrainRefusesNewCallsAndWaitsForRunningOnes) {
  CallGate gate;
  auto a = gate.Enter();
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(gate.running(), 1);
  std::promise<void> draining;
  auto drained = std::async(std::launch::async, [&] {
    draining.set_value();
    return gate.Drain(std::chrono::hours(1));  // returns only when `a` leaves
  });
  draining.get_future().wait();
  // Once Drain has the lock, no new pass is given; until then one may be.
  // Wait (without timing) until the gate refuses.
  for (;;) {
    auto b = gate.Enter();
    if (!b) break;
    std::this_thread::yield();
  }
  a.reset();
  EXPECT_EQ(drained.get(), 0);
  EXPECT_EQ(gate.running(), 0);
  EXPECT_FALSE(gate.Enter().has_value());
}

TEST(CallGateTest, DrainGivesUpAfterTheGraceAndCountsWhatRuns) {
  CallGate gate;
  auto a = gate.Enter();
  EXPECT_EQ(gate.Drain(std::chrono::milliseconds(0)), 1);
  a.reset();
  EXPECT_EQ(gate.running(), 0);
}

}  // namespace
}  // namespace kvtier
