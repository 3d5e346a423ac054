"""ls_train: Python bindings (ctypes) for libls_train, a mixed-precision Transformer training
runtime.

    import numpy as np, ls_train
    with ls_train.Context(device="cpu", seed=1) as ctx:
        config = ls_train.ModelConfig.preset("transformer-tiny", src_vocab_size=64, tgt_vocab_size=64)
        model = ls_train.Model(ctx, config)
        trainer = ls_train.Trainer(model, lr=1e-3, lr_schedule="constant")
        result = trainer.step(src, prev_output, target)   # int32 arrays [batch, len]

The library is found through the environment variable LS_TRAIN_LIBRARY (a path to
libls_train.so), else next to this package, else where the dynamic loader looks.
Every failed call raises LsError, carrying the status name and the library's message.
Objects are closed explicitly (close() or `with`), or when garbage collected; closing a context
closes its models, and closing a model closes its trainers.
"""

import ctypes
import os
import weakref

import numpy as np

from . import _capi
from ._capi import fn, new

__all__ = [
    "LsError",
    "version",
    "abi_version",
    "backends",
    "cuda_devices",
    "Context",
    "ModelConfig",
    "plan_memory",
    "Model",
    "Trainer",
    "library_path",
]

library_path = _capi.library_path

# The ABI these bindings mirror (LS_TRAIN_ABI_VERSION in ls_train.h).
ABI_VERSION = 0
if fn.ls_abi_version() != ABI_VERSION:
    raise ImportError(
        "ls_train: %s has ABI version %d, these bindings were written for ABI %d"
        % (library_path, fn.ls_abi_version(), ABI_VERSION)
    )


class LsError(Exception):
    """A failed ls_* call. `status` is the status name (e.g. "LS_ERR_INVALID_ARGUMENT"),
    `code` its number, `message` the library's message (ls_last_error)."""

    def __init__(self, status, message):
        if isinstance(status, int):
            self.code = status
            self.status = _capi.STATUS_NAMES.get(status, "LS_ERR_UNKNOWN")
        else:
            self.status = status
            self.code = getattr(_capi, status, -1)
        self.message = message
        super().__init__("%s: %s" % (self.status, message))


def _check(code):
    if code != _capi.LS_OK:
        raise LsError(code, fn.ls_last_error().decode("utf-8", "replace"))


# ------------------------------------------------------------------ library information


def version():
    """The library version string, e.g. "0.1.0"."""
    return fn.ls_version_string().decode()


def abi_version():
    """The ABI version of the loaded library (the soname's major number)."""
    return int(fn.ls_abi_version())


def backends():
    """Backends compiled into the library: a list from "cpu", "cuda", "nccl", "cblas"."""
    mask = fn.ls_backends()
    names = [("cpu", 1), ("cuda", 2), ("nccl", 4), ("cblas", 8)]
    return [name for name, bit in names if mask & bit]


def _device_dict(info):
    return {
        "kind": "cuda" if info.kind == _capi.LS_DEVICE_CUDA else "cpu",
        "index": info.index,
        "name": info.name.decode("utf-8", "replace"),
        "total_memory": info.total_memory,
        "free_memory": info.free_memory,
        "compute_capability": (info.compute_capability_major, info.compute_capability_minor),
        "multiprocessors": info.multiprocessors,
    }


def cuda_devices():
    """The usable CUDA devices, as dicts; empty without a GPU or without the CUDA backend."""
    count = ctypes.c_int32(0)
    _check(fn.ls_cuda_device_count(ctypes.byref(count)))
    devices = []
    for i in range(count.value):
        info = new(_capi.ls_device_info)
        _check(fn.ls_cuda_device_info(i, ctypes.byref(info)))
        devices.append(_device_dict(info))
    return devices


# ------------------------------------------------------------------ struct <-> Python helpers

# Enum fields accept these names as well as their integer values.
_ENUMS = {
    "arch": {"encoder-decoder": 0, "decoder-only": 1},
    "activation": {"relu": 0, "gelu": 1},
    "dtype": {"fp32": 0, "fp16": 1, "bf16": 2, "fp64": 3},
    "optimizer": {"adam": 0, "adamw": 1},
    "lr_schedule": {"constant": 0, "inverse_sqrt": 1, "linear": 2, "cosine": 3},
}


