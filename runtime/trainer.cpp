#include "runtime/trainer.h"

#include <cmath>
#include <cstring>

#include "runtime/error.h"

namespace ls {

void trainer_config_defaults(ls_trainer_config& c) {
  size_t size = c.struct_size;
  std::memset(&c, 0, sizeof(c));
  c.struct_size = size ? size : sizeof(c);
  c.optimizer = LS_OPTIMIZER_ADAM;
  c.lr = 5e-4f;
  c.beta1 = 0.9f;
  c.beta2 = 0.98f;
  c.eps = 1e-8f;
  c.weight_decay = 0.f;
  c.clip_norm = 0.f;
  c.lr_schedule = LS_LR_INVERSE_SQRT;
  c.warmup_updates = 4000;
  c.warmup_init_lr = 1e-7f;
  c.total_updates = 0;
  c.min_lr = 0.f;
  c.update_freq = 1;
  c.loss_scale_init = 65536.f;
  c.loss_scale_growth = 2.f;
  c.loss_scale_backoff = 0.5f;
  c.loss_scale_interval = 2000;
  c.loss_scale_min = 1e-4f;
  c.deterministic = 1;
  c.cuda_graph = 0;
}

void validate_trainer_config(const ls_trainer_config& c) {
  LS_CHECK_ARG(c.optimizer == LS_OPTIMIZER_ADAM || c.optimizer == LS_OPTIMIZER_ADAMW,
               "ls_trainer_config.optimizer " << static_cast<int>(c.optimizer) << " is unknown");
  LS_CHECK_ARG(c.lr > 0.f && std::isfinite(c.lr), "ls_trainer_config.lr must be positive");
  LS_CHECK_ARG(c.beta1 >= 0.f && c.beta1 < 1.f, "ls_trainer_config.beta1 must be in [0, 1)");
  LS_CHECK_ARG(c.beta2 >= 0.f && c.beta2 < 1.f, "ls_trainer_config.beta2 must be in [0, 1)");
  LS_CHECK_ARG(c.eps > 0.f, "ls_trainer_config.eps must be positive");
  LS_CHECK_ARG(c.weight_decay >= 0.f, "ls_trainer_config.weight_decay must be >= 0");
  LS_CHECK_ARG(c.clip_norm >= 0.f, "ls_trainer_config.clip_norm must be >= 0 (0 = off)");
  LS_CHECK_ARG(c.lr_schedule >= LS_LR_CONSTANT && c.lr_schedule <= LS_LR_COSINE,
               "ls_trainer_config.lr_schedule " << static_cast<int>(c.lr_schedule)
                                                << " is unknown");
  LS_CHECK_ARG(c.warmup_updates >= 0, "ls_trainer_config.warmup_updates must be >= 0");
  if (c.lr_schedule == LS_LR_LINEAR || c.lr_schedule == LS_LR_COSINE)
    LS_CHECK_ARG(c.total_updates > c.warmup_updates,
                 "linear/cosine schedules need total_updates (" << c.total_updates
                                                               << ") > warmup_updates ("
                                                               << c.warmup_updates << ")");
  LS_CHECK_ARG(c.update_freq >= 1, "ls_trainer_config.update_freq must be >= 1");
  LS_CHECK_ARG(c.loss_scale_init > 0.f && c.loss_scale_growth >= 1.f &&
                   c.loss_scale_backoff > 0.f && c.loss_scale_backoff < 1.f &&
                   c.loss_scale_interval >= 1 && c.loss_scale_min > 0.f,
               "loss scaler settings out of range (init > 0, growth >= 1, 0 < backoff < 1, "
               "interval >= 1, min > 0)");
}

double learning_rate(const ls_trainer_config& c, int64_t n) {
  const double peak = c.lr, w = c.warmup_updates;
  switch (c.lr_schedule) {
    case LS_LR_CONSTANT: return peak;
    case LS_LR_INVERSE_SQRT:
      if (n < c.warmup_updates) return c.warmup_init_lr + n * (peak - c.warmup_init_lr) / w;
      return c.warmup_updates > 0 ? peak * std::sqrt(w / static_cast<double>(n))
                                  : peak / std::sqrt(static_cast<double>(std::max<int64_t>(n, 1)));
    case LS_LR_LINEAR:
    case LS_LR_COSINE: {
      if (n < c.warmup_updates) return peak * (n + 1) / w;
      double progress = std::min(1.0, (n - w) / static_cast<double>(c.total_updates - w));
      double f = c.lr_schedule == LS_LR_LINEAR ? 1.0 - progress
                                               : 0.5 * (1.0 + std::cos(M_PI * progress));
      return c.min_lr + (peak - c.min_lr) * f;
    }
  }
  return peak;
}

Trainer::Trainer(Model& model, const ls_trainer_config& config) : model_(model), cfg_(config) {
  validate_trainer_config(cfg_);
  LS_REQUIRE(!cfg_.cuda_graph || model.context().is_cuda(), LS_ERR_UNSUPPORTED,
             "cuda_graph needs a CUDA context");
  loss_scale_ = scaling() ? cfg_.loss_scale_init : 1.0;
}

void Trainer::step(const ls_batch& batch, ls_step_result& r) {
  HostBatch hb;
  const int64_t tokens = model_.validate_batch(batch, hb);  // throws before anything changes
  Context& ctx = model_.context();
  ctx.activate();
  Ops& ops = ctx.ops();
  TransformerGraph& g = model_.graph();
  const DType acc = g.acc();
  const size_t n = g.params().total_elements();
  if (micro_batches_ == 0) ops.zero(model_.buffer(g.grad), n * dtype_size(acc));

  model_.load_batch(hb);
  model_.zero_sums();
  if (acc == DType::F64) {
    double s = loss_scale_;
    ops.from_host(model_.scalar_ptr<double>(TransformerGraph::kGradScale), &s, sizeof(s));
  } else {
    float s = static_cast<float>(loss_scale_);
    ops.from_host(model_.scalar_ptr<float>(TransformerGraph::kGradScale), &s, sizeof(s));
  }
  model_.run_forward(true);
  model_.run_backward(cfg_.deterministic != 0);
  model_.set_dropout_stream(model_.dropout_stream() + 1);
  double sums[3];
  model_.read_sums(sums);
  ++micro_batches_;
  accum_tokens_ += tokens;

  r.loss = sums[0];
  r.nll = sums[1];
  r.tokens = tokens;
  r.updated = 0;
  r.overflow = 0;
  r.grad_norm = 0;
  r.lr = learning_rate(cfg_, num_updates_);
  if (micro_batches_ >= cfg_.update_freq) update(r);
  r.loss_scale = loss_scale_;
  r.num_updates = num_updates_;
}

void Trainer::update(ls_step_result& r) {
  Context& ctx = model_.context();
  Ops& ops = ctx.ops();
  TransformerGraph& g = model_.graph();
  const DType acc = g.acc(), dt = g.dt();
  const size_t n = g.params().total_elements();
  const int64_t tokens = accum_tokens_;
  micro_batches_ = 0;
  accum_tokens_ = 0;

  // Global norm of the per-token gradient: sqrt(sum g^2) / (scale * tokens).
  double sumsq = 0;
  void* sumsq_dev = acc == DType::F64 ? static_cast<void*>(model_.scalar_ptr<double>(TransformerGraph::kSumSq))
                                      : static_cast<void*>(model_.scalar_ptr<float>(TransformerGraph::kSumSq));
  ops.zero(sumsq_dev, dtype_size(acc));
  ops.sum_squares(model_.buffer(g.grad), n, sumsq_dev, acc);
  if (acc == DType::F64) {
    ops.to_host(&sumsq, sumsq_dev, sizeof(double));
  } else {
    float f = 0;
    ops.to_host(&f, sumsq_dev, sizeof(float));
    sumsq = f;
  }
  const double inv = 1.0 / (loss_scale_ * static_cast<double>(std::max<int64_t>(tokens, 1)));
  const double norm = std::sqrt(sumsq) * inv;
  r.grad_norm = norm;
  if (!std::isfinite(norm)) {
    // Overflow: skip the update; weights, moments and the update count stay as they were.
    r.overflow = 1;
    if (scaling()) {
      loss_scale_ *= cfg_.loss_scale_backoff;
      good_steps_ = 0;
      LS_REQUIRE(loss_scale_ >= cfg_.loss_scale_min, LS_ERR_NUMERIC,
                 "loss scale fell to " << loss_scale_ << ", below loss_scale_min "
                                       << cfg_.loss_scale_min
                                       << ": the gradients keep overflowing (diverged?)");
    } else {
      LS_FAIL(LS_ERR_NUMERIC, "gradient norm is not finite ("
                                  << norm << ") in " << dtype_name(dt)
                                  << " training: the update was skipped; training diverged");
    }
    return;
  }
  double coef = 1.0;
  if (cfg_.clip_norm > 0.f && norm > cfg_.clip_norm) coef = cfg_.clip_norm / (norm + 1e-6);
  const double mult = inv * coef;
  if (acc == DType::F64) {
    ops.from_host(model_.scalar_ptr<double>(TransformerGraph::kGradMult), &mult, sizeof(double));
  } else {
    float f = static_cast<float>(mult);
    ops.from_host(model_.scalar_ptr<float>(TransformerGraph::kGradMult), &f, sizeof(float));
  }
  Ops::AdamArgs h;
  h.lr = static_cast<float>(learning_rate(cfg_, num_updates_));
  h.beta1 = cfg_.beta1;
  h.beta2 = cfg_.beta2;
  h.eps = cfg_.eps;
  h.weight_decay = cfg_.weight_decay;
  h.decoupled = cfg_.optimizer == LS_OPTIMIZER_ADAMW;
  const double t = static_cast<double>(num_updates_ + 1);
  h.bias1 = 1.0 - std::pow(static_cast<double>(cfg_.beta1), t);
  h.bias2 = 1.0 - std::pow(static_cast<double>(cfg_.beta2), t);
  const void* mult_dev = acc == DType::F64
                             ? static_cast<const void*>(model_.scalar_ptr<double>(TransformerGraph::kGradMult))
                             : static_cast<const void*>(model_.scalar_ptr<float>(TransformerGraph::kGradMult));
  ops.adam_update(model_.buffer(g.master), model_.buffer(g.grad), model_.buffer(g.adam_m),
                  model_.buffer(g.adam_v), g.work.valid() ? model_.buffer(g.work) : nullptr, dt, n,
                  h, mult_dev, nullptr, acc);
  ++num_updates_;
  r.updated = 1;
  r.lr = h.lr;
  if (scaling() && ++good_steps_ >= cfg_.loss_scale_interval) {
    loss_scale_ *= cfg_.loss_scale_growth;
    good_steps_ = 0;
  }
}

}  // namespace ls
