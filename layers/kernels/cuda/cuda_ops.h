// The CUDA implementation of Ops (layers/kernels/ops.h). Host-only header: no CUDA types, so
// plain C++ (tests, the runtime) can reach the CUDA-specific controls below through
// dynamic_cast<CudaOps*>(ops). Built only with LS_HAVE_CUDA.
#pragma once

#include <cstddef>
#include <memory>

#include "layers/kernels/ops.h"

namespace ls {
namespace cuda {
class LtGemm;
struct Reduction;
struct LnXhatSource;
}  // namespace cuda

class CudaOps final : public Ops {
 public:
  // `stream` is a cudaStream_t; null: CudaOps creates one (non-blocking) and owns it. The
  // device must be current (it is recorded; kernels launch on the current device).
  CudaOps(int device, void* stream);
  ~CudaOps() override;
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  // Scratch for cuBLASLt (and the bias-gradient slice of fused dGELU+bgrad GEMMs), the
  // deterministic reductions' partial sums and embedding_forward's sinusoid rows (len x dim
  // floats; without room for them each element evaluates its sinusoid). Until set, cuBLASLt
  // runs with no workspace. The memory must outlive its use on the stream.
  void set_workspace(void* p, size_t bytes) override;
  // Whether cuBLASLt's fused epilogues may be used (default true); false forces plain GEMMs
  // followed by this backend's own epilogue kernels (tests exercise both).
  void set_fused_epilogues(bool on);
  void set_allow_tf32(bool on) override;
  void set_gemm_autotune(bool on) override;
  size_t gemm_tuned_plans() const;
  void set_deterministic(bool on) override { deterministic_ = on; }
  size_t gemm_plan_count() const;
  size_t gemm_fused_calls() const;
  void* stream() const { return stream_; }
  int device() const { return device_; }

