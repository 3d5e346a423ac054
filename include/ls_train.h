/*
 * ls_train.h -- the public C API of libls_train, a mixed-precision Transformer training runtime.
 *
 * Pure C (C99 and later; also compiles as C++). This is the only public header.
 *
 * Conventions
 * - Every fallible call returns ls_status. LS_OK (0) is success. On failure, ls_last_error()
 *   returns a message for the calling thread, out parameters are left untouched and nothing
 *   leaks. No call aborts, exits or lets a C++ exception escape.
 * - Objects are opaque handles: ls_X_create(..., &handle) / ls_X_destroy(handle). Every destroy
 *   accepts NULL.
 * - Structs passed in or out begin with `size_t struct_size`, set by the caller to
 *   sizeof(the struct as the caller knows it). The library reads (or writes) only the fields
 *   that size covers and uses defaults for the rest, so fields are only ever appended. Use the
 *   matching ls_X_init() function to fill a struct with defaults and the right struct_size.
 *   A struct_size of 0, or one smaller than the first version of the struct, is an error.
 * - Streams cross the boundary as `void*` (a cudaStream_t), never owned by the library.
 */
#ifndef LS_TRAIN_H_
#define LS_TRAIN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LS_API
#else
#define LS_API __attribute__((visibility("default")))
#endif

/* ABI version: bumped on any incompatible change; it is also the soname's major number. */
#define LS_TRAIN_ABI_VERSION 0

/* ------------------------------------------------------------------------------------------
 * Status and errors
 * ---------------------------------------------------------------------------------------- */

/* Stable status codes. Values never change; new codes are only appended. */
typedef enum ls_status {
  LS_OK = 0,
  LS_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer, a bad struct_size, a value out of range */
  LS_ERR_OUT_OF_MEMORY = 2,    /* host or device memory could not be had */
  LS_ERR_UNSUPPORTED = 3,      /* not available in this build or on this device */
  LS_ERR_CUDA = 4,             /* a CUDA runtime call failed */
  LS_ERR_CUBLAS = 5,           /* a cuBLAS / cuBLASLt call failed */
  LS_ERR_NCCL = 6,             /* an NCCL call failed */
  LS_ERR_IO = 7,               /* a file could not be opened, read or written */
  LS_ERR_CORRUPT_DATA = 8,     /* a file or buffer is not what it claims (bad magic, checksum) */
  LS_ERR_INTERNAL = 9,         /* a bug in ls_train: please report it with the message */
  LS_ERR_NUMERIC = 10          /* training cannot go on: e.g. the loss scale fell below its minimum */
} ls_status;

/* A short constant name for a status ("LS_OK", "LS_ERR_INVALID_ARGUMENT", ...). Never NULL;
 * unknown values give "LS_ERR_UNKNOWN". */
LS_API const char* ls_status_string(ls_status status);

/* The message of the last failed call on this thread ("" if none). Valid until the next
 * ls_* call on this thread. Never NULL. */
LS_API const char* ls_last_error(void);

/* LS_TRAIN_ABI_VERSION of the library actually loaded. */
LS_API uint32_t ls_abi_version(void);

/* The library version, e.g. "0.1.0". */
LS_API const char* ls_version_string(void);

/* Backends and libraries compiled into this build: a mask of ls_backend_flags. */
typedef enum ls_backend_flags {
  LS_BACKEND_CPU = 1,   /* always */
  LS_BACKEND_CUDA = 2,  /* the CUDA backend (cuBLASLt) */
  LS_BACKEND_NCCL = 4,  /* NCCL gradient synchronisation */
  LS_BACKEND_CBLAS = 8  /* the CPU backend uses an optimised CBLAS (OpenBLAS) */
} ls_backend_flags;
LS_API uint32_t ls_backends(void);

/* ------------------------------------------------------------------------------------------
 * Devices
 * ---------------------------------------------------------------------------------------- */

typedef enum ls_device_kind {
  LS_DEVICE_AUTO = 0, /* the first usable GPU, else the CPU */
  LS_DEVICE_CPU = 1,
  LS_DEVICE_CUDA = 2
} ls_device_kind;

typedef struct ls_device_info {
  size_t struct_size;
  ls_device_kind kind;        /* LS_DEVICE_CPU or LS_DEVICE_CUDA */
  int32_t index;              /* CUDA ordinal; 0 for the CPU */
  char name[128];             /* e.g. "NVIDIA H100 80GB HBM3" or "CPU (2 threads)" */
  uint64_t total_memory;      /* bytes */
  uint64_t free_memory;       /* bytes, at the time of the query */
  int32_t compute_capability_major; /* 0 for the CPU */
  int32_t compute_capability_minor;
  int32_t multiprocessors;    /* SMs, or logical CPUs */
} ls_device_info;

