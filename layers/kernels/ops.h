// The one kernel interface the layers call. The CPU reference backend (kernels/cpu/) and the
// CUDA backend (kernels/cuda/) implement it with the same semantics; the context owns one
// instance for its device, so layers never ask which device they run on.
//
// Conventions (every implementation must follow them exactly; the CPU reference is the oracle):
// - Row-major everywhere. "[R, C]" means R rows of C contiguous elements.
// - `dt` is the working type of activations and of the working copy of the parameters
//   (F32/F64 on the CPU, F32/F16/BF16 on CUDA). Statistics, gradients of parameters, master
//   weights and optimizer moments use acc = accum_dtype(dt) (F64 when dt is F64, else F32).
// - Pointers are device pointers for the CUDA backend and host pointers for the CPU backend,
//   including the scalar pointers named *_dev.
// - Parameter gradients (d_gamma, d_bias, d_table, ...) always ACCUMULATE (+=) into acc
//   buffers; the trainer zeroes the flat gradient buffer once per update. Activation gradients
//   are written (=), unless an argument says otherwise.
// - Dropout: p in [0, 1); p == 0 means identity (no RNG drawn). Kept elements are scaled by
//   1/(1-p). Masks are never stored: backward regenerates them from the same DropoutKey and
//   the element's flat index in the tensor the forward call saw (see philox.h).
// - Token ids are int32. Key padding masks are uint8 [B, Lk], 1 = padded key (masked out).
// - Reductions (LayerNorm statistics, softmax, cross-entropy, norms) accumulate in acc (>= fp32).
// - No implementation allocates memory in any of these calls; scratch comes from `workspace`.
// - Errors (bad shapes, unsupported dtype, CUDA/cuBLAS failures) throw ls::Error with a message
//   naming the call.
#pragma once

#include <cstddef>
#include <cstdint>

#include "layers/kernels/philox.h"
#include "layers/kernels/train_control.h"
#include "runtime/dtype.h"

namespace ls {

enum class Activation : uint8_t {
  ReLU = 0,
  GELU = 1,  // tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
};

enum class Epilogue : uint8_t {
  None = 0,     // C = alpha op(A) op(B) + beta C
  Bias,         // C = alpha op(A) op(B) + bias[n]            (beta must be 0)
  BiasAct,      // aux = alpha op(A) op(B) + bias[n]; C = act(aux)  (beta must be 0)
  DActBGrad,    // C = (alpha op(A) op(B)) * act'(aux); bias_grad[n] += sum over rows of C
                //                                                     (beta must be 0)
  BGradA,       // C as None; additionally bias_grad[m] += sum over k of op(A)[m, k]
};

// C[M, N] (+)= alpha * op(A)[M, K] * op(B)[K, N], batched over `batch` matrices with element
// strides stride_a/b/c between them. op(X) = X^T when trans_x. Leading dimensions are the row
// lengths of A, B, C as stored (row-major). A and B have type ab_type; C has c_type, which is
// either ab_type or accum_dtype(ab_type) (the latter for accumulating weight gradients).
// bias has ab_type; aux has c_type with ldc; bias_grad has accum_dtype(ab_type).
struct GemmArgs {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  float alpha = 1.f, beta = 0.f;
  DType ab_type = DType::F32;
  DType c_type = DType::F32;
  Epilogue epilogue = Epilogue::None;
  Activation act = Activation::ReLU;
  const void* bias = nullptr;
  void* aux = nullptr;
  void* bias_grad = nullptr;
};

struct EmbeddingArgs {
  const int32_t* tokens = nullptr;  // [B, L]
  int64_t batch = 0, len = 0, dim = 0, vocab = 0;
  int32_t padding_idx = 1;
  float scale = 1.f;  // token embedding multiplier (sqrt(dim) when enabled, else 1)
  // Positions follow fairseq's make_positions: the j-th non-padding token of a row gets
  // position padding_idx + j (j from 1); padding tokens get no positional embedding.
  // Sinusoidal (fairseq SinusoidalPositionalEmbedding, half_dim = dim/2,
  // f_i = exp(-i log(10000)/(half_dim-1)), row p = [sin(p f_i)..., cos(p f_i)...], zero for odd
  // dim's last column) when learned_positions is null; else learned table
  // [max_positions, dim] of type dt indexed by that position.
  const void* learned_positions = nullptr;
  int64_t max_positions = 0;
  DType dt = DType::F32;
  float dropout = 0.f;
  DropoutKey key;
};

// One fused attention call over token-major projections. Rows are tokens (b * len + l);
// head h of q, k, v, ctx occupies columns [h * D, (h + 1) * D) of its row, rows ld_* elements
// apart (so q, k, v can point into one packed [T, 3 H D] projection output). For each (b, h):
//   s[i, j] = scale * q[b*Lq + i, hD:] . k[b*Lk + j, hD:], key j excluded when
//             key_pad[b*Lk + j] != 0 (key_pad may be null) or, when causal, j > i;
//   P = softmax_j(s) (a row with every key excluded is all zeros; lse[(b*H + h)*Lq + i] =
//       log sum_j exp(s[i, j]), -inf for such a row), statistics in acc;
//   ctx[b*Lq + i, hD:] = sum_j dropout(P)[i, j] v[b*Lk + j, hD:], where the dropout element
//       index of (i, j) is ((b*H + h)*Lq + i)*Lk + j: the index the unfused path's probs
//       tensor [B, H, Lq, Lk] gives it, so both paths draw the same mask.
struct AttentionArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* ctx = nullptr;
  int64_t ld_q = 0, ld_k = 0, ld_v = 0, ld_ctx = 0;
  void* lse = nullptr;  // [B, H, Lq] acc: written by forward, read by backward
  const uint8_t* key_pad = nullptr;
  bool causal = false;
  int64_t batch = 0, heads = 0, len_q = 0, len_k = 0, head_dim = 0;
  float scale = 1.f;
  float dropout = 0.f;
  DropoutKey key;
  DType dt = DType::F32;
};

