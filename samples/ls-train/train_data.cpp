#include "train_data.h"

#include "data/data_error.h"

#include <chrono>
#include <utility>
#include <vector>

namespace cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<ls_sample::EncodedPair> encode(const ls_sample::BpeTokenizer& tokenizer,
                                           const std::vector<ls_sample::SentencePair>& pairs) {
  std::vector<ls_sample::EncodedPair> out;
  out.reserve(pairs.size());
  for (const auto& p : pairs)
    out.push_back({tokenizer.encode(p.source), tokenizer.encode(p.target)});
  return out;
}

}  // namespace

TrainData load_train_data(const TrainOptions& options, const std::string& tokenizer_path,
                          bool learn) {
  TrainData d;
  auto t0 = std::chrono::steady_clock::now();
  d.corpus = options.source_file.empty()
                 ? ls_sample::build_corpus_from_mo_dir(options.mo_dir)
                 : ls_sample::build_corpus_from_text(options.source_file, options.target_file);
  if (d.corpus.train.empty())
    throw ls_sample::DataError("the corpus has no training pairs (" + d.corpus.stats.summary() +
                               ")");
  d.corpus_seconds = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  if (learn) {
    // Joint source and target vocabulary (the model shares all embeddings).
    std::vector<std::string> texts;
    texts.reserve(2 * d.corpus.train.size());
    for (const auto& p : d.corpus.train) {
      texts.push_back(p.source);
      texts.push_back(p.target);
    }
    d.tokenizer = ls_sample::BpeTokenizer::learn(texts, static_cast<size_t>(options.vocab_size));
    d.tokenizer.save(tokenizer_path);
  } else {
    d.tokenizer = ls_sample::BpeTokenizer::load(tokenizer_path);
  }
  d.tokenizer_learned = learn;
  d.tokenizer_seconds = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  ls_sample::BatchOptions batching;
  batching.max_tokens = static_cast<size_t>(options.max_tokens);
  batching.max_len = static_cast<size_t>(options.max_len);
  batching.seed = options.seed;
  auto train = encode(d.tokenizer, d.corpus.train);
  for (const auto& p : train) d.train_target_tokens += p.target.size() + 1;
  d.train = std::make_unique<ls_sample::Batcher>(std::move(train), batching);
  d.valid = std::make_unique<ls_sample::Batcher>(encode(d.tokenizer, d.corpus.valid), batching);
  d.test = std::make_unique<ls_sample::Batcher>(encode(d.tokenizer, d.corpus.test), batching);
  if (d.train->num_batches() == 0)
    throw ls_sample::DataError("no training batch: every pair is longer than --max-len " +
                               std::to_string(options.max_len) + " or --max-tokens " +
                               std::to_string(options.max_tokens));
  d.batching_seconds = seconds_since(t0);
  return d;
}

}  // namespace cli
