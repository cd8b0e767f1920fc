#include "model/chat_template.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace kvtier {
namespace {

namespace fs = std::filesystem;
using Family = ChatTemplate::Family;

const Family kFamilies[] = {Family::kLlama2, Family::kLlama3, Family::kChatMl};

ChatMessage Message(std::string role, std::string text, std::string ttl = "") {
  return {std::move(role), {{std::move(text), std::move(ttl)}}};
}

// The chat every family's exact text is checked on.
std::vector<ChatMessage> SystemUserAssistantUser() {
  return {Message("system", "You are terse."), Message("user", "Hi there."),
          Message("assistant", "Hello."), Message("user", "What is 2+2?")};
}

std::string Joined(const std::vector<ChatPiece>& pieces) {
  std::string text;
  for (const ChatPiece& p : pieces) text += p.text;
  return text;
}

std::string RenderText(Family family, const std::vector<ChatMessage>& messages) {
  Result<std::vector<ChatPiece>> pieces = ChatTemplate::Of(family).Render(messages);
  EXPECT_TRUE(pieces.ok()) << pieces.status();
  return pieces.ok() ? Joined(*pieces) : "";
}

// ---- the text of each family ----------------------------------------------------

TEST(ChatTemplateTest, Llama2IsMetasLayoutWithoutTheFirstBos) {
  EXPECT_EQ(RenderText(Family::kLlama2, SystemUserAssistantUser()),
            "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there. [/INST] Hello. </s>"
            "<s>[INST] What is 2+2? [/INST]");
  EXPECT_EQ(RenderText(Family::kLlama2, {Message("user", "Hi")}), "[INST] Hi [/INST]");
}

TEST(ChatTemplateTest, Llama3EndsWithTheAssistantHeader) {
  EXPECT_EQ(RenderText(Family::kLlama3, SystemUserAssistantUser()),
            "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there.<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, ChatMlEndsWithTheAssistantTurnOpened) {
  EXPECT_EQ(RenderText(Family::kChatMl, SystemUserAssistantUser()),
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nHi there.<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n"
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, WhitespaceIsStrippedAsEachTemplateDoes) {
  const std::vector<ChatMessage> chat = {
      Message("system", " Be kind. "), Message("user", "\n Hi \n"),
      Message("assistant", "  Hello  "), Message("user", "  Bye\t")};
  // Llama 2 strips the first instruction as a whole (its system prompt and
  // the user's leading space survive) and every later message.
  EXPECT_EQ(RenderText(Family::kLlama2, chat),
            "[INST] <<SYS>>\n Be kind. \n<</SYS>>\n\n\n Hi [/INST] Hello </s>"
            "<s>[INST] Bye [/INST]");
  EXPECT_EQ(RenderText(Family::kLlama2, {Message("user", " Hi ")}), "[INST] Hi [/INST]");
  // Llama 3 trims every message; ChatML keeps the text.
  EXPECT_EQ(RenderText(Family::kLlama3, {Message("user", " Hi \n")}),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(RenderText(Family::kChatMl, {Message("user", " Hi \n")}),
            "<|im_start|>user\n Hi \n<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, BlocksOfAMessageAreJoinedWithNothingBetween) {
  const ChatMessage user{"user", {{"  ", ""}, {" one,", ""}, {"two ", ""}, {" \n", ""}}};
  EXPECT_EQ(RenderText(Family::kChatMl, {user}),
            "<|im_start|>user\n   one,two  \n<|im_end|>\n<|im_start|>assistant\n");
  // The strip runs across blocks, as on the joined text.
  EXPECT_EQ(RenderText(Family::kLlama2, {user}), "[INST] one,two [/INST]");
}

TEST(ChatTemplateTest, ALastAssistantMessageIsContinued) {
  const std::vector<ChatMessage> chat = {Message("user", "Count:"), Message("assistant", "1, 2,")};
  EXPECT_EQ(RenderText(Family::kLlama2, chat), "[INST] Count: [/INST] 1, 2,");
  EXPECT_EQ(RenderText(Family::kLlama3, chat),
            "<|start_header_id|>user<|end_header_id|>\n\nCount:<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n1, 2,");
  EXPECT_EQ(RenderText(Family::kChatMl, chat),
            "<|im_start|>user\nCount:<|im_end|>\n<|im_start|>assistant\n1, 2,");
}

TEST(ChatTemplateTest, ConsecutiveMessagesOfOneRoleAreRenderedAsTheyAre) {
  const std::vector<ChatMessage> chat = {Message("system", "A"), Message("system", "B"),
                                         Message("user", "C"), Message("user", "D")};
  EXPECT_EQ(RenderText(Family::kLlama2, chat),
            "[INST] <<SYS>>\nA\n<</SYS>>\n\n<<SYS>>\nB\n<</SYS>>\n\nC [/INST]"
            "<s>[INST] D [/INST]");
  EXPECT_EQ(RenderText(Family::kChatMl, chat),
            "<|im_start|>system\nA<|im_end|>\n<|im_start|>system\nB<|im_end|>\n"
            "<|im_start|>user\nC<|im_end|>\n<|im_start|>user\nD<|im_end|>\n"
            "<|im_start|>assistant\n");
  // A Llama 2 system prompt with no instruction after it still closes one.
  EXPECT_EQ(RenderText(Family::kLlama2, {Message("system", "A"), Message("assistant", "B")}),
            "[INST] <<SYS>>\nA\n<</SYS>> [/INST] B");
}

// ---- pieces and breakpoints ------------------------------------------------------

TEST(ChatTemplateTest, WithoutBreakpointsTheChatIsOnePiece) {
  for (Family family : kFamilies) {
    Result<std::vector<ChatPiece>> pieces =
        ChatTemplate::Of(family).Render(SystemUserAssistantUser());
    ASSERT_TRUE(pieces.ok()) << pieces.status();
    ASSERT_EQ(pieces->size(), 1u);
    EXPECT_EQ((*pieces)[0].cache_ttl, "");
  }
}

TEST(ChatTemplateTest, APieceEndsAtEachMarkedBlockWithItsTtl) {
  std::vector<ChatMessage> chat = SystemUserAssistantUser();
  chat[0].content[0].cache_ttl = "1h";
  chat[1].content = {{"Read this: ", ""}, {"a long document", "5m"}, {" Now answer.", ""}};
  for (Family family : kFamilies) {
    SCOPED_TRACE(ChatTemplate::Of(family).name());
    Result<std::vector<ChatPiece>> pieces = ChatTemplate::Of(family).Render(chat);
    ASSERT_TRUE(pieces.ok()) << pieces.status();
    ASSERT_EQ(pieces->size(), 3u);
    EXPECT_TRUE((*pieces)[0].text.ends_with("You are terse.")) << (*pieces)[0].text;
    EXPECT_EQ((*pieces)[0].cache_ttl, "1h");
    EXPECT_TRUE((*pieces)[1].text.ends_with("Read this: a long document")) << (*pieces)[1].text;
    EXPECT_EQ((*pieces)[1].cache_ttl, "5m");
    EXPECT_TRUE((*pieces)[2].text.starts_with(" Now answer.")) << (*pieces)[2].text;
    EXPECT_EQ((*pieces)[2].cache_ttl, "");
    // Breakpoints split the text; they never change it.
    std::vector<ChatMessage> unmarked = chat;
    for (ChatMessage& m : unmarked) {
      for (ChatBlock& b : m.content) b.cache_ttl.clear();
    }
    EXPECT_EQ(Joined(*pieces), RenderText(family, unmarked));
  }
}

TEST(ChatTemplateTest, AMarkedLastAssistantMessageLeavesNoEmptyPiece) {
  for (Family family : kFamilies) {
    Result<std::vector<ChatPiece>> pieces =
        ChatTemplate::Of(family).Render({Message("user", "Q"), Message("assistant", "A", "5m")});
    ASSERT_TRUE(pieces.ok()) << pieces.status();
    ASSERT_EQ(pieces->size(), 1u);
    EXPECT_EQ((*pieces)[0].cache_ttl, "5m");
  }
}

// Each turn of a growing conversation marks its last block, as a client
// caching its history does: every longer rendering repeats the shorter one's
// pieces up to its last breakpoint, so the history hits the cache.
TEST(ChatTemplateTest, AGrowingConversationRepeatsItsMarkedPrefix) {
  const std::vector<ChatMessage> conversation = {
      Message("system", " System prompt. ", "1h"),    Message("user", "First question? ", "5m"),
      Message("assistant", " First answer.", "5m"),   Message("user", "Second question?", "5m"),
      Message("assistant", "Second answer.\n", "5m"), Message("user", " Third?", "5m")};
  for (Family family : kFamilies) {
    SCOPED_TRACE(ChatTemplate::Of(family).name());
    const ChatTemplate chat = ChatTemplate::Of(family);
    for (size_t k = 1; k < conversation.size(); ++k) {
      const std::vector<ChatMessage> shorter(conversation.begin(), conversation.begin() + k);
      const std::vector<ChatMessage> longer(conversation.begin(), conversation.begin() + k + 1);
      Result<std::vector<ChatPiece>> a = chat.Render(shorter);
      Result<std::vector<ChatPiece>> b = chat.Render(longer);
      ASSERT_TRUE(a.ok() && b.ok());
      // One piece per marked message; the shorter one may add an unmarked tail.
      ASSERT_GE(a->size(), k);
      ASSERT_GE(b->size(), k + 1);
      for (size_t i = 0; i < k; ++i) {
        EXPECT_EQ((*a)[i].text, (*b)[i].text) << "k=" << k << " piece " << i;
        EXPECT_EQ((*a)[i].cache_ttl, (*b)[i].cache_ttl);
      }
    }
  }
}

TEST(ChatTemplateTest, TheSameChatAlwaysRendersTheSamePieces) {
  std::vector<ChatMessage> chat = SystemUserAssistantUser();
  chat[0].content[0].cache_ttl = "1h";
  for (Family family : kFamilies) {
    Result<std::vector<ChatPiece>> a = ChatTemplate::Of(family).Render(chat);
    Result<std::vector<ChatPiece>> b = ChatTemplate::Of(family).Render(chat);
    ASSERT_TRUE(a.ok() && b.ok());
    ASSERT_EQ(a->size(), b->size());
    for (size_t i = 0; i < a->size(); ++i) EXPECT_EQ((*a)[i].text, (*b)[i].text);
  }
}

// ---- bad input -------------------------------------------------------------------

void ExpectInvalid(const std::vector<ChatMessage>& chat, const std::string& message) {
  for (Family family : kFamilies) {
    Result<std::vector<ChatPiece>> pieces = ChatTemplate::Of(family).Render(chat);
    ASSERT_FALSE(pieces.ok());
    EXPECT_EQ(pieces.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(pieces.status().message(), message);
  }
}

// A stored prefix (a Gemini cachedContent) and the request that continues
// it render, together, the whole conversation's text: the prefix may end in a
// system, user or assistant message, and the continuation may run on.
TEST(ChatTemplateTest, APrefixAndItsContinuationRenderTheWholeConversation) {
  const std::vector<ChatMessage> chat = {
      Message("system", "You are terse."), Message("user", "Read this document."),
      Message("assistant", "Read."),       Message("user", "What is 2+2?"),
      Message("assistant", "4."),          Message("user", "And 3+3?")};
  for (Family family : kFamilies) {
    const ChatTemplate t = ChatTemplate::Of(family);
    // Split before every user message.
    for (size_t split : {1u, 2u, 3u, 5u}) {
      const std::vector<ChatMessage> prefix(chat.begin(), chat.begin() + split);
      const std::vector<ChatMessage> rest(chat.begin() + split, chat.end());
      if (rest.front().role != "user") continue;
      Result<std::vector<ChatPiece>> a = t.RenderPrefix(prefix);
      Result<std::vector<ChatPiece>> b = t.RenderContinuation(rest);
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE(b.ok()) << b.status();
      EXPECT_EQ(Joined(*a) + Joined(*b), RenderText(family, chat))
          << t.name() << ", split before message " << split;
    }
  }
  // Llama 3's prefix ends with the next user turn opened, not the assistant's.
  EXPECT_EQ(Joined(*ChatTemplate::Of(Family::kLlama3).RenderPrefix({Message("system", "S")})),
            "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\n");
}

TEST(ChatTemplateTest, AContinuationStartsWithAUserMessageAndHasNoSystem) {
  for (Family family : kFamilies) {
    const ChatTemplate t = ChatTemplate::Of(family);
    Result<std::vector<ChatPiece>> model_first =
        t.RenderContinuation({Message("assistant", "Hm."), Message("user", "Q")});
    ASSERT_FALSE(model_first.ok());
    EXPECT_NE(model_first.status().message().find("messages[0].role"), std::string::npos);
    Result<std::vector<ChatPiece>> system =
        t.RenderContinuation({Message("user", "Q"), Message("system", "S")});
    ASSERT_FALSE(system.ok());
    EXPECT_NE(system.status().message().find("messages[1].role"), std::string::npos);
    EXPECT_FALSE(t.RenderContinuation({}).ok());
    EXPECT_FALSE(t.RenderPrefix({}).ok());
  }
}

TEST(ChatTemplateTest, BadMessagesAreRefusedNamingTheField) {
  ExpectInvalid({}, "messages: no messages");
  ExpectInvalid({Message("user", "a"), Message("assistant", "b"), Message("tool", "c")},
                "messages[2].role: unknown role 'tool' (expected system, user or assistant)");
  ExpectInvalid({Message("user", "a"), {"assistant", {}}}, "messages[1].content: empty (no text)");
  ExpectInvalid({Message("user", "a"), {"user", {{"", "5m"}, {"", ""}}}},
                "messages[1].content: empty (no text)");
  ExpectInvalid({Message("system", "a"), Message("user", "b"), Message("system", "c")},
                "messages[2].role: a system message must come before the user and assistant "
                "messages");
}

// ---- ForModel --------------------------------------------------------------------

// A fresh directory for a test's model, removed at its end.
class ChatTemplateForModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("kvtier_chat_template_" + std::to_string(::getpid()) + "_" + test->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void WriteConfig(const std::string& json) {
    std::ofstream out(dir_ / "tokenizer_config.json", std::ios::binary | std::ios::trunc);
    out << json;
    ASSERT_TRUE(out.good());
  }
  Result<ChatTemplate> Load() const { return ChatTemplate::ForModel(dir_.string()); }
  std::string ConfigPath() const { return (dir_ / "tokenizer_config.json").string(); }

  fs::path dir_;
};

// Abridged from the models' own tokenizer_config.json.
constexpr char kLlama2Template[] =
    R"({% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %})"
    R"({% endif %}{% for message in loop_messages %}{% if message['role'] == 'user' %})"
    R"({{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% endif %}{% endfor %})";
constexpr char kLlama3Template[] =
    R"({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = )"
    R"('<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | )"
    R"(trim + '<|eot_id|>' %}{{ content }}{% endfor %})";
constexpr char kChatMlTemplate[] =
    R"({% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + )"
    R"(message['content'] + '<|im_end|>' + '\n'}}{% endfor %})";

std::string ConfigWith(const std::string& chat_template_json) {
  return R"({"add_bos_token": true, "bos_token": "<s>", "chat_template": )" + chat_template_json +
         R"(, "model_max_length": 4096})";
}

std::string Quoted(const char* text) {
  std::string out = "\"";
  for (const char* c = text; *c != '\0'; ++c) {
    if (*c == '"' || *c == '\\') out += '\\';
    out += *c;
  }
  return out + "\"";
}

TEST_F(ChatTemplateForModelTest, RecognisesEachFamilyInAString) {
  const std::pair<const char*, Family> cases[] = {{kLlama2Template, Family::kLlama2},
                                                  {kLlama3Template, Family::kLlama3},
                                                  {kChatMlTemplate, Family::kChatMl}};
  for (const auto& [text, family] : cases) {
    WriteConfig(ConfigWith(Quoted(text)));
    Result<ChatTemplate> chat = Load();
    ASSERT_TRUE(chat.ok()) << chat.status();
    EXPECT_EQ(chat->family(), family) << text;
  }
  EXPECT_EQ(ChatTemplate::Of(Family::kLlama3).name(), "llama3");
}

TEST_F(ChatTemplateForModelTest, TakesTheDefaultOfAListOfNamedTemplates) {
  WriteConfig(ConfigWith(R"([{"name": "tool_use", "template": "[INST] tools"}, )"
                         R"({"name": "default", "template": )" +
                         Quoted(kChatMlTemplate) + "}]"));
  Result<ChatTemplate> chat = Load();
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->family(), Family::kChatMl);

  WriteConfig(ConfigWith(R"([{"name": "tool_use", "template": "[INST]"}, )"
                         R"({"name": "rag", "template": "[INST]"}])"));
  chat = Load();
  ASSERT_FALSE(chat.ok());
  EXPECT_EQ(chat.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(chat.status().message(), "'" + ConfigPath() +
                                         "': chat_template has no template named \"default\" "
                                         "(it has: tool_use, rag)");
}

TEST_F(ChatTemplateForModelTest, RefusesATemplateOfAnotherFamilyNamingIt) {
  WriteConfig(ConfigWith(R"("{% for m in messages %}<start_of_turn>{{ m['role'] }}{% endfor %}")"));
  Result<ChatTemplate> chat = Load();
  ASSERT_FALSE(chat.ok());
  EXPECT_EQ(chat.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(chat.status().message().find(ConfigPath()), std::string::npos);
  EXPECT_NE(chat.status().message().find("<start_of_turn>"), std::string::npos) << chat.status();
}

TEST_F(ChatTemplateForModelTest, RefusesAMalformedConfigNamingThePath) {
  WriteConfig(R"({"chat_template": "[INST])");
  Result<ChatTemplate> chat = Load();
  ASSERT_FALSE(chat.ok());
  EXPECT_EQ(chat.status().code(), StatusCode::kCorruption);
  EXPECT_EQ(chat.status().message(), "'" + ConfigPath() + "' is not valid JSON");

  WriteConfig(ConfigWith("42"));
  chat = Load();
  ASSERT_FALSE(chat.ok());
  EXPECT_EQ(chat.status().code(), StatusCode::kCorruption);
  EXPECT_NE(chat.status().message().find(ConfigPath() + "': chat_template: expected"),
            std::string::npos)
      << chat.status();

  WriteConfig(ConfigWith(R"([{"name": "default"}])"));
  chat = Load();
  ASSERT_FALSE(chat.ok());
  EXPECT_EQ(chat.status().code(), StatusCode::kCorruption);
}

TEST_F(ChatTemplateForModelTest, AModelWithoutATemplateGetsLlama2s) {
  // No tokenizer_config.json.
  Result<ChatTemplate> chat = Load();
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(chat->family(), Family::kLlama2);
  // A config without a chat_template, or with a null one.
  for (const char* config : {R"({"bos_token": "<s>"})", R"({"chat_template": null})"}) {
    WriteConfig(config);
    chat = Load();
    ASSERT_TRUE(chat.ok()) << chat.status();
    EXPECT_EQ(chat->family(), Family::kLlama2) << config;
  }
  // A llama2.c checkpoint (a file), a missing directory, no model at all.
  WriteConfig(ConfigWith(Quoted(kChatMlTemplate)));
  for (const fs::path& path : {dir_ / "tokenizer_config.json", dir_ / "missing", fs::path()}) {
    chat = ChatTemplate::ForModel(path.string());
    ASSERT_TRUE(chat.ok()) << chat.status();
    EXPECT_EQ(chat->family(), Family::kLlama2) << path;
    EXPECT_EQ(chat->name(), "llama2");
  }
}

}  // namespace
}  // namespace kvtier
