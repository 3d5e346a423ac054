// Whole training step on the GPU through the public C API: target tokens per second and the
// arena size, for Transformer-base and -big (pre-LN as nn.Transformer(norm_first=True), dropout
// 0.1, shared 32768 vocabulary), as in the PyTorch comparison. Prints one line per config and,
// after it, one machine-readable line "JSON {...}"; asserts nothing.
//
//   bench_model_step [steps] [preset...]
//       the default matrix (what scripts/device_ci.sh runs): per preset (default base and big)
//       fp16 sync/async/graph and bf16 async at 128 x 64, then base and big fp16 async at 64 x 64
//       and 256 x 64; 20 timed steps.
//   bench_model_step [--preset NAME]... [--batch N] [--len L] [--dtype fp16|bf16|fp32]...
//                    [--mode sync|async|graph]... [--steps N] [--breakdown]
//       any option: every preset x dtype x mode at batch x len (defaults: base and big, fp16,
//       async, 128 x 64, 20 steps). Presets by full name or base / big / tiny; --dtype and
//       --mode also take comma lists.
//
// --breakdown: after the timed steps, one more steady-state step with a TimedOps decorator
// (bench/cuda/timed_ops.h) in front of the CUDA backend: the device time per op label, then
// grouped (GEMM by role, attention, LayerNorm, dropout fusions, criterion, optimizer,
// embedding, other) with ms and share, and the time the device sat between kernels. The
// decorator is put in through the internal ls::Context::wrap_ops on the context behind the C
// handle (capi/handles.h), before the model is created, so the model and the trainer call
// through it. Not with --mode graph: a replay is one call to TimedOps.
//
// --drop GROUPS (an attribution run; comma list of the breakdown's group keys, or "rest" for
// every group but the GEMMs): the warm-up steps run in full, then the timed steps run without
// the calls of those groups (TimedOps::set_dropped), so the rate and the energy per step say
// what the step costs without them under the same power limit. The losses and the updates of
// such a run are meaningless; the line says so. Not with --mode graph or --breakdown.
// Caveat: the planner shares memory between buffers, so a dropped call's output holds whatever
// was last placed there, possibly another tensor's bytes read as fp16, i.e. non-finite values.
// Then the loss scale collapses and the trainer stops (drop "optimizer" too, so that no update
// or overflow check runs), and GEMMs fed NaNs draw less power: a run whose card is no longer
// power-capped, or whose energy falls by more than its groups' kernel time allows, is not an
// attribution. Dropping the optimizer, the criterion, the dropout fusions or every non-GEMM
// group ("rest") kept the card power-capped in the H200 runs (bench/RESULTS.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bench/cuda/nvml_energy.h"
#include "bench/cuda/timed_ops.h"
#include "capi/handles.h"
#include "ls_train.h"
#include "runtime/model.h"

