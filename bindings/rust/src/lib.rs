//! Rust bindings for libls_train, a mixed-precision Transformer training runtime, over its
//! stable C ABI.
//!
//! [`sys`] holds the raw declarations; the rest of this crate is a safe wrapper: [`Context`],
//! [`Model`] and [`Trainer`] own their C handles and destroy them on drop, borrowing each other
//! so a model cannot outlive its context nor a trainer its model. Every failure is an
//! [`Error`] carrying the status and the library's message.
//!
//! ```no_run
//! use ls_train::{Batch, Context, Device, Model, ModelConfig, Trainer, TrainerConfig};
//! let ctx = Context::new(Device::Cpu, 1)?;
//! let mut config = ModelConfig::preset("transformer-tiny")?;
//! config.src_vocab_size = 64;
//! config.tgt_vocab_size = 64;
//! let mut model = Model::new(&ctx, &config)?;
//! let mut trainer = Trainer::new(&mut model, &TrainerConfig::new())?;
//! let (src, prev, target) = (vec![4, 5, 2], vec![2, 6, 7], vec![6, 7, 2]);
//! let batch = Batch { batch_size: 1, src_len: 3, src: &src, tgt_len: 3, prev_output: &prev, target: &target };
//! let result = trainer.step(&batch)?;
//! println!("loss per token {}", result.loss / result.tokens as f64);
//! # Ok::<(), ls_train::Error>(())
//! ```

pub mod sys;

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::os::raw::c_char;
use std::path::Path;
use std::ptr;

// ------------------------------------------------------------------ errors

/// A status code of the C API (`ls_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub sys::ls_status);

impl Status {
    pub const INVALID_ARGUMENT: Status = Status(sys::LS_ERR_INVALID_ARGUMENT);
    pub const OUT_OF_MEMORY: Status = Status(sys::LS_ERR_OUT_OF_MEMORY);
    pub const UNSUPPORTED: Status = Status(sys::LS_ERR_UNSUPPORTED);
    pub const CUDA: Status = Status(sys::LS_ERR_CUDA);
    pub const CUBLAS: Status = Status(sys::LS_ERR_CUBLAS);
    pub const NCCL: Status = Status(sys::LS_ERR_NCCL);
    pub const IO: Status = Status(sys::LS_ERR_IO);
    pub const CORRUPT_DATA: Status = Status(sys::LS_ERR_CORRUPT_DATA);
    pub const INTERNAL: Status = Status(sys::LS_ERR_INTERNAL);
    pub const NUMERIC: Status = Status(sys::LS_ERR_NUMERIC);

    /// The constant's name, e.g. "LS_ERR_INVALID_ARGUMENT" (from `ls_status_string`).
    pub fn name(self) -> &'static str {
        // ls_status_string returns static strings, never NULL.
        unsafe { CStr::from_ptr(sys::ls_status_string(self.0)) }
            .to_str()
            .unwrap_or("LS_ERR_UNKNOWN")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed call: the status and the message (`ls_last_error`, or one from these bindings
/// when the arguments were refused before reaching the library).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: Status,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn check(status: sys::ls_status) -> Result<()> {
    if status == sys::LS_OK {
        return Ok(());
    }
    let message = unsafe { CStr::from_ptr(sys::ls_last_error()) }
        .to_string_lossy()
        .into_owned();
    Err(Error {
        status: Status(status),
        message,
    })
}

fn invalid(message: String) -> Error {
    Error {
        status: Status::INVALID_ARGUMENT,
        message,
    }
}

fn c_string(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| invalid(format!("{what} contains a NUL byte")))
}

fn fixed_str(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn to_i32(value: usize, what: &str) -> Result<i32> {
    i32::try_from(value).map_err(|_| invalid(format!("{what} {value} does not fit in int32")))
}

// ------------------------------------------------------------------ library information

/// The library version, e.g. "0.1.0".
pub fn version() -> String {
    unsafe { CStr::from_ptr(sys::ls_version_string()) }
        .to_string_lossy()
        .into_owned()
}

/// The ABI version of the library actually linked.
pub fn abi_version() -> u32 {
    unsafe { sys::ls_abi_version() }
}

/// Backends compiled into the library: a mask of `sys::LS_BACKEND_*`.
pub fn backends() -> u32 {
    unsafe { sys::ls_backends() }
}

/// A device, as the library describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub kind: Device,
    pub name: String,
    pub total_memory: u64,
    pub free_memory: u64,
    pub compute_capability: (i32, i32),
    pub multiprocessors: i32,
}