// Whether a backend implements attention_forward/backward for this working type and head size:
// the CPU reference for every type it supports; CUDA for fp16/bf16 with head_dim a multiple of
// 8 up to kFusedAttentionMaxHeadDim (tensor-core tiles held in registers).
constexpr int64_t kFusedAttentionMaxHeadDim = 64;
bool fused_attention_available(bool cuda, DType dt, int64_t head_dim);

// Argument checks both backends share (throw LS_ERR_INVALID_ARGUMENT with "call: ..."): a null
// pointer, a negative size, a dropout rate outside [0, 1), an unknown activation; and for the
// embedding, its sizes, dropout and position settings (learned: max_positions > 0; sinusoidal:
// dim >= 4) and, when there is at least one token, the token pointer. Token values and the
// positions they reach are the backend's to check (the CPU reads the tokens, the GPU kernels
// must never see a bad one).
void check_ptr(const void* p, const char* call, const char* name);
void check_nonneg(int64_t v, const char* call, const char* name);
void check_dropout(float p, const char* call);
void check_activation(Activation act, const char* call);
void check_embedding_args(const EmbeddingArgs& a, const char* call);
// layernorm_forward's checks: sizes (rows >= 0, cols > 0), eps >= 0 (not NaN), and when
// rows > 0 the six pointers. Returns false when there is nothing to compute (rows == 0).
bool check_layernorm_args(const void* x, const void* gamma, const void* beta, const void* y,
                          const void* mean, const void* rstd, int64_t rows, int64_t cols, float eps,
                          const char* call);
// bias_dropout_residual_layernorm_forward's checks, all of them before either op runs: p, the
// LayerNorm's (check_layernorm_args, on the block output), residual and out when rows > 0 (bias
// may be null), and y aliasing x, residual or out.
void check_residual_layernorm_args(const void* x, const void* residual, const void* out,
                                   const void* gamma, const void* beta, const void* y,
                                   const void* mean, const void* rstd, int64_t rows, int64_t cols,
                                   float p, float eps, const char* call);

