// TimedOps: an Ops decorator for benchmarks. It forwards every call to another Ops (the CUDA
// backend) and, while enabled, brackets each call that runs on the device with a pair of CUDA
// events recorded on the backend's stream, labelled by what ran: the op's name, and for GEMMs
// its role and fused epilogue ("gemm fwd+bias", "gemm wgrad+bgrad", "gemm batched", ...).
// report() synchronises and sums, per label, the calls, the device time between each pair of
// events and (GEMMs) the FLOPs; the span from the first event to the last, minus the sum, is
// the time the device sat between kernels (launch gaps).
//
// The events are created once, at construction (2 x capacity of them); a call records two of
// them and appends one fixed-size record to a preallocated array: nothing is allocated per call.
// Calls that queue no device work of their own (to_host, from_host, synchronize, host memory,
// marks) are forwarded untimed, and so is everything while a stream capture is open.
//
// Attribution runs (set_dropped, set_dropping): while dropping is on, the calls whose label the
// predicate selected are neither run nor timed. The step's results are then meaningless; what
// runs is the device work of the other calls, on whatever their input buffers hold (a dropped
// call's output keeps what was last stored in its memory), so that the step's rate without a
// group of kernels can be measured under the same power limit as with them (bench_model_step
// --drop, with its caveats).
//
// GEMM roles, from the shape of the call (the layers' conventions in layer_common.h):
//   batched: batch > 1 (per-head attention products);
//   wgrad:   trans_a (weight gradient dW += dy^T x);
//   fwd:     trans_b (y = x W^T);
//   dgrad:   neither (dx = dy W).
// Header-only so that bench/CMakeLists.txt (one executable per bench/cuda/*.cpp) needs no change.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "layers/kernels/ops.h"
#include "runtime/cuda_check.h"
#include "runtime/error.h"

namespace ls {
namespace bench {

class TimedOps final : public Ops {
 public:
  // A GEMM's problem: m x n x k, batch, whether it accumulates into C (beta != 0).
  struct GemmShape {
    int64_t m = 0, n = 0, k = 0, batch = 0;
    bool accumulate = false;
    double flops() const {  // 2 m n k batch; 0 for the empty shape of the other ops
      return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) *
             static_cast<double>(batch);
    }
  };
  // Per-label totals over the calls recorded since the last reset().
  struct Row {
    std::string label;
    int64_t calls = 0;
    double ms = 0;     // summed device time between each call's events
    double share = 0;  // ms / Report::timed_ms
    double flops = 0;  // GEMMs: 2 m n k batch per call; 0 for other ops
    bool gemm = false;
  };
  struct Report {
    std::vector<Row> rows;  // labels that ran, by time, largest first
    // GEMMs by label and problem shape ("gemm wgrad 1024x1024x8192 +C"), by time, largest first
    std::vector<Row> gemm_shapes;
    int64_t calls = 0;
    double timed_ms = 0;  // sum over rows
    double gemm_ms = 0, rest_ms = 0;
    double gemm_flops = 0;
    double span_ms = 0;  // first call's start event to last call's end event
    double gap_ms() const { return span_ms - timed_ms; }
    double gemm_tflops() const { return gemm_ms > 0 ? gemm_flops / (gemm_ms * 1e9) : 0; }
  };

  // inner: the backend that runs the kernels; stream: the cudaStream_t it launches on
  // (CudaOps::stream()); capacity: the most calls recorded between two reset()s.
  TimedOps(Ops& inner, void* stream, size_t capacity = 4096)
      : inner_(inner), stream_(static_cast<cudaStream_t>(stream)) {
    LS_CHECK_ARG(capacity > 0, "TimedOps: capacity must be positive");
    build_labels();
    records_.resize(capacity);
    events_.reserve(2 * capacity);
    for (size_t i = 0; i < 2 * capacity; ++i) {
      cudaEvent_t e = nullptr;
      cudaError_t err = cudaEventCreate(&e);
      if (err != cudaSuccess) destroy_events();
      LS_CUDA_CHECK(err);
      events_.push_back(e);
    }
  }
  ~TimedOps() override { destroy_events(); }
  TimedOps(const TimedOps&) = delete;
  TimedOps& operator=(const TimedOps&) = delete;

