#include "model/tokenizer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "model/tokenizer_internal.h"

namespace kvtier {

namespace fs = std::filesystem;

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

bool ParseBytePiece(std::string_view piece, unsigned char* byte) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return false;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return false;
    }
    value = value * 16 + digit;
  }
  *byte = static_cast<unsigned char>(value);
  return true;
}

Result<std::string> ReadTokenizerFile(const std::string& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR)
      return Status::NotFound("tokenizer " + file + " not found");
    return Status::IOError("cannot open tokenizer " + file + ": " + ErrnoText(err));
  }
  std::string bytes;
  struct stat st;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) bytes.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return Status::IOError("cannot read tokenizer " + file + ": " + ErrnoText(err));
    }
    if (n == 0) break;
    bytes.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return bytes;
}

std::string Tokenizer::Decode(TokenId prev, std::span<const TokenId> tokens) const {
  std::string text;
  for (TokenId token : tokens) {
    text += DecodePiece(prev, token);
    prev = token;
  }
  return text;
}

Result<std::unique_ptr<Tokenizer>> LoadTokenizerFor(const std::string& model_path, int vocab_size) {
  std::error_code ec;
  const fs::path path(model_path);
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return Status::NotFound("model path " + model_path + " not found");
  fs::path dir = fs::is_directory(st) ? path : path.parent_path();
  if (dir.empty()) dir = ".";

  if (fs::is_regular_file(dir / "tokenizer.model", ec)) {
    return LoadSentencePieceTokenizer((dir / "tokenizer.model").string());
  }
  if (fs::is_regular_file(dir / "tokenizer.bin", ec)) {
    return LoadLlama2cTokenizer((dir / "tokenizer.bin").string(), vocab_size);
  }
  std::vector<std::string> candidates;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() >= 7 && name.starts_with("tok") && name.ends_with(".bin") &&
        it->is_regular_file(ec)) {
      candidates.push_back(name);
    }
  }
  if (ec) return Status::IOError("cannot list " + dir.string() + ": " + ec.message());
  std::sort(candidates.begin(), candidates.end());
  if (candidates.size() == 1) {
    return LoadLlama2cTokenizer((dir / candidates[0]).string(), vocab_size);
  }
  if (candidates.empty()) {
    return Status::NotFound("no tokenizer.model, tokenizer.bin or tok*.bin in " + dir.string());
  }
  // Several: the one named after the model's vocabulary (llama2.c's
  // tok512.bin for a 512-token model) settles it; otherwise it is ambiguous.
  const std::string by_vocab = "tok" + std::to_string(vocab_size) + ".bin";
  if (std::find(candidates.begin(), candidates.end(), by_vocab) != candidates.end()) {
    return LoadLlama2cTokenizer((dir / by_vocab).string(), vocab_size);
  }
  std::string names;
  for (const std::string& name : candidates) names += (names.empty() ? "" : ", ") + name;
  return Status::NotFound("no single tokenizer in " + dir.string() + ": several tok*.bin (" +
                          names + ") and none is " + by_vocab);
}

}  // namespace kvtier