// The argument checks every backend's attention_forward / attention_backward share: dimensions,
// head size, dropout rate, row strides and pointers (backward: also d_ctx, dq, delta, and dk, dv
// when there are keys). Throw LS_ERR_INVALID_ARGUMENT naming the call; return false when there
// is nothing to compute. Each backend checks the dtype itself.
bool check_attention_args(const AttentionArgs& a, const char* call);
bool check_attention_backward_args(const AttentionArgs& a, const void* d_ctx, const void* dq,
                                   const void* dk, const void* dv, const void* delta);

class Ops {
 public:
  virtual ~Ops() = default;
  virtual bool is_cuda() const = 0;
  // Scratch memory for the backend (cuBLASLt's workspace), carved from the model's arena.
  // Backends that need none ignore it.
  virtual void set_workspace(void* /*p*/, size_t /*bytes*/) {}
  // Whether fp32 GEMMs may run on TF32 tensor cores (CUDA; ~1e-3 relative error per product,
  // ~8x faster). Backends without TF32 ignore it.
  virtual void set_allow_tf32(bool /*on*/) {}
  // GEMM autotuning (CUDA: time cuBLASLt's candidate algorithms per shape on first use and keep
  // the fastest). Backends with one GEMM implementation ignore it.
  virtual void set_gemm_autotune(bool /*on*/) {}
  // Deterministic reductions (default on): parameter-gradient column sums, loss sums and the
  // gradient norm are summed in a fixed order (two passes through the workspace) instead of
  // with float atomics, so a fixed seed reproduces a run bitwise. The CPU backend always is.
  virtual void set_deterministic(bool /*on*/) {}

