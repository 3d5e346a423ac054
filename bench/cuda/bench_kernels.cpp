// Per-kernel bandwidth of the CUDA backend. Measures the device's copy bandwidth
// (cudaMemcpy device-to-device, bytes read + written per second) and, for each bandwidth-bound
// kernel at sizes of 64 MB and more, the bytes it must move (each input read once, each output
// written once) divided by its time: the median of N timed runs (CUDA events) after warm-up.
// Prints: kernel, shape, dtype, time, GB/s, % of copy bandwidth. Nothing is asserted.
// Usage: bench_kernels [runs=20]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "layers/kernels/backends.h"
#include "layers/kernels/cuda/cuda_ops.h"
#include "runtime/error.h"

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

struct Buf {
  void* p = nullptr;
  explicit Buf(size_t bytes) {
    check(cudaMalloc(&p, bytes), "cudaMalloc");
    check(cudaMemset(p, 0, bytes), "cudaMemset");
  }
  ~Buf() { cudaFree(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
};

// Fills a buffer of fp16/fp32 values with small deterministic numbers (zeros would make
// softmax / LayerNorm trivially uniform but not faster; this keeps the values realistic).
void fill_random(ls::Ops& ops, void* p, size_t n, ls::DType dt) {
  std::vector<float> host(n);
  uint32_t s = 12345;
  for (auto& x : host) {
    s = s * 1664525u + 1013904223u;
    x = float(int(s >> 9) % 2000 - 1000) / 500.f;
  }
  Buf tmp(n * 4);
  ops.from_host(tmp.p, host.data(), n * 4);
  ops.cast(tmp.p, ls::DType::F32, p, dt, n);
  ops.synchronize();
}

int g_runs = 20;
double g_copy_gbs = 0;

double time_ms(cudaStream_t s, const std::function<void()>& f) {
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (before a benchmark)");
  static int step = 0;
  if (std::getenv("LS_BENCH_TRACE")) std::fprintf(stderr, "[bench step %d]\n", step++);
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < 3; ++i) f();
  std::vector<float> t;
  for (int i = 0; i < g_runs; ++i) {
    check(cudaEventRecord(a, s), "cudaEventRecord");
    f();
    check(cudaEventRecord(b, s), "cudaEventRecord");
    check(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  check(cudaGetLastError(), "kernel (after a benchmark)");
  return t[t.size() / 2];
}

void row(const char* kernel, const std::string& shape, const char* dtype, double ms, double bytes) {
  double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("%-38s %-22s %-5s %9.3f ms %8.1f GB/s %6.1f%%\n", kernel, shape.c_str(), dtype, ms,
              gbs, g_copy_gbs > 0 ? 100.0 * gbs / g_copy_gbs : 0.0);
  std::fflush(stdout);
}

std::string dims(int64_t a, int64_t b) {
  return std::to_string(a) + " x " + std::to_string(b);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_runs = std::max(1, std::atoi(argv[1]));
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::printf("device: %s, %d SMs; median of %d runs after 3 warm-up runs\n", prop.name,
              prop.multiProcessorCount, g_runs);
  try {
    auto ops_owned = ls::make_cuda_ops(0, nullptr);
    auto& ops = static_cast<ls::CudaOps&>(*ops_owned);
    cudaStream_t s = static_cast<cudaStream_t>(ops.stream());
    using ls::DType;
    const DType h = DType::F16;
    std::printf("%-38s %-22s %-5s %12s %13s %7s\n", "kernel", "shape", "dtype", "time", "bandwidth",
                "% copy");

    {  // device copy bandwidth
      const size_t bytes = size_t(512) << 20;
      Buf a(bytes), b(bytes);
      double ms = time_ms(
          s, [&] { check(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, s), "copy"); });
      g_copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
      row("cudaMemcpy D2D", "512 MiB", "-", ms, 2.0 * bytes);
    }

    const int64_t R = 65536, C = 1024;
    const size_t rc = size_t(R * C);
    Buf x(rc * 2), y(rc * 2), dy(rc * 2), dx(rc * 2), res(rc * 2);
    Buf gamma(C * 2), beta(C * 2), bias(C * 2), mean(R * 4), rstd(R * 4), dg(C * 4), db(C * 4);
    fill_random(ops, x.p, rc, h);
    fill_random(ops, dy.p, rc, h);
    fill_random(ops, res.p, rc, h);
    fill_random(ops, gamma.p, C, h);
    fill_random(ops, beta.p, C, h);
    fill_random(ops, bias.p, C, h);
    const double e = 2.0;  // bytes per fp16 element
    double ms = time_ms(s, [&] {
      ops.layernorm_forward(x.p, gamma.p, beta.p, y.p, mean.p, rstd.p, R, C, 1e-5f, h);
    });
    row("layernorm_forward", dims(R, C), "fp16", ms, e * 2 * rc + 8.0 * R);
    ms = time_ms(s, [&] {
      ops.layernorm_backward(dy.p, x.p, gamma.p, mean.p, rstd.p, nullptr, dx.p, dg.p, db.p, R, C,
                             h);
    });
    row("layernorm_backward", dims(R, C), "fp16", ms, e * 3 * rc + 8.0 * R);
    ms = time_ms(s, [&] {
      ops.layernorm_backward(dy.p, x.p, gamma.p, mean.p, rstd.p, res.p, dx.p, dg.p, db.p, R, C, h);
    });
    row("layernorm_backward +resid", dims(R, C), "fp16", ms, e * 4 * rc + 8.0 * R);
    // With the forward's output written again (recompute_layer_norm): one more [R, C] store.
    ms = time_ms(s, [&] {
      ops.layernorm_backward_with_output(dy.p, x.p, gamma.p, beta.p, mean.p, rstd.p, res.p, dx.p,
                                         y.p, dg.p, db.p, R, C, h);
    });
    row("layernorm_backward +resid +output", dims(R, C), "fp16", ms, e * 5 * rc + 8.0 * R);
    // From the forward's output y (written above); reads rstd but not mean.
    ms = time_ms(s, [&] {
      ops.layernorm_backward_from_output(dy.p, y.p, gamma.p, beta.p, rstd.p, nullptr, dx.p, dg.p,
                                         db.p, R, C, h);
    });
    row("layernorm_backward from output", dims(R, C), "fp16", ms, e * 3 * rc + 4.0 * R);
    ms = time_ms(s, [&] {
      ops.layernorm_backward_from_output(dy.p, y.p, gamma.p, beta.p, rstd.p, res.p, dx.p, dg.p,
                                         db.p, R, C, h);
    });
    row("layernorm_backward from output +resid", dims(R, C), "fp16", ms, e * 4 * rc + 4.0 * R);
    ls::DropoutKey key{1, 2};
    ms = time_ms(
        s, [&] { ops.bias_dropout_residual_forward(x.p, bias.p, res.p, y.p, R, C, 0.1f, key, h); });
    row("bias_dropout_residual", dims(R, C), "fp16", ms, e * 3 * rc);
    // The same, fused with the next block's LayerNorm: reads x and the residual, writes the
    // block output and its LayerNorm (the pair above and layernorm_forward move 5 [R, C]).
    ms = time_ms(s, [&] {
      ops.bias_dropout_residual_layernorm_forward(x.p, bias.p, res.p, dx.p, gamma.p, beta.p, y.p,
                                                  mean.p, rstd.p, R, C, 0.1f, key, 1e-5f, h);
    });
    row("bias_dropout_residual +layernorm", dims(R, C), "fp16", ms, e * 4 * rc + 8.0 * R);
    ms = time_ms(s, [&] { ops.dropout_bias_backward(dy.p, dx.p, db.p, R, C, 0.1f, key, h); });
    row("dropout_bias_backward", dims(R, C), "fp16", ms, e * 2 * rc);
    ms = time_ms(
        s, [&] { ops.act_dropout_forward(x.p, y.p, R, C, ls::Activation::GELU, 0.1f, key, h); });
    row("act_dropout_forward gelu", dims(R, C), "fp16", ms, e * 2 * rc);
    ms = time_ms(
        s, [&] { ops.act_dropout_forward(x.p, y.p, R, C, ls::Activation::ReLU, 0.1f, key, h); });
    row("act_dropout_forward relu", dims(R, C), "fp16", ms, e * 2 * rc);
    ms = time_ms(s, [&] {
      ops.act_dropout_backward(dy.p, x.p, dx.p, db.p, R, C, ls::Activation::GELU, 0.1f, key, h);
    });
    row("act_dropout_backward gelu", dims(R, C), "fp16", ms, e * 3 * rc);
    ms = time_ms(s, [&] { ops.dropout_forward(x.p, y.p, rc, 0.1f, key, h); });
    row("dropout_forward", dims(R, C), "fp16", ms, e * 2 * rc);

    // Softmax: [B*H*Lq, Lk] = 65536 x 1024 (short path) and 16384 x 4096 (long path).
    for (int64_t lk : {int64_t(512), int64_t(1024), int64_t(4096)}) {
      int64_t rows = int64_t(rc) / lk;
      int64_t lq = lk <= 1024 ? lk : 512;
      int64_t bh = rows / lq;
      ms = time_ms(s, [&] { ops.softmax_forward(x.p, y.p, nullptr, false, bh, 1, lq, lk, h); });
      row("softmax_forward", dims(rows, lk), "fp16", ms, e * 2 * rc);
      ms = time_ms(s, [&] { ops.softmax_forward(x.p, y.p, nullptr, true, bh, 1, lq, lk, h); });
      row("softmax_forward causal", dims(rows, lk), "fp16", ms, e * 2 * rc);
      ms = time_ms(s, [&] { ops.softmax_backward(dy.p, y.p, dx.p, rows, lk, 0.1f, key, h); });
      row("softmax_backward dropout", dims(rows, lk), "fp16", ms, e * 3 * rc);
    }

    {  // cross-entropy 8192 x 32768
      const int64_t T = 8192, V = 32768;
      const size_t tv = size_t(T * V);
      Buf logits(tv * 2), dlogits(tv * 2), targets(T * 4), lse(T * 4), sums(16), scale(4);
      fill_random(ops, logits.p, tv, h);
      std::vector<int32_t> tg(T);
      for (int64_t i = 0; i < T; ++i) tg[size_t(i)] = int32_t((i * 7919) % V);
      ops.from_host(targets.p, tg.data(), T * 4);
      float one = 1.f;
      ops.from_host(scale.p, &one, 4);
      ops.synchronize();
      ms = time_ms(s, [&] {
        ops.cross_entropy_forward(logits.p, static_cast<int32_t*>(targets.p), lse.p, sums.p, T, V,
                                  1, 0.1f, h);
      });
      row("cross_entropy_forward", dims(T, V), "fp16", ms, e * tv);
      ms = time_ms(s, [&] {
        ops.cross_entropy_backward(logits.p, static_cast<int32_t*>(targets.p), lse.p, scale.p,
                                   dlogits.p, T, V, 1, 0.1f, h);
      });
      row("cross_entropy_backward", dims(T, V), "fp16", ms, e * 2 * tv);
      ms = time_ms(s, [&] {  // the training step's fused form: the logits read once
        ops.cross_entropy_forward_backward(logits.p, static_cast<int32_t*>(targets.p), lse.p,
                                           sums.p, scale.p, dlogits.p, T, V, 1, 0.1f, h);
      });
      row("cross_entropy_forward_backward", dims(T, V), "fp16", ms, e * 2 * tv);
    }

    {  // Adam over 32M fp32 parameters with an fp16 working copy
      const size_t n = size_t(32) << 20;
      Buf p(n * 4), g(n * 4), m(n * 4), v(n * 4), w(n * 2), step(sizeof(ls::AdamStep)), out(4);
      ls::AdamStep st;
      st.lr = 1e-4;
      ops.from_host(step.p, &st, sizeof(st));
      ls::Ops::AdamArgs a;
      ms = time_ms(s, [&] {
        ops.adam_update(p.p, g.p, m.p, v.p, w.p, h, n, a, static_cast<const ls::AdamStep*>(step.p),
                        DType::F32);
      });
      row("adam_update (+fp16 copy)", std::to_string(n) + " params", "fp32", ms, 30.0 * n);
      ms = time_ms(s, [&] { ops.sum_squares(g.p, n, out.p, DType::F32); });
      row("sum_squares", std::to_string(n), "fp32", ms, 4.0 * n);
    }
    ms = time_ms(s, [&] { ops.split_heads(x.p, bias.p, y.p, 1, 128, 512, 16, 64, h); });
    row("split_heads (+bias)", "n1 B128 L512 H16 D64", "fp16", ms, e * 2 * rc);
    ms = time_ms(s, [&] { ops.merge_heads(x.p, y.p, 1, 128, 512, 16, 64, h); });
    row("merge_heads", "n1 B128 L512 H16 D64", "fp16", ms, e * 2 * rc);
    ops.synchronize();
  } catch (const ls::Error& err) {
    std::fprintf(stderr, "error: %s\n", err.what());
    return 1;
  }
  return 0;
}
