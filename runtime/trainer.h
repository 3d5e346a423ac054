// The trainer: one micro-batch per step() call (forward, loss, backward with gradients
// accumulating), and every update_freq-th call the update: global gradient norm, overflow
// check and dynamic loss scaling (fp16), clipping, Adam/AdamW over the flat buffers (writing
// the working copy in the same pass), and the learning-rate schedule.
//
// Gradients are one flat fp32 buffer (fp64 for the double reference): weight-gradient GEMMs
// accumulate into it directly with beta = 1 (cuBLASLt takes fp16/bf16 inputs with an fp32 C),
// so accumulating micro-batches and unscaling lose no precision, and the fused Adam reads
// them as they are. The loss is the sum over target tokens; the gradient is divided by the
// number of target tokens of the whole update (fairseq), folded into the optimizer's gradient
// multiplier together with the loss-scale unscaling and the clipping factor.
#pragma once

#include <string>

#include "ls_train.h"
#include "runtime/model.h"

namespace ls {

void trainer_config_defaults(ls_trainer_config& c);
void validate_trainer_config(const ls_trainer_config& c);
// Learning rate for the update that follows `num_updates` completed updates.
double learning_rate(const ls_trainer_config& c, int64_t num_updates);

class Trainer {
 public:
  Trainer(Model& model, const ls_trainer_config& config);
  void step(const ls_batch& batch, ls_step_result& result);
  void save(const std::string& path) const;
  void load(const std::string& path);

  Model& model() { return model_; }
  int64_t num_updates() const { return num_updates_; }
  double loss_scale() const { return loss_scale_; }

 private:
  void update(ls_step_result& result);
  bool scaling() const { return model_.graph().dt() == DType::F16; }

  Model& model_;
  ls_trainer_config cfg_;
  int64_t num_updates_ = 0;
  int micro_batches_ = 0;
  int64_t accum_tokens_ = 0;
  double loss_scale_ = 1.0;
  int64_t good_steps_ = 0;
};

}  // namespace ls