  // Recording is off until enabled; while off, calls are only forwarded.
  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  // Which labels an attribution run drops: drop(label) for each label ("gemm fwd+bias", ...).
  template <class Pred>
  void set_dropped(Pred&& drop) {
    dropped_.assign(labels_.size(), false);
    for (size_t i = 0; i < labels_.size(); ++i) dropped_[i] = drop(labels_[i]);
  }
  // While on, the calls set_dropped selected are skipped (neither run nor timed).
  void set_dropping(bool on) { dropping_ = on; }
  // Forgets the recorded calls (their events may be re-recorded right away).
  void reset() { count_ = 0; }
  size_t recorded() const { return count_; }

  // Waits for the stream, then sums the recorded calls per label.
  Report report() const {
    LS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<Row> by_label(labels_.size());
    for (size_t i = 0; i < labels_.size(); ++i) {
      by_label[i].label = labels_[i];
      by_label[i].gemm = i >= kGemmFirst;
    }
    Report r;
    std::vector<float> call_ms(count_);
    for (size_t i = 0; i < count_; ++i) {
      LS_CUDA_CHECK(cudaEventElapsedTime(&call_ms[i], events_[2 * i], events_[2 * i + 1]));
      Row& row = by_label[records_[i].label];
      row.calls += 1;
      row.ms += call_ms[i];
      row.flops += records_[i].shape.flops();
    }
    if (count_ > 0) {
      float span = 0;
      LS_CUDA_CHECK(cudaEventElapsedTime(&span, events_[0], events_[2 * count_ - 1]));
      r.span_ms = span;
    }
    r.calls = static_cast<int64_t>(count_);
    for (Row& row : by_label) {
      if (row.calls == 0) continue;
      r.timed_ms += row.ms;
      (row.gemm ? r.gemm_ms : r.rest_ms) += row.ms;
      r.gemm_flops += row.flops;
      r.rows.push_back(row);
    }
    for (Row& row : r.rows) row.share = r.timed_ms > 0 ? row.ms / r.timed_ms : 0;
    const auto by_time = [](const Row& a, const Row& b) { return a.ms > b.ms; };
    std::sort(r.rows.begin(), r.rows.end(), by_time);
    std::map<std::string, Row> shapes;
    for (size_t i = 0; i < count_; ++i) {
      const Record& rec = records_[i];
      if (rec.label < kGemmFirst) continue;
      char key[160];
      std::snprintf(key, sizeof key, "%s %lldx%lldx%lld%s%s", labels_[rec.label].c_str(),
                    static_cast<long long>(rec.shape.m), static_cast<long long>(rec.shape.n),
                    static_cast<long long>(rec.shape.k),
                    rec.shape.batch > 1 ? (" x" + std::to_string(rec.shape.batch)).c_str() : "",
                    rec.shape.accumulate ? " +C" : "");
      Row& row = shapes[key];
      row.label = key;
      row.gemm = true;
      row.calls += 1;
      row.ms += call_ms[i];
      row.flops += rec.shape.flops();
    }
    for (auto& kv : shapes) {
      kv.second.share = r.gemm_ms > 0 ? kv.second.ms / r.gemm_ms : 0;
      r.gemm_shapes.push_back(kv.second);
    }
    std::sort(r.gemm_shapes.begin(), r.gemm_shapes.end(), by_time);
    return r;
  }