/* Fills defaults and struct_size. */
LS_API void ls_device_info_init(ls_device_info* info);

/* Number of usable CUDA devices. 0 (and LS_OK) when there is no GPU, no driver, or the CUDA
 * backend is not compiled in. */
LS_API ls_status ls_cuda_device_count(int32_t* count);

/* Information on CUDA device `index` (0 <= index < count). */
LS_API ls_status ls_cuda_device_info(int32_t index, ls_device_info* info);

/* ------------------------------------------------------------------------------------------
 * Context: the device, its stream and library handles, and the random seed.
 * ---------------------------------------------------------------------------------------- */

typedef struct ls_context ls_context;

typedef struct ls_context_options {
  size_t struct_size;
  ls_device_kind device; /* default LS_DEVICE_AUTO */
  int32_t device_index;  /* CUDA ordinal when device is LS_DEVICE_CUDA; default 0 */
  uint64_t seed;         /* default 1 */
  void* stream;          /* optional cudaStream_t to run on; NULL = the context's own stream.
                          * struct_size must cover at least `seed`; `stream` may be left out. */
  int32_t allow_tf32;    /* fp32 models: GEMMs may use TF32 tensor cores (10-bit mantissa
                          * inputs, fp32 accumulation; default 1). 0 = full fp32 GEMMs. */
  int32_t gemm_autotune; /* GPU: 1 = the first use of each GEMM shape times cuBLASLt's candidate
                          * algorithms (up to 8) and keeps the fastest; 0 = the heuristic's first
                          * choice (default). With 1, two processes may choose differently and
                          * their results differ in rounding. */
} ls_context_options;

LS_API void ls_context_options_init(ls_context_options* options);

/* Creates a context. options may be NULL (all defaults). LS_DEVICE_AUTO never fails for lack
 * of a GPU: it falls back to the CPU. LS_DEVICE_CUDA on a machine without one is
 * LS_ERR_UNSUPPORTED. */
LS_API ls_status ls_context_create(const ls_context_options* options, ls_context** out);
LS_API void ls_context_destroy(ls_context* context);

/* The device this context runs on. */
LS_API ls_status ls_context_device(const ls_context* context, ls_device_info* info);

/* Waits until all work queued by this context has finished. */
LS_API ls_status ls_context_synchronize(ls_context* context);

/* ------------------------------------------------------------------------------------------
 * Model configuration and memory planning
 * ---------------------------------------------------------------------------------------- */

typedef enum ls_dtype {
  LS_DTYPE_FP32 = 0,
  LS_DTYPE_FP16 = 1, /* CUDA only; trains with dynamic loss scaling */
  LS_DTYPE_BF16 = 2, /* CUDA only */
  LS_DTYPE_FP64 = 3  /* CPU only: the double-precision reference (gradient checks) */
} ls_dtype;

typedef enum ls_arch {
  LS_ARCH_ENCODER_DECODER = 0, /* fairseq `transformer`: encoder, decoder with cross-attention */
  LS_ARCH_DECODER_ONLY = 1     /* GPT-style: causal decoder, no encoder, no cross-attention */
} ls_arch;

typedef enum ls_activation {
  LS_ACTIVATION_RELU = 0,
  LS_ACTIVATION_GELU = 1 /* tanh approximation (PyTorch's gelu(approximate='tanh')) */
} ls_activation;

/* A Transformer. Token ids are int32; padding_idx marks padding (fairseq: 1). Sizes that
 * bound memory: max_batch_tokens bounds batch_size x padded length of every sequence tensor
 * (source and target separately); max_seq_len bounds each padded length. */
