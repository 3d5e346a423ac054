// Options of `ls-train train`: one table of every option (names follow fairseq where it has
// one), defaults that depend on whether the run is on a GPU, the --help text built from that
// table, and the run file (save-dir/train_config.txt) that --resume reads back.
//
// Each option has a scope:
//   fixed  shapes the data or the model (corpus, tokenizer, batches, layer sizes, dtype): saved
//          in the run file; on --resume the saved value is used and a different one is refused;
//   saved  training hyper-parameters: saved; on --resume the saved value is the default and the
//          command line may change it (as fairseq lets a resumed run change --lr);
//   run    this invocation only (device, save dir, logging, decoding of the test split).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "ls_train.h"

namespace cli {

using KeyValues = std::map<std::string, std::string>;

struct TrainOptions {
  // Data (fixed).
  std::string source_file, target_file;  // both empty: the gettext catalogs of mo_dir
  std::string mo_dir;
  int64_t vocab_size = 0;
  int64_t max_len = 0;     // tokens per sentence, eos included; the model's max_seq_len
  int64_t max_tokens = 0;  // batch size x padded length; the model's max_batch_tokens
  uint64_t seed = 1;

  // Model (fixed). Zero means "the preset's value".
  std::string arch;  // a preset name of ls_model_config_preset
  ls_dtype dtype = LS_DTYPE_FP32;
  int32_t encoder_layers = 0, decoder_layers = 0, embed_dim = 0, ffn_embed_dim = 0,
          attention_heads = 0;

  // Regularisation (saved). Negative means "the preset's value".
  double dropout = -1, attention_dropout = -1, activation_dropout = -1;
  double label_smoothing = 0.1;

  // Optimisation (saved).
  ls_optimizer_kind optimizer = LS_OPTIMIZER_ADAM;
  double lr = 0, beta1 = 0.9, beta2 = 0.98, adam_eps = 1e-8, weight_decay = 0, clip_norm = 0;
  ls_lr_schedule lr_schedule = LS_LR_INVERSE_SQRT;
  std::string lr_scheduler;  // its fairseq name
  int64_t warmup_updates = 0;
  double warmup_init_lr = 1e-7, min_lr = 0;
  int64_t update_freq = 1;
  int64_t max_updates = 0;  // 0: no limit (then max_epoch must be set)
  int64_t max_epoch = 0;    // 0: no limit
  int64_t validate_interval = 0;
  int64_t log_interval = 0;

  // This run.
  ls_device_kind device = LS_DEVICE_AUTO;
  bool on_gpu = false;  // the defaults chosen were the GPU ones
  std::string save_dir;
  bool resume = false, quiet = false, json = false;
  bool recompute_layer_norm = true;  // ls_model_config.recompute_layer_norm (memory only)
  // ls_model_config.layer_norm_backward_from_output (memory only, not recorded in the run file)
  bool layer_norm_backward_from_output = false;
  // ls_context_options.gemm_autotune (GPU only; not recorded in the run file)
  bool gemm_autotune = false;
  double time_limit = 0;  // seconds of training; 0 = none
  double max_len_a = 0;   // test decoding: at most a * source length + b tokens (<= max_len)
  int64_t max_len_b = 0;
  int64_t print_examples = 0;

  // The fixed and saved options as resolved (option name without "--" -> value): what the run
  // file records. On --resume, also what the run file held (including the progress keys).
  KeyValues recorded;
  KeyValues resumed_file;
};

// Parses the arguments after "train". Returns false when --help was printed (exit 0). Throws
// UsageError for anything malformed (exit 2); on --resume, a missing or unreadable run file
// throws std::runtime_error (exit 1).
bool parse_train_options(int argc, char** argv, TrainOptions* options);

// The run file: a first line "ls-train-config 1", then "key value" lines (the value runs to
// the end of the line). Written atomically (temporary file, then rename).
std::string run_file_path(const std::string& save_dir);
KeyValues read_run_file(const std::string& path);
void write_run_file(const std::string& path, const KeyValues& values);

const char* dtype_label(ls_dtype dtype);

}  // namespace cli
