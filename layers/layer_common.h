// What every layer shares: the run context (memory, kernels, weights, dropout keys, the
// batch's shape), the sublayer interface used by residual blocks, and Linear as three GEMMs.
#pragma once

#include <cstdint>

#include "allocator/planner.h"
#include "layers/exec.h"
#include "layers/kernels/ops.h"
#include "layers/params.h"

namespace ls {

// Sizes fixed at creation: buffers are declared for the maxima.
struct LayerDims {
  int64_t max_tokens = 0;  // max_batch_tokens: bound on B x L for each side
  int64_t max_len = 0;     // max_seq_len
  int64_t hidden = 0, ffn = 0, heads = 0;
  DType dt = DType::F32;  // working type: activation buffers hold this
  int64_t head_dim() const { return hidden / heads; }
};

// The shape of the batch being run: B rows, source length Ls, target length Lt.
struct RunShape {
  int64_t batch = 0, src_len = 0, tgt_len = 0;
};

enum class Side : uint8_t { Source, Target };

// Everything a layer needs while running (or dry-running) a step.
struct RunCtx {
  Exec* ex = nullptr;
  WeightsView wv;
  RunShape shape;
  bool training = true;
  uint64_t seed = 0;
  // The model's pass counter (advanced once per training forward, in the backend's memory):
  // dropout keys are (seed, site, counter), so keys never repeat and a captured step draws
  // fresh masks on replay. Null (dry runs, tests): the site index alone.
  const uint64_t* dropout_stream = nullptr;
  // A training forward of the first micro-batch of an update: the gradients start from zero,
  // and the criterion may use its scratch range of the gradient buffer (TransformerGraph::
  // criterion_scratch), which it must zero before backward. False in dry runs.
  bool fresh_gradients = false;
  // With fresh_gradients: the weight-gradient GEMMs of ParamEntry::grad_overwritten tensors
  // overwrite (beta = 0) instead of accumulating, and the trainer zeroes only the other
  // gradients (ParamSet::accumulated_ranges).
  bool overwrite_weight_grads = false;
  float weight_grad_beta() const { return overwrite_weight_grads ? 0.f : 1.f; }

  Ops& ops() { return ex->ops(); }
  DType dt() const { return wv.dt; }
  DType acc() const { return wv.acc; }
  int64_t len(Side s) const { return s == Side::Source ? shape.src_len : shape.tgt_len; }
  int64_t tokens(Side s) const { return shape.batch * len(s); }
  float rate(float p) const { return training ? p : 0.f; }
  DropoutKey key(uint32_t site) const { return {seed, site, dropout_stream}; }
  void* ptr(BufferId id) { return ex->ptr(id); }
};

// A block's inner function (attention or feed-forward): s = f(x), without the output bias,
// which the residual block fuses with dropout and the residual add.
class Sublayer {
 public:
  virtual ~Sublayer() = default;
  // in: [T, d] input; out: [T, d].
  virtual void forward(RunCtx& rc, BufferId in, BufferId out) = 0;
  // Backward in two calls, so that the sublayer's input need not exist during the first:
  // - backward: d_out, the gradient of out [T, d] (may be overwritten) -> d_in = beta * d_in +
  //   the gradient of in, and the gradients of every parameter except the weights of the
  //   projections that read `in`. It does not read `in`.
  // - input_weight_backward: those weights' gradients, from `in` (which must hold the forward's
  //   input again by then: a pre-LN block recomputes it in its LayerNorm backward) and what
  //   backward left in the sublayer's own buffers. Must follow backward.
  virtual void backward(RunCtx& rc, BufferId d_out, BufferId d_in, float beta) = 0;
  virtual void input_weight_backward(RunCtx& rc, BufferId in) = 0;
  virtual ParamRef out_bias() const = 0;
  virtual Side side() const = 0;
};

// Linear y = x W^T (+ b) with W [out, in] (PyTorch layout), as GEMM descriptions.
struct Linear {
  // y [T, out] = x [T, in] W^T, with an optional epilogue (Bias / BiasAct with aux).
  static void forward(Ops& ops, DType dt, const void* x, const void* w, void* y, int64_t tokens,
                      int64_t in, int64_t out, Epilogue ep = Epilogue::None,
                      const void* bias = nullptr, void* aux = nullptr,
                      Activation act = Activation::ReLU);
  // dx [T, in] = beta dx + dy [T, out] W (W given as rows of length in).
  static void backward_data(Ops& ops, DType dt, const void* dy, const void* w, void* dx,
                            int64_t tokens, int64_t in, int64_t out, float beta = 0.f);
  // dW [out, in] (acc) = beta dW + dy^T x (beta 1: accumulate; 0: overwrite, dW not read);
  // d_bias [out] (acc) += column sums of dy when non-null (always accumulates).
  static void backward_weight(Ops& ops, DType dt, const void* dy, const void* x, void* dw,
                              void* d_bias, int64_t tokens, int64_t in, int64_t out,
                              float beta = 1.f);
};

}  // namespace ls
