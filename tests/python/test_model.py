"""Model configuration presets, memory planning, and a tiny CPU model: parameters by name,
get/set, evaluate and generate."""

import numpy as np
import pytest

import ls_train

# fairseq's dictionary: bos 0, pad 1, eos 2, unk 3; real tokens from 4.
PAD, EOS = 1, 2
VOCAB = 16


def tiny_config(**overrides):
    fields = dict(
        src_vocab_size=VOCAB,
        tgt_vocab_size=VOCAB,
        hidden_size=32,
        ffn_size=64,
        num_heads=4,
        encoder_layers=1,
        decoder_layers=1,
        max_seq_len=16,
        max_batch_tokens=64,
        dropout=0.0,
    )
    fields.update(overrides)
    return ls_train.ModelConfig.preset("transformer-tiny", **fields)


def fixed_batch(seed=0, batch=4, length=6):
    """src, prev_output ([eos] + target[:-1]) and target, every row ending in eos."""
    rng = np.random.default_rng(seed)
    src = rng.integers(4, VOCAB, size=(batch, length), dtype=np.int32)
    src[:, -1] = EOS
    target = rng.integers(4, VOCAB, size=(batch, length), dtype=np.int32)
    target[:, -1] = EOS
    prev = np.concatenate([np.full((batch, 1), EOS, np.int32), target[:, :-1]], axis=1)
    return src, prev, target


@pytest.fixture
def ctx():
    with ls_train.Context(device="cpu", seed=1) as c:
        yield c


def test_presets_fill_the_documented_shapes():
    base = ls_train.ModelConfig.preset("transformer-base")
    assert (base.hidden_size, base.ffn_size, base.num_heads) == (512, 2048, 8)
    assert (base.encoder_layers, base.decoder_layers) == (6, 6)
    assert base.tgt_vocab_size == 32768
    gpt = ls_train.ModelConfig.preset("gpt2-small")
    assert gpt.arch == "decoder-only" and gpt.activation == "gelu"
    assert (gpt.hidden_size, gpt.decoder_layers, gpt.tgt_vocab_size) == (768, 12, 50304)
    assert gpt.learned_positions == 1 and gpt.pre_layer_norm == 1
    with pytest.raises(ls_train.LsError) as info:
        ls_train.ModelConfig.preset("no-such-preset")
    assert info.value.status == "LS_ERR_INVALID_ARGUMENT"


def test_plan_memory_transformer_base_reuses_memory():
    r = ls_train.plan_memory("transformer-base", device="cpu")
    assert r["num_parameters"] > 0 and r["num_planned_buffers"] > 0
    assert 0 < r["lower_bound_bytes"] <= r["planned_bytes"] <= r["no_reuse_bytes"]
    # Reuse must pay: the activations of 6+6 layers are never all alive at once.
    assert r["planned_bytes"] < r["no_reuse_bytes"]
    assert r["total_bytes"] == r["persistent_bytes"] + r["planned_bytes"]
    assert r["parameters"] >= 4 * r["num_parameters"]  # fp32 master weights
    assert r["working_copy"] == 0  # fp32: no separate working copy


def test_plan_memory_grows_with_batch_tokens():
    small = ls_train.plan_memory(tiny_config(max_batch_tokens=64), device="cpu")
    large = ls_train.plan_memory(tiny_config(max_batch_tokens=128), device="cpu")
    assert large["planned_bytes"] > small["planned_bytes"]
    assert large["parameters"] == small["parameters"]


def test_plan_memory_predicts_the_model_report(ctx):
    config = tiny_config()
    planned = ls_train.plan_memory(config, device="cpu")
    with ls_train.Model(ctx, config) as model:
        actual = model.memory_report()
    for key in ("num_parameters", "parameters", "gradients", "planned_bytes", "total_bytes"):
        assert actual[key] == planned[key], key


def test_model_reports_its_config(ctx):
    config = tiny_config()
    with ls_train.Model(ctx, config) as model:
        got = model.config
    assert got.hidden_size == 32 and got.ffn_size == 64
    assert got.encoder_layers == 1 and got.tgt_vocab_size == VOCAB


def test_parameters_have_fairseq_names_and_shapes(ctx):
    with ls_train.Model(ctx, tiny_config(share_all_embeddings=0)) as model:
        shapes = model.parameters()
        report = model.memory_report()
    assert shapes["encoder.layers.0.fc1.weight"] == (64, 32)
    assert shapes["encoder.layers.0.self_attn.in_proj_weight"] == (96, 32)
    assert shapes["decoder.layers.0.encoder_attn.out_proj.weight"] == (32, 32)
    assert shapes["encoder.embed_tokens.weight"] == (VOCAB, 32)
    assert shapes["decoder.embed_tokens.weight"] == (VOCAB, 32)
    assert sum(int(np.prod(s)) for s in shapes.values()) == report["num_parameters"]


def test_tied_embeddings_appear_once_under_their_first_name(ctx):
    with ls_train.Model(ctx, tiny_config(share_all_embeddings=1)) as model:
        shapes = model.parameters()
        report = model.memory_report()
    assert shapes["encoder.embed_tokens.weight"] == (VOCAB, 32)
    assert "decoder.embed_tokens.weight" not in shapes
    assert sum(int(np.prod(s)) for s in shapes.values()) == report["num_parameters"]


