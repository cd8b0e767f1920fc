#include "model/sentencepiece_model.h"

#include <bit>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>

namespace kvtier {
namespace {

// The protobuf wire types. 3 and 4 (groups) are deprecated and appear in no
// sentencepiece model; 6 and 7 are undefined.
enum class WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

std::string_view WireTypeName(WireType type) {
  switch (type) {
    case WireType::kVarint:
      return "varint";
    case WireType::kFixed64:
      return "fixed64";
    case WireType::kLengthDelimited:
      return "length-delimited";
    case WireType::kStartGroup:
      return "start-group";
    case WireType::kEndGroup:
      return "end-group";
    case WireType::kFixed32:
      return "fixed32";
  }
  return "undefined";
}

// A varint never takes more than 10 bytes (64 bits, 7 per byte).
constexpr int kMaxVarintBytes = 10;

Status CorruptAt(size_t offset, std::string_view what) {
  return Status::Corruption("sentencepiece model: " + std::string(what) + " at byte " +
                            std::to_string(offset));
}

// One field of a message as it is on the wire. Offsets are from the start of
// the file, for error messages.
struct WireField {
  uint32_t number = 0;
  WireType type = WireType::kVarint;
  uint64_t scalar = 0;        // the value of a varint, fixed32 or fixed64 field
  std::string_view payload;   // the bytes of a length-delimited field
  size_t offset = 0;          // of the field's key
  size_t payload_offset = 0;  // of `payload`
};

// Reads the fields of one message, in order, checking every length against
// the bytes that are left.
class WireReader {
 public:
  WireReader(std::string_view bytes, size_t base_offset) : bytes_(bytes), base_(base_offset) {}

  bool done() const { return pos_ == bytes_.size(); }

  // Reads the next field (requires !done()).
  Status Next(WireField* field) {
    field->offset = base_ + pos_;
    uint64_t key = 0;
    KVTIER_RETURN_IF_ERROR(ReadVarint(&key));
    if (key > std::numeric_limits<uint32_t>::max()) {
      return CorruptAt(field->offset, "field key " + std::to_string(key) + " is out of range");
    }
    field->number = static_cast<uint32_t>(key >> 3);
    field->type = static_cast<WireType>(key & 7);
    if (field->number == 0) return CorruptAt(field->offset, "field number 0");
    switch (field->type) {
      case WireType::kVarint:
        return ReadVarint(&field->scalar);
      case WireType::kFixed64:
        return ReadFixed(8, &field->scalar);
      case WireType::kFixed32:
        return ReadFixed(4, &field->scalar);
      case WireType::kLengthDelimited: {
        uint64_t length = 0;
        KVTIER_RETURN_IF_ERROR(ReadVarint(&length));
        if (length > bytes_.size() - pos_) {
          return CorruptAt(field->offset, "field " + std::to_string(field->number) + " claims " +
                                              std::to_string(length) + " bytes but " +
                                              std::to_string(bytes_.size() - pos_) + " are left");
        }
        field->payload = bytes_.substr(pos_, static_cast<size_t>(length));
        field->payload_offset = base_ + pos_;
        pos_ += static_cast<size_t>(length);
        return Status::Ok();
      }
      case WireType::kStartGroup:
      case WireType::kEndGroup:
        return CorruptAt(field->offset, "field " + std::to_string(field->number) +
                                            " is a group (wire type " +
                                            std::to_string(static_cast<uint32_t>(field->type)) +
                                            "), which sentencepiece models never use");
    }
    return CorruptAt(field->offset, "field " + std::to_string(field->number) +
                                        " has undefined wire type " +
                                        std::to_string(static_cast<uint32_t>(field->type)));
  }

 private:
  Status ReadVarint(uint64_t* value) {
    const size_t start = base_ + pos_;
    uint64_t result = 0;
    for (int i = 0; i < kMaxVarintBytes; ++i) {
      if (pos_ == bytes_.size()) return CorruptAt(start, "truncated varint");
      const auto byte = static_cast<uint8_t>(bytes_[pos_++]);
      // The tenth byte holds bit 63 only.
      if (i == kMaxVarintBytes - 1 && byte > 1) return CorruptAt(start, "varint overflows 64 bits");
      result |= static_cast<uint64_t>(byte & 0x7F) << (7 * i);
      if ((byte & 0x80) == 0) {
        *value = result;
        return Status::Ok();
      }
    }
    return CorruptAt(start, "varint overflows 64 bits");  // unreachable: caught above
  }

