// ls-train train: trains the sample English->German translation model end to end on the public
// C API (the API's first user). Steps: options (train_options) -> corpus, tokenizer and
// batchers (train_data) -> context, model, trainer -> updates with a progress line
// (train_progress) and periodic validation (train_eval) -> final validation, greedy decoding
// of the test split with BLEU -> checkpoint, tokenizer and run file for --resume.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "train_data.h"
#include "train_eval.h"
#include "train_options.h"
#include "train_progress.h"

namespace cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* format, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, format);
  std::vsnprintf(buf, sizeof(buf), format, ap);
  va_end(ap);
  return buf;
}

// SIGINT/SIGTERM during training: finish the update, save, exit 130. The handler puts the
// default action back, so a second signal ends the process at once.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
  std::signal(sig, SIG_DFL);
}
struct StopSignalGuard {
  StopSignalGuard() {
    g_stop_signal = 0;
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
  }
  ~StopSignalGuard() {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  }
};

struct ContextDeleter {
  void operator()(ls_context* c) const { ls_context_destroy(c); }
};
struct ModelDeleter {
  void operator()(ls_model* m) const { ls_model_destroy(m); }
};
struct TrainerDeleter {
  void operator()(ls_trainer* t) const { ls_trainer_destroy(t); }
};

// The log: informational lines are dropped by --quiet; results always print. With --json the
// log goes to stderr so stdout holds only the summary.
class Log {
 public:
  Log(const TrainOptions& o, ProgressMeter* meter)
      : out_(o.json ? stderr : stdout), quiet_(o.quiet), meter_(meter) {}
  void info(const std::string& line) {
    if (!quiet_) meter_->message(out_, line);
  }
  void result(const std::string& line) { meter_->message(out_, line); }
  void warn(const std::string& line) { meter_->message(stderr, "warning: " + line); }

 private:
  FILE* out_;
  bool quiet_;
  ProgressMeter* meter_;
};

// Where the training stands; recorded in the run file with each checkpoint.
struct Position {
  int64_t num_updates = 0;
  int64_t epoch = 1;                  // 1-based
  int64_t epoch_batches_done = 0;     // micro-batches of this epoch already stepped
  double best_valid_loss = INFINITY;  // bits per token
};

int64_t state_int(const KeyValues& kv, const char* key, int64_t def) {
  auto it = kv.find(key);
  if (it == kv.end()) return def;
  char* end = nullptr;
  long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0')
    throw std::runtime_error(std::string("run file: '") + key +
                             "' is not an integer: " + it->second);
  return v;
}

