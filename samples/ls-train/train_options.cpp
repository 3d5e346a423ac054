#include "train_options.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "cli.h"

namespace cli {

namespace {

enum class Scope { kFixed, kSaved, kRun };

struct OptionSpec {
  const char* section;  // non-null starts a --help section
  const char* name;     // without "--"
  const char* alias;    // another accepted name, or nullptr
  const char* meta;     // nullptr: a flag without a value
  Scope scope;
  const char* cpu_default;  // "" = none / from the preset
  const char* gpu_default;
  const char* help;
};

// clang-format off
const OptionSpec kOptions[] = {
  {"Data", "source-file", nullptr, "FILE", Scope::kFixed, "", "",
   "source (English) sentences, one a line; needs --target-file.\n"
   "Default: the gettext catalogs of --mo-dir (English msgid -> German msgstr)"},
  {nullptr, "target-file", nullptr, "FILE", Scope::kFixed, "", "",
   "target sentences, line-aligned with --source-file"},
  {nullptr, "mo-dir", nullptr, "DIR", Scope::kFixed,
   "/usr/share/locale/de/LC_MESSAGES", "/usr/share/locale/de/LC_MESSAGES",
   "directory whose *.mo catalogs form the corpus when no --source-file is given"},
  {nullptr, "vocab-size", nullptr, "N", Scope::kFixed, "4000", "8000",
   "byte-level BPE vocabulary (>= 260), learned on the training split"},
  {nullptr, "max-len", nullptr, "N", Scope::kFixed, "128", "128",
   "longest sentence in tokens, eos included (longer pairs are skipped); the model's\n"
   "max_seq_len and the cap on decoded length"},
  {nullptr, "max-tokens", nullptr, "N", Scope::kFixed, "1024", "8192",
   "batch budget: batch size x padded length (source and target); the model's\n"
   "max_batch_tokens"},
  {nullptr, "seed", nullptr, "N", Scope::kFixed, "1", "1",
   "seed of parameter initialisation, dropout and batch order"},

  {"Model", "arch", "preset", "NAME", Scope::kFixed, "transformer-tiny", "transformer-base",
   "transformer-tiny (2+2 layers, 128/512, 4 heads), transformer-base (6+6, 512/2048, 8),\n"
   "transformer-big (6+6, 1024/4096, 16); fairseq's transformer_wmt_en_de and\n"
   "transformer_vaswani_wmt_en_de_big are accepted as base and big"},
  {nullptr, "dtype", nullptr, "fp32|fp16|bf16", Scope::kFixed, "fp32", "fp16",
   "working precision (fp16 trains with dynamic loss scaling; fp16/bf16 need a GPU)"},
  {nullptr, "encoder-layers", nullptr, "N", Scope::kFixed, "", "", "override the preset"},
  {nullptr, "decoder-layers", nullptr, "N", Scope::kFixed, "", "", "override the preset"},
  {nullptr, "embed-dim", nullptr, "N", Scope::kFixed, "", "",
   "model width d_model (encoder and decoder); override the preset"},
  {nullptr, "ffn-embed-dim", nullptr, "N", Scope::kFixed, "", "", "override the preset"},
  {nullptr, "attention-heads", nullptr, "N", Scope::kFixed, "", "", "override the preset"},
  {nullptr, "dropout", nullptr, "P", Scope::kSaved, "", "",
   "residual dropout (default: the preset's, 0.1)"},
  {nullptr, "attention-dropout", nullptr, "P", Scope::kSaved, "", "",
   "dropout on attention probabilities (default: the preset's)"},
  {nullptr, "activation-dropout", nullptr, "P", Scope::kSaved, "", "",
   "dropout after the FFN activation (default: the preset's)"},
  {nullptr, "label-smoothing", nullptr, "EPS", Scope::kSaved, "0.1", "0.1",
   "label-smoothed cross-entropy epsilon"},

  {"Optimisation", "optimizer", nullptr, "adam|adamw", Scope::kSaved, "adam", "adam",
   "adam: weight decay as L2 on the gradient; adamw: decoupled weight decay"},
  {nullptr, "lr", nullptr, "LR", Scope::kSaved, "2e-3", "7e-4", "peak learning rate"},
  {nullptr, "adam-betas", nullptr, "B1,B2", Scope::kSaved, "0.9,0.98", "0.9,0.98",
   "Adam betas (\"(0.9, 0.98)\" is accepted too)"},
  {nullptr, "adam-eps", nullptr, "EPS", Scope::kSaved, "1e-8", "1e-8", "Adam epsilon"},
  {nullptr, "weight-decay", nullptr, "WD", Scope::kSaved, "0", "0", "weight decay"},
  {nullptr, "clip-norm", nullptr, "NORM", Scope::kSaved, "0", "0",
   "clip the global gradient norm to NORM (0 = off)"},
  {nullptr, "lr-scheduler", nullptr, "NAME", Scope::kSaved, "inverse_sqrt", "inverse_sqrt",
   "inverse_sqrt (warmup, then lr * sqrt(warmup / update)), cosine or linear (warmup,\n"
   "then decay to --min-lr at --max-updates), fixed"},
  {nullptr, "warmup-updates", nullptr, "N", Scope::kSaved, "200", "1000",
   "linear warmup from --warmup-init-lr to --lr over N updates"},
  {nullptr, "warmup-init-lr", nullptr, "LR", Scope::kSaved, "1e-7", "1e-7",
   "learning rate at update 0"},
  {nullptr, "min-lr", nullptr, "LR", Scope::kSaved, "0", "0",
   "end of the cosine/linear decay"},
  {nullptr, "update-freq", nullptr, "N", Scope::kSaved, "1", "1",
   "accumulate the gradients of N batches per update"},
  {nullptr, "max-updates", "max-update", "N", Scope::kSaved, "1200", "3000",
   "stop after N updates in all (a resumed run counts the earlier ones); 0 = no limit"},
  {nullptr, "max-epoch", nullptr, "N", Scope::kSaved, "0", "0",
   "stop after N passes over the training split; 0 = no limit"},
  {nullptr, "validate-interval", nullptr, "N", Scope::kSaved, "300", "500",
   "validation loss every N updates (and always at the end); 0 = only at the end"},
  {nullptr, "log-interval", nullptr, "N", Scope::kSaved, "100", "100",
   "when stderr is not a terminal, a progress line every N updates"},

  {"Run", "device", nullptr, "auto|cpu|cuda", Scope::kRun, "auto", "auto",
   "auto: the first GPU when there is one, else the CPU"},
  {nullptr, "save-dir", nullptr, "DIR", Scope::kRun, "checkpoints", "checkpoints",
   "where checkpoint_last.lsck, checkpoint_best.lsck, the tokenizer (tokenizer.bpe) and\n"
   "the run file (train_config.txt) go"},
  {nullptr, "resume", nullptr, nullptr, Scope::kRun, "", "",
   "continue from DIR/checkpoint_last.lsck: the model, tokenizer, data and position in\n"
   "the epoch come from DIR; --max-updates still counts from the first update"},
  {nullptr, "time-limit", nullptr, "SECONDS", Scope::kRun, "0", "0",
   "stop training after this much wall-clock training time (0 = none); validation,\n"
   "test decoding and saving still follow"},
  {nullptr, "max-len-a", nullptr, "A", Scope::kRun, "1.5", "1.5",
   "test decoding stops after A * source length + B tokens (capped by --max-len)"},
  {nullptr, "max-len-b", nullptr, "B", Scope::kRun, "10", "10", "see --max-len-a"},
  {nullptr, "print-examples", nullptr, "N", Scope::kRun, "3", "3",
   "print N (source, reference, hypothesis) triples of the test split"},
  {nullptr, "quiet", nullptr, nullptr, Scope::kRun, "", "",
   "no progress bar and no per-interval lines; results are still printed"},
  {nullptr, "json", nullptr, nullptr, Scope::kRun, "", "",
   "print one JSON object with the final summary on stdout (the log goes to stderr)"},
  {nullptr, "recompute-layer-norm", nullptr, nullptr, Scope::kRun, "", "",
   "pre-LN models (transformer-tiny): recompute each block's LayerNorm output in backward\n"
   "instead of saving it (less activation memory, the same results; ignored for post-LN);\n"
   "the default"},
  {nullptr, "no-recompute-layer-norm", nullptr, nullptr, Scope::kRun, "", "",
   "pre-LN models: save each block's LayerNorm output for backward instead (more activation\n"
   "memory, slightly faster)"},
  {nullptr, "layer-norm-backward-from-output", nullptr, nullptr, Scope::kRun, "", "",
   "pre- and post-LN models: every LayerNorm backward recovers its normalized input from\n"
   "its output, so LayerNorm inputs are not kept for backward (less activation memory, no\n"
   "extra work; gradients differ by rounding); replaces --recompute-layer-norm"},
  {nullptr, "gemm-autotune", nullptr, nullptr, Scope::kRun, "", "",
   "GPU: the first use of each GEMM shape times cuBLASLt's candidate algorithms and keeps\n"
   "the fastest (results may then differ in rounding from run to run; the CPU ignores it)"},
};
// clang-format on

const char* const kIntro =
    "usage: ls-train train [options]\n\n"
    "Trains an English->German Transformer with libls_train (public C API only): reads the\n"
    "corpus, splits it deterministically into train/valid/test, learns a byte-level BPE on the\n"
    "training split, trains with ls_trainer_step on token-budget batches shuffled per epoch,\n"
    "reports the validation loss, greedy-decodes the test split and scores it with BLEU\n"
    "(sacreBLEU's 13a tokenisation), then saves a checkpoint that --resume continues.\n\n"
    "Losses are label-smoothed cross-entropy per target token in bits (base 2, as fairseq\n"
    "logs them); nll is the plain negative log-likelihood, ppl = 2^nll. tok/s counts target\n"
    "tokens.\n\n"
    "Defaults depend on the device: where a first value differs from the GPU one, the GPU's\n"
    "is given as \"GPU: ...\".\n";

const char* const kOutro =
    "\nExit status: 0 done; 1 a library call or the data failed (the message names the call,\n"
    "the status and ls_last_error()); 2 a usage error; 130 interrupted (SIGINT/SIGTERM: the\n"
    "current update finishes and a checkpoint is saved first).\n";

void print_help() {
  std::printf("%s", kIntro);
  for (const OptionSpec& o : kOptions) {
    if (o.section) std::printf("\n%s:\n", o.section);
    std::string head = std::string("  --") + o.name;
    if (o.meta) head += std::string(" ") + o.meta;
    if (o.alias) head += std::string(", --") + o.alias;
    std::string help = o.help;
    std::string cpu = o.cpu_default, gpu = o.gpu_default;
    if (!cpu.empty()) {
      help += " [default: " + cpu;
      if (gpu != cpu) help += "; GPU: " + gpu;
      help += "]";
    }
    // Re-flowed to 70 columns after a 30-column option column.
    for (char& c : help)
      if (c == '\n') c = ' ';
    std::printf("%-30s", head.c_str());
    if (head.size() >= 30) std::printf("\n%-30s", "");
    size_t column = 0, start = 0;
    while (start < help.size()) {
      size_t end = help.find(' ', start);
      if (end == std::string::npos) end = help.size();
      std::string word = help.substr(start, end - start);
      if (column > 0 && column + 1 + word.size() > 70) {
        std::printf("\n%-30s", "");
        column = 0;
      }
      if (column > 0) {
        std::putchar(' ');
        ++column;
      }
      std::fputs(word.c_str(), stdout);
      column += word.size();
      start = end + 1;
    }
    std::putchar('\n');
  }
  std::printf("  --help                      this text\n%s", kOutro);
}

const OptionSpec* find_spec(const std::string& name) {
  for (const OptionSpec& o : kOptions)
    if (name == o.name) return &o;
  return nullptr;
}

int64_t to_int(const std::string& name, const std::string& v, int64_t lo, int64_t hi) {
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE)
    throw UsageError("--" + name + " expects an integer, got '" + v + "'");
  if (x < lo || x > hi)
    throw UsageError("--" + name + " must be between " + std::to_string(lo) + " and " +
                     std::to_string(hi) + ", got " + v);
  return x;
}

double to_double(const std::string& name, const std::string& v, double lo, double hi) {
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x))
    throw UsageError("--" + name + " expects a number, got '" + v + "'");
  if (x < lo || x > hi) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), "--%s must be between %g and %g, got %s", name.c_str(), lo, hi,
                  v.c_str());
    throw UsageError(buf);
  }
  return x;
}

