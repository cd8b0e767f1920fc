// How a kvtier command ends and where it prints: the exit codes, Exit (a
// command's outcome: success, or a failure with its code and message), and
// Output (text, or one JSON object per line with --json). Not thread-safe;
// the CLI runs one command on one thread.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace kvtier::cli {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;  // the daemon failed or refused the call, or a file failed
constexpr int kExitUsage = 2;   // the command line is wrong

// The usage text: printed by --help, and after a command-line error that
// asks for it.
extern const char kUsage[];

// Unix ms as UTC ISO 8601, to the second: how replies print a time.
std::string IsoTime(int64_t ms);

// How a command ends: kExitOk, or a failure to report and its exit code.
struct Exit {
  Exit() = default;
  Exit(int exit_code, std::string message, bool with_usage = false)
      : code(exit_code), error(std::move(message)), show_usage(with_usage) {}
  // A failed call or file: exit 1. Implicit, so that KVTIER_RETURN_IF_ERROR
  // and KVTIER_ASSIGN_OR_RETURN end a command with the Status they return.
  Exit(const Status& s)  // NOLINT(google-explicit-constructor)
      : Exit(s.ok() ? kExitOk : kExitFailed, s.message()) {}

  int code = kExitOk;
  std::string error;
  bool show_usage = false;  // print the usage text after the error
};

// The command line is wrong: exit 2.
Exit UsageError(std::string error, bool show_usage = false);
Exit UsageError(const Status& s);

// Where replies and failures go. With --json: one JSON object per line on
// stdout, failures included ({"ok": false, "error": ...}); else text on
// stdout and failures on stderr.
class Output {
 public:
  explicit Output(bool json) : json_(json) {}

  bool as_json() const { return json_; }

  // A reply: `j` with --json, else `text`.
  void Print(const nlohmann::json& j, const std::string& text) const;

  // Reports a failed command; returns the process's exit code.
  int Finish(const Exit& e) const;

 private:
  const bool json_;
};

}  // namespace kvtier::cli
