//! Raw FFI declarations mirroring `include/ls_train.h`, written by hand (no bindgen).
//!
//! C enums are declared as `c_int` type aliases with constants, not Rust enums: a value the
//! library appends later must not be undefined behaviour here. Structs are `#[repr(C)]` and list
//! the C fields in order; fields are only ever appended on the C side. Use the `ls_X_init`
//! functions to fill a struct with its defaults and `struct_size`.
#![allow(non_camel_case_types)]

use std::marker::{PhantomData, PhantomPinned};
use std::os::raw::{c_char, c_int, c_void};

/// `LS_TRAIN_ABI_VERSION` of the header these declarations mirror.
pub const LS_TRAIN_ABI_VERSION: u32 = 0;

pub type ls_status = c_int;
pub const LS_OK: ls_status = 0;
pub const LS_ERR_INVALID_ARGUMENT: ls_status = 1;
pub const LS_ERR_OUT_OF_MEMORY: ls_status = 2;
pub const LS_ERR_UNSUPPORTED: ls_status = 3;
pub const LS_ERR_CUDA: ls_status = 4;
pub const LS_ERR_CUBLAS: ls_status = 5;
pub const LS_ERR_NCCL: ls_status = 6;
pub const LS_ERR_IO: ls_status = 7;
pub const LS_ERR_CORRUPT_DATA: ls_status = 8;
pub const LS_ERR_INTERNAL: ls_status = 9;
pub const LS_ERR_NUMERIC: ls_status = 10;

/// Bits of `ls_backends()` (ls_backend_flags).
pub const LS_BACKEND_CPU: u32 = 1;
pub const LS_BACKEND_CUDA: u32 = 2;
pub const LS_BACKEND_NCCL: u32 = 4;
pub const LS_BACKEND_CBLAS: u32 = 8;

pub type ls_device_kind = c_int;
pub const LS_DEVICE_AUTO: ls_device_kind = 0;
pub const LS_DEVICE_CPU: ls_device_kind = 1;
pub const LS_DEVICE_CUDA: ls_device_kind = 2;

pub type ls_dtype = c_int;
pub const LS_DTYPE_FP32: ls_dtype = 0;
pub const LS_DTYPE_FP16: ls_dtype = 1;
pub const LS_DTYPE_BF16: ls_dtype = 2;
pub const LS_DTYPE_FP64: ls_dtype = 3;

pub type ls_arch = c_int;
pub const LS_ARCH_ENCODER_DECODER: ls_arch = 0;
pub const LS_ARCH_DECODER_ONLY: ls_arch = 1;

pub type ls_activation = c_int;
pub const LS_ACTIVATION_RELU: ls_activation = 0;
pub const LS_ACTIVATION_GELU: ls_activation = 1;

pub type ls_optimizer_kind = c_int;
pub const LS_OPTIMIZER_ADAM: ls_optimizer_kind = 0;
pub const LS_OPTIMIZER_ADAMW: ls_optimizer_kind = 1;

pub type ls_lr_schedule = c_int;
pub const LS_LR_CONSTANT: ls_lr_schedule = 0;
pub const LS_LR_INVERSE_SQRT: ls_lr_schedule = 1;
pub const LS_LR_LINEAR: ls_lr_schedule = 2;
pub const LS_LR_COSINE: ls_lr_schedule = 3;

