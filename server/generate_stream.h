// The streaming half of Generate (server/context_api.h), for every wire
// protocol.
//
// The engine samples tokens on its stepping thread and must not wait on a
// client; the handler's thread writes to the client and may. A
// GenerateStream carries the tokens across: the engine's callbacks only
// queue them, and the handler relays each batch, as soon as it is there, as
// one GenerateResponse that GenerateMessages builds, to a GenerateSink that
// writes it in the caller's protocol.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "model/tokenizer.h"
#include "proto/kvtier.pb.h"

namespace kvtier {

// Where a Generate's messages go: a gRPC stream, an HTTP response (SSE or a
// whole body). Called on the handler's thread only.
class GenerateSink {
 public:
  virtual ~GenerateSink() = default;
  // Once, when the engine has admitted the request and before its first
  // tokens: the prompt's usage (input, cache reads and writes; no output
  // yet), which some dialects send first. False: the client is gone.
  virtual bool Begin(const v1::Usage& prompt_usage) {
    (void)prompt_usage;
    return true;
  }
  // Sends one batch of generated tokens (ids and text). False when the
  // client is gone: the request is cancelled and nothing more is sent.
  virtual bool Send(const v1::GenerateResponse& part) = 0;
  // While no token comes, KeepAlive runs every keepalive_interval() (never
  // when zero): a chance to send a heartbeat and to notice a client that
  // went away (false: gone, as for Send).
  virtual std::chrono::milliseconds keepalive_interval() const { return {}; }
  virtual bool KeepAlive() { return true; }
};

// The stop strings of a request over the text as it is generated: text that
// may be the start of a stop string is held back until it is known not to
// be, and text from a stop string on is never shown. Not thread-safe.
class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Takes the next generated text and returns what may be shown now. Once a
  // stop string has matched, returns "" for good.
  std::string Feed(const std::string& text);
  // What is still held back (at the end: none of it was a stop string).
  std::string Flush();
  bool matched() const { return matched_ != nullptr; }
  const std::string& match() const { return *matched_; }

 private:
  const std::vector<std::string> stops_;
  std::string held_;
  const std::string* matched_ = nullptr;
};

// The messages of one Generate's tokens: each batch's token ids, and the
// text of those that are not stop tokens (as run.c shows it). A UTF-8
// sequence split across batches goes out whole with the later one. Not
// thread-safe.
class GenerateMessages {
 public:
  // `tokenizer` may be null (token ids only); `prev` is the token before
  // the first generated one (the prompt's last), which decoding looks at.
  // Text is cut at the first of `stop_strings` (which needs a tokenizer).
  GenerateMessages(const Tokenizer* tokenizer, std::vector<TokenId> stop_tokens, TokenId prev,
                   std::vector<std::string> stop_strings = {});

  // The message of `batch` (not empty).
  v1::GenerateResponse Next(const std::vector<TokenId>& batch);
  // True once a stop string has matched: the request should end.
  bool stopped() const { return stops_.matched(); }
  // Puts in the final message the text still held back (an unfinished UTF-8
  // sequence, its bytes replaced by U+FFFD, or the start of a stop string
  // that never came) and, after a stop string, the finish reason
  // "stop_sequence" and the string.
  void Finish(v1::GenerateResponse* final_message);

 private:
  const Tokenizer* tokenizer_;
  const std::vector<TokenId> stop_tokens_;
  TokenId prev_;
  std::string carry_;  // the start of a UTF-8 sequence split across messages
  StopStrings stops_;
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

  // Sends the tokens of request `id` to `sink` until the request has
  // finished, and returns its result. When the client has gone, or a stop
  // string matched, it cancels the request in `engine` and sends nothing
  // more, but still waits for the end: the request finishes and is billed
  // for what was computed.
  // `prompt_usage` turns the request's cache hit into the usage Begin gets.
  GenerateResult Relay(Engine& engine, RequestId id, GenerateSink* sink, GenerateMessages* messages,
                       const std::function<v1::Usage(uint32_t cache_hit_tokens)>& prompt_usage);

 private:
  GenerateStream() = default;
  // Waits for tokens or the end (at most `wait`, when not zero), and moves
  // the tokens that came since the last call into *batch. True once the
  // request has finished (*batch then holds the last of them).
  bool Next(std::chrono::milliseconds wait, std::vector<TokenId>* batch);
  // The cache hit once the engine has admitted the request.
  std::optional<uint32_t> Admitted();

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<TokenId> pending_;  // guarded by mu_
  bool done_ = false;             // guarded by mu_
  std::optional<uint32_t> hit_;   // guarded by mu_; set at admission
  bool hit_seen_ = false;         // guarded by mu_: Next has woken for it
  GenerateResult result_;         // guarded by mu_; set when done_
};

}  // namespace kvtier