impl DeviceInfo {
    fn from_raw(d: &sys::ls_device_info) -> DeviceInfo {
        DeviceInfo {
            kind: if d.kind == sys::LS_DEVICE_CUDA {
                Device::Cuda(d.index)
            } else {
                Device::Cpu
            },
            name: fixed_str(&d.name),
            total_memory: d.total_memory,
            free_memory: d.free_memory,
            compute_capability: (d.compute_capability_major, d.compute_capability_minor),
            multiprocessors: d.multiprocessors,
        }
    }
}

fn device_info_struct() -> sys::ls_device_info {
    let mut info = std::mem::MaybeUninit::<sys::ls_device_info>::uninit();
    unsafe {
        sys::ls_device_info_init(info.as_mut_ptr());
        info.assume_init()
    }
}

/// The usable CUDA devices (none without a GPU or without the CUDA backend).
pub fn cuda_devices() -> Result<Vec<DeviceInfo>> {
    let mut count = 0i32;
    check(unsafe { sys::ls_cuda_device_count(&mut count) })?;
    (0..count)
        .map(|i| {
            let mut info = device_info_struct();
            check(unsafe { sys::ls_cuda_device_info(i, &mut info) })?;
            Ok(DeviceInfo::from_raw(&info))
        })
        .collect()
}

// ------------------------------------------------------------------ context

/// Where a context runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The first usable GPU, else the CPU.
    Auto,
    Cpu,
    /// A CUDA device by ordinal.
    Cuda(i32),
}

impl Device {
    fn kind(self) -> sys::ls_device_kind {
        match self {
            Device::Auto => sys::LS_DEVICE_AUTO,
            Device::Cpu => sys::LS_DEVICE_CPU,
            Device::Cuda(_) => sys::LS_DEVICE_CUDA,
        }
    }
}

/// Context options beyond the device and the seed (see `ls_context_options` in ls_train.h).
/// Both apply to the GPU only; the CPU backend ignores them.
#[derive(Debug, Clone, Copy)]
pub struct ContextOptions {
    /// fp32 models may run their GEMMs on TF32 tensor cores (default true).
    pub allow_tf32: bool,
    /// The first use of each GEMM shape times cuBLASLt's candidate algorithms and keeps the
    /// fastest (default false). The choice depends on timings, so two processes may choose
    /// differently and their results then differ in rounding.
    pub gemm_autotune: bool,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            allow_tf32: true,
            gemm_autotune: false,
        }
    }
}

/// A device, its stream and library handles, and the random seed.
pub struct Context {
    raw: *mut sys::ls_context,
}

impl Context {
    /// A context on `device` with this random seed and the default [`ContextOptions`].
    pub fn new(device: Device, seed: u64) -> Result<Context> {
        Context::with_options(device, seed, &ContextOptions::default())
    }

    /// A context on `device` with this random seed and these options.
    pub fn with_options(device: Device, seed: u64, options: &ContextOptions) -> Result<Context> {
        let mut c_options = std::mem::MaybeUninit::<sys::ls_context_options>::uninit();
        let mut c_options = unsafe {
            sys::ls_context_options_init(c_options.as_mut_ptr());
            c_options.assume_init()
        };
        c_options.device = device.kind();
        c_options.device_index = if let Device::Cuda(i) = device { i } else { 0 };
        c_options.seed = seed;
        c_options.allow_tf32 = options.allow_tf32 as i32;
        c_options.gemm_autotune = options.gemm_autotune as i32;
        let mut raw = ptr::null_mut();
        check(unsafe { sys::ls_context_create(&c_options, &mut raw) })?;
        Ok(Context { raw })
    }

    /// The device this context runs on.
    pub fn device(&self) -> Result<DeviceInfo> {
        let mut info = device_info_struct();
        check(unsafe { sys::ls_context_device(self.raw, &mut info) })?;
        Ok(DeviceInfo::from_raw(&info))
    }

