"""ctypes mirror of include/ls_train.h: loading the library, the enums, the structs and the
function prototypes. Nothing here is Pythonic; ls_train/__init__.py builds the API on top.

Every struct mirrors its C declaration field for field, in order (fields are only ever appended
in C, so appending here keeps old and new versions compatible). `new(StructType)` returns an
instance filled by the library's ls_X_init, which sets the defaults and struct_size.
"""

import ctypes
import ctypes.util
import os

# ------------------------------------------------------------------ loading the library

_LIBRARY_NAMES = ("libls_train.so", "libls_train.so.0", "libls_train.dylib", "ls_train.dll")


def _candidates():
    env = os.environ.get("LS_TRAIN_LIBRARY")
    if env:
        # An explicit choice: use it or fail, never silently fall back to another copy.
        return [env], True
    here = os.path.dirname(os.path.abspath(__file__))
    paths = []
    for folder in (here, os.path.dirname(here)):
        paths.extend(os.path.join(folder, name) for name in _LIBRARY_NAMES)
    found = ctypes.util.find_library("ls_train")
    if found:
        paths.append(found)
    return paths, False


def _load():
    paths, explicit = _candidates()
    errors = []
    for path in paths:
        if not explicit and os.path.sep in path and not os.path.exists(path):
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:
            errors.append("%s: %s" % (path, e))
    if explicit:
        detail = errors[0] if errors else paths[0]
        raise ImportError(
            "ls_train: cannot load the library named by LS_TRAIN_LIBRARY (%s)" % detail
        )
    tried = "\n  ".join(errors) if errors else "(no candidate found)"
    raise ImportError(
        "ls_train: libls_train.so not found. Set LS_TRAIN_LIBRARY to its path (e.g. "
        "build/libls_train.so), put it next to the ls_train package, or install it where the "
        "dynamic loader looks. Tried:\n  " + tried
    )


lib, library_path = _load()

# ------------------------------------------------------------------ enums (C enums are int)

ls_status = ctypes.c_int
STATUS_NAMES = {
    0: "LS_OK",
    1: "LS_ERR_INVALID_ARGUMENT",
    2: "LS_ERR_OUT_OF_MEMORY",
    3: "LS_ERR_UNSUPPORTED",
    4: "LS_ERR_CUDA",
    5: "LS_ERR_CUBLAS",
    6: "LS_ERR_NCCL",
    7: "LS_ERR_IO",
    8: "LS_ERR_CORRUPT_DATA",
    9: "LS_ERR_INTERNAL",
    10: "LS_ERR_NUMERIC",
}
for _code, _name in STATUS_NAMES.items():
    globals()[_name] = _code

LS_BACKEND_CPU, LS_BACKEND_CUDA, LS_BACKEND_NCCL, LS_BACKEND_CBLAS = 1, 2, 4, 8
LS_DEVICE_AUTO, LS_DEVICE_CPU, LS_DEVICE_CUDA = 0, 1, 2
LS_DTYPE_FP32, LS_DTYPE_FP16, LS_DTYPE_BF16, LS_DTYPE_FP64 = 0, 1, 2, 3
LS_ARCH_ENCODER_DECODER, LS_ARCH_DECODER_ONLY = 0, 1
LS_ACTIVATION_RELU, LS_ACTIVATION_GELU = 0, 1
LS_OPTIMIZER_ADAM, LS_OPTIMIZER_ADAMW = 0, 1
LS_LR_CONSTANT, LS_LR_INVERSE_SQRT, LS_LR_LINEAR, LS_LR_COSINE = 0, 1, 2, 3

# ------------------------------------------------------------------ structs

c_enum = ctypes.c_int
size_t = ctypes.c_size_t


class ls_device_info(ctypes.Structure):
    _fields_ = [
        ("struct_size", size_t),
        ("kind", c_enum),
        ("index", ctypes.c_int32),
        ("name", ctypes.c_char * 128),
        ("total_memory", ctypes.c_uint64),
        ("free_memory", ctypes.c_uint64),
        ("compute_capability_major", ctypes.c_int32),
        ("compute_capability_minor", ctypes.c_int32),
        ("multiprocessors", ctypes.c_int32),
    ]


class ls_context_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", size_t),
        ("device", c_enum),
        ("device_index", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
        ("stream", ctypes.c_void_p),
        ("allow_tf32", ctypes.c_int32),
        ("gemm_autotune", ctypes.c_int32),
    ]


