// A Transformer trains end to end on the CPU through the C API: loss falls and a tiny batch is
// overfit, runs are bitwise deterministic, a resumed checkpoint follows the same trajectory,
// bad checkpoints and bad inputs are refused without changing anything, and a training step
// allocates nothing (device arena, host heap).
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>
#include <vector>

#include "allocator/alloc_stats.h"
#include "ls_train.h"
#include "runtime/context.h"
#include "runtime/error.h"
#include "runtime/model.h"

// ---- host heap instrumentation for the zero-allocation test ------------------------------
static std::atomic<long> g_heap_allocs{0};
void* operator new(std::size_t n) {
  g_heap_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}

namespace {

std::string tmp_path(const std::string& name) {
  const char* d = std::getenv("LS_TEST_TMPDIR");
  return std::string(d ? d : "/tmp") + "/" + name;
}

ls_model_config tiny_config(ls_arch arch = LS_ARCH_ENCODER_DECODER) {
  ls_model_config c;
  ls_model_config_init(&c);
  c.arch = arch;
  c.src_vocab_size = c.tgt_vocab_size = 24;
  c.hidden_size = 16;
  c.ffn_size = 32;
  c.num_heads = 2;
  c.encoder_layers = arch == LS_ARCH_ENCODER_DECODER ? 1 : 0;
  c.decoder_layers = 1;
  c.max_seq_len = 8;
  c.max_batch_tokens = 32;
  c.dropout = 0.1f;
  c.attention_dropout = 0.1f;
  c.activation_dropout = 0.1f;
  return c;
}

struct Fixture {
  ls_context* ctx = nullptr;
  ls_model* model = nullptr;
  ls_trainer* trainer = nullptr;
  explicit Fixture(const ls_model_config& c, uint64_t seed = 7, float lr = 3e-3f) {
    ls_context_options o;
    ls_context_options_init(&o);
    o.device = LS_DEVICE_CPU;
    o.seed = seed;
    REQUIRE(ls_context_create(&o, &ctx) == LS_OK);
    REQUIRE_MESSAGE(ls_model_create(ctx, &c, &model) == LS_OK, ls_last_error());
    ls_trainer_config t;
    ls_trainer_config_init(&t);
    t.lr = lr;
    t.lr_schedule = LS_LR_CONSTANT;
    t.clip_norm = 1.0f;
    REQUIRE_MESSAGE(ls_trainer_create(model, &t, &trainer) == LS_OK, ls_last_error());
  }
  ~Fixture() {
    ls_trainer_destroy(trainer);
    ls_model_destroy(model);
    ls_context_destroy(ctx);
  }
};

// A fixed batch: B=3 rows, source length 5, target length 4 (with padding).
struct TinyBatch {
  std::vector<int32_t> src = {5, 6, 7, 8, 2, 9, 10, 11, 2, 1, 12, 13, 2, 1, 1};
  std::vector<int32_t> prev = {2, 14, 15, 16, 2, 17, 18, 1, 2, 19, 1, 1};
  std::vector<int32_t> tgt = {14, 15, 16, 2, 17, 18, 2, 1, 19, 2, 1, 1};
  ls_batch b;
  TinyBatch() {
    ls_batch_init(&b);
    b.batch_size = 3;
    b.src_len = 5;
    b.src_tokens = src.data();
    b.tgt_len = 4;
    b.prev_output_tokens = prev.data();
    b.target = tgt.data();
  }
};

std::vector<double> run_losses(const ls_model_config& c, int steps, uint64_t seed = 7) {
  Fixture f(c, seed);
  TinyBatch tb;
  std::vector<double> losses;
  for (int i = 0; i < steps; ++i) {
    ls_step_result r;
    ls_step_result_init(&r);
    REQUIRE_MESSAGE(ls_trainer_step(f.trainer, &tb.b, &r) == LS_OK, ls_last_error());
    losses.push_back(r.loss);
  }
  return losses;
}

// Transformer-big's preset at 8192 tokens (128 x 64) in fp16, the benchmarks' shape (the
// preset's post-LN; callers set pre_layer_norm and the memory options).
ls_model_config big_fp16_8192_config() {
  ls_model_config c;
  ls_model_config_init(&c);
  REQUIRE(ls_model_config_preset("transformer-big", &c) == LS_OK);
  c.max_batch_tokens = 8192;
  c.max_seq_len = 64;
  c.dtype = LS_DTYPE_FP16;
  return c;
}

// The memory plan of `c` with the CUDA backend's workspaces, no device needed.
ls_memory_report cuda_plan(const ls_model_config& c) {
  ls_memory_report r;
  ls_memory_report_init(&r);
  REQUIRE_MESSAGE(ls_plan_memory(&c, LS_DEVICE_CUDA, &r) == LS_OK, ls_last_error());
  return r;
}

}  // namespace

TEST_CASE("a tiny encoder-decoder overfits a tiny batch") {
  ls_model_config c = tiny_config();
  c.dropout = c.attention_dropout = c.activation_dropout = 0.f;
  c.label_smoothing = 0.f;  // with smoothing eps the nll floor is -ln(1 - eps)
  Fixture f(c, 7, 1e-2f);
  TinyBatch tb;
  ls_step_result r;
  ls_step_result_init(&r);
  REQUIRE(ls_trainer_step(f.trainer, &tb.b, &r) == LS_OK);
  const double first = r.loss / r.tokens;
  CHECK(r.tokens == 9);
  CHECK(r.updated == 1);
  CHECK(r.num_updates == 1);
  CHECK(std::isfinite(r.grad_norm));
  CHECK(r.grad_norm > 0);
  for (int i = 0; i < 300; ++i) REQUIRE(ls_trainer_step(f.trainer, &tb.b, &r) == LS_OK);
  const double last_nll = r.nll / r.tokens;
  MESSAGE("loss/token " << first << " -> " << r.loss / r.tokens << ", nll/token " << last_nll);
  CHECK(first > std::log(24.0) * 0.8);
  CHECK(last_nll < 0.05);  // memorised: near-zero negative log-likelihood

  // Evaluation agrees with the training loss of the memorised batch; generation reproduces it.
  ls_eval_result e;
  ls_eval_result_init(&e);
  REQUIRE(ls_model_evaluate(f.model, &tb.b, &e) == LS_OK);
  CHECK(e.tokens == 9);
  CHECK(e.nll / e.tokens < 0.05);
  std::vector<int32_t> out(3 * 6, -1), lens(3, -1);
  REQUIRE_MESSAGE(
      ls_model_generate(f.model, tb.src.data(), 3, 5, 6, out.data(), lens.data()) == LS_OK,
      ls_last_error());
  CHECK(lens[0] == 4);
  CHECK(std::vector<int32_t>(out.begin(), out.begin() + 4) ==
        std::vector<int32_t>({14, 15, 16, 2}));
  CHECK(lens[1] == 3);
  CHECK(std::vector<int32_t>(out.begin() + 6, out.begin() + 9) ==
        std::vector<int32_t>({17, 18, 2}));
  CHECK(out[6 + 3] == 1);  // padded after eos
  CHECK(lens[2] == 2);
}