  // The report as a table, with times and call counts divided by `iterations` (the number of
  // timed passes that the recorded calls cover).
  static std::string format(const Report& r, int iterations) {
    const double it = iterations > 0 ? iterations : 1;
    std::string out;
    char line[256];
    std::snprintf(line, sizeof line, "  %-28s %7s %10s %7s %9s\n", "op", "calls", "ms/iter",
                  "share", "TFLOP/s");
    out += line;
    for (const Row& row : r.rows) {
      char tf[32] = "";
      if (row.gemm && row.ms > 0) std::snprintf(tf, sizeof tf, "%.1f", row.flops / (row.ms * 1e9));
      std::snprintf(line, sizeof line, "  %-28s %7.1f %10.4f %6.1f%% %9s\n", row.label.c_str(),
                    row.calls / it, row.ms / it, 100 * row.share, tf);
      out += line;
    }
    if (!r.gemm_shapes.empty()) {
      std::snprintf(line, sizeof line, "  %-44s %7s %10s %9s %9s\n", "GEMM by shape (m x n x k)",
                    "calls", "ms/iter", "of GEMM", "TFLOP/s");
      out += line;
      for (const Row& row : r.gemm_shapes) {
        std::snprintf(line, sizeof line, "  %-44s %7.1f %10.4f %8.1f%% %9.1f\n", row.label.c_str(),
                      row.calls / it, row.ms / it, 100 * row.share,
                      row.ms > 0 ? row.flops / (row.ms * 1e9) : 0.0);
        out += line;
      }
    }
    const double t = r.timed_ms > 0 ? r.timed_ms : 1;
    std::snprintf(line, sizeof line,
                  "  GEMM %.4f ms/iter (%.1f%%, %.1f TFLOP/s), rest %.4f ms/iter (%.1f%%); "
                  "kernels %.4f ms/iter, gaps between them %.4f ms/iter\n",
                  r.gemm_ms / it, 100 * r.gemm_ms / t, r.gemm_tflops(), r.rest_ms / it,
                  100 * r.rest_ms / t, r.timed_ms / it, r.gap_ms() / it);
    out += line;
    return out;
  }

  // ---- Ops: forwarded ----
  bool is_cuda() const override { return inner_.is_cuda(); }
  void set_workspace(void* p, size_t bytes) override { inner_.set_workspace(p, bytes); }
  void set_allow_tf32(bool on) override { inner_.set_allow_tf32(on); }
  void set_gemm_autotune(bool on) override { inner_.set_gemm_autotune(on); }
  void set_deterministic(bool on) override { inner_.set_deterministic(on); }

  void zero(void* p, size_t bytes) override {
    timed(kZero, [&] { inner_.zero(p, bytes); });
  }
  void zero_ranges(void* base, const uint64_t* ranges, int64_t count, uint64_t max_elements,
                   size_t elem_bytes) override {
    timed(kZero, [&] { inner_.zero_ranges(base, ranges, count, max_elements, elem_bytes); });
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    timed(kCopy, [&] { inner_.copy(dst, src, bytes); });
  }
  void to_host(void* host_dst, const void* src, size_t bytes) override {
    inner_.to_host(host_dst, src, bytes);
  }
  void from_host(void* dst, const void* host_src, size_t bytes) override {
    inner_.from_host(dst, host_src, bytes);
  }
  void synchronize() override { inner_.synchronize(); }
  void cast(const void* src, DType src_t, void* dst, DType dst_t, size_t n) override {
    timed(kCast, [&] { inner_.cast(src, src_t, dst, dst_t, n); });
  }
  void add_inplace(void* y, const void* x, DType dt, size_t n) override {
    timed(kAddInplace, [&] { inner_.add_inplace(y, x, dt, n); });
  }

  void gemm(const GemmArgs& g) override {
    timed(gemm_label(g), GemmShape{g.m, g.n, g.k, g.batch, g.beta != 0.f}, [&] { inner_.gemm(g); });
  }

  void embedding_forward(const EmbeddingArgs& a, const void* table, void* out) override {
    timed(kEmbeddingForward, [&] { inner_.embedding_forward(a, table, out); });
  }
  void embedding_backward(const EmbeddingArgs& a, const void* d_out, void* d_table,
                          void* d_positions, bool deterministic) override {
    timed(kEmbeddingBackward,
          [&] { inner_.embedding_backward(a, d_out, d_table, d_positions, deterministic); });
  }

