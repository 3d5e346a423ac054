// Tests of the sample trainer's data pipeline (samples/data): .mo reader, corpus clean-up and
// split, byte-level BPE tokenizer, sacreBLEU-compatible BLEU, token-budget batcher.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "data/batcher.h"
#include "data/bleu.h"
#include "data/corpus.h"
#include "data/data_error.h"
#include "data/mo_reader.h"
#include "data/tokenizer.h"

using namespace ls_sample;
namespace fs = std::filesystem;

namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

// This run's scratch root under $LS_TEST_TMPDIR (or /tmp), removed when the program ends.
struct ScratchRoot {
  fs::path path;
  ScratchRoot() {
    const char* base = std::getenv("LS_TEST_TMPDIR");
    path =
        fs::path(base != nullptr ? base : "/tmp") / ("ls_sample_data_" + std::to_string(getpid()));
  }
  ~ScratchRoot() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};
ScratchRoot scratch_root;

// A fresh, empty directory for one test.
fs::path temp_dir(const std::string& name) {
  const fs::path dir = scratch_root.path / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  REQUIRE(out.good());
}

void put_word(std::string& out, size_t at, uint32_t value, bool big_endian) {
  for (int i = 0; i < 4; ++i) {
    const int shift = big_endian ? 24 - 8 * i : 8 * i;
    out[at + i] = static_cast<char>((value >> shift) & 0xff);
  }
}

// A GNU .mo catalog holding `entries` in the given order: 28-byte header, original table,
// translation table, then the NUL-terminated strings (no hash table).
std::string make_mo(const Pairs& entries, bool big_endian, uint32_t revision = 0) {
  const uint32_t n = static_cast<uint32_t>(entries.size());
  const uint32_t originals = 28, translations = 28 + 8 * n;
  std::string out(28 + 16 * n, '\0');
  put_word(out, 0, 0x950412deu, big_endian);
  put_word(out, 4, revision, big_endian);
  put_word(out, 8, n, big_endian);
  put_word(out, 12, originals, big_endian);
  put_word(out, 16, translations, big_endian);
  put_word(out, 20, 0, big_endian);
  put_word(out, 24, static_cast<uint32_t>(out.size()), big_endian);
  for (int table = 0; table < 2; ++table) {
    for (uint32_t i = 0; i < n; ++i) {
      const std::string& text = table == 0 ? entries[i].first : entries[i].second;
      const uint32_t entry = (table == 0 ? originals : translations) + 8 * i;
      put_word(out, entry, static_cast<uint32_t>(text.size()), big_endian);
      put_word(out, entry + 4, static_cast<uint32_t>(out.size()), big_endian);
      out += text;
      out.push_back('\0');
    }
  }
  return out;
}

const Pairs kCatalogEntries = {
    {"", "Project-Id-Version: test 1.0\nContent-Type: text/plain; charset=UTF-8\n"},
    {"Hello", "Hallo"},
    {std::string("file\0files", 10), std::string("Datei\0Dateien", 13)},  // plural
    {"Empty", ""},                                                        // untranslated
    {"menu\x04Open",
     "\xC3\x96"
     "ffnen"},  // context "menu"
    {"Quit", "Beenden"},
};

// The DataError message of `f()`, or "<no throw>".
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  return "<no throw>";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

// ------------------------------------------------------------------------------- .mo reader

TEST_CASE("mo reader: both byte orders give exactly the translatable pairs") {
  const fs::path dir = temp_dir("mo_pairs");
  for (const bool big_endian : {false, true}) {
    CAPTURE(big_endian);
    const fs::path path = dir / (big_endian ? "be.mo" : "le.mo");
    write_file(path, make_mo(kCatalogEntries, big_endian));
    const MoCatalog catalog = read_mo_file(path.string());
    CHECK(catalog.big_endian == big_endian);
    CHECK(catalog.charset == "UTF-8");
    const Pairs expected = {{"Hello", "Hallo"},
                            {"Open",
                             "\xC3\x96"
                             "ffnen"},
                            {"Quit", "Beenden"}};
    CHECK(catalog.pairs == expected);
    CHECK(catalog.skipped_plural == 1);
    CHECK(catalog.skipped_empty_translation == 1);
    CHECK(catalog.stripped_context == 1);
    CHECK(catalog.skipped_context == 0);

    MoReadOptions no_context;
    no_context.keep_context_entries = false;
    const MoCatalog strict = read_mo_file(path.string(), no_context);
    const Pairs expected_strict = {{"Hello", "Hallo"}, {"Quit", "Beenden"}};
    CHECK(strict.pairs == expected_strict);
    CHECK(strict.skipped_context == 1);
  }
}

