#include "data/utf8.h"

namespace ls_sample {
namespace {

// Byte length and validity of the sequence at text[pos]; 0 when malformed.
size_t valid_sequence_length(const std::string& text, size_t pos, uint32_t& code_point) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  size_t length = 0;
  uint32_t cp = 0;
  uint32_t min_cp = 0;
  if (lead < 0x80) {
    code_point = lead;
    return 1;
  } else if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, cp = lead & 0x1F, min_cp = 0x80;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, cp = lead & 0x0F, min_cp = 0x800;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, cp = lead & 0x07, min_cp = 0x10000;
  } else {
    return 0;
  }
  if (pos + length > text.size()) return 0;
  for (size_t i = 1; i < length; ++i) {
    const unsigned char c = byte(pos + i);
    if ((c & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (c & 0x3F);
  }
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  code_point = cp;
  return length;
}

}  // namespace

bool is_valid_utf8(const std::string& text) {
  size_t pos = 0;
  while (pos < text.size()) {
    uint32_t cp = 0;
    const size_t length = valid_sequence_length(text, pos, cp);
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

size_t utf8_length(const std::string& text) {
  size_t count = 0;
  for (const char c : text) count += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return count;
}

uint32_t utf8_decode_at(const std::string& text, size_t pos, size_t& length) {
  uint32_t cp = 0;
  length = valid_sequence_length(text, pos, cp);
  if (length == 0) {
    length = 1;
    return static_cast<unsigned char>(text[pos]);
  }
  return cp;
}

std::string latin1_to_utf8(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const unsigned char b = static_cast<unsigned char>(c);
    if (b < 0x80) {
      out.push_back(c);
    } else {
      out.push_back(static_cast<char>(0xC0 | (b >> 6)));
      out.push_back(static_cast<char>(0x80 | (b & 0x3F)));
    }
  }
  return out;
}

}  // namespace ls_sample
