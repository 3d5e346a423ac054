#include "runtime/trainer.h"

#include <cmath>
#include <cstring>
#include <sstream>

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

namespace {

UpdateControlArgs control_args(const ls_trainer_config& c, bool scaling) {
  UpdateControlArgs a;
  a.scaling = scaling ? 1 : 0;
  a.growth = c.loss_scale_growth;
  a.backoff = c.loss_scale_backoff;
  a.min_scale = c.loss_scale_min;
  a.interval = c.loss_scale_interval;
  a.clip_norm = c.clip_norm;
  a.schedule = static_cast<int32_t>(c.lr_schedule);
  a.peak_lr = c.lr;
  a.warmup_init_lr = c.warmup_init_lr;
  a.min_lr = c.min_lr;
  a.warmup = c.warmup_updates;
  a.total = c.total_updates;
  a.beta1 = c.beta1;
  a.beta2 = c.beta2;
  return a;
}

}  // namespace

double learning_rate(const ls_trainer_config& c, int64_t n) {
  return schedule_lr(control_args(c, false), n);
}

Trainer::Trainer(Model& model, const ls_trainer_config& config) : model_(model), cfg_(config) {
  validate_trainer_config(cfg_);
  LS_REQUIRE(!cfg_.cuda_graph || model.context().ops().supports_capture(), LS_ERR_UNSUPPORTED,
             "cuda_graph needs a CUDA context (this model runs on the CPU)");
  control_ = control_args(cfg_, scaling());
  adam_.beta1 = cfg_.beta1;
  adam_.beta2 = cfg_.beta2;
  adam_.eps = cfg_.eps;
  adam_.weight_decay = cfg_.weight_decay;
  adam_.decoupled = cfg_.optimizer == LS_OPTIMIZER_ADAMW;
  // A fresh trainer state; the model's dropout pass counter carries on.
  TrainState s;
  s.dropout_stream = model_.read_train_state().dropout_stream;
  s.loss_scale = scaling() ? cfg_.loss_scale_init : 1.0;
  install_state(s);
}

Trainer::~Trainer() { clear_graphs(); }

void Trainer::clear_graphs() {
  Ops& ops = model_.context().ops();
  for (Graph& g : graphs_) ops.graph_destroy(g.exec);
  graphs_.clear();
}

void Trainer::install_state(const TrainState& s) {
  Context& ctx = model_.context();
  ctx.activate();
  Ops& ops = ctx.ops();
  ops.synchronize();
  model_.write_train_state(s);
  if (model_.graph().acc() == DType::F64) {
    double v = s.loss_scale;
    ops.from_host(model_.scalar_ptr<double>(TransformerGraph::kGradScale), &v, sizeof(v));
  } else {
    float v = static_cast<float>(s.loss_scale);
    ops.from_host(model_.scalar_ptr<float>(TransformerGraph::kGradScale), &v, sizeof(v));
  }
  const size_t a = dtype_size(model_.graph().acc());
  ops.zero(model_.scalar_ptr<std::byte>(0) + TransformerGraph::kUpdateTokens * a, a);
  ops.synchronize();
  bad_updates_seen_ = 0;
  stopped_ = false;
  stop_message_.clear();
  clear_graphs();  // a captured step bakes in the dropout seed: recapture after a load
}

int64_t Trainer::num_updates() { return model_.read_train_state().num_updates; }
double Trainer::loss_scale() { return model_.read_train_state().loss_scale; }

void Trainer::raise_if_stopped(const TrainState& s) {
  if (s.stopped == kStopNone) return;
  if (!stopped_) {
    std::ostringstream m;
    if (s.stopped == kStopScaleBelowMin)
      m << "loss scale fell to " << s.stop_value << ", below loss_scale_min "
        << cfg_.loss_scale_min << ": the gradients keep overflowing (diverged?); training stopped "
        << "after " << s.num_updates << " updates (load a checkpoint to continue)";
    else
      m << "gradient norm is not finite (" << s.stop_value << ") in "
        << dtype_name(model_.graph().dt()) << " training: the update was skipped; training "
        << "diverged and stopped after " << s.num_updates << " updates";
    stop_message_ = m.str();
    stopped_ = true;
  }
  LS_FAIL(LS_ERR_NUMERIC, stop_message_);
}