TEST_CASE("mo reader: truncated and corrupt files throw DataError naming file and problem") {
  const std::string good = make_mo(kCatalogEntries, false);
  const std::string name = "broken.mo";
  const auto parse_error = [&](const std::string& bytes) {
    return error_of([&] { parse_mo(bytes, name); });
  };

  SUBCASE("truncated header") {
    const std::string message = parse_error(good.substr(0, 10));
    CHECK(contains(message, name));
    CHECK(contains(message, "truncated header"));
  }
  SUBCASE("bad magic") {
    std::string bytes = good;
    bytes[0] = 'X';
    CHECK(contains(parse_error(bytes), "bad magic"));
  }
  SUBCASE("unsupported major revision") {
    CHECK(contains(parse_error(make_mo(kCatalogEntries, true, 2u << 16)), "revision 2.0"));
  }
  SUBCASE("string table cut off") {
    CHECK(contains(parse_error(good.substr(0, 40)), "original string table"));
  }
  SUBCASE("strings cut off") {
    const std::string message = parse_error(good.substr(0, good.size() - 3));
    CHECK(contains(message, "translated string 5"));
    CHECK(contains(message, "extends beyond the end of the file"));
  }
  SUBCASE("string offset out of range") {
    std::string bytes = good;
    put_word(bytes, 28 + 8 * 1 + 4, 0xfffffff0u, false);  // offset of original string 1
    CHECK(contains(parse_error(bytes), "original string 1"));
  }
  SUBCASE("missing NUL terminator") {
    std::string bytes = good;
    put_word(bytes, 28 + 8 * 1, 4, false);  // "Hello" claimed as 4 bytes: byte 5 is 'o'
    CHECK(contains(parse_error(bytes), "not NUL-terminated"));
  }
  SUBCASE("table count larger than the file") {
    std::string bytes = good;
    put_word(bytes, 8, 1000000, false);
    CHECK(contains(parse_error(bytes), "extends beyond the end of the file"));
  }
  SUBCASE("missing file") {
    const std::string message = error_of([] { read_mo_file("/nonexistent/dir/x.mo"); });
    CHECK(contains(message, "/nonexistent/dir/x.mo"));
  }
  SUBCASE("the intact catalog parses") {
    CHECK(parse_error(good) == "<no throw>");
  }
}

// ------------------------------------------------------------------------------- corpus

TEST_CASE("corpus: clean-up helpers") {
  CHECK(collapse_whitespace("  a \t b\n\nc  ") == "a b c");
  CHECK(strip_accelerator("_File") == "File");
  CHECK(strip_accelerator("\xC3\x96_ffnen") ==
        "\xC3\x96"
        "ffnen");
  CHECK(strip_accelerator("&Save as") == "Save as");
  CHECK(strip_accelerator("LC_ALL and LC_MESSAGES") == "LC_ALL and LC_MESSAGES");
  CHECK(strip_accelerator("Tom &amp; Jerry") == "Tom &amp; Jerry");
  CHECK(strip_accelerator("a && b") == "a && b");
  CHECK(strip_accelerator("__init") == "__init");
  CHECK_FALSE(has_letters_beyond_format_specifiers("%s: %s"));
  CHECK_FALSE(has_letters_beyond_format_specifiers("%1$s (%-10.3lf%%)"));
  CHECK_FALSE(has_letters_beyond_format_specifiers("%<PRIu64> / {0}"));
  CHECK_FALSE(has_letters_beyond_format_specifiers("%H:%M:%S"));
  CHECK_FALSE(has_letters_beyond_format_specifiers("\xC2\xBB%s\xC2\xAB \xE2\x80\xA6"));  // »%s« …
  CHECK(has_letters_beyond_format_specifiers("%s files"));
  CHECK(has_letters_beyond_format_specifiers("{0} Dateien"));
  CHECK(has_letters_beyond_format_specifiers("\xC3\xA4"));  // "ä"
}