class ls_model_config(ctypes.Structure):
    _fields_ = [
        ("struct_size", size_t),
        ("arch", c_enum),
        ("src_vocab_size", ctypes.c_int32),
        ("tgt_vocab_size", ctypes.c_int32),
        ("hidden_size", ctypes.c_int32),
        ("ffn_size", ctypes.c_int32),
        ("num_heads", ctypes.c_int32),
        ("encoder_layers", ctypes.c_int32),
        ("decoder_layers", ctypes.c_int32),
        ("pre_layer_norm", ctypes.c_int32),
        ("activation", c_enum),
        ("dropout", ctypes.c_float),
        ("attention_dropout", ctypes.c_float),
        ("activation_dropout", ctypes.c_float),
        ("layer_norm_eps", ctypes.c_float),
        ("padding_idx", ctypes.c_int32),
        ("share_all_embeddings", ctypes.c_int32),
        ("share_decoder_input_output_embed", ctypes.c_int32),
        ("scale_embedding", ctypes.c_int32),
        ("learned_positions", ctypes.c_int32),
        ("max_seq_len", ctypes.c_int32),
        ("max_batch_tokens", ctypes.c_int32),
        ("dtype", c_enum),
        ("label_smoothing", ctypes.c_float),
        ("eos_idx", ctypes.c_int32),
        ("recompute_layer_norm", ctypes.c_int32),
        ("layer_norm_backward_from_output", ctypes.c_int32),
    ]


class ls_memory_report(ctypes.Structure):
    _fields_ = [("struct_size", size_t)] + [
        (name, ctypes.c_uint64)
        for name in (
            "parameters",
            "working_copy",
            "gradients",
            "optimizer_state",
            "inputs",
            "workspace",
            "saved_activations",
            "temporaries",
            "planned_bytes",
            "lower_bound_bytes",
            "no_reuse_bytes",
            "persistent_bytes",
            "total_bytes",
            "num_parameters",
            "num_planned_buffers",
        )
    ]


class ls_parameter_info(ctypes.Structure):
    _fields_ = [
        ("struct_size", size_t),
        ("name", ctypes.c_char * 128),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * 4),
        ("numel", ctypes.c_int64),
    ]


class ls_batch(ctypes.Structure):
    _fields_ = [
        ("struct_size", size_t),
        ("batch_size", ctypes.c_int32),
        ("src_len", ctypes.c_int32),
        ("src_tokens", ctypes.POINTER(ctypes.c_int32)),
        ("tgt_len", ctypes.c_int32),
        ("prev_output_tokens", ctypes.POINTER(ctypes.c_int32)),
        ("target", ctypes.POINTER(ctypes.c_int32)),
        ("tokens_on_device", ctypes.c_int32),
    ]


class ls_eval_result(ctypes.Structure):
    _fields_ = [
        ("struct_size", size_t),
        ("loss", ctypes.c_double),
        ("nll", ctypes.c_double),
        ("tokens", ctypes.c_int64),
    ]


