// CpuOps: the CPU reference implementation of the Ops interface (layers/kernels/ops.h) and its
// factory make_cpu_ops(). Each method validates its arguments (throwing ls::Error with
// LS_ERR_INVALID_ARGUMENT and the call's name), picks the element type from the DType
// (float for F32, double for F64; F16/BF16 are LS_ERR_UNSUPPORTED on the CPU) and calls the
// typed loop in the file of its concept (gemm.cpp, embedding.cpp, ...). Memory is host memory;
// every call is synchronous, so synchronize() has nothing to wait for.
#include <climits>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <utility>

#include "layers/kernels/backends.h"
#include "layers/kernels/cpu/cpu_kernels.h"
#include "runtime/error.h"

namespace ls {
namespace cpu {

template <typename S, typename D>
void cast(const S* src, D* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = static_cast<D>(src[i]);
}

template <typename T>
void add_inplace(T* y, const T* x, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += x[i];
}

namespace {

// Calls f(T{}) with T = float for F32 and double for F64.
template <typename F>
void dispatch(DType dt, const char* call, F&& f) {
  switch (dt) {
    case DType::F32:
      f(float{});
      return;
    case DType::F64:
      f(double{});
      return;
    default:
      LS_FAIL(LS_ERR_UNSUPPORTED,
              call << ": CPU backend supports fp32 and fp64, got " << dtype_name(dt));
  }
}

// Rows x cols elementwise calls: both sizes non-negative (pointers are checked by the caller,
// only when there is at least one element).
void check_matrix(int64_t rows, int64_t cols, const char* call) {
  check_nonneg(rows, call, "rows");
  check_nonneg(cols, call, "cols");
}

void check_gemm(const GemmArgs& g) {
  const char* call = "gemm";
  check_nonneg(g.m, call, "m");
  check_nonneg(g.n, call, "n");
  check_nonneg(g.k, call, "k");
  check_nonneg(g.batch, call, "batch");
  check_nonneg(g.stride_a, call, "stride_a");
  check_nonneg(g.stride_b, call, "stride_b");
  check_nonneg(g.stride_c, call, "stride_c");
  LS_CHECK_ARG(g.c_type == g.ab_type || g.c_type == accum_dtype(g.ab_type),
               call << ": c_type " << dtype_name(g.c_type) << " is neither ab_type "
                    << dtype_name(g.ab_type) << " nor its accumulation type");
  const int64_t a_cols = g.trans_a ? g.m : g.k, b_cols = g.trans_b ? g.k : g.n;
  LS_CHECK_ARG(g.lda >= (a_cols > 1 ? a_cols : 1), call << ": lda = " << g.lda
                                                        << " is less than the " << a_cols
                                                        << " columns of A as stored");
  LS_CHECK_ARG(g.ldb >= (b_cols > 1 ? b_cols : 1), call << ": ldb = " << g.ldb
                                                        << " is less than the " << b_cols
                                                        << " columns of B as stored");
  LS_CHECK_ARG(g.ldc >= (g.n > 1 ? g.n : 1),
               call << ": ldc = " << g.ldc << " is less than n = " << g.n);
#if LS_HAVE_CBLAS
  for (int64_t v : {g.m, g.n, g.k, g.lda, g.ldb, g.ldc})
    LS_CHECK_ARG(v <= INT_MAX, call << ": dimension " << v << " exceeds the CBLAS int range");
#endif
  const bool needs_zero_beta = g.epilogue == Epilogue::Bias || g.epilogue == Epilogue::BiasAct ||
                               g.epilogue == Epilogue::DActBGrad;
  switch (g.epilogue) {
    case Epilogue::None:
    case Epilogue::Bias:
    case Epilogue::BiasAct:
    case Epilogue::DActBGrad:
    case Epilogue::BGradA:
      break;
    default:
      LS_FAIL(LS_ERR_INVALID_ARGUMENT,
              call << ": unknown epilogue " << static_cast<int>(g.epilogue));
  }
  LS_CHECK_ARG(!needs_zero_beta || g.beta == 0.f, call << ": beta = " << g.beta
                                                       << " must be 0 with epilogue "
                                                       << static_cast<int>(g.epilogue));
  if (g.epilogue == Epilogue::BiasAct || g.epilogue == Epilogue::DActBGrad)
    check_activation(g.act, call);
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;  // nothing is read or written
  check_ptr(g.c, call, "C");
  if (g.k > 0) {
    check_ptr(g.a, call, "A");
    check_ptr(g.b, call, "B");
  }
  if (g.epilogue == Epilogue::Bias || g.epilogue == Epilogue::BiasAct)
    check_ptr(g.bias, call, "bias");
  if (g.epilogue == Epilogue::BiasAct || g.epilogue == Epilogue::DActBGrad)
    check_ptr(g.aux, call, "aux");
  if (g.epilogue == Epilogue::DActBGrad || g.epilogue == Epilogue::BGradA)
    check_ptr(g.bias_grad, call, "bias_grad");
}

class CpuOps final : public Ops {
 public:
  bool is_cuda() const override { return false; }

