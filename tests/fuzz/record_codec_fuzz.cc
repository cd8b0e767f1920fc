// Fuzzes the value codec of the RocksDB-backed stores (context/record_codec.h),
// which the ledger and the named-cache registry build their records from.
//
// The input is a script of fields (a type byte, then the value): written with
// RecordWriter, the value must pass VerifyRecordChecksum and read back field
// for field. The same input, taken as a stored value, must be refused or give
// a body that reads without ever running past its end; and any bytes escape
// to printable ASCII.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <variant>
#include <vector>

#include "context/record_codec.h"
#include "tests/fuzz/fuzz_util.h"

namespace kvtier {
namespace {

using Field = std::variant<uint8_t, uint32_t, uint64_t, double, std::string>;

void RoundTrip(fuzz::FuzzReader in) {
  std::vector<Field> fields;
  RecordWriter w;
  while (in.remaining() > 0 && fields.size() < 64) {
    switch (in.U8() % 5) {
      case 0:
        fields.emplace_back(in.U8());
        break;
      case 1:
        fields.emplace_back(in.U32());
        break;
      case 2:
        fields.emplace_back(in.U64());
        break;
      case 3: {
        const uint64_t bits = in.U64();
        double d;
        std::memcpy(&d, &bits, sizeof d);
        fields.emplace_back(d);
        break;
      }
      default:
        fields.emplace_back(in.Bytes(in.U16() % 512));
        break;
    }
    std::visit(
        [&w](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, uint8_t>) w.PutU8(v);
          if constexpr (std::is_same_v<T, uint32_t>) w.PutU32(v);
          if constexpr (std::is_same_v<T, uint64_t>) w.PutU64(v);
          if constexpr (std::is_same_v<T, double>) w.PutF64(v);
          if constexpr (std::is_same_v<T, std::string>) w.PutString(v);
        },
        fields.back());
  }
  const std::string value = std::move(w).Finish();
  std::string_view body;
  if (fields.empty()) {
    // Nothing but a checksum: no body byte, refused.
    FUZZ_CHECK(VerifyRecordChecksum(value, &body).has_value());
    return;
  }
  FUZZ_CHECK(!VerifyRecordChecksum(value, &body).has_value());
  FUZZ_CHECK(body.size() + 8 == value.size());
  RecordReader r(body);
  for (const Field& f : fields) {
    std::visit(
        [&r](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, uint8_t>) FUZZ_CHECK(r.ReadU8() == v);
          if constexpr (std::is_same_v<T, uint32_t>) FUZZ_CHECK(r.ReadU32() == v);
          if constexpr (std::is_same_v<T, uint64_t>) FUZZ_CHECK(r.ReadU64() == v);
          if constexpr (std::is_same_v<T, double>) {
            const double got = r.ReadF64();
            // Bit for bit: NaN payloads and the sign of zero survive too.
            FUZZ_CHECK(std::bit_cast<uint64_t>(got) == std::bit_cast<uint64_t>(v));
          }
          if constexpr (std::is_same_v<T, std::string>) FUZZ_CHECK(r.ReadString() == v);
        },
        f);
  }
  FUZZ_CHECK(r.ok());
  FUZZ_CHECK(r.remaining_bytes() == 0);
  // One byte flipped anywhere is refused (XXH3-64 catches every 1-byte change
  // of the body, and a changed trailer no longer matches).
  std::string flipped = value;
  flipped[fields.size() * 7 % flipped.size()] ^= 0x01;
  FUZZ_CHECK(VerifyRecordChecksum(flipped, &body).has_value());
}

void ReadJunk(std::string_view value) {
  std::string_view body;
  if (!VerifyRecordChecksum(value, &body).has_value()) {
    FUZZ_CHECK(value.size() >= 9 && body.size() == value.size() - 8);
  }
  // Any bytes as a body: reads stay inside it, and once one runs past the end
  // every later one yields zero.
  RecordReader r(value);
  size_t i = 0;
  while (r.ok() && i < value.size() + 2) {
    const size_t before = r.remaining_bytes();
    switch (static_cast<uint8_t>(value[i % value.size()]) % 5) {
      case 0:
        r.ReadU8();
        break;
      case 1:
        r.ReadU32();
        break;
      case 2:
        r.ReadU64();
        break;
      case 3:
        r.ReadF64();
        break;
      default:
        r.ReadString();
        break;
    }
    FUZZ_CHECK(r.remaining_bytes() <= before);
    ++i;
  }
  if (!r.ok()) {
    FUZZ_CHECK(r.ReadU64() == 0);
    FUZZ_CHECK(r.ReadString().empty());
  }
  for (char c : EscapeForMessage(value)) FUZZ_CHECK(c >= 0x20 && c <= 0x7e);
  const std::string field(value.substr(0, 300));
  const Status s = CheckPrintableField("field", field, 256, true);
  bool printable = !field.empty() && field.size() <= 256;
  for (char c : field) printable = printable && c >= 0x20 && c <= 0x7e;
  FUZZ_CHECK(s.ok() == printable);
}

}  // namespace
}  // namespace kvtier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvtier::RoundTrip(kvtier::fuzz::FuzzReader(data, size));
  if (size > 0) kvtier::ReadJunk({reinterpret_cast<const char*>(data), size});
  return 0;
}