typedef struct ls_model_config {
  size_t struct_size;
  ls_arch arch;               /* default LS_ARCH_ENCODER_DECODER */
  int32_t src_vocab_size;     /* ignored for decoder-only */
  int32_t tgt_vocab_size;
  int32_t hidden_size;        /* d_model */
  int32_t ffn_size;
  int32_t num_heads;          /* hidden_size / num_heads must be a multiple of 8 on CUDA */
  int32_t encoder_layers;     /* ignored for decoder-only */
  int32_t decoder_layers;
  int32_t pre_layer_norm;     /* 1: pre-LN (with a final LayerNorm per stack); 0: post-LN */
  ls_activation activation;   /* default ReLU */
  float dropout;              /* hidden (residual) dropout, default 0.1 */
  float attention_dropout;    /* on attention probabilities, default 0 */
  float activation_dropout;   /* after the FFN activation, default 0 */
  float layer_norm_eps;       /* default 1e-5 */
  int32_t padding_idx;        /* default 1 */
  int32_t share_all_embeddings;             /* encoder, decoder and output share one table
                                               (needs src_vocab_size == tgt_vocab_size) */
  int32_t share_decoder_input_output_embed; /* output projection = decoder embedding (default 1) */
  int32_t scale_embedding;    /* multiply token embeddings by sqrt(hidden_size) (default 1) */
  int32_t learned_positions;  /* 0: fairseq sinusoidal (default); 1: learned table */
  int32_t max_seq_len;        /* default 256 */
  int32_t max_batch_tokens;   /* default 4096 */
  ls_dtype dtype;             /* working precision; default fp32 */
  float label_smoothing;      /* criterion epsilon, default 0.1 (fairseq's eps/(V-1) form) */
  int32_t eos_idx;            /* end of sentence, default 2 (fairseq: bos 0, pad 1, eos 2, unk 3) */
  int32_t recompute_layer_norm; /* 1: pre-LN blocks keep no LayerNorm output for backward; the
                                   LayerNorm backward, which reads the saved block input anyway,
                                   writes it again for the sublayer's weight gradients (one more
                                   store of tokens x hidden_size elements per block; saves as
                                   many elements per block of activation memory). Same results,
                                   bit for bit. 0: keep them (slightly faster). Ignored for
                                   post-LN and with layer_norm_backward_from_output. Default 1
                                   (also for a caller's struct_size that ends before this
                                   field) */
  int32_t layer_norm_backward_from_output; /* 1: every LayerNorm backward recovers
                                   xhat = (y - beta) / gamma from its output y, which is kept
                                   anyway (the sublayer's or the next block's input), instead of
                                   reading its input x: x is not kept for backward, which saves
                                   tokens x hidden_size elements of activation memory per
                                   LayerNorm at no extra work (as apex's memory_efficient
                                   LayerNorm). Gradients differ from the default by the rounding
                                   of y in the working precision, more where |gamma| is small; a
                                   LayerNorm weight of exactly 0 gives a non-finite gradient
                                   (the step is then skipped or training stops, as for any
                                   overflow). Pre- and post-LN; recompute_layer_norm is then
                                   ignored (neither the input nor the output is kept). Default 0
                                   (and 0 for a caller's struct_size that ends before this field) */
} ls_model_config;

/* Defaults (a small encoder-decoder). */
LS_API void ls_model_config_init(ls_model_config* config);

/* Fills `config` from a named preset, keeping its struct_size: "transformer-base"
 * (fairseq transformer_wmt_en_de: 6+6 layers, 512/2048, 8 heads), "transformer-big"
 * (1024/4096, 16 heads, 6+6), "gpt2-small" (decoder-only, 12 layers, 768/3072, 12 heads,
 * GELU, learned positions, pre-LN), "transformer-tiny" (2+2 layers, 128/512, 4 heads; the
 * CPU sample; vocabulary 4000, shared embeddings). The base/big presets use a shared 32768
 * vocabulary, gpt2-small 50304: change them after. */
LS_API ls_status ls_model_config_preset(const char* name, ls_model_config* config);

/* Memory, in bytes, by category. planned_bytes is the planned (reused) region holding saved
 * activations and temporaries; lower_bound_bytes is the peak of bytes alive at once over the
 * step's schedule, no_reuse_bytes what those buffers would take with no reuse. */
typedef struct ls_memory_report {
  size_t struct_size;
  uint64_t parameters;        /* fp32 master weights */
  uint64_t working_copy;      /* fp16/bf16 copy used by the kernels (0 when fp32) */
  uint64_t gradients;         /* one flat fp32 buffer */
  uint64_t optimizer_state;   /* Adam moments, loss-scaler state */
  uint64_t inputs;            /* token and mask buffers of one batch */
  uint64_t workspace;         /* library workspaces (cuBLASLt) */
  uint64_t saved_activations; /* of the planned region: what forward keeps for backward */
  uint64_t temporaries;       /* of the planned region: the rest (sum of sizes, before reuse) */
  uint64_t planned_bytes;
  uint64_t lower_bound_bytes;
  uint64_t no_reuse_bytes;
  uint64_t persistent_bytes;  /* everything outside the planned region */
  uint64_t total_bytes;       /* persistent_bytes + planned_bytes: the arena */
  uint64_t num_parameters;    /* scalar parameters (tied tensors counted once) */
  uint64_t num_planned_buffers;
} ls_memory_report;