  // ---- memory ----
  void zero(void* p, size_t bytes) override {
    if (bytes == 0) return;
    check_ptr(p, "zero", "p");
    std::memset(p, 0, bytes);
  }
  void zero_ranges(void* base, const uint64_t* ranges, int64_t count, uint64_t max_elements,
                   size_t elem_bytes) override {
    if (count == 0) return;
    check_ptr(base, "zero_ranges", "base");
    check_ptr(ranges, "zero_ranges", "ranges");
    LS_CHECK_ARG(elem_bytes == 4 || elem_bytes == 8,
                 "zero_ranges: elem_bytes must be 4 or 8, got " << elem_bytes);
    for (int64_t i = 0; i < count; ++i) {  // all checked before anything is written
      const uint64_t b = ranges[2 * i], e = ranges[2 * i + 1];
      LS_CHECK_ARG(b <= e && e - b <= max_elements, "zero_ranges: range "
                                                        << i << " [" << b << ", " << e
                                                        << ") is reversed or longer "
                                                        << "than max_elements " << max_elements);
    }
    for (int64_t i = 0; i < count; ++i) {
      const uint64_t b = ranges[2 * i], e = ranges[2 * i + 1];
      std::memset(static_cast<std::byte*>(base) + b * elem_bytes, 0, (e - b) * elem_bytes);
    }
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    move_bytes(dst, src, bytes, "copy");
  }
  void to_host(void* host_dst, const void* src, size_t bytes) override {
    move_bytes(host_dst, src, bytes, "to_host");
  }
  void from_host(void* dst, const void* host_src, size_t bytes) override {
    move_bytes(dst, host_src, bytes, "from_host");
  }
  void synchronize() override {}

  void cast(const void* src, DType src_t, void* dst, DType dst_t, size_t n) override {
    if (n == 0) return;
    check_ptr(src, "cast", "src");
    check_ptr(dst, "cast", "dst");
    dispatch(src_t, "cast", [&](auto s) {
      using S = decltype(s);
      dispatch(dst_t, "cast", [&](auto d) {
        using D = decltype(d);
        cpu::cast(static_cast<const S*>(src), static_cast<D*>(dst), n);
      });
    });
  }

  void add_inplace(void* y, const void* x, DType t, size_t n) override {
    if (n == 0) return;
    check_ptr(y, "add_inplace", "y");
    check_ptr(x, "add_inplace", "x");
    dispatch(t, "add_inplace", [&](auto tag) {
      using T = decltype(tag);
      cpu::add_inplace(static_cast<T*>(y), static_cast<const T*>(x), n);
    });
  }

  // ---- GEMM ----
  void gemm(const GemmArgs& g) override {
    check_gemm(g);
    dispatch(g.ab_type, "gemm", [&](auto tag) {
      using T = decltype(tag);
      if (g.m == 0 || g.n == 0 || g.batch == 0) return;
      cpu::gemm<T>(g);
    });
  }

  // ---- embedding ----
  void embedding_forward(const EmbeddingArgs& a, const void* table, void* out) override {
    const char* call = "embedding_forward";
    check_embedding_args(a, call);
    dispatch(a.dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (a.batch * a.len == 0) return;
      check_ptr(table, call, "table");
      check_ptr(out, call, "out");
      cpu::embedding_forward<T>(a, static_cast<const T*>(table), static_cast<T*>(out));
    });
  }

