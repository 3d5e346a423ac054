#include "data/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <queue>
#include <sstream>

#include "data/data_error.h"
#include "data/file_io.h"
#include "data/utf8.h"

namespace ls_sample {
namespace {

constexpr const char* kFileMagic = "ls_sample_bpe";
constexpr int kFileVersion = 1;

uint64_t pair_key(int32_t left, int32_t right) {
  return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right);
}

enum class CharClass { kSpace, kLetter, kDigit, kOther };

CharClass class_of(const std::string& text, size_t pos, size_t& length) {
  const uint32_t cp = utf8_decode_at(text, pos, length);
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || cp == '\v' || cp == '\f')
    return CharClass::kSpace;
  if (cp >= '0' && cp <= '9') return CharClass::kDigit;
  if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp >= 0x80) return CharClass::kLetter;
  return CharClass::kOther;
}

std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (const char c : bytes) {
    const unsigned char b = static_cast<unsigned char>(c);
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

// Merges every non-overlapping occurrence of (left, right) in `symbols`, left to right.
// Returns whether anything was merged.
bool merge_in_place(std::vector<int32_t>& symbols, int32_t left, int32_t right, int32_t merged) {
  size_t out = 0;
  bool changed = false;
  for (size_t i = 0; i < symbols.size();) {
    if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
      symbols[out++] = merged;
      i += 2;
      changed = true;
    } else {
      symbols[out++] = symbols[i++];
    }
  }
  symbols.resize(out);
  return changed;
}

struct HeapEntry {
  int64_t count;
  uint64_t key;
  bool operator<(const HeapEntry& other) const {  // max-heap: larger count, then smaller key
    if (count != other.count) return count < other.count;
    return key > other.key;
  }
};

}  // namespace

BpeTokenizer::BpeTokenizer() {
  token_bytes_ = {"<s>", "<pad>", "</s>", "<unk>"};
  for (int b = 0; b < 256; ++b) token_bytes_.push_back(std::string(1, static_cast<char>(b)));
}

const std::string& BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= token_bytes_.size()) {
    throw DataError("BpeTokenizer::token_bytes: id " + std::to_string(id) +
                    " outside the vocabulary of " + std::to_string(token_bytes_.size()));
  }
  return token_bytes_[id];
}

void BpeTokenizer::add_merge(int32_t left, int32_t right) {
  const int32_t id = static_cast<int32_t>(token_bytes_.size());
  merges_.emplace_back(left, right);
  token_bytes_.push_back(token_bytes_[left] + token_bytes_[right]);
  merged_id_[pair_key(left, right)] = id;
}

std::vector<std::string> BpeTokenizer::split_pieces(const std::string& text) {
  std::vector<std::string> pieces;
  const auto space_joins_next = [&](size_t i) {  // a ' ' directly before a non-space character
    size_t length = 0;
    return text[i] == ' ' && i + 1 < text.size() &&
           class_of(text, i + 1, length) != CharClass::kSpace;
  };
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    size_t length = 0;
    CharClass cls = class_of(text, pos, length);
    if (cls == CharClass::kSpace) {
      if (space_joins_next(pos)) {
        pos += 1;
        cls = class_of(text, pos, length);
      } else {
        // A whitespace run, leaving its last ' ' to the run that follows it.
        pos += length;
        while (pos < text.size() && class_of(text, pos, length) == CharClass::kSpace &&
               !space_joins_next(pos)) {
          pos += length;
        }
        pieces.push_back(text.substr(start, pos - start));
        continue;
      }
    }
    pos += length;
    while (pos < text.size() && class_of(text, pos, length) == cls) pos += length;
    pieces.push_back(text.substr(start, pos - start));
  }
  return pieces;
}

