// crash_writer: writes blocks to a persistent tier until killed, printing
// "ack N" once block N's write has returned OK. The crash tests SIGKILL it
// mid-stream and check every acknowledged block after reopening.
//   crash_writer rocks DIR
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/tiers/crash_payload.h"
#include "tiers/rocks/rocks_tier.h"

int main(int argc, char** argv) {
  using namespace kvtier;
  if (argc != 3 || std::strcmp(argv[1], "rocks") != 0) {
    std::fprintf(stderr, "usage: crash_writer rocks DIR\n");
    return 2;
  }
  RocksTierOptions o;
  o.path = argv[2];
  auto tier = OpenRocksTier(o);
  if (!tier.ok()) {
    std::fprintf(stderr, "%s\n", tier.status().ToString().c_str());
    return 1;
  }
  for (uint64_t id = 0;; ++id) {
    std::vector<std::byte> p = testing::CrashPayload(id);
    if (!WriteOne(**tier, testing::CrashKey(id), p).ok()) return 1;
    std::printf("ack %llu\n", static_cast<unsigned long long>(id));
    std::fflush(stdout);
  }
}