// Two spellings of one value ("1e-3" and "0.001") compare equal.
bool same_value(const std::string& a, const std::string& b) {
  if (a == b) return true;
  char *ea = nullptr, *eb = nullptr;
  double x = std::strtod(a.c_str(), &ea), y = std::strtod(b.c_str(), &eb);
  return !a.empty() && !b.empty() && *ea == '\0' && *eb == '\0' && x == y;
}

ls_dtype parse_dtype(const std::string& v) {
  if (v == "fp32") return LS_DTYPE_FP32;
  if (v == "fp16") return LS_DTYPE_FP16;
  if (v == "bf16") return LS_DTYPE_BF16;
  throw UsageError("--dtype expects fp32, fp16 or bf16, got '" + v + "'");
}

std::string canonical_arch(const std::string& v) {
  if (v == "transformer" || v == "transformer_wmt_en_de" || v == "transformer-base")
    return "transformer-base";
  if (v == "transformer_vaswani_wmt_en_de_big" || v == "transformer_wmt_en_de_big" ||
      v == "transformer-big")
    return "transformer-big";
  if (v == "transformer-tiny" || v == "transformer_tiny") return "transformer-tiny";
  if (v == "gpt2-small")
    throw UsageError(
        "--arch gpt2-small is decoder-only; translation needs an encoder-decoder "
        "preset (transformer-tiny, transformer-base, transformer-big)");
  throw UsageError("--arch: unknown preset '" + v +
                   "' (transformer-tiny, transformer-base, transformer-big)");
}

