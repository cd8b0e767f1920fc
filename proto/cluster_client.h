// ClusterClient: a client of a set of kvtierd nodes (DESIGN §10). Each block
// key is sent to its owner among them by the same rendezvous hashing the
// nodes use (common/rendezvous.h), so an external engine spreads its blocks
// over the nodes and finds each one where it put it; a prompt's calls
// (Lookup, Generate) go to the owner of its first `route_tokens` tokens, so
// the turns of one conversation land on one node. The depth is a trade: a
// prefix every request shares (one system prompt) longer than it sends
// everything to one node; the replay's cluster mode (bench/RESULTS.md,
// "Scale-out simulation") found one block too shallow on the Mooncake trace
// and two enough. A node that misses asks the
// others itself (--peers), so any node can answer any key; routing only
// saves that hop.
//
// Thread-safe; one Client (one channel) per node.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/rendezvous.h"
#include "proto/client.h"

namespace kvtier {

class ClusterClient {
 public:
  // `nodes`: every node's gRPC address, as the nodes list each other;
  // `options` (its address ignored) applies to each node's client.
  ClusterClient(std::vector<std::string> nodes, const ClientOptions& options,
                size_t route_tokens = 128);

  // The client of `key`'s owner.
  Client& For(const BlockKey& key);
  // The client of the node that owns a prompt: its first `route_tokens`
  // token ids (all of them when shorter) decide.
  Client& ForTokens(std::span<const int32_t> tokens);
  // The owner's address, for logs and tests.
  const std::string& OwnerOf(const BlockKey& key) const;

  Result<v1::PutResponse> Put(const BlockKey& key, v1::PutHeader header,
                              std::span<const std::byte> payload);
  Result<FetchedBlock> Get(const BlockKey& key, const v1::Namespace& ns = {});
  Status Delete(const BlockKey& key, const v1::Namespace& ns = {});
  Result<v1::GenerateResponse> Generate(const v1::GenerateRequest& request);

 private:
  Rendezvous ring_;
  size_t route_tokens_;
  std::vector<std::unique_ptr<Client>> clients_;  // in ring_.nodes() order
};

}  // namespace kvtier
