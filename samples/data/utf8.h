// UTF-8 helpers shared by the corpus cleaner, the tokenizer and BLEU: validation, code point
// counting and decoding. Validation follows RFC 3629 (no overlongs, no surrogates, max U+10FFFF).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ls_sample {

// True when `text` is well-formed UTF-8.
bool is_valid_utf8(const std::string& text);

// Number of code points of well-formed UTF-8 (for other input: bytes that are not continuation
// bytes).
size_t utf8_length(const std::string& text);

// Decodes the code point starting at text[pos] and sets `length` to its byte length. Malformed
// input decodes as the single byte's value with length 1.
uint32_t utf8_decode_at(const std::string& text, size_t pos, size_t& length);

// ISO-8859-1 bytes to UTF-8 (every byte is the code point of the same value).
std::string latin1_to_utf8(const std::string& text);

}  // namespace ls_sample
