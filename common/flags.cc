#include "common/flags.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <iostream>
#include <limits>

namespace kvtier {

Status FlagSet::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2);
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (bools_.count(name)) {
      if (value) return Status::InvalidArgument("flag --" + name + " takes no value");
      given_[name] = "true";
    } else if (values_.count(name)) {
      if (!value) {
        if (i + 1 == args.size())
          return Status::InvalidArgument("flag --" + name + " needs a value");
        value = args[++i];
      }
      given_[name] = *value;
    } else {
      return Status::InvalidArgument("unknown flag --" + name);
    }
  }
  return Status::Ok();
}

std::string FlagSet::Get(const std::string& name, std::string fallback) const {
  auto it = given_.find(name);
  return it == given_.end() ? fallback : it->second;
}

Result<int64_t> ParseInt(std::string_view text) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < 0 || text.empty()) {
    return Status::InvalidArgument("'" + std::string(text) + "' is not a non-negative integer");
  }
  return v;
}

Result<double> ParseNonNegative(std::string_view text) {
  double v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty() || !(v >= 0) ||
      !std::isfinite(v)) {
    return Status::InvalidArgument("'" + std::string(text) + "' is not a non-negative number");
  }
  return v;
}

Result<uint64_t> ParseBytes(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  Result<int64_t> n = ParseInt(text.substr(0, digits));
  std::string unit(text.substr(digits));
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && unit.back() == 'B') unit.pop_back();  // "MB" -> "M", "MIB" -> "MI"
  if (unit.size() > 1 && unit.back() == 'I') unit.pop_back();  // "MI" -> "M"
  int shift = -1;
  if (unit.empty())
    shift = 0;
  else if (unit == "K")
    shift = 10;
  else if (unit == "M")
    shift = 20;
  else if (unit == "G")
    shift = 30;
  else if (unit == "T")
    shift = 40;
  if (!n.ok() || shift < 0) {
    return Status::InvalidArgument("'" + std::string(text) +
                                   "' is not a size (like 4096, 64K, 512M, 2G)");
  }
  const uint64_t v = static_cast<uint64_t>(*n);
  if (shift > 0 && v > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return Status::InvalidArgument("size '" + std::string(text) + "' is too large");
  }
  return v << shift;
}

Result<std::vector<int32_t>> ParseTokenList(std::string_view text, size_t max_tokens) {
  std::vector<int32_t> out;
  auto parse_id = [](std::string_view s) -> Result<int32_t> {
    Result<int64_t> v = ParseInt(s);
    if (!v.ok() || *v > std::numeric_limits<int32_t>::max()) {
      return Status::InvalidArgument("'" + std::string(s) + "' is not a token id");
    }
    return static_cast<int32_t>(*v);
  };
  if (text.empty()) return Status::InvalidArgument("the token list is empty");
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string_view item = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    size_t dots = item.find("..");
    if (dots == std::string_view::npos) {
      Result<int32_t> id = parse_id(item);
      if (!id.ok()) return id.status();
      out.push_back(*id);
    } else {
      Result<int32_t> lo = parse_id(item.substr(0, dots));
      Result<int32_t> hi = parse_id(item.substr(dots + 2));
      if (!lo.ok()) return lo.status();
      if (!hi.ok()) return hi.status();
      if (*hi < *lo) return Status::InvalidArgument("range '" + std::string(item) + "' is empty");
      if (static_cast<size_t>(*hi - *lo) + 1 > max_tokens) {
        return Status::ResourceExhausted("more than " + std::to_string(max_tokens) + " tokens");
      }
      for (int64_t t = *lo; t <= *hi; ++t) out.push_back(static_cast<int32_t>(t));
    }
    if (out.size() > max_tokens) {
      return Status::ResourceExhausted("more than " + std::to_string(max_tokens) + " tokens");
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

int ToolFail(std::string_view tool, const std::string& msg, int code) {
  std::cerr << tool << ": " << msg << "\n";
  if (code == 2) std::cerr << "run " << tool << " --help for usage\n";
  return code;
}

}  // namespace kvtier