TEST_CASE("a tiny decoder-only model overfits and continues a prompt") {
  ls_model_config c = tiny_config(LS_ARCH_DECODER_ONLY);
  c.dropout = c.attention_dropout = c.activation_dropout = 0.f;
  c.learned_positions = 1;
  c.activation = LS_ACTIVATION_GELU;
  c.label_smoothing = 0.f;
  Fixture f(c, 3, 1e-2f);
  std::vector<int32_t> prev = {2, 5, 6, 7, 8, 9};
  std::vector<int32_t> tgt = {5, 6, 7, 8, 9, 2};
  ls_batch b;
  ls_batch_init(&b);
  b.batch_size = 1;
  b.tgt_len = 6;
  b.prev_output_tokens = prev.data();
  b.target = tgt.data();
  ls_step_result r;
  ls_step_result_init(&r);
  for (int i = 0; i < 250; ++i) REQUIRE(ls_trainer_step(f.trainer, &b, &r) == LS_OK);
  CHECK(r.nll / r.tokens < 0.05);
  std::vector<int32_t> prompt = {2, 5, 6};
  std::vector<int32_t> out(4, -1), lens(1, -1);
  REQUIRE(ls_model_generate(f.model, prompt.data(), 1, 3, 4, out.data(), lens.data()) == LS_OK);
  CHECK(out == std::vector<int32_t>({7, 8, 9, 2}));
  CHECK(lens[0] == 4);
}

TEST_CASE("the same seed gives bitwise-identical losses; another seed differs") {
  ls_model_config c = tiny_config();
  auto a = run_losses(c, 6, 11);
  auto b = run_losses(c, 6, 11);
  auto d = run_losses(c, 6, 12);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
  CHECK(a != d);
}

TEST_CASE("a resumed checkpoint follows the trajectory of an uninterrupted run") {
  ls_model_config c = tiny_config();
  auto straight = run_losses(c, 8, 5);
  const std::string path = tmp_path("resume_test.lsck");
  {
    Fixture f(c, 5);
    TinyBatch tb;
    for (int i = 0; i < 4; ++i) REQUIRE(ls_trainer_step(f.trainer, &tb.b, nullptr) == LS_OK);
    REQUIRE_MESSAGE(ls_trainer_save(f.trainer, path.c_str()) == LS_OK, ls_last_error());
  }
  Fixture g(c, 999);  // different init and seed: everything must come from the checkpoint
  REQUIRE_MESSAGE(ls_trainer_load(g.trainer, path.c_str()) == LS_OK, ls_last_error());
  TinyBatch tb;
  for (int i = 4; i < 8; ++i) {
    ls_step_result r;
    ls_step_result_init(&r);
    REQUIRE(ls_trainer_step(g.trainer, &tb.b, &r) == LS_OK);
    CHECK(r.num_updates == i + 1);
    CHECK(std::memcmp(&r.loss, &straight[static_cast<size_t>(i)], sizeof(double)) == 0);
  }
  std::remove(path.c_str());
}

TEST_CASE("corrupt and truncated checkpoints are refused and leave the trainer as it was") {
  ls_model_config c = tiny_config();
  c.dropout = c.attention_dropout = c.activation_dropout = 0.f;
  const std::string path = tmp_path("corrupt_test.lsck");
  Fixture f(c, 5);
  TinyBatch tb;
  REQUIRE(ls_trainer_step(f.trainer, &tb.b, nullptr) == LS_OK);
  REQUIRE(ls_trainer_save(f.trainer, path.c_str()) == LS_OK);
  std::vector<char> good;
  {
    std::ifstream in(path, std::ios::binary);
    good.assign(std::istreambuf_iterator<char>(in), {});
  }
  REQUIRE(good.size() > 200);
  // Move the trainer on so its state differs from the file's.
  REQUIRE(ls_trainer_step(f.trainer, &tb.b, nullptr) == LS_OK);
  ls_eval_result before;
  ls_eval_result_init(&before);
  REQUIRE(ls_model_evaluate(f.model, &tb.b, &before) == LS_OK);
  std::vector<float> w_before(16 * 24);
  REQUIRE(ls_model_get_parameter(f.model, "encoder.embed_tokens.weight", w_before.data(),
                                 16 * 24) == LS_OK);

  auto write = [&](const std::vector<char>& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  };
  std::vector<std::pair<std::string, std::vector<char>>> bad;
  bad.push_back({"truncated", std::vector<char>(good.begin(), good.begin() + good.size() / 2)});
  bad.push_back({"tiny", std::vector<char>(good.begin(), good.begin() + 10)});
  auto flipped = good;
  flipped[good.size() / 2] ^= 0x40;
  bad.push_back({"bit flip", flipped});
  auto magic = good;
  magic[0] = 'X';
  bad.push_back({"bad magic", magic});
  for (auto& [what, bytes] : bad) {
    CAPTURE(what);
    write(bytes);
    CHECK(ls_trainer_load(f.trainer, path.c_str()) == LS_ERR_CORRUPT_DATA);
    CHECK(std::string(ls_last_error()).find("corrupt_test.lsck") != std::string::npos);
  }
  CHECK(ls_trainer_load(f.trainer, tmp_path("does_not_exist.lsck").c_str()) == LS_ERR_IO);
  // Nothing changed.
  ls_eval_result after;
  ls_eval_result_init(&after);
  REQUIRE(ls_model_evaluate(f.model, &tb.b, &after) == LS_OK);
  CHECK(std::memcmp(&after.loss, &before.loss, sizeof(double)) == 0);
  std::vector<float> w_after(16 * 24);
  REQUIRE(ls_model_get_parameter(f.model, "encoder.embed_tokens.weight", w_after.data(), 16 * 24) ==
          LS_OK);
  CHECK(w_after == w_before);
  // A checkpoint of another model shape is refused.
  write(good);
  ls_model_config other = c;
  other.ffn_size = 48;
  Fixture o(other, 5);
  CHECK(ls_trainer_load(o.trainer, path.c_str()) == LS_ERR_INVALID_ARGUMENT);
  CHECK(std::string(ls_last_error()).find("different model") != std::string::npos);
  // The good file still loads.
  CHECK(ls_trainer_load(f.trainer, path.c_str()) == LS_OK);
  std::remove(path.c_str());
}

