// A whole Transformer (encoder-decoder or decoder-only) over one planned arena.
//
// Creation declares every parameter (flat buffers shared by master weights, working copy,
// gradients and Adam moments) and every activation buffer, dry-runs forward + backward at the
// maximum shapes to get each buffer's lifetime, plans offsets, and allocates the arena once.
// Running a batch then allocates nothing: tokens are validated and staged through host buffers
// made at creation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "allocator/arena.h"
#include "allocator/planner.h"
#include "layers/embedding_layer.h"
#include "layers/params.h"
#include "layers/residual_block.h"
#include "ls_train.h"
#include "runtime/context.h"

namespace ls {

// Fills defaults for the fields a caller left at zero-size, and checks the config; throws
// LS_ERR_INVALID_ARGUMENT / LS_ERR_UNSUPPORTED naming the field.
void validate_model_config(const ls_model_config& cfg, bool cuda);
void model_config_defaults(ls_model_config& cfg);
// Throws LS_ERR_INVALID_ARGUMENT listing the known presets for an unknown name.
void model_config_preset(const std::string& name, ls_model_config& cfg);
DType to_dtype(ls_dtype t);

// A batch after validation: host arrays, or device arrays validated on the device on import.
struct HostBatch {
  int64_t batch = 0, src_len = 0, tgt_len = 0;
  const int32_t* src = nullptr;
  const int32_t* prev = nullptr;
  const int32_t* target = nullptr;
  bool on_device = false;
};

// Everything declared for one model: parameters, buffers, layers. Built once for planning
// (ls_plan_memory) and once per model.
class TransformerGraph {
 public:
  TransformerGraph(const ls_model_config& cfg, bool cuda);

  const ls_model_config& config() const { return cfg_; }
  Planner& planner() { return planner_; }
  const Planner& planner() const { return planner_; }
  ParamSet& params() { return params_; }
  const ParamSet& params() const { return params_; }
  DType dt() const { return dt_; }
  DType acc() const { return acc_; }
  bool encoder_decoder() const { return cfg_.arch == LS_ARCH_ENCODER_DECODER; }

  // Forward: embeddings, blocks, final norms, then the criterion over the target rows in chunks
  // of criterion_rows rows. Per chunk: logits = hidden W^T into the [criterion_rows, V] logits
  // buffer, cross-entropy forward (sums += ..., lse into the chunk's rows) and, when
  // rc.training, the criterion's backward at once: d_logits in place (times the grad scale
  // already in the scalars), the output projection's weight gradient (+=) and the chunk's rows
  // of d_dec_out. So a training forward writes gradients; an evaluation forward (rc.training
  // false) only adds to the sums. The full [T, V] logits never exist.
  void forward(RunCtx& rc);
  // Backward from d_dec_out (written by the training forward) down to the embeddings;
  // gradients accumulate. Must follow a forward with rc.training (checked).
  void backward(RunCtx& rc, bool deterministic);
  // Encoder only (generation).
  void encode(RunCtx& rc);
  // Decoder forward up to the final hidden states (generation), no logits.
  void decode_hidden(RunCtx& rc);

  // The dry run: forward + backward at the maximum shapes, recording lifetimes; then a final
  // position for the generation buffers. Returns the plan.
  Plan plan_schedule();

  // Buffers the model and trainer address directly.
  BufferId master, work, grad, adam_m, adam_v, scalars, train_state, workspace;
  BufferId src_tokens, prev_tokens, target, src_pad, tgt_pad;
  BufferId logits, lse, d_dec_out, dec_hidden, enc_out, d_enc_out;
  BufferId gen_hidden, gen_logits, gen_logits_acc;
  ParamRef output_projection;
  int64_t gen_max_rows = 0;
  // Target rows per criterion chunk (see criterion_rows_for); the logits buffer holds
  // [criterion_rows, V].
  int64_t criterion_rows = 0;
  // The criterion's scratch in the gradient buffer. A training forward whose gradients start
  // from zero (the first micro-batch of an update: RunCtx::fresh_gradients) writes no gradient
  // before the criterion's backward except the output projection's, so the flat gradient
  // buffer's largest element range outside that tensor [begin, end) is free until then. The
  // criterion puts its logits there in chunks of up to `rows` rows instead of the planned
  // [criterion_rows, V] buffer, and zeroes the range after its last chunk (the trainer zeroes
  // the rest of the buffer before the forward). Fewer, larger chunks: each chunk's output
  // projection weight gradient reads and writes the whole [V, d] fp32 gradient, so 8 chunks of
  // Transformer-big cost about 0.6 ms more than one. rows == 0 (unused) when the range holds
  // no more rows than the planned buffer, or when disabled for tests.
  struct GradScratch {
    size_t begin = 0, end = 0;  // elements of the flat gradient buffer
    int64_t rows = 0;           // target rows of logits it holds (a multiple of 8 or max_tokens)
  };
  GradScratch criterion_scratch;
  // Rows per chunk for `tokens` target rows with the scratch: the fewest chunks of at most
  // criterion_scratch.rows rows, balanced (each a multiple of 8 unless there is only one).
  int64_t criterion_scratch_chunk_rows(int64_t tokens) const;
  // What the last criterion call did (for tests): its chunks, and whether its logits went to
  // the scratch.
  int64_t last_criterion_chunks = 0;
  bool last_criterion_in_scratch = false;
  size_t workspace_bytes = 0;
  size_t input_bytes = 0;