namespace {

using ls::bench::TimedOps;

void die(const char* what) {
  std::fprintf(stderr, "%s failed: %s\n", what, ls_last_error());
  std::exit(1);
}

const char* dtype_name(ls_dtype dt) {
  return dt == LS_DTYPE_FP16 ? "fp16" : dt == LS_DTYPE_BF16 ? "bf16" : "fp32";
}

struct Config {
  std::string preset;
  ls_dtype dtype = LS_DTYPE_FP16;
  int batch = 128, len = 64;
  std::string mode = "async";
};

// ---- the breakdown's groups ----

// The breakdown's groups, in the order they are printed: a JSON key and a name.
struct GroupName {
  const char* key;
  const char* name;
};
constexpr GroupName kGroups[] = {
    {"gemm_fwd", "GEMM fwd"},
    {"gemm_dgrad", "GEMM dgrad"},
    {"gemm_wgrad", "GEMM wgrad"},
    {"gemm_batched", "GEMM batched (attention QK^T, PV)"},
    {"gemm_other", "GEMM other"},
    {"attention", "attention (softmax, heads, fused)"},
    {"layernorm", "LayerNorm"},
    {"dropout", "dropout fusions"},
    {"criterion", "criterion (cross-entropy)"},
    {"optimizer", "optimizer"},
    {"embedding", "embedding"},
    {"other", "other"},
};

// The group (key) of a TimedOps label. GEMMs by role (TimedOps labels them "gemm
// <role><epilogue>"; "batched" are the per-head attention products), so the output
// projection's GEMMs count under GEMM, not under the criterion; the rest by the op's name.
const char* group_of(const std::string& label) {
  auto has = [&](const char* s) { return label.find(s) != std::string::npos; };
  auto starts = [&](const char* s) { return label.rfind(s, 0) == 0; };
  if (starts("gemm batched")) return "gemm_batched";
  if (starts("gemm fwd")) return "gemm_fwd";
  if (starts("gemm dgrad")) return "gemm_dgrad";
  if (starts("gemm wgrad")) return "gemm_wgrad";
  if (starts("gemm")) return "gemm_other";
  if (has("attention") || has("softmax") || has("split_heads") || has("merge_heads"))
    return "attention";
  if (has("layernorm")) return "layernorm";
  if (has("dropout")) return "dropout";
  if (starts("cross_entropy")) return "criterion";
  if (has("sum_squares") || has("update_control") || has("adam")) return "optimizer";
  if (has("embedding")) return "embedding";
  return "other";
}

struct Group {
  std::string key, name;
  double ms = 0;
  double calls = 0;
};

// The groups that ran, in kGroups order.
std::vector<Group> group_report(const TimedOps::Report& r) {
  std::vector<Group> groups;
  for (const GroupName& g : kGroups) groups.push_back(Group{g.key, g.name});
  for (const TimedOps::Row& row : r.rows) {
    const std::string key = group_of(row.label);
    for (Group& g : groups)
      if (g.key == key) {
        g.ms += row.ms;
        g.calls += static_cast<double>(row.calls);
      }
  }
  groups.erase(
      std::remove_if(groups.begin(), groups.end(), [](const Group& g) { return g.calls == 0; }),
      groups.end());
  return groups;
}

std::string format_groups(const TimedOps::Report& r, const std::vector<Group>& groups) {
  std::string out;
  char line[256];
  const double kernels = r.timed_ms > 0 ? r.timed_ms : 1;
  const double span = r.span_ms > 0 ? r.span_ms : 1;
  std::snprintf(line, sizeof line, "  %-36s %7s %10s %10s %9s\n", "group", "calls", "ms/step",
                "kernels", "span");
  out += line;
  double gemm = 0;
  for (const Group& g : groups) {
    if (g.key.rfind("gemm", 0) == 0) gemm += g.ms;
    std::snprintf(line, sizeof line, "  %-36s %7.0f %10.4f %9.1f%% %8.1f%%\n", g.name.c_str(),
                  g.calls, g.ms, 100 * g.ms / kernels, 100 * g.ms / span);
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-36s %7s %10.4f %9.1f%% %8.1f%%\n", "(all GEMMs)", "", gemm,
                100 * gemm / kernels, 100 * gemm / span);
  out += line;
  std::snprintf(line, sizeof line, "  %-36s %7lld %10.4f %9.1f%% %8.1f%%\n", "kernels (sum)",
                static_cast<long long>(r.calls), r.timed_ms, 100.0, 100 * r.timed_ms / span);
  out += line;
  std::snprintf(line, sizeof line, "  %-36s %7s %10.4f %9s %8.1f%%\n", "gaps between kernels", "",
                r.gap_ms(), "", 100 * r.gap_ms() / span);
  out += line;
  std::snprintf(line, sizeof line, "  %-36s %7s %10.4f %9s %8.1f%%\n",
                "span (first kernel to last)", "", r.span_ms, "", 100.0);
  out += line;
  return out;
}

// ---- one config ----

// mode: "sync" reads the step result back every step (a host round trip per step), "async"
// passes no result (nothing read back until the end), "graph" is async with the step captured
// as a CUDA graph (trainer option cuda_graph).
// The models keep no pre-LN LayerNorm output for backward (ls_model_config.recompute_layer_norm,
// the library's default: the LayerNorm backward writes it again); --no-recompute-layer-norm
// keeps them (more memory, one store less per block).
bool g_recompute_ln = true;
// --layer-norm-backward-from-output: every LayerNorm backward (pre- and post-LN) recovers xhat
// from its output, so the models keep no LayerNorm input for backward
// (ls_model_config.layer_norm_backward_from_output): less memory at no extra work.
bool g_ln_from_output = false;
// --gemm-autotune: the context times cuBLASLt's candidate algorithms on the first use of each
// GEMM shape and keeps the fastest (ls_context_options.gemm_autotune).
bool g_gemm_autotune = false;
// --criterion-rows N: target rows per criterion chunk (the logits buffer holds N x vocab) instead
// of the library's rule (64 MiB of logits: 1024 rows at vocab 32768 in fp16); a multiple of 8.
int64_t g_criterion_rows = 0;
// --no-criterion-scratch: the criterion's logits stay in the planned buffer on every micro-batch
// (TransformerGraph::criterion_scratch off), as before the scratch existed: for A/B runs.
bool g_criterion_scratch = true;
// --no-grad-overwrite: a fresh pass zeroes the whole gradient buffer and every weight-gradient
// GEMM accumulates (TransformerGraph::overwrite_weight_grads off): for A/B runs.
bool g_grad_overwrite = true;
// --deterministic: the trainer's fixed-order reductions (ls_trainer_config.deterministic).
bool g_deterministic = false;
// --drop GROUPS: the breakdown groups (keys) an attribution run leaves out of the timed steps.
std::vector<std::string> g_drop_groups;

bool dropped_group(const std::string& group) {
  for (const std::string& g : g_drop_groups)
    if (g == group || (g == "rest" && group.rfind("gemm", 0) != 0)) return true;
  return false;
}

// The GPU's energy counter (NVML, opened once); the timed steps' joules are printed where it
// is available.
const ls::bench::NvmlEnergy& energy_counter() {
  static const ls::bench::NvmlEnergy counter(0);
  return counter;
}

void bench(const Config& cfg, int steps, bool breakdown) {
  const bool sync = cfg.mode == "sync", graph = cfg.mode == "graph";
  const int batch = cfg.batch, len = cfg.len;
  ls_context* ctx = nullptr;
  ls_context_options o;
  ls_context_options_init(&o);
  o.device = LS_DEVICE_CUDA;
  o.gemm_autotune = g_gemm_autotune ? 1 : 0;
  if (ls_context_create(&o, &ctx) != LS_OK) die("ls_context_create");
  // The decorator goes in before the model exists: the model and trainer hold on to ops().
  TimedOps* timed = nullptr;
  const bool drop = !g_drop_groups.empty();
  if ((breakdown || drop) && !graph) {
    ls::Context& c = *ctx->impl;
    c.wrap_ops([&](ls::Ops& inner) {
      auto t = std::make_unique<TimedOps>(inner, c.stream(), 16384);
      timed = t.get();
      return std::unique_ptr<ls::Ops>(std::move(t));
    });
  }
  ls_model_config c;
  ls_model_config_init(&c);
  if (ls_model_config_preset(cfg.preset.c_str(), &c) != LS_OK) die("preset");
  c.pre_layer_norm = 1;  // as nn.Transformer(norm_first=True)
  c.recompute_layer_norm = g_recompute_ln ? 1 : 0;
  c.layer_norm_backward_from_output = g_ln_from_output ? 1 : 0;
  // nn.Transformer(dropout=0.1) drops at every site: residual branches and embeddings, the
  // attention probabilities and the FFN activation. The same here (fairseq's presets would
  // leave the last two at 0).
  c.dropout = 0.1f;
  c.attention_dropout = 0.1f;
  c.activation_dropout = 0.1f;
  c.dtype = cfg.dtype;
  c.max_seq_len = len;
  c.max_batch_tokens = batch * len;
  ls_model* model = nullptr;
  const int64_t previous_rows = ls::TransformerGraph::set_criterion_rows_override(g_criterion_rows);
  const bool previous_scratch =
      ls::TransformerGraph::set_criterion_scratch_enabled(g_criterion_scratch);
  const bool previous_overwrite =
      ls::TransformerGraph::set_grad_overwrite_enabled(g_grad_overwrite);
  const ls_status created = ls_model_create(ctx, &c, &model);
  ls::TransformerGraph::set_criterion_rows_override(previous_rows);
  ls::TransformerGraph::set_criterion_scratch_enabled(previous_scratch);
  ls::TransformerGraph::set_grad_overwrite_enabled(previous_overwrite);
  if (created != LS_OK) die("ls_model_create");
  ls_trainer_config tc;
  ls_trainer_config_init(&tc);
  tc.beta2 = 0.98f;
  tc.cuda_graph = graph ? 1 : 0;
  tc.deterministic = g_deterministic ? 1 : 0;
  ls_trainer* tr = nullptr;
  if (ls_trainer_create(model, &tc, &tr) != LS_OK) die("ls_trainer_create");
  std::vector<int32_t> src(batch * len), prev(batch * len), tgt(batch * len);
  unsigned s = 1;
  for (size_t i = 0; i < src.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    src[i] = 4 + (s >> 8) % (c.src_vocab_size - 4);
    tgt[i] = 4 + (s >> 4) % (c.tgt_vocab_size - 4);
    prev[i] = i % len == 0 ? 2 : tgt[i - 1];
  }
  ls_batch b;
  ls_batch_init(&b);
  b.batch_size = batch;
  b.src_len = len;
  b.tgt_len = len;
  b.src_tokens = src.data();
  b.prev_output_tokens = prev.data();
  b.target = tgt.data();
  ls_step_result r;
  ls_step_result_init(&r);
  // Warm-up: 5 steps, then on (at most 40 more) until the loss scale has held for 3 steps in a
  // row, as the PyTorch benchmark does (fp16 starts at 65536 and overflows for several steps):
  // the timed steps are then real updates, not skipped ones, and in an attribution run the
  // buffers that the dropped calls leave as they were hold a clean step's values.
  int warmup = 0;
  for (int held = 0; warmup < 5 || (held < 3 && warmup < 45); ++warmup) {
    const double scale = warmup > 0 ? r.loss_scale : -1.0;
    if (ls_trainer_step(tr, &b, &r) != LS_OK) die("ls_trainer_step");
    held = r.loss_scale == scale ? held + 1 : 0;
  }
  ls_context_synchronize(ctx);
  const ls::bench::NvmlEnergy& nvml = energy_counter();
  if (drop) {  // timed exists: --drop excludes graph mode
    timed->set_dropped([](const std::string& label) { return dropped_group(group_of(label)); });
    timed->set_dropping(true);
  }
  const double j0 = nvml.joules();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i)
    if (ls_trainer_step(tr, &b, sync || i + 1 == steps ? &r : nullptr) != LS_OK)
      die("ls_trainer_step");
  ls_context_synchronize(ctx);
  if (drop) timed->set_dropping(false);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int clock_end = nvml.sm_clock_mhz();
  const double joules = j0 >= 0 ? nvml.joules() - j0 : -1;
  ls_memory_report rep;
  ls_memory_report_init(&rep);
  ls_model_memory_report(model, &rep);
  const double ms_per_step = 1e3 * sec / steps;
  const ls::TransformerGraph& tg = model->impl->graph();
  char criterion[128];
  std::snprintf(criterion, sizeof(criterion), ", criterion %lld chunk(s)%s%s",
                static_cast<long long>(tg.last_criterion_chunks),
                tg.last_criterion_in_scratch ? " in the gradient buffer" : "",
                tg.overwrite_weight_grads ? ", weight gradients overwritten" : "");
  std::string dropped_note;
  for (const std::string& g : g_drop_groups) dropped_note += (dropped_note.empty() ? "" : ",") + g;
  const std::string suffix =
      std::string(criterion) + ", warm-up " + std::to_string(warmup) +
      (g_deterministic ? ", deterministic reductions" : "") +
      (drop ? ", DROPPED " + dropped_note + " (attribution run: not a training step)" : "");
  const double tokens_per_s = static_cast<double>(batch) * len * steps / sec;
  std::printf(
      "%-16s %s B=%d L=%d %-5s: %.2f ms/step, %.0f target tokens/s, arena %.2f GiB "
      "(planned %.2f GiB, lower bound %.2f GiB, persistent %.2f GiB), loss/token %.3f%s%s%s%s\n",
      cfg.preset.c_str(), dtype_name(cfg.dtype), batch, len, cfg.mode.c_str(), ms_per_step,
      tokens_per_s, rep.total_bytes / 1073741824.0, rep.planned_bytes / 1073741824.0,
      rep.lower_bound_bytes / 1073741824.0, rep.persistent_bytes / 1073741824.0, r.loss / r.tokens,
      g_recompute_ln ? "" : ", LayerNorm outputs kept",
      g_ln_from_output ? ", LayerNorm backward from output" : "",
      g_gemm_autotune ? ", GEMMs autotuned" : "", suffix.c_str());
  if (joules > 0)
    std::printf(
        "  energy (NVML): %.3f J/step, %.1f uJ/target token, %.0f W average, SM clock "
        "%d MHz at the end\n",
        joules / steps, 1e6 * joules / (static_cast<double>(batch) * len * steps), joules / sec,
        clock_end);