TEST_CASE("bad batches give clear errors, change nothing, and the trainer stays usable") {
  ls_model_config c = tiny_config();
  c.dropout = c.attention_dropout = c.activation_dropout = 0.f;
  Fixture f(c, 5);
  TinyBatch tb;
  ls_eval_result before;
  ls_eval_result_init(&before);
  REQUIRE(ls_model_evaluate(f.model, &tb.b, &before) == LS_OK);

  auto expect = [&](ls_batch b, const char* needle) {
    ls_step_result r;
    ls_step_result_init(&r);
    r.loss = -123;
    CHECK(ls_trainer_step(f.trainer, &b, &r) == LS_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE(std::string(ls_last_error()).find(needle) != std::string::npos, ls_last_error());
    CHECK(r.loss == -123);  // out parameter untouched
  };
  {  // token id outside the vocabulary
    TinyBatch t;
    t.src[3] = 24;
    expect(t.b, "source token id 24 at row 0, position 3");
    t.src[3] = -1;
    expect(t.b, "outside the vocabulary");
  }
  {
    TinyBatch t;
    t.tgt[1] = 99;
    expect(t.b, "target token id 99");
  }
  {  // too many tokens: 5 rows x 8 = 40 > 32
    std::vector<int32_t> big(5 * 8, 4);
    ls_batch b = tb.b;
    b.batch_size = 5;
    b.src_len = 8;
    b.tgt_len = 2;
    b.src_tokens = big.data();
    b.prev_output_tokens = big.data();
    b.target = big.data();
    expect(b, "40 source tokens (5 x 8), more than max_batch_tokens 32");
  }
  {  // too long
    std::vector<int32_t> longer(9, 4);
    ls_batch b = tb.b;
    b.batch_size = 1;
    b.src_len = 9;
    b.src_tokens = longer.data();
    expect(b, "source length 9 exceeds max_seq_len 8");
  }
  {
    ls_batch b = tb.b;
    b.target = nullptr;
    expect(b, "target is NULL");
    b = tb.b;
    b.struct_size = 3;
    expect(b, "struct_size");
  }
  CHECK(ls_trainer_step(nullptr, &tb.b, nullptr) == LS_ERR_INVALID_ARGUMENT);
  CHECK(ls_trainer_step(f.trainer, nullptr, nullptr) == LS_ERR_INVALID_ARGUMENT);
  CHECK(ls_model_evaluate(f.model, &tb.b, nullptr) == LS_ERR_INVALID_ARGUMENT);
  std::vector<int32_t> out(8), lens(1);
  CHECK(ls_model_generate(f.model, tb.src.data(), 1, 5, 9, out.data(), lens.data()) ==
        LS_ERR_INVALID_ARGUMENT);
  CHECK(ls_model_get_parameter(f.model, "no.such.weight",
                               out.data() ? reinterpret_cast<float*>(out.data()) : nullptr,
                               1) == LS_ERR_INVALID_ARGUMENT);
  CHECK(std::string(ls_last_error()).find("no.such.weight") != std::string::npos);

  // Nothing changed, and a good step still works.
  ls_eval_result after;
  ls_eval_result_init(&after);
  REQUIRE(ls_model_evaluate(f.model, &tb.b, &after) == LS_OK);
  CHECK(std::memcmp(&after.loss, &before.loss, sizeof(double)) == 0);
  ls_step_result r;
  ls_step_result_init(&r);
  CHECK(ls_trainer_step(f.trainer, &tb.b, &r) == LS_OK);
  CHECK(r.num_updates == 1);
}

TEST_CASE("bad model configs are refused with the field named") {
  ls_context* ctx = nullptr;
  REQUIRE(ls_context_create(nullptr, &ctx) == LS_OK);
  ls_model* m = nullptr;
  ls_model_config c = tiny_config();
  c.num_heads = 3;
  CHECK(ls_model_create(ctx, &c, &m) == LS_ERR_INVALID_ARGUMENT);
  CHECK(std::string(ls_last_error()).find("num_heads") != std::string::npos);
  c = tiny_config();
  c.dtype = LS_DTYPE_FP16;
  ls_status s = ls_model_create(ctx, &c, &m);
  int32_t gpus = 0;
  ls_cuda_device_count(&gpus);
  if (gpus == 0) {
    CHECK(s == LS_ERR_UNSUPPORTED);
    CHECK(m == nullptr);
  } else {
    ls_model_destroy(m);
    m = nullptr;
  }
  c = tiny_config();
  c.max_seq_len = 64;  // longer than max_batch_tokens
  CHECK(ls_model_create(ctx, &c, &m) == LS_ERR_INVALID_ARGUMENT);
  CHECK(m == nullptr);
  CHECK(ls_model_config_preset("transformer-huge", &c) == LS_ERR_INVALID_ARGUMENT);
  CHECK(std::string(ls_last_error()).find("transformer-base") != std::string::npos);
  ls_context_destroy(ctx);
}

TEST_CASE("parameters by name: list, get and set round trip, names are PyTorch-like") {
  ls_model_config c = tiny_config();
  c.share_all_embeddings = 1;
  Fixture f(c);
  int64_t n = 0;
  REQUIRE(ls_model_num_parameters(f.model, &n) == LS_OK);
  std::vector<std::string> names;
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    ls_parameter_info info;
    ls_parameter_info_init(&info);
    REQUIRE(ls_model_parameter_info(f.model, i, &info) == LS_OK);
    names.push_back(info.name);
    total += info.numel;
  }
  auto has = [&](const char* s) {
    for (auto& x : names)
      if (x == s) return true;
    return false;
  };
  CHECK(has("encoder.embed_tokens.weight"));
  CHECK(!has("decoder.embed_tokens.weight"));  // tied: listed once
  CHECK(has("encoder.layers.0.self_attn.in_proj_weight"));
  CHECK(has("decoder.layers.0.encoder_attn.out_proj.bias"));
  CHECK(has("decoder.layers.0.fc1.weight"));
  CHECK(has("decoder.layer_norm.weight"));
  ls_memory_report rep;
  ls_memory_report_init(&rep);
  REQUIRE(ls_model_memory_report(f.model, &rep) == LS_OK);
  CHECK(rep.num_parameters == static_cast<uint64_t>(total));
  // Tied names reach the same tensor.
  std::vector<float> w(24 * 16), w2(24 * 16);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.001f * static_cast<float>(i);
  REQUIRE(ls_model_set_parameter(f.model, "decoder.embed_tokens.weight", w.data(), 24 * 16) ==
          LS_OK);
  REQUIRE(ls_model_get_parameter(f.model, "decoder.output_projection.weight", w2.data(), 24 * 16) ==
          LS_OK);
  CHECK(w2 == w);
  CHECK(ls_model_set_parameter(f.model, "decoder.embed_tokens.weight", w.data(), 10) ==
        LS_ERR_INVALID_ARGUMENT);
  w[3] = NAN;
  CHECK(ls_model_set_parameter(f.model, "decoder.embed_tokens.weight", w.data(), 24 * 16) ==
        LS_ERR_INVALID_ARGUMENT);
}

TEST_CASE("gradient accumulation: two half batches equal one full batch") {
  // In fp64, so that Adam's first step (close to lr * sign(g)) cannot turn rounding noise of
  // near-zero gradients into lr-sized differences.
  ls_model_config c = tiny_config();
  c.dtype = LS_DTYPE_FP64;
  c.dropout = c.attention_dropout = c.activation_dropout = 0.f;
  // Full batch of 2 identical-length rows vs 2 micro-batches of one row each.
  std::vector<int32_t> src = {5, 6, 7, 2, 9, 10, 11, 2};
  std::vector<int32_t> prev = {2, 14, 15, 2, 17, 18};
  std::vector<int32_t> tgt = {14, 15, 2, 17, 18, 2};
  auto make = [&](int row0, int rows) {
    ls_batch b;
    ls_batch_init(&b);
    b.batch_size = rows;
    b.src_len = 4;
    b.tgt_len = 3;
    b.src_tokens = src.data() + row0 * 4;
    b.prev_output_tokens = prev.data() + row0 * 3;
    b.target = tgt.data() + row0 * 3;
    return b;
  };
  ls_context_options o;
  ls_context_options_init(&o);
  o.device = LS_DEVICE_CPU;
  auto final_weights = [&](int update_freq) {
    ls_context* ctx;
    ls_model* m;
    ls_trainer* t;
    REQUIRE(ls_context_create(&o, &ctx) == LS_OK);
    REQUIRE(ls_model_create(ctx, &c, &m) == LS_OK);
    ls_trainer_config tc;
    ls_trainer_config_init(&tc);
    tc.lr_schedule = LS_LR_CONSTANT;
    tc.lr = 1e-2f;
    tc.update_freq = update_freq;
    REQUIRE(ls_trainer_create(m, &tc, &t) == LS_OK);
    ls_step_result r;
    ls_step_result_init(&r);
    if (update_freq == 1) {
      ls_batch b = make(0, 2);
      REQUIRE(ls_trainer_step(t, &b, &r) == LS_OK);
    } else {
      ls_batch b0 = make(0, 1), b1 = make(1, 1);
      REQUIRE(ls_trainer_step(t, &b0, &r) == LS_OK);
      CHECK(r.updated == 0);
      REQUIRE(ls_trainer_step(t, &b1, &r) == LS_OK);
    }
    CHECK(r.updated == 1);
    std::vector<float> w(32 * 16);
    REQUIRE(ls_model_get_parameter(m, "decoder.layers.0.fc1.weight", w.data(), 32 * 16) == LS_OK);
    ls_trainer_destroy(t);
    ls_model_destroy(m);
    ls_context_destroy(ctx);
    return w;
  };
  auto full = final_weights(1);
  auto accum = final_weights(2);
  double max_diff = 0;
  for (size_t i = 0; i < full.size(); ++i)
    max_diff = std::max(max_diff, double(std::fabs(full[i] - accum[i])));
  // Same math, different summation order in fp64 (the values are stored as float here):
  // differences at float rounding of the weights (~1e-8 for |w| < 1).
  CHECK(max_diff < 1e-6);
}

