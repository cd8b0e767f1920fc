// StopStrings: stop sequences over text that arrives in pieces.
#include "server/generate_stream.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace kvtier {
namespace {

// Feeds `pieces` one by one; returns everything shown, Flush included.
std::string Shown(StopStrings* stops, const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) out += stops->Feed(p);
  return out + stops->Flush();
}

TEST(StopStringsTest, TextBeforeTheStopIsShownAndNothingFromItOn) {
  StopStrings stops({"END"});
  EXPECT_EQ(Shown(&stops, {"abc E", "N", "Dxyz", "more"}), "abc ");
  EXPECT_TRUE(stops.matched());
  EXPECT_EQ(stops.match(), "END");
}

TEST(StopStringsTest, APossibleStartIsHeldBackUntilItIsKnown) {
  StopStrings stops({"END"});
  EXPECT_EQ(stops.Feed("abc E"), "abc ");  // "E" may start "END"
  EXPECT_EQ(stops.Feed("N"), "");          // "EN" still may
  EXPECT_EQ(stops.Feed("x"), "ENx");       // it did not
  EXPECT_FALSE(stops.matched());
  EXPECT_EQ(stops.Feed("EN"), "");
  EXPECT_EQ(stops.Flush(), "EN");  // the end came first: shown after all
  EXPECT_FALSE(stops.matched());
}

TEST(StopStringsTest, TheEarliestStopWinsAndAStopInsideOnePieceIsFound) {
  StopStrings stops({"world", "lo w"});
  EXPECT_EQ(Shown(&stops, {"hello world"}), "hel");
  EXPECT_EQ(stops.match(), "lo w");
}

TEST(StopStringsTest, WithoutStopsEverythingIsShownAtOnce) {
  StopStrings stops({});
  EXPECT_EQ(stops.Feed("abc"), "abc");
  EXPECT_EQ(stops.Flush(), "");
  EXPECT_FALSE(stops.matched());
}

}  // namespace
}  // namespace kvtier