    /// Waits until all work queued by this context has finished.
    pub fn synchronize(&self) -> Result<()> {
        check(unsafe { sys::ls_context_synchronize(self.raw) })
    }

    pub fn as_raw(&self) -> *mut sys::ls_context {
        self.raw
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        unsafe { sys::ls_context_destroy(self.raw) }
    }
}

// ------------------------------------------------------------------ configurations

/// A model configuration: `sys::ls_model_config` (fields reachable through Deref) filled with
/// the library's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    pub raw: sys::ls_model_config,
}

impl ModelConfig {
    /// The library's defaults (a small encoder-decoder).
    pub fn new() -> ModelConfig {
        let mut raw = std::mem::MaybeUninit::<sys::ls_model_config>::uninit();
        unsafe {
            sys::ls_model_config_init(raw.as_mut_ptr());
            ModelConfig {
                raw: raw.assume_init(),
            }
        }
    }

    /// A named preset: "transformer-base", "transformer-big", "gpt2-small", "transformer-tiny".
    pub fn preset(name: &str) -> Result<ModelConfig> {
        let mut config = ModelConfig::new();
        let name = c_string(name, "preset name")?;
        check(unsafe { sys::ls_model_config_preset(name.as_ptr(), &mut config.raw) })?;
        Ok(config)
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::new()
    }
}

impl Deref for ModelConfig {
    type Target = sys::ls_model_config;
    fn deref(&self) -> &Self::Target {
        &self.raw
    }
}

impl DerefMut for ModelConfig {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.raw
    }
}

/// A trainer configuration: `sys::ls_trainer_config` filled with the library's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainerConfig {
    pub raw: sys::ls_trainer_config,
}

impl TrainerConfig {
    pub fn new() -> TrainerConfig {
        let mut raw = std::mem::MaybeUninit::<sys::ls_trainer_config>::uninit();
        unsafe {
            sys::ls_trainer_config_init(raw.as_mut_ptr());
            TrainerConfig {
                raw: raw.assume_init(),
            }
        }
    }
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig::new()
    }
}

impl Deref for TrainerConfig {
    type Target = sys::ls_trainer_config;
    fn deref(&self) -> &Self::Target {
        &self.raw
    }
}

impl DerefMut for TrainerConfig {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.raw
    }
}

/// Memory in bytes by category (see `ls_memory_report` in ls_train.h).
pub type MemoryReport = sys::ls_memory_report;

fn memory_report_struct() -> sys::ls_memory_report {
    let mut r = std::mem::MaybeUninit::<sys::ls_memory_report>::uninit();
    unsafe {
        sys::ls_memory_report_init(r.as_mut_ptr());
        r.assume_init()
    }
}

/// Plans the training memory of a model with this config without allocating anything.
/// `device` picks whose workspaces are counted (`Device::Auto`: CUDA if built).
pub fn plan_memory(config: &ModelConfig, device: Device) -> Result<MemoryReport> {
    let mut report = memory_report_struct();
    check(unsafe { sys::ls_plan_memory(&config.raw, device.kind(), &mut report) })?;
    Ok(report)
}

// ------------------------------------------------------------------ batches

/// A batch of host token ids, row-major and right-padded with padding_idx. `src` is
/// `[batch_size, src_len]` (empty with src_len 0 for decoder-only models); `prev_output` and
/// `target` are `[batch_size, tgt_len]`.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub batch_size: usize,
    pub src_len: usize,
    pub src: &'a [i32],
    pub tgt_len: usize,
    pub prev_output: &'a [i32],
    pub target: &'a [i32],
}