TEST_CASE("a training step makes zero device and zero host allocations") {
  ls_model_config c = tiny_config();
  Fixture f(c);
  TinyBatch tb;
  ls_step_result r;
  ls_step_result_init(&r);
  REQUIRE(ls_trainer_step(f.trainer, &tb.b, &r) == LS_OK);  // warm-up
  auto before = ls::alloc_counters();
  long heap_before = g_heap_allocs.load();
  for (int i = 0; i < 3; ++i) REQUIRE(ls_trainer_step(f.trainer, &tb.b, &r) == LS_OK);
  long heap_after = g_heap_allocs.load();
  auto after = ls::alloc_counters();
  CHECK(after.device_allocs == before.device_allocs);
  CHECK(after.host_allocs == before.host_allocs);
  CHECK(heap_after - heap_before == 0);
}

TEST_CASE("the memory plan for a preset is computed without allocating") {
  ls_model_config c;
  ls_model_config_init(&c);
  REQUIRE(ls_model_config_preset("transformer-base", &c) == LS_OK);
  c.max_batch_tokens = 4096;
  c.max_seq_len = 128;
  auto before = ls::alloc_counters();
  ls_memory_report r;
  ls_memory_report_init(&r);
  REQUIRE_MESSAGE(ls_plan_memory(&c, LS_DEVICE_CPU, &r) == LS_OK, ls_last_error());
  auto after = ls::alloc_counters();
  CHECK(after.host_allocs == before.host_allocs);
  CHECK(after.device_allocs == before.device_allocs);
  CHECK(r.planned_bytes >= r.lower_bound_bytes);
  CHECK(r.planned_bytes <= r.no_reuse_bytes);
  CHECK(r.total_bytes == r.persistent_bytes + r.planned_bytes);
  CHECK(r.num_parameters > 40000000);  // ~44M + embeddings with a 32768 vocabulary
  CHECK(r.parameters == r.gradients);
  MESSAGE("transformer-base plan: planned " << r.planned_bytes << " lower bound "
                                            << r.lower_bound_bytes << " no reuse "
                                            << r.no_reuse_bytes);
  // A plan made at the maxima covers every smaller batch: sizes grow with tokens.
  ls_memory_report r2;
  ls_memory_report_init(&r2);
  c.max_batch_tokens = 8192;
  REQUIRE(ls_plan_memory(&c, LS_DEVICE_CPU, &r2) == LS_OK);
  CHECK(r2.planned_bytes > r.planned_bytes);
  CHECK(r2.parameters == r.parameters);
}

// ---- the criterion in chunks ----------------------------------------------------------------

namespace {

// Forces the criterion's rows per chunk for the models made while it lives (0: the rule).
struct ForceCriterionRows {
  int64_t previous;
  explicit ForceCriterionRows(int64_t rows)
      : previous(ls::TransformerGraph::set_criterion_rows_override(rows)) {}
  ~ForceCriterionRows() { ls::TransformerGraph::set_criterion_rows_override(previous); }
};

template <class A>
std::vector<double> flat_doubles(const void* p, size_t n) {
  const A* a = static_cast<const A*>(p);
  return std::vector<double>(a, a + n);
}

// 4 rows x 7 target tokens = 28 target rows (padding in three rows), 5 source tokens a row:
// the criterion tests' batch (the tiny config's max_batch_tokens is 32).
struct ChunkBatch {
  std::vector<int32_t> src = {5, 6, 7, 8, 2, 9, 10, 11, 2, 1, 12, 13, 2, 1, 1, 14, 2, 1, 1, 1};
  std::vector<int32_t> prev = {2, 14, 15, 16, 17, 18, 19, 2, 17, 18, 20, 1, 1,  1,
                               2, 19, 21, 22, 23, 5,  1,  2, 6,  7,  8,  9, 10, 11};
  std::vector<int32_t> tgt = {14, 15, 16, 17, 18, 19, 2, 17, 18, 20, 2, 1,  1,  1,
                              19, 21, 22, 23, 5,  2,  1, 6,  7,  8,  9, 10, 11, 2};
  ls_batch batch(ls_arch arch) {
    ls_batch b;
    ls_batch_init(&b);
    b.batch_size = 4;
    b.tgt_len = 7;
    b.prev_output_tokens = prev.data();
    b.target = tgt.data();
    if (arch == LS_ARCH_ENCODER_DECODER) {
      b.src_len = 5;
      b.src_tokens = src.data();
    }
    return b;
  }
};

// One training forward + backward (dropout on, grad scale 4) and one evaluation forward of a
// fixed batch on a fresh model whose criterion runs `forced_rows` rows per chunk.
struct CriterionRun {
  int64_t rows = 0;
  double train[3] = {0, 0, 0}, eval[3] = {0, 0, 0};
  std::vector<double> grad;
};

CriterionRun criterion_run(const ls_model_config& c, int64_t forced_rows, const ls_batch& b) {
  ForceCriterionRows force(forced_rows);
  ls::ContextOptions o;
  o.device = ls::ContextOptions::Device::Cpu;
  o.seed = 9;
  ls::Context ctx(o);
  ls::Model m(ctx, c);
  CriterionRun r;
  r.rows = m.graph().criterion_rows;
  ls::HostBatch hb;
  m.validate_batch(b, hb);
  m.load_batch(hb);
  const bool f64 = m.graph().acc() == ls::DType::F64;
  const size_t n = m.params().total_elements(), a = ls::dtype_size(m.graph().acc());
  if (f64)
    *m.scalar_ptr<double>(ls::TransformerGraph::kGradScale) = 4.0;
  else
    *m.scalar_ptr<float>(ls::TransformerGraph::kGradScale) = 4.0f;
  void* grad = m.buffer(m.graph().grad);
  std::memset(grad, 0, n * a);
  m.zero_sums();
  m.run_forward(true);  // the criterion's backward runs here, chunk by chunk
  m.run_backward(true);
  m.read_sums(r.train);
  r.grad = f64 ? flat_doubles<double>(grad, n) : flat_doubles<float>(grad, n);
  // Evaluation: the same sums without dropout, and no gradient touched.
  std::vector<unsigned char> before(static_cast<unsigned char*>(grad),
                                    static_cast<unsigned char*>(grad) + n * a);
  m.zero_sums();
  m.run_forward(false);
  m.read_sums(r.eval);
  CHECK(std::memcmp(before.data(), grad, n * a) == 0);
  // The graph's backward needs the criterion's backward from a training forward.
  CHECK_THROWS_AS(m.run_backward(true), ls::Error);
  return r;
}

}  // namespace

