#include "layers/layer_common.h"

namespace ls {

void Linear::forward(Ops& ops, DType dt, const void* x, const void* w, void* y, int64_t tokens,
                     int64_t in, int64_t out, Epilogue ep, const void* bias, void* aux,
                     Activation act) {
  GemmArgs g;
  g.trans_b = true;
  g.m = tokens;
  g.n = out;
  g.k = in;
  g.a = x;
  g.lda = in;
  g.b = w;
  g.ldb = in;
  g.c = y;
  g.ldc = out;
  g.ab_type = g.c_type = dt;
  g.epilogue = ep;
  g.bias = bias;
  g.aux = aux;
  g.act = act;
  ops.gemm(g);
}

void Linear::backward_data(Ops& ops, DType dt, const void* dy, const void* w, void* dx,
                           int64_t tokens, int64_t in, int64_t out, float beta) {
  GemmArgs g;
  g.m = tokens;
  g.n = in;
  g.k = out;
  g.a = dy;
  g.lda = out;
  g.b = w;
  g.ldb = in;
  g.c = dx;
  g.ldc = in;
  g.beta = beta;
  g.ab_type = g.c_type = dt;
  ops.gemm(g);
}

void Linear::backward_weight(Ops& ops, DType dt, const void* dy, const void* x, void* dw,
                             void* d_bias, int64_t tokens, int64_t in, int64_t out, float beta) {
  GemmArgs g;
  g.trans_a = true;
  g.m = out;
  g.n = in;
  g.k = tokens;
  g.a = dy;
  g.lda = out;
  g.b = x;
  g.ldb = in;
  g.c = dw;
  g.ldc = in;
  g.beta = beta;
  g.ab_type = dt;
  g.c_type = accum_dtype(dt);
  if (d_bias) {
    g.epilogue = Epilogue::BGradA;
    g.bias_grad = d_bias;
  }
  ops.gemm(g);
}

}  // namespace ls