  // A little-endian fixed-width value of `width` (4 or 8) bytes.
  Status ReadFixed(size_t width, uint64_t* value) {
    if (bytes_.size() - pos_ < width) {
      return CorruptAt(base_ + pos_, "truncated fixed" + std::to_string(width * 8) + " value");
    }
    uint64_t result = 0;
    for (size_t i = 0; i < width; ++i) {
      result |= static_cast<uint64_t>(static_cast<uint8_t>(bytes_[pos_ + i])) << (8 * i);
    }
    pos_ += width;
    *value = result;
    return Status::Ok();
  }

  std::string_view bytes_;
  size_t base_;  // file offset of bytes_[0]
  size_t pos_ = 0;
};

// Calls `on_field(const WireField&) -> Status` for each field of the message
// in `bytes` (at `base_offset` in the file), stopping at the first error.
template <typename OnField>
Status ForEachField(std::string_view bytes, size_t base_offset, OnField&& on_field) {
  WireReader reader(bytes, base_offset);
  while (!reader.done()) {
    WireField field;
    KVTIER_RETURN_IF_ERROR(reader.Next(&field));
    KVTIER_RETURN_IF_ERROR(on_field(field));
  }
  return Status::Ok();
}

// Typed readers for the known fields. `name` is the field's proto name, for
// error messages.
Status ExpectWireType(const WireField& field, WireType want, std::string_view name) {
  if (field.type == want) return Status::Ok();
  return CorruptAt(field.offset, std::string(name) + " (field " + std::to_string(field.number) +
                                     ") has wire type " + std::string(WireTypeName(field.type)) +
                                     ", expected " + std::string(WireTypeName(want)));
}

// proto2 int32 and enums: a varint whose low 32 bits are the two's-complement
// value (negative numbers are sign-extended to 64 bits on the wire).
Status ReadInt32(const WireField& field, std::string_view name, int32_t* value) {
  KVTIER_RETURN_IF_ERROR(ExpectWireType(field, WireType::kVarint, name));
  *value = static_cast<int32_t>(static_cast<uint32_t>(field.scalar));
  return Status::Ok();
}

Status ReadBool(const WireField& field, std::string_view name, bool* value) {
  KVTIER_RETURN_IF_ERROR(ExpectWireType(field, WireType::kVarint, name));
  *value = field.scalar != 0;
  return Status::Ok();
}

Status ReadFloat(const WireField& field, std::string_view name, float* value) {
  KVTIER_RETURN_IF_ERROR(ExpectWireType(field, WireType::kFixed32, name));
  *value = std::bit_cast<float>(static_cast<uint32_t>(field.scalar));
  return Status::Ok();
}

Status ReadString(const WireField& field, std::string_view name, std::string* value) {
  KVTIER_RETURN_IF_ERROR(ExpectWireType(field, WireType::kLengthDelimited, name));
  value->assign(field.payload);
  return Status::Ok();
}

// An enum whose values are exactly [first, last].
template <typename Enum>
Status ReadEnum(const WireField& field, std::string_view name, Enum first, Enum last, Enum* value) {
  int32_t raw = 0;
  KVTIER_RETURN_IF_ERROR(ReadInt32(field, name, &raw));
  if (raw < static_cast<int32_t>(first) || raw > static_cast<int32_t>(last)) {
    return CorruptAt(field.offset,
                     std::string(name) + " has undefined value " + std::to_string(raw));
  }
  *value = static_cast<Enum>(raw);
  return Status::Ok();
}

// ModelProto.SentencePiece.
Status ParsePiece(const WireField& message, SentencePieceModel::Piece* piece) {
  using PieceType = SentencePieceModel::PieceType;
  return ForEachField(message.payload, message.payload_offset, [&](const WireField& f) {
    switch (f.number) {
      case 1:
        return ReadString(f, "SentencePiece.piece", &piece->text);
      case 2:
        return ReadFloat(f, "SentencePiece.score", &piece->score);
      case 3:
        return ReadEnum(f, "SentencePiece.type", PieceType::kNormal, PieceType::kByte,
                        &piece->type);
      default:
        return Status::Ok();
    }
  });
}

// TrainerSpec. A second occurrence merges into the first, as proto2 does.
Status ParseTrainerSpec(const WireField& message, SentencePieceModel::TrainerSpec* spec) {
  using ModelType = SentencePieceModel::ModelType;
  return ForEachField(message.payload, message.payload_offset, [&](const WireField& f) {
    switch (f.number) {
      case 3:
        return ReadEnum(f, "TrainerSpec.model_type", ModelType::kUnigram, ModelType::kChar,
                        &spec->model_type);
      case 24:
        return ReadBool(f, "TrainerSpec.treat_whitespace_as_suffix",
                        &spec->treat_whitespace_as_suffix);
      case 35:
        return ReadBool(f, "TrainerSpec.byte_fallback", &spec->byte_fallback);
      case 40:
        return ReadInt32(f, "TrainerSpec.unk_id", &spec->unk_id);
      case 41:
        return ReadInt32(f, "TrainerSpec.bos_id", &spec->bos_id);
      case 42:
        return ReadInt32(f, "TrainerSpec.eos_id", &spec->eos_id);
      case 43:
        return ReadInt32(f, "TrainerSpec.pad_id", &spec->pad_id);
      case 44:
        return ReadString(f, "TrainerSpec.unk_surface", &spec->unk_surface);
      default:
        return Status::Ok();
    }
  });
}

// NormalizerSpec (also the type of the denormalizer).
Status ParseNormalizerSpec(const WireField& message, SentencePieceModel::NormalizerSpec* spec) {
  return ForEachField(message.payload, message.payload_offset, [&](const WireField& f) {
    switch (f.number) {
      case 1:
        return ReadString(f, "NormalizerSpec.name", &spec->name);
      case 2:
        return ReadString(f, "NormalizerSpec.precompiled_charsmap", &spec->precompiled_charsmap);
      case 3:
        return ReadBool(f, "NormalizerSpec.add_dummy_prefix", &spec->add_dummy_prefix);
      case 4:
        return ReadBool(f, "NormalizerSpec.remove_extra_whitespaces",
                        &spec->remove_extra_whitespaces);
      case 5:
        return ReadBool(f, "NormalizerSpec.escape_whitespaces", &spec->escape_whitespaces);
      default:
        return Status::Ok();
    }
  });
}

}  // namespace

Result<SentencePieceModel> ParseSentencePieceModel(std::string_view bytes) {
  SentencePieceModel model;
  Status s = ForEachField(bytes, 0, [&](const WireField& f) {
    switch (f.number) {
      case 1: {
        KVTIER_RETURN_IF_ERROR(ExpectWireType(f, WireType::kLengthDelimited, "ModelProto.pieces"));
        SentencePieceModel::Piece piece;
        KVTIER_RETURN_IF_ERROR(ParsePiece(f, &piece));
        model.pieces.push_back(std::move(piece));
        return Status::Ok();
      }
      case 2:
        KVTIER_RETURN_IF_ERROR(
            ExpectWireType(f, WireType::kLengthDelimited, "ModelProto.trainer_spec"));
        return ParseTrainerSpec(f, &model.trainer);
      case 3:
        KVTIER_RETURN_IF_ERROR(
            ExpectWireType(f, WireType::kLengthDelimited, "ModelProto.normalizer_spec"));
        return ParseNormalizerSpec(f, &model.normalizer);
      case 5:
        KVTIER_RETURN_IF_ERROR(
            ExpectWireType(f, WireType::kLengthDelimited, "ModelProto.denormalizer_spec"));
        return ParseNormalizerSpec(f, &model.denormalizer);
      default:
        return Status::Ok();
    }
  });
  if (!s.ok()) return s;
  return model;
}

}  // namespace kvtier