  std::ostringstream json;
  json.precision(10);
  json << "{\"preset\":\"" << cfg.preset << "\",\"dtype\":\"" << dtype_name(cfg.dtype)
       << "\",\"batch\":" << batch << ",\"len\":" << len << ",\"mode\":\"" << cfg.mode
       << "\",\"steps\":" << steps
       << ",\"recompute_layer_norm\":" << (g_recompute_ln && !g_ln_from_output ? 1 : 0)
       << ",\"layer_norm_backward_from_output\":" << (g_ln_from_output ? 1 : 0)
       << ",\"ms_per_step\":" << ms_per_step << ",\"tokens_per_s\":" << tokens_per_s
       << ",\"arena_bytes\":" << rep.total_bytes << ",\"planned_bytes\":" << rep.planned_bytes
       << ",\"lower_bound_bytes\":" << rep.lower_bound_bytes
       << ",\"persistent_bytes\":" << rep.persistent_bytes
       << ",\"gemm_autotune\":" << (g_gemm_autotune ? 1 : 0) << ",\"dropped\":\"" << dropped_note
       << "\""
       << ",\"loss_per_token\":" << (r.tokens > 0 ? r.loss / r.tokens : 0.0);
  if (joules > 0)
    json << ",\"joules_per_step\":" << joules / steps << ",\"average_watts\":" << joules / sec
         << ",\"sm_clock_mhz_end\":" << clock_end;