TEST_CASE("criterion chunk rows: the rule, and the big model's logits buffer") {
  using ls::DType;
  using ls::TransformerGraph;
  // 64 MiB of logits, rounded down to a multiple of 8 rows, at least 8, at most max tokens.
  CHECK(TransformerGraph::criterion_rows_for(8192, 32768, DType::F16) == 1024);
  CHECK(TransformerGraph::criterion_rows_for(8192, 32768, DType::BF16) == 1024);
  CHECK(TransformerGraph::criterion_rows_for(8192, 32768, DType::F32) == 512);
  CHECK(TransformerGraph::criterion_rows_for(8192, 32768, DType::F64) == 256);
  CHECK(TransformerGraph::criterion_rows_for(8192, 50000, DType::F16) == 664);  // 671 -> 664
  CHECK(TransformerGraph::criterion_rows_for(700, 32768, DType::F16) == 700);
  CHECK(TransformerGraph::criterion_rows_for(8192, 40000000, DType::F32) == 8);
  CHECK(TransformerGraph::criterion_rows_for(5, 40000000, DType::F32) == 5);
  CHECK(TransformerGraph::criterion_rows_for(32, 24, DType::F32) == 32);

  const ls_model_config c = big_fp16_8192_config();
  TransformerGraph g(c, true);  // planning only: no device needed
  const ls::Plan plan = g.plan_schedule();
  g.planner().check(plan);
  CHECK(g.criterion_rows == 1024);
  const ls::BufferDesc& lg = g.planner().buffer(g.logits);
  CHECK(lg.bytes == size_t{64} << 20);  // [1024, 32768] fp16, not [8192, 32768] (512 MiB)
  // The chunk's logits die inside the criterion, before the decoder's backward reads d_dec_out.
  const ls::BufferDesc& dd = g.planner().buffer(g.d_dec_out);
  CHECK(lg.last_use < dd.last_use);
  CHECK(lg.first_use > g.planner().buffer(g.dec_hidden).first_use);
}

TEST_CASE("the criterion in chunks gives the loss and gradients of one chunk") {
  ChunkBatch tokens;  // 28 target rows of max_batch_tokens 32
  struct Case {
    const char* name;
    ls_arch arch;
    ls_dtype dtype;
    int pre_ln, share;
    double tol;  // relative to the largest |value|: summation order only
  };
  // fp64: a few ulps (2.2e-16) of sums over <= 28 rows, carried through two layers: 1e-12.
  // fp32: the same in float (1.2e-7): 2e-5.
  const Case cases[] = {
      {"encoder-decoder post-LN shared embeddings fp64", LS_ARCH_ENCODER_DECODER, LS_DTYPE_FP64, 0,
       1, 1e-12},
      {"encoder-decoder pre-LN fp32", LS_ARCH_ENCODER_DECODER, LS_DTYPE_FP32, 1, 0, 2e-5},
      {"decoder-only pre-LN fp64", LS_ARCH_DECODER_ONLY, LS_DTYPE_FP64, 1, 0, 1e-12},
  };
  for (const Case& k : cases) {
    const std::string case_name = k.name;
    CAPTURE(case_name);
    ls_model_config c = tiny_config(k.arch);
    c.dtype = k.dtype;
    c.pre_layer_norm = k.pre_ln;
    c.share_all_embeddings = k.share && k.arch == LS_ARCH_ENCODER_DECODER;
    c.share_decoder_input_output_embed = k.share;
    const ls_batch b = tokens.batch(k.arch);
    const CriterionRun whole = criterion_run(c, 0, b);
    REQUIRE(whole.rows == 32);  // the rule: one chunk holds every row of this model
    CHECK(whole.train[2] == 24);
    CHECK(whole.eval[2] == 24);
    double gmax = 0;
    for (double g : whole.grad) gmax = std::max(gmax, std::fabs(g));
    REQUIRE(gmax > 0);
    for (int64_t rows : {8, 5, 1}) {  // 8+8+8+4, 5 x 5 + 3, 28 x 1
      CAPTURE(rows);
      const CriterionRun part = criterion_run(c, rows, b);
      REQUIRE(part.rows == rows);
      for (int i = 0; i < 3; ++i) {
        CHECK(std::fabs(part.train[i] - whole.train[i]) <= k.tol * std::fabs(whole.train[i]));
        CHECK(std::fabs(part.eval[i] - whole.eval[i]) <= k.tol * std::fabs(whole.eval[i]));
      }
      REQUIRE(part.grad.size() == whole.grad.size());
      double worst = 0;
      size_t worst_at = 0;
      for (size_t i = 0; i < whole.grad.size(); ++i) {
        const double diff = std::fabs(part.grad[i] - whole.grad[i]);
        if (diff > worst) worst = diff, worst_at = i;
      }
      CHECK_MESSAGE(worst <= k.tol * gmax, "gradient element " << worst_at << ": "
                                                               << part.grad[worst_at] << " vs "
                                                               << whole.grad[worst_at]);
    }
  }
}

// ---- the criterion's logits in the gradient buffer -------------------------------------------

namespace {

struct ScratchRun {
  int64_t scratch_rows = 0, chunk_rows = 0;
  ls::TransformerGraph::GradScratch scratch;
  ls::ParamRef output_projection;
  double sums[2][3] = {{0, 0, 0}, {0, 0, 0}};
  std::vector<unsigned char> grad[2];   // after the fresh pass, after the accumulating pass
  int64_t chunks[2] = {0, 0};           // criterion chunks of each pass
  bool in_scratch[2] = {false, false};  // whether each pass's logits went to the scratch
};

// A fresh training pass (gradients start from zero; the buffer is poisoned with NaN first, so
// every element must be zeroed or written), then an accumulating one, on a fresh CPU model
// whose planned logits buffer holds `forced_rows` rows and whose criterion scratch is on or off.
ScratchRun scratch_run(const ls_model_config& c, int64_t forced_rows, bool scratch,
                       const ls_batch& b) {
  ForceCriterionRows force(forced_rows);
  const bool previous = ls::TransformerGraph::set_criterion_scratch_enabled(scratch);
  ls::ContextOptions o;
  o.device = ls::ContextOptions::Device::Cpu;
  o.seed = 9;
  ls::Context ctx(o);
  ls::Model m(ctx, c);
  ls::TransformerGraph::set_criterion_scratch_enabled(previous);
  ScratchRun r;
  r.scratch = m.graph().criterion_scratch;
  r.scratch_rows = r.scratch.rows;
  r.output_projection = m.graph().output_projection;
  ls::HostBatch hb;
  m.validate_batch(b, hb);
  m.load_batch(hb);
  r.chunk_rows = m.graph().criterion_scratch_chunk_rows(hb.batch * hb.tgt_len);
  const bool f64 = m.graph().acc() == ls::DType::F64;
  const size_t n = m.params().total_elements(), a = ls::dtype_size(m.graph().acc());
  if (f64)
    *m.scalar_ptr<double>(ls::TransformerGraph::kGradScale) = 4.0;
  else
    *m.scalar_ptr<float>(ls::TransformerGraph::kGradScale) = 4.0f;
  auto* grad = static_cast<unsigned char*>(m.buffer(m.graph().grad));
  std::memset(grad, 0xFF, n * a);  // NaN in fp32 and fp64
  for (int pass = 0; pass < 2; ++pass) {
    m.train_pass(/*fresh_gradients=*/pass == 0, /*deterministic=*/true);
    r.chunks[pass] = m.graph().last_criterion_chunks;
    r.in_scratch[pass] = m.graph().last_criterion_in_scratch;
    m.read_sums(r.sums[pass]);
    r.grad[pass].assign(grad, grad + n * a);
  }
  return r;
}

template <class A>
double max_abs_diff(const std::vector<unsigned char>& x, const std::vector<unsigned char>& y,
                    double* scale) {
  const A* p = reinterpret_cast<const A*>(x.data());
  const A* q = reinterpret_cast<const A*>(y.data());
  double worst = 0, big = 0;
  for (size_t i = 0; i < x.size() / sizeof(A); ++i) {
    const double d = std::fabs(static_cast<double>(p[i]) - static_cast<double>(q[i]));
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
    big = std::max(big, std::fabs(static_cast<double>(q[i])));
  }
  *scale = big;
  return worst;
}

}  // namespace

