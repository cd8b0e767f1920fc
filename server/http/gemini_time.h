// Google's JSON forms of time, as the Gemini dialect (gemini_api.cc) reads
// and writes them: a Duration is decimal seconds ending in "s" ("3600s",
// "1.5s"; at most 9 fraction digits, no sign, no other unit), a Timestamp is
// RFC 3339 ("2026-01-02T03:04:05.678Z", or an offset such as "+01:00" in
// place of "Z"). Both are parsed strictly: anything else is InvalidArgument
// naming the field and the form wanted. Header-only; stateless.
#pragma once

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kvtier::http {

namespace gemini_time_internal {

// The unsigned decimal `text` (digits only, at least one), or -1.
inline int64_t Digits(std::string_view text) {
  int64_t v = -1;
  if (text.empty() || text.size() > 18) return -1;
  for (char c : text) {
    if (c < '0' || c > '9') return -1;
  }
  std::from_chars(text.data(), text.data() + text.size(), v);
  return v;
}

// The milliseconds of a fraction's digits ("5" = 500, "123456" = 123).
inline int64_t FractionMs(std::string_view digits) {
  std::string ms(digits.substr(0, 3));
  ms.resize(3, '0');
  return Digits(ms);
}

}  // namespace gemini_time_internal

// `text` ("3600s", "1.5s") in milliseconds (digits past the third after the
// point are dropped).
inline Result<int64_t> ParseDurationMs(std::string_view text, std::string_view field) {
  using gemini_time_internal::Digits;
  const auto bad = [&] {
    return Status::InvalidArgument(std::string(field) + ": \"" + std::string(text) +
                                   "\" is not a duration (want seconds ending in \"s\", such as "
                                   "\"3600s\" or \"1.5s\")");
  };
  if (text.size() < 2 || text.back() != 's') return bad();
  const std::string_view number = text.substr(0, text.size() - 1);
  const size_t point = number.find('.');
  const std::string_view whole = number.substr(0, point);
  const std::string_view fraction =
      point == std::string_view::npos ? std::string_view() : number.substr(point + 1);
  // Google's Durations stop at 315576000000 s (10,000 years): 12 digits.
  const int64_t seconds = whole.size() > 12 ? -1 : Digits(whole);
  if (seconds < 0) return bad();
  if (point != std::string_view::npos &&
      (fraction.empty() || fraction.size() > 9 || Digits(fraction) < 0)) {
    return bad();
  }
  return seconds * 1000 + (fraction.empty() ? 0 : gemini_time_internal::FractionMs(fraction));
}

// `text` (RFC 3339) as Unix milliseconds (digits past the third after the
// point are dropped). Leap seconds (":60") are refused.
inline Result<int64_t> ParseTimestampMs(std::string_view text, std::string_view field) {
  using gemini_time_internal::Digits;
  const auto bad = [&](const char* why) {
    return Status::InvalidArgument(std::string(field) + ": \"" + std::string(text) +
                                   "\" is not an RFC 3339 timestamp (" + why +
                                   "; want such as \"2026-01-02T03:04:05Z\")");
  };
  // YYYY-MM-DDTHH:MM:SS, then [.fraction], then Z or +HH:MM / -HH:MM.
  if (text.size() < 20 || text[4] != '-' || text[7] != '-' ||
      (text[10] != 'T' && text[10] != 't') || text[13] != ':' || text[16] != ':') {
    return bad("not of the form YYYY-MM-DDTHH:MM:SS");
  }
  const int64_t year = Digits(text.substr(0, 4)), month = Digits(text.substr(5, 2)),
                day = Digits(text.substr(8, 2)), hour = Digits(text.substr(11, 2)),
                minute = Digits(text.substr(14, 2)), second = Digits(text.substr(17, 2));
  if (year < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) {
    return bad("a date or time field is not digits");
  }
  const std::chrono::year_month_day date{std::chrono::year(static_cast<int>(year)),
                                         std::chrono::month(static_cast<unsigned>(month)),
                                         std::chrono::day(static_cast<unsigned>(day))};
  if (!date.ok()) return bad("no such date");
  if (hour > 23 || minute > 59 || second > 59) return bad("no such time of day");
  std::string_view rest = text.substr(19);
  int64_t fraction_ms = 0;
  if (!rest.empty() && rest.front() == '.') {
    const size_t end = rest.find_first_not_of("0123456789", 1);
    const std::string_view digits = rest.substr(1, end == std::string_view::npos ? end : end - 1);
    if (digits.empty() || digits.size() > 9) return bad("the fraction has 1 to 9 digits");
    fraction_ms = gemini_time_internal::FractionMs(digits);
    rest = rest.substr(1 + digits.size());
  }
  int64_t offset_minutes = 0;
  if (rest == "Z" || rest == "z") {
  } else if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    const int64_t oh = Digits(rest.substr(1, 2)), om = Digits(rest.substr(4, 2));
    if (oh < 0 || om < 0 || oh > 23 || om > 59) return bad("no such time zone offset");
    offset_minutes = (rest[0] == '+' ? 1 : -1) * (oh * 60 + om);
  } else {
    return bad("it must end in Z or an offset such as +01:00");
  }
  const int64_t days = std::chrono::sys_days(date).time_since_epoch().count();
  const int64_t seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
  return seconds * 1000 + fraction_ms;
}

// Unix milliseconds in RFC 3339, UTC, as Google writes them: no fraction on
// a whole second, else three digits ("2026-01-02T03:04:05.678Z").
inline std::string FormatTimestamp(int64_t epoch_ms) {
  using namespace std::chrono;
  const sys_time<milliseconds> t{milliseconds(epoch_ms)};
  const sys_days day = floor<days>(t);
  const year_month_day date{day};
  const hh_mm_ss<milliseconds> time{t - day};
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02lld", static_cast<int>(date.year()),
                static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                static_cast<int>(time.hours().count()), static_cast<int>(time.minutes().count()),
                static_cast<long long>(time.seconds().count()));
  std::string out = buf;
  if (const int64_t ms = time.subseconds().count(); ms != 0) {
    std::snprintf(buf, sizeof buf, ".%03lld", static_cast<long long>(ms));
    out += buf;
  }
  return out + "Z";
}

}  // namespace kvtier::http