TEST_CASE("corpus: .mo directory is cleaned, filtered and deduplicated") {
  const fs::path dir = temp_dir("corpus_mo");
  const std::string header = "Content-Type: text/plain; charset=UTF-8\n";
  write_file(dir / "a.mo", make_mo({{"", header},
                                    {"_Open", "\xC3\x96_ffnen"},  // accelerators on both sides
                                    {"Save  the\nfile", "Datei   speichern"},
                                    {"%s: %s", "%s: %s."},  // format only
                                    {"OK", "OK"},           // source == target
                                    {std::string(201, 'x'), "zu lang"},
                                    {"Help", "Hilfe"}},
                                   false));
  write_file(dir / "b.mo", make_mo({{"", "Content-Type: text/plain; charset=ISO-8859-1\n"},
                                    {"Help", "Hilfe"},  // duplicate of a.mo
                                    {"Close",
                                     "Schlie\xDF"
                                     "en"},          // Latin-1 "ß"
                                    {"   ", "  "}},  // empty after clean-up
                                   true));
  write_file(dir / "ignored.txt", "not a catalog");
  CorpusOptions options;
  options.min_valid = 0;
  options.min_test = 0;
  options.valid_fraction = 0;
  options.test_fraction = 0;
  const Corpus corpus = build_corpus_from_mo_dir(dir.string(), options);
  const std::vector<SentencePair> expected = {{"Open",
                                               "\xC3\x96"
                                               "ffnen"},
                                              {"Save the file", "Datei speichern"},
                                              {"Help", "Hilfe"},
                                              {"Close",
                                               "Schlie\xC3\x9F"
                                               "en"}};
  CHECK(corpus.train == expected);
  CHECK(corpus.valid.empty());
  CHECK(corpus.test.empty());
  const CorpusStats& s = corpus.stats;
  CHECK(s.files == 2);
  CHECK(s.read == 9);
  CHECK(s.dropped_format_only == 1);
  CHECK(s.dropped_identical == 1);
  CHECK(s.dropped_too_long == 1);
  CHECK(s.dropped_duplicate == 1);
  CHECK(s.dropped_empty == 1);
  CHECK(s.kept == 4);

  write_file(dir / "c.mo", "garbage that is not a catalog at all");
  const std::string message = error_of([&] { build_corpus_from_mo_dir(dir.string()); });
  CHECK(contains(message, "c.mo"));
  CHECK(contains(message, "bad magic"));
}

namespace {

std::vector<SentencePair> synthetic_pairs(size_t n) {
  std::vector<SentencePair> pairs;
  for (size_t i = 0; i < n; ++i) {
    pairs.push_back({"sentence number " + std::to_string(i), "Satz Nummer " + std::to_string(i)});
  }
  // A source with two translations: both must land in the same split.
  pairs.push_back({"sentence number 7", "der siebte Satz"});
  return pairs;
}

std::set<std::string> sources_of(const std::vector<SentencePair>& pairs) {
  std::set<std::string> out;
  for (const SentencePair& p : pairs) out.insert(p.source);
  return out;
}

}  // namespace

TEST_CASE("corpus: the split is deterministic, disjoint by source and honours minimum counts") {
  const std::vector<SentencePair> pairs = synthetic_pairs(20000);
  CorpusOptions options;  // 1% / 1%, minimum 100 each
  const Corpus a = clean_and_split(pairs, false, options);
  const Corpus b = clean_and_split(pairs, false, options);
  CHECK(a.train == b.train);
  CHECK(a.valid == b.valid);
  CHECK(a.test == b.test);
  CHECK(a.train.size() + a.valid.size() + a.test.size() == pairs.size());
  // ~1% each: 200 expected, binomial sd ~14; [120, 280] is > 5 sd either side.
  CHECK(a.valid.size() >= 120);
  CHECK(a.valid.size() <= 280);
  CHECK(a.test.size() >= 120);
  CHECK(a.test.size() <= 280);

  const std::set<std::string> train = sources_of(a.train), valid = sources_of(a.valid),
                              test = sources_of(a.test);
  for (const std::string& s : valid) CHECK(train.count(s) == 0);
  for (const std::string& s : test) CHECK(train.count(s) == 0);
  for (const std::string& s : test) CHECK(valid.count(s) == 0);

  // The split of a sentence depends on its source only, not on the rest of the corpus.
  const std::vector<SentencePair> half(pairs.begin(), pairs.begin() + 10000);
  const Corpus c = clean_and_split(half, false, options);
  for (const SentencePair& p : c.valid) CHECK(valid.count(p.source) == 1);

  // Both translations of "sentence number 7" are in the same split.
  size_t sevens_in_train = 0;
  for (const SentencePair& p : a.train) sevens_in_train += p.source == "sentence number 7";
  CHECK((sevens_in_train == 0 || sevens_in_train == 2));

  // Small corpus: of 300 pairs ~3 fall in valid (and test) by hash; each is topped up to
  // min(100, 300 / 10) = 30 with whole source groups (all of one pair here).
  const std::vector<SentencePair> small(pairs.begin(), pairs.begin() + 300);
  const Corpus d = clean_and_split(small, false, options);
  CHECK(d.valid.size() == 30);
  CHECK(d.test.size() == 30);
  CHECK(d.train.size() + d.valid.size() + d.test.size() == 300);
  CHECK(sources_of(d.valid).size() == d.valid.size());
  const std::set<std::string> d_train = sources_of(d.train);
  for (const SentencePair& p : d.valid) CHECK(d_train.count(p.source) == 0);
  for (const SentencePair& p : d.test) CHECK(d_train.count(p.source) == 0);
}