ls_model_config make_model_config(TrainOptions& o, size_t tokenizer_vocab) {
  ls_model_config c;
  ls_model_config_init(&c);
  check(ls_model_config_preset(o.arch.c_str(), &c), "ls_model_config_preset");
  if (o.encoder_layers) c.encoder_layers = o.encoder_layers;
  if (o.decoder_layers) c.decoder_layers = o.decoder_layers;
  if (o.embed_dim) c.hidden_size = o.embed_dim;
  if (o.ffn_embed_dim) c.ffn_size = o.ffn_embed_dim;
  if (o.attention_heads) c.num_heads = o.attention_heads;
  if (o.dropout >= 0) c.dropout = static_cast<float>(o.dropout);
  if (o.attention_dropout >= 0) c.attention_dropout = static_cast<float>(o.attention_dropout);
  if (o.activation_dropout >= 0) c.activation_dropout = static_cast<float>(o.activation_dropout);
  // One vocabulary for both sides, rounded up to a multiple of 8 (as fairseq pads its
  // dictionary) so the output GEMM has aligned sizes; the extra ids never occur in the data.
  int32_t vocab = static_cast<int32_t>((tokenizer_vocab + 7) / 8 * 8);
  c.src_vocab_size = vocab;
  c.tgt_vocab_size = vocab;
  c.share_all_embeddings = 1;
  c.share_decoder_input_output_embed = 1;
  c.padding_idx = ls_sample::BpeTokenizer::kPad;
  c.eos_idx = ls_sample::BpeTokenizer::kEos;
  c.label_smoothing = static_cast<float>(o.label_smoothing);
  c.max_seq_len = static_cast<int32_t>(o.max_len);
  c.max_batch_tokens = static_cast<int32_t>(o.max_tokens);
  c.dtype = o.dtype;
  c.recompute_layer_norm = o.recompute_layer_norm ? 1 : 0;
  c.layer_norm_backward_from_output = o.layer_norm_backward_from_output ? 1 : 0;
  // Record the sizes actually used, so a resumed run rebuilds this model even if the preset
  // changes meanwhile.
  o.recorded["encoder-layers"] = std::to_string(c.encoder_layers);
  o.recorded["decoder-layers"] = std::to_string(c.decoder_layers);
  o.recorded["embed-dim"] = std::to_string(c.hidden_size);
  o.recorded["ffn-embed-dim"] = std::to_string(c.ffn_size);
  o.recorded["attention-heads"] = std::to_string(c.num_heads);
  o.recorded["dropout"] = fmt("%g", c.dropout);
  o.recorded["attention-dropout"] = fmt("%g", c.attention_dropout);
  o.recorded["activation-dropout"] = fmt("%g", c.activation_dropout);
  return c;
}

ls_trainer_config make_trainer_config(const TrainOptions& o, int64_t total_updates) {
  ls_trainer_config t;
  ls_trainer_config_init(&t);
  t.optimizer = o.optimizer;
  t.lr = static_cast<float>(o.lr);
  t.beta1 = static_cast<float>(o.beta1);
  t.beta2 = static_cast<float>(o.beta2);
  t.eps = static_cast<float>(o.adam_eps);
  t.weight_decay = static_cast<float>(o.weight_decay);
  t.clip_norm = static_cast<float>(o.clip_norm);
  t.lr_schedule = o.lr_schedule;
  t.warmup_updates = static_cast<int32_t>(o.warmup_updates);
  t.warmup_init_lr = static_cast<float>(o.warmup_init_lr);
  t.total_updates = total_updates;
  t.min_lr = static_cast<float>(o.min_lr);
  t.update_freq = static_cast<int32_t>(o.update_freq);
  return t;
}

// Loss and token sums of the last `capacity` updates, for the progress line.
class RecentUpdates {
 public:
  explicit RecentUpdates(size_t capacity) : items_(capacity) {}
  void add(double loss, double nll, int64_t tokens) {
    Item& slot = items_[next_];
    sum_.loss -= slot.loss;
    sum_.nll -= slot.nll;
    sum_.tokens -= slot.tokens;
    slot = {loss, nll, tokens};
    sum_.loss += loss;
    sum_.nll += nll;
    sum_.tokens += tokens;
    next_ = (next_ + 1) % items_.size();
  }
  double loss_bits() const { return bits(sum_.loss); }
  double nll_bits() const { return bits(sum_.nll); }

 private:
  struct Item {
    double loss = 0, nll = 0;
    int64_t tokens = 0;
  };
  double bits(double x) const {
    return sum_.tokens > 0 ? x / static_cast<double>(sum_.tokens) / std::log(2.0) : 0.0;
  }
  std::vector<Item> items_;
  size_t next_ = 0;
  Item sum_;
};

std::string model_description(const TrainOptions& o, const ls_model_config& c) {
  return fmt(
      "%s: %d+%d layers, %d/%d, %d heads, vocab %d (shared), %s, dropout %g, "
      "label smoothing %g",
      o.arch.c_str(), c.encoder_layers, c.decoder_layers, c.hidden_size, c.ffn_size, c.num_heads,
      c.tgt_vocab_size, dtype_label(c.dtype), c.dropout, c.label_smoothing);
}

}  // namespace