  // Layout of the `scalars` buffer (acc elements unless noted).
  // kUpdateTokens: target tokens accumulated over the micro-batches of the coming update.
  enum Scalar : int {
    kLoss = 0,
    kNll = 1,
    kTokens = 2,
    kGradScale = 3,
    kUpdateTokens = 4,
    kSumSq = 5,
    kScalarCount = 8
  };

  // Byte budget of one criterion chunk's logits.
  static constexpr size_t kCriterionChunkBytes = size_t{64} << 20;
  // The rule: as many rows as fit kCriterionChunkBytes of logits (V * dtype bytes a row),
  // rounded down to a multiple of 8 (so every chunk starts 16-byte aligned in the logits,
  // hidden, d_dec_out and lse buffers whatever V and d are), at least 8, at most max_tokens.
  // Transformer-base/big (V = 32768): 1024 rows in fp16/bf16, 512 in fp32, 256 in fp64.
  static int64_t criterion_rows_for(int64_t max_tokens, int64_t vocab, DType dt);
  // Tests only: graphs constructed while this is nonzero use that many criterion rows
  // (clamped to [1, max_batch_tokens]) instead of the rule; 0 restores the rule. On CUDA keep it
  // a multiple of 8. Returns the previous value.
  static int64_t set_criterion_rows_override(int64_t rows);
  // Tests and benchmarks only: graphs constructed while this is false get no criterion scratch
  // (criterion_scratch.rows == 0). Returns the previous value.
  static bool set_criterion_scratch_enabled(bool enabled);
  // Tests and benchmarks only: graphs constructed while this is false zero the whole gradient
  // buffer in a fresh pass and accumulate every weight gradient (overwrite_weight_grads false).
  static bool set_grad_overwrite_enabled(bool enabled);
  // Whether a fresh pass overwrites the grad_overwritten tensors' gradients (see RunCtx).
  bool overwrite_weight_grads = false;
  // What a fresh pass zeroes, as (begin, end) element pairs of the gradient buffer: before the
  // forward, and (inside the criterion's scratch) after the criterion; the table lives in the
  // persistent buffer grad_zero_ranges, before-pairs first.
  std::vector<uint64_t> grad_zero_before, grad_zero_after_criterion;
  uint64_t grad_zero_max_elements = 0;
  BufferId grad_zero_ranges;

 private:
  struct Stack {
    std::unique_ptr<EmbeddingLayer> embed;
    std::vector<std::unique_ptr<ResidualBlock>> blocks;
    bool final_norm = false;
    NormBackward norm_backward = NormBackward::FromInput;  // every LayerNorm of the stack
    ParamRef norm_gamma, norm_beta;
    BufferId norm_out, norm_mean, norm_rstd, d_norm_in;
    Side side = Side::Source;
    BufferId last_output() const {
      return blocks.empty() ? embed->output() : blocks.back()->output();
    }
  };
  void build_stack(Stack& s, const std::string& prefix, int layers, bool decoder);
  // Set criterion_scratch, then the gradient zeroing of a fresh pass (constructor only).
  void plan_criterion_scratch();
  void plan_grad_zeroing();
  void stack_forward(RunCtx& rc, Stack& s);
  // d_out is the gradient of the stack's output; returns nothing (embedding gets the rest).
  void stack_backward(RunCtx& rc, Stack& s, BufferId d_out, bool deterministic);
  // The output projection and the criterion over the target rows, chunk by chunk (forward's
  // last part; with the criterion's backward when rc.training).
  void criterion(RunCtx& rc);
  BufferId stack_output(const Stack& s) const {
    return s.final_norm ? s.norm_out : s.last_output();
  }

  ls_model_config cfg_;
  bool cuda_;
  DType dt_, acc_;
  LayerDims dims_;
  Planner planner_;
  ParamSet params_;
  uint32_t next_site_ = 0;
  Stack encoder_, decoder_;
  // Set by a training forward (which ran the criterion's backward), cleared by backward.
  bool criterion_backward_done_ = false;
};

class Model {
 public:
  Model(Context& ctx, const ls_model_config& cfg);
  ~Model();

