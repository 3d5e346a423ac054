// The data side of `ls-train train`: the parallel corpus (gettext catalogs or aligned text
// files) split into train/valid/test, the byte-level BPE learned on the training split (or
// loaded from a resumed run), and the token-budget batchers of the three splits.
#pragma once

#include <memory>
#include <string>

#include "data/batcher.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "train_options.h"

namespace cli {

struct TrainData {
  ls_sample::Corpus corpus;
  ls_sample::BpeTokenizer tokenizer;
  bool tokenizer_learned = false;  // false: loaded from tokenizer_path
  std::unique_ptr<ls_sample::Batcher> train, valid, test;
  size_t train_target_tokens = 0;  // target tokens of one epoch, eos included
  double corpus_seconds = 0, tokenizer_seconds = 0, batching_seconds = 0;
};

// Reads the corpus and builds the batchers. Learns the tokenizer on the training split and
// saves it to tokenizer_path, or (learn == false) loads it from there. Data errors throw
// ls_sample::DataError naming the file.
TrainData load_train_data(const TrainOptions& options, const std::string& tokenizer_path,
                          bool learn);

}  // namespace cli
