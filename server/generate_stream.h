// The streaming half of ContextCache.Generate (server/context_cache_service.h).
//
// The engine samples tokens on its stepping thread and must not wait on a
// client; the handler's thread writes to the client and may. A
// GenerateStream carries the tokens across: the engine's callbacks only
// queue them, and the handler relays each batch, as soon as it is there, as
// one GenerateResponse that GenerateMessages builds.
#pragma once

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "model/tokenizer.h"
#include "proto/kvtier.grpc.pb.h"
#include "server/stream_guard.h"

namespace kvtier {

// The messages of one Generate's tokens: each batch's token ids, and the
// text of those that are not stop tokens (as run.c shows it). A UTF-8
// sequence split across batches goes out whole with the later one. Not
// thread-safe.
class GenerateMessages {
 public:
  // `tokenizer` may be null (token ids only); `prev` is the token before
  // the first generated one (the prompt's last), which decoding looks at.
  GenerateMessages(const Tokenizer* tokenizer, std::vector<TokenId> stop_tokens, TokenId prev);

  // The message of `batch` (not empty).
  v1::GenerateResponse Next(const std::vector<TokenId>& batch);
  // Puts in the final message the text still held back: an unfinished
  // sequence, its bytes replaced by U+FFFD.
  void Finish(v1::GenerateResponse* final_message) const;

 private:
  const Tokenizer* tokenizer_;
  const std::vector<TokenId> stop_tokens_;
  TokenId prev_;
  std::string carry_;  // the start of a UTF-8 sequence split across messages
};

// One Generate's tokens on their way from the engine to the client.
// Thread-safe; shared by the handler and the engine's callbacks, so it lives
// as long as either may use it.
class GenerateStream : public std::enable_shared_from_this<GenerateStream> {
 public:
  // A new stream fed by `request`, whose on_token it sets. Submit the
  // request with OnDone() as its callback.
  static std::shared_ptr<GenerateStream> Attach(GenerateRequest* request);
  Engine::Callback OnDone();

  // Writes the tokens to the client, through `slot` (the watchdog cancels a
  // client that stops reading), until the request has finished, and returns
  // its result. Once the client has gone it writes nothing more, but still
  // waits for the end: the request finishes and is billed.
  GenerateResult Relay(grpc::ServerContext* ctx, grpc::ServerWriter<v1::GenerateResponse>* writer,
                       StreamGuard::Slot* slot, GenerateMessages* messages);

 private:
  GenerateStream() = default;
  // Waits for tokens or the end, and moves the tokens that came since the
  // last call into *batch. True once the request has finished (*batch then
  // holds the last of them).
  bool Next(std::vector<TokenId>* batch);

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<TokenId> pending_;  // guarded by mu_
  bool done_ = false;             // guarded by mu_
  GenerateResult result_;         // guarded by mu_; set when done_
};

}  // namespace kvtier