def test_get_set_round_trip(ctx):
    rng = np.random.default_rng(3)
    with ls_train.Model(ctx, tiny_config()) as model:
        name = "encoder.layers.0.fc1.weight"
        before = model.get(name)
        assert before.dtype == np.float32 and before.shape == (64, 32)
        assert np.all(np.isfinite(before)) and np.any(before != 0)  # Xavier-initialised
        value = rng.standard_normal((64, 32)).astype(np.float32)
        model.set(name, value)
        np.testing.assert_array_equal(model.get(name), value)  # fp32 master: exact
        other = "encoder.layers.0.fc2.weight"
        assert not np.array_equal(model.get(other), value.T)  # only the named tensor changed
        with pytest.raises(ValueError):
            model.set(name, value.T)
        with pytest.raises(KeyError):
            model.get("no.such.weight")


def test_embedding_padding_row_is_zero(ctx):
    with ls_train.Model(ctx, tiny_config()) as model:
        table = model.get("encoder.embed_tokens.weight")
    assert np.all(table[PAD] == 0)
    assert np.any(table[PAD + 1] != 0)


def test_evaluate_counts_target_tokens(ctx):
    src, prev, target = fixed_batch()
    target[0, -2:] = PAD  # two padding positions are not counted
    prev[0, -1] = PAD
    with ls_train.Model(ctx, tiny_config()) as model:
        r = model.evaluate(src, prev, target)
        again = model.evaluate(src, prev, target)
    assert r["tokens"] == target.size - 2
    assert r["loss"] > 0 and r["nll"] > 0 and np.isfinite(r["loss"])
    assert again == r  # no dropout, no state: the same numbers


def test_evaluate_refuses_out_of_range_ids(ctx):
    src, prev, target = fixed_batch()
    target[1, 1] = VOCAB
    with ls_train.Model(ctx, tiny_config()) as model:
        with pytest.raises(ls_train.LsError) as info:
            model.evaluate(src, prev, target)
    assert info.value.status == "LS_ERR_INVALID_ARGUMENT"


def test_batch_shapes_are_checked_before_the_call(ctx):
    src, prev, target = fixed_batch()
    with ls_train.Model(ctx, tiny_config()) as model:
        with pytest.raises(ValueError):
            model.evaluate(src, prev[:, :-1], target)
        with pytest.raises(ValueError):
            model.evaluate(src[:2], prev, target)
        with pytest.raises(TypeError):
            model.evaluate(src, prev.astype(np.float32), target)


def test_generate_shapes(ctx):
    src, _, _ = fixed_batch()
    with ls_train.Model(ctx, tiny_config()) as model:
        tokens, lengths = model.generate(src, max_len=5)
    assert tokens.shape == (4, 5) and lengths.shape == (4,)
    assert np.all((lengths >= 1) & (lengths <= 5))
    assert np.all((tokens >= 0) & (tokens < VOCAB))
    for row, n in zip(tokens, lengths):
        assert np.all(row[n:] == PAD)


def test_closing_the_context_closes_its_models():
    ctx = ls_train.Context(device="cpu")
    model = ls_train.Model(ctx, tiny_config())
    ctx.close()
    assert model.closed
    with pytest.raises(ValueError):
        model.parameters()


def test_recompute_layer_norm_round_trips_and_shrinks_the_plan(ctx):
    on = tiny_config()  # pre-LN
    assert on.recompute_layer_norm == 1  # the default
    off = on.replace(recompute_layer_norm=0)
    r_off = ls_train.plan_memory(off, device="cpu")
    r_on = ls_train.plan_memory(on, device="cpu")
    assert r_on["saved_activations"] < r_off["saved_activations"]
    with ls_train.Model(ctx, on) as model:
        assert model.config.recompute_layer_norm == 1
    with ls_train.Model(ctx, off) as model:
        assert model.config.recompute_layer_norm == 0
    # Post-LN ignores it.
    post = tiny_config(pre_layer_norm=0)
    assert ls_train.plan_memory(post.replace(recompute_layer_norm=0), device="cpu") == (
        ls_train.plan_memory(post, device="cpu")
    )


@pytest.mark.parametrize("pre_layer_norm", [1, 0], ids=["pre-LN", "post-LN"])
def test_layer_norm_backward_from_output_round_trips_and_shrinks_the_plan(ctx, pre_layer_norm):
    off = tiny_config(pre_layer_norm=pre_layer_norm)
    assert off.layer_norm_backward_from_output == 0  # the default
    on = off.replace(layer_norm_backward_from_output=1)
    r_off = ls_train.plan_memory(off, device="cpu")
    r_on = ls_train.plan_memory(on, device="cpu")
    # Unlike recompute_layer_norm, post-LN plans shrink too: no LayerNorm input is kept.
    assert r_on["saved_activations"] < r_off["saved_activations"]
    assert r_on["planned_bytes"] < r_off["planned_bytes"]
    with ls_train.Model(ctx, on) as model:
        assert model.config.layer_norm_backward_from_output == 1
        assert model.config.recompute_layer_norm == 1  # as given; ignored (see below)


def test_layer_norm_backward_from_output_is_validated(ctx):
    # With recompute_layer_norm on (the default) it wins: the same plan as with it off.
    both = tiny_config(recompute_layer_norm=1, layer_norm_backward_from_output=1)
    alone = both.replace(recompute_layer_norm=0)
    assert ls_train.plan_memory(both, device="cpu") == ls_train.plan_memory(alone, device="cpu")
    with ls_train.Model(ctx, both) as model:
        assert model.config.layer_norm_backward_from_output == 1
    with pytest.raises(ls_train.LsError) as info:
        ls_train.plan_memory(tiny_config(layer_norm_backward_from_output=2), device="cpu")
    assert info.value.status == "LS_ERR_INVALID_ARGUMENT"
    assert "layer_norm_backward_from_output" in info.value.message
