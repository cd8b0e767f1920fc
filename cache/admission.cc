#include "cache/admission.h"

#include <string>

namespace kvtier {
namespace {

class NoAdmission final : public AdmissionFilter {
 public:
  std::string_view Name() const override { return "none"; }
  void Record(const BlockRef&, bool) override {}
  bool Admit(const BlockRef&, const BlockKey*) override { return true; }
};

}  // namespace

std::unique_ptr<AdmissionFilter> NewNoAdmission() { return std::make_unique<NoAdmission>(); }

const std::vector<std::string>& AdmissionFilterNames() {
  static const std::vector<std::string> kNames = {"none", "tinylfu", "ghost", "prefix"};
  return kNames;
}

bool IsAdmissionFilterName(std::string_view name) {
  for (const std::string& n : AdmissionFilterNames()) {
    if (n == name) return true;
  }
  return false;
}

std::unique_ptr<AdmissionFilter> NewAdmissionFilter(std::string_view name,
                                                    const AdmissionOptions& options) {
  if (options.capacity_blocks == 0) return nullptr;
  if (name == "none") return NewNoAdmission();
  if (name == "tinylfu") return NewTinyLfuAdmission(options);
  if (name == "ghost") return NewGhostAdmission(options);
  if (name == "prefix") return NewPrefixAdmission(options);
  return nullptr;
}

}  // namespace kvtier
