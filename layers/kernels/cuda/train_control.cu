// The per-update control on the device: one thread runs train_control.h's update_control over
// the TrainState (global norm from the fp32 sum of squares, overflow check, dynamic loss scale,
// clipping factor, learning rate, bias corrections) and writes the AdamStep the fused Adam pass
// reads and the loss scale the next backward uses. One block of one thread; no host round trip.
// Shapes: sumsq [1], grad_scale [1] (fp32); state: one TrainState.
#include "layers/kernels/cuda/cuda_common.cuh"
#include "layers/kernels/cuda/cuda_kernels.h"

namespace ls {
namespace cuda {
namespace {

__global__ void update_control_kernel(const float* sumsq, float* tokens, UpdateControlArgs args,
                                      TrainState* state, float* grad_scale) {
  pdl_wait();  // the previous kernel of the stream is done (launch_kernel)
  TrainState s = *state;
  const double scale =
      update_control(static_cast<double>(sumsq[0]), static_cast<double>(tokens[0]), args, s);
  tokens[0] = 0.f;
  *state = s;
  grad_scale[0] = static_cast<float>(scale);
}

}  // namespace

void launch_update_control(const float* sumsq_dev, float* tokens_dev, const UpdateControlArgs& args,
                           TrainState* state_dev, float* grad_scale_dev, cudaStream_t s) {
  launch_kernel("update_control", update_control_kernel, 1, 1, 0, s, sumsq_dev, tokens_dev, args,
                state_dev, grad_scale_dev);
}

}  // namespace cuda
}  // namespace ls