TEST_CASE("the criterion's logits in the gradient buffer: the same loss and gradients bitwise") {
  ChunkBatch tokens;  // 28 target rows of max_batch_tokens 32
  struct Case {
    const char* name;
    ls_arch arch;
    ls_dtype dtype;
    int share_all, share_out;
    int32_t vocab;
    bool multi_chunk;  // the scratch holds fewer than the 28 rows: several chunks in it
  };
  // The planned logits buffer holds 8 rows. With vocabulary 24 the scratch holds every row; with
  // 400 (decoder-only: 100) it holds 16 rows of logits, so the scratch pass runs two chunks.
  const Case cases[] = {
      {"encoder-decoder shared embeddings fp64", LS_ARCH_ENCODER_DECODER, LS_DTYPE_FP64, 1, 1, 24,
       false},
      {"encoder-decoder untied output projection fp32", LS_ARCH_ENCODER_DECODER, LS_DTYPE_FP32, 0,
       0, 24, false},
      {"encoder-decoder tied decoder table fp32, vocabulary 400", LS_ARCH_ENCODER_DECODER,
       LS_DTYPE_FP32, 0, 1, 400, true},
      {"decoder-only fp64, vocabulary 100", LS_ARCH_DECODER_ONLY, LS_DTYPE_FP64, 0, 1, 100, true},
  };
  for (const Case& k : cases) {
    const std::string case_name = k.name;
    CAPTURE(case_name);
    ls_model_config c = tiny_config(k.arch);  // dropout on everywhere
    c.dtype = k.dtype;
    c.src_vocab_size = c.tgt_vocab_size = k.vocab;
    c.share_all_embeddings = k.share_all;
    c.share_decoder_input_output_embed = k.share_out;
    const ls_batch b = tokens.batch(k.arch);
    const ScratchRun on = scratch_run(c, 8, true, b);
    // The scratch holds more rows than the planned buffer and stays clear of the output
    // projection's gradient, the one gradient the criterion writes.
    REQUIRE(on.scratch_rows > 8);
    CHECK(on.scratch_rows % 8 == 0);
    CHECK((on.scratch.end <= on.output_projection.offset ||
           on.scratch.begin >= on.output_projection.offset + on.output_projection.numel));
    CHECK(on.scratch.begin % 64 == 0);  // 256 bytes of fp32 (fp64: 32 elements suffice)
    if (k.multi_chunk) {
      CHECK(on.scratch_rows < 28);
      CHECK(on.chunks[0] == 2);  // 16 + 12 rows
    } else {
      CHECK(on.chunks[0] == 1);
    }
    CHECK(on.in_scratch[0]);
    CHECK_FALSE(on.in_scratch[1]);  // accumulating: the planned buffer, 8 rows a chunk
    CHECK(on.chunks[1] == 4);
    // The same chunking through the planned buffer, without the scratch.
    const ScratchRun off = scratch_run(c, on.chunk_rows, false, b);
    REQUIRE(off.scratch_rows == 0);
    CHECK_FALSE(off.in_scratch[0]);
    CHECK(off.chunks[0] == on.chunks[0]);
    for (int i = 0; i < 3; ++i) CHECK(on.sums[0][i] == off.sums[0][i]);
    CHECK(on.sums[0][2] == 24);
    CHECK(on.grad[0] == off.grad[0]);  // bitwise: no logit left in a gradient, no NaN kept
    // The accumulating pass uses the planned buffers in both (8-row chunks against chunk_rows):
    // summation order only (fp64 1e-12, fp32 2e-5 of the largest gradient, as above).
    const double tol = k.dtype == LS_DTYPE_FP64 ? 1e-12 : 2e-5;
    double scale = 0;
    const double diff = k.dtype == LS_DTYPE_FP64
                            ? max_abs_diff<double>(on.grad[1], off.grad[1], &scale)
                            : max_abs_diff<float>(on.grad[1], off.grad[1], &scale);
    REQUIRE(scale > 0);
    CHECK(diff <= tol * scale);
    for (int i = 0; i < 3; ++i)
      CHECK(std::fabs(on.sums[1][i] - off.sums[1][i]) <= tol * std::fabs(off.sums[1][i]));
  }
}

// ---- weight gradients overwritten in a fresh pass ----------------------------------------------

TEST_CASE("a fresh pass that overwrites weight gradients gives the gradients of zeroing them all") {
  // The same two passes (fresh, then accumulating) on two models: A zeroes only the accumulated
  // gradient ranges and runs the weight-gradient GEMMs with beta 0 in the fresh pass; B zeroes
  // the whole buffer and accumulates everywhere. The buffer starts as NaN, so an element that A
  // neither zeroes nor overwrites, or a GEMM that overwrites what something added before it,
  // shows. x and 0 + x are the same value: the gradients must be equal exactly.
  ChunkBatch tokens;  // 28 target rows of max_batch_tokens 32
  struct Case {
    const char* name;
    ls_arch arch;
    ls_dtype dtype;
    int pre_ln, share_all, share_out, learned_positions;
  };
  const Case cases[] = {
      {"encoder-decoder post-LN shared embeddings fp64", LS_ARCH_ENCODER_DECODER, LS_DTYPE_FP64, 0,
       1, 1, 0},
      {"encoder-decoder pre-LN untied everything fp32", LS_ARCH_ENCODER_DECODER, LS_DTYPE_FP32, 1,
       0, 0, 0},
      {"encoder-decoder pre-LN tied decoder table, learned positions fp32", LS_ARCH_ENCODER_DECODER,
       LS_DTYPE_FP32, 1, 0, 1, 1},
      {"decoder-only pre-LN fp64", LS_ARCH_DECODER_ONLY, LS_DTYPE_FP64, 1, 0, 1, 1},
  };
  for (const Case& k : cases) {
    const std::string case_name = k.name;
    CAPTURE(case_name);
    ls_model_config c = tiny_config(k.arch);  // dropout on everywhere
    c.dtype = k.dtype;
    c.pre_layer_norm = k.pre_ln;
    c.share_all_embeddings = k.share_all;
    c.share_decoder_input_output_embed = k.share_out;
    c.learned_positions = k.learned_positions;
    const ls_batch b = tokens.batch(k.arch);
    ScratchRun runs[2];
    size_t zeroed[2] = {0, 0}, n = 0;
    for (int overwrite = 0; overwrite < 2; ++overwrite) {
      const bool previous = ls::TransformerGraph::set_grad_overwrite_enabled(overwrite != 0);
      {
        ls::TransformerGraph g(c, false);
        n = g.params().total_elements();
        CHECK(g.overwrite_weight_grads == (overwrite != 0));
        for (const auto* v : {&g.grad_zero_before, &g.grad_zero_after_criterion})
          for (size_t i = 0; i < v->size(); i += 2) zeroed[overwrite] += (*v)[i + 1] - (*v)[i];
      }
      runs[overwrite] = scratch_run(c, 0, true, b);
      ls::TransformerGraph::set_grad_overwrite_enabled(previous);
    }
    CHECK(zeroed[0] == n);     // B zeroes everything
    CHECK(zeroed[1] < n / 2);  // A only the accumulated half or less (here: the tables)
    CHECK(zeroed[1] > 0);
    for (int pass = 0; pass < 2; ++pass) {
      CAPTURE(pass);
      for (int i = 0; i < 3; ++i) CHECK(runs[1].sums[pass][i] == runs[0].sums[pass][i]);
      double scale = 0;
      const double diff = k.dtype == LS_DTYPE_FP64
                              ? max_abs_diff<double>(runs[1].grad[pass], runs[0].grad[pass], &scale)
                              : max_abs_diff<float>(runs[1].grad[pass], runs[0].grad[pass], &scale);
      CHECK(scale > 0);
      CHECK(diff == 0.0);
    }
  }
}

// ---- LayerNorm-output recomputation (recompute_layer_norm) ----------------------------------