  void layernorm_forward(const void* x, const void* gamma, const void* beta, void* y, void* mean,
                         void* rstd, int64_t rows, int64_t cols, float eps, DType dt) override {
    timed(kLayernormForward,
          [&] { inner_.layernorm_forward(x, gamma, beta, y, mean, rstd, rows, cols, eps, dt); });
  }
  void layernorm_backward(const void* dy, const void* x, const void* gamma, const void* mean,
                          const void* rstd, const void* d_residual, void* dx, void* d_gamma,
                          void* d_beta, int64_t rows, int64_t cols, DType dt) override {
    timed(kLayernormBackward, [&] {
      inner_.layernorm_backward(dy, x, gamma, mean, rstd, d_residual, dx, d_gamma, d_beta, rows,
                                cols, dt);
    });
  }
  void layernorm_backward_with_output(const void* dy, const void* x, const void* gamma,
                                      const void* beta, const void* mean, const void* rstd,
                                      const void* d_residual, void* dx, void* y, void* d_gamma,
                                      void* d_beta, int64_t rows, int64_t cols, DType dt) override {
    timed(kLayernormBackwardWithOutput, [&] {
      inner_.layernorm_backward_with_output(dy, x, gamma, beta, mean, rstd, d_residual, dx, y,
                                            d_gamma, d_beta, rows, cols, dt);
    });
  }
  void layernorm_backward_from_output(const void* dy, const void* y, const void* gamma,
                                      const void* beta, const void* rstd, const void* d_residual,
                                      void* dx, void* d_gamma, void* d_beta, int64_t rows,
                                      int64_t cols, DType dt) override {
    timed(kLayernormBackwardFromOutput, [&] {
      inner_.layernorm_backward_from_output(dy, y, gamma, beta, rstd, d_residual, dx, d_gamma,
                                            d_beta, rows, cols, dt);
    });
  }

  void bias_dropout_residual_forward(const void* x, const void* bias, const void* residual,
                                     void* out, int64_t rows, int64_t cols, float p, DropoutKey key,
                                     DType dt) override {
    timed(kBiasDropoutResidualForward, [&] {
      inner_.bias_dropout_residual_forward(x, bias, residual, out, rows, cols, p, key, dt);
    });
  }
  void bias_dropout_residual_layernorm_forward(const void* x, const void* bias,
                                               const void* residual, void* out, const void* gamma,
                                               const void* beta, void* y, void* mean, void* rstd,
                                               int64_t rows, int64_t cols, float p, DropoutKey key,
                                               float eps, DType dt) override {
    timed(kResidualLayernormForward, [&] {
      inner_.bias_dropout_residual_layernorm_forward(x, bias, residual, out, gamma, beta, y, mean,
                                                     rstd, rows, cols, p, key, eps, dt);
    });
  }
  void dropout_bias_backward(const void* d_out, void* dx, void* d_bias, int64_t rows, int64_t cols,
                             float p, DropoutKey key, DType dt) override {
    timed(kDropoutBiasBackward,
          [&] { inner_.dropout_bias_backward(d_out, dx, d_bias, rows, cols, p, key, dt); });
  }
  void act_dropout_forward(const void* pre, void* out, int64_t rows, int64_t cols, Activation act,
                           float p, DropoutKey key, DType dt) override {
    timed(kActDropoutForward,
          [&] { inner_.act_dropout_forward(pre, out, rows, cols, act, p, key, dt); });
  }
  void act_dropout_backward(const void* d_out, const void* pre, void* d_pre, void* d_bias,
                            int64_t rows, int64_t cols, Activation act, float p, DropoutKey key,
                            DType dt) override {
    timed(kActDropoutBackward, [&] {
      inner_.act_dropout_backward(d_out, pre, d_pre, d_bias, rows, cols, act, p, key, dt);
    });
  }
  void relu_dropout_backward_from_output(const void* d_out, const void* out, void* d_pre,
                                         void* d_bias, int64_t rows, int64_t cols, float p,
                                         DType dt) override {
    timed(kReluDropoutBackwardFromOutput, [&] {
      inner_.relu_dropout_backward_from_output(d_out, out, d_pre, d_bias, rows, cols, p, dt);
    });
  }
  void dropout_forward(const void* x, void* out, size_t n, float p, DropoutKey key,
                       DType dt) override {
    timed(kDropoutForward, [&] { inner_.dropout_forward(x, out, n, p, key, dt); });
  }
  void bias_grad(const void* dy, void* d_bias, int64_t rows, int64_t cols, DType dt) override {
    timed(kBiasGrad, [&] { inner_.bias_grad(dy, d_bias, rows, cols, dt); });
  }

