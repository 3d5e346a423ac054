// ls-train plan: the memory a model config would take for training, computed by the library's
// planner without allocating anything (ls_model_config_preset + ls_plan_memory, public API only).
#include <cinttypes>
#include <cstdio>
#include <limits>
#include <string>

#include "cli.h"

namespace cli {

namespace {

const char* const kUsage =
    "usage: ls-train plan [--preset NAME] [--max-batch-tokens N] [--max-seq-len L]\n"
    "                     [--dtype fp32|fp16|bf16] [--device auto|cpu|cuda] [--vocab V]\n"
    "                     [--pre-layer-norm | --post-layer-norm]\n"
    "                     [--recompute-layer-norm | --no-recompute-layer-norm |\n"
    "                      --layer-norm-backward-from-output]\n"
    "                     [--json]\n\n"
    "Plans the training memory of a model without allocating it: the persistent region\n"
    "(parameters, working copy, gradients, optimizer state, inputs, workspaces) and the planned\n"
    "region (saved activations and temporaries, with buffers reused across their lifetimes),\n"
    "next to the lower bound (the peak of bytes alive at once) and what no reuse would cost.\n\n"
    "  --preset NAME          transformer-base (default), transformer-big, gpt2-small,\n"
    "                         transformer-tiny\n"
    "  --max-batch-tokens N   tokens per batch (batch size x padded length); preset default\n"
    "  --max-seq-len L        longest padded sequence; preset default\n"
    "  --dtype D              working precision: fp32, fp16 or bf16; preset default (fp32)\n"
    "  --device D             whose workspaces are counted: auto (CUDA if built), cpu, cuda\n"
    "  --vocab V              source and target vocabulary size (preset default: 32768)\n"
    "  --pre-layer-norm       LayerNorm before each sublayer, plus a final one per stack\n"
    "                         (as nn.Transformer(norm_first=True)); preset default\n"
    "  --post-layer-norm      LayerNorm after each residual add (fairseq's transformer-base\n"
    "                         and -big); preset default\n"
    "  --recompute-layer-norm pre-LN: recompute each block's LayerNorm output in backward\n"
    "                         instead of saving it (the default; ignored for post-LN)\n"
    "  --no-recompute-layer-norm\n"
    "                         pre-LN: save the LayerNorm outputs for backward instead\n"
    "  --layer-norm-backward-from-output\n"
    "                         pre- and post-LN: every LayerNorm backward recovers its\n"
    "                         normalized input from its output, so LayerNorm inputs are not\n"
    "                         kept for backward (gradients differ by rounding)\n"
    "  --json                 print one JSON object instead of the table\n";

ls_dtype parse_dtype(const std::string& s) {
  if (s == "fp32") return LS_DTYPE_FP32;
  if (s == "fp16") return LS_DTYPE_FP16;
  if (s == "bf16") return LS_DTYPE_BF16;
  throw UsageError("--dtype expects fp32, fp16 or bf16, got '" + s + "'");
}

const char* dtype_name(ls_dtype d) {
  switch (d) {
    case LS_DTYPE_FP32:
      return "fp32";
    case LS_DTYPE_FP16:
      return "fp16";
    case LS_DTYPE_BF16:
      return "bf16";
    case LS_DTYPE_FP64:
      return "fp64";
  }
  return "unknown";
}

ls_device_kind parse_device(const std::string& s) {
  if (s == "auto") return LS_DEVICE_AUTO;
  if (s == "cpu") return LS_DEVICE_CPU;
  if (s == "cuda") return LS_DEVICE_CUDA;
  throw UsageError("--device expects auto, cpu or cuda, got '" + s + "'");
}

// An int32 option that must be positive; absent leaves `value` as it is.
void positive_int32(Args& args, const char* name, int32_t& value) {
  if (!args.has(name)) return;
  int64_t v = args.integer(name, 0);
  if (v <= 0 || v > std::numeric_limits<int32_t>::max())
    throw UsageError(std::string(name) + " must be between 1 and 2147483647, got " +
                     std::to_string(v));
  value = static_cast<int32_t>(v);
}

struct Row {
  const char* label;
  const char* key;  // JSON key under "categories"
  uint64_t bytes;
};

void print_row(const char* label, uint64_t bytes) {
  std::printf("  %-28s %20" PRIu64 "  %12s\n", label, bytes, human_bytes(bytes).c_str());
}

}  // namespace

int cmd_plan(int argc, char** argv) {
  Args args(argc, argv, 2);
  if (args.flag("--help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  std::string preset = args.str("--preset", "transformer-base");
  bool json = args.flag("--json");
  std::string device_name = args.str("--device", "auto");
  ls_device_kind device = parse_device(device_name);

  ls_model_config config;
  ls_model_config_init(&config);
  check(ls_model_config_preset(preset.c_str(), &config), "ls_model_config_preset");
  positive_int32(args, "--max-batch-tokens", config.max_batch_tokens);
  positive_int32(args, "--max-seq-len", config.max_seq_len);
  if (args.has("--vocab")) {
    positive_int32(args, "--vocab", config.tgt_vocab_size);
    config.src_vocab_size = config.tgt_vocab_size;
  }
  if (args.has("--dtype")) config.dtype = parse_dtype(args.str("--dtype", ""));
  const bool pre_ln = args.flag("--pre-layer-norm"), post_ln = args.flag("--post-layer-norm");
  if (pre_ln && post_ln)
    throw UsageError("--pre-layer-norm and --post-layer-norm exclude each other");
  if (pre_ln) config.pre_layer_norm = 1;
  if (post_ln) config.pre_layer_norm = 0;
  const bool recompute_ln = args.flag("--recompute-layer-norm");
  const bool keep_ln = args.flag("--no-recompute-layer-norm");
  const bool ln_from_output = args.flag("--layer-norm-backward-from-output");
  if (int(recompute_ln) + int(keep_ln) + int(ln_from_output) > 1)
    throw UsageError(
        "--recompute-layer-norm, --no-recompute-layer-norm and "
        "--layer-norm-backward-from-output exclude each other");
  if (recompute_ln) config.recompute_layer_norm = 1;
  if (keep_ln || ln_from_output) config.recompute_layer_norm = 0;
  if (ln_from_output) config.layer_norm_backward_from_output = 1;
  args.finish();

  ls_memory_report r;
  ls_memory_report_init(&r);
  check(ls_plan_memory(&config, device, &r), "ls_plan_memory");

  // planned / lower bound: 1.0 is a perfect packing; undefined when nothing is planned.
  double ratio = r.lower_bound_bytes > 0 ? static_cast<double>(r.planned_bytes) /
                                               static_cast<double>(r.lower_bound_bytes)
                                         : std::numeric_limits<double>::quiet_NaN();
  const Row persistent[] = {
      {"parameters (fp32 master)", "parameters", r.parameters},
      {"working copy", "working_copy", r.working_copy},
      {"gradients", "gradients", r.gradients},
      {"optimizer state", "optimizer_state", r.optimizer_state},
      {"inputs", "inputs", r.inputs},
      {"workspace", "workspace", r.workspace},
  };
  // Sums of buffer sizes before reuse; the planner packs them into planned_bytes.
  const Row planned[] = {
      {"saved activations", "saved_activations", r.saved_activations},
      {"temporaries", "temporaries", r.temporaries},
  };

  if (json) {
    Json j;
    j.begin_object();
    j.kv("preset", preset);
    j.kv("dtype", dtype_name(config.dtype));
    j.kv("device", device_name);
    j.kv("max_batch_tokens", config.max_batch_tokens);
    j.kv("max_seq_len", config.max_seq_len);
    j.kv("pre_layer_norm", config.pre_layer_norm != 0);
    j.kv("recompute_layer_norm", config.recompute_layer_norm != 0);
    j.kv("layer_norm_backward_from_output", config.layer_norm_backward_from_output != 0);
    j.kv("src_vocab_size", config.src_vocab_size);
    j.kv("tgt_vocab_size", config.tgt_vocab_size);
    j.kv("num_parameters", r.num_parameters);
    j.kv("num_planned_buffers", r.num_planned_buffers);
    j.begin_object("categories");
    for (const Row& row : persistent) j.kv(row.key, row.bytes);
    for (const Row& row : planned) j.kv(row.key, row.bytes);
    j.end_object();
    j.kv("persistent_bytes", r.persistent_bytes);
    j.kv("planned_bytes", r.planned_bytes);
    j.kv("lower_bound_bytes", r.lower_bound_bytes);
    j.kv("no_reuse_bytes", r.no_reuse_bytes);
    j.kv("planned_over_lower_bound", ratio);
    j.kv("total_bytes", r.total_bytes);
    j.end_object();
    std::printf("%s\n", j.str().c_str());
    return 0;
  }

  std::printf(
      "memory plan: %s, %s, %s, device %s, max_batch_tokens %d, max_seq_len %d, "
      "vocab %d/%d\n",
      preset.c_str(), config.pre_layer_norm ? "pre-LN" : "post-LN", dtype_name(config.dtype),
      device_name.c_str(), config.max_batch_tokens, config.max_seq_len, config.src_vocab_size,
      config.tgt_vocab_size);
  std::printf("parameters: %" PRIu64 " scalars (%.1f M); planned buffers: %" PRIu64 "\n\n",
              r.num_parameters, static_cast<double>(r.num_parameters) / 1e6, r.num_planned_buffers);
  std::printf("  %-28s %20s  %12s\n", "category", "bytes", "human");
  std::printf("persistent region\n");
  for (const Row& row : persistent) print_row(row.label, row.bytes);
  print_row("persistent total", r.persistent_bytes);
  std::printf("planned region (saved activations and temporaries)\n");
  for (const Row& row : planned) print_row(row.label, row.bytes);
  print_row("without reuse", r.no_reuse_bytes);
  print_row("lower bound (peak live)", r.lower_bound_bytes);
  print_row("planned", r.planned_bytes);
  if (r.lower_bound_bytes > 0)
    std::printf("  %-28s %20.3f\n", "planned / lower bound", ratio);
  else
    std::printf("  %-28s %20s\n", "planned / lower bound", "n/a");
  std::printf("total\n");
  print_row("arena (persistent + planned)", r.total_bytes);
  return 0;
}

}  // namespace cli