  bool is_cuda() const override { return true; }
  void zero(void* p, size_t bytes) override;
  void zero_ranges(void* base, const uint64_t* ranges, int64_t count, uint64_t max_elements,
                   size_t elem_bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void to_host(void* host_dst, const void* src, size_t bytes) override;
  void from_host(void* dst, const void* host_src, size_t bytes) override;
  void synchronize() override;
  void cast(const void* src, DType src_t, void* dst, DType dst_t, size_t n) override;
  void add_inplace(void* y, const void* x, DType t, size_t n) override;
  void gemm(const GemmArgs& g) override;
  void embedding_forward(const EmbeddingArgs& a, const void* table, void* out) override;
  void embedding_backward(const EmbeddingArgs& a, const void* d_out, void* d_table,
                          void* d_positions, bool deterministic) override;
  void layernorm_forward(const void* x, const void* gamma, const void* beta, void* y, void* mean,
                         void* rstd, int64_t rows, int64_t cols, float eps, DType dt) override;
  void layernorm_backward(const void* dy, const void* x, const void* gamma, const void* mean,
                          const void* rstd, const void* d_residual, void* dx, void* d_gamma,
                          void* d_beta, int64_t rows, int64_t cols, DType dt) override;
  void layernorm_backward_with_output(const void* dy, const void* x, const void* gamma,
                                      const void* beta, const void* mean, const void* rstd,
                                      const void* d_residual, void* dx, void* y, void* d_gamma,
                                      void* d_beta, int64_t rows, int64_t cols, DType dt) override;
  void layernorm_backward_from_output(const void* dy, const void* y, const void* gamma,
                                      const void* beta, const void* rstd, const void* d_residual,
                                      void* dx, void* d_gamma, void* d_beta, int64_t rows,
                                      int64_t cols, DType dt) override;
  void bias_dropout_residual_forward(const void* x, const void* bias, const void* residual,
                                     void* out, int64_t rows, int64_t cols, float p, DropoutKey key,
                                     DType dt) override;
  void bias_dropout_residual_layernorm_forward(const void* x, const void* bias,
                                               const void* residual, void* out, const void* gamma,
                                               const void* beta, void* y, void* mean, void* rstd,
                                               int64_t rows, int64_t cols, float p, DropoutKey key,
                                               float eps, DType dt) override;
  void dropout_bias_backward(const void* d_out, void* dx, void* d_bias, int64_t rows, int64_t cols,
                             float p, DropoutKey key, DType dt) override;
  void act_dropout_forward(const void* pre, void* out, int64_t rows, int64_t cols, Activation act,
                           float p, DropoutKey key, DType dt) override;
  void act_dropout_backward(const void* d_out, const void* pre, void* d_pre, void* d_bias,
                            int64_t rows, int64_t cols, Activation act, float p, DropoutKey key,
                            DType dt) override;
  void relu_dropout_backward_from_output(const void* d_out, const void* out, void* d_pre,
                                         void* d_bias, int64_t rows, int64_t cols, float p,
                                         DType dt) override;
  void dropout_forward(const void* x, void* out, size_t n, float p, DropoutKey key,
                       DType dt) override;
  void bias_grad(const void* dy, void* d_bias, int64_t rows, int64_t cols, DType dt) override;
  void split_heads(const void* in, const void* bias, void* out, int64_t n, int64_t batch,
                   int64_t len, int64_t heads, int64_t head_dim, DType dt) override;
  void merge_heads(const void* in, void* out, int64_t n, int64_t batch, int64_t len, int64_t heads,
                   int64_t head_dim, DType dt) override;
  void softmax_forward(const void* scores, void* probs, const uint8_t* key_pad, bool causal,
                       int64_t batch, int64_t heads, int64_t len_q, int64_t len_k,
                       DType dt) override;
  void softmax_backward(const void* d_dropped, const void* probs, void* d_scores, int64_t rows,
                        int64_t len_k, float p, DropoutKey key, DType dt) override;
  void attention_forward(const AttentionArgs& a) override;
  void attention_backward(const AttentionArgs& a, const void* d_ctx, void* dq, void* dk, void* dv,
                          void* delta, void* d_bias) override;
  void cross_entropy_forward(const void* logits, const int32_t* targets, void* lse, void* sums,
                             int64_t rows, int64_t vocab, int32_t padding_idx, float eps,
                             DType dt) override;
  void cross_entropy_backward(const void* logits, const int32_t* targets, const void* lse,
                              const void* grad_scale_dev, void* d_logits, int64_t rows,
                              int64_t vocab, int32_t padding_idx, float eps, DType dt) override;
  void cross_entropy_forward_backward(const void* logits, const int32_t* targets, void* lse,
                                      void* sums, const void* grad_scale_dev, void* d_logits,
                                      int64_t rows, int64_t vocab, int32_t padding_idx, float eps,
                                      DType dt) override;
  void sum_squares(const void* x, size_t n, void* out, DType acc) override;
  void update_control(const void* sumsq_dev, void* tokens_dev, const UpdateControlArgs& args,
                      TrainState* state_dev, void* grad_scale_dev, DType acc) override;
  void adam_update(void* params, const void* grads, void* m, void* v, void* work, DType work_t,
                   size_t n, const AdamArgs& h, const AdamStep* step_dev, DType acc) override;
  void import_tokens(const int32_t* src, int32_t* dst, int64_t n, int32_t vocab,
                     int32_t padding_idx, uint32_t* bad_count_dev) override;
  void padding_mask(const int32_t* tokens, uint8_t* mask, int64_t n, int32_t padding_idx) override;
  void counter_add(uint64_t* counter, uint64_t v) override;
  void scalar_accumulate(void* sum, const void* x, DType acc) override;
  void* host_alloc(size_t bytes) override;
  void host_free(void* p) override;
  bool supports_capture() const override { return true; }
  void capture_begin() override;
  void* capture_end() override;
  void graph_launch(void* graph) override;
  void graph_destroy(void* graph) override;
  void mark() override;
  void wait_mark() override;

 private:
  cuda::Reduction reduction() const;
  // The body of layernorm_backward and layernorm_backward_from_output (src says which; the
  // argument checks name `call` and src's pointers as the method's parameters).
  void layernorm_backward_common(const char* call, const void* dy, const cuda::LnXhatSource& src,
                                 const void* gamma, const void* rstd, const void* d_residual,
                                 void* dx, void* d_gamma, void* d_beta, int64_t rows, int64_t cols,
                                 DType dt);

  int device_ = 0;
  void* stream_ = nullptr;
  bool owns_stream_ = false;
  void* mark_ = nullptr;  // cudaEvent_t recorded by mark()
  bool deterministic_ = true;
  void* workspace_ = nullptr;  // scratch of deterministic reductions and the embedding's
                               // sinusoid rows (shared with cuBLASLt)
  size_t workspace_bytes_ = 0;
  unsigned* sync_ = nullptr;  // PartialSums counters (partial_sums.cuh), zero between kernels
  std::unique_ptr<cuda::LtGemm> gemm_;
};

}  // namespace ls