  void split_heads(const void* in, const void* bias, void* out, int64_t n, int64_t batch,
                   int64_t len, int64_t heads, int64_t head_dim, DType dt) override {
    timed(kSplitHeads,
          [&] { inner_.split_heads(in, bias, out, n, batch, len, heads, head_dim, dt); });
  }
  void merge_heads(const void* in, void* out, int64_t n, int64_t batch, int64_t len, int64_t heads,
                   int64_t head_dim, DType dt) override {
    timed(kMergeHeads, [&] { inner_.merge_heads(in, out, n, batch, len, heads, head_dim, dt); });
  }
  void softmax_forward(const void* scores, void* probs, const uint8_t* key_pad, bool causal,
                       int64_t batch, int64_t heads, int64_t len_q, int64_t len_k,
                       DType dt) override {
    timed(kSoftmaxForward, [&] {
      inner_.softmax_forward(scores, probs, key_pad, causal, batch, heads, len_q, len_k, dt);
    });
  }
  void softmax_backward(const void* d_dropped, const void* probs, void* d_scores, int64_t rows,
                        int64_t len_k, float p, DropoutKey key, DType dt) override {
    timed(kSoftmaxBackward,
          [&] { inner_.softmax_backward(d_dropped, probs, d_scores, rows, len_k, p, key, dt); });
  }
  void attention_forward(const AttentionArgs& a) override {
    timed(kAttentionForward, [&] { inner_.attention_forward(a); });
  }
  void attention_backward(const AttentionArgs& a, const void* d_ctx, void* dq, void* dk, void* dv,
                          void* delta, void* d_bias) override {
    timed(kAttentionBackward,
          [&] { inner_.attention_backward(a, d_ctx, dq, dk, dv, delta, d_bias); });
  }

  void cross_entropy_forward(const void* logits, const int32_t* targets, void* lse, void* sums,
                             int64_t rows, int64_t vocab, int32_t padding_idx, float eps,
                             DType dt) override {
    timed(kCrossEntropyForward, [&] {
      inner_.cross_entropy_forward(logits, targets, lse, sums, rows, vocab, padding_idx, eps, dt);
    });
  }
  void cross_entropy_backward(const void* logits, const int32_t* targets, const void* lse,
                              const void* grad_scale_dev, void* d_logits, int64_t rows,
                              int64_t vocab, int32_t padding_idx, float eps, DType dt) override {
    timed(kCrossEntropyBackward, [&] {
      inner_.cross_entropy_backward(logits, targets, lse, grad_scale_dev, d_logits, rows, vocab,
                                    padding_idx, eps, dt);
    });
  }
  void cross_entropy_forward_backward(const void* logits, const int32_t* targets, void* lse,
                                      void* sums, const void* grad_scale_dev, void* d_logits,
                                      int64_t rows, int64_t vocab, int32_t padding_idx, float eps,
                                      DType dt) override {
    timed(kCrossEntropyForwardBackward, [&] {
      inner_.cross_entropy_forward_backward(logits, targets, lse, sums, grad_scale_dev, d_logits,
                                            rows, vocab, padding_idx, eps, dt);
    });
  }