BpeTokenizer BpeTokenizer::learn(const std::vector<std::string>& texts, size_t vocab_size,
                                 size_t min_pair_count) {
  if (vocab_size < static_cast<size_t>(kNumBaseTokens)) {
    throw DataError("BpeTokenizer::learn: vocab_size " + std::to_string(vocab_size) +
                    " is below the " + std::to_string(kNumBaseTokens) + " special and byte tokens");
  }
  if (min_pair_count < 1) min_pair_count = 1;

  // Piece frequencies, then pieces as token sequences in sorted order (determinism).
  std::unordered_map<std::string, int64_t> piece_counts;
  for (const std::string& text : texts) {
    for (std::string& piece : split_pieces(text)) ++piece_counts[std::move(piece)];
  }
  std::vector<std::pair<std::string, int64_t>> sorted(piece_counts.begin(), piece_counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::vector<int32_t>> words(sorted.size());
  std::vector<int64_t> word_count(sorted.size());
  for (size_t w = 0; w < sorted.size(); ++w) {
    for (const char c : sorted[w].first) {
      words[w].push_back(kFirstByte + static_cast<unsigned char>(c));
    }
    word_count[w] = sorted[w].second;
  }

  // Pair counts and the pieces each pair occurs in (an index that may hold stale entries).
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;
  for (size_t w = 0; w < words.size(); ++w) {
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t key = pair_key(words[w][i], words[w][i + 1]);
      pair_count[key] += word_count[w];
      std::vector<int32_t>& list = pair_words[key];
      if (list.empty() || list.back() != static_cast<int32_t>(w)) {
        list.push_back(static_cast<int32_t>(w));
      }
    }
  }
  std::priority_queue<HeapEntry> heap;
  for (const auto& [key, count] : pair_count) heap.push({count, key});

  BpeTokenizer tokenizer;
  std::vector<uint32_t> visited(words.size(), 0);
  uint32_t stamp = 0;
  std::unordered_map<uint64_t, int64_t> delta;
  while (tokenizer.vocab_size() < vocab_size && !heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    const auto found = pair_count.find(top.key);
    if (found == pair_count.end() || found->second != top.count) continue;  // stale
    if (top.count < static_cast<int64_t>(min_pair_count)) break;
    const int32_t left = static_cast<int32_t>(top.key >> 32);
    const int32_t right = static_cast<int32_t>(top.key & 0xffffffffu);
    const int32_t merged = static_cast<int32_t>(tokenizer.vocab_size());
    tokenizer.add_merge(left, right);

    ++stamp;
    delta.clear();
    std::vector<int32_t> affected = std::move(pair_words[top.key]);
    pair_words.erase(top.key);
    for (const int32_t w : affected) {
      if (visited[w] == stamp) continue;
      visited[w] = stamp;
      std::vector<int32_t>& symbols = words[w];
      std::vector<int32_t> before = symbols;
      if (!merge_in_place(symbols, left, right, merged)) continue;
      const int64_t c = word_count[w];
      for (size_t i = 0; i + 1 < before.size(); ++i) delta[pair_key(before[i], before[i + 1])] -= c;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        const uint64_t key = pair_key(symbols[i], symbols[i + 1]);
        delta[key] += c;
        if (symbols[i] == merged || symbols[i + 1] == merged) {
          std::vector<int32_t>& list = pair_words[key];
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      }
    }
    for (const auto& [key, change] : delta) {
      if (change == 0) continue;
      int64_t& count = pair_count[key];
      count += change;
      if (count > 0) {
        heap.push({count, key});
      } else {
        pair_count.erase(key);
      }
    }
  }
  return tokenizer;
}

void BpeTokenizer::encode_piece(const std::string& piece, std::vector<int32_t>& out) const {
  std::vector<int32_t> symbols;
  symbols.reserve(piece.size());
  for (const char c : piece) symbols.push_back(kFirstByte + static_cast<unsigned char>(c));
  while (symbols.size() > 1) {
    int32_t best = -1;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto found = merged_id_.find(pair_key(symbols[i], symbols[i + 1]));
      if (found != merged_id_.end() && (best < 0 || found->second < best)) {
        best = found->second;
        best_pos = i;
      }
    }
    if (best < 0) break;
    merge_in_place(symbols, symbols[best_pos], symbols[best_pos + 1], best);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  for (const std::string& piece : split_pieces(text)) encode_piece(piece, ids);
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (const int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= token_bytes_.size()) {
      throw DataError("BpeTokenizer::decode: id " + std::to_string(id) +
                      " outside the vocabulary of " + std::to_string(token_bytes_.size()));
    }
    if (id == kBos || id == kPad || id == kEos) continue;
    text += token_bytes_[id];
  }
  return text;
}

