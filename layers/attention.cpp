#include "layers/attention.h"

#include <cmath>

namespace ls {

namespace {

// Batched GEMM over B*H heads, row-major [rows, cols] matrices per head.
void head_gemm(Ops& ops, DType dt, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* a,
               int64_t lda, int64_t sa, const void* b, int64_t ldb, int64_t sb, void* c,
               int64_t ldc, int64_t sc, int64_t batch, float alpha) {
  GemmArgs g;
  g.trans_a = ta;
  g.trans_b = tb;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a;
  g.lda = lda;
  g.stride_a = sa;
  g.b = b;
  g.ldb = ldb;
  g.stride_b = sb;
  g.c = c;
  g.ldc = ldc;
  g.stride_c = sc;
  g.batch = batch;
  g.alpha = alpha;
  g.ab_type = g.c_type = dt;
  ops.gemm(g);
}

void* offset(void* p, int64_t elems, DType t) {
  return static_cast<std::byte*>(p) + elems * static_cast<int64_t>(dtype_size(t));
}

}  // namespace

Attention::Attention(Planner& planner, ParamSet& params, const std::string& prefix,
                     const LayerDims& dims, const AttentionSpec& spec)
    : dims_(dims), spec_(spec) {
  const int64_t d = dims.hidden;
  ParamInit xavier;
  xavier.kind = InitKind::XavierUniform;
  xavier.fan_in = d;
  xavier.fan_out = d;
  xavier.gain = 1.0 / std::sqrt(2.0);  // fairseq: q, k, v each initialised as a [d, d] block
  xavier.block_rows = d;
  in_w_ = params.add(prefix + ".in_proj_weight", {3 * d, d}, xavier);
  params.set_grad_overwritten(in_w_);  // one GEMM (self) or two on disjoint rows (cross)
  in_b_ = params.add(prefix + ".in_proj_bias", {3 * d}, ParamInit{});
  ParamInit out_init = xavier;
  out_init.gain = 1.0;
  out_w_ = params.add(prefix + ".out_proj.weight", {d, d}, out_init);
  params.set_grad_overwritten(out_w_);
  out_b_ = params.add(prefix + ".out_proj.bias", {d}, ParamInit{});

  // Every sequence tensor is bounded by max_tokens rows of d; scores by max_tokens x H x max_len.
  const size_t T = static_cast<size_t>(dims.max_tokens);
  const size_t hd = static_cast<size_t>(d) * T;  // elements of one [T, d] tensor
  const size_t scores = T * static_cast<size_t>(dims.heads) * static_cast<size_t>(dims.max_len);
  const std::string p = prefix + ".";
  const size_t e = dtype_size(dims.dt);
  const auto S = MemCategory::SavedActivations, Tmp = MemCategory::Temporaries;
  ctx_ = planner.declare(p + "ctx", S, hd * e);
  d_ctx_ = planner.declare(p + "d_ctx", Tmp, hd * e);
  if (spec.fused) {
    // The projections are read in place by the fused kernels: saved, not temporaries.
    const size_t rows = T * static_cast<size_t>(dims.heads);  // [B, H, Lq] statistics
    const size_t a = dtype_size(accum_dtype(dims.dt));
    if (spec.cross) {
      q_lin_ = planner.declare(p + "q_lin", S, hd * e);
      kv_lin_ = planner.declare(p + "kv_lin", S, 2 * hd * e);
      d_q_lin_ = planner.declare(p + "d_q_lin", Tmp, hd * e);
      d_kv_lin_ = planner.declare(p + "d_kv_lin", Tmp, 2 * hd * e);
    } else {
      q_lin_ = planner.declare(p + "qkv_lin", S, 3 * hd * e);
      d_q_lin_ = planner.declare(p + "d_qkv_lin", Tmp, 3 * hd * e);
    }
    lse_ = planner.declare(p + "lse", S, rows * a);
    delta_ = planner.declare(p + "delta", Tmp, rows * a);
    return;
  }
  if (spec.cross) {
    q_lin_ = planner.declare(p + "q_lin", Tmp, hd * e);
    kv_lin_ = planner.declare(p + "kv_lin", Tmp, 2 * hd * e);
    q_heads_ = planner.declare(p + "q_heads", S, hd * e);
    kv_heads_ = planner.declare(p + "kv_heads", S, 2 * hd * e);
    d_q_heads_ = planner.declare(p + "d_q_heads", Tmp, hd * e);
    d_kv_heads_ = planner.declare(p + "d_kv_heads", Tmp, 2 * hd * e);
    d_q_lin_ = planner.declare(p + "d_q_lin", Tmp, hd * e);
    d_kv_lin_ = planner.declare(p + "d_kv_lin", Tmp, 2 * hd * e);
  } else {
    q_lin_ = planner.declare(p + "qkv_lin", Tmp, 3 * hd * e);
    q_heads_ = planner.declare(p + "qkv_heads", S, 3 * hd * e);
    d_q_heads_ = planner.declare(p + "d_qkv_heads", Tmp, 3 * hd * e);
    d_q_lin_ = planner.declare(p + "d_qkv_lin", Tmp, 3 * hd * e);
  }
  probs_ = planner.declare(p + "probs", S, scores * e);
  if (spec.dropout > 0.f) dropped_ = planner.declare(p + "probs_dropped", Tmp, scores * e);
  ctx_heads_ = planner.declare(p + "ctx_heads", Tmp, hd * e);
  d_ctx_heads_ = planner.declare(p + "d_ctx_heads", Tmp, hd * e);
  d_probs_ = planner.declare(p + "d_probs", Tmp, scores * e);
}

AttentionArgs Attention::fused_args(RunCtx& rc) {
  const DType dt = rc.dt();
  const int64_t d = dims_.hidden, Dh = dims_.head_dim();
  AttentionArgs a;
  if (!spec_.cross) {  // [T, 3d]: q | k | v
    void* qkv = rc.ptr(q_lin_);
    a.q = qkv;
    a.k = offset(qkv, d, dt);
    a.v = offset(qkv, 2 * d, dt);
    a.ld_q = a.ld_k = a.ld_v = 3 * d;
  } else {  // [Tq, d] and [Tk, 2d]: k | v
    void* kv = rc.ptr(kv_lin_);
    a.q = rc.ptr(q_lin_);
    a.k = kv;
    a.v = offset(kv, d, dt);
    a.ld_q = d;
    a.ld_k = a.ld_v = 2 * d;
  }
  a.ctx = rc.ptr(ctx_);
  a.ld_ctx = d;
  a.lse = rc.ptr(lse_);
  a.key_pad = static_cast<const uint8_t*>(rc.ptr(spec_.key_pad));
  a.causal = spec_.causal;
  a.batch = rc.shape.batch;
  a.heads = dims_.heads;
  a.len_q = rc.len(spec_.side);
  a.len_k = key_len(rc);
  a.head_dim = Dh;
  a.scale = 1.f / std::sqrt(static_cast<float>(Dh));
  a.dropout = rc.rate(spec_.dropout);
  a.key = rc.key(spec_.site);
  a.dt = dt;
  return a;
}

void Attention::forward(RunCtx& rc, BufferId in, BufferId out) {
  Ops& ops = rc.ops();
  const DType dt = rc.dt();
  const int64_t d = dims_.hidden, H = dims_.heads, Dh = dims_.head_dim();
  const int64_t B = rc.shape.batch, Lq = rc.len(spec_.side), Lk = key_len(rc);
  const int64_t Tq = B * Lq, Tk = B * Lk;

  if (spec_.fused) {
    if (!spec_.cross) {
      Linear::forward(ops, dt, rc.ptr(in), rc.wv.w(in_w_), rc.ptr(q_lin_), Tq, d, 3 * d,
                      Epilogue::Bias, rc.wv.w(in_b_));
    } else {
      Linear::forward(ops, dt, rc.ptr(in), rc.wv.w(in_w_), rc.ptr(q_lin_), Tq, d, d, Epilogue::Bias,
                      rc.wv.w(in_b_));
      Linear::forward(ops, dt, rc.ptr(spec_.memory), rc.wv.w_rows(in_w_, d, d), rc.ptr(kv_lin_), Tk,
                      d, 2 * d, Epilogue::Bias, rc.wv.w_rows(in_b_, d, 1));
    }
    ops.attention_forward(fused_args(rc));
    Linear::forward(ops, dt, rc.ptr(ctx_), rc.wv.w(out_w_), rc.ptr(out), Tq, d, d);
    return;
  }

  const void* q;
  const void* k;
  const void* v;
  if (!spec_.cross) {
    void* qkv = rc.ptr(q_lin_);
    void* heads = rc.ptr(q_heads_);
    Linear::forward(ops, dt, rc.ptr(in), rc.wv.w(in_w_), qkv, Tq, d, 3 * d, Epilogue::Bias,
                    rc.wv.w(in_b_));
    ops.split_heads(qkv, nullptr, heads, 3, B, Lq, H, Dh, dt);
    q = heads;
    k = offset(heads, Tq * d, dt);
    v = offset(heads, 2 * Tq * d, dt);
  } else {
    void* q_lin = rc.ptr(q_lin_);
    void* kv_lin = rc.ptr(kv_lin_);
    void* qh = rc.ptr(q_heads_);
    void* kvh = rc.ptr(kv_heads_);
    Linear::forward(ops, dt, rc.ptr(in), rc.wv.w(in_w_), q_lin, Tq, d, d, Epilogue::Bias,
                    rc.wv.w(in_b_));
    ops.split_heads(q_lin, nullptr, qh, 1, B, Lq, H, Dh, dt);
    Linear::forward(ops, dt, rc.ptr(spec_.memory), rc.wv.w_rows(in_w_, d, d), kv_lin, Tk, d, 2 * d,
                    Epilogue::Bias, rc.wv.w_rows(in_b_, d, 1));
    ops.split_heads(kv_lin, nullptr, kvh, 2, B, Lk, H, Dh, dt);
    q = qh;
    k = kvh;
    v = offset(kvh, Tk * d, dt);
  }

  const float scale = 1.f / std::sqrt(static_cast<float>(Dh));
  void* probs = rc.ptr(probs_);
  head_gemm(ops, dt, false, true, Lq, Lk, Dh, q, Dh, Lq * Dh, k, Dh, Lk * Dh, probs, Lk, Lq * Lk,
            B * H, scale);
  ops.softmax_forward(probs, probs, static_cast<const uint8_t*>(rc.ptr(spec_.key_pad)),
                      spec_.causal, B, H, Lq, Lk, dt);
  const float p = rc.rate(spec_.dropout);
  const void* P = probs;
  if (p > 0.f) {
    void* dropped = rc.ptr(dropped_);
    ops.dropout_forward(probs, dropped, static_cast<size_t>(B * H * Lq * Lk), p, rc.key(spec_.site),
                        dt);
    P = dropped;
  }
  void* ctx_heads = rc.ptr(ctx_heads_);
  head_gemm(ops, dt, false, false, Lq, Dh, Lk, P, Lk, Lq * Lk, v, Dh, Lk * Dh, ctx_heads, Dh,
            Lq * Dh, B * H, 1.f);
  void* ctx = rc.ptr(ctx_);
  ops.merge_heads(ctx_heads, ctx, 1, B, Lq, H, Dh, dt);
  Linear::forward(ops, dt, ctx, rc.wv.w(out_w_), rc.ptr(out), Tq, d, d);
}

void Attention::backward(RunCtx& rc, BufferId d_out, BufferId d_in, float beta) {
  Ops& ops = rc.ops();
  const DType dt = rc.dt();
  const int64_t d = dims_.hidden, Tq = rc.tokens(spec_.side);

  // Output projection (its bias gradient was taken by the residual block).
  void* dout = rc.ptr(d_out);
  void* d_ctx = rc.ptr(d_ctx_);
  Linear::backward_weight(ops, dt, dout, rc.ptr(ctx_), rc.wv.g(out_w_), nullptr, Tq, d, d,
                          rc.weight_grad_beta());
  Linear::backward_data(ops, dt, dout, rc.wv.w(out_w_), d_ctx, Tq, d, d);
  if (spec_.fused) {
    AttentionArgs a = fused_args(rc);
    if (!spec_.cross) {
      void* d_qkv = rc.ptr(d_q_lin_);
      ops.attention_backward(a, d_ctx, d_qkv, offset(d_qkv, d, dt), offset(d_qkv, 2 * d, dt),
                             rc.ptr(delta_), rc.wv.g(in_b_));
    } else {
      void* d_kv = rc.ptr(d_kv_lin_);
      ops.attention_backward(a, d_ctx, rc.ptr(d_q_lin_), d_kv, offset(d_kv, d, dt), rc.ptr(delta_),
                             rc.wv.g(in_b_));
    }
  } else {
    backward_unfused(rc, d_ctx);
  }
  projections_backward(rc, d_in, beta);
}

void Attention::backward_unfused(RunCtx& rc, void* d_ctx) {
  Ops& ops = rc.ops();
  const DType dt = rc.dt();
  const int64_t d = dims_.hidden, H = dims_.heads, Dh = dims_.head_dim();
  const int64_t B = rc.shape.batch, Lq = rc.len(spec_.side), Lk = key_len(rc);
  const int64_t Tq = B * Lq, Tk = B * Lk;
  const float scale = 1.f / std::sqrt(static_cast<float>(Dh));
  void* d_ctx_heads = rc.ptr(d_ctx_heads_);
  ops.split_heads(d_ctx, nullptr, d_ctx_heads, 1, B, Lq, H, Dh, dt);

  const void *q, *k, *v;
  void *dq, *dk, *dv;
  if (!spec_.cross) {
    void* heads = rc.ptr(q_heads_);
    void* dh = rc.ptr(d_q_heads_);
    q = heads;
    k = offset(heads, Tq * d, dt);
    v = offset(heads, 2 * Tq * d, dt);
    dq = dh;
    dk = offset(dh, Tq * d, dt);
    dv = offset(dh, 2 * Tq * d, dt);
  } else {
    void* qh = rc.ptr(q_heads_);
    void* kvh = rc.ptr(kv_heads_);
    void* dqh = rc.ptr(d_q_heads_);
    void* dkvh = rc.ptr(d_kv_heads_);
    q = qh;
    k = kvh;
    v = offset(kvh, Tk * d, dt);
    dq = dqh;
    dk = dkvh;
    dv = offset(dkvh, Tk * d, dt);
  }

  const void* probs = rc.ptr(probs_);
  const float p = rc.rate(spec_.dropout);
  const void* P = probs;
  if (p > 0.f) {  // regenerate the dropped probabilities from the same key
    void* dropped = rc.ptr(dropped_);
    ops.dropout_forward(probs, dropped, static_cast<size_t>(B * H * Lq * Lk), p, rc.key(spec_.site),
                        dt);
    P = dropped;
  }
  // dV = P^T dCtx ; dP = dCtx V^T
  head_gemm(ops, dt, true, false, Lk, Dh, Lq, P, Lk, Lq * Lk, d_ctx_heads, Dh, Lq * Dh, dv, Dh,
            Lk * Dh, B * H, 1.f);
  void* d_probs = rc.ptr(d_probs_);
  head_gemm(ops, dt, false, true, Lq, Lk, Dh, d_ctx_heads, Dh, Lq * Dh, v, Dh, Lk * Dh, d_probs, Lk,
            Lq * Lk, B * H, 1.f);
  ops.softmax_backward(d_probs, probs, d_probs, B * H * Lq, Lk, p, rc.key(spec_.site), dt);
  // dQ = scale dS K ; dK = scale dS^T Q
  head_gemm(ops, dt, false, false, Lq, Dh, Lk, d_probs, Lk, Lq * Lk, k, Dh, Lk * Dh, dq, Dh,
            Lq * Dh, B * H, scale);
  head_gemm(ops, dt, true, false, Lk, Dh, Lq, d_probs, Lk, Lq * Lk, q, Dh, Lq * Dh, dk, Dh, Lk * Dh,
            B * H, scale);

  if (!spec_.cross) {
    ops.merge_heads(rc.ptr(d_q_heads_), rc.ptr(d_q_lin_), 3, B, Lq, H, Dh, dt);
  } else {
    ops.merge_heads(rc.ptr(d_q_heads_), rc.ptr(d_q_lin_), 1, B, Lq, H, Dh, dt);
    ops.merge_heads(rc.ptr(d_kv_heads_), rc.ptr(d_kv_lin_), 2, B, Lk, H, Dh, dt);
  }
}

// The input projections' gradients from d_q_lin_ (and d_kv_lin_) in token-major layout, except
// the weight gradients that read `in` (input_weight_backward).
void Attention::projections_backward(RunCtx& rc, BufferId d_in, float beta) {
  Ops& ops = rc.ops();
  const DType dt = rc.dt();
  const int64_t d = dims_.hidden;
  const int64_t Tq = rc.tokens(spec_.side), Tk = rc.shape.batch * key_len(rc);
  void* dx = rc.ptr(d_in);
  // The fused backward already added the bias gradient (column sums of dq, dk, dv).
  void* db_kv = spec_.fused ? nullptr : rc.wv.g_rows(in_b_, d, 1);
  if (!spec_.cross) {
    Linear::backward_data(ops, dt, rc.ptr(d_q_lin_), rc.wv.w(in_w_), dx, Tq, d, 3 * d, beta);
  } else {
    void* d_kv = rc.ptr(d_kv_lin_);
    Linear::backward_data(ops, dt, rc.ptr(d_q_lin_), rc.wv.w(in_w_), dx, Tq, d, d, beta);
    Linear::backward_weight(ops, dt, d_kv, rc.ptr(spec_.memory), rc.wv.g_rows(in_w_, d, d), db_kv,
                            Tk, d, 2 * d, rc.weight_grad_beta());
    Linear::backward_data(ops, dt, d_kv, rc.wv.w_rows(in_w_, d, d), rc.ptr(spec_.d_memory), Tk, d,
                          2 * d, 1.f);
  }
}

void Attention::input_weight_backward(RunCtx& rc, BufferId in) {
  const int64_t d = dims_.hidden, Tq = rc.tokens(spec_.side);
  // The fused backward already added the bias gradient (column sums of dq, dk, dv); the
  // unfused one leaves it to this GEMM (cross-attention: the query rows only).
  void* db = spec_.fused ? nullptr : rc.wv.g(in_b_);
  Linear::backward_weight(rc.ops(), rc.dt(), rc.ptr(d_q_lin_), rc.ptr(in), rc.wv.g(in_w_), db, Tq,
                          d, spec_.cross ? d : 3 * d, rc.weight_grad_beta());
}

}  // namespace ls
