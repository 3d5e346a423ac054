#include "data/batcher.h"

#include <algorithm>
#include <numeric>

#include "data/data_error.h"

namespace ls_sample {
namespace {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), bound > 0, by rejection.
  uint64_t below(uint64_t bound) {
    const uint64_t limit = ~uint64_t(0) - (~uint64_t(0) % bound);
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % bound;
  }

 private:
  uint64_t state_;
};

void shuffle(std::vector<size_t>& items, SplitMix64& rng) {
  for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rng.below(i)]);
}

}  // namespace

Batcher::Batcher(std::vector<EncodedPair> pairs, const BatchOptions& options)
    : pairs_(std::move(pairs)), options_(options) {
  if (options.max_tokens == 0 || options.max_len == 0) {
    throw DataError("Batcher: max_tokens and max_len must be positive");
  }
  std::vector<size_t> order;
  for (size_t i = 0; i < pairs_.size(); ++i) {
    const size_t ls = pairs_[i].source.size() + 1, lt = pairs_[i].target.size() + 1;
    if (ls > options.max_len || lt > options.max_len || std::max(ls, lt) > options.max_tokens) {
      ++skipped_;
    } else {
      order.push_back(i);
    }
  }
  SplitMix64 rng(options.seed);
  shuffle(order, rng);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const size_t la = pairs_[a].source.size(), lb = pairs_[b].source.size();
    if (la != lb) return la < lb;
    return pairs_[a].target.size() < pairs_[b].target.size();
  });

  std::vector<size_t> current;
  size_t current_max = 0;
  for (const size_t i : order) {
    const size_t length = std::max(pairs_[i].source.size(), pairs_[i].target.size()) + 1;
    const size_t new_max = std::max(current_max, length);
    if (!current.empty() && (current.size() + 1) * new_max > options.max_tokens) {
      batches_.push_back(std::move(current));
      current.clear();
      current_max = length;
    } else {
      current_max = new_max;
    }
    current.push_back(i);
  }
  if (!current.empty()) batches_.push_back(std::move(current));
}

const std::vector<size_t>& Batcher::batch_examples(size_t b) const {
  if (b >= batches_.size()) {
    throw DataError("Batcher::batch_examples: batch " + std::to_string(b) + " of " +
                    std::to_string(batches_.size()));
  }
  return batches_[b];
}

std::vector<size_t> Batcher::epoch_order(uint64_t epoch) const {
  std::vector<size_t> order(batches_.size());
  std::iota(order.begin(), order.end(), size_t(0));
  SplitMix64 rng(options_.seed ^ (0x5851f42d4c957f2dull * (epoch + 1)));
  shuffle(order, rng);
  return order;
}

Batch Batcher::batch(size_t b) const {
  const std::vector<size_t>& ids = batch_examples(b);
  Batch out;
  out.batch_size = ids.size();
  out.example_ids = ids;
  for (const size_t i : ids) {
    out.src_len = std::max(out.src_len, pairs_[i].source.size() + 1);
    out.tgt_len = std::max(out.tgt_len, pairs_[i].target.size() + 1);
  }
  out.src_tokens.assign(out.batch_size * out.src_len, kPad);
  out.prev_output_tokens.assign(out.batch_size * out.tgt_len, kPad);
  out.target.assign(out.batch_size * out.tgt_len, kPad);
  out.src_lengths.resize(out.batch_size);
  for (size_t row = 0; row < out.batch_size; ++row) {
    const EncodedPair& pair = pairs_[ids[row]];
    int32_t* src = out.src_tokens.data() + row * out.src_len;
    std::copy(pair.source.begin(), pair.source.end(), src);
    src[pair.source.size()] = kEos;
    out.src_lengths[row] = static_cast<int32_t>(pair.source.size() + 1);

    int32_t* prev = out.prev_output_tokens.data() + row * out.tgt_len;
    int32_t* tgt = out.target.data() + row * out.tgt_len;
    prev[0] = kEos;
    std::copy(pair.target.begin(), pair.target.end(), prev + 1);
    std::copy(pair.target.begin(), pair.target.end(), tgt);
    tgt[pair.target.size()] = kEos;
    out.ntokens += pair.target.size() + 1;
  }
  return out;
}

}  // namespace ls_sample
