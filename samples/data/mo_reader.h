// Reader for GNU gettext binary message catalogs (.mo files), written against the format
// description in the gettext manual ("The Format of GNU MO Files"):
//
//   offset  0: magic 0x950412de (the byte order it is read in is the file's byte order)
//   offset  4: file format revision (major << 16 | minor; majors 0 and 1 are accepted)
//   offset  8: N, number of strings
//   offset 12: O, offset of the table of original strings
//   offset 16: T, offset of the table of translated strings
//   offset 20: S, size of the hashing table; offset 24: H, its offset (checked, not used)
//   at O and T: N entries of (length, offset), length excluding the terminating NUL.
//
// Which entries come out as (msgid, msgstr) pairs:
//   - the header entry (empty msgid) is skipped; its Content-Type charset is reported;
//   - entries with an empty translation are skipped;
//   - plural entries (msgid = singular NUL plural) are skipped;
//   - entries with a context (msgid = context \x04 text) are kept with the context stripped:
//     the context only disambiguates the English text, the text and its translation are still a
//     valid sentence pair. MoReadOptions::keep_context_entries = false skips them instead.
//
// Every offset and length is bounds-checked against the file size; a truncated or corrupt file
// throws DataError naming the file and the problem.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ls_sample {

struct MoReadOptions {
  bool keep_context_entries = true;  // strip the context and keep the pair (else skip it)
};

struct MoCatalog {
  std::string path;
  bool big_endian = false;  // byte order of the file
  uint32_t revision = 0;
  std::string charset;  // from the header entry's Content-Type, empty when absent
  std::vector<std::pair<std::string, std::string>> pairs;  // msgid -> msgstr, in file order
  // What was skipped (the header entry is not counted).
  size_t skipped_empty_translation = 0;
  size_t skipped_plural = 0;
  size_t skipped_context = 0;   // only when keep_context_entries is false
  size_t stripped_context = 0;  // context entries kept with the context removed
};

// Parses a catalog held in memory; `name` is used in error messages.
MoCatalog parse_mo(const std::string& bytes, const std::string& name,
                   const MoReadOptions& options = {});

// Reads and parses a .mo file.
MoCatalog read_mo_file(const std::string& path, const MoReadOptions& options = {});

}  // namespace ls_sample
