"""Training a tiny CPU model on one fixed batch: the loss falls, the step result is coherent,
and a checkpoint restores the exact state."""

import numpy as np
import pytest

import ls_train
from test_model import EOS, PAD, VOCAB, fixed_batch, tiny_config


def make(ctx, **trainer_config):
    model = ls_train.Model(ctx, tiny_config(label_smoothing=0.0))
    config = dict(lr=3e-3, lr_schedule="constant", warmup_updates=0)
    config.update(trainer_config)
    return model, ls_train.Trainer(model, **config)


@pytest.fixture
def ctx():
    with ls_train.Context(device="cpu", seed=1) as c:
        yield c


def test_steps_reduce_the_loss_on_a_fixed_batch(ctx):
    src, prev, target = fixed_batch()
    model, trainer = make(ctx)
    losses = []
    for i in range(40):
        r = trainer.step(src, prev, target)
        assert r["tokens"] == target.size
        assert r["updated"] and not r["overflow"]
        assert r["num_updates"] == i + 1
        assert r["lr"] == pytest.approx(3e-3)
        assert r["loss_scale"] == 1.0  # fp32: no loss scaling
        assert np.isfinite(r["grad_norm"]) and r["grad_norm"] > 0
        losses.append(r["loss"] / r["tokens"])
    # 24 tokens, 16-way vocabulary, ~40k parameters: memorising the batch takes the per-token
    # loss from about ln(16) = 2.8 to well under half of it.
    assert losses[-1] < 0.5 * losses[0]
    after = model.evaluate(src, prev, target)
    assert after["loss"] / after["tokens"] < 0.5 * losses[0]


def test_step_loss_equals_evaluate_without_dropout(ctx):
    src, prev, target = fixed_batch()
    model, trainer = make(ctx)
    before = model.evaluate(src, prev, target)
    r = trainer.step(src, prev, target)
    # Same forward in fp32 with dropout 0; only the reduction order may differ.
    assert r["loss"] == pytest.approx(before["loss"], rel=1e-5)
    assert r["tokens"] == before["tokens"]


def test_update_freq_accumulates_before_updating(ctx):
    src, prev, target = fixed_batch()
    model, trainer = make(ctx, update_freq=2)
    first = trainer.step(src, prev, target)
    assert not first["updated"] and first["num_updates"] == 0
    second = trainer.step(src, prev, target)
    assert second["updated"] and second["num_updates"] == 1


def test_save_load_restores_parameters_and_trajectory(ctx, tmp_path):
    src, prev, target = fixed_batch()
    model, trainer = make(ctx)
    for _ in range(3):
        trainer.step(src, prev, target)
    path = tmp_path / "ckpt.lst"
    trainer.save(path)
    saved = model.state_dict()
    next_loss = trainer.step(src, prev, target)["loss"]
    trainer.step(src, prev, target)
    assert not np.array_equal(model.get("encoder.layers.0.fc1.weight"),
                              saved["encoder.layers.0.fc1.weight"])
    trainer.load(path)
    for name, value in saved.items():
        np.testing.assert_array_equal(model.get(name), value, err_msg=name)
    r = trainer.step(src, prev, target)
    assert r["num_updates"] == 4
    assert r["loss"] == next_loss  # bitwise on the CPU


def test_load_of_a_corrupt_file_leaves_the_trainer_as_it_was(ctx, tmp_path):
    src, prev, target = fixed_batch()
    model, trainer = make(ctx)
    trainer.step(src, prev, target)
    path = tmp_path / "ckpt.lst"
    trainer.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = model.state_dict()
    with pytest.raises(ls_train.LsError) as info:
        trainer.load(path)
    assert info.value.status == "LS_ERR_CORRUPT_DATA"
    for name, value in before.items():
        np.testing.assert_array_equal(model.get(name), value, err_msg=name)
    with pytest.raises(ls_train.LsError) as info:
        trainer.load(tmp_path / "missing.lst")
    assert info.value.status == "LS_ERR_IO"


def test_trainer_rejects_unknown_options(ctx):
    with ls_train.Model(ctx, tiny_config()) as model:
        with pytest.raises(TypeError):
            ls_train.Trainer(model, learning_rate=1.0)
        with pytest.raises(ValueError):
            ls_train.Trainer(model, optimizer="sgd")
