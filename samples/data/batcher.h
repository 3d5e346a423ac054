// Token-budget batching of encoded sentence pairs for the sample trainer (fairseq style).
//
// Lengths count the eos each side gets: ls = |source| + 1, lt = |target| + 1.
// Construction (once, deterministic for a seed):
//   1. pairs with ls > max_len, lt > max_len or max(ls, lt) > max_tokens are skipped (counted);
//   2. the rest are put in a random order (seeded), then stable-sorted by (ls, lt), so pairs of
//      equal lengths are mixed;
//   3. batches are cut greedily along that order: a pair joins the current batch while
//      (batch size + 1) * max(ls, lt over the batch and the pair) <= max_tokens.
// So every batch has B * max(Ls, Lt) <= max_tokens and Ls, Lt <= max_len. Batch composition is
// fixed; epoch_order(epoch) gives the batches in a shuffled order, different for each epoch and
// reproducible from (seed, epoch) (own Fisher-Yates over splitmix64, not std::shuffle, whose
// algorithm is implementation-defined).
//
// Layout of a Batch (int32, row-major, right-padded with pad = 1):
//   src_tokens         [B, Ls]  source ids then eos (2), then pad
//   src_lengths        [B]      |source| + 1
//   prev_output_tokens [B, Lt]  eos (2), then the target ids, then pad   (= [eos] + target[:-1])
//   target             [B, Lt]  the target ids, then eos (2), then pad
// with Ls = max ls and Lt = max lt over the batch; ntokens = number of non-pad target entries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ls_sample {

struct EncodedPair {
  std::vector<int32_t> source;  // token ids, no specials
  std::vector<int32_t> target;
};

struct BatchOptions {
  size_t max_tokens = 4096;  // B * max(Ls, Lt) per batch
  size_t max_len = 256;      // per side, eos included
  uint64_t seed = 1;
};

struct Batch {
  size_t batch_size = 0, src_len = 0, tgt_len = 0;  // B, Ls, Lt
  std::vector<int32_t> src_tokens;                  // [B, Ls]
  std::vector<int32_t> src_lengths;                 // [B]
  std::vector<int32_t> prev_output_tokens;          // [B, Lt]
  std::vector<int32_t> target;                      // [B, Lt]
  std::vector<size_t> example_ids;                  // [B], indices into the pairs given
  size_t ntokens = 0;                               // non-pad target tokens
};

class Batcher {
 public:
  static constexpr int32_t kPad = 1;
  static constexpr int32_t kEos = 2;

  // Throws DataError when max_tokens or max_len is 0.
  Batcher(std::vector<EncodedPair> pairs, const BatchOptions& options);

  size_t num_batches() const { return batches_.size(); }
  size_t num_examples() const { return pairs_.size(); }
  size_t num_skipped() const { return skipped_; }
  // The example indices of batch `b`, in batch order.
  const std::vector<size_t>& batch_examples(size_t b) const;
  // A permutation of 0 .. num_batches() - 1 for this epoch.
  std::vector<size_t> epoch_order(uint64_t epoch) const;
  // Materialises batch `b`.
  Batch batch(size_t b) const;

 private:
  std::vector<EncodedPair> pairs_;
  BatchOptions options_;
  std::vector<std::vector<size_t>> batches_;
  size_t skipped_ = 0;
};

}  // namespace ls_sample
