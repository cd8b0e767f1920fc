// ChatTemplate: how a chat (a system prompt and user/assistant turns) becomes
// the text a model was trained on, as pieces a cache breakpoint can follow.
//
// The same chat always renders to the same pieces, and each piece is
// tokenized on its own, so a repeated system prompt or conversation history
// gives the same tokens and hits the cache. Pieces end after each content
// block that carries cache_control and nowhere else but the prompt's end, so
// a marked prefix is exactly the pieces up to that block.
//
// The template is the model's own where it has one (Hugging Face
// tokenizer_config.json `chat_template`, recognised by family: Llama 3,
// Llama 2 / Mistral [INST], ChatML); a model without one uses the Llama 2
// layout (docs/http-api.md, "Chat templates").
//
// The text is the Hugging Face template's, byte for byte, except:
//  - the leading BOS (<s>, <|begin_of_text|>) is not text: the caller's
//    tokenizer adds BOS to the first piece (later <s> of Llama 2 are text);
//  - a message's blocks are joined with nothing between them;
//  - a last assistant message is a prefill: left open for the model to
//    continue, with no end marker and no new assistant turn;
//  - the Jinja template itself is not run: only its family is recognised
//    (no default system prompt such as Qwen's, no Llama 3.1 date header);
//  - strip()/trim removes ASCII whitespace only.
//
// Immutable; thread-safe.
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
  // chat_template of a family we do not render, naming it; Corruption when
  // the config is not JSON or its chat_template is of the wrong type.
  static Result<ChatTemplate> ForModel(const std::string& model_dir);
  static ChatTemplate Of(Family family) { return ChatTemplate(family); }

  // `messages` rendered, with the assistant's turn opened at the end (the
  // generation prompt) unless the last message is the assistant's (a
  // prefill); system messages may only come first, and consecutive messages
  // of one role are rendered as they are. A piece ends after each block with
  // a cache_ttl, carrying it; blocks between breakpoints share a piece, and
  // the last piece (which may have no ttl) holds the rest. The pieces through
  // a block depend only on the messages up to it, so a longer conversation
  // renders the same pieces up to each breakpoint of its history.
  // InvalidArgument, naming the field ("messages[2].role: ..." with indexes
  // into `messages`), for no messages, an unknown role, a message without
  // text or a system message after a user or assistant one.
  Result<std::vector<ChatPiece>> Render(const std::vector<ChatMessage>& messages) const;

  // A conversation split in two at a user turn, for a stored prefix (a
  // Gemini cachedContent) that later requests continue:
  //   RenderPrefix(A) + RenderContinuation(B) renders as Render(A + B)
  // when B starts with a user message. RenderPrefix ends with the next user
  // turn opened (the text before its content); RenderContinuation starts with
  // that user's content, without the system-first checks (A had its system
  // messages) and with no leading BOS. The one difference from Render(A + B):
  // Llama 2 keeps a user's leading whitespace right after a system prompt,
  // which a continuation cannot see, so it strips it always. Same errors as
  // Render; RenderContinuation also refuses a B that starts otherwise or has
  // a system message ("messages[0].role: ...").
  Result<std::vector<ChatPiece>> RenderPrefix(const std::vector<ChatMessage>& messages) const;
  Result<std::vector<ChatPiece>> RenderContinuation(const std::vector<ChatMessage>& messages) const;

  Family family() const { return family_; }
  // "llama2", "llama3" or "chatml".
  std::string name() const;

 private:
  explicit ChatTemplate(Family family) : family_(family) {}
  // Render's loop: `prev` is the message before the first (null at the start
  // of a chat; a user message for a continuation, whose opening is already
  // rendered), `next` what follows the last (null: the generation prompt).
  std::vector<ChatPiece> RenderBetween(const ChatMessage* prev,
                                       const std::vector<ChatMessage>& messages,
                                       const ChatMessage* next) const;
  Family family_;
};

}  // namespace kvtier