  // ---- optimizer, inputs and counters, host memory, step capture ----
  // (The part of ops.h that moves most: keep these last.)
  void sum_squares(const void* x, size_t n, void* out, DType acc) override {
    timed(kSumSquares, [&] { inner_.sum_squares(x, n, out, acc); });
  }
  void update_control(const void* sumsq_dev, void* tokens_dev, const UpdateControlArgs& args,
                      TrainState* state_dev, void* grad_scale_dev, DType acc) override {
    timed(kUpdateControl, [&] {
      inner_.update_control(sumsq_dev, tokens_dev, args, state_dev, grad_scale_dev, acc);
    });
  }
  void adam_update(void* params, const void* grads, void* m, void* v, void* work, DType work_t,
                   size_t n, const AdamArgs& h, const AdamStep* step_dev, DType acc) override {
    timed(kAdamUpdate,
          [&] { inner_.adam_update(params, grads, m, v, work, work_t, n, h, step_dev, acc); });
  }
  void import_tokens(const int32_t* src, int32_t* dst, int64_t n, int32_t vocab,
                     int32_t padding_idx, uint32_t* bad_count_dev) override {
    timed(kImportTokens,
          [&] { inner_.import_tokens(src, dst, n, vocab, padding_idx, bad_count_dev); });
  }
  void padding_mask(const int32_t* tokens, uint8_t* mask, int64_t n, int32_t padding_idx) override {
    timed(kPaddingMask, [&] { inner_.padding_mask(tokens, mask, n, padding_idx); });
  }
  void counter_add(uint64_t* counter, uint64_t v) override {
    timed(kCounterAdd, [&] { inner_.counter_add(counter, v); });
  }
  void scalar_accumulate(void* sum, const void* x, DType acc) override {
    timed(kScalarAccumulate, [&] { inner_.scalar_accumulate(sum, x, acc); });
  }
  void* host_alloc(size_t bytes) override { return inner_.host_alloc(bytes); }
  void host_free(void* p) override { inner_.host_free(p); }
  // While a capture is open nothing is timed (events recorded into a capture would become graph
  // nodes); a replay is timed as one call.
  bool supports_capture() const override { return inner_.supports_capture(); }
  void capture_begin() override {
    inner_.capture_begin();
    capturing_ = true;
  }
  void* capture_end() override {
    capturing_ = false;
    return inner_.capture_end();
  }
  void graph_launch(void* graph) override {
    timed(kGraphLaunch, [&] { inner_.graph_launch(graph); });
  }
  void graph_destroy(void* graph) override { inner_.graph_destroy(graph); }
  void mark() override { inner_.mark(); }
  void wait_mark() override { inner_.wait_mark(); }

 private:
  // Labels of the non-GEMM ops, then the GEMM labels (role x epilogue) from kGemmFirst on.
  enum Label : uint16_t {
    kZero,
    kCopy,
    kCast,
    kAddInplace,
    kEmbeddingForward,
    kEmbeddingBackward,
    kLayernormForward,
    kLayernormBackward,
    kLayernormBackwardWithOutput,
    kLayernormBackwardFromOutput,
    kResidualLayernormForward,
    kBiasDropoutResidualForward,
    kDropoutBiasBackward,
    kActDropoutForward,
    kActDropoutBackward,
    kReluDropoutBackwardFromOutput,
    kDropoutForward,
    kBiasGrad,
    kSplitHeads,
    kMergeHeads,
    kSoftmaxForward,
    kSoftmaxBackward,
    kAttentionForward,
    kAttentionBackward,
    kCrossEntropyForward,
    kCrossEntropyBackward,
    kCrossEntropyForwardBackward,
    kSumSquares,
    kUpdateControl,
    kAdamUpdate,
    kImportTokens,
    kPaddingMask,
    kCounterAdd,
    kScalarAccumulate,
    kGraphLaunch,
    kGemmFirst,
  };
  static constexpr int kGemmRoles = 4;      // fwd, dgrad, wgrad, batched
  static constexpr int kGemmEpilogues = 5;  // Epilogue::None .. Epilogue::BGradA