  void embedding_backward(const EmbeddingArgs& a, const void* d_out, void* d_table,
                          void* d_positions, bool /*deterministic: always on the CPU*/) override {
    const char* call = "embedding_backward";
    check_embedding_args(a, call);
    LS_CHECK_ARG(!d_positions || a.max_positions > 0,
                 call << ": d_positions needs max_positions > 0, got " << a.max_positions);
    dispatch(a.dt, call, [&](auto tag) {
      using T = decltype(tag);
      using A = acc_t<T>;
      if (a.batch * a.len == 0) return;
      check_ptr(d_out, call, "d_out");
      check_ptr(d_table, call, "d_table");
      cpu::embedding_backward<T>(a, static_cast<const T*>(d_out), static_cast<A*>(d_table),
                                 static_cast<A*>(d_positions));
    });
  }

  // ---- LayerNorm ----
  void layernorm_forward(const void* x, const void* gamma, const void* beta, void* y, void* mean,
                         void* rstd, int64_t rows, int64_t cols, float eps, DType dt) override {
    const char* call = "layernorm_forward";
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      using A = acc_t<T>;
      if (!check_layernorm_args(x, gamma, beta, y, mean, rstd, rows, cols, eps, call)) return;
      cpu::layernorm_forward<T>(static_cast<const T*>(x), static_cast<const T*>(gamma),
                                static_cast<const T*>(beta), static_cast<T*>(y),
                                static_cast<A*>(mean), static_cast<A*>(rstd), rows, cols, eps);
    });
  }

  void layernorm_backward(const void* dy, const void* x, const void* gamma, const void* mean,
                          const void* rstd, const void* d_residual, void* dx, void* d_gamma,
                          void* d_beta, int64_t rows, int64_t cols, DType dt) override {
    layernorm_backward_checked("layernorm_backward", rows, cols, dt,
                               {{dy, "dy"},
                                {x, "x"},
                                {gamma, "gamma"},
                                {mean, "mean"},
                                {rstd, "rstd"},
                                {dx, "dx"},
                                {d_gamma, "d_gamma"},
                                {d_beta, "d_beta"}},
                               [&](auto tag) {
                                 using T = decltype(tag);
                                 using A = acc_t<T>;
                                 cpu::layernorm_backward<T>(
                                     static_cast<const T*>(dy), static_cast<const T*>(x),
                                     static_cast<const T*>(gamma), static_cast<const A*>(mean),
                                     static_cast<const A*>(rstd), static_cast<const T*>(d_residual),
                                     static_cast<T*>(dx), static_cast<A*>(d_gamma),
                                     static_cast<A*>(d_beta), rows, cols);
                               });
  }

  void layernorm_backward_with_output(const void* dy, const void* x, const void* gamma,
                                      const void* beta, const void* mean, const void* rstd,
                                      const void* d_residual, void* dx, void* y, void* d_gamma,
                                      void* d_beta, int64_t rows, int64_t cols, DType dt) override {
    layernorm_backward_checked(
        "layernorm_backward_with_output", rows, cols, dt,
        {{dy, "dy"},
         {x, "x"},
         {gamma, "gamma"},
         {beta, "beta"},
         {mean, "mean"},
         {rstd, "rstd"},
         {dx, "dx"},
         {y, "y"},
         {d_gamma, "d_gamma"},
         {d_beta, "d_beta"}},
        [&](auto tag) {
          using T = decltype(tag);
          using A = acc_t<T>;
          const T* xt = static_cast<const T*>(x);
          const A* mt = static_cast<const A*>(mean);
          const A* rt = static_cast<const A*>(rstd);
          cpu::layernorm_backward<T>(static_cast<const T*>(dy), xt, static_cast<const T*>(gamma),
                                     mt, rt, static_cast<const T*>(d_residual), static_cast<T*>(dx),
                                     static_cast<A*>(d_gamma), static_cast<A*>(d_beta), rows, cols);
          cpu::layernorm_output<T>(xt, static_cast<const T*>(gamma), static_cast<const T*>(beta),
                                   mt, rt, static_cast<T*>(y), rows, cols);
        });
  }

  void layernorm_backward_from_output(const void* dy, const void* y, const void* gamma,
                                      const void* beta, const void* rstd, const void* d_residual,
                                      void* dx, void* d_gamma, void* d_beta, int64_t rows,
                                      int64_t cols, DType dt) override {
    layernorm_backward_checked("layernorm_backward_from_output", rows, cols, dt,
                               {{dy, "dy"},
                                {y, "y"},
                                {gamma, "gamma"},
                                {beta, "beta"},
                                {rstd, "rstd"},
                                {dx, "dx"},
                                {d_gamma, "d_gamma"},
                                {d_beta, "d_beta"}},
                               [&](auto tag) {
                                 using T = decltype(tag);
                                 using A = acc_t<T>;
                                 cpu::layernorm_backward_from_output<T>(
                                     static_cast<const T*>(dy), static_cast<const T*>(y),
                                     static_cast<const T*>(gamma), static_cast<const T*>(beta),
                                     static_cast<const A*>(rstd), static_cast<const T*>(d_residual),
                                     static_cast<T*>(dx), static_cast<A*>(d_gamma),
                                     static_cast<A*>(d_beta), rows, cols);
                               });
  }