TEST_CASE("recompute_layer_norm: the same losses and bitwise-identical gradients") {
  // 3 rows x 4 target tokens with padding; the recomputed LN(x) is the same computation on the
  // same saved input, so on the CPU everything downstream is bit for bit the same.
  std::vector<int32_t> src = {5, 6, 7, 8, 2, 9, 10, 11, 2, 1, 12, 13, 2, 1, 1};
  std::vector<int32_t> prev = {2, 14, 15, 16, 2, 17, 18, 1, 2, 19, 1, 1};
  std::vector<int32_t> tgt = {14, 15, 16, 2, 17, 18, 2, 1, 19, 2, 1, 1};
  struct Case {
    const char* name;
    ls_arch arch;
    ls_dtype dtype;
  };
  const Case cases[] = {
      {"encoder-decoder pre-LN fp32", LS_ARCH_ENCODER_DECODER, LS_DTYPE_FP32},
      {"encoder-decoder pre-LN fp64", LS_ARCH_ENCODER_DECODER, LS_DTYPE_FP64},
      {"decoder-only pre-LN fp32", LS_ARCH_DECODER_ONLY, LS_DTYPE_FP32},
      {"decoder-only pre-LN fp64", LS_ARCH_DECODER_ONLY, LS_DTYPE_FP64},
  };
  for (const Case& k : cases) {
    const std::string case_name = k.name;
    CAPTURE(case_name);
    ls_model_config c = tiny_config(k.arch);  // dropout on everywhere
    c.pre_layer_norm = 1;
    c.dtype = k.dtype;
    c.recompute_layer_norm = 0;
    ls_batch b;
    ls_batch_init(&b);
    b.batch_size = 3;
    b.tgt_len = 4;
    b.prev_output_tokens = prev.data();
    b.target = tgt.data();
    if (k.arch == LS_ARCH_ENCODER_DECODER) {
      b.src_len = 5;
      b.src_tokens = src.data();
    }
    const CriterionRun off = criterion_run(c, 0, b);
    c.recompute_layer_norm = 1;
    const CriterionRun on = criterion_run(c, 0, b);
    for (int i = 0; i < 3; ++i) {
      CHECK(on.train[i] == off.train[i]);
      CHECK(on.eval[i] == off.eval[i]);
    }
    REQUIRE(on.grad.size() == off.grad.size());
    size_t differing = 0;
    for (size_t i = 0; i < off.grad.size(); ++i)
      differing += std::memcmp(&on.grad[i], &off.grad[i], sizeof(double)) != 0;
    CHECK(differing == 0);
    double gmax = 0;
    for (double g : off.grad) gmax = std::max(gmax, std::fabs(g));
    CHECK(gmax > 0);
  }
  // Whole training steps through the C API (Adam, clipping, dropout on): the same losses.
  ls_model_config c = tiny_config();
  c.pre_layer_norm = 1;
  c.recompute_layer_norm = 0;
  const std::vector<double> off = run_losses(c, 4);
  c.recompute_layer_norm = 1;
  const std::vector<double> on = run_losses(c, 4);
  CHECK(on == off);
}

TEST_CASE("recompute_layer_norm shrinks the pre-LN plan and leaves post-LN alone") {
  ls_model_config c = big_fp16_8192_config();
  c.pre_layer_norm = 1;
  c.recompute_layer_norm = 0;
  const ls_memory_report off = cuda_plan(c);
  c.recompute_layer_norm = 1;
  const ls_memory_report on = cuda_plan(c);
  MESSAGE("transformer-big pre-LN fp16, 8192 tokens: planned " << off.planned_bytes << " -> "
                                                               << on.planned_bytes
                                                               << ", lower bound "
                                                               << off.lower_bound_bytes << " -> "
                                                               << on.lower_bound_bytes);
  // 6 encoder blocks x 2 sublayers + 6 decoder blocks x 3 = 30 blocks, each LN(x) of
  // 8192 x 1024 fp16 (16 MiB) moved from saved activations to temporaries.
  const uint64_t ln_out = uint64_t{8192} * 1024 * 2;
  CHECK(off.saved_activations - on.saved_activations == 30 * ln_out);
  CHECK(on.lower_bound_bytes < off.lower_bound_bytes);
  CHECK(on.planned_bytes < off.planned_bytes);
  CHECK(on.persistent_bytes == off.persistent_bytes);
  CHECK(on.num_parameters == off.num_parameters);

  // Post-LN: the flag is ignored, the plan is the same to the byte.
  c.pre_layer_norm = 0;
  c.recompute_layer_norm = 0;
  const ls_memory_report post_off = cuda_plan(c);
  c.recompute_layer_norm = 1;
  const ls_memory_report post_on = cuda_plan(c);
  CHECK(std::memcmp(&post_on, &post_off, sizeof(post_on)) == 0);

  // The plan is sound, and each block's LN(x) lives twice, briefly: forward LN -> sublayer
  // forward, then recompute -> sublayer backward (its last use after the recompute's first).
  c.pre_layer_norm = 1;
  ls::TransformerGraph g(c, true);  // planning only
  const ls::Plan p = g.plan_schedule();
  g.planner().check(p);
  for (const char* block : {"encoder.layers.0.self_attn_block", "decoder.layers.5.ffn_block",
                            "decoder.layers.3.encoder_attn_block"}) {
    CAPTURE(block);
    const std::string prefix = std::string(block) + ".";
    const ls::BufferId fwd = g.planner().find(prefix + "ln_out");
    const ls::BufferId bwd = g.planner().find(prefix + "ln_out_recomputed");
    const ls::BufferId out = g.planner().find(prefix + "out");
    REQUIRE(fwd.valid());
    REQUIRE(bwd.valid());
    REQUIRE(out.valid());
    const ls::BufferDesc& f = g.planner().buffer(fwd);
    const ls::BufferDesc& r = g.planner().buffer(bwd);
    CHECK(f.category == ls::MemCategory::Temporaries);
    CHECK(r.category == ls::MemCategory::Temporaries);
    // Forward's copy is dead before the block's output is even written...
    CHECK(f.last_use < g.planner().buffer(out).first_use);
    // ...and the recomputed one is born in backward, after the forward has ended.
    CHECK(r.first_use > g.planner().buffer(g.d_dec_out).first_use);
    CHECK(r.first_use > f.last_use);
  }
}

