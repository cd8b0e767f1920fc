#include "model/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string_view>

#include <nlohmann/json.hpp>

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using Family = ChatTemplate::Family;

bool IsAssistant(const ChatMessage* m) { return m != nullptr && m->role == "assistant"; }
bool IsSystem(const ChatMessage* m) { return m != nullptr && m->role == "system"; }
bool IsUser(const ChatMessage* m) { return m != nullptr && m->role == "user"; }

// Llama 2 (Meta's reference chat format and the Hugging Face template of
// Llama-2-*-chat-hf): each user turn is "<s>[INST] {user} [/INST]", each
// assistant turn " {assistant} </s>", and the system prompt opens the first
// instruction as "<<SYS>>\n{system}\n<</SYS>>\n\n". The <s> of the very first
// turn is the tokenizer's BOS, not text.
std::string Llama2Between(const ChatMessage* prev, const ChatMessage* next) {
  std::string text;
  if (IsSystem(prev)) {
    // A system prompt followed by no instruction still closes one, as the
    // template's strip() of "<<SYS>>...<</SYS>>\n\n" does.
    text = IsUser(next) || IsSystem(next) ? "\n<</SYS>>\n\n" : "\n<</SYS>> [/INST]";
  } else if (IsUser(prev)) {
    text = " [/INST]";
  } else if (IsAssistant(prev)) {
    text = " </s>";
  }
  const std::string open_instruction = prev == nullptr ? "[INST] " : "<s>[INST] ";
  if (IsSystem(next)) {
    text += (IsSystem(prev) ? "" : open_instruction) + "<<SYS>>\n";
  } else if (IsUser(next)) {
    if (!IsSystem(prev)) text += open_instruction;
  } else if (IsAssistant(next)) {
    text += " ";
  }
  return text;
}

// Llama 3 (the Hugging Face template of Meta-Llama-3-*-Instruct):
// "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>" per
// message, then the assistant's header. <|begin_of_text|> is the tokenizer's
// BOS, not text.
std::string Llama3Between(const ChatMessage* prev, const ChatMessage* next) {
  const std::string role = next != nullptr ? next->role : "assistant";
  return (prev != nullptr ? "<|eot_id|>" : "") + ("<|start_header_id|>" + role) +
         "<|end_header_id|>\n\n";
}

// ChatML (Qwen's and others' templates): "<|im_start|>{role}\n{content}<|im_end|>\n"
// per message, then "<|im_start|>assistant\n".
std::string ChatMlBetween(const ChatMessage* prev, const ChatMessage* next) {
  const std::string role = next != nullptr ? next->role : "assistant";
  return (prev != nullptr ? "<|im_end|>\n" : "") + ("<|im_start|>" + role) + "\n";
}

// The text between two messages: how `prev` ends and `next` begins. `prev`
// is null before the first message, `next` after the last, where the text is
// the end of the last message and the generation prompt (the assistant's turn
// opened). It depends on both neighbours, but only ever lands in the piece
// after `prev`'s last block, so a piece never depends on what follows it.
std::string Between(Family family, const ChatMessage* prev, const ChatMessage* next) {
  // A last assistant message is a prefill: the model continues it as it is.
  if (next == nullptr && IsAssistant(prev)) return "";
  switch (family) {
    case Family::kLlama2:
      return Llama2Between(prev, next);
    case Family::kLlama3:
      return Llama3Between(prev, next);
    case Family::kChatMl:
      return ChatMlBetween(prev, next);
  }
  return "";
}

// Which ends of a message's text the template strips of whitespace.
struct Strip {
  bool leading = false;
  bool trailing = false;
};

// Llama 2 strips the first instruction as a whole, system prompt included
// (so a user message after a system prompt keeps its leading whitespace);
// Llama 3 trims every message; ChatML keeps the text as it is.
Strip StripOf(Family family, const ChatMessage* prev, const ChatMessage& m) {
  switch (family) {
    case Family::kLlama2:
      if (m.role == "system") return {};
      return {.leading = !IsSystem(prev), .trailing = true};
    case Family::kLlama3:
      return {.leading = true, .trailing = true};
    case Family::kChatMl:
      return {};
  }
  return {};
}

// Python's str.strip() over ASCII whitespace (Unicode spaces are kept).
constexpr std::string_view kWhitespace = " \t\n\v\f\r";

// `blocks` with the message's text stripped at the ends `strip` names; the
// strip runs across blocks (a block of only whitespace at an end empties and
// the strip goes on into the next), as on the message's joined text.
std::vector<ChatBlock> Stripped(std::vector<ChatBlock> blocks, Strip strip) {
  if (strip.leading) {
    for (ChatBlock& b : blocks) {
      b.text.erase(0, std::min(b.text.size(), b.text.find_first_not_of(kWhitespace)));
      if (!b.text.empty()) break;
    }
  }
  if (strip.trailing) {
    for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) {
      const size_t last = b->text.find_last_not_of(kWhitespace);
      b->text.erase(last == std::string::npos ? 0 : last + 1);
      if (!b->text.empty()) break;
    }
  }
  return blocks;
}

Status ValidateMessages(const std::vector<ChatMessage>& messages) {
  if (messages.empty()) return Status::InvalidArgument("messages: no messages");
  bool past_system = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return Status::InvalidArgument(at + ".role: unknown role '" + m.role +
                                     "' (expected system, user or assistant)");
    }
    if (m.role == "system" && past_system) {
      return Status::InvalidArgument(at + ".role: a system message must come before the " +
                                     "user and assistant messages");
    }
    past_system = past_system || m.role != "system";
    bool has_text = false;
    for (const ChatBlock& b : m.content) has_text = has_text || !b.text.empty();
    if (!has_text) return Status::InvalidArgument(at + ".content: empty (no text)");
  }
  return Status::Ok();
}

