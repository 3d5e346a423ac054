"""Loading the library, versions, backends, devices and the error mapping."""

import os
import re
import subprocess
import sys

import pytest

import ls_train
from conftest import REPO


def test_import_names_the_loaded_library():
    assert os.path.exists(ls_train.library_path)
    if "LS_TRAIN_LIBRARY" in os.environ:
        assert ls_train.library_path == os.environ["LS_TRAIN_LIBRARY"]
    else:
        assert "ls_train" in os.path.basename(ls_train.library_path)


def test_missing_library_gives_a_clear_import_error():
    env = dict(os.environ, LS_TRAIN_LIBRARY="/nonexistent/libls_train.so")
    env["PYTHONPATH"] = os.path.join(REPO, "bindings", "python")
    proc = subprocess.run(
        [sys.executable, "-c", "import ls_train"], env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "LS_TRAIN_LIBRARY" in proc.stderr


def test_version_and_abi():
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", ls_train.version())
    assert ls_train.abi_version() == 0 == ls_train.ABI_VERSION


def test_backends_always_include_cpu():
    names = ls_train.backends()
    assert "cpu" in names
    assert set(names) <= {"cpu", "cuda", "nccl", "cblas"}


def test_cuda_devices_match_the_backend():
    devices = ls_train.cuda_devices()
    if "cuda" not in ls_train.backends():
        assert devices == []
    for i, d in enumerate(devices):
        assert d["kind"] == "cuda" and d["index"] == i
        assert d["total_memory"] > 0 and d["name"]


def test_cpu_context_reports_the_cpu():
    with ls_train.Context(device="cpu", seed=7) as ctx:
        d = ctx.device
        assert d["kind"] == "cpu"
        assert d["index"] == 0
        assert d["name"]
        ctx.synchronize()
    assert ctx.closed
    with pytest.raises(ValueError):
        ctx.device


def test_auto_context_falls_back_to_the_cpu_without_a_gpu():
    with ls_train.Context() as ctx:
        expected = "cuda" if ls_train.cuda_devices() else "cpu"
        assert ctx.device["kind"] == expected


def test_absent_gpu_raises_ls_error_with_status_and_message():
    with pytest.raises(ls_train.LsError) as info:
        ls_train.Context(device="cuda:99")
    err = info.value
    assert err.status in ("LS_ERR_UNSUPPORTED", "LS_ERR_INVALID_ARGUMENT")
    assert err.code in (1, 3)
    assert "ls_context_create" in err.message
    assert err.status in str(err)


def test_malformed_device_string_is_a_value_error():
    for bad in ("gpu", "cuda:", "cuda:-1", "cuda:x", 3):
        with pytest.raises(ValueError):
            ls_train.Context(device=bad)


def test_close_is_idempotent():
    ctx = ls_train.Context(device="cpu")
    ctx.close()
    ctx.close()
    assert ctx.closed