LS_API void ls_memory_report_init(ls_memory_report* report);

/* Plans the memory of a model with this config for training, without allocating anything
 * (no context needed): what a given max_batch_tokens will cost before creating a model.
 * `device` picks the backend whose workspaces are counted (LS_DEVICE_AUTO = CUDA if built). */
LS_API ls_status ls_plan_memory(const ls_model_config* config, ls_device_kind device,
                                ls_memory_report* report);

/* ------------------------------------------------------------------------------------------
 * Models
 * ---------------------------------------------------------------------------------------- */

typedef struct ls_model ls_model;

/* Creates a model: plans and allocates its whole arena once (parameters, gradients,
 * optimizer state, activations) and initialises parameters from the context's seed
 * (fairseq's scheme: Xavier-uniform linear weights, zero biases, N(0, d^-1/2) embeddings with
 * the padding row zero, LayerNorm weight 1 and bias 0). Fails with LS_ERR_OUT_OF_MEMORY,
 * giving bytes needed and available, when the arena does not fit. The context must outlive
 * the model. */
LS_API ls_status ls_model_create(ls_context* context, const ls_model_config* config,
                                 ls_model** out);
LS_API void ls_model_destroy(ls_model* model);

/* The configuration the model was created with (defaults filled in). */
LS_API ls_status ls_model_get_config(const ls_model* model, ls_model_config* config);
LS_API ls_status ls_model_memory_report(const ls_model* model, ls_memory_report* report);

/* Parameters by name (PyTorch/fairseq-style names, e.g. "encoder.layers.0.fc1.weight",
 * "decoder.embed_tokens.weight", "encoder.layers.0.self_attn.in_proj_weight" [3d, d] holding
 * the q, k, v projections stacked). Tied tensors appear once, under their first name. */
typedef struct ls_parameter_info {
  size_t struct_size;
  char name[128];
  int32_t ndim;
  int64_t shape[4];
  int64_t numel;
} ls_parameter_info;

LS_API void ls_parameter_info_init(ls_parameter_info* info);
LS_API ls_status ls_model_num_parameters(const ls_model* model, int64_t* num_tensors);
LS_API ls_status ls_model_parameter_info(const ls_model* model, int64_t index,
                                         ls_parameter_info* info);
/* Copies a parameter to / from a host float buffer of exactly `numel` elements (row-major,
 * PyTorch layout: Linear weights are [out, in]). Setting updates the master and working copy. */
LS_API ls_status ls_model_get_parameter(const ls_model* model, const char* name, float* host,
                                        int64_t numel);
LS_API ls_status ls_model_set_parameter(ls_model* model, const char* name, const float* host,
                                        int64_t numel);

/* A batch. Rows are right-padded with padding_idx. For encoder-decoder models src_tokens is
 * [batch_size, src_len]; for both kinds prev_output_tokens (the decoder input, fairseq:
 * [eos] + target[:-1]) and target are [batch_size, tgt_len]. Token arrays are host memory
 * unless tokens_on_device is 1 (then they are device pointers on the context's GPU). Every
 * token id must be in [0, vocab): checked before any kernel runs (device arrays are copied
 * back for that check). */
typedef struct ls_batch {
  size_t struct_size;
  int32_t batch_size;
  int32_t src_len;
  const int32_t* src_tokens;
  int32_t tgt_len;
  const int32_t* prev_output_tokens;
  const int32_t* target;
  int32_t tokens_on_device;
} ls_batch;

LS_API void ls_batch_init(ls_batch* batch);

typedef struct ls_eval_result {
  size_t struct_size;
  double loss;   /* sum over target tokens (label-smoothed), natural log */
  double nll;    /* sum of negative log-likelihoods */
  int64_t tokens; /* non-padding target tokens */
} ls_eval_result;

LS_API void ls_eval_result_init(ls_eval_result* result);

/* Forward only, no dropout, no gradient: the loss of one batch. */
LS_API ls_status ls_model_evaluate(ls_model* model, const ls_batch* batch, ls_eval_result* result);

/* Greedy decoding. Encoder-decoder: src_tokens [batch_size, src_len] (right-padded); decoding
 * starts from eos (fairseq) and stops at eos or max_len tokens. Decoder-only: src_tokens is a
 * prompt (src_len tokens, no padding) that the output continues. out_tokens
 * [batch_size, max_len] receives the generated ids (padded with padding_idx after eos) and
 * out_lengths [batch_size] the number generated (eos included). max_len <= max_seq_len. */
LS_API ls_status ls_model_generate(ls_model* model, const int32_t* src_tokens, int32_t batch_size,
                                   int32_t src_len, int32_t max_len, int32_t* out_tokens,
                                   int32_t* out_lengths);