impl Batch<'_> {
    /// The C struct, borrowing this batch's slices; refuses slices of the wrong length.
    fn to_raw(&self) -> Result<sys::ls_batch> {
        let expect = |name: &str, got: usize, rows: usize, cols: usize| {
            if got == rows * cols {
                Ok(())
            } else {
                Err(invalid(format!(
                    "Batch.{name} has {got} tokens; expected {rows} x {cols}"
                )))
            }
        };
        expect("src", self.src.len(), self.batch_size, self.src_len)?;
        expect(
            "prev_output",
            self.prev_output.len(),
            self.batch_size,
            self.tgt_len,
        )?;
        expect("target", self.target.len(), self.batch_size, self.tgt_len)?;
        let mut raw = std::mem::MaybeUninit::<sys::ls_batch>::uninit();
        let mut raw = unsafe {
            sys::ls_batch_init(raw.as_mut_ptr());
            raw.assume_init()
        };
        raw.batch_size = to_i32(self.batch_size, "batch_size")?;
        raw.src_len = to_i32(self.src_len, "src_len")?;
        raw.src_tokens = if self.src.is_empty() {
            ptr::null()
        } else {
            self.src.as_ptr()
        };
        raw.tgt_len = to_i32(self.tgt_len, "tgt_len")?;
        raw.prev_output_tokens = self.prev_output.as_ptr();
        raw.target = self.target.as_ptr();
        raw.tokens_on_device = 0;
        Ok(raw)
    }
}

/// Forward-only loss of a batch: sums over its non-padding target tokens.
pub type EvalResult = sys::ls_eval_result;
/// What one trainer step did (loss, tokens, whether it updated, grad norm, lr, loss scale).
pub type StepResult = sys::ls_step_result;

// ------------------------------------------------------------------ model

/// A parameter's name (PyTorch/fairseq style) and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterInfo {
    pub name: String,
    pub shape: Vec<i64>,
    pub numel: i64,
}

/// A Transformer with its whole memory allocated once. Borrows its context.
pub struct Model<'ctx> {
    raw: *mut sys::ls_model,
    _context: PhantomData<&'ctx Context>,
}

impl<'ctx> Model<'ctx> {
    pub fn new(context: &'ctx Context, config: &ModelConfig) -> Result<Model<'ctx>> {
        let mut raw = ptr::null_mut();
        check(unsafe { sys::ls_model_create(context.raw, &config.raw, &mut raw) })?;
        Ok(Model {
            raw,
            _context: PhantomData,
        })
    }

    /// The configuration the model was created with (defaults filled in).
    pub fn config(&self) -> Result<ModelConfig> {
        let mut config = ModelConfig::new();
        check(unsafe { sys::ls_model_get_config(self.raw, &mut config.raw) })?;
        Ok(config)
    }

    pub fn memory_report(&self) -> Result<MemoryReport> {
        let mut report = memory_report_struct();
        check(unsafe { sys::ls_model_memory_report(self.raw, &mut report) })?;
        Ok(report)
    }

    /// Every parameter tensor, in the library's order (tied tensors once).
    pub fn parameters(&self) -> Result<Vec<ParameterInfo>> {
        let mut count = 0i64;
        check(unsafe { sys::ls_model_num_parameters(self.raw, &mut count) })?;
        (0..count)
            .map(|i| {
                let mut info = std::mem::MaybeUninit::<sys::ls_parameter_info>::uninit();
                let mut info = unsafe {
                    sys::ls_parameter_info_init(info.as_mut_ptr());
                    info.assume_init()
                };
                check(unsafe { sys::ls_model_parameter_info(self.raw, i, &mut info) })?;
                let ndim = info.ndim.clamp(0, 4) as usize;
                Ok(ParameterInfo {
                    name: fixed_str(&info.name),
                    shape: info.shape[..ndim].to_vec(),
                    numel: info.numel,
                })
            })
            .collect()
    }

    fn numel(&self, name: &str) -> Result<i64> {
        self.parameters()?
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| p.numel)
            .ok_or_else(|| invalid(format!("model has no parameter '{name}'")))
    }

    /// A copy of a parameter (row-major, PyTorch layout).
    pub fn get_parameter(&self, name: &str) -> Result<Vec<f32>> {
        let numel = self.numel(name)?;
        let mut out = vec![0f32; numel as usize];
        let cname = c_string(name, "parameter name")?;
        check(unsafe {
            sys::ls_model_get_parameter(self.raw, cname.as_ptr(), out.as_mut_ptr(), numel)
        })?;
        Ok(out)
    }

    /// Sets a parameter (master and working copy) from exactly `numel` values.
    pub fn set_parameter(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let cname = c_string(name, "parameter name")?;
        check(unsafe {
            sys::ls_model_set_parameter(
                self.raw,
                cname.as_ptr(),
                values.as_ptr(),
                values.len() as i64,
            )
        })
    }

