// Library information, contexts, the error path, and the layout of the sys structs. Uses only
// the context/device part of the C API.
use std::mem::{offset_of, size_of, MaybeUninit};

use ls_train::{sys, Context, ContextOptions, Device, Status};

#[test]
fn version_and_abi() {
    let v = ls_train::version();
    let parts: Vec<&str> = v.split('.').collect();
    assert!(
        parts.len() >= 3 && parts[..3].iter().all(|p| p.parse::<u32>().is_ok()),
        "{v}"
    );
    assert_eq!(ls_train::abi_version(), sys::LS_TRAIN_ABI_VERSION);
}

#[test]
fn backends_include_the_cpu() {
    assert_ne!(ls_train::backends() & sys::LS_BACKEND_CPU, 0);
    let devices = ls_train::cuda_devices().unwrap();
    if ls_train::backends() & sys::LS_BACKEND_CUDA == 0 {
        assert!(devices.is_empty());
    }
}

#[test]
fn cpu_context_create_and_drop() {
    let ctx = Context::new(Device::Cpu, 7).unwrap();
    let info = ctx.device().unwrap();
    assert_eq!(info.kind, Device::Cpu);
    assert!(!info.name.is_empty());
    ctx.synchronize().unwrap();
    drop(ctx);
    // A second context after the first is gone.
    let again = Context::new(Device::Auto, 1).unwrap();
    let expected_gpu = !ls_train::cuda_devices().unwrap().is_empty();
    assert_eq!(
        matches!(again.device().unwrap().kind, Device::Cuda(_)),
        expected_gpu
    );
}

#[test]
fn cpu_context_with_options() {
    let defaults = ContextOptions::default();
    assert!(defaults.allow_tf32 && !defaults.gemm_autotune);
    // The CPU backend accepts both options and ignores them.
    let options = ContextOptions {
        allow_tf32: false,
        gemm_autotune: true,
    };
    let ctx = Context::with_options(Device::Cpu, 1, &options).unwrap();
    assert_eq!(ctx.device().unwrap().kind, Device::Cpu);
}

#[test]
fn bad_device_gives_status_and_message() {
    let err = match Context::new(Device::Cuda(99), 1) {
        Ok(_) => panic!("cuda:99 must not exist"),
        Err(e) => e,
    };
    assert!(
        err.status == Status::UNSUPPORTED || err.status == Status::INVALID_ARGUMENT,
        "{err}"
    );
    assert!(err.message.contains("ls_context_create"), "{err}");
    let shown = err.to_string();
    assert!(shown.starts_with(err.status.name()), "{shown}");
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(!boxed.to_string().is_empty());
}

#[test]
fn status_names_come_from_the_library() {
    assert_eq!(Status(sys::LS_OK).name(), "LS_OK");
    assert_eq!(Status::CORRUPT_DATA.name(), "LS_ERR_CORRUPT_DATA");
    assert_eq!(Status(1234).name(), "LS_ERR_UNKNOWN");
}

#[test]
fn bad_struct_size_is_refused_and_out_is_untouched() {
    let mut options = MaybeUninit::<sys::ls_context_options>::uninit();
    let mut options = unsafe {
        sys::ls_context_options_init(options.as_mut_ptr());
        options.assume_init()
    };
    options.struct_size = 0;
    let mut out: *mut sys::ls_context = std::ptr::null_mut();
    let status = unsafe { sys::ls_context_create(&options, &mut out) };
    assert_eq!(status, sys::LS_ERR_INVALID_ARGUMENT);
    assert!(out.is_null());
}

// Sizes and offsets on x86-64 / aarch64 Linux (LP64: size_t and pointers 8 bytes, int and C
// enums 4, natural alignment), worked out by hand from the header's field order and checked
// once against gcc's sizeof/offsetof of ls_train.h.
#[cfg(target_pointer_width = "64")]
#[test]
fn struct_layouts_match_lp64() {
    assert_eq!(size_of::<sys::ls_device_info>(), 176);
    assert_eq!(offset_of!(sys::ls_device_info, name), 16);
    assert_eq!(offset_of!(sys::ls_device_info, total_memory), 144);
    assert_eq!(offset_of!(sys::ls_device_info, multiprocessors), 168);

    assert_eq!(size_of::<sys::ls_context_options>(), 40);
    assert_eq!(offset_of!(sys::ls_context_options, seed), 16);
    assert_eq!(offset_of!(sys::ls_context_options, stream), 24);
    assert_eq!(offset_of!(sys::ls_context_options, allow_tf32), 32);
    assert_eq!(offset_of!(sys::ls_context_options, gemm_autotune), 36);

    // 8 + 26 four-byte fields = 112, no padding.
    assert_eq!(size_of::<sys::ls_model_config>(), 112);
    assert_eq!(offset_of!(sys::ls_model_config, dropout), 48);
    assert_eq!(offset_of!(sys::ls_model_config, max_seq_len), 84);
    assert_eq!(offset_of!(sys::ls_model_config, label_smoothing), 96);
    assert_eq!(offset_of!(sys::ls_model_config, eos_idx), 100);
    assert_eq!(offset_of!(sys::ls_model_config, recompute_layer_norm), 104);
    assert_eq!(
        offset_of!(sys::ls_model_config, layer_norm_backward_from_output),
        108
    );

    assert_eq!(size_of::<sys::ls_memory_report>(), 8 + 15 * 8);
    assert_eq!(offset_of!(sys::ls_memory_report, planned_bytes), 72);

    // name ends at 136, ndim at 136, shape aligned to 144.
    assert_eq!(size_of::<sys::ls_parameter_info>(), 184);
    assert_eq!(offset_of!(sys::ls_parameter_info, shape), 144);
    assert_eq!(offset_of!(sys::ls_parameter_info, numel), 176);

    assert_eq!(size_of::<sys::ls_batch>(), 56);
    assert_eq!(offset_of!(sys::ls_batch, src_tokens), 16);
    assert_eq!(offset_of!(sys::ls_batch, tgt_len), 24);
    assert_eq!(offset_of!(sys::ls_batch, prev_output_tokens), 32);
    assert_eq!(offset_of!(sys::ls_batch, tokens_on_device), 48);

    assert_eq!(size_of::<sys::ls_eval_result>(), 32);

    assert_eq!(size_of::<sys::ls_trainer_config>(), 96);
    assert_eq!(offset_of!(sys::ls_trainer_config, total_updates), 48);
    assert_eq!(offset_of!(sys::ls_trainer_config, cuda_graph), 88);

    assert_eq!(size_of::<sys::ls_step_result>(), 72);
    assert_eq!(offset_of!(sys::ls_step_result, updated), 32);
    assert_eq!(offset_of!(sys::ls_step_result, grad_norm), 40);
}

// The library's own sizeof, as its init functions write it into struct_size.
#[test]
fn struct_sizes_match_the_library_context_part() {
    let mut info = MaybeUninit::<sys::ls_device_info>::uninit();
    let info = unsafe {
        sys::ls_device_info_init(info.as_mut_ptr());
        info.assume_init()
    };
    assert_eq!(info.struct_size, size_of::<sys::ls_device_info>());
    let mut options = MaybeUninit::<sys::ls_context_options>::uninit();
    let options = unsafe {
        sys::ls_context_options_init(options.as_mut_ptr());
        options.assume_init()
    };
    assert_eq!(options.struct_size, size_of::<sys::ls_context_options>());
    assert_eq!(options.seed, 1);
    assert_eq!(options.device, sys::LS_DEVICE_AUTO);
}
