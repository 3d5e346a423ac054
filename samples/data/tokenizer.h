// Byte-level byte-pair encoding (BPE) for the sample trainer, learned jointly over source and
// target sentences.
//
// Vocabulary (ids are int32):
//   0 = <s> (bos), 1 = <pad>, 2 = </s> (eos), 3 = <unk>      -- fairseq's special ids
//   4 .. 259 = the 256 single bytes (id = 4 + byte value)
//   260 + i  = merge i, the concatenation of the two tokens it joins
// Because every byte has an id, encode never produces <unk> and decode(encode(s)) == s for any
// byte string (UTF-8 or not); characters never seen in training come out as their bytes.
//
// Pre-tokenisation (merges never cross a piece boundary): the text is cut into pieces, each a
// maximal run of one class -- letters (ASCII letters and every non-ASCII code point), digits,
// or other non-space characters -- with a single space directly before the run attached to it
// (" Haus"); remaining whitespace forms pieces of its own. The pieces partition the bytes, so
// no information is lost.
//
// Learning: piece frequencies are counted once; the most frequent adjacent token pair is merged
// repeatedly (ties: the smaller (left id, right id)), left to right without overlap inside each
// piece, until the vocabulary has `vocab_size` tokens or no pair occurs `min_pair_count` times.
// Pair counts are updated incrementally from the pieces that contain the merged pair (an index
// pair -> pieces and a max-heap with lazy deletion), so learning 4000 tokens over ~100k sentence
// pairs takes a few seconds. Encoding applies the merges in learned order (lowest merge id
// first), which reproduces the learned segmentation.
//
// File format (text): a header line "ls_sample_bpe 1", a line "tokens <N> merges <M>", then M
// lines "<left id> <right id> <hex bytes of the merged token>"; load checks every line
// (ids refer to earlier tokens, the hex equals the concatenation) and throws DataError on any
// mismatch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ls_sample {

class BpeTokenizer {
 public:
  static constexpr int32_t kBos = 0;
  static constexpr int32_t kPad = 1;
  static constexpr int32_t kEos = 2;
  static constexpr int32_t kUnk = 3;
  static constexpr int32_t kFirstByte = 4;
  static constexpr int32_t kNumBaseTokens = 260;  // specials + bytes

  // A tokenizer with no merges (pure byte level).
  BpeTokenizer();

  // Learns merges from `texts`. vocab_size counts every id (>= 260); the result may be smaller
  // when pairs run out.
  static BpeTokenizer learn(const std::vector<std::string>& texts, size_t vocab_size = 4000,
                            size_t min_pair_count = 2);

  // Token ids of `text`, without bos/eos.
  std::vector<int32_t> encode(const std::string& text) const;
  // Bytes of `ids`; bos, pad and eos are skipped, <unk> becomes "<unk>". Throws DataError on an
  // id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids) const;

  size_t vocab_size() const { return token_bytes_.size(); }
  size_t num_merges() const { return merges_.size(); }
  // The bytes a token stands for (specials: "<s>", "<pad>", "</s>", "<unk>").
  const std::string& token_bytes(int32_t id) const;

  void save(const std::string& path) const;
  static BpeTokenizer load(const std::string& path);

  // The pre-tokenisation pieces of `text` (exposed for tests).
  static std::vector<std::string> split_pieces(const std::string& text);

 private:
  void add_merge(int32_t left, int32_t right);
  void encode_piece(const std::string& piece, std::vector<int32_t>& out) const;

  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::vector<std::string> token_bytes_;
  std::unordered_map<uint64_t, int32_t> merged_id_;  // (left << 32 | right) -> merged token id
};

}  // namespace ls_sample
