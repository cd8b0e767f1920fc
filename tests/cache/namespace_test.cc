#include "cache/namespace.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/cache/test_namespace.h"

namespace kvtier {
namespace {

TEST(NamespaceTest, ValidateRejectsBadFields) {
  Namespace ns = TestNamespace();
  for (int bt : {0, 8, 48, 2048}) {
    ns.block_tokens = bt;
    EXPECT_FALSE(ns.Validate().ok()) << bt;
  }
  ns = TestNamespace();
  ns.tp_size = 2;
  ns.tp_rank = 2;
  EXPECT_FALSE(ns.Validate().ok());
  ns = TestNamespace();
  ns.model_id = std::string(300, 'x');
  EXPECT_FALSE(ns.Validate().ok());
}

TEST(NamespaceTest, ToStringDoesNotRevealTheSalt) {
  Namespace ns = TestNamespace();
  ns.cache_salt = "secret-salt";
  EXPECT_EQ(ns.ToString().find("secret"), std::string::npos);
}

}  // namespace
}  // namespace kvtier