def _field_names(struct):
    return [name for name, _ in struct._fields_ if name != "struct_size"]


def _set_fields(struct, values, what):
    names = _field_names(struct)
    for key, value in values.items():
        if key not in names:
            raise TypeError("%s has no field %r (fields: %s)" % (what, key, ", ".join(names)))
        if key in _ENUMS and isinstance(value, str):
            table = _ENUMS[key]
            if value not in table:
                raise ValueError(
                    "%s.%s: %r is not one of %s" % (what, key, value, ", ".join(table))
                )
            value = table[value]
        setattr(struct, key, value)


def _enum_name(field, value):
    for name, v in _ENUMS[field].items():
        if v == value:
            return name
    return value


def _struct_dict(struct, enum_names=True):
    out = {}
    for name in _field_names(struct):
        value = getattr(struct, name)
        if enum_names and name in _ENUMS:
            value = _enum_name(name, value)
        out[name] = value
    return out


def _parse_device(device):
    """ "auto", "cpu", "cuda" or "cuda:N" -> (kind, index)."""
    if device == "auto":
        return _capi.LS_DEVICE_AUTO, 0
    if device == "cpu":
        return _capi.LS_DEVICE_CPU, 0
    if device == "cuda":
        return _capi.LS_DEVICE_CUDA, 0
    if isinstance(device, str) and device.startswith("cuda:"):
        try:
            index = int(device[5:])
        except ValueError:
            index = -1
        if index >= 0:
            return _capi.LS_DEVICE_CUDA, index
    raise ValueError('device must be "auto", "cpu", "cuda" or "cuda:N", got %r' % (device,))


# ------------------------------------------------------------------ context


