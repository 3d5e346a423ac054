// Kernel-boundary cost on the GPU, with and without programmatic dependent launch (PDL), in a
// stream and inside a CUDA graph (bench/RESULTS.md, fifth session: why ls_train does not use
// PDL yet). A chain of 400 dependent elementwise kernels y = 1.0001 x + 0.0001 over fp16
// tensors of 4 KB, 4 MB and 16 MB, alternating input and output; the best of 5 timings of the
// whole chain, divided by its length. Modes: plain launches; PDL with griddepcontrol.wait at
// the start of the kernel; PDL with the wait and an immediate launch_dependents trigger.
// Usage: bench_launch (no arguments). Without a GPU it says so and exits 0. Asserts nothing.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>

namespace {

constexpr int kChain = 400, kRepeats = 5, kThreads = 256;

#define BENCH_CHECK(call)                                              \
  do {                                                                 \
    cudaError_t e_ = (call);                                           \
    if (e_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_)); \
      return 1;                                                        \
    }                                                                  \
  } while (0)

enum Mode { kPlain = 0, kPdlWait = 1, kPdlWaitTrigger = 2 };

template <int MODE>
__global__ void axpb_kernel(const __half2* x, __half2* y, int n) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (MODE != kPlain) asm volatile("griddepcontrol.wait;" ::: "memory");
  if (MODE == kPdlWaitTrigger) asm volatile("griddepcontrol.launch_dependents;");
#endif
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    y[i] = __hfma2(x[i], __float2half2_rn(1.0001f), __float2half2_rn(0.0001f));
}

template <int MODE>
cudaError_t launch(const __half2* x, __half2* y, int n, int grid, cudaStream_t s) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(grid));
  cfg.blockDim = dim3(kThreads);
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = MODE == kPlain ? 0 : 1;
  return cudaLaunchKernelEx(&cfg, axpb_kernel<MODE>, x, y, n);
}

cudaError_t chain(int mode, __half2* a, __half2* b, int n, int grid, cudaStream_t s) {
  for (int k = 0; k < kChain; ++k) {
    const __half2* in = k % 2 ? b : a;
    __half2* out = k % 2 ? a : b;
    const cudaError_t e = mode == kPlain     ? launch<kPlain>(in, out, n, grid, s)
                          : mode == kPdlWait ? launch<kPdlWait>(in, out, n, grid, s)
                                             : launch<kPdlWaitTrigger>(in, out, n, grid, s);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("bench_launch: no CUDA device, nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop;
  BENCH_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("bench_launch on %s: %d dependent kernels per chain, us per kernel (best of %d)\n",
              prop.name, kChain, kRepeats);
  std::printf("%-14s %-20s %10s %10s\n", "bytes/tensor", "mode", "stream", "graph");
  cudaStream_t s;
  BENCH_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaEvent_t t0, t1;
  BENCH_CHECK(cudaEventCreate(&t0));
  BENCH_CHECK(cudaEventCreate(&t1));
  const char* names[] = {"plain", "pdl wait", "pdl wait+trigger"};
  for (int n : {1 << 10, 1 << 20, 1 << 22}) {  // __half2 elements: 4 KB, 4 MB, 16 MB
    __half2 *a = nullptr, *b = nullptr;
    BENCH_CHECK(cudaMalloc(&a, size_t(n) * sizeof(__half2)));
    BENCH_CHECK(cudaMalloc(&b, size_t(n) * sizeof(__half2)));
    BENCH_CHECK(cudaMemsetAsync(a, 0, size_t(n) * sizeof(__half2), s));
    int grid = (n + kThreads - 1) / kThreads;
    if (grid > prop.multiProcessorCount * 8) grid = prop.multiProcessorCount * 8;
    for (int mode = kPlain; mode <= kPdlWaitTrigger; ++mode) {
      float us[2];
      for (int graph = 0; graph < 2; ++graph) {
        cudaGraph_t g = nullptr;
        cudaGraphExec_t exec = nullptr;
        if (graph) {
          BENCH_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
          BENCH_CHECK(chain(mode, a, b, n, grid, s));
          BENCH_CHECK(cudaStreamEndCapture(s, &g));
          BENCH_CHECK(cudaGraphInstantiate(&exec, g, 0));
        }
        float best = 1e30f;
        for (int r = 0; r < kRepeats; ++r) {
          BENCH_CHECK(cudaEventRecord(t0, s));
          if (graph)
            BENCH_CHECK(cudaGraphLaunch(exec, s));
          else
            BENCH_CHECK(chain(mode, a, b, n, grid, s));
          BENCH_CHECK(cudaEventRecord(t1, s));
          BENCH_CHECK(cudaEventSynchronize(t1));
          float ms = 0.f;
          BENCH_CHECK(cudaEventElapsedTime(&ms, t0, t1));
          if (ms < best) best = ms;
        }
        us[graph] = best * 1000.f / kChain;
        if (graph) {
          BENCH_CHECK(cudaGraphExecDestroy(exec));
          BENCH_CHECK(cudaGraphDestroy(g));
        }
      }
      std::printf("%-14d %-20s %10.3f %10.3f\n", n * 4, names[mode], us[0], us[1]);
    }
    BENCH_CHECK(cudaFree(a));
    BENCH_CHECK(cudaFree(b));
  }
  BENCH_CHECK(cudaStreamDestroy(s));
  return 0;
}