class ls_trainer_config(ctypes.Structure):
    _fields_ = [
        ("struct_size", size_t),
        ("optimizer", c_enum),
        ("lr", ctypes.c_float),
        ("beta1", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("eps", ctypes.c_float),
        ("weight_decay", ctypes.c_float),
        ("clip_norm", ctypes.c_float),
        ("lr_schedule", c_enum),
        ("warmup_updates", ctypes.c_int32),
        ("warmup_init_lr", ctypes.c_float),
        ("total_updates", ctypes.c_int64),
        ("min_lr", ctypes.c_float),
        ("update_freq", ctypes.c_int32),
        ("loss_scale_init", ctypes.c_float),
        ("loss_scale_growth", ctypes.c_float),
        ("loss_scale_backoff", ctypes.c_float),
        ("loss_scale_interval", ctypes.c_int32),
        ("loss_scale_min", ctypes.c_float),
        ("deterministic", ctypes.c_int32),
        ("cuda_graph", ctypes.c_int32),
    ]


class ls_step_result(ctypes.Structure):
    _fields_ = [
        ("struct_size", size_t),
        ("loss", ctypes.c_double),
        ("nll", ctypes.c_double),
        ("tokens", ctypes.c_int64),
        ("updated", ctypes.c_int32),
        ("overflow", ctypes.c_int32),
        ("grad_norm", ctypes.c_double),
        ("lr", ctypes.c_double),
        ("loss_scale", ctypes.c_double),
        ("num_updates", ctypes.c_int64),
    ]


# Each struct and the library function that fills it with defaults and struct_size.
INIT_FUNCTIONS = {
    ls_device_info: "ls_device_info_init",
    ls_context_options: "ls_context_options_init",
    ls_model_config: "ls_model_config_init",
    ls_memory_report: "ls_memory_report_init",
    ls_parameter_info: "ls_parameter_info_init",
    ls_batch: "ls_batch_init",
    ls_eval_result: "ls_eval_result_init",
    ls_trainer_config: "ls_trainer_config_init",
    ls_step_result: "ls_step_result_init",
}

# ------------------------------------------------------------------ functions


class MissingFunction:
    """Stands in for a function the loaded library does not export (an older build, or a part
    not implemented yet): calling it raises LsError(LS_ERR_UNSUPPORTED)."""

    def __init__(self, name):
        self.name = name

    def __call__(self, *args):
        from . import LsError  # late: __init__ imports this module first

        raise LsError(
            "LS_ERR_UNSUPPORTED",
            "%s is not exported by %s (the library is older than these bindings)"
            % (self.name, library_path),
        )


P = ctypes.POINTER
c_char_p = ctypes.c_char_p
c_void_p = ctypes.c_void_p

# name: (restype, argtypes)
_PROTOTYPES = {
    "ls_status_string": (c_char_p, [ls_status]),
    "ls_last_error": (c_char_p, []),
    "ls_abi_version": (ctypes.c_uint32, []),
    "ls_version_string": (c_char_p, []),
    "ls_backends": (ctypes.c_uint32, []),
    "ls_device_info_init": (None, [P(ls_device_info)]),
    "ls_cuda_device_count": (ls_status, [P(ctypes.c_int32)]),
    "ls_cuda_device_info": (ls_status, [ctypes.c_int32, P(ls_device_info)]),
    "ls_context_options_init": (None, [P(ls_context_options)]),
    "ls_context_create": (ls_status, [P(ls_context_options), P(c_void_p)]),
    "ls_context_destroy": (None, [c_void_p]),
    "ls_context_device": (ls_status, [c_void_p, P(ls_device_info)]),
    "ls_context_synchronize": (ls_status, [c_void_p]),
    "ls_model_config_init": (None, [P(ls_model_config)]),
    "ls_model_config_preset": (ls_status, [c_char_p, P(ls_model_config)]),
    "ls_memory_report_init": (None, [P(ls_memory_report)]),
    "ls_plan_memory": (ls_status, [P(ls_model_config), c_enum, P(ls_memory_report)]),
    "ls_model_create": (ls_status, [c_void_p, P(ls_model_config), P(c_void_p)]),
    "ls_model_destroy": (None, [c_void_p]),
    "ls_model_get_config": (ls_status, [c_void_p, P(ls_model_config)]),
    "ls_model_memory_report": (ls_status, [c_void_p, P(ls_memory_report)]),
    "ls_parameter_info_init": (None, [P(ls_parameter_info)]),
    "ls_model_num_parameters": (ls_status, [c_void_p, P(ctypes.c_int64)]),
    "ls_model_parameter_info": (ls_status, [c_void_p, ctypes.c_int64, P(ls_parameter_info)]),
    "ls_model_get_parameter": (
        ls_status,
        [c_void_p, c_char_p, P(ctypes.c_float), ctypes.c_int64],
    ),
    "ls_model_set_parameter": (
        ls_status,
        [c_void_p, c_char_p, P(ctypes.c_float), ctypes.c_int64],
    ),
    "ls_batch_init": (None, [P(ls_batch)]),
    "ls_eval_result_init": (None, [P(ls_eval_result)]),
    "ls_model_evaluate": (ls_status, [c_void_p, P(ls_batch), P(ls_eval_result)]),
    "ls_model_generate": (
        ls_status,
        [
            c_void_p,
            P(ctypes.c_int32),
            ctypes.c_int32,
            ctypes.c_int32,
            ctypes.c_int32,
            P(ctypes.c_int32),
            P(ctypes.c_int32),
        ],
    ),
    "ls_trainer_config_init": (None, [P(ls_trainer_config)]),
    "ls_step_result_init": (None, [P(ls_step_result)]),
    "ls_trainer_create": (ls_status, [c_void_p, P(ls_trainer_config), P(c_void_p)]),
    "ls_trainer_destroy": (None, [c_void_p]),
    "ls_trainer_step": (ls_status, [c_void_p, P(ls_batch), P(ls_step_result)]),
    "ls_trainer_save": (ls_status, [c_void_p, c_char_p]),
    "ls_trainer_load": (ls_status, [c_void_p, c_char_p]),
}


class _Functions:
    """The C functions as attributes: capi.fn.ls_context_create(...)."""


# Present in every ls_train library since ABI 0: without them this is not ls_train at all.
_REQUIRED = ("ls_status_string", "ls_last_error", "ls_abi_version", "ls_version_string")

fn = _Functions()
for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    try:
        _f = getattr(lib, _name)
    except AttributeError:
        if _name in _REQUIRED:
            raise ImportError(
                "ls_train: %s does not export %s; it is not libls_train" % (library_path, _name)
            ) from None
        setattr(fn, _name, MissingFunction(_name))
        continue
    _f.restype = _restype
    _f.argtypes = _argtypes
    setattr(fn, _name, _f)


def has_function(name):
    return not isinstance(getattr(fn, name), MissingFunction)


def new(struct_type):
    """A struct filled with the library's defaults (and the right struct_size)."""
    s = struct_type()
    getattr(fn, INIT_FUNCTIONS[struct_type])(ctypes.byref(s))
    return s