  if (breakdown && graph) {
    std::printf(
        "  breakdown: not with --mode graph (a replay is one call to TimedOps); run it "
        "with --mode async or sync\n");
  } else if (breakdown) {
    // One more steady-state step, every call between its own pair of events (which adds a
    // little host time per call; the device gaps below include any time the host fell behind).
    ls_context_synchronize(ctx);
    timed->reset();
    timed->set_enabled(true);
    const ls_status st = ls_trainer_step(tr, &b, sync ? &r : nullptr);
    timed->set_enabled(false);
    if (st != LS_OK) die("ls_trainer_step");
    const TimedOps::Report tr_rep = timed->report();
    timed->reset();
    const std::vector<Group> groups = group_report(tr_rep);
    std::printf(
        "  breakdown of one %s step (TimedOps: each kernel between its own pair of events; "
        "the batch's host-to-device copies come first and are not counted):\n%s",
        cfg.mode.c_str(), TimedOps::format(tr_rep, 1).c_str());
    std::printf(
        "  grouped (the output projection's GEMMs count under GEMM, the attention products "
        "under GEMM batched):\n%s\n",
        format_groups(tr_rep, groups).c_str());
    json << ",\"breakdown\":{\"span_ms\":" << tr_rep.span_ms
         << ",\"kernels_ms\":" << tr_rep.timed_ms << ",\"gap_ms\":" << tr_rep.gap_ms()
         << ",\"calls\":" << tr_rep.calls << ",\"groups_ms\":{";
    for (size_t i = 0; i < groups.size(); ++i)
      json << (i ? "," : "") << "\"" << groups[i].key << "\":" << groups[i].ms;
    json << "},\"ops_ms\":{";
    for (size_t i = 0; i < tr_rep.rows.size(); ++i)
      json << (i ? "," : "") << "\"" << tr_rep.rows[i].label << "\":" << tr_rep.rows[i].ms;
    json << "}}";
  }
  json << "}";
  std::printf("JSON %s\n", json.str().c_str());
  std::fflush(stdout);
  ls_trainer_destroy(tr);
  ls_model_destroy(model);
  ls_context_destroy(ctx);
}