  struct Record {
    uint16_t label;
    GemmShape shape;  // GEMMs only (the flops come from it)
  };

  // Runs `call` between a start and an end event when enabled. A call that throws leaves its
  // slot unclaimed (count_ moves only after the end event), so the pairs stay matched.
  template <class F>
  void timed(uint16_t label, F&& call) {
    timed(label, GemmShape{}, call);
  }
  template <class F>
  void timed(uint16_t label, const GemmShape& shape, F&& call) {
    if (dropping_ && !capturing_ && label < dropped_.size() && dropped_[label]) return;
    if (!enabled_ || capturing_) {
      call();
      return;
    }
    LS_REQUIRE(count_ < records_.size(), LS_ERR_INVALID_ARGUMENT,
               "TimedOps: more than " << records_.size()
                                      << " timed calls since the last reset(); construct it "
                                         "with a larger capacity");
    LS_CUDA_CHECK(cudaEventRecord(events_[2 * count_], stream_));
    call();
    LS_CUDA_CHECK(cudaEventRecord(events_[2 * count_ + 1], stream_));
    records_[count_] = Record{label, shape};
    ++count_;
  }

  static uint16_t gemm_label(const GemmArgs& g) {
    int role = g.batch > 1 ? 3 : g.trans_a ? 2 : g.trans_b ? 0 : 1;
    int ep = static_cast<int>(g.epilogue);
    if (ep < 0 || ep >= kGemmEpilogues) ep = 0;
    return static_cast<uint16_t>(kGemmFirst + role * kGemmEpilogues + ep);
  }

  void build_labels() {
    labels_ = {"zero",
               "copy",
               "cast",
               "add_inplace",
               "embedding_forward",
               "embedding_backward",
               "layernorm_forward",
               "layernorm_backward",
               "layernorm_bwd_with_output",
               "layernorm_bwd_from_output",
               "residual_layernorm_fwd",
               "bias_dropout_residual_fwd",
               "dropout_bias_backward",
               "act_dropout_forward",
               "act_dropout_backward",
               "relu_dropout_bwd_from_output",
               "dropout_forward",
               "bias_grad",
               "split_heads",
               "merge_heads",
               "softmax_forward",
               "softmax_backward",
               "attention_forward",
               "attention_backward",
               "cross_entropy_forward",
               "cross_entropy_backward",
               "cross_entropy_fwd_bwd",
               "sum_squares",
               "update_control",
               "adam_update",
               "import_tokens",
               "padding_mask",
               "counter_add",
               "scalar_accumulate",
               "graph_launch"};
    const char* roles[kGemmRoles] = {"fwd", "dgrad", "wgrad", "batched"};
    const char* epilogues[kGemmEpilogues] = {"", "+bias", "+bias+act", "+dact+bgrad", "+bgrad"};
    for (const char* role : roles)
      for (const char* ep : epilogues) labels_.push_back(std::string("gemm ") + role + ep);
    LS_REQUIRE(labels_.size() == kGemmFirst + kGemmRoles * kGemmEpilogues, LS_ERR_INTERNAL,
               "TimedOps: label names out of step with the Label enum");
  }

  void destroy_events() {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    events_.clear();
  }

  Ops& inner_;
  cudaStream_t stream_;
  bool enabled_ = false;
  bool capturing_ = false;
  bool dropping_ = false;
  std::vector<bool> dropped_;  // by label, for attribution runs
  std::vector<std::string> labels_;
  std::vector<Record> records_;
  std::vector<cudaEvent_t> events_;
  size_t count_ = 0;
};

}  // namespace bench
}  // namespace ls
