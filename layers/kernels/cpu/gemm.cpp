// CPU reference GEMM: C[M, N] = alpha op(A)[M, K] op(B)[K, N] (+ beta C), batched by a loop,
// with the epilogues of ops.h applied as separate passes over C after the product.
// Shapes: row-major A [M, K] (or [K, M] when trans_a), B [K, N] (or [N, K] when trans_b),
// C and aux [M, N] with leading dimension ldc; bias [N] (Bias, BiasAct); bias_grad [N]
// (DActBGrad) or [M] (BGradA). The product goes through CBLAS (OpenBLAS) when the build found
// it, else through a plain triple loop accumulating in acc_t<T>.
#include <cstddef>
#include <cstdint>

#if LS_HAVE_CBLAS
#include <cblas.h>
#endif

#include "layers/kernels/cpu/cpu_kernels.h"

namespace ls {
namespace cpu {
namespace {

#if LS_HAVE_CBLAS
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
               int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
               int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}
#else
// Plain fallback with BLAS semantics: beta == 0 means C is not read (NaNs in C do not leak).
template <typename T>
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
               const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      A sum = 0;
      for (int64_t p = 0; p < k; ++p) {
        A av = ta ? a[p * lda + i] : a[i * lda + p];
        A bv = tb ? b[j * ldb + p] : b[p * ldb + j];
        sum += av * bv;
      }
      T& out = c[i * ldc + j];
      out = beta == T(0) ? static_cast<T>(alpha * sum) : static_cast<T>(alpha * sum + beta * out);
    }
  }
}
#endif

// One matrix of the batch: product, then the epilogue.
template <typename T>
void gemm_one(const GemmArgs& g, const T* a, const T* b, T* c, T* aux, acc_t<T>* bias_grad) {
  using A = acc_t<T>;
  const int64_t m = g.m, n = g.n, k = g.k, ldc = g.ldc;
  const T* bias = static_cast<const T*>(g.bias);
  blas_gemm(g.trans_a, g.trans_b, m, n, k, static_cast<T>(g.alpha), a, g.lda, b, g.ldb,
            static_cast<T>(g.beta), c, ldc);

  switch (g.epilogue) {
    case Epilogue::None:
      break;
    case Epilogue::Bias:
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) c[i * ldc + j] += bias[j];
      break;
    case Epilogue::BiasAct:
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          A pre = static_cast<A>(c[i * ldc + j]) + static_cast<A>(bias[j]);
          aux[i * ldc + j] = static_cast<T>(pre);
          c[i * ldc + j] = static_cast<T>(activation(g.act, pre));
        }
      }
      break;
    case Epilogue::DActBGrad:
      for (int64_t j = 0; j < n; ++j) {
        A column_sum = 0;
        for (int64_t i = 0; i < m; ++i) {
          T& out = c[i * ldc + j];
          out = static_cast<T>(static_cast<A>(out) *
                               activation_derivative(g.act, static_cast<A>(aux[i * ldc + j])));
          column_sum += static_cast<A>(out);
        }
        bias_grad[j] += column_sum;
      }
      break;
    case Epilogue::BGradA:
      for (int64_t i = 0; i < m; ++i) {
        A row_sum = 0;
        for (int64_t p = 0; p < k; ++p)
          row_sum += static_cast<A>(g.trans_a ? a[p * g.lda + i] : a[i * g.lda + p]);
        bias_grad[i] += row_sum;
      }
      break;
  }
}

// Pointer to matrix i of a batch; null stays null (A and B may be null when k == 0).
template <typename P>
P* batch_item(P* base, int64_t i, int64_t stride) {
  return base ? base + i * stride : nullptr;
}

}  // namespace

template <typename T>
void gemm(const GemmArgs& g) {
  const T* a = static_cast<const T*>(g.a);
  const T* b = static_cast<const T*>(g.b);
  T* c = static_cast<T*>(g.c);
  T* aux = static_cast<T*>(g.aux);
  acc_t<T>* bias_grad = static_cast<acc_t<T>*>(g.bias_grad);
  for (int64_t i = 0; i < g.batch; ++i) {
    gemm_one<T>(g, batch_item(a, i, g.stride_a), batch_item(b, i, g.stride_b),
                batch_item(c, i, g.stride_c), batch_item(aux, i, g.stride_c), bias_grad);
  }
}

template void gemm<float>(const GemmArgs&);
template void gemm<double>(const GemmArgs&);

}  // namespace cpu
}  // namespace ls