/// Opaque handle types: only ever used behind pointers.
macro_rules! opaque {
    ($($name:ident),*) => {$(
        #[repr(C)]
        pub struct $name {
            _data: [u8; 0],
            _marker: PhantomData<(*mut u8, PhantomPinned)>,
        }
    )*};
}
opaque!(ls_context, ls_model, ls_trainer);

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ls_device_info {
    pub struct_size: usize,
    pub kind: ls_device_kind,
    pub index: i32,
    pub name: [c_char; 128],
    pub total_memory: u64,
    pub free_memory: u64,
    pub compute_capability_major: i32,
    pub compute_capability_minor: i32,
    pub multiprocessors: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ls_context_options {
    pub struct_size: usize,
    pub device: ls_device_kind,
    pub device_index: i32,
    pub seed: u64,
    pub stream: *mut c_void,
    pub allow_tf32: i32,
    pub gemm_autotune: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ls_model_config {
    pub struct_size: usize,
    pub arch: ls_arch,
    pub src_vocab_size: i32,
    pub tgt_vocab_size: i32,
    pub hidden_size: i32,
    pub ffn_size: i32,
    pub num_heads: i32,
    pub encoder_layers: i32,
    pub decoder_layers: i32,
    pub pre_layer_norm: i32,
    pub activation: ls_activation,
    pub dropout: f32,
    pub attention_dropout: f32,
    pub activation_dropout: f32,
    pub layer_norm_eps: f32,
    pub padding_idx: i32,
    pub share_all_embeddings: i32,
    pub share_decoder_input_output_embed: i32,
    pub scale_embedding: i32,
    pub learned_positions: i32,
    pub max_seq_len: i32,
    pub max_batch_tokens: i32,
    pub dtype: ls_dtype,
    pub label_smoothing: f32,
    pub eos_idx: i32,
    pub recompute_layer_norm: i32,
    pub layer_norm_backward_from_output: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ls_memory_report {
    pub struct_size: usize,
    pub parameters: u64,
    pub working_copy: u64,
    pub gradients: u64,
    pub optimizer_state: u64,
    pub inputs: u64,
    pub workspace: u64,
    pub saved_activations: u64,
    pub temporaries: u64,
    pub planned_bytes: u64,
    pub lower_bound_bytes: u64,
    pub no_reuse_bytes: u64,
    pub persistent_bytes: u64,
    pub total_bytes: u64,
    pub num_parameters: u64,
    pub num_planned_buffers: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ls_parameter_info {
    pub struct_size: usize,
    pub name: [c_char; 128],
    pub ndim: i32,
    pub shape: [i64; 4],
    pub numel: i64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ls_batch {
    pub struct_size: usize,
    pub batch_size: i32,
    pub src_len: i32,
    pub src_tokens: *const i32,
    pub tgt_len: i32,
    pub prev_output_tokens: *const i32,
    pub target: *const i32,
    pub tokens_on_device: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ls_eval_result {
    pub struct_size: usize,
    pub loss: f64,
    pub nll: f64,
    pub tokens: i64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ls_trainer_config {
    pub struct_size: usize,
    pub optimizer: ls_optimizer_kind,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub clip_norm: f32,
    pub lr_schedule: ls_lr_schedule,
    pub warmup_updates: i32,
    pub warmup_init_lr: f32,
    pub total_updates: i64,
    pub min_lr: f32,
    pub update_freq: i32,
    pub loss_scale_init: f32,
    pub loss_scale_growth: f32,
    pub loss_scale_backoff: f32,
    pub loss_scale_interval: i32,
    pub loss_scale_min: f32,
    pub deterministic: i32,
    pub cuda_graph: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ls_step_result {
    pub struct_size: usize,
    pub loss: f64,
    pub nll: f64,
    pub tokens: i64,
    pub updated: i32,
    pub overflow: i32,
    pub grad_norm: f64,
    pub lr: f64,
    pub loss_scale: f64,
    pub num_updates: i64,
}

extern "C" {
    // Status and errors, versions, backends.
    pub fn ls_status_string(status: ls_status) -> *const c_char;
    pub fn ls_last_error() -> *const c_char;
    pub fn ls_abi_version() -> u32;
    pub fn ls_version_string() -> *const c_char;
    pub fn ls_backends() -> u32;

    // Devices.
    pub fn ls_device_info_init(info: *mut ls_device_info);
    pub fn ls_cuda_device_count(count: *mut i32) -> ls_status;
    pub fn ls_cuda_device_info(index: i32, info: *mut ls_device_info) -> ls_status;

    // Context.
    pub fn ls_context_options_init(options: *mut ls_context_options);
    pub fn ls_context_create(
        options: *const ls_context_options,
        out: *mut *mut ls_context,
    ) -> ls_status;
    pub fn ls_context_destroy(context: *mut ls_context);
    pub fn ls_context_device(context: *const ls_context, info: *mut ls_device_info) -> ls_status;
    pub fn ls_context_synchronize(context: *mut ls_context) -> ls_status;

    // Model configuration and memory planning.
    pub fn ls_model_config_init(config: *mut ls_model_config);
    pub fn ls_model_config_preset(name: *const c_char, config: *mut ls_model_config) -> ls_status;
    pub fn ls_memory_report_init(report: *mut ls_memory_report);
    pub fn ls_plan_memory(
        config: *const ls_model_config,
        device: ls_device_kind,
        report: *mut ls_memory_report,
    ) -> ls_status;

    // Models.
    pub fn ls_model_create(
        context: *mut ls_context,
        config: *const ls_model_config,
        out: *mut *mut ls_model,
    ) -> ls_status;
    pub fn ls_model_destroy(model: *mut ls_model);
    pub fn ls_model_get_config(model: *const ls_model, config: *mut ls_model_config) -> ls_status;
    pub fn ls_model_memory_report(
        model: *const ls_model,
        report: *mut ls_memory_report,
    ) -> ls_status;
    pub fn ls_parameter_info_init(info: *mut ls_parameter_info);
    pub fn ls_model_num_parameters(model: *const ls_model, num_tensors: *mut i64) -> ls_status;
    pub fn ls_model_parameter_info(
        model: *const ls_model,
        index: i64,
        info: *mut ls_parameter_info,
    ) -> ls_status;
    pub fn ls_model_get_parameter(
        model: *const ls_model,
        name: *const c_char,
        host: *mut f32,
        numel: i64,
    ) -> ls_status;
    pub fn ls_model_set_parameter(
        model: *mut ls_model,
        name: *const c_char,
        host: *const f32,
        numel: i64,
    ) -> ls_status;
    pub fn ls_batch_init(batch: *mut ls_batch);
    pub fn ls_eval_result_init(result: *mut ls_eval_result);
    pub fn ls_model_evaluate(
        model: *mut ls_model,
        batch: *const ls_batch,
        result: *mut ls_eval_result,
    ) -> ls_status;
    pub fn ls_model_generate(
        model: *mut ls_model,
        src_tokens: *const i32,
        batch_size: i32,
        src_len: i32,
        max_len: i32,
        out_tokens: *mut i32,
        out_lengths: *mut i32,
    ) -> ls_status;

    // Training.
    pub fn ls_trainer_config_init(config: *mut ls_trainer_config);
    pub fn ls_step_result_init(result: *mut ls_step_result);
    pub fn ls_trainer_create(
        model: *mut ls_model,
        config: *const ls_trainer_config,
        out: *mut *mut ls_trainer,
    ) -> ls_status;
    pub fn ls_trainer_destroy(trainer: *mut ls_trainer);
    pub fn ls_trainer_step(
        trainer: *mut ls_trainer,
        batch: *const ls_batch,
        result: *mut ls_step_result,
    ) -> ls_status;
    pub fn ls_trainer_save(trainer: *const ls_trainer, path: *const c_char) -> ls_status;
    pub fn ls_trainer_load(trainer: *mut ls_trainer, path: *const c_char) -> ls_status;
}
