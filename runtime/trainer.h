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
#include <vector>

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
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;
  // One micro-batch. With result == nullptr nothing is read back (no host synchronisation);
  // otherwise the call waits for the step and fills it, and reports a stop (loss scale below
  // the minimum, a non-finite gradient without scaling) or out-of-range device token ids as
  // errors after the fact (the update was skipped on the device: nothing changed).
  void step(const ls_batch& batch, ls_step_result* result);
  void save(const std::string& path) const;
  void load(const std::string& path);

  Model& model() { return model_; }
  // Read from the device (synchronise).
  int64_t num_updates();
  double loss_scale();
  // CUDA graphs captured so far (one per batch shape and accumulation phase).
  size_t graphs_captured() const { return graphs_.size(); }

 private:
  bool scaling() const { return model_.graph().dt() == DType::F16; }
  // Enqueues the step's device work after the batch is loaded: forward, backward, and on the
  // last micro-batch the update (norm, update_control, fused Adam).
  void enqueue_body(bool first_micro, bool last_micro);
  // Writes a trainer state (and the loss scale the backward reads) to the device, drops
  // captured graphs.
  void install_state(const TrainState& s);
  void raise_if_stopped(const TrainState& s);
  void clear_graphs();

  Model& model_;
  ls_trainer_config cfg_;
  UpdateControlArgs control_;
  Ops::AdamArgs adam_;
  int micro_batches_ = 0;
  int64_t bad_updates_seen_ = 0;
  bool stopped_ = false;
  std::string stop_message_;
  // Captured steps, keyed by shape and accumulation phase.
  struct GraphKey {
    int64_t batch, src_len, tgt_len;
    bool first, last;
    bool operator==(const GraphKey& o) const {
      return batch == o.batch && src_len == o.src_len && tgt_len == o.tgt_len &&
             first == o.first && last == o.last;
    }
  };
  struct Graph {
    GraphKey key;
    int runs = 0;       // eager runs seen (capture happens on the second)
    void* exec = nullptr;
  };
  std::vector<Graph> graphs_;
};

}  // namespace ls