void parse_betas(const std::string& v, double* b1, double* b2) {
  std::string s;
  for (char c : v)
    if (c != '(' && c != ')' && c != ' ') s += c;
  size_t comma = s.find(',');
  if (comma == std::string::npos)
    throw UsageError("--adam-betas expects B1,B2 (e.g. 0.9,0.98), got '" + v + "'");
  *b1 = to_double("adam-betas", s.substr(0, comma), 0, 0.999999);
  *b2 = to_double("adam-betas", s.substr(comma + 1), 0, 0.999999);
}

// A model size: empty means "the preset's".
int32_t model_dim(const KeyValues& v, const char* name) {
  const std::string& s = v.at(name);
  return s.empty() ? 0 : static_cast<int32_t>(to_int(name, s, 1, 1 << 20));
}
double probability(const KeyValues& v, const char* name) {
  const std::string& s = v.at(name);
  return s.empty() ? -1 : to_double(name, s, 0, 0.95);
}

}  // namespace

const char* dtype_label(ls_dtype dtype) {
  switch (dtype) {
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

std::string run_file_path(const std::string& save_dir) {
  return (std::filesystem::path(save_dir) / "train_config.txt").string();
}

KeyValues read_run_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read the run file " + path);
  std::string line;
  if (!std::getline(in, line) || line != "ls-train-config 1")
    throw std::runtime_error(path + " is not an ls-train run file (first line: '" + line + "')");
  KeyValues values;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    size_t space = line.find(' ');
    if (space == std::string::npos || space == 0)
      throw std::runtime_error(path + ": malformed line '" + line + "'");
    values[line.substr(0, space)] = line.substr(space + 1);
  }
  return values;
}