int cmd_train(int argc, char** argv) {
  TrainOptions o;
  if (!parse_train_options(argc, argv, &o)) return 0;
  auto run_start = Clock::now();
  ProgressMeter meter(!o.quiet, o.log_interval);
  Log log(o, &meter);

  // ---- context (first: a missing GPU is reported before any file is written)
  ls_context_options copt;
  ls_context_options_init(&copt);
  copt.device = o.device;
  copt.seed = o.seed;
  copt.gemm_autotune = o.gemm_autotune ? 1 : 0;
  ls_context* raw_context = nullptr;
  check(ls_context_create(&copt, &raw_context), "ls_context_create");
  std::unique_ptr<ls_context, ContextDeleter> context(raw_context);
  ls_device_info dev;
  ls_device_info_init(&dev);
  check(ls_context_device(context.get(), &dev), "ls_context_device");
  log.info(fmt("ls-train train: ls_train %s, device %s%s", ls_version_string(), dev.name,
               dev.kind == LS_DEVICE_CUDA ? fmt(" (cuda:%d)", dev.index).c_str() : ""));
  if (o.on_gpu != (dev.kind == LS_DEVICE_CUDA))
    log.warn("the defaults were chosen for a different device than the one in use");

  // ---- save dir and resume state
  const std::string ckpt_last = (fs::path(o.save_dir) / "checkpoint_last.lsck").string();
  const std::string ckpt_best = (fs::path(o.save_dir) / "checkpoint_best.lsck").string();
  const std::string tokenizer_path = (fs::path(o.save_dir) / "tokenizer.bpe").string();
  const std::string run_file = run_file_path(o.save_dir);
  Position pos;
  if (o.resume) {
    if (!fs::exists(ckpt_last)) throw std::runtime_error("--resume: no checkpoint " + ckpt_last);
    pos.num_updates = state_int(o.resumed_file, "state.num-updates", 0);
    pos.epoch = state_int(o.resumed_file, "state.epoch", 1);
    pos.epoch_batches_done = state_int(o.resumed_file, "state.epoch-batches-done", 0);
    auto best = o.resumed_file.find("state.best-valid-loss");
    if (best != o.resumed_file.end())
      pos.best_valid_loss = std::strtod(best->second.c_str(), nullptr);
  } else {
    std::error_code ec;
    fs::create_directories(o.save_dir, ec);
    if (ec)
      throw std::runtime_error("cannot create --save-dir " + o.save_dir + ": " + ec.message());
    if (fs::exists(ckpt_last))
      log.warn("a new run overwrites " + ckpt_last + " (use --resume to continue it)");
  }

  // ---- data
  TrainData data = load_train_data(o, tokenizer_path, /*learn=*/!o.resume);
  const auto& st = data.corpus.stats;
  log.info(fmt("data: %s (%s), %.1f s",
               o.source_file.empty() ? o.mo_dir.c_str() : o.source_file.c_str(),
               o.source_file.empty() ? "gettext catalogs" : "aligned text", data.corpus_seconds));
  log.info("  " + st.summary());
  log.info(fmt("tokenizer: byte-level BPE, %zu tokens (%zu merges), %s %s in %.1f s",
               data.tokenizer.vocab_size(), data.tokenizer.num_merges(),
               data.tokenizer_learned ? "learned on the training split, saved to" : "loaded from",
               tokenizer_path.c_str(), data.tokenizer_seconds));
  log.info(
      fmt("batches (--max-tokens %lld, --max-len %lld): train %zu (%zu pairs, %zu skipped "
          "as too long), valid %zu, test %zu",
          static_cast<long long>(o.max_tokens), static_cast<long long>(o.max_len),
          data.train->num_batches(), data.train->num_examples(), data.train->num_skipped(),
          data.valid->num_batches(), data.test->num_batches()));

  // ---- model and trainer
  ls_model_config mc = make_model_config(o, data.tokenizer.vocab_size());
  ls_model* raw_model = nullptr;
  check(ls_model_create(context.get(), &mc, &raw_model), "ls_model_create");
  std::unique_ptr<ls_model, ModelDeleter> model(raw_model);
  check(ls_model_get_config(model.get(), &mc), "ls_model_get_config");
  ls_memory_report mem;
  ls_memory_report_init(&mem);
  check(ls_model_memory_report(model.get(), &mem), "ls_model_memory_report");
  log.info("model: " + model_description(o, mc));
  log.info(
      fmt("  %.2fM parameters; arena %s = persistent %s + planned %s (lower bound %s, "
          "%s without reuse)",
          static_cast<double>(mem.num_parameters) / 1e6, human_bytes(mem.total_bytes).c_str(),
          human_bytes(mem.persistent_bytes).c_str(), human_bytes(mem.planned_bytes).c_str(),
          human_bytes(mem.lower_bound_bytes).c_str(), human_bytes(mem.no_reuse_bytes).c_str()));

  const int64_t batches_per_epoch = static_cast<int64_t>(data.train->num_batches());
  int64_t total_updates = o.max_updates;
  if (o.max_epoch > 0) {
    int64_t by_epochs = (o.max_epoch * batches_per_epoch + o.update_freq - 1) / o.update_freq;
    total_updates = total_updates > 0 ? std::min(total_updates, by_epochs) : by_epochs;
  }
  ls_trainer_config tc = make_trainer_config(o, total_updates);
  ls_trainer* raw_trainer = nullptr;
  check(ls_trainer_create(model.get(), &tc, &raw_trainer), "ls_trainer_create");
  std::unique_ptr<ls_trainer, TrainerDeleter> trainer(raw_trainer);
  log.info(
      fmt("trainer: %s (betas %g,%g, eps %g, weight decay %g), lr %g, %s, warmup %lld, "
          "clip-norm %g, update-freq %lld, max-updates %lld, max-epoch %lld",
          o.optimizer == LS_OPTIMIZER_ADAMW ? "adamw" : "adam", o.beta1, o.beta2, o.adam_eps,
          o.weight_decay, o.lr, o.lr_scheduler.c_str(), static_cast<long long>(o.warmup_updates),
          o.clip_norm, static_cast<long long>(o.update_freq), static_cast<long long>(o.max_updates),
          static_cast<long long>(o.max_epoch)));
  if (o.resume) {
    check(ls_trainer_load(trainer.get(), ckpt_last.c_str()), "ls_trainer_load");
    log.info(fmt("resumed from %s: update %lld, epoch %lld (%lld of %lld batches done)",
                 ckpt_last.c_str(), static_cast<long long>(pos.num_updates),
                 static_cast<long long>(pos.epoch), static_cast<long long>(pos.epoch_batches_done),
                 static_cast<long long>(batches_per_epoch)));
  }

  auto save_checkpoint = [&](const std::string& path) {
    check(ls_trainer_save(trainer.get(), path.c_str()), "ls_trainer_save");
    if (path != ckpt_last) return;
    KeyValues record = o.recorded;
    record["state.num-updates"] = std::to_string(pos.num_updates);
    record["state.epoch"] = std::to_string(pos.epoch);
    record["state.epoch-batches-done"] = std::to_string(pos.epoch_batches_done);
    if (std::isfinite(pos.best_valid_loss))
      record["state.best-valid-loss"] = fmt("%.17g", pos.best_valid_loss);
    record["state.library-version"] = ls_version_string();
    write_run_file(run_file, record);
  };

  // ---- training
  const int64_t start_update = pos.num_updates;
  EvalTotals valid;
  int64_t valid_at_update = -1;
  auto validate = [&]() {
    valid = evaluate_split(model.get(), *data.valid);
    valid_at_update = pos.num_updates;
    bool best = valid.loss_bits() < pos.best_valid_loss;
    if (best) pos.best_valid_loss = valid.loss_bits();
    log.info(
        fmt("valid | epoch %lld | update %lld | loss %.3f | nll %.3f | ppl %.2f | "
            "%lld tokens | %.1f s%s",
            static_cast<long long>(pos.epoch), static_cast<long long>(pos.num_updates),
            valid.loss_bits(), valid.nll_bits(), std::exp2(valid.nll_bits()),
            static_cast<long long>(valid.tokens), valid.seconds, best ? " | best" : ""));
    return best;
  };

  std::string stop_reason = "max-updates";
  RecentUpdates recent(static_cast<size_t>(o.log_interval));
  ProgressState progress;
  progress.total_updates = total_updates;
  progress.show_loss_scale = mc.dtype == LS_DTYPE_FP16;
  double train_seconds = 0;  // in ls_trainer_step and batch building
  int64_t run_tokens = 0, overflows = 0;
  double first_loss_bits = NAN, last_loss_bits = NAN;
  bool resume_checked = !o.resume;
  double loop_seconds = 0;
  {
    StopSignalGuard signals;
    auto loop_start = Clock::now();
    std::vector<size_t> order = data.train->epoch_order(static_cast<uint64_t>(pos.epoch));
    double window_loss = 0, window_nll = 0;
    int64_t window_tokens = 0;
    bool done = total_updates > 0 && pos.num_updates >= total_updates;
    if (done)
      log.info(
          fmt("nothing to train: already %lld updates", static_cast<long long>(pos.num_updates)));
    while (!done) {
      if (pos.epoch_batches_done >= batches_per_epoch) {
        if (o.max_epoch > 0 && pos.epoch >= o.max_epoch) {
          stop_reason = "max-epoch";
          break;
        }
        ++pos.epoch;
        pos.epoch_batches_done = 0;
        order = data.train->epoch_order(static_cast<uint64_t>(pos.epoch));
      }
      auto t0 = Clock::now();
      ls_sample::Batch batch =
          data.train->batch(order[static_cast<size_t>(pos.epoch_batches_done)]);
      ls_batch b = to_api_batch(batch);
      ls_step_result r;
      ls_step_result_init(&r);
      check(ls_trainer_step(trainer.get(), &b, &r), "ls_trainer_step");
      train_seconds += seconds_since(t0);
      ++pos.epoch_batches_done;
      run_tokens += r.tokens;
      window_loss += r.loss;
      window_nll += r.nll;
      window_tokens += r.tokens;
      if (!r.updated && !r.overflow) continue;  // gradients still accumulating (--update-freq)
      if (!resume_checked) {
        resume_checked = true;
        int64_t expected = pos.num_updates + (r.updated ? 1 : 0);
        if (r.num_updates != expected)
          log.warn(
              fmt("the checkpoint holds a different update count than the run file "
                  "(%lld vs %lld): continuing from the checkpoint's",
                  static_cast<long long>(r.num_updates - (r.updated ? 1 : 0)),
                  static_cast<long long>(pos.num_updates)));
      }
      if (r.overflow) ++overflows;
      pos.num_updates = r.num_updates;
      recent.add(window_loss, window_nll, window_tokens);
      double loss_bits = window_tokens > 0 ? window_loss / window_tokens / std::log(2.0) : 0.0;
      if (std::isnan(first_loss_bits)) first_loss_bits = loss_bits;
      window_loss = window_nll = 0;
      window_tokens = 0;
      if (!std::isfinite(r.loss))
        throw std::runtime_error(
            fmt("the training loss is %g at update %lld: training "
                "diverged (try a lower --lr or --clip-norm 1)",
                r.loss, static_cast<long long>(pos.num_updates)));

      loop_seconds = seconds_since(loop_start);
      progress.update = pos.num_updates;
      progress.epoch = pos.epoch;
      progress.loss_bits = recent.loss_bits();
      progress.nll_bits = recent.nll_bits();
      last_loss_bits = progress.loss_bits;
      progress.lr = r.lr;
      progress.loss_scale = r.loss_scale;
      progress.tokens_per_second = train_seconds > 0 ? run_tokens / train_seconds : 0;
      progress.elapsed_seconds = loop_seconds;
      int64_t done_here = pos.num_updates - start_update;
      progress.eta_seconds = -1;
      if (total_updates > 0 && done_here > 0)
        progress.eta_seconds = (total_updates - pos.num_updates) * loop_seconds / done_here;
      if (o.time_limit > 0) {
        double left = std::max(0.0, o.time_limit - loop_seconds);
        progress.eta_seconds =
            progress.eta_seconds < 0 ? left : std::min(progress.eta_seconds, left);
      }

      if (total_updates > 0 && pos.num_updates >= total_updates) {
        stop_reason =
            o.max_updates > 0 && pos.num_updates >= o.max_updates ? "max-updates" : "max-epoch";
        done = true;
      } else if (o.time_limit > 0 && loop_seconds >= o.time_limit) {
        stop_reason = "time-limit";
        done = true;
      } else if (g_stop_signal) {
        stop_reason = "interrupted";
        done = true;
      }
      // An fp16 overflow skips the update: the count stands still, so nothing falls due.
      if (r.updated || done) meter.update(progress, done);
      if (r.updated && !done && o.validate_interval > 0 &&
          pos.num_updates % o.validate_interval == 0) {
        if (validate()) save_checkpoint(ckpt_best);
        save_checkpoint(ckpt_last);
      }
    }
    loop_seconds = seconds_since(loop_start);
    meter.finish();
  }
  const int64_t run_updates = pos.num_updates - start_update;
  log.info(fmt(
      "done training (%s): %lld updates in this run (%lld in all), %s, %.0f target "
      "tok/s%s",
      stop_reason.c_str(), static_cast<long long>(run_updates),
      static_cast<long long>(pos.num_updates), format_duration(loop_seconds).c_str(),
      train_seconds > 0 ? run_tokens / train_seconds : 0.0,
      overflows ? fmt(", %lld fp16 overflow(s) skipped", static_cast<long long>(overflows)).c_str()
                : ""));

  if (stop_reason == "interrupted") {
    save_checkpoint(ckpt_last);
    log.result(fmt("interrupted: saved %s at update %lld; continue with --resume",
                   ckpt_last.c_str(), static_cast<long long>(pos.num_updates)));
    return 130;
  }

  // ---- final validation, test decoding, checkpoint
  if (valid_at_update != pos.num_updates) {
    if (validate()) save_checkpoint(ckpt_best);
  }
  save_checkpoint(ckpt_last);

  DecodeOptions dopt;
  dopt.max_len = o.max_len;
  dopt.max_tokens = o.max_tokens;
  dopt.max_len_a = o.max_len_a;
  dopt.max_len_b = o.max_len_b;
  Translations test =
      translate_split(model.get(), *data.test, data.corpus.test, data.tokenizer, dopt);
  int64_t shown = 0;
  for (size_t e = 0; e < data.corpus.test.size() && shown < o.print_examples; ++e) {
    if (!test.decoded[e]) continue;
    log.result(fmt("S-%zu\t%s", e, data.corpus.test[e].source.c_str()));
    log.result(fmt("T-%zu\t%s", e, data.corpus.test[e].target.c_str()));
    log.result(fmt("H-%zu\t%s", e, test.hypotheses[e].c_str()));
    ++shown;
  }
  log.result(fmt("test: greedy decoding of %zu sentences (%zu skipped as too long) in %.1f s",
                 test.num_decoded, data.corpus.test.size() - test.num_decoded, test.seconds));
  log.result("test: " + format_bleu(test.bleu));
  log.result(fmt("test: BLEU signature %s", bleu_signature()));
  log.result(fmt("valid: loss %.3f | nll %.3f | ppl %.2f (bits per target token) at update %lld",
                 valid.loss_bits(), valid.nll_bits(), std::exp2(valid.nll_bits()),
                 static_cast<long long>(pos.num_updates)));
  log.result(fmt("memory: arena %s (planned %s, lower bound %s), %.2fM parameters",
                 human_bytes(mem.total_bytes).c_str(), human_bytes(mem.planned_bytes).c_str(),
                 human_bytes(mem.lower_bound_bytes).c_str(),
                 static_cast<double>(mem.num_parameters) / 1e6));
  log.result(fmt("saved %s (+ %s, %s); total %s", ckpt_last.c_str(),
                 fs::path(tokenizer_path).filename().c_str(), fs::path(run_file).filename().c_str(),
                 format_duration(seconds_since(run_start)).c_str()));

  if (o.json) {
    Json j;
    j.begin_object();
    j.kv("status", "ok");
    j.kv("stop_reason", stop_reason);
    j.kv("device", dev.kind == LS_DEVICE_CUDA ? "cuda" : "cpu");
    j.kv("device_name", dev.name);
    j.kv("arch", o.arch);
    j.kv("dtype", dtype_label(mc.dtype));
    j.begin_object("model");
    j.kv("encoder_layers", mc.encoder_layers);
    j.kv("decoder_layers", mc.decoder_layers);
    j.kv("hidden_size", mc.hidden_size);
    j.kv("ffn_size", mc.ffn_size);
    j.kv("num_heads", mc.num_heads);
    j.kv("vocab_size", mc.tgt_vocab_size);
    j.kv("num_parameters", mem.num_parameters);
    j.end_object();
    j.kv("tokenizer_vocab_size", static_cast<uint64_t>(data.tokenizer.vocab_size()));
    j.kv("train_pairs", static_cast<uint64_t>(data.corpus.train.size()));
    j.kv("valid_pairs", static_cast<uint64_t>(data.corpus.valid.size()));
    j.kv("test_pairs", static_cast<uint64_t>(data.corpus.test.size()));
    j.kv("resumed", o.resume);
    j.kv("start_update", start_update);
    j.kv("num_updates", pos.num_updates);
    j.kv("epoch", pos.epoch);
    j.kv("train_seconds", loop_seconds);
    j.kv("train_tokens", run_tokens);
    j.kv("tokens_per_second", train_seconds > 0 ? run_tokens / train_seconds : 0.0);
    j.kv("first_train_loss", first_loss_bits);
    j.kv("last_train_loss", last_loss_bits);
    j.kv("fp16_overflows", overflows);
    j.kv("loss_unit", "bits per target token (label-smoothed); nll likewise");
    j.kv("valid_loss", valid.loss_bits());
    j.kv("valid_nll", valid.nll_bits());
    j.kv("valid_ppl", std::exp2(valid.nll_bits()));
    j.kv("best_valid_loss", pos.best_valid_loss);
    j.kv("test_bleu", test.bleu.score);
    j.kv("test_bleu_line", format_bleu(test.bleu));
    j.kv("bleu_signature", bleu_signature());
    j.kv("test_sentences", static_cast<uint64_t>(test.num_decoded));
    j.kv("decode_seconds", test.seconds);
    j.begin_object("memory");
    j.kv("arena_bytes", mem.total_bytes);
    j.kv("persistent_bytes", mem.persistent_bytes);
    j.kv("planned_bytes", mem.planned_bytes);
    j.kv("lower_bound_bytes", mem.lower_bound_bytes);
    j.kv("no_reuse_bytes", mem.no_reuse_bytes);
    j.end_object();
    j.kv("checkpoint", ckpt_last);
    j.kv("total_seconds", seconds_since(run_start));
    j.end_object();
    std::printf("%s\n", j.str().c_str());
  }
  return 0;
}

}  // namespace cli
