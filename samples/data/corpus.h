// English -> German parallel corpus for the sample trainer, built either from every gettext
// catalog in a directory (e.g. /usr/share/locale/de/LC_MESSAGES, files read in sorted name
// order) or from two line-aligned text files.
//
// Catalogs whose header declares charset ISO-8859-1 are converted to UTF-8; other charsets are
// taken as UTF-8 (pairs that are not well-formed UTF-8 are dropped, see below).
//
// Clean-up, in this order, applied to each side of each pair:
//   1. (.mo input only) accelerator markers are stripped: a '_' or '&' directly before a letter
//      (ASCII letter or any non-ASCII code point), not preceded by another '_'/'&' and not
//      starting an entity such as "&amp;", is removed -- but only when the sentence has exactly
//      one such marker, so identifiers like "LC_ALL and LC_MESSAGES" stay intact. (A lone
//      identifier like "file_name" still loses its '_': a heuristic.)
//   2. whitespace runs (space, \t, \n, \r, \v, \f) collapse to one space; ends are trimmed.
// A pair is then dropped when either side
//   - is not well-formed UTF-8, or is empty,
//   - is longer than max_chars code points (default 200),
//   - has no letter (ASCII letter, or a non-ASCII code point outside the Latin-1 symbols, the
//     U+2000-U+2BFF punctuation/symbol blocks and CJK punctuation) once printf format specifiers
//     (%s, %1$d, %-10.3lf, %%, %<PRIu64>), strftime conversions (%H, %-d) and brace placeholders
//     ({0}, {name}) are removed ("format specifiers only", which also drops pure numbers and
//     punctuation),
// or when source == target. Identical (source, target) pairs are kept once (first occurrence).
//
// Split (deterministic, by the source sentence only, so a source sentence never appears in two
// splits): h = fmix64(FNV-1a-64(source)) (MurmurHash3's finaliser over FNV-1a for well-mixed
// bits); u = (h >> 11) / 2^53 in [0, 1). u < valid_fraction -> valid; u < valid_fraction +
// test_fraction -> test; otherwise train. When valid (then test) holds fewer than
// min(min_valid, kept / 10) pairs, it is topped up with the train pairs of smallest u, whole
// source groups at a time. Within a split, pairs keep their input order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ls_sample {

struct SentencePair {
  std::string source;  // English
  std::string target;  // German
  bool operator==(const SentencePair& other) const {
    return source == other.source && target == other.target;
  }
};

struct CorpusOptions {
  size_t max_chars = 200;          // per side, in code points after clean-up
  bool strip_accelerators = true;  // .mo input only
  double valid_fraction = 0.01;
  double test_fraction = 0.01;
  size_t min_valid = 100;
  size_t min_test = 100;
};

struct CorpusStats {
  size_t files = 0;  // catalogs (or text files) read
  size_t read = 0;   // pairs read (after the .mo reader's own skipping)
  size_t dropped_invalid_utf8 = 0;
  size_t dropped_empty = 0;
  size_t dropped_too_long = 0;
  size_t dropped_format_only = 0;
  size_t dropped_identical = 0;  // source == target
  size_t dropped_duplicate = 0;
  size_t kept = 0;
  size_t train = 0, valid = 0, test = 0;
  std::string summary() const;  // one line, for logs
};

struct Corpus {
  std::vector<SentencePair> train, valid, test;
  CorpusStats stats;
};

// Every "*.mo" file of `directory`, in sorted file-name order. A corrupt catalog throws
// DataError naming it.
Corpus build_corpus_from_mo_dir(const std::string& directory, const CorpusOptions& options = {});

// Two line-aligned files, one sentence a line ('\n', an optional '\r' before it is dropped).
// Throws DataError when the line counts differ.
Corpus build_corpus_from_text(const std::string& source_path, const std::string& target_path,
                              const CorpusOptions& options = {});

// The pieces, exposed for tests and other inputs.
std::string collapse_whitespace(const std::string& text);
std::string strip_accelerator(const std::string& text);
bool has_letters_beyond_format_specifiers(const std::string& text);
uint64_t split_hash(const std::string& source);  // fmix64(FNV-1a-64(source))

// Cleans, filters and deduplicates `pairs` (updating stats), then splits them.
Corpus clean_and_split(const std::vector<SentencePair>& pairs, bool strip_accelerators,
                       const CorpusOptions& options, CorpusStats stats = {});

}  // namespace ls_sample
