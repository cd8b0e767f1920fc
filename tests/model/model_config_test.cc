#include "model/model_config.h"

#include <gtest/gtest.h>

namespace kvtier {
namespace {

ModelConfig Stories260K() {
  // The shape of ../shared/data/models/stories260K (its README).
  ModelConfig c;
  c.name = "stories260K";
  c.dim = 64;
  c.hidden_dim = 172;
  c.n_layers = 5;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.vocab_size = 512;
  c.max_seq_len = 512;
  return c;
}

TEST(ModelConfigTest, KvGeometryOfAGqaModel) {
  ModelConfig c = Stories260K();
  ASSERT_TRUE(c.Validate().ok());
  EXPECT_EQ(c.head_dim(), 8);
  KvGeometry g = c.Kv(64, DType::kFloat32);
  EXPECT_EQ(g.layers, 5);
  EXPECT_EQ(g.kv_heads, 4);
  EXPECT_EQ(g.head_dim, 8);
  EXPECT_EQ(g.BlockBytes(), 64u * 5 * 2 * 4 * 8 * 4);
}

TEST(ModelConfigTest, ActiveParamsCountTheMatrices) {
  ModelConfig c = Stories260K();
  const uint64_t d = 64, kv = 32, h = 172;
  EXPECT_EQ(c.ActiveParams(), 5 * (2 * d * d + 2 * d * kv + 3 * d * h) + d * 512);
}

TEST(ModelConfigTest, ValidateNamesTheProblem) {
  ModelConfig c = Stories260K();
  c.n_kv_heads = 3;
  Status s = c.Validate();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("n_kv_heads"), std::string::npos);
  c = Stories260K();
  c.dim = 60;
  EXPECT_FALSE(c.Validate().ok());
  c = Stories260K();
  c.vocab_size = 0;
  EXPECT_FALSE(c.Validate().ok());
}

}  // namespace
}  // namespace kvtier