TEST_CASE("corpus: aligned text files") {
  const fs::path dir = temp_dir("corpus_text");
  write_file(dir / "src.txt", "Good morning\r\nThe  house\nsame\n");
  write_file(dir / "tgt.txt", "Guten Morgen\nDas Haus\nsame\n");
  write_file(dir / "short.txt", "Guten Morgen\n");
  CorpusOptions options;
  options.valid_fraction = options.test_fraction = 0;
  options.min_valid = options.min_test = 0;
  const Corpus corpus =
      build_corpus_from_text((dir / "src.txt").string(), (dir / "tgt.txt").string(), options);
  const std::vector<SentencePair> expected = {{"Good morning", "Guten Morgen"},
                                              {"The house", "Das Haus"}};
  CHECK(corpus.train == expected);
  CHECK(corpus.stats.dropped_identical == 1);
  const std::string message = error_of(
      [&] { build_corpus_from_text((dir / "src.txt").string(), (dir / "short.txt").string()); });
  CHECK(contains(message, "3 lines"));
  CHECK(contains(message, "short.txt"));
}

// ------------------------------------------------------------------------------- tokenizer

TEST_CASE("tokenizer: pre-tokenisation pieces partition the text") {
  const std::vector<std::string> expected = {" ",   " Hello", ",", " w\xC3\xB6rld", "!",       " ",
                                             " 42", ".",      "5", " \t",           "\xC3\xA4"};
  CHECK(BpeTokenizer::split_pieces("  Hello, w\xC3\xB6rld!  42.5 \t\xC3\xA4") == expected);
}

TEST_CASE("tokenizer: learns the most frequent pairs first, with incremental counts") {
  // Pieces: "ab" x1, " ab" x2, "abc" x1 -> (a,b) occurs 4 times, (' ',ab) then 2 times,
  // (ab,c) once (< min_pair_count 2), so exactly two merges are learned.
  const BpeTokenizer tok = BpeTokenizer::learn({"ab ab ab", "abc"}, 1000);
  REQUIRE(tok.vocab_size() == 262);
  CHECK(tok.token_bytes(260) == "ab");
  CHECK(tok.token_bytes(261) == " ab");
  const int32_t c = BpeTokenizer::kFirstByte + 'c';
  CHECK(tok.encode("ab ab") == std::vector<int32_t>{260, 261});
  CHECK(tok.encode("abc") == std::vector<int32_t>{260, c});
  CHECK(tok.decode({BpeTokenizer::kBos, 260, 261, BpeTokenizer::kEos, BpeTokenizer::kPad}) ==
        "ab ab");
  CHECK(contains(error_of([&] { tok.decode({262}); }), "outside the vocabulary"));
  CHECK(contains(error_of([] { BpeTokenizer::learn({"x"}, 100); }), "vocab_size 100"));
}

