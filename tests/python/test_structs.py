"""The ctypes mirrors have the layout of the C structs: same size as the library's sizeof (read
back from the struct_size that each ls_X_init writes) and fields at the right offsets (the
documented defaults land in the right fields)."""

import ctypes

import pytest

import ls_train
from ls_train import _capi


@pytest.mark.parametrize("struct", list(_capi.INIT_FUNCTIONS), ids=lambda s: s.__name__)
def test_struct_size_matches_the_library(struct):
    size = ctypes.sizeof(struct)
    # Init into a larger poisoned buffer: the library writes sizeof(its struct) into
    # struct_size and clears exactly that many bytes.
    buffer = (ctypes.c_ubyte * (size + 64))(*([0xAB] * (size + 64)))
    init = getattr(_capi.fn, _capi.INIT_FUNCTIONS[struct])
    init(ctypes.cast(buffer, ctypes.POINTER(struct)))
    c_size = ctypes.c_size_t.from_buffer(buffer).value
    assert c_size == size
    assert all(b == 0xAB for b in buffer[size:])


def test_context_options_fields_land_where_the_library_reads_them():
    o = _capi.new(_capi.ls_context_options)
    assert o.struct_size == ctypes.sizeof(_capi.ls_context_options)
    assert (o.device, o.device_index, o.seed, o.stream) == (_capi.LS_DEVICE_AUTO, 0, 1, None)
    # A context made from the ctypes struct: the library accepts its struct_size and reads
    # `device` from the offset the mirror writes it at.
    o.device = _capi.LS_DEVICE_CPU
    handle = ctypes.c_void_p()
    assert _capi.fn.ls_context_create(ctypes.byref(o), ctypes.byref(handle)) == 0
    info = _capi.new(_capi.ls_device_info)
    assert _capi.fn.ls_context_device(handle, ctypes.byref(info)) == 0
    assert info.kind == _capi.LS_DEVICE_CPU
    _capi.fn.ls_context_destroy(handle)


def test_context_options_allow_tf32_and_gemm_autotune():
    if ctypes.sizeof(ctypes.c_void_p) == 8:  # LP64: size_t and pointers 8 bytes
        assert _capi.ls_context_options.allow_tf32.offset == 32
        assert _capi.ls_context_options.gemm_autotune.offset == 36
        assert ctypes.sizeof(_capi.ls_context_options) == 40
    o = _capi.new(_capi.ls_context_options)
    assert (o.allow_tf32, o.gemm_autotune) == (1, 0)
    # The CPU backend accepts gemm_autotune and ignores it; other values than 0/1 are refused.
    with ls_train.Context("cpu", allow_tf32=False, gemm_autotune=True) as ctx:
        assert ctx.device["kind"] == "cpu"
    o.device = _capi.LS_DEVICE_CPU
    o.gemm_autotune = 2
    handle = ctypes.c_void_p()
    status = _capi.fn.ls_context_create(ctypes.byref(o), ctypes.byref(handle))
    assert _capi.STATUS_NAMES[status] == "LS_ERR_INVALID_ARGUMENT"
    assert "gemm_autotune" in _capi.fn.ls_last_error().decode()
    assert handle.value is None


def test_bad_struct_size_is_invalid_argument():
    o = _capi.new(_capi.ls_context_options)
    o.struct_size = 0
    handle = ctypes.c_void_p()
    status = _capi.fn.ls_context_create(ctypes.byref(o), ctypes.byref(handle))
    assert _capi.STATUS_NAMES[status] == "LS_ERR_INVALID_ARGUMENT"
    assert "struct_size" in _capi.fn.ls_last_error().decode()
    assert handle.value is None  # out parameter untouched


def test_model_config_defaults_are_at_the_right_offsets():
    c = ls_train.ModelConfig()
    d = c.to_dict()
    assert "struct_size" not in d
    assert d["arch"] == "encoder-decoder"
    assert d["activation"] == "relu"
    assert d["dtype"] == "fp32"
    assert d["dropout"] == pytest.approx(0.1)
    assert d["attention_dropout"] == 0.0
    assert d["activation_dropout"] == 0.0
    assert d["layer_norm_eps"] == pytest.approx(1e-5)
    assert d["padding_idx"] == 1
    assert d["share_decoder_input_output_embed"] == 1
    assert d["scale_embedding"] == 1
    assert d["learned_positions"] == 0
    assert d["max_seq_len"] == 256
    assert d["max_batch_tokens"] == 4096
    assert d["label_smoothing"] == pytest.approx(0.1)
    assert d["eos_idx"] == 2
    assert d["recompute_layer_norm"] == 1
    assert d["layer_norm_backward_from_output"] == 0


def test_trainer_config_defaults_are_at_the_right_offsets():
    t = _capi.new(_capi.ls_trainer_config)
    assert t.optimizer == _capi.LS_OPTIMIZER_ADAM
    assert t.lr == pytest.approx(5e-4)
    assert (t.beta1, t.beta2) == (pytest.approx(0.9), pytest.approx(0.98))
    assert t.eps == pytest.approx(1e-8)
    assert t.weight_decay == 0.0 and t.clip_norm == 0.0
    assert t.lr_schedule == _capi.LS_LR_INVERSE_SQRT
    assert t.warmup_updates == 4000
    assert t.warmup_init_lr == pytest.approx(1e-7)
    assert t.min_lr == 0.0
    assert t.update_freq == 1
    assert t.loss_scale_init == 65536.0
    assert t.loss_scale_growth == 2.0
    assert t.loss_scale_backoff == 0.5
    assert t.loss_scale_interval == 2000
    assert t.loss_scale_min == pytest.approx(1e-4)
    assert t.cuda_graph == 0


def test_model_config_rejects_unknown_fields_and_enum_names():
    with pytest.raises(TypeError):
        ls_train.ModelConfig(hidden=3)
    with pytest.raises(ValueError):
        ls_train.ModelConfig(dtype="fp8")
    c = ls_train.ModelConfig(dtype="bf16", activation="gelu", arch="decoder-only")
    assert (c.dtype, c.activation, c.arch) == ("bf16", "gelu", "decoder-only")
    c.hidden_size = 64
    assert c.hidden_size == 64
    assert c.replace(hidden_size=32).hidden_size == 32 and c.hidden_size == 64