void BpeTokenizer::save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw DataError("BpeTokenizer::save: cannot open '" + path + "' for writing");
  out << kFileMagic << ' ' << kFileVersion << '\n';
  out << "tokens " << token_bytes_.size() << " merges " << merges_.size() << '\n';
  for (size_t i = 0; i < merges_.size(); ++i) {
    out << merges_[i].first << ' ' << merges_[i].second << ' '
        << to_hex(token_bytes_[kNumBaseTokens + i]) << '\n';
  }
  out.flush();
  if (!out) throw DataError("BpeTokenizer::save: error while writing '" + path + "'");
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  const std::string bytes = read_whole_file(path);
  std::istringstream in(bytes);
  const auto fail = [&](size_t line, const std::string& what) -> void {
    throw DataError("BpeTokenizer::load: '" + path + "' line " + std::to_string(line) + ": " +
                    what);
  };
  std::string line;
  if (!std::getline(in, line)) fail(1, "empty file");
  {
    std::istringstream header(line);
    std::string magic, rest;
    int version = 0;
    if (!(header >> magic >> version) || magic != kFileMagic || (header >> rest)) {
      fail(1, "bad header (expected '" + std::string(kFileMagic) + " " +
                  std::to_string(kFileVersion) + "')");
    }
    if (version != kFileVersion) {
      fail(1, "unsupported version " + std::to_string(version) + " (this reader knows " +
                  std::to_string(kFileVersion) + ")");
    }
  }
  size_t tokens = 0, merges = 0;
  if (!std::getline(in, line)) fail(2, "missing the 'tokens N merges M' line");
  {
    std::istringstream counts(line);
    std::string tokens_word, merges_word, rest;
    if (!(counts >> tokens_word >> tokens >> merges_word >> merges) || tokens_word != "tokens" ||
        merges_word != "merges" || (counts >> rest)) {
      fail(2, "malformed counts line (expected 'tokens N merges M')");
    }
    if (tokens != kNumBaseTokens + merges) {
      fail(2, "token count " + std::to_string(tokens) + " != " + std::to_string(kNumBaseTokens) +
                  " + merge count " + std::to_string(merges));
    }
  }
  BpeTokenizer tokenizer;
  for (size_t i = 0; i < merges; ++i) {
    const size_t line_no = 3 + i;
    if (!std::getline(in, line)) fail(line_no, "file ends after " + std::to_string(i) + " merges");
    std::istringstream fields(line);
    long long left = -1, right = -1;
    std::string hex, rest;
    if (!(fields >> left >> right >> hex) || (fields >> rest)) {
      fail(line_no, "malformed merge line (expected '<left> <right> <hex>')");
    }
    const long long limit = static_cast<long long>(tokenizer.vocab_size());
    if (left < kFirstByte || left >= limit || right < kFirstByte || right >= limit) {
      fail(line_no, "merge ids " + std::to_string(left) + " " + std::to_string(right) +
                        " do not refer to earlier non-special tokens");
    }
    const int32_t l = static_cast<int32_t>(left), r = static_cast<int32_t>(right);
    if (tokenizer.merged_id_.count(pair_key(l, r)) != 0) fail(line_no, "duplicate merge");
    if (to_hex(tokenizer.token_bytes_[l] + tokenizer.token_bytes_[r]) != hex) {
      fail(line_no, "token bytes '" + hex + "' do not match the merged tokens");
    }
    tokenizer.add_merge(l, r);
  }
  while (std::getline(in, line)) {
    if (!line.empty()) fail(3 + merges, "unexpected content after the last merge");
  }
  return tokenizer;
}

}  // namespace ls_sample