namespace {

// Reference BPE learner: recounts every pair from scratch before each merge.
std::vector<std::string> naive_bpe_tokens(const std::vector<std::string>& texts, size_t vocab) {
  std::map<std::string, int64_t> piece_counts;
  for (const std::string& text : texts)
    for (const std::string& piece : BpeTokenizer::split_pieces(text)) ++piece_counts[piece];
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  for (const auto& [piece, count] : piece_counts) {
    std::vector<int32_t> symbols;
    for (const char c : piece) symbols.push_back(4 + static_cast<unsigned char>(c));
    words.push_back(symbols);
    counts.push_back(count);
  }
  std::vector<std::string> tokens(4);
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
  while (tokens.size() < vocab) {
    std::map<std::pair<int32_t, int32_t>, int64_t> pairs;
    for (size_t w = 0; w < words.size(); ++w)
      for (size_t i = 0; i + 1 < words[w].size(); ++i)
        pairs[{words[w][i], words[w][i + 1]}] += counts[w];
    std::pair<int32_t, int32_t> best{-1, -1};
    int64_t best_count = 0;
    for (const auto& [pair, count] : pairs) {  // ascending pairs: the first maximum wins ties
      if (count > best_count) best = pair, best_count = count;
    }
    if (best_count < 2) break;
    const int32_t id = static_cast<int32_t>(tokens.size());
    tokens.push_back(tokens[best.first] + tokens[best.second]);
    for (std::vector<int32_t>& symbols : words) {
      std::vector<int32_t> merged;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == best.first && symbols[i + 1] == best.second) {
          merged.push_back(id);
          ++i;
        } else {
          merged.push_back(symbols[i]);
        }
      }
      symbols = merged;
    }
  }
  return tokens;
}

}  // namespace

TEST_CASE("tokenizer: incremental pair counting learns the same merges as a full recount") {
  const std::vector<std::string> words = {"aaaa", "aa",   "banana", "Haus", "H\xC3\xA4user",
                                          "an",   "nana", "the",    "then", "%s",
                                          "1000", "10",   "...",    "ab"};
  std::vector<std::string> texts;
  uint64_t state = 7;
  for (int s = 0; s < 300; ++s) {
    std::string text;
    for (int w = 0; w < 6; ++w) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      if (w > 0) text += (state >> 60) == 0 ? "  " : " ";
      text += words[(state >> 33) % words.size()];
    }
    texts.push_back(text);
  }
  const BpeTokenizer tok = BpeTokenizer::learn(texts, 600);
  const std::vector<std::string> expected = naive_bpe_tokens(texts, 600);
  REQUIRE(tok.vocab_size() == expected.size());
  for (size_t id = 260; id < expected.size(); ++id) {
    CAPTURE(id);
    CHECK(tok.token_bytes(static_cast<int32_t>(id)) == expected[id]);
  }
}

TEST_CASE("tokenizer: ties go to the smaller pair and encoding applies merges in learned order") {
  // Pieces "bc", " bc" x2, "ab", " ab": (b,c) = 3 -> merge 260 "bc"; then (' ',bc) = 2 and
  // (a,b) = 2 tie, the smaller ids (' ' = 36) win -> 261 " bc"; then (a,b) -> 262 "ab";
  // (' ',ab) = 1 stops the learning.
  const BpeTokenizer tok = BpeTokenizer::learn({"bc bc bc", "ab ab"}, 1000);
  REQUIRE(tok.vocab_size() == 263);
  CHECK(tok.token_bytes(260) == "bc");
  CHECK(tok.token_bytes(261) == " bc");
  CHECK(tok.token_bytes(262) == "ab");
  // "abc": both (a,b) and (b,c) are merges; the earlier one (b,c) is applied first.
  CHECK(tok.encode("abc") == std::vector<int32_t>{BpeTokenizer::kFirstByte + 'a', 260});
}

namespace {

std::vector<std::string> training_texts() {
  const std::vector<std::string> base = {
      "The file could not be opened.",
      "Die Datei konnte nicht ge\xC3\xB6"
      "ffnet werden.",
      "Cannot read the file.",
      "Die Datei kann nicht gelesen werden.",
      "Open the window.",
      "\xC3\x96"
      "ffnen Sie das Fenster.",
      "Size: %d bytes",
      "Gr\xC3\xB6\xC3\x9F"
      "e: %d Bytes",
  };
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) texts.insert(texts.end(), base.begin(), base.end());
  return texts;
}

}  // namespace

