// ChatTemplate: how a chat (a system prompt and user/assistant turns) becomes
// the text a model was trained on, as pieces a cache breakpoint can follow.
//
// The same chat always renders to the same pieces, and each piece is
// tokenized on its own, so a repeated system prompt or conversation history
// gives the same tokens and hits the cache. A piece ends at every place a
// client may put cache_control (the end of each content block), so a marked
// prefix is exactly the pieces up to that block.
//
// The template is the model's own where it has one (Hugging Face
// tokenizer_config.json `chat_template`, recognised by family: Llama 3,
// Llama 2 / Mistral [INST], ChatML); a model without one uses the Llama 2
// layout (docs/http-api.md).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace kvtier {

// One block of a message's content; `cache_ttl` is "" (no breakpoint), "5m"
// or "1h": the prefix through the end of this block is to be cached.
struct ChatBlock {
  std::string text;
  std::string cache_ttl;
};

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::vector<ChatBlock> content;
};

// A piece of the rendered prompt, to be tokenized on its own, and the
// breakpoint (if any) at its end.
struct ChatPiece {
  std::string text;
  std::string cache_ttl;
};

class ChatTemplate {
 public:
  enum class Family { kLlama2, kLlama3, kChatMl };

  // The template of the model in `model_dir` (a Hugging Face directory with
  // tokenizer_config.json), or Llama 2's when it has none (llama2.c
  // checkpoints, random models). InvalidArgument when the config has a
  // chat_template of a family we do not render, naming it.
  static Result<ChatTemplate> ForModel(const std::string& model_dir);
  static ChatTemplate Of(Family family) { return ChatTemplate(family); }

  // `messages` rendered, with the assistant's turn opened at the end (the
  // generation prompt); system messages may only come first.
  // InvalidArgument for an unknown role, an empty message or a system
  // message after the first turn.
  Result<std::vector<ChatPiece>> Render(const std::vector<ChatMessage>& messages) const;

  Family family() const { return family_; }
  // "llama2", "llama3" or "chatml".
  std::string name() const;

 private:
  explicit ChatTemplate(Family family) : family_(family) {}
  Family family_;
};

}  // namespace kvtier