/* ------------------------------------------------------------------------------------------
 * Training
 * ---------------------------------------------------------------------------------------- */

typedef enum ls_optimizer_kind {
  LS_OPTIMIZER_ADAM = 0, /* weight decay as L2 added to the gradient */
  LS_OPTIMIZER_ADAMW = 1 /* decoupled weight decay */
} ls_optimizer_kind;

typedef enum ls_lr_schedule {
  LS_LR_CONSTANT = 0,
  LS_LR_INVERSE_SQRT = 1, /* fairseq: linear warmup from warmup_init_lr to lr, then lr*sqrt(w/t) */
  LS_LR_LINEAR = 2,       /* linear warmup to lr, then linear decay to min_lr at total_updates */
  LS_LR_COSINE = 3        /* linear warmup to lr, then cosine decay to min_lr at total_updates */
} ls_lr_schedule;

typedef struct ls_trainer_config {
  size_t struct_size;
  ls_optimizer_kind optimizer; /* default Adam */
  float lr;                    /* peak learning rate, default 5e-4 */
  float beta1, beta2;          /* default 0.9, 0.98 (fairseq translation) */
  float eps;                   /* default 1e-8 */
  float weight_decay;          /* default 0 */
  float clip_norm;             /* global gradient-norm clipping; 0 = off (default) */
  ls_lr_schedule lr_schedule;  /* default LS_LR_INVERSE_SQRT */
  int32_t warmup_updates;      /* default 4000 */
  float warmup_init_lr;        /* default 1e-7 */
  int64_t total_updates;       /* for linear/cosine decay */
  float min_lr;                /* default 0 */
  int32_t update_freq;         /* micro-batches accumulated per update, default 1 */
  /* Dynamic loss scaling (fp16 only; PyTorch GradScaler defaults). */
  float loss_scale_init;       /* 65536 */
  float loss_scale_growth;     /* 2.0 */
  float loss_scale_backoff;    /* 0.5 */
  int32_t loss_scale_interval; /* 2000 clean steps before growing */
  float loss_scale_min;        /* 1e-4: below this, training stops with LS_ERR_NUMERIC */
  int32_t deterministic;       /* 1: fixed-order reductions everywhere (default 1 on CPU) */
  int32_t cuda_graph;          /* 1: capture the step as a CUDA graph for fixed shapes */
} ls_trainer_config;

LS_API void ls_trainer_config_init(ls_trainer_config* config);

typedef struct ls_step_result {
  size_t struct_size;
  double loss;        /* summed over this micro-batch's target tokens */
  double nll;
  int64_t tokens;
  int32_t updated;    /* 1 when this call applied an optimizer update */
  int32_t overflow;   /* 1 when the update was skipped for an inf/NaN gradient (fp16) */
  double grad_norm;   /* global norm of the (unscaled, per-token) gradient, before clipping;
                         valid when updated or overflow */
  double lr;          /* learning rate used by the update */
  double loss_scale;  /* scale in force after this call (1 when not fp16) */
  int64_t num_updates; /* updates applied so far */
} ls_step_result;

LS_API void ls_step_result_init(ls_step_result* result);

typedef struct ls_trainer ls_trainer;

/* Creates a trainer for a model (the model must outlive it). Optimizer state lives in the
 * model's arena, so creating a trainer allocates nothing on the device. */
LS_API ls_status ls_trainer_create(ls_model* model, const ls_trainer_config* config,
                                   ls_trainer** out);
LS_API void ls_trainer_destroy(ls_trainer* trainer);

/* One micro-batch: forward, loss, backward (gradients accumulate). Every update_freq-th call
 * also clips, updates the parameters and advances the schedule. The loss is normalised per
 * target token over the accumulated micro-batches (fairseq). result may be NULL. Bad input
 * (ids out of range, too many tokens, too long) is refused before anything changes. */
LS_API ls_status ls_trainer_step(ls_trainer* trainer, const ls_batch* batch,
                                 ls_step_result* result);

/* Checkpoints hold parameters, optimizer state, loss-scaler state, the update counter and the
 * RNG state, with a magic, a format version and a checksum; written atomically (temporary file
 * then rename). Loading checks the model shape matches; a truncated or corrupt file gives
 * LS_ERR_CORRUPT_DATA and leaves the trainer exactly as it was. */
LS_API ls_status ls_trainer_save(const ls_trainer* trainer, const char* path);
LS_API ls_status ls_trainer_load(ls_trainer* trainer, const char* path);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LS_TRAIN_H_ */