TEST_CASE("tokenizer: exact round trip, unseen characters included, never <unk>") {
  const BpeTokenizer tok = BpeTokenizer::learn(training_texts(), 400);
  CHECK(tok.vocab_size() > 300);
  CHECK(tok.vocab_size() <= 400);
  const std::vector<std::string> texts = {
      "Die Datei konnte nicht ge\xC3\xB6"
      "ffnet werden.",
      "\xC3\xA4 \xC3\xB6 \xC3\xBC \xC3\x9F \xC3\x84\xC3\x96\xC3\x9C",        // ä ö ü ß ÄÖÜ
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x99\x82 \xCE\xA9mega",  // 日本語 🙂
                                                                             // Ωmega
      "  leading and trailing spaces  \t\n",
      std::string("control \x01\x7f and invalid \xff\xfe bytes"),
      std::string("nul \0 inside", 12),
      "",
  };
  for (const std::string& text : texts) {
    CAPTURE(text);
    const std::vector<int32_t> ids = tok.encode(text);
    for (const int32_t id : ids) {
      CHECK(id >= BpeTokenizer::kFirstByte);
      CHECK(static_cast<size_t>(id) < tok.vocab_size());
    }
    CHECK(tok.decode(ids) == text);
  }
  // A frequent training sentence is compressed by the merges.
  const std::string seen =
      "Die Datei konnte nicht ge\xC3\xB6"
      "ffnet werden.";
  CHECK(tok.encode(seen).size() < seen.size() / 3);
}

TEST_CASE("tokenizer: save/load round trip and corrupt files") {
  const fs::path dir = temp_dir("tokenizer");
  const BpeTokenizer tok = BpeTokenizer::learn(training_texts(), 400);
  const std::string path = (dir / "bpe.txt").string();
  tok.save(path);
  const BpeTokenizer loaded = BpeTokenizer::load(path);
  REQUIRE(loaded.vocab_size() == tok.vocab_size());
  for (size_t id = 0; id < tok.vocab_size(); ++id) {
    CHECK(loaded.token_bytes(static_cast<int32_t>(id)) ==
          tok.token_bytes(static_cast<int32_t>(id)));
  }
  for (const std::string& text : training_texts()) CHECK(loaded.encode(text) == tok.encode(text));

  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  REQUIRE(lines.size() == 2 + tok.num_merges());
  const auto load_error = [&](std::vector<std::string> edited) {
    std::string text;
    for (const std::string& line : edited) text += line + "\n";
    write_file(dir / "corrupt.txt", text);
    return error_of([&] { BpeTokenizer::load((dir / "corrupt.txt").string()); });
  };
  {
    auto edited = lines;
    edited[0] = "something_else 1";
    CHECK(contains(load_error(edited), "bad header"));
  }
  {
    auto edited = lines;
    edited[0] = "ls_sample_bpe 9";
    CHECK(contains(load_error(edited), "unsupported version 9"));
  }
  {
    auto edited = lines;
    edited.resize(edited.size() - 5);
    CHECK(contains(load_error(edited), "file ends after"));
  }
  {
    auto edited = lines;
    edited[2] = "3 4 " + edited[2].substr(edited[2].rfind(' ') + 1);  // refers to <unk>
    CHECK(contains(load_error(edited), "do not refer to earlier"));
  }
  {
    auto edited = lines;
    edited[3] = edited[3] + "00";  // hex no longer the concatenation
    CHECK(contains(load_error(edited), "do not match"));
  }
  {
    auto edited = lines;
    edited[1] = "tokens 5 merges 7";
    CHECK(contains(load_error(edited), "token count"));
  }
  CHECK(contains(load_error({}), "empty file"));
  CHECK(load_error(lines) == "<no throw>");
}

// ------------------------------------------------------------------------------- BLEU

TEST_CASE("bleu: 13a tokenisation") {
  CHECK(tokenize_13a("Hello, world.") == "Hello , world .");
  CHECK(tokenize_13a("It costs $3.50, ok?") == "It costs $ 3.50 , ok ?");
  CHECK(tokenize_13a("1990-2000") == "1990 - 2000");
  CHECK(tokenize_13a("e-mail") == "e-mail");
  CHECK(tokenize_13a("&quot;x&quot; &amp; y") == "\" x \" & y");
  CHECK(tokenize_13a("don't") == "don't");
  CHECK(tokenize_13a("e.g. 3,5 km.") == "e . g . 3,5 km .");
  CHECK(tokenize_13a("a<skipped>b") == "ab");
  CHECK(tokenize_13a("x-\ny") == "xy");
  CHECK(tokenize_13a("Gr\xC3\xB6\xC3\x9F"
                     "e.\xC2\xA0"
                     "Ende") ==
        "Gr\xC3\xB6\xC3\x9F"
        "e . Ende");
}