// ---- arguments ----

const char* const kUsage =
    "usage: bench_model_step [steps] [preset...] [model option] [--gemm-autotune]\n"
    "       bench_model_step [--preset NAME]... [--batch N] [--len L] [--dtype fp16|bf16|fp32]...\n"
    "                        [--mode sync|async|graph]... [--steps N] [--breakdown]\n"
    "                        [--drop GROUPS] [model option] [--gemm-autotune]\n"
    "  model option: --no-recompute-layer-norm | --layer-norm-backward-from-output\n"
    "  --criterion-rows N: target rows per criterion chunk instead of the library's rule\n"
    "  --no-criterion-scratch: keep the criterion's logits out of the gradient buffer\n"
    "  --no-grad-overwrite: zero the whole gradient buffer, accumulate every weight gradient\n"
    "  --deterministic: the trainer's fixed-order reductions instead of atomics\n"
    "  --drop GROUPS: attribution run: the timed steps leave out the calls of these breakdown\n"
    "  groups (attention, layernorm, dropout, criterion, optimizer, embedding, other, gemm_fwd,\n"
    "  gemm_dgrad, gemm_wgrad, gemm_batched, gemm_other; rest = all but the GEMMs); not a\n"
    "  training step. Not with --mode graph or --breakdown\n"
    "  no option: the default matrix (fp16 sync/async/graph and bf16 async at 128 x 64 per\n"
    "  preset, then base and big fp16 async at 64 x 64 and 256 x 64). With any of the other\n"
    "  options: each preset x dtype x mode at --batch x --len (defaults: transformer-base and\n"
    "  -big, fp16, async, 128 x 64, 20 steps). --breakdown: the device time of one more step\n"
    "  per op and per group (not for graph mode). The two model options go with either usage:\n"
    "  --no-recompute-layer-norm keeps the pre-LN LayerNorm outputs for backward instead of\n"
    "  having the LayerNorm backward write them again (the library's default);\n"
    "  --layer-norm-backward-from-output makes every LayerNorm backward work from its output\n"
    "  and keep neither its input nor its output. --gemm-autotune (either usage) times\n"
    "  cuBLASLt's candidate algorithms on each GEMM shape's first use and keeps the fastest\n"
    "  (ls_context_options.gemm_autotune; the warm-up steps absorb the timing). Presets:\n"
    "  transformer-base|base, transformer-big|big, transformer-tiny|tiny, gpt2-small. --dtype\n"
    "  and --mode also take comma lists.\n";