void write_run_file(const std::string& path, const KeyValues& values) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + tmp);
    out << "ls-train-config 1\n";
    for (const auto& kv : values) {
      if (kv.second.find('\n') != std::string::npos)
        throw std::runtime_error("run file value of '" + kv.first + "' holds a line break");
      out << kv.first << ' ' << kv.second << '\n';
    }
    out.flush();
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + ec.message());
}

bool parse_train_options(int argc, char** argv, TrainOptions* out) {
  Args args(argc, argv, 2);
  if (args.flag("--help") || args.flag("-h")) {
    print_help();
    return false;
  }
  TrainOptions o;
  o.resume = args.flag("--resume");
  o.quiet = args.flag("--quiet");
  o.json = args.flag("--json");
  const bool recompute_ln = args.flag("--recompute-layer-norm");
  const bool keep_ln = args.flag("--no-recompute-layer-norm");
  o.layer_norm_backward_from_output = args.flag("--layer-norm-backward-from-output");
  if (int(recompute_ln) + int(keep_ln) + int(o.layer_norm_backward_from_output) > 1)
    throw UsageError(
        "--recompute-layer-norm, --no-recompute-layer-norm and "
        "--layer-norm-backward-from-output exclude each other");
  o.recompute_layer_norm = !keep_ln && !o.layer_norm_backward_from_output;
  o.gemm_autotune = args.flag("--gemm-autotune");

  // The device decides the defaults, so it comes first.
  std::string device = args.str("--device", "auto");
  if (device == "auto")
    o.device = LS_DEVICE_AUTO;
  else if (device == "cpu")
    o.device = LS_DEVICE_CPU;
  else if (device == "cuda")
    o.device = LS_DEVICE_CUDA;
  else
    throw UsageError("--device expects auto, cpu or cuda, got '" + device + "'");
  int32_t gpus = 0;
  if (o.device != LS_DEVICE_CPU) check(ls_cuda_device_count(&gpus), "ls_cuda_device_count");
  o.on_gpu = o.device == LS_DEVICE_CUDA || (o.device == LS_DEVICE_AUTO && gpus > 0);

  KeyValues v;
  for (const OptionSpec& s : kOptions)
    if (s.meta) v[s.name] = o.on_gpu ? s.gpu_default : s.cpu_default;
  v["device"] = device;

  o.save_dir = args.str("--save-dir", v["save-dir"]);
  if (o.resume) {
    o.resumed_file = read_run_file(run_file_path(o.save_dir));
    for (const auto& kv : o.resumed_file) {
      const OptionSpec* s = find_spec(kv.first);
      if (s && s->scope != Scope::kRun) v[kv.first] = kv.second;
    }
  }
  for (const OptionSpec& s : kOptions) {
    std::string name = s.name;
    if (!s.meta || name == "device" || name == "save-dir") continue;  // already read
    std::string flag = std::string("--") + s.name;
    std::string alias = s.alias ? std::string("--") + s.alias : std::string();
    bool has_name = args.has(flag), has_alias = !alias.empty() && args.has(alias);
    if (has_name && has_alias) throw UsageError(flag + " and " + alias + " are one option");
    if (!has_name && !has_alias) continue;
    std::string given = args.str(has_name ? flag : alias, "");
    if (name == "arch") given = canonical_arch(given);
    if (o.resume && s.scope == Scope::kFixed) {
      auto saved = o.resumed_file.find(s.name);
      std::string before = saved == o.resumed_file.end() ? "" : saved->second;
      if (!same_value(given, before))
        throw UsageError(flag + " cannot change on --resume: " + o.save_dir + " was trained with " +
                         flag + " '" + before + "'");
    }
    v[s.name] = given;
  }
  args.finish();

  // Typed values and their checks.
  const int64_t kMaxI32 = std::numeric_limits<int32_t>::max();
  o.source_file = v["source-file"];
  o.target_file = v["target-file"];
  if (o.source_file.empty() != o.target_file.empty())
    throw UsageError("--source-file and --target-file go together");
  o.mo_dir = v["mo-dir"];
  o.vocab_size = to_int("vocab-size", v["vocab-size"], 260, kMaxI32);
  o.max_len = to_int("max-len", v["max-len"], 2, 1 << 16);
  o.max_tokens = to_int("max-tokens", v["max-tokens"], 2, kMaxI32);
  o.seed = static_cast<uint64_t>(to_int("seed", v["seed"], 0, std::numeric_limits<int64_t>::max()));

  o.arch = canonical_arch(v["arch"]);
  v["arch"] = o.arch;
  o.dtype = parse_dtype(v["dtype"]);
  o.encoder_layers = model_dim(v, "encoder-layers");
  o.decoder_layers = model_dim(v, "decoder-layers");
  o.embed_dim = model_dim(v, "embed-dim");
  o.ffn_embed_dim = model_dim(v, "ffn-embed-dim");
  o.attention_heads = model_dim(v, "attention-heads");
  o.dropout = probability(v, "dropout");
  o.attention_dropout = probability(v, "attention-dropout");
  o.activation_dropout = probability(v, "activation-dropout");
  o.label_smoothing = to_double("label-smoothing", v["label-smoothing"], 0, 0.99);

  if (v["optimizer"] == "adam")
    o.optimizer = LS_OPTIMIZER_ADAM;
  else if (v["optimizer"] == "adamw")
    o.optimizer = LS_OPTIMIZER_ADAMW;
  else
    throw UsageError("--optimizer expects adam or adamw, got '" + v["optimizer"] + "'");
  o.lr = to_double("lr", v["lr"], 0, 10);
  parse_betas(v["adam-betas"], &o.beta1, &o.beta2);
  o.adam_eps = to_double("adam-eps", v["adam-eps"], 0, 1);
  o.weight_decay = to_double("weight-decay", v["weight-decay"], 0, 10);
  o.clip_norm = to_double("clip-norm", v["clip-norm"], 0, 1e9);
  o.lr_scheduler = v["lr-scheduler"];
  if (o.lr_scheduler == "inverse_sqrt")
    o.lr_schedule = LS_LR_INVERSE_SQRT;
  else if (o.lr_scheduler == "cosine")
    o.lr_schedule = LS_LR_COSINE;
  else if (o.lr_scheduler == "linear" || o.lr_scheduler == "polynomial_decay")
    o.lr_schedule = LS_LR_LINEAR;
  else if (o.lr_scheduler == "fixed")
    o.lr_schedule = LS_LR_CONSTANT;
  else
    throw UsageError("--lr-scheduler expects inverse_sqrt, cosine, linear or fixed, got '" +
                     o.lr_scheduler + "'");
  o.warmup_updates = to_int("warmup-updates", v["warmup-updates"], 0, kMaxI32);
  o.warmup_init_lr = to_double("warmup-init-lr", v["warmup-init-lr"], 0, 10);
  o.min_lr = to_double("min-lr", v["min-lr"], 0, 10);
  o.update_freq = to_int("update-freq", v["update-freq"], 1, 1 << 16);
  o.max_updates = to_int("max-updates", v["max-updates"], 0, std::numeric_limits<int64_t>::max());
  o.max_epoch = to_int("max-epoch", v["max-epoch"], 0, 1 << 30);
  if (o.max_updates == 0 && o.max_epoch == 0)
    throw UsageError("--max-updates 0 needs --max-epoch: training would never stop");
  if ((o.lr_schedule == LS_LR_COSINE || o.lr_schedule == LS_LR_LINEAR) && o.max_updates == 0)
    throw UsageError("--lr-scheduler " + o.lr_scheduler +
                     " decays to --min-lr at --max-updates, "
                     "which must be set");
  o.validate_interval = to_int("validate-interval", v["validate-interval"], 0, kMaxI32);
  o.log_interval = to_int("log-interval", v["log-interval"], 1, kMaxI32);

  o.time_limit = to_double("time-limit", v["time-limit"], 0, 1e9);
  o.max_len_a = to_double("max-len-a", v["max-len-a"], 0, 100);
  o.max_len_b = to_int("max-len-b", v["max-len-b"], 0, 1 << 16);
  o.print_examples = to_int("print-examples", v["print-examples"], 0, 1 << 20);

  // Paths are recorded absolute so a resumed run finds them from any directory.
  for (const char* key : {"source-file", "target-file", "mo-dir"}) {
    if (v[key].empty()) continue;
    std::error_code ec;
    auto abs = std::filesystem::absolute(v[key], ec);
    if (!ec) v[key] = abs.lexically_normal().string();
  }
  o.source_file = v["source-file"];
  o.target_file = v["target-file"];
  o.mo_dir = v["mo-dir"];
  for (const OptionSpec& s : kOptions)
    if (s.meta && s.scope != Scope::kRun) o.recorded[s.name] = v[s.name];
  *out = std::move(o);
  return true;
}

}  // namespace cli
