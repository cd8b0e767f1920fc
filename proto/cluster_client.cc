#include "proto/cluster_client.h"

#include <xxhash.h>

#include <algorithm>

namespace kvtier {

ClusterClient::ClusterClient(std::vector<std::string> nodes, const ClientOptions& options,
                             size_t route_tokens)
    : ring_(std::move(nodes)), route_tokens_(route_tokens) {
  for (const std::string& n : ring_.nodes()) {
    ClientOptions o = options;
    o.address = n;
    clients_.push_back(std::make_unique<Client>(o));
  }
}

Client& ClusterClient::For(const BlockKey& key) { return *clients_[ring_.Owner(key)]; }

const std::string& ClusterClient::OwnerOf(const BlockKey& key) const {
  return ring_.nodes()[ring_.Owner(key)];
}

Client& ClusterClient::ForTokens(std::span<const int32_t> tokens) {
  const std::span<const int32_t> first = tokens.first(std::min(tokens.size(), route_tokens_));
  const XXH128_hash_t h = XXH3_128bits(first.data(), first.size_bytes());
  return *clients_[ring_.Owner(BlockKey{h.high64, h.low64})];
}

Result<v1::PutResponse> ClusterClient::Put(const BlockKey& key, v1::PutHeader header,
                                           std::span<const std::byte> payload) {
  header.set_key(key.ToByteString());
  return For(key).Put(std::move(header), payload);
}

Result<FetchedBlock> ClusterClient::Get(const BlockKey& key, const v1::Namespace& ns) {
  return For(key).Get(key, ns);
}

Status ClusterClient::Delete(const BlockKey& key, const v1::Namespace& ns) {
  return For(key).Delete(key, ns);
}

Result<v1::GenerateResponse> ClusterClient::Generate(const v1::GenerateRequest& request) {
  return ForTokens(std::span(request.token_ids().data(), request.token_ids().size()))
      .Generate(request);
}

}  // namespace kvtier