// ---- tokenizer_config.json ----------------------------------------------------

// The family a Jinja chat template renders, by the markers only it writes.
std::optional<Family> FamilyOfTemplate(const std::string& text) {
  if (text.find("<|start_header_id|>") != std::string::npos) return Family::kLlama3;
  if (text.find("<|im_start|>") != std::string::npos) return Family::kChatMl;
  if (text.find("[INST]") != std::string::npos) return Family::kLlama2;
  return std::nullopt;
}

Result<json> ReadJsonFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot open '" + path.string() + "'");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return Status::IOError("cannot read '" + path.string() + "'");
  json parsed = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return Status::Corruption("'" + path.string() + "' is not valid JSON");
  }
  return parsed;
}

// The config's chat_template: a string, or Hugging Face's list of named
// templates, of which the one named "default" (the others are for tool use
// or retrieval). "" when the config has none.
Result<std::string> ChatTemplateText(const json& config, const std::string& path) {
  if (!config.is_object() || !config.contains("chat_template")) return std::string();
  const json& tmpl = config["chat_template"];
  if (tmpl.is_null()) return std::string();
  if (tmpl.is_string()) return tmpl.get<std::string>();
  if (tmpl.is_array()) {
    std::string names;
    for (const json& entry : tmpl) {
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
          !entry.contains("template") || !entry["template"].is_string()) {
        return Status::Corruption("'" + path + "': chat_template: expected a list of " +
                                  "{name, template} strings, found " + entry.dump());
      }
      if (entry["name"] == "default") return entry["template"].get<std::string>();
      names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
    }
    return Status::InvalidArgument("'" + path + "': chat_template has no template named " +
                                   "\"default\" (it has: " + names + ")");
  }
  return Status::Corruption("'" + path + "': chat_template: expected a string or a list of " +
                            "{name, template}, found " + std::string(tmpl.type_name()));
}

}  // namespace

Result<ChatTemplate> ChatTemplate::ForModel(const std::string& model_dir) {
  std::error_code ec;
  const fs::path path = fs::path(model_dir) / "tokenizer_config.json";
  if (!fs::is_directory(model_dir, ec) || !fs::exists(path, ec)) return Of(Family::kLlama2);
  KVTIER_ASSIGN_OR_RETURN(const json config, ReadJsonFile(path));
  KVTIER_ASSIGN_OR_RETURN(const std::string text, ChatTemplateText(config, path.string()));
  if (text.empty()) return Of(Family::kLlama2);
  const std::optional<Family> family = FamilyOfTemplate(text);
  if (!family) {
    constexpr size_t kShown = 120;  // characters of the template named in the error
    return Status::InvalidArgument(
        "'" + path.string() + "': chat_template is of a family kvtier does not render (none " +
        "of <|start_header_id|> (Llama 3), <|im_start|> (ChatML), [INST] (Llama 2)): " +
        json(text.substr(0, kShown)).dump() + (text.size() > kShown ? "..." : ""));
  }
  return Of(*family);
}

std::vector<ChatPiece> ChatTemplate::RenderBetween(const ChatMessage* prev,
                                                   const std::vector<ChatMessage>& messages,
                                                   const ChatMessage* next) const {
  std::vector<ChatPiece> pieces;
  std::string text;  // of the piece being built
  // A continuation's first message was opened by its prefix.
  const bool opened = prev != nullptr;
  for (const ChatMessage& m : messages) {
    if (!(opened && &m == &messages.front())) text += Between(family_, prev, &m);
    for (ChatBlock& block : Stripped(m.content, StripOf(family_, prev, m))) {
      text += block.text;
      if (!block.cache_ttl.empty()) {
        pieces.push_back({std::move(text), std::move(block.cache_ttl)});
        text.clear();
      }
    }
    prev = &m;
  }
  text += Between(family_, prev, next);
  if (!text.empty()) pieces.push_back({std::move(text), ""});
  return pieces;
}

Result<std::vector<ChatPiece>> ChatTemplate::Render(
    const std::vector<ChatMessage>& messages) const {
  KVTIER_RETURN_IF_ERROR(ValidateMessages(messages));
  return RenderBetween(nullptr, messages, nullptr);
}

Result<std::vector<ChatPiece>> ChatTemplate::RenderPrefix(
    const std::vector<ChatMessage>& messages) const {
  KVTIER_RETURN_IF_ERROR(ValidateMessages(messages));
  // Only the role of what follows shapes the text between.
  const ChatMessage next_user{"user", {}};
  return RenderBetween(nullptr, messages, &next_user);
}

Result<std::vector<ChatPiece>> ChatTemplate::RenderContinuation(
    const std::vector<ChatMessage>& messages) const {
  KVTIER_RETURN_IF_ERROR(ValidateMessages(messages));
  if (messages.front().role != "user") {
    return Status::InvalidArgument("messages[0].role: a continuation starts with a user " +
                                   std::string("message, not ") + messages.front().role);
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (messages[i].role == "system") {
      return Status::InvalidArgument("messages[" + std::to_string(i) +
                                     "].role: a continuation has no system message");
    }
  }
  // The user turn the prefix opened, as a user message before it: the
  // opening is not rendered again, and the text is stripped as after a user.
  const ChatMessage before{"user", {}};
  return RenderBetween(&before, messages, nullptr);
}

std::string ChatTemplate::name() const {
  switch (family_) {
    case Family::kLlama2:
      return "llama2";
    case Family::kLlama3:
      return "llama3";
    case Family::kChatMl:
      return "chatml";
  }
  return "";
}

}  // namespace kvtier