struct UsageError {
  std::string what;
};

std::string preset_name(const std::string& s) {
  if (s == "base") return "transformer-base";
  if (s == "big") return "transformer-big";
  if (s == "tiny") return "transformer-tiny";
  return s;
}

int positive(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || x <= 0 || x > (1L << 30))
    throw UsageError{flag + " expects a positive integer, got '" + v + "'"};
  return static_cast<int>(x);
}

std::vector<std::string> split_commas(const std::string& v) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= v.size()) {
    size_t end = v.find(',', start);
    if (end == std::string::npos) end = v.size();
    if (end > start) out.push_back(v.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

ls_dtype parse_dtype(const std::string& v) {
  if (v == "fp16") return LS_DTYPE_FP16;
  if (v == "bf16") return LS_DTYPE_BF16;
  if (v == "fp32") return LS_DTYPE_FP32;
  throw UsageError{"--dtype expects fp16, bf16 or fp32, got '" + v + "'"};
}

std::string parse_mode(const std::string& v) {
  if (v == "sync" || v == "async" || v == "graph") return v;
  throw UsageError{"--mode expects sync, async or graph, got '" + v + "'"};
}

bool is_number(const char* s) {
  if (*s == '\0') return false;
  for (; *s; ++s)
    if (*s < '0' || *s > '9') return false;
  return true;
}

int run(int argc, char** argv) {
  int steps = 20;
  std::vector<std::string> presets;
  std::vector<ls_dtype> dtypes;
  std::vector<std::string> modes;
  int batch = 128, len = 64;
  bool options = false, breakdown = false;
  int positional = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError{a + " needs a value"};
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      return 0;
    } else if (a == "--preset") {
      presets.push_back(preset_name(value()));
      options = true;
    } else if (a == "--batch") {
      batch = positive(a, value());
      options = true;
    } else if (a == "--len") {
      len = positive(a, value());
      options = true;
    } else if (a == "--dtype") {
      for (const std::string& d : split_commas(value())) dtypes.push_back(parse_dtype(d));
      options = true;
    } else if (a == "--mode") {
      for (const std::string& m : split_commas(value())) modes.push_back(parse_mode(m));
      options = true;
    } else if (a == "--steps") {
      steps = positive(a, value());
      options = true;
    } else if (a == "--breakdown") {
      breakdown = true;
      options = true;
    } else if (a == "--drop") {
      for (const std::string& g : split_commas(value())) {
        bool known = g == "rest";
        for (const GroupName& k : kGroups) known = known || g == k.key;
        if (!known) throw UsageError{"--drop: unknown group '" + g + "'"};
        g_drop_groups.push_back(g);
      }
      if (g_drop_groups.empty()) throw UsageError{"--drop needs at least one group"};
      options = true;
    } else if (a == "--no-recompute-layer-norm") {  // model options: with either usage
      g_recompute_ln = false;
    } else if (a == "--recompute-layer-norm") {  // the default, accepted
      g_recompute_ln = true;
    } else if (a == "--layer-norm-backward-from-output") {
      g_ln_from_output = true;
    } else if (a == "--gemm-autotune") {  // a context option: with either usage
      g_gemm_autotune = true;
    } else if (a == "--no-criterion-scratch") {
      g_criterion_scratch = false;
    } else if (a == "--no-grad-overwrite") {
      g_grad_overwrite = false;
    } else if (a == "--deterministic") {
      g_deterministic = true;
    } else if (a == "--criterion-rows") {  // a planning knob: with either usage
      g_criterion_rows = positive(a, value());
      if (g_criterion_rows % 8 != 0) throw UsageError{"--criterion-rows must be a multiple of 8"};
    } else if (a.rfind("--", 0) == 0) {
      throw UsageError{"unknown option '" + a + "'"};
    } else if (positional == 0 && is_number(a.c_str())) {  // the old usage: [steps] [preset...]
      steps = positive("steps", a);
      ++positional;
    } else {
      presets.push_back(preset_name(a));
      ++positional;
    }
  }
  if (options && positional > 0)
    throw UsageError{"positional [steps] [preset...] and --options do not mix"};
  if (!g_drop_groups.empty() &&
      (breakdown || std::find(modes.begin(), modes.end(), "graph") != modes.end()))
    throw UsageError{"--drop goes with --mode sync or async, without --breakdown"};

  int devices = 0;
  if (ls_cuda_device_count(&devices) != LS_OK || devices == 0) {
    std::printf(
        "bench_model_step: no CUDA device found; this benchmark needs a GPU, nothing to "
        "measure here.\n");
    return 0;
  }
  if (presets.empty()) presets = {"transformer-base", "transformer-big"};

  if (!options) {  // the default matrix
    for (const auto& p : presets) {
      bench(Config{p, LS_DTYPE_FP16, 128, 64, "sync"}, steps, false);
      bench(Config{p, LS_DTYPE_FP16, 128, 64, "async"}, steps, false);
      bench(Config{p, LS_DTYPE_FP16, 128, 64, "graph"}, steps, false);
      bench(Config{p, LS_DTYPE_BF16, 128, 64, "async"}, steps, false);
    }
    for (int rows : {64, 256}) {
      bench(Config{"transformer-base", LS_DTYPE_FP16, rows, 64, "async"}, steps, false);
      bench(Config{"transformer-big", LS_DTYPE_FP16, rows, 64, "async"}, steps, false);
    }
    return 0;
  }
  if (dtypes.empty()) dtypes = {LS_DTYPE_FP16};
  if (modes.empty()) modes = {"async"};
  for (const auto& p : presets)
    for (ls_dtype dt : dtypes)
      for (const auto& m : modes) bench(Config{p, dt, batch, len, m}, steps, breakdown);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "bench_model_step: %s\n%s", e.what.c_str(), kUsage);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model_step: %s\n", e.what());
    return 1;
  }
}
