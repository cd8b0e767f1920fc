#include "cache/namespace.h"

#include <gtest/gtest.h>

#include <string>

namespace kvtier {
namespace {

Namespace TestNamespace() {
  Namespace ns;
  ns.model_id = "stories260K";
  ns.block_tokens = 16;
  return ns;
}

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
