// Evaluation of a model being trained by `ls-train train`, on the public C API: the validation
// loss over a split (ls_model_evaluate per batch) and greedy translation of a split
// (ls_model_generate) scored with corpus BLEU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/batcher.h"
#include "data/bleu.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "ls_train.h"

namespace cli {

// The batch view of a materialised sample batch (host memory, borrowed).
ls_batch to_api_batch(const ls_sample::Batch& batch);

struct EvalTotals {
  double loss = 0, nll = 0;  // sums over target tokens, natural log
  int64_t tokens = 0;
  double seconds = 0;
  double loss_bits() const;  // per token, base 2
  double nll_bits() const;
};

// Forward only (no dropout) over every batch of `batcher`.
EvalTotals evaluate_split(ls_model* model, const ls_sample::Batcher& batcher);

struct DecodeOptions {
  int64_t max_len = 128;      // the model's max_seq_len: the cap on decoded length
  int64_t max_tokens = 1024;  // the model's max_batch_tokens
  double max_len_a = 1.5;     // decode at most a * source length + b tokens
  int64_t max_len_b = 10;
};

struct Translations {
  // Per example of the split, in corpus order; skipped examples (too long for the batcher)
  // have decoded == false.
  std::vector<std::string> hypotheses;
  std::vector<bool> decoded;
  size_t num_decoded = 0;
  size_t generated_tokens = 0;
  double seconds = 0;
  ls_sample::BleuScore bleu;  // over the decoded examples
};

// Greedy-decodes the source side of every batch of `batcher` (built from `pairs`), turns the
// ids back into text with `tokenizer` (eos and padding stripped) and scores them against the
// targets.
Translations translate_split(ls_model* model, const ls_sample::Batcher& batcher,
                             const std::vector<ls_sample::SentencePair>& pairs,
                             const ls_sample::BpeTokenizer& tokenizer,
                             const DecodeOptions& options);

// sacreBLEU's line: "BLEU = 12.34 45.6/18.9/8.1/3.6 (BP = 0.950 ratio = 0.951 hyp_len = ...)".
std::string format_bleu(const ls_sample::BleuScore& bleu);
// What the score is, in the manner of sacreBLEU's signature.
const char* bleu_signature();

}  // namespace cli
