// Whole training step on the GPU through the public C API: target tokens per second and the
// arena size, for Transformer-base and -big (fp16, vocab 32768, batch 128 x 64 = 8192 target
// tokens), as in the PyTorch comparison. Prints one line per config; asserts nothing.
//   bench_model_step [steps] [preset...]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "ls_train.h"

static void die(const char* what) {
  std::fprintf(stderr, "%s failed: %s\n", what, ls_last_error());
  std::exit(1);
}

// mode: "sync" reads the step result back every step (a host round trip per step), "async"
// passes no result (nothing read back until the end), "graph" is async with the step captured
// as a CUDA graph (trainer option cuda_graph).
static void bench(const char* preset, ls_dtype dt, int batch, int len, int steps,
                  const char* mode = "async") {
  const bool sync = std::string(mode) == "sync", graph = std::string(mode) == "graph";
  ls_context* ctx = nullptr;
  ls_context_options o;
  ls_context_options_init(&o);
  o.device = LS_DEVICE_CUDA;
  if (ls_context_create(&o, &ctx) != LS_OK) die("ls_context_create");
  ls_model_config c;
  ls_model_config_init(&c);
  if (ls_model_config_preset(preset, &c) != LS_OK) die("preset");
  c.pre_layer_norm = 1;  // as nn.Transformer(norm_first=True)
  c.dropout = 0.1f;
  c.dtype = dt;
  c.max_seq_len = len;
  c.max_batch_tokens = batch * len;
  ls_model* model = nullptr;
  if (ls_model_create(ctx, &c, &model) != LS_OK) die("ls_model_create");
  ls_trainer_config tc;
  ls_trainer_config_init(&tc);
  tc.beta2 = 0.98f;
  tc.cuda_graph = graph ? 1 : 0;
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
  for (int i = 0; i < 5; ++i)
    if (ls_trainer_step(tr, &b, &r) != LS_OK) die("ls_trainer_step");
  ls_context_synchronize(ctx);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i)
    if (ls_trainer_step(tr, &b, sync || i + 1 == steps ? &r : nullptr) != LS_OK)
      die("ls_trainer_step");
  ls_context_synchronize(ctx);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ls_memory_report rep;
  ls_memory_report_init(&rep);
  ls_model_memory_report(model, &rep);
  std::printf("%-16s %s B=%d L=%d %-5s: %.2f ms/step, %.0f target tokens/s, arena %.2f GiB "
              "(planned %.2f GiB, lower bound %.2f GiB, persistent %.2f GiB), loss/token %.3f\n",
              preset, dt == LS_DTYPE_FP16 ? "fp16" : dt == LS_DTYPE_BF16 ? "bf16" : "fp32", batch,
              len, mode, 1e3 * sec / steps, batch * len * steps / sec, rep.total_bytes / 1073741824.0,
              rep.planned_bytes / 1073741824.0, rep.lower_bound_bytes / 1073741824.0,
              rep.persistent_bytes / 1073741824.0, r.loss / r.tokens);
  ls_trainer_destroy(tr);
  ls_model_destroy(model);
  ls_context_destroy(ctx);
}

int main(int argc, char** argv) {
  int steps = argc > 1 ? std::atoi(argv[1]) : 20;
  std::vector<std::string> presets;
  for (int i = 2; i < argc; ++i) presets.push_back(argv[i]);
  if (presets.empty()) presets = {"transformer-base", "transformer-big"};
  for (const auto& p : presets) {
    bench(p.c_str(), LS_DTYPE_FP16, 128, 64, steps, "sync");
    bench(p.c_str(), LS_DTYPE_FP16, 128, 64, steps, "async");
    bench(p.c_str(), LS_DTYPE_FP16, 128, 64, steps, "graph");
    bench(p.c_str(), LS_DTYPE_BF16, 128, 64, steps, "async");
  }
  for (int rows : {64, 256}) {
    bench("transformer-base", LS_DTYPE_FP16, rows, 64, steps, "async");
    bench("transformer-big", LS_DTYPE_FP16, rows, 64, steps, "async");
  }
  return 0;
}
