#include "train_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli.h"

namespace cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

ls_batch to_api_batch(const ls_sample::Batch& batch) {
  ls_batch b;
  ls_batch_init(&b);
  b.batch_size = static_cast<int32_t>(batch.batch_size);
  b.src_len = static_cast<int32_t>(batch.src_len);
  b.src_tokens = batch.src_tokens.data();
  b.tgt_len = static_cast<int32_t>(batch.tgt_len);
  b.prev_output_tokens = batch.prev_output_tokens.data();
  b.target = batch.target.data();
  b.tokens_on_device = 0;
  return b;
}

double EvalTotals::loss_bits() const {
  return tokens > 0 ? loss / static_cast<double>(tokens) / std::log(2.0) : 0.0;
}
double EvalTotals::nll_bits() const {
  return tokens > 0 ? nll / static_cast<double>(tokens) / std::log(2.0) : 0.0;
}

EvalTotals evaluate_split(ls_model* model, const ls_sample::Batcher& batcher) {
  auto t0 = std::chrono::steady_clock::now();
  EvalTotals totals;
  for (size_t i = 0; i < batcher.num_batches(); ++i) {
    ls_sample::Batch batch = batcher.batch(i);
    ls_batch b = to_api_batch(batch);
    ls_eval_result r;
    ls_eval_result_init(&r);
    check(ls_model_evaluate(model, &b, &r), "ls_model_evaluate");
    totals.loss += r.loss;
    totals.nll += r.nll;
    totals.tokens += r.tokens;
  }
  totals.seconds = seconds_since(t0);
  return totals;
}

Translations translate_split(ls_model* model, const ls_sample::Batcher& batcher,
                             const std::vector<ls_sample::SentencePair>& pairs,
                             const ls_sample::BpeTokenizer& tokenizer,
                             const DecodeOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  Translations t;
  t.hypotheses.assign(pairs.size(), std::string());
  t.decoded.assign(pairs.size(), false);
  std::vector<int32_t> out_tokens, out_lengths, ids;
  const int32_t vocab = static_cast<int32_t>(tokenizer.vocab_size());
  for (size_t i = 0; i < batcher.num_batches(); ++i) {
    ls_sample::Batch batch = batcher.batch(i);
    const int64_t src_len = static_cast<int64_t>(batch.src_len);
    int64_t longest_source = 0;  // without its eos
    for (int32_t len : batch.src_lengths)
      longest_source = std::max<int64_t>(longest_source, len - 1);
    int64_t gen_len =
        static_cast<int64_t>(std::ceil(options.max_len_a * longest_source)) + options.max_len_b;
    gen_len = std::max<int64_t>(1, std::min<int64_t>(gen_len, options.max_len));
    // Keep rows x max(source, decoded length) within the model's batch budget.
    int64_t rows_per_call =
        std::max<int64_t>(1, options.max_tokens / std::max<int64_t>(src_len, gen_len));
    out_tokens.resize(static_cast<size_t>(rows_per_call * gen_len));
    out_lengths.resize(static_cast<size_t>(rows_per_call));
    for (size_t r0 = 0; r0 < batch.batch_size; r0 += static_cast<size_t>(rows_per_call)) {
      int32_t rows = static_cast<int32_t>(
          std::min<size_t>(static_cast<size_t>(rows_per_call), batch.batch_size - r0));
      check(ls_model_generate(model, batch.src_tokens.data() + r0 * src_len, rows,
                              static_cast<int32_t>(src_len), static_cast<int32_t>(gen_len),
                              out_tokens.data(), out_lengths.data()),
            "ls_model_generate");
      for (int32_t r = 0; r < rows; ++r) {
        ids.clear();
        const int32_t* row = out_tokens.data() + static_cast<size_t>(r) * gen_len;
        int32_t n = std::min<int32_t>(out_lengths[r], static_cast<int32_t>(gen_len));
        for (int32_t k = 0; k < n; ++k) {
          if (row[k] == ls_sample::BpeTokenizer::kEos) break;
          // Ids past the tokenizer's vocabulary (the model's is rounded up) never occur in
          // the data; drop them rather than fail on them.
          if (row[k] >= 0 && row[k] < vocab) ids.push_back(row[k]);
        }
        t.generated_tokens += static_cast<size_t>(std::max(n, 0));
        size_t example = batch.example_ids[r0 + static_cast<size_t>(r)];
        t.hypotheses[example] = tokenizer.decode(ids);
        t.decoded[example] = true;
      }
    }
  }
  std::vector<std::string> hyps, refs;
  for (size_t e = 0; e < pairs.size(); ++e) {
    if (!t.decoded[e]) continue;
    hyps.push_back(t.hypotheses[e]);
    refs.push_back(pairs[e].target);
  }
  t.num_decoded = hyps.size();
  t.bleu = ls_sample::corpus_bleu(hyps, refs);
  t.seconds = seconds_since(t0);
  return t;
}

std::string format_bleu(const ls_sample::BleuScore& b) {
  char buf[256];
  double ratio =
      b.ref_len > 0 ? static_cast<double>(b.sys_len) / static_cast<double>(b.ref_len) : 0.0;
  std::snprintf(buf, sizeof(buf),
                "BLEU = %.2f %.1f/%.1f/%.1f/%.1f (BP = %.3f ratio = %.3f hyp_len = %zu "
                "ref_len = %zu)",
                b.score, b.precisions[0], b.precisions[1], b.precisions[2], b.precisions[3],
                b.brevity_penalty, ratio, b.sys_len, b.ref_len);
  return buf;
}

const char* bleu_signature() {
  return "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp (sacreBLEU 2.x defaults, computed by "
         "samples/data/bleu)";
}

}  // namespace cli