TEST_CASE("bleu: perfect match is 100") {
  const std::vector<std::string> refs = {"The cat sat on the mat.", "Das ist ein Test, oder?"};
  const BleuScore s = corpus_bleu(refs, refs);
  CHECK(s.score == doctest::Approx(100.0).epsilon(1e-12));
  for (const double p : s.precisions) CHECK(p == doctest::Approx(100.0).epsilon(1e-12));
  CHECK(s.brevity_penalty == 1.0);
  CHECK(s.sys_len == s.ref_len);
}

// Hand-computed cases; the expected values agree with sacreBLEU 2.6.0's corpus_bleu. Tolerance
// 1e-12 relative: the computation is a handful of double operations.
TEST_CASE("bleu: hand-computed small cases") {
  SUBCASE("missing word: brevity penalty, no smoothing needed") {
    // hyp "the cat sat on mat" (5), ref "the cat sat on the mat" (6)
    // 1-grams 5/5, 2-grams 3/4 (not "on mat"), 3-grams 2/3, 4-grams 1/2
    // BP = exp(1 - 6/5); score = BP * (1 * 0.75 * 2/3 * 0.5)^(1/4) * 100 = BP * 100 * 0.25^0.25
    const BleuScore s = corpus_bleu({"the cat sat on mat"}, {"the cat sat on the mat"});
    CHECK(s.correct == std::array<size_t, 4>{5, 3, 2, 1});
    CHECK(s.total == std::array<size_t, 4>{5, 4, 3, 2});
    CHECK(s.sys_len == 5);
    CHECK(s.ref_len == 6);
    CHECK(s.brevity_penalty == doctest::Approx(std::exp(-0.2)).epsilon(1e-12));
    CHECK(s.precisions[1] == doctest::Approx(75.0).epsilon(1e-12));
    CHECK(s.score == doctest::Approx(100 * std::pow(0.25, 0.25) * std::exp(-0.2)).epsilon(1e-12));
    CHECK(s.score == doctest::Approx(57.89300674674101).epsilon(1e-12));
  }
  SUBCASE("zero 3- and 4-gram matches: 'exp' smoothing") {
    // hyp "a b c d e", ref "a b x d e f": 1-grams 4/5, 2-grams 2/4 (ab, de), 3-grams 0/3,
    // 4-grams 0/2 -> p3 = 100 / (2 * 3), p4 = 100 / (4 * 2)
    // score = exp(-0.2) * (80 * 50 * 16.667 * 12.5)^(1/4) = 24.7369...
    const BleuScore s = corpus_bleu({"a b c d e"}, {"a b x d e f"});
    CHECK(s.precisions[0] == doctest::Approx(80.0).epsilon(1e-12));
    CHECK(s.precisions[1] == doctest::Approx(50.0).epsilon(1e-12));
    CHECK(s.precisions[2] == doctest::Approx(100.0 / 6).epsilon(1e-12));
    CHECK(s.precisions[3] == doctest::Approx(12.5).epsilon(1e-12));
    const double expected = std::exp(-0.2) * std::pow(80 * 50 * (100.0 / 6) * 12.5, 0.25);
    CHECK(s.score == doctest::Approx(expected).epsilon(1e-12));
    CHECK(s.score == doctest::Approx(24.736929544091932).epsilon(1e-12));
  }
  SUBCASE("statistics are summed over the corpus, not averaged") {
    // the two cases above together: 9/10, 5/8, 2/6, 1/4; BP = exp(1 - 12/10)
    const BleuScore s =
        corpus_bleu({"the cat sat on mat", "a b c d e"}, {"the cat sat on the mat", "a b x d e f"});
    const double expected = std::exp(-0.2) * std::pow(90 * 62.5 * (100.0 / 3) * 25, 0.25);
    CHECK(s.score == doctest::Approx(expected).epsilon(1e-12));
    CHECK(s.score == doctest::Approx(38.09574085553457).epsilon(1e-12));
  }
  SUBCASE("an empty hypothesis only shortens the system output") {
    // sys_len 4, ref_len 6, all precisions 100 -> BP = exp(1 - 6/4)
    const BleuScore s = corpus_bleu({"the cat sat here", ""}, {"the cat sat here", "x y"});
    CHECK(s.score == doctest::Approx(100 * std::exp(-0.5)).epsilon(1e-12));
  }
}

