#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <unordered_set>

#include "data/data_error.h"
#include "data/file_io.h"
#include "data/mo_reader.h"
#include "data/utf8.h"

namespace ls_sample {
namespace {

bool is_ascii_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_ascii_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_letter_byte(char c) {
  return is_ascii_letter(c) || static_cast<unsigned char>(c) >= 0x80;
}
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Letters for the format-only filter: ASCII letters, and non-ASCII code points outside the
// Latin-1 punctuation/symbols (U+0080-U+00BF, U+00D7, U+00F7), the punctuation, symbol, arrow,
// maths and box-drawing blocks (U+2000-U+2BFF) and CJK punctuation (U+3000-U+303F).
bool is_letter_code_point(uint32_t cp) {
  if (cp < 0x80) return is_ascii_letter(static_cast<char>(cp));
  if (cp < 0xC0 || cp == 0xD7 || cp == 0xF7) return false;
  if (cp >= 0x2000 && cp <= 0x2BFF) return false;
  if (cp >= 0x3000 && cp <= 0x303F) return false;
  return true;
}

// "&name;" or "&#123;" starting at text[pos] (text[pos] == '&').
bool starts_entity(const std::string& text, size_t pos) {
  size_t i = pos + 1;
  while (i < text.size() && (is_ascii_letter(text[i]) || is_ascii_digit(text[i]) || text[i] == '#'))
    ++i;
  return i > pos + 1 && i < text.size() && text[i] == ';';
}

bool is_accelerator_at(const std::string& text, size_t i) {
  const char c = text[i];
  if (c != '_' && c != '&') return false;
  if (i + 1 >= text.size() || !is_letter_byte(text[i + 1])) return false;
  if (i > 0 && (text[i - 1] == '_' || text[i - 1] == '&')) return false;
  if (c == '&' && starts_entity(text, i)) return false;
  return true;
}

// Length of the printf conversion starting at text[pos] == '%', or 0 when there is none.
size_t printf_spec_length(const std::string& text, size_t pos) {
  size_t i = pos + 1;
  const auto at = [&](size_t k) { return k < text.size() ? text[k] : '\0'; };
  if (at(i) == '%') return 2;
  if (at(i) == '<') {  // gettext's system-dependent segments: %<PRIu64>
    const size_t close = text.find('>', i);
    return close == std::string::npos ? 0 : close + 1 - pos;
  }
  size_t k = i;  // positional argument: %1$s
  while (is_ascii_digit(at(k))) ++k;
  if (k > i && at(k) == '$') i = k + 1;
  while (std::string("-+ #0'I").find(at(i)) != std::string::npos && at(i) != '\0') ++i;
  if (at(i) == '*') ++i;
  while (is_ascii_digit(at(i))) ++i;
  if (at(i) == '.') {
    ++i;
    if (at(i) == '*') ++i;
    while (is_ascii_digit(at(i))) ++i;
  }
  while (std::string("hlLqjzZt").find(at(i)) != std::string::npos && at(i) != '\0') ++i;
  if (at(i) == '<') {  // %l<PRId64> style
    const size_t close = text.find('>', i);
    return close == std::string::npos ? 0 : close + 1 - pos;
  }
  if (std::string("diouxXeEfFgGaAcspnmCS").find(at(i)) != std::string::npos && at(i) != '\0')
    return i + 1 - pos;
  // strftime conversions (%H, %Y, %-d, %_m): '%', an optional flag, then a letter.
  size_t j = pos + 1;
  if (at(j) == '-' || at(j) == '_' || at(j) == '0' || at(j) == '^' || at(j) == '#') ++j;
  if (at(j) == 'E' || at(j) == 'O') ++j;
  if (is_ascii_letter(at(j))) return j + 1 - pos;
  return 0;
}

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t fmix64(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

double unit_interval(uint64_t h) {
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

std::vector<std::string> read_lines(const std::string& path) {
  const std::string bytes = read_whole_file(path);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < bytes.size()) {
    size_t end = bytes.find('\n', start);
    if (end == std::string::npos) end = bytes.size();
    std::string line = bytes.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

bool is_latin1_charset(const std::string& charset) {
  std::string lower;
  for (const char c : charset) lower.push_back(c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c);
  return lower == "iso-8859-1" || lower == "iso8859-1" || lower == "latin1" || lower == "latin-1";
}

struct Keyed {
  double u;
  size_t index;
};

// Moves whole source groups of the train pairs with smallest u into `split` until it holds
// `wanted` pairs.
void top_up(std::vector<int>& assignment, const std::vector<SentencePair>& pairs,
            const std::vector<double>& u, int split, size_t wanted) {
  size_t have = static_cast<size_t>(std::count(assignment.begin(), assignment.end(), split));
  if (have >= wanted) return;
  std::vector<Keyed> train;
  for (size_t i = 0; i < pairs.size(); ++i)
    if (assignment[i] == 0) train.push_back({u[i], i});
  std::sort(train.begin(), train.end(), [&](const Keyed& a, const Keyed& b) {
    if (a.u != b.u) return a.u < b.u;
    const SentencePair& pa = pairs[a.index];
    const SentencePair& pb = pairs[b.index];
    if (pa.source != pb.source) return pa.source < pb.source;
    return a.index < b.index;
  });
  for (size_t k = 0; k < train.size(); ++k) {
    const bool continues_group =
        k > 0 && pairs[train[k].index].source == pairs[train[k - 1].index].source;
    if (have >= wanted && !continues_group) break;
    assignment[train[k].index] = split;
    ++have;
  }
}

}  // namespace

std::string CorpusStats::summary() const {
  return "files " + std::to_string(files) + ", pairs read " + std::to_string(read) +
         ", dropped: invalid utf-8 " + std::to_string(dropped_invalid_utf8) + ", empty " +
         std::to_string(dropped_empty) + ", too long " + std::to_string(dropped_too_long) +
         ", format-only " + std::to_string(dropped_format_only) + ", source==target " +
         std::to_string(dropped_identical) + ", duplicate " + std::to_string(dropped_duplicate) +
         "; kept " + std::to_string(kept) + " (train " + std::to_string(train) + ", valid " +
         std::to_string(valid) + ", test " + std::to_string(test) + ")";
}

std::string collapse_whitespace(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (const char c : text) {
    if (is_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

std::string strip_accelerator(const std::string& text) {
  size_t found = std::string::npos;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!is_accelerator_at(text, i)) continue;
    if (found != std::string::npos) return text;  // more than one: not an accelerator
    found = i;
  }
  if (found == std::string::npos) return text;
  std::string out = text;
  out.erase(found, 1);
  return out;
}

bool has_letters_beyond_format_specifiers(const std::string& text) {
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '%') {
      const size_t length = printf_spec_length(text, i);
      i += length > 0 ? length : 1;
      continue;
    }
    if (c == '{') {
      const size_t close = text.find('}', i);
      if (close != std::string::npos) {
        i = close + 1;
        continue;
      }
    }
    size_t length = 1;
    if (is_letter_code_point(utf8_decode_at(text, i, length))) return true;
    i += length;
  }
  return false;
}

uint64_t split_hash(const std::string& source) {
  return fmix64(fnv1a64(source));
}

Corpus clean_and_split(const std::vector<SentencePair>& pairs, bool strip_accelerators,
                       const CorpusOptions& options, CorpusStats stats) {
  if (options.valid_fraction < 0 || options.test_fraction < 0 ||
      options.valid_fraction + options.test_fraction >= 1.0) {
    throw DataError(
        "clean_and_split: valid_fraction and test_fraction must be >= 0 and sum to < 1");
  }
  std::vector<SentencePair> kept;
  std::unordered_set<std::string> seen;
  for (const SentencePair& raw : pairs) {
    SentencePair pair = raw;
    for (std::string* side : {&pair.source, &pair.target}) {
      if (strip_accelerators) *side = strip_accelerator(*side);
      *side = collapse_whitespace(*side);
    }
    if (!is_valid_utf8(pair.source) || !is_valid_utf8(pair.target)) {
      ++stats.dropped_invalid_utf8;
    } else if (pair.source.empty() || pair.target.empty()) {
      ++stats.dropped_empty;
    } else if (utf8_length(pair.source) > options.max_chars ||
               utf8_length(pair.target) > options.max_chars) {
      ++stats.dropped_too_long;
    } else if (!has_letters_beyond_format_specifiers(pair.source) ||
               !has_letters_beyond_format_specifiers(pair.target)) {
      ++stats.dropped_format_only;
    } else if (pair.source == pair.target) {
      ++stats.dropped_identical;
    } else if (!seen.insert(pair.source + '\0' + pair.target).second) {
      ++stats.dropped_duplicate;
    } else {
      kept.push_back(std::move(pair));
    }
  }
  stats.kept = kept.size();

  // 0 = train, 1 = valid, 2 = test.
  std::vector<double> u(kept.size());
  std::vector<int> assignment(kept.size(), 0);
  for (size_t i = 0; i < kept.size(); ++i) {
    u[i] = unit_interval(split_hash(kept[i].source));
    if (u[i] < options.valid_fraction) {
      assignment[i] = 1;
    } else if (u[i] < options.valid_fraction + options.test_fraction) {
      assignment[i] = 2;
    }
  }
  top_up(assignment, kept, u, 1, std::min(options.min_valid, kept.size() / 10));
  top_up(assignment, kept, u, 2, std::min(options.min_test, kept.size() / 10));

  Corpus corpus;
  for (size_t i = 0; i < kept.size(); ++i) {
    std::vector<SentencePair>& split = assignment[i] == 1   ? corpus.valid
                                       : assignment[i] == 2 ? corpus.test
                                                            : corpus.train;
    split.push_back(std::move(kept[i]));
  }
  stats.train = corpus.train.size();
  stats.valid = corpus.valid.size();
  stats.test = corpus.test.size();
  corpus.stats = stats;
  return corpus;
}

Corpus build_corpus_from_mo_dir(const std::string& directory, const CorpusOptions& options) {
  namespace fs = std::filesystem;
  std::error_code error;
  fs::directory_iterator it(directory, error);
  if (error) {
    throw DataError("build_corpus_from_mo_dir: cannot list '" + directory +
                    "': " + error.message());
  }
  std::vector<std::string> files;
  for (const fs::directory_entry& entry : it) {
    if (entry.path().extension() == ".mo" && entry.is_regular_file(error)) {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    throw DataError("build_corpus_from_mo_dir: no .mo files in '" + directory + "'");
  }
  CorpusStats stats;
  std::vector<SentencePair> pairs;
  for (const std::string& file : files) {
    MoCatalog catalog = read_mo_file(file);
    ++stats.files;
    const bool latin1 = is_latin1_charset(catalog.charset);
    for (auto& [msgid, msgstr] : catalog.pairs) {
      if (latin1) {
        pairs.push_back({latin1_to_utf8(msgid), latin1_to_utf8(msgstr)});
      } else {
        pairs.push_back({std::move(msgid), std::move(msgstr)});
      }
    }
  }
  stats.read = pairs.size();
  return clean_and_split(pairs, options.strip_accelerators, options, stats);
}

Corpus build_corpus_from_text(const std::string& source_path, const std::string& target_path,
                              const CorpusOptions& options) {
  const std::vector<std::string> sources = read_lines(source_path);
  const std::vector<std::string> targets = read_lines(target_path);
  if (sources.size() != targets.size()) {
    throw DataError("build_corpus_from_text: '" + source_path + "' has " +
                    std::to_string(sources.size()) + " lines but '" + target_path + "' has " +
                    std::to_string(targets.size()));
  }
  CorpusStats stats;
  stats.files = 2;
  std::vector<SentencePair> pairs;
  pairs.reserve(sources.size());
  for (size_t i = 0; i < sources.size(); ++i) pairs.push_back({sources[i], targets[i]});
  stats.read = pairs.size();
  return clean_and_split(pairs, false, options, stats);
}

}  // namespace ls_sample