namespace {

// A memory option of ls_model_config (an int32 flag appended after `previous`, default
// `dflt`) through the C API: a caller whose struct ends before the flag (or before `previous`)
// never has it read, so it gets the default and the default plan; the full struct sets the other
// value, reports it back and plans less (turned on) or more (turned off), and the live model's
// arena is that plan; values other than 0 and 1 fail naming the flag.
void check_memory_flag_through_capi(ls_context* ctx, ls_model_config c,
                                    int32_t ls_model_config::*flag, size_t flag_offset,
                                    size_t previous_offset, const char* name, int32_t dflt) {
  CAPTURE(name);
  CHECK(c.*flag == dflt);  // the default
  const int32_t other = 1 - dflt;
  ls_memory_report base;
  ls_memory_report_init(&base);
  REQUIRE(ls_plan_memory(&c, LS_DEVICE_CPU, &base) == LS_OK);
  for (size_t size : {flag_offset, previous_offset}) {
    CAPTURE(size);
    ls_model_config old = c;
    old.*flag = other;
    old.struct_size = size;
    ls_memory_report r;
    ls_memory_report_init(&r);
    REQUIRE_MESSAGE(ls_plan_memory(&old, LS_DEVICE_CPU, &r) == LS_OK, ls_last_error());
    CHECK(r.saved_activations == base.saved_activations);
    CHECK(r.planned_bytes == base.planned_bytes);
    ls_model* m = nullptr;
    REQUIRE_MESSAGE(ls_model_create(ctx, &old, &m) == LS_OK, ls_last_error());
    ls_model_config got;
    ls_model_config_init(&got);
    REQUIRE(ls_model_get_config(m, &got) == LS_OK);
    CHECK(got.*flag == dflt);
    ls_model_destroy(m);
  }
  c.*flag = other;
  ls_memory_report r;
  ls_memory_report_init(&r);
  REQUIRE_MESSAGE(ls_plan_memory(&c, LS_DEVICE_CPU, &r) == LS_OK, ls_last_error());
  if (other == 1) {
    CHECK(r.saved_activations < base.saved_activations);
    CHECK(r.planned_bytes < base.planned_bytes);
  } else {
    CHECK(r.saved_activations > base.saved_activations);
    CHECK(r.planned_bytes > base.planned_bytes);
  }
  ls_model* m = nullptr;
  REQUIRE_MESSAGE(ls_model_create(ctx, &c, &m) == LS_OK, ls_last_error());
  ls_model_config got;
  ls_model_config_init(&got);
  REQUIRE(ls_model_get_config(m, &got) == LS_OK);
  CHECK(got.*flag == other);
  ls_memory_report actual;
  ls_memory_report_init(&actual);
  REQUIRE(ls_model_memory_report(m, &actual) == LS_OK);
  CHECK(actual.planned_bytes == r.planned_bytes);
  ls_model_destroy(m);
  c.*flag = 2;
  m = nullptr;
  CHECK(ls_model_create(ctx, &c, &m) == LS_ERR_INVALID_ARGUMENT);
  const std::string message = ls_last_error();
  CHECK_MESSAGE(message.find(name) != std::string::npos, message);
  CHECK(m == nullptr);
}

ls_context* cpu_context() {
  ls_context* ctx = nullptr;
  ls_context_options o;
  ls_context_options_init(&o);
  o.device = LS_DEVICE_CPU;
  REQUIRE(ls_context_create(&o, &ctx) == LS_OK);
  return ctx;
}

}  // namespace

TEST_CASE("recompute_layer_norm through the C API: old struct sizes, validation, round trip") {
  ls_context* ctx = cpu_context();
  ls_model_config c = tiny_config();
  c.pre_layer_norm = 1;
  // On by default: an old caller gets it, and turning it off plans more.
  check_memory_flag_through_capi(ctx, c, &ls_model_config::recompute_layer_norm,
                                 offsetof(ls_model_config, recompute_layer_norm),
                                 offsetof(ls_model_config, eos_idx), "recompute_layer_norm", 1);
  ls_context_destroy(ctx);
}

TEST_CASE(
    "layer_norm_backward_from_output through the C API: old struct sizes, validation, round "
    "trip") {
  ls_context* ctx = cpu_context();
  // Unlike recompute_layer_norm it applies to every LayerNorm: post-LN plans shrink too.
  for (int32_t pre_ln : {1, 0}) {
    CAPTURE(pre_ln);
    ls_model_config c = tiny_config();
    c.pre_layer_norm = pre_ln;
    check_memory_flag_through_capi(ctx, c, &ls_model_config::layer_norm_backward_from_output,
                                   offsetof(ls_model_config, layer_norm_backward_from_output),
                                   offsetof(ls_model_config, recompute_layer_norm),
                                   "layer_norm_backward_from_output", 0);
    // A caller whose struct ends before the field gets it off, whatever its struct's tail holds,
    // and keeps its recompute_layer_norm.
    {
      ls_model_config old = c;
      old.recompute_layer_norm = 1;
      old.layer_norm_backward_from_output = 1;
      old.struct_size = offsetof(ls_model_config, layer_norm_backward_from_output);
      ls_model* m = nullptr;
      REQUIRE_MESSAGE(ls_model_create(ctx, &old, &m) == LS_OK, ls_last_error());
      ls_model_config got;
      ls_model_config_init(&got);
      REQUIRE(ls_model_get_config(m, &got) == LS_OK);
      CHECK(got.recompute_layer_norm == 1);
      CHECK(got.layer_norm_backward_from_output == 0);
      ls_model_destroy(m);
    }
    // With recompute_layer_norm (on by default) it wins: the plan is that of recompute_layer_norm
    // off, to the byte, and the model trains.
    c.layer_norm_backward_from_output = 1;
    c.recompute_layer_norm = 1;
    ls_memory_report both;
    ls_memory_report_init(&both);
    REQUIRE_MESSAGE(ls_plan_memory(&c, LS_DEVICE_CPU, &both) == LS_OK, ls_last_error());
    c.recompute_layer_norm = 0;
    ls_memory_report alone;
    ls_memory_report_init(&alone);
    REQUIRE_MESSAGE(ls_plan_memory(&c, LS_DEVICE_CPU, &alone) == LS_OK, ls_last_error());
    CHECK(std::memcmp(&both, &alone, sizeof(both)) == 0);
    c.recompute_layer_norm = 1;
    CHECK(run_losses(c, 2) == run_losses(
                                  [&] {
                                    ls_model_config a = c;
                                    a.recompute_layer_norm = 0;
                                    return a;
                                  }(),
                                  2));
  }
  ls_context_destroy(ctx);
}

TEST_CASE("layer_norm_backward_from_output: exactly the LayerNorm inputs and means leave the "
          "plan, and training follows the default") {
  ls_model_config c = big_fp16_8192_config();
  const uint64_t td = 8192ull * 1024 * 2, stats = 8192ull * 4;  // one [T, d] fp16; [T] fp32
  c.recompute_layer_norm = 0;  // against the LayerNorm backward from its saved input
  for (int32_t pre : {1, 0}) {
    CAPTURE(pre);
    c.pre_layer_norm = pre;
    c.layer_norm_backward_from_output = 0;
    const ls_memory_report off = cuda_plan(c);
    c.layer_norm_backward_from_output = 1;
    const ls_memory_report on = cuda_plan(c);
    MESSAGE("transformer-big " << std::string(pre ? "pre" : "post") << "-LN fp16, 8192 tokens: saved "
                               << off.saved_activations << " -> " << on.saved_activations
                               << ", planned " << off.planned_bytes << " -> " << on.planned_bytes
                               << ", arena " << off.total_bytes << " -> " << on.total_bytes);
    // 30 blocks (6 x 2 encoder, 6 x 3 decoder). Pre-LN: each block's input (the previous
    // block's output, or the embedding output for the first) and mean, and the final
    // LayerNorms' means (their inputs are block outputs, counted). Post-LN: each block's
    // LayerNorm input and mean.
    const uint64_t dropped = pre ? 32 * td + 32 * stats : 30 * td + 30 * stats;
    CHECK(off.saved_activations - on.saved_activations == dropped);
    CHECK(on.no_reuse_bytes == off.no_reuse_bytes);  // the same buffers, only their lifetimes
    // The peak (at the start of backward, where every saved activation is alive) drops too.
    CHECK(on.lower_bound_bytes < off.lower_bound_bytes);
    CHECK(on.planned_bytes < off.planned_bytes);
    CHECK(on.persistent_bytes == off.persistent_bytes);
  }

  // Whole training steps through the C API (Adam, clipping, dropout on), fp32: the same losses
  // up to the rounding of y in fp32 (6e-8 relative, LayerNorm weights near 1), far below 1e-5.
  for (int32_t pre : {1, 0}) {
    CAPTURE(pre);
    ls_model_config t = tiny_config();
    t.pre_layer_norm = pre;
    const std::vector<double> off = run_losses(t, 4);
    t.layer_norm_backward_from_output = 1;
    const std::vector<double> on = run_losses(t, 4);
    REQUIRE(on.size() == off.size());
    for (size_t i = 0; i < on.size(); ++i) {
      CAPTURE(i);
      CHECK(on[i] == doctest::Approx(off[i]).epsilon(1e-5));
    }
  }
}