TEST_CASE("bleu: empty hypotheses and too-short corpora score 0") {
  const BleuScore empty = corpus_bleu({""}, {"the cat"});
  CHECK(empty.score == 0.0);
  CHECK(empty.sys_len == 0);
  CHECK(empty.ref_len == 2);
  CHECK(empty.brevity_penalty == 0.0);
  // No 3-grams in the hypothesis at all: sacreBLEU leaves p3 = p4 = 0, so BLEU is 0 even for
  // an exact match.
  const BleuScore short_match = corpus_bleu({"a b"}, {"a b"});
  CHECK(short_match.score == 0.0);
  CHECK(short_match.precisions[0] == 100.0);
  CHECK(corpus_bleu({}, {}).score == 0.0);
  CHECK(contains(error_of([] { corpus_bleu({"a"}, {}); }), "1 hypotheses but 0 references"));
}

// ------------------------------------------------------------------------------- batcher

TEST_CASE("batcher: layouts of source, decoder input and target") {
  std::vector<EncodedPair> pairs = {{{10, 11}, {20, 21, 22}}, {{12}, {23}}};
  BatchOptions options;
  options.max_tokens = 100;
  const Batcher batcher(pairs, options);
  REQUIRE(batcher.num_batches() == 1);
  const Batch b = batcher.batch(0);
  CHECK(b.batch_size == 2);
  CHECK(b.src_len == 3);
  CHECK(b.tgt_len == 4);
  // Sorted by length: the shorter pair (index 1) comes first.
  CHECK(b.example_ids == std::vector<size_t>{1, 0});
  CHECK(b.src_tokens == std::vector<int32_t>{12, 2, 1, /**/ 10, 11, 2});
  CHECK(b.src_lengths == std::vector<int32_t>{2, 3});
  CHECK(b.prev_output_tokens == std::vector<int32_t>{2, 23, 1, 1, /**/ 2, 20, 21, 22});
  CHECK(b.target == std::vector<int32_t>{23, 2, 1, 1, /**/ 20, 21, 22, 2});
  CHECK(b.ntokens == 6);
}

TEST_CASE("batcher: token budget, max_len, coverage and per-epoch shuffling") {
  std::vector<EncodedPair> pairs;
  uint64_t state = 12345;
  const auto next = [&](int bound) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((state >> 33) % bound);
  };
  size_t too_long = 0;
  for (int i = 0; i < 2000; ++i) {
    EncodedPair p;
    p.source.assign(1 + next(40), 7);
    p.target.assign(1 + next(40), 8);
    if (p.source.size() + 1 > 32 || p.target.size() + 1 > 32) ++too_long;
    pairs.push_back(p);
  }
  BatchOptions options;
  options.max_tokens = 200;
  options.max_len = 32;
  options.seed = 3;
  const Batcher batcher(pairs, options);
  CHECK(batcher.num_skipped() == too_long);

  std::vector<int> seen(pairs.size(), 0);
  for (size_t i = 0; i < batcher.num_batches(); ++i) {
    const Batch b = batcher.batch(i);
    CHECK(b.batch_size * std::max(b.src_len, b.tgt_len) <= options.max_tokens);
    CHECK(b.src_len <= options.max_len);
    CHECK(b.tgt_len <= options.max_len);
    CHECK(b.src_tokens.size() == b.batch_size * b.src_len);
    CHECK(b.target.size() == b.batch_size * b.tgt_len);
    // Greedy packing: a batch is closed only when the first pair of the next batch (batches
    // are numbered in packing order) would break the budget.
    if (i + 1 < batcher.num_batches()) {
      const EncodedPair& next = pairs[batcher.batch_examples(i + 1).front()];
      const size_t next_len = std::max(next.source.size(), next.target.size()) + 1;
      CHECK((b.batch_size + 1) * std::max({b.src_len, b.tgt_len, next_len}) > options.max_tokens);
    }
    for (const size_t id : b.example_ids) ++seen[id];
  }
  size_t covered = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const bool fits = pairs[i].source.size() + 1 <= 32 && pairs[i].target.size() + 1 <= 32;
    CHECK(seen[i] == (fits ? 1 : 0));
    covered += seen[i];
  }
  CHECK(covered + too_long == pairs.size());

  const std::vector<size_t> e0 = batcher.epoch_order(0), e1 = batcher.epoch_order(1);
  std::vector<size_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) CHECK(sorted[i] == i);
  CHECK(e0 == batcher.epoch_order(0));
  CHECK(e0 != e1);
  const Batcher again(pairs, options);
  CHECK(again.epoch_order(1) == e1);
  CHECK(again.batch_examples(5) == batcher.batch_examples(5));
  CHECK(contains(error_of([&] { batcher.batch(batcher.num_batches()); }), "batch"));
}