void Trainer::enqueue_body(bool first_micro, bool last_micro) {
  Ops& ops = model_.context().ops();
  TransformerGraph& g = model_.graph();
  const DType acc = g.acc(), dt = g.dt();
  const size_t n = g.params().total_elements();
  const size_t a = dtype_size(acc);
  std::byte* scalars = model_.scalar_ptr<std::byte>(0);
  model_.train_pass(first_micro, cfg_.deterministic != 0);
  model_.advance_dropout_stream();
  ops.scalar_accumulate(scalars + TransformerGraph::kUpdateTokens * a,
                        scalars + TransformerGraph::kTokens * a, acc);
  if (!last_micro) return;
  void* sumsq = scalars + TransformerGraph::kSumSq * a;
  ops.zero(sumsq, a);
  ops.sum_squares(model_.buffer(g.grad), n, sumsq, acc);
  TrainState* state = model_.train_state();
  ops.update_control(sumsq, scalars + TransformerGraph::kUpdateTokens * a, control_, state,
                     scalars + TransformerGraph::kGradScale * a, acc);
  ops.adam_update(model_.buffer(g.master), model_.buffer(g.grad), model_.buffer(g.adam_m),
                  model_.buffer(g.adam_v), g.work.valid() ? model_.buffer(g.work) : nullptr, dt, n,
                  adam_, &state->step, acc);
}

void Trainer::step(const ls_batch& batch, ls_step_result* r) {
  HostBatch hb;
  model_.validate_batch(batch, hb);  // throws before anything changes
  LS_REQUIRE(!stopped_, LS_ERR_NUMERIC, stop_message_);
  Context& ctx = model_.context();
  ctx.activate();
  Ops& ops = ctx.ops();
  ops.set_deterministic(cfg_.deterministic != 0);
  model_.load_batch(hb);
  // Device arrays with a result requested: wait for their check before anything runs on them.
  // Without a result, an out-of-range id makes the update skip on the device (reported later).
  if (hb.on_device && r != nullptr) model_.check_imported_tokens();

  const bool first = micro_batches_ == 0;
  const bool last = micro_batches_ + 1 >= cfg_.update_freq;
  if (cfg_.cuda_graph) {
    GraphKey key{hb.batch, hb.src_len, hb.tgt_len, first, last};
    Graph* gr = nullptr;
    for (Graph& x : graphs_)
      if (x.key == key) gr = &x;
    if (gr == nullptr) {
      graphs_.push_back(Graph{key, 0, nullptr});
      gr = &graphs_.back();
    }
    if (gr->exec != nullptr) {
      ops.graph_launch(gr->exec);
    } else if (gr->runs++ == 0) {
      enqueue_body(first, last);  // first sight of this shape: eager (GEMM plans get cached)
    } else {
      ops.capture_begin();
      try {
        enqueue_body(first, last);
      } catch (...) {
        try {
          ops.graph_destroy(ops.capture_end());
        } catch (...) {
        }
        throw;
      }
      gr->exec = ops.capture_end();
      ops.graph_launch(gr->exec);
    }
  } else {
    enqueue_body(first, last);
  }
  micro_batches_ = last ? 0 : micro_batches_ + 1;
  if (r == nullptr) return;

  double sums[3];
  model_.read_sums(sums);  // synchronises
  const TrainState s = model_.read_train_state();
  r->loss = sums[0];
  r->nll = sums[1];
  r->tokens = static_cast<int64_t>(std::llround(sums[2]));
  r->updated = last ? s.updated : 0;
  r->overflow = last ? s.overflow : 0;
  r->grad_norm = last ? s.grad_norm : 0;
  r->lr = last ? s.lr : learning_rate(cfg_, s.num_updates);
  r->loss_scale = s.loss_scale;
  r->num_updates = s.num_updates;
  raise_if_stopped(s);
  if (s.bad_updates > bad_updates_seen_) {
    const int64_t k = s.bad_updates - bad_updates_seen_;
    bad_updates_seen_ = s.bad_updates;
    LS_FAIL(LS_ERR_INVALID_ARGUMENT,
            k << " update(s) skipped: a batch given as device arrays had token ids outside the "
                 "vocabulary (checked on the device; weights and optimizer state are unchanged)");
  }
}

}  // namespace ls