  Context& context() { return ctx_; }
  const ls_model_config& config() const { return graph_->config(); }
  TransformerGraph& graph() { return *graph_; }
  const ParamSet& params() const { return graph_->params(); }
  const Plan& plan() const { return plan_; }
  MemoryReport memory_report() const;

  WeightsView weights() const;
  void* buffer(BufferId id) const { return arena_.base() + plan_.arena_offset(id); }
  template <class T>
  T* scalar_ptr(int index) const {
    return reinterpret_cast<T*>(static_cast<std::byte*>(buffer(graph_->scalars)) +
                                index * dtype_size(graph_->acc()));
  }

  // Parameters by name through host float buffers.
  void get_parameter(const std::string& name, float* host, int64_t numel);
  void set_parameter(const std::string& name, const float* host, int64_t numel);
  // Writes the working copy from the master weights (after master changed).
  void refresh_working_copy();

  // Checks a batch against the config and the maxima (throws LS_ERR_INVALID_ARGUMENT naming
  // the numbers, before anything changes). Host token ids are checked here; device arrays are
  // checked on the device by load_batch. (Token counts come from the loss kernel's sums.)
  void validate_batch(const ls_batch& b, HostBatch& out);
  // Copies a validated batch into the input buffers (host arrays through page-locked staging,
  // asynchronously; device arrays through import_tokens, which replaces out-of-range ids by
  // padding and counts them in the train state) and builds the padding masks on the device.
  void load_batch(const HostBatch& b);
  // Device arrays only: waits for the import and throws LS_ERR_INVALID_ARGUMENT (clearing the
  // count) when it saw out-of-range ids, before any other kernel used the batch.
  void check_imported_tokens();
  // The trainer/model state in the arena (device memory on CUDA).
  TrainState* train_state() const { return static_cast<TrainState*>(buffer(graph_->train_state)); }
  // Reads / writes the whole state (synchronises).
  TrainState read_train_state();
  void write_train_state(const TrainState& s);

  // One forward (+ backward) pass on the loaded batch. Sums accumulate into the scalars.
  void run_forward(bool training);
  void run_backward(bool deterministic);
  // The training pass of one micro-batch: zeroes the loss sums, runs forward (with the
  // criterion's backward) and backward. Gradients accumulate; with fresh_gradients (the first
  // micro-batch of an update) they start from zero instead: the weight-gradient GEMMs overwrite
  // (TransformerGraph::overwrite_weight_grads) and only the accumulated gradients are zeroed,
  // here, except inside the criterion's scratch (TransformerGraph::criterion_scratch), which
  // the criterion uses for its logits and zeroes itself before any gradient is written there.
  void train_pass(bool fresh_gradients, bool deterministic);
  void zero_sums();
  // {loss, nll, tokens} accumulated in the scalars (synchronises).
  void read_sums(double out[3]);

  void evaluate(const ls_batch& batch, ls_eval_result& result);
  void generate(const int32_t* src, int64_t batch, int64_t src_len, int64_t max_len,
                int32_t* out_tokens, int32_t* out_lengths);

  // Dropout RNG state: (seed, stream). The seed starts as the context's; a checkpoint restores
  // both, so a resumed run draws the masks the uninterrupted run would have drawn. The stream
  // is the number of training forwards run, counted on the device (train_state.dropout_stream).
  // Enqueues stream += 1 (after a training forward).
  void advance_dropout_stream();
  uint64_t dropout_seed() const { return dropout_seed_; }
  // Host-side pointer to the pass counter the dropout keys read (in the train state).
  const uint64_t* dropout_stream_ptr() const { return &train_state()->dropout_stream; }
  void set_dropout_seed(uint64_t s) { dropout_seed_ = s; }

 private:
  RunCtx run_ctx(bool training);
  void upload_tokens(BufferId dst, const int32_t* host_src, size_t n);

  Context& ctx_;
  std::unique_ptr<TransformerGraph> graph_;
  Plan plan_;      // training (and evaluation: a subset of its uses)
  Plan gen_plan_;  // generation's own schedule over the same buffers
  Arena arena_;
  uint64_t dropout_seed_ = 0;
  RunShape shape_;
  // Host staging made at creation (the step allocates nothing): page-locked token staging for
  // training batches (3 x max_batch_tokens ids), reused once the previous upload finished.
  struct HostBuffer {
    Ops* ops = nullptr;
    void* p = nullptr;
    ~HostBuffer() {
      if (ops != nullptr) ops->host_free(p);
    }
  } staging_;
  bool staging_in_flight_ = false;
  std::vector<int32_t> host_tokens_;
  std::vector<int32_t> gen_tokens_;
  std::vector<float> gen_logits_host_;
};

}  // namespace ls