  // The argument checks the LayerNorm backward forms share (rows >= 0, cols > 0, the dtype, and
  // with rows > 0 the named pointers non-null); then run(T{}) for the storage type T.
  template <class F>
  void layernorm_backward_checked(const char* call, int64_t rows, int64_t cols, DType dt,
                                  std::initializer_list<std::pair<const void*, const char*>> ptrs,
                                  F&& run) {
    check_nonneg(rows, call, "rows");
    LS_CHECK_ARG(cols > 0, call << ": cols = " << cols << " must be positive");
    dispatch(dt, call, [&](auto tag) {
      if (rows == 0) return;
      for (const auto& [p, name] : ptrs) check_ptr(p, call, name);
      run(tag);
    });
  }

  // ---- elementwise fusions ----
  void bias_dropout_residual_forward(const void* x, const void* bias, const void* residual,
                                     void* out, int64_t rows, int64_t cols, float p, DropoutKey key,
                                     DType dt) override {
    const char* call = "bias_dropout_residual_forward";
    check_matrix(rows, cols, call);
    check_dropout(p, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (rows * cols == 0) return;
      check_ptr(x, call, "x");
      check_ptr(residual, call, "residual");
      check_ptr(out, call, "out");
      cpu::bias_dropout_residual_forward<T>(static_cast<const T*>(x), static_cast<const T*>(bias),
                                            static_cast<const T*>(residual), static_cast<T*>(out),
                                            rows, cols, p, key);
    });
  }

  // The composition itself: the reference the fused backends are tested against.
  void bias_dropout_residual_layernorm_forward(const void* x, const void* bias,
                                               const void* residual, void* out, const void* gamma,
                                               const void* beta, void* y, void* mean, void* rstd,
                                               int64_t rows, int64_t cols, float p, DropoutKey key,
                                               float eps, DType dt) override {
    const char* call = "bias_dropout_residual_layernorm_forward";
    check_residual_layernorm_args(x, residual, out, gamma, beta, y, mean, rstd, rows, cols, p, eps,
                                  call);
    dispatch(dt, call, [](auto) {});
    bias_dropout_residual_forward(x, bias, residual, out, rows, cols, p, key, dt);
    layernorm_forward(out, gamma, beta, y, mean, rstd, rows, cols, eps, dt);
  }

  void dropout_bias_backward(const void* d_out, void* dx, void* d_bias, int64_t rows, int64_t cols,
                             float p, DropoutKey key, DType dt) override {
    const char* call = "dropout_bias_backward";
    check_matrix(rows, cols, call);
    check_dropout(p, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (rows * cols == 0) return;
      check_ptr(d_out, call, "d_out");
      check_ptr(dx, call, "dx");
      cpu::dropout_bias_backward<T>(static_cast<const T*>(d_out), static_cast<T*>(dx),
                                    static_cast<acc_t<T>*>(d_bias), rows, cols, p, key);
    });
  }

  void act_dropout_forward(const void* pre, void* out, int64_t rows, int64_t cols, Activation act,
                           float p, DropoutKey key, DType dt) override {
    const char* call = "act_dropout_forward";
    check_matrix(rows, cols, call);
    check_dropout(p, call);
    check_activation(act, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (rows * cols == 0) return;
      check_ptr(pre, call, "pre");
      check_ptr(out, call, "out");
      cpu::act_dropout_forward<T>(static_cast<const T*>(pre), static_cast<T*>(out), rows, cols, act,
                                  p, key);
    });
  }

  void act_dropout_backward(const void* d_out, const void* pre, void* d_pre, void* d_bias,
                            int64_t rows, int64_t cols, Activation act, float p, DropoutKey key,
                            DType dt) override {
    const char* call = "act_dropout_backward";
    check_matrix(rows, cols, call);
    check_dropout(p, call);
    check_activation(act, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (rows * cols == 0) return;
      check_ptr(d_out, call, "d_out");
      check_ptr(pre, call, "pre");
      check_ptr(d_pre, call, "d_pre");
      cpu::act_dropout_backward<T>(static_cast<const T*>(d_out), static_cast<const T*>(pre),
                                   static_cast<T*>(d_pre), static_cast<acc_t<T>*>(d_bias), rows,
                                   cols, act, p, key);
    });
  }

  void relu_dropout_backward_from_output(const void* d_out, const void* out, void* d_pre,
                                         void* d_bias, int64_t rows, int64_t cols, float p,
                                         DType dt) override {
    const char* call = "relu_dropout_backward_from_output";
    check_matrix(rows, cols, call);
    check_dropout(p, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (rows * cols == 0) return;
      check_ptr(d_out, call, "d_out");
      check_ptr(out, call, "out");
      check_ptr(d_pre, call, "d_pre");
      cpu::relu_dropout_backward_from_output<T>(static_cast<const T*>(d_out),
                                                static_cast<const T*>(out), static_cast<T*>(d_pre),
                                                static_cast<acc_t<T>*>(d_bias), rows, cols, p);
    });
  }

  void dropout_forward(const void* x, void* out, size_t n, float p, DropoutKey key,
                       DType dt) override {
    const char* call = "dropout_forward";
    check_dropout(p, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (n == 0) return;
      check_ptr(x, call, "x");
      check_ptr(out, call, "out");
      cpu::dropout_forward<T>(static_cast<const T*>(x), static_cast<T*>(out), n, p, key);
    });
  }

  void bias_grad(const void* dy, void* d_bias, int64_t rows, int64_t cols, DType dt) override {
    const char* call = "bias_grad";
    check_matrix(rows, cols, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (cols == 0) return;
      check_ptr(d_bias, call, "d_bias");
      if (rows == 0) return;
      check_ptr(dy, call, "dy");
      cpu::bias_grad<T>(static_cast<const T*>(dy), static_cast<acc_t<T>*>(d_bias), rows, cols);
    });
  }

  // ---- attention ----
  void split_heads(const void* in, const void* bias, void* out, int64_t n, int64_t batch,
                   int64_t len, int64_t heads, int64_t head_dim, DType dt) override {
    const char* call = "split_heads";
    check_heads(in, out, n, batch, len, heads, head_dim, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (n * batch * len * heads * head_dim == 0) return;
      cpu::split_heads<T>(static_cast<const T*>(in), static_cast<const T*>(bias),
                          static_cast<T*>(out), n, batch, len, heads, head_dim);
    });
  }

  void merge_heads(const void* in, void* out, int64_t n, int64_t batch, int64_t len, int64_t heads,
                   int64_t head_dim, DType dt) override {
    const char* call = "merge_heads";
    check_heads(in, out, n, batch, len, heads, head_dim, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (n * batch * len * heads * head_dim == 0) return;
      cpu::merge_heads<T>(static_cast<const T*>(in), static_cast<T*>(out), n, batch, len, heads,
                          head_dim);
    });
  }

  void softmax_forward(const void* scores, void* probs, const uint8_t* key_pad, bool causal,
                       int64_t batch, int64_t heads, int64_t len_q, int64_t len_k,
                       DType dt) override {
    const char* call = "softmax_forward";
    check_nonneg(batch, call, "batch");
    check_nonneg(heads, call, "heads");
    check_nonneg(len_q, call, "len_q");
    check_nonneg(len_k, call, "len_k");
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (batch * heads * len_q * len_k == 0) return;
      check_ptr(scores, call, "scores");
      check_ptr(probs, call, "probs");
      cpu::softmax_forward<T>(static_cast<const T*>(scores), static_cast<T*>(probs), key_pad,
                              causal, batch, heads, len_q, len_k);
    });
  }

  void softmax_backward(const void* d_dropped, const void* probs, void* d_scores, int64_t rows,
                        int64_t len_k, float p, DropoutKey key, DType dt) override {
    const char* call = "softmax_backward";
    check_nonneg(rows, call, "rows");
    check_nonneg(len_k, call, "len_k");
    check_dropout(p, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      if (rows * len_k == 0) return;
      check_ptr(d_dropped, call, "d_dropped");
      check_ptr(probs, call, "probs");
      check_ptr(d_scores, call, "d_scores");
      cpu::softmax_backward<T>(static_cast<const T*>(d_dropped), static_cast<const T*>(probs),
                               static_cast<T*>(d_scores), rows, len_k, p, key);
    });
  }

  void attention_forward(const AttentionArgs& a) override {
    const char* call = "attention_forward";
    if (!check_attention_args(a, call)) return;
    dispatch(a.dt, call, [&](auto tag) {
      using T = decltype(tag);
      cpu::fused_attention_forward<T>(a);
    });
  }

  void attention_backward(const AttentionArgs& a, const void* d_ctx, void* dq, void* dk, void* dv,
                          void* delta, void* d_bias) override {
    const char* call = "attention_backward";
    if (!check_attention_backward_args(a, d_ctx, dq, dk, dv, delta)) return;
    dispatch(a.dt, call, [&](auto tag) {
      using T = decltype(tag);
      cpu::fused_attention_backward<T>(a, static_cast<const T*>(d_ctx), static_cast<T*>(dq),
                                       static_cast<T*>(dk), static_cast<T*>(dv),
                                       static_cast<acc_t<T>*>(delta), static_cast<acc_t<T>*>(d_bias));
    });
  }

  // ---- criterion ----
  void cross_entropy_forward(const void* logits, const int32_t* targets, void* lse, void* sums,
                             int64_t rows, int64_t vocab, int32_t padding_idx, float eps,
                             DType dt) override {
    const char* call = "cross_entropy_forward";
    check_cross_entropy(rows, vocab, eps, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      using A = acc_t<T>;
      if (rows == 0) return;
      check_ptr(logits, call, "logits");
      check_ptr(targets, call, "targets");
      check_ptr(lse, call, "lse");
      check_ptr(sums, call, "sums");
      cpu::cross_entropy_forward<T>(static_cast<const T*>(logits), targets, static_cast<A*>(lse),
                                    static_cast<A*>(sums), rows, vocab, padding_idx, eps);
    });
  }

  void cross_entropy_backward(const void* logits, const int32_t* targets, const void* lse,
                              const void* grad_scale_dev, void* d_logits, int64_t rows,
                              int64_t vocab, int32_t padding_idx, float eps, DType dt) override {
    const char* call = "cross_entropy_backward";
    check_cross_entropy(rows, vocab, eps, call);
    dispatch(dt, call, [&](auto tag) {
      using T = decltype(tag);
      using A = acc_t<T>;
      if (rows == 0) return;
      check_ptr(logits, call, "logits");
      check_ptr(targets, call, "targets");
      check_ptr(lse, call, "lse");
      check_ptr(grad_scale_dev, call, "grad_scale_dev");
      check_ptr(d_logits, call, "d_logits");
      cpu::cross_entropy_backward<T>(static_cast<const T*>(logits), targets,
                                     static_cast<const A*>(lse),
                                     static_cast<const A*>(grad_scale_dev),
                                     static_cast<T*>(d_logits), rows, vocab, padding_idx, eps);
    });
  }

  // ---- optimizer ----
  void sum_squares(const void* x, size_t n, void* out, DType acc) override {
    const char* call = "sum_squares";
    dispatch(acc, call, [&](auto tag) {
      using A = decltype(tag);
      check_ptr(out, call, "out");
      if (n > 0) check_ptr(x, call, "x");
      cpu::sum_squares<A>(static_cast<const A*>(x), n, static_cast<A*>(out));
    });
  }

  void update_control(const void* sumsq_dev, void* tokens_dev, const UpdateControlArgs& args,
                      TrainState* state_dev, void* grad_scale_dev, DType acc) override {
    const char* call = "update_control";
    check_ptr(sumsq_dev, call, "sumsq_dev");
    check_ptr(tokens_dev, call, "tokens_dev");
    check_ptr(state_dev, call, "state_dev");
    check_ptr(grad_scale_dev, call, "grad_scale_dev");
    dispatch(acc, call, [&](auto tag) {
      using A = decltype(tag);
      A* tokens = static_cast<A*>(tokens_dev);
      const double scale =
          ls::update_control(static_cast<double>(*static_cast<const A*>(sumsq_dev)),
                             static_cast<double>(*tokens), args, *state_dev);
      *tokens = 0;
      *static_cast<A*>(grad_scale_dev) = static_cast<A>(scale);
    });
  }

  void adam_update(void* params, const void* grads, void* m, void* v, void* work, DType work_t,
                   size_t n, const AdamArgs& h, const AdamStep* step_dev, DType acc) override {
    const char* call = "adam_update";
    check_ptr(step_dev, call, "step_dev");
    if (step_dev->skip == 0)
      LS_CHECK_ARG(step_dev->bias1 > 0.0 && step_dev->bias2 > 0.0,
                   call << ": bias corrections must be positive, got bias1 = " << step_dev->bias1
                        << ", bias2 = " << step_dev->bias2);
    dispatch(acc, call, [&](auto acc_tag) {
      using A = decltype(acc_tag);
      if (n == 0) return;
      for (auto [p, name] : {std::pair<const void*, const char*>{params, "params"},
                             {grads, "grads"},
                             {m, "m"},
                             {v, "v"}})
        check_ptr(p, call, name);
      auto run = [&](auto work_tag) {
        using W = decltype(work_tag);
        cpu::adam_update<A, W>(static_cast<A*>(params), static_cast<const A*>(grads),
                               static_cast<A*>(m), static_cast<A*>(v), static_cast<W*>(work), n, h,
                               *step_dev);
      };
      if (work)
        dispatch(work_t, call, run);
      else
        run(A{});
    });
  }

  // ---- inputs and counters ----
  void import_tokens(const int32_t* src, int32_t* dst, int64_t n, int32_t vocab,
                     int32_t padding_idx, uint32_t* bad_count_dev) override {
    const char* call = "import_tokens";
    check_nonneg(n, call, "n");
    check_ptr(bad_count_dev, call, "bad_count_dev");
    if (n > 0) {
      check_ptr(src, call, "src");
      check_ptr(dst, call, "dst");
    }
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t t = src[i];
      const bool ok = t >= 0 && t < vocab;
      bad += ok ? 0 : 1;
      dst[i] = ok ? t : padding_idx;
    }
    *bad_count_dev += bad;
  }
  void padding_mask(const int32_t* tokens, uint8_t* mask, int64_t n, int32_t padding_idx) override {
    const char* call = "padding_mask";
    check_nonneg(n, call, "n");
    if (n == 0) return;
    check_ptr(tokens, call, "tokens");
    check_ptr(mask, call, "mask");
    for (int64_t i = 0; i < n; ++i) mask[i] = tokens[i] == padding_idx ? 1 : 0;
  }
  void counter_add(uint64_t* counter, uint64_t v) override {
    check_ptr(counter, "counter_add", "counter");
    *counter += v;
  }
  void scalar_accumulate(void* sum, const void* x, DType acc) override {
    const char* call = "scalar_accumulate";
    check_ptr(sum, call, "sum");
    check_ptr(x, call, "x");
    dispatch(acc, call, [&](auto tag) {
      using A = decltype(tag);
      *static_cast<A*>(sum) += *static_cast<const A*>(x);
    });
  }

  // ---- host memory ----
  void* host_alloc(size_t bytes) override { return ::operator new(bytes == 0 ? 1 : bytes); }
  void host_free(void* p) override { ::operator delete(p); }

 private:
  static void move_bytes(void* dst, const void* src, size_t bytes, const char* call) {
    if (bytes == 0) return;
    check_ptr(dst, call, "dst");
    check_ptr(src, call, "src");
    std::memmove(dst, src, bytes);
  }

  static void check_heads(const void* in, const void* out, int64_t n, int64_t batch, int64_t len,
                          int64_t heads, int64_t head_dim, const char* call) {
    check_nonneg(n, call, "n");
    check_nonneg(batch, call, "batch");
    check_nonneg(len, call, "len");
    check_nonneg(heads, call, "heads");
    check_nonneg(head_dim, call, "head_dim");
    if (n * batch * len * heads * head_dim == 0) return;
    check_ptr(in, call, "in");
    check_ptr(out, call, "out");
    LS_CHECK_ARG(in != out, call << ": in and out must not alias (the op is a permutation)");
  }

  static void check_cross_entropy(int64_t rows, int64_t vocab, float eps, const char* call) {
    check_nonneg(rows, call, "rows");
    LS_CHECK_ARG(vocab >= 2, call << ": vocab = " << vocab << " must be at least 2");
    LS_CHECK_ARG(eps >= 0.f && eps < 1.f, call << ": label smoothing " << eps << " not in [0, 1)");
  }
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Ops> make_cpu_ops() {
  return std::make_unique<cpu::CpuOps>();
}

}  // namespace ls