  // ---- memory (pointers are of this backend's kind unless named host) ----
  virtual void zero(void* p, size_t bytes) = 0;
  // Zeroes `count` element ranges of one buffer in one pass: range i is elements
  // [ranges[2 i], ranges[2 i + 1]) of elem_bytes (4 or 8) bytes each from base. `ranges` lives
  // in the backend's memory (device memory on CUDA) and is not read on the host; max_elements
  // bounds every range's length (it sizes the launch). Ranges must not overlap.
  virtual void zero_ranges(void* base, const uint64_t* ranges, int64_t count, uint64_t max_elements,
                           size_t elem_bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // same side
  virtual void to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void from_host(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void synchronize() = 0;
  // Converts n elements between types (e.g. master fp32 -> working fp16).
  virtual void cast(const void* src, DType src_t, void* dst, DType dst_t, size_t n) = 0;
  // y[i] += x[i] (both of type t), n elements.
  virtual void add_inplace(void* y, const void* x, DType t, size_t n) = 0;

  // ---- GEMM ----
  virtual void gemm(const GemmArgs& g) = 0;

  // ---- embedding ----
  // out [B*L, dim] (dt) = dropout(scale * table[tok] + pos(tok)). table [vocab, dim] (dt).
  // Throws before touching memory if a token is outside [0, vocab) only when the backend can
  // check cheaply (CPU); callers validate tokens before calling.
  virtual void embedding_forward(const EmbeddingArgs& a, const void* table, void* out) = 0;
  // d_table [vocab, dim] (acc) += scale * dropout_bwd(d_out) scattered by token, skipping
  // padding tokens; d_positions [max_positions, dim] (acc, learned only, may be null) likewise.
  // deterministic: a fixed summation order (no atomics) when true.
  virtual void embedding_backward(const EmbeddingArgs& a, const void* d_out, void* d_table,
                                  void* d_positions, bool deterministic) = 0;

  // ---- LayerNorm over the last dimension ----
  // y = (x - mean) * rstd * gamma + beta; mean, rstd [rows] (acc) saved for backward.
  virtual void layernorm_forward(const void* x, const void* gamma, const void* beta, void* y,
                                 void* mean, void* rstd, int64_t rows, int64_t cols, float eps,
                                 DType dt) = 0;
  // dx = LN backward of dy (+ d_residual if non-null: the gradient that reaches x through a
  // residual branch, added in the same pass). d_gamma, d_beta [cols] (acc) accumulate.
  virtual void layernorm_backward(const void* dy, const void* x, const void* gamma,
                                  const void* mean, const void* rstd, const void* d_residual,
                                  void* dx, void* d_gamma, void* d_beta, int64_t rows,
                                  int64_t cols, DType dt) = 0;
  // layernorm_backward that also writes the forward's output y = (x - mean) * rstd * gamma + beta
  // [rows, cols] from x and the saved statistics: the same bits as layernorm_forward wrote (a
  // pre-LN block recomputes its LayerNorm output this way instead of keeping it for backward).
  virtual void layernorm_backward_with_output(const void* dy, const void* x, const void* gamma,
                                              const void* beta, const void* mean, const void* rstd,
                                              const void* d_residual, void* dx, void* y,
                                              void* d_gamma, void* d_beta, int64_t rows,
                                              int64_t cols, DType dt) = 0;
  // The same backward from the LayerNorm's output y instead of its input:
  // xhat = (y - beta) / gamma (mean is not needed; rstd still is). Equal to layernorm_backward up
  // to the rounding of y; a zero gamma gives non-finite dx and d_gamma.
  virtual void layernorm_backward_from_output(const void* dy, const void* y, const void* gamma,
                                              const void* beta, const void* rstd,
                                              const void* d_residual, void* dx, void* d_gamma,
                                              void* d_beta, int64_t rows, int64_t cols,
                                              DType dt) = 0;

  // ---- elementwise fusions ----
  // out = residual + dropout(x + bias)   (bias [cols] may be null). out may alias residual.
  virtual void bias_dropout_residual_forward(const void* x, const void* bias, const void* residual,
                                             void* out, int64_t rows, int64_t cols, float p,
                                             DropoutKey key, DType dt) = 0;
  // bias_dropout_residual_forward, then layernorm_forward of its output: out = residual +
  // dropout(x + bias), then y = LN(out; gamma, beta) with mean and rstd [rows] saved. The same
  // bits as the two ops in turn, in one pass where the backend can (a pre-LN block's residual
  // add fused with the next block's LayerNorm). out may alias residual or x; y may alias none of
  // x, residual and out. The arguments of both are checked before either runs.
  virtual void bias_dropout_residual_layernorm_forward(const void* x, const void* bias,
                                                       const void* residual, void* out,
                                                       const void* gamma, const void* beta, void* y,
                                                       void* mean, void* rstd, int64_t rows,
                                                       int64_t cols, float p, DropoutKey key,
                                                       float eps, DType dt) = 0;
  // dx = dropout_bwd(d_out); d_bias [cols] (acc, may be null) += column sums of dx.
  virtual void dropout_bias_backward(const void* d_out, void* dx, void* d_bias, int64_t rows,
                                     int64_t cols, float p, DropoutKey key, DType dt) = 0;
  // out = dropout(act(pre)); pre [rows, cols] already includes the bias. out may alias pre.
  virtual void act_dropout_forward(const void* pre, void* out, int64_t rows, int64_t cols,
                                   Activation act, float p, DropoutKey key, DType dt) = 0;
  // d_pre = act'(pre) * dropout_bwd(d_out) (d_pre may alias d_out); d_bias [cols] (acc, may be
  // null) += column sums of
  // d_pre.
  virtual void act_dropout_backward(const void* d_out, const void* pre, void* d_pre, void* d_bias,
                                    int64_t rows, int64_t cols, Activation act, float p,
                                    DropoutKey key, DType dt) = 0;
  // act_dropout_backward for ReLU given the forward's OUTPUT out = dropout(relu(pre)) instead
  // of pre: out > 0 exactly where the element was kept and pre > 0, so
  // d_pre = d_out * (out > 0 ? 1/(1-p) : 0) (1 when p == 0; no mask is regenerated, so no key).
  // d_pre may alias d_out; d_bias [cols] (acc, may be null) += column sums of d_pre. Equals
  // act_dropout_backward(ReLU) with the same p and the key that produced out.
  virtual void relu_dropout_backward_from_output(const void* d_out, const void* out, void* d_pre,
                                                 void* d_bias, int64_t rows, int64_t cols,
                                                 float p, DType dt) = 0;
  // out = dropout(x), n elements (out may alias x).
  virtual void dropout_forward(const void* x, void* out, size_t n, float p, DropoutKey key,
                               DType dt) = 0;
  // d_bias [cols] (acc) += column sums of dy [rows, cols].
  virtual void bias_grad(const void* dy, void* d_bias, int64_t rows, int64_t cols, DType dt) = 0;

  // ---- attention ----
  // in [B*L, n*H*D] (+ bias [n*H*D] when non-null) -> out [n, B, H, L, D].
  // (n = 3 for fused QKV, 2 for cross-attention K/V, 1 for Q.)
  virtual void split_heads(const void* in, const void* bias, void* out, int64_t n, int64_t batch,
                           int64_t len, int64_t heads, int64_t head_dim, DType dt) = 0;
  // The inverse: in [n, B, H, L, D] -> out [B*L, n*H*D].
  virtual void merge_heads(const void* in, void* out, int64_t n, int64_t batch, int64_t len,
                           int64_t heads, int64_t head_dim, DType dt) = 0;
  // probs [B, H, Lq, Lk] = softmax over k of scores, where key k of batch b is excluded when
  // key_pad[b*Lk + k] != 0 (key_pad may be null) and, when causal, when k > q. A row with every
  // key excluded is all zeros. Statistics in acc. probs may alias scores.
  virtual void softmax_forward(const void* scores, void* probs, const uint8_t* key_pad,
                               bool causal, int64_t batch, int64_t heads, int64_t len_q,
                               int64_t len_k, DType dt) = 0;
  // d_scores = softmax backward of (dropout_bwd(d_dropped)) given the saved (pre-dropout)
  // probs; the dropout key is the one used on probs in forward (p == 0: none).
  // d_scores may alias d_dropped (the layers run it in place).
  virtual void softmax_backward(const void* d_dropped, const void* probs, void* d_scores,
                                int64_t rows, int64_t len_k, float p, DropoutKey key,
                                DType dt) = 0;

  // ---- fused (flash-style) attention ----
  // ctx = dropout(softmax(scale q k^T, masks)) v for every (batch b, head h), without
  // materialising the [Lq, Lk] probabilities (see AttentionArgs). Backends implement it for
  // the dtypes and head sizes fused_attention_available() names; the layers use the split /
  // softmax / merge calls above otherwise.
  virtual void attention_forward(const AttentionArgs& a);
  // Gradients of q, k, v (written, =, with the same row strides and column offsets as q, k, v)
  // from d_ctx [B*Lq rows of ld_ctx], given the forward's ctx and lse. delta [B, H, Lq] (acc) is
  // scratch the backward may use (delta_i = d_ctx_i . ctx_i). d_bias (acc, may be null)
  // [3 H D] += the column sums of dq, dk and dv, laid out q | k | v: the gradient of the
  // projections' bias, taken while the gradients are still in registers.
  virtual void attention_backward(const AttentionArgs& a, const void* d_ctx, void* dq, void* dk,
                                  void* dv, void* delta, void* d_bias);

  // ---- criterion: label-smoothed cross-entropy (fairseq's label_smoothed_nll_loss) ----
  // For each row t with target y != padding_idx: lse = logsumexp(logits[t]),
  // nll = lse - logits[t, y], smooth = V*lse - sum_v logits[t, v],
  // loss = (1 - eps - eps/(V-1)) * nll + eps/(V-1) * smooth.
  // sums (acc) [3]: += {loss, nll, non-padding token count}; lse [rows] (acc) saved.
  virtual void cross_entropy_forward(const void* logits, const int32_t* targets, void* lse,
                                     void* sums, int64_t rows, int64_t vocab, int32_t padding_idx,
                                     float eps, DType dt) = 0;
  // d_logits = grad_scale[0] * (softmax(logits) - q) with q[y] = 1 - eps, q[v != y] = eps/(V-1);
  // zero rows for padding targets. grad_scale_dev is one acc scalar (loss scale on device).
  // d_logits may alias logits (the layers run it in place).
  virtual void cross_entropy_backward(const void* logits, const int32_t* targets, const void* lse,
                                      const void* grad_scale_dev, void* d_logits, int64_t rows,
                                      int64_t vocab, int32_t padding_idx, float eps,
                                      DType dt) = 0;
  // Training's criterion: cross_entropy_forward, then cross_entropy_backward on the same logits,
  // with the same results (lse, sums, d_logits; d_logits may alias logits). A backend may fuse
  // the two (CUDA: the logits are read once).
  virtual void cross_entropy_forward_backward(const void* logits, const int32_t* targets, void* lse,
                                              void* sums, const void* grad_scale_dev,
                                              void* d_logits, int64_t rows, int64_t vocab,
                                              int32_t padding_idx, float eps, DType dt) {
    cross_entropy_forward(logits, targets, lse, sums, rows, vocab, padding_idx, eps, dt);
    cross_entropy_backward(logits, targets, lse, grad_scale_dev, d_logits, rows, vocab, padding_idx,
                           eps, dt);
  }

  // ---- optimizer over flat acc buffers ----
  // out[0] += sum of x[i]^2 (acc), n elements of x (acc type); inf/NaN propagate.
  virtual void sum_squares(const void* x, size_t n, void* out, DType acc) = 0;
  // The per-update control (train_control.h's update_control, same code on both backends):
  // reads sumsq_dev[0] and tokens_dev[0] (acc; tokens_dev is then set to 0) and the state,
  // writes the state (its AdamStep included) and grad_scale_dev[0] (acc: the loss scale the
  // next backward uses). One thread on the device.
  virtual void update_control(const void* sumsq_dev, void* tokens_dev,
                              const UpdateControlArgs& args, TrainState* state_dev,
                              void* grad_scale_dev, DType acc) = 0;
  // Adam / AdamW over n parameters (acc), with the per-update values read from step_dev:
  // g = grads[i] * mult; AdamW (decoupled): p -= lr * wd * p; Adam (L2): g += wd * p;
  // m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
  // p -= lr * (m / bias1) / (sqrt(v / bias2) + eps), with bias1 = 1 - b1^t, bias2 = 1 - b2^t.
  // When step_dev->skip != 0 nothing is written. When work is non-null the updated parameter is
  // also written to it as work_t (the working copy).
  struct AdamArgs {
    float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.f;
    bool decoupled = false;  // AdamW
  };
  virtual void adam_update(void* params, const void* grads, void* m, void* v, void* work,
                           DType work_t, size_t n, const AdamArgs& h, const AdamStep* step_dev,
                           DType acc) = 0;

  // ---- inputs and counters ----
  // dst[i] = src[i] when 0 <= src[i] < vocab, else padding_idx, and bad_count_dev[0] += the
  // number of out-of-range ids: token arrays already on the device are validated on the way
  // into the model's buffers, so an out-of-range id never reaches another kernel.
  virtual void import_tokens(const int32_t* src, int32_t* dst, int64_t n, int32_t vocab,
                             int32_t padding_idx, uint32_t* bad_count_dev) = 0;
  // mask[i] = tokens[i] == padding_idx (uint8).
  virtual void padding_mask(const int32_t* tokens, uint8_t* mask, int64_t n,
                            int32_t padding_idx) = 0;
  // counter[0] += v (a uint64 in this backend's memory), in stream order.
  virtual void counter_add(uint64_t* counter, uint64_t v) = 0;
  // sums[0] (acc) += x[0] (acc): accumulates a device scalar without a round trip.
  virtual void scalar_accumulate(void* sum, const void* x, DType acc) = 0;

  // ---- host memory and step capture ----
  // Host memory the backend copies from asynchronously (page-locked on CUDA). Made at creation.
  virtual void* host_alloc(size_t bytes) = 0;
  virtual void host_free(void* p) = 0;
  // Stream capture into a replayable graph (CUDA graphs). Backends without it throw
  // LS_ERR_UNSUPPORTED. capture_end returns an opaque executable graph.
  virtual bool supports_capture() const { return false; }
  virtual void capture_begin();
  virtual void* capture_end();
  virtual void graph_launch(void* graph);
  virtual void graph_destroy(void* graph);
  // Waits until the work queued before the last mark() has finished (not the work after it).
  virtual void mark() {}
  virtual void wait_mark() {}
};

}  // namespace ls
