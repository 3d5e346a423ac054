// The trainer's per-update control logic, written once for the host (CPU backend) and the
// device (CUDA backend: one thread of one block), so that a training step never has to read
// anything back to decide what to do:
//   global gradient norm -> overflow check -> dynamic loss scale update -> clipping factor ->
//   learning rate from the schedule -> Adam bias corrections -> the AdamStep the fused
//   optimizer reads.
// TrainState lives in the model's persistent arena (device memory on CUDA); the host reads it
// only when the caller asks for results.
#pragma once

#include <cmath>
#include <cstdint>

#include "layers/kernels/philox.h"  // LS_HD

namespace ls {

// What the fused Adam pass reads from device memory (written by update_control).
struct AdamStep {
  double mult = 1.0;   // gradient multiplier: unscale * 1/tokens * clip factor
  double lr = 0.0;     // learning rate of this update
  double bias1 = 1.0;  // 1 - beta1^t
  double bias2 = 1.0;  // 1 - beta2^t
  int32_t skip = 0;    // non-zero: write nothing (overflow, stopped, bad input)
  int32_t pad_ = 0;
};

// Why training stopped (sticky until the trainer is reloaded from a checkpoint).
enum StopReason : int32_t {
  kStopNone = 0,
  kStopScaleBelowMin = 1,  // fp16: the loss scale fell below loss_scale_min
  kStopNonFinite = 2,      // bf16/fp32: a non-finite gradient (nothing to rescale)
};

// Trainer state on the device. Plain 8-byte fields; the checkpoint stores the counters.
struct TrainState {
  double loss_scale = 1.0;  // in force for the next forward
  int64_t good_steps = 0;   // clean updates since the scale last changed
  int64_t num_updates = 0;  // updates applied
  uint64_t dropout_stream = 0;  // forward passes run (the dropout key's per-pass counter)
  uint32_t bad_tokens = 0;      // out-of-range ids seen since the last update (device batches)
  uint32_t pad_ = 0;
  // The last update's outcome.
  double grad_norm = 0;  // unscaled, per-token, before clipping
  double lr = 0;
  int32_t overflow = 0;  // skipped for a non-finite gradient
  int32_t updated = 0;
  int32_t stopped = kStopNone;
  int32_t bad_batch = 0;     // the last update was skipped for out-of-range token ids
  double stop_value = 0;     // the scale (or norm) that stopped training
  int64_t overflows = 0;     // updates skipped for overflow, in total
  int64_t bad_updates = 0;   // updates skipped for out-of-range device token ids, in total
  AdamStep step;
};

enum LrSchedule : int32_t { kLrConstant = 0, kLrInverseSqrt = 1, kLrLinear = 2, kLrCosine = 3 };

// Everything update_control needs from the trainer config (passed by value).
struct UpdateControlArgs {
  int32_t scaling = 0;  // dynamic loss scaling (fp16)
  double growth = 2.0, backoff = 0.5, min_scale = 1e-4;
  int64_t interval = 2000;
  double clip_norm = 0;  // 0 = off
  int32_t schedule = kLrInverseSqrt;
  double peak_lr = 5e-4, warmup_init_lr = 1e-7, min_lr = 0;
  int64_t warmup = 4000, total = 0;
  double beta1 = 0.9, beta2 = 0.98;
};

// Learning rate of the update that follows `n` completed updates.
LS_HD double schedule_lr(const UpdateControlArgs& a, int64_t n) {
  const double peak = a.peak_lr, w = static_cast<double>(a.warmup);
  switch (a.schedule) {
    case kLrInverseSqrt:
      if (n < a.warmup) return a.warmup_init_lr + n * (peak - a.warmup_init_lr) / w;
      return a.warmup > 0 ? peak * sqrt(w / static_cast<double>(n))
                          : peak / sqrt(static_cast<double>(n > 1 ? n : 1));
    case kLrLinear:
    case kLrCosine: {
      if (n < a.warmup) return peak * (n + 1) / w;
      double progress = (n - w) / static_cast<double>(a.total - a.warmup);
      progress = progress < 1.0 ? progress : 1.0;
      double f = a.schedule == kLrLinear ? 1.0 - progress
                                         : 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
      return a.min_lr + (a.peak_lr - a.min_lr) * f;
    }
    default: return peak;
  }
}

// One update's control decisions. sumsq: sum of squared (scaled, summed) gradients; tokens:
// target tokens of the update's micro-batches. Writes the state (including state.step for the
// optimizer) and returns the loss scale for the next forward. Sets bad_tokens back to 0.
LS_HD double update_control(double sumsq, double tokens, const UpdateControlArgs& a,
                            TrainState& s) {
  tokens = tokens > 1.0 ? tokens : 1.0;
  const bool bad = s.bad_tokens > 0;
  s.bad_tokens = 0;
  s.step.skip = 1;
  s.updated = 0;
  s.overflow = 0;
  s.bad_batch = bad ? 1 : 0;
  if (bad) s.bad_updates += 1;
  if (s.stopped != kStopNone || bad) return s.loss_scale;
  const double inv = 1.0 / (s.loss_scale * tokens);
  const double norm = sqrt(sumsq) * inv;
  s.grad_norm = norm;
  s.lr = schedule_lr(a, s.num_updates);
  if (!(norm <= 1.7976931348623157e308)) {  // inf or NaN
    s.overflow = 1;
    s.overflows += 1;
    if (a.scaling) {
      s.loss_scale *= a.backoff;
      s.good_steps = 0;
      if (s.loss_scale < a.min_scale) {
        s.stopped = kStopScaleBelowMin;
        s.stop_value = s.loss_scale;
      }
    } else {
      s.stopped = kStopNonFinite;
      s.stop_value = norm;
    }
    return s.loss_scale;
  }
  const double coef = a.clip_norm > 0 && norm > a.clip_norm ? a.clip_norm / (norm + 1e-6) : 1.0;
  const double t = static_cast<double>(s.num_updates + 1);
  s.step.mult = inv * coef;
  s.step.lr = s.lr;
  s.step.bias1 = 1.0 - pow(a.beta1, t);
  s.step.bias2 = 1.0 - pow(a.beta2, t);
  s.step.skip = 0;
  s.updated = 1;
  s.num_updates += 1;
  if (a.scaling && ++s.good_steps >= a.interval) {
    s.loss_scale *= a.growth;
    s.good_steps = 0;
  }
  return s.loss_scale;
}

}  // namespace ls