class _Handle:
    """An owned C handle with close(), `with` support and children closed first."""

    _destroy = None  # name of the ls_X_destroy function

    def __init__(self):
        self._handle = None
        self._children = weakref.WeakSet()

    @property
    def closed(self):
        return self._handle is None

    def _require_open(self):
        if self._handle is None:
            raise ValueError("%s is closed" % type(self).__name__)
        return self._handle

    def close(self):
        """Destroys the C object (and every object created from it first). Idempotent."""
        for child in list(self._children):
            child.close()
        if self._handle is not None:
            getattr(fn, self._destroy)(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Context(_Handle):
    """A device, its stream and library handles, and the random seed.

    device: "auto" (the first GPU, else the CPU), "cpu", "cuda" or "cuda:N".
    stream: an optional cudaStream_t (as an int) to run on instead of the context's own.
    allow_tf32: fp32 models may run their GEMMs on TF32 tensor cores (GPU only).
    gemm_autotune: time cuBLASLt's candidate algorithms on the first use of each GEMM shape and
        keep the fastest (GPU only); results may then differ in rounding between processes.
    """

    _destroy = "ls_context_destroy"

    def __init__(self, device="auto", seed=1, stream=None, allow_tf32=True, gemm_autotune=False):
        super().__init__()
        kind, index = _parse_device(device)
        options = new(_capi.ls_context_options)
        options.device = kind
        options.device_index = index
        options.seed = seed
        options.stream = stream
        options.allow_tf32 = 1 if allow_tf32 else 0
        options.gemm_autotune = 1 if gemm_autotune else 0
        handle = ctypes.c_void_p()
        _check(fn.ls_context_create(ctypes.byref(options), ctypes.byref(handle)))
        self._handle = handle.value

    @property
    def device(self):
        """The device this context runs on, as a dict (kind, index, name, memory, ...)."""
        info = new(_capi.ls_device_info)
        _check(fn.ls_context_device(self._require_open(), ctypes.byref(info)))
        return _device_dict(info)

    def synchronize(self):
        _check(fn.ls_context_synchronize(self._require_open()))

    def __repr__(self):
        if self.closed:
            return "Context(closed)"
        d = self.device
        where = "cpu" if d["kind"] == "cpu" else "cuda:%d" % d["index"]
        return "Context(device=%r, name=%r)" % (where, d["name"])


# ------------------------------------------------------------------ model configuration


class ModelConfig:
    """A Transformer configuration: the fields of ls_model_config as attributes, starting from
    the library's defaults. Enum fields take names ("encoder-decoder"/"decoder-only",
    "relu"/"gelu", "fp32"/"fp16"/"bf16"/"fp64") or their numbers.

        ModelConfig(hidden_size=256, num_heads=4)
        ModelConfig.preset("transformer-base", dtype="fp16", max_batch_tokens=8192)
    """

    def __init__(self, **fields):
        object.__setattr__(self, "_struct", new(_capi.ls_model_config))
        _set_fields(self._struct, fields, "ModelConfig")

    @classmethod
    def preset(cls, name, **overrides):
        """A named preset: "transformer-base", "transformer-big", "gpt2-small",
        "transformer-tiny"; then `overrides` applied."""
        config = cls()
        _check(fn.ls_model_config_preset(name.encode(), ctypes.byref(config._struct)))
        _set_fields(config._struct, overrides, "ModelConfig")
        return config

    @classmethod
    def _from_struct(cls, struct):
        config = cls.__new__(cls)
        object.__setattr__(config, "_struct", struct)
        return config

    def __getattr__(self, name):
        struct = object.__getattribute__(self, "_struct")
        if name in _field_names(struct):
            value = getattr(struct, name)
            return _enum_name(name, value) if name in _ENUMS else value
        raise AttributeError("ModelConfig has no field %r" % name)

    def __setattr__(self, name, value):
        _set_fields(self._struct, {name: value}, "ModelConfig")

    def replace(self, **fields):
        """A copy with some fields changed."""
        copy = ModelConfig._from_struct(_capi.ls_model_config.from_buffer_copy(self._struct))
        _set_fields(copy._struct, fields, "ModelConfig")
        return copy

    def to_dict(self):
        return _struct_dict(self._struct)

    def __eq__(self, other):
        return isinstance(other, ModelConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return "ModelConfig(%s)" % ", ".join("%s=%r" % kv for kv in self.to_dict().items())


def _as_config(config):
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, str):
        return ModelConfig.preset(config)
    if isinstance(config, dict):
        return ModelConfig(**config)
    raise TypeError("config must be a ModelConfig, a preset name or a dict of fields")


def plan_memory(config, device="auto"):
    """The training memory of a model with this config, planned without allocating anything:
    a dict of byte counts (parameters, gradients, ..., planned_bytes, lower_bound_bytes,
    no_reuse_bytes, total_bytes) plus num_parameters and num_planned_buffers.
    device: "auto" (CUDA if built), "cpu" or "cuda" -- whose workspaces are counted."""
    config = _as_config(config)
    kind, _ = _parse_device(device)
    report = new(_capi.ls_memory_report)
    _check(fn.ls_plan_memory(ctypes.byref(config._struct), kind, ctypes.byref(report)))
    return _struct_dict(report)


# ------------------------------------------------------------------ batches


def _is_torch_tensor(x):
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


class _Batch:
    """An ls_batch over borrowed token arrays, kept alive as long as this object."""

    def __init__(self, src, prev_output, target):
        if prev_output is None or target is None:
            raise ValueError("prev_output and target are required")
        arrays = [a for a in (src, prev_output, target) if a is not None]
        if any(_is_torch_tensor(a) for a in arrays):
            self._keep, on_device = self._from_torch(arrays)
        else:
            self._keep, on_device = [self._from_numpy(a) for a in arrays], False
        if src is None:
            src_arr, prev_arr, tgt_arr = None, self._keep[0], self._keep[1]
        else:
            src_arr, prev_arr, tgt_arr = self._keep
        if tuple(prev_arr.shape) != tuple(tgt_arr.shape):
            raise ValueError(
                "prev_output %s and target %s must have the same shape"
                % (tuple(prev_arr.shape), tuple(tgt_arr.shape))
            )
        batch_size = prev_arr.shape[0]
        if src_arr is not None and src_arr.shape[0] != batch_size:
            raise ValueError(
                "src has %d rows but target has %d" % (src_arr.shape[0], batch_size)
            )
        b = new(_capi.ls_batch)
        b.batch_size = batch_size
        b.tgt_len = prev_arr.shape[1]
        b.prev_output_tokens = self._pointer(prev_arr)
        b.target = self._pointer(tgt_arr)
        if src_arr is not None:
            b.src_len = src_arr.shape[1]
            b.src_tokens = self._pointer(src_arr)
        b.tokens_on_device = 1 if on_device else 0
        self.struct = b

    @staticmethod
    def _from_numpy(a):
        a = np.asarray(a)
        if a.ndim != 2:
            raise ValueError("token arrays are 2-D [batch, length], got shape %s" % (a.shape,))
        if a.dtype != np.int32:
            if not np.issubdtype(a.dtype, np.integer):
                raise TypeError("token arrays must hold integers, got %s" % a.dtype)
            if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
                raise ValueError("token ids do not fit in int32")
            a = a.astype(np.int32)
        return np.ascontiguousarray(a)

    @staticmethod
    def _from_torch(tensors):
        import torch

        devices = {str(t.device) for t in tensors}
        if len(devices) != 1:
            raise ValueError("token tensors are on different devices: %s" % sorted(devices))
        kept = []
        for t in tensors:
            if not _is_torch_tensor(t):
                raise TypeError("mix of torch tensors and other arrays")
            if t.dim() != 2:
                raise ValueError("token tensors are 2-D [batch, length], got %s" % (tuple(t.shape),))
            if t.dtype != torch.int32:
                raise TypeError("token tensors must be torch.int32, got %s" % t.dtype)
            kept.append(t.contiguous())
        on_device = kept[0].is_cuda
        return kept, on_device

    @staticmethod
    def _pointer(a):
        address = a.data_ptr() if _is_torch_tensor(a) else a.ctypes.data
        return ctypes.cast(ctypes.c_void_p(address), ctypes.POINTER(ctypes.c_int32))


# ------------------------------------------------------------------ model


class Model(_Handle):
    """A Transformer with its whole memory (parameters, gradients, optimizer state, activations)
    allocated once. `config`: a ModelConfig, a preset name, or a dict of fields. The model keeps
    its context alive; closing the context closes the model."""

    _destroy = "ls_model_destroy"

    def __init__(self, context, config):
        super().__init__()
        config = _as_config(config)
        handle = ctypes.c_void_p()
        _check(
            fn.ls_model_create(
                context._require_open(), ctypes.byref(config._struct), ctypes.byref(handle)
            )
        )
        self._handle = handle.value
        self.context = context
        context._children.add(self)

    @property
    def config(self):
        """The configuration the model was created with (defaults filled in)."""
        struct = new(_capi.ls_model_config)
        _check(fn.ls_model_get_config(self._require_open(), ctypes.byref(struct)))
        return ModelConfig._from_struct(struct)

    def memory_report(self):
        """The model's memory, in bytes by category (see plan_memory)."""
        report = new(_capi.ls_memory_report)
        _check(fn.ls_model_memory_report(self._require_open(), ctypes.byref(report)))
        return _struct_dict(report)

    def parameters(self):
        """Parameter names (PyTorch/fairseq style) and shapes, in the library's order."""
        handle = self._require_open()
        count = ctypes.c_int64(0)
        _check(fn.ls_model_num_parameters(handle, ctypes.byref(count)))
        out = {}
        for i in range(count.value):
            info = new(_capi.ls_parameter_info)
            _check(fn.ls_model_parameter_info(handle, i, ctypes.byref(info)))
            out[info.name.decode()] = tuple(int(info.shape[d]) for d in range(info.ndim))
        return out

    def _shape(self, name):
        shapes = self.parameters()
        if name not in shapes:
            raise KeyError("model has no parameter %r" % name)
        return shapes[name]

    def get(self, name):
        """A copy of a parameter as a float32 numpy array of its shape."""
        shape = self._shape(name)
        out = np.empty(shape, dtype=np.float32)
        _check(
            fn.ls_model_get_parameter(
                self._require_open(),
                name.encode(),
                out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                out.size,
            )
        )
        return out

    def set(self, name, value):
        """Sets a parameter (master and working copy) from an array of exactly its shape."""
        shape = self._shape(name)
        value = np.ascontiguousarray(value, dtype=np.float32)
        if value.shape != shape:
            raise ValueError("parameter %r has shape %s, got %s" % (name, shape, value.shape))
        _check(
            fn.ls_model_set_parameter(
                self._require_open(),
                name.encode(),
                value.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                value.size,
            )
        )

    def state_dict(self):
        """Every parameter, name -> float32 array."""
        return {name: self.get(name) for name in self.parameters()}

    def evaluate(self, src, prev_output, target):
        """Forward only (no dropout, no gradient): dict(loss, nll, tokens), sums over the
        non-padding target tokens. src is None for decoder-only models."""
        batch = _Batch(src, prev_output, target)
        result = new(_capi.ls_eval_result)
        _check(
            fn.ls_model_evaluate(
                self._require_open(), ctypes.byref(batch.struct), ctypes.byref(result)
            )
        )
        return _struct_dict(result)

    def generate(self, src, max_len):
        """Greedy decoding. src: int32 [batch, src_len] (encoder-decoder: the source;
        decoder-only: the prompt). Returns (tokens int32 [batch, max_len] padded with
        padding_idx after eos, lengths int32 [batch])."""
        src = _Batch._from_numpy(src)
        batch_size, src_len = src.shape
        tokens = np.empty((batch_size, max_len), dtype=np.int32)
        lengths = np.empty((batch_size,), dtype=np.int32)
        i32p = ctypes.POINTER(ctypes.c_int32)
        _check(
            fn.ls_model_generate(
                self._require_open(),
                src.ctypes.data_as(i32p),
                batch_size,
                src_len,
                max_len,
                tokens.ctypes.data_as(i32p),
                lengths.ctypes.data_as(i32p),
            )
        )
        return tokens, lengths


# ------------------------------------------------------------------ trainer


class Trainer(_Handle):
    """Optimizer, learning-rate schedule and loss scaling for a model. Keyword arguments are
    fields of ls_trainer_config (lr, beta1, beta2, eps, weight_decay, clip_norm, lr_schedule,
    warmup_updates, ..., optimizer="adam"|"adamw", lr_schedule="constant"|"inverse_sqrt"|
    "linear"|"cosine"); the rest keep the library's defaults."""

    _destroy = "ls_trainer_destroy"

    def __init__(self, model, **config):
        super().__init__()
        struct = new(_capi.ls_trainer_config)
        _set_fields(struct, config, "Trainer config")
        handle = ctypes.c_void_p()
        _check(
            fn.ls_trainer_create(model._require_open(), ctypes.byref(struct), ctypes.byref(handle))
        )
        self._handle = handle.value
        self.model = model
        self.config = _struct_dict(struct)
        model._children.add(self)

    def step(self, src, prev_output, target):
        """One micro-batch: forward, loss, backward, and every update_freq-th call the update.
        Token arrays: numpy (any integer dtype, converted to int32) or torch int32 tensors
        (CUDA tensors are passed as device pointers). src is None for decoder-only models.
        Returns a dict: loss, nll, tokens, updated, overflow, grad_norm, lr, loss_scale,
        num_updates."""
        batch = _Batch(src, prev_output, target)
        result = new(_capi.ls_step_result)
        _check(
            fn.ls_trainer_step(self._require_open(), ctypes.byref(batch.struct), ctypes.byref(result))
        )
        out = _struct_dict(result)
        out["updated"] = bool(out["updated"])
        out["overflow"] = bool(out["overflow"])
        return out

    def save(self, path):
        """Writes a checkpoint (parameters, optimizer and loss-scaler state, counters, RNG)."""
        _check(fn.ls_trainer_save(self._require_open(), _path_bytes(path)))

    def load(self, path):
        """Restores a checkpoint written by save() for a model of the same shape."""
        _check(fn.ls_trainer_load(self._require_open(), _path_bytes(path)))


def _path_bytes(path):
    return os.fsencode(path)
