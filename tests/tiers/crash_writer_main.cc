// crash_writer: writes blocks to a persistent tier until killed, printing
// "ack N" once block N's write has returned OK. The crash tests SIGKILL it
// mid-stream and check every acknowledged block after reopening.
//   crash_writer rocks DIR   one block per write
//   crash_writer flash DIR   batches of 16, so a kill lands with many in flight
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/tiers/crash_payload.h"
#include "tests/tiers/crash_tiers.h"

int main(int argc, char** argv) {
  using namespace kvtier;
  const bool flash = argc == 3 && std::strcmp(argv[1], "flash") == 0;
  if (argc != 3 || (!flash && std::strcmp(argv[1], "rocks") != 0)) {
    std::fprintf(stderr, "usage: crash_writer rocks|flash DIR\n");
    return 2;
  }
  auto tier = flash ? OpenFlashTier(testing::CrashFlashOptions(argv[2]))
                    : OpenRocksTier(testing::CrashRocksOptions(argv[2]));
  if (!tier.ok()) {
    std::fprintf(stderr, "%s\n", tier.status().ToString().c_str());
    return 1;
  }
  const uint64_t batch = flash ? 16 : 1;
  for (uint64_t first = 0;; first += batch) {
    std::vector<std::vector<std::byte>> payloads;
    std::vector<WriteOp> ops;
    for (uint64_t id = first; id < first + batch; ++id)
      payloads.push_back(testing::CrashPayload(id));
    for (uint64_t i = 0; i < batch; ++i) ops.push_back({testing::CrashKey(first + i), payloads[i]});
    std::vector<IoResult> results = WriteSync(**tier, ops);
    for (uint64_t i = 0; i < batch; ++i) {
      if (!results[i].status.ok()) {
        std::fprintf(stderr, "%s\n", results[i].status.ToString().c_str());
        return 1;
      }
      std::printf("ack %" PRIu64 "\n", first + i);
    }
    std::fflush(stdout);
  }
}