    /// Forward only, no dropout, no gradient.
    pub fn evaluate(&mut self, batch: &Batch) -> Result<EvalResult> {
        let raw_batch = batch.to_raw()?;
        let mut result = std::mem::MaybeUninit::<sys::ls_eval_result>::uninit();
        let mut result = unsafe {
            sys::ls_eval_result_init(result.as_mut_ptr());
            result.assume_init()
        };
        check(unsafe { sys::ls_model_evaluate(self.raw, &raw_batch, &mut result) })?;
        Ok(result)
    }

    /// Greedy decoding of `src` ([batch_size, src_len]). Returns the tokens
    /// ([batch_size, max_len], padded after eos) and each row's length.
    pub fn generate(
        &mut self,
        src: &[i32],
        batch_size: usize,
        src_len: usize,
        max_len: usize,
    ) -> Result<(Vec<i32>, Vec<i32>)> {
        if src.len() != batch_size * src_len {
            return Err(invalid(format!(
                "generate: src has {} tokens; expected {batch_size} x {src_len}",
                src.len()
            )));
        }
        let mut tokens = vec![0i32; batch_size * max_len];
        let mut lengths = vec![0i32; batch_size];
        check(unsafe {
            sys::ls_model_generate(
                self.raw,
                src.as_ptr(),
                to_i32(batch_size, "batch_size")?,
                to_i32(src_len, "src_len")?,
                to_i32(max_len, "max_len")?,
                tokens.as_mut_ptr(),
                lengths.as_mut_ptr(),
            )
        })?;
        Ok((tokens, lengths))
    }

    pub fn as_raw(&self) -> *mut sys::ls_model {
        self.raw
    }
}

impl Drop for Model<'_> {
    fn drop(&mut self) {
        unsafe { sys::ls_model_destroy(self.raw) }
    }
}

// ------------------------------------------------------------------ trainer

/// Optimizer, schedule and loss scaling for a model. Holds the model mutably for its lifetime;
/// reach it through [`Trainer::model`] / [`Trainer::model_mut`].
pub struct Trainer<'m, 'ctx> {
    raw: *mut sys::ls_trainer,
    model: &'m mut Model<'ctx>,
}

impl<'m, 'ctx> Trainer<'m, 'ctx> {
    pub fn new(model: &'m mut Model<'ctx>, config: &TrainerConfig) -> Result<Trainer<'m, 'ctx>> {
        let mut raw = ptr::null_mut();
        check(unsafe { sys::ls_trainer_create(model.raw, &config.raw, &mut raw) })?;
        Ok(Trainer { raw, model })
    }

    /// One micro-batch: forward, loss, backward; every update_freq-th call also updates.
    pub fn step(&mut self, batch: &Batch) -> Result<StepResult> {
        let raw_batch = batch.to_raw()?;
        let mut result = std::mem::MaybeUninit::<sys::ls_step_result>::uninit();
        let mut result = unsafe {
            sys::ls_step_result_init(result.as_mut_ptr());
            result.assume_init()
        };
        check(unsafe { sys::ls_trainer_step(self.raw, &raw_batch, &mut result) })?;
        Ok(result)
    }

    /// Writes a checkpoint (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let cpath = path_cstring(path)?;
        check(unsafe { sys::ls_trainer_save(self.raw, cpath.as_ptr()) })
    }

    /// Restores a checkpoint; on failure the trainer is left exactly as it was.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let cpath = path_cstring(path)?;
        check(unsafe { sys::ls_trainer_load(self.raw, cpath.as_ptr()) })
    }

    pub fn model(&self) -> &Model<'ctx> {
        self.model
    }

    pub fn model_mut(&mut self) -> &mut Model<'ctx> {
        self.model
    }

    pub fn as_raw(&self) -> *mut sys::ls_trainer {
        self.raw
    }
}

impl Drop for Trainer<'_, '_> {
    fn drop(&mut self) {
        unsafe { sys::ls_trainer_destroy(self.raw) }
    }
}

fn path_cstring(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("path {} contains a NUL byte", path.display())))
}
