// The model/trainer part of the C API through the safe wrappers: configs, planning, a tiny CPU
// model's parameters, and training steps that reduce the loss.
use std::mem::size_of;

use ls_train::{
    plan_memory, sys, Batch, Context, Device, Model, ModelConfig, Status, Trainer, TrainerConfig,
};

const VOCAB: i32 = 16;
const EOS: i32 = 2;
const PAD: i32 = 1;

fn tiny_config() -> ModelConfig {
    let mut c = ModelConfig::preset("transformer-tiny").unwrap();
    c.src_vocab_size = VOCAB;
    c.tgt_vocab_size = VOCAB;
    c.hidden_size = 32;
    c.ffn_size = 64;
    c.num_heads = 4;
    c.encoder_layers = 1;
    c.decoder_layers = 1;
    c.max_seq_len = 16;
    c.max_batch_tokens = 64;
    c.dropout = 0.0;
    c.label_smoothing = 0.0;
    c
}

/// 4 rows of 6 tokens; ids from a fixed linear congruential sequence in [4, VOCAB), each row
/// ending in eos; prev_output = [eos] + target[:-1].
fn fixed_batch() -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let (rows, len) = (4usize, 6usize);
    let mut state = 12345u32;
    let mut next = || {
        state = state.wrapping_mul(1103515245).wrapping_add(12345);
        4 + ((state >> 16) % (VOCAB as u32 - 4)) as i32
    };
    let mut src = vec![0; rows * len];
    let mut target = vec![0; rows * len];
    let mut prev = vec![0; rows * len];
    for r in 0..rows {
        for t in 0..len {
            let last = t == len - 1;
            src[r * len + t] = if last { EOS } else { next() };
            target[r * len + t] = if last { EOS } else { next() };
        }
        prev[r * len] = EOS;
        for t in 1..len {
            prev[r * len + t] = target[r * len + t - 1];
        }
    }
    (src, prev, target)
}

#[test]
fn struct_sizes_match_the_library_model_part() {
    assert_eq!(
        ModelConfig::new().struct_size,
        size_of::<sys::ls_model_config>()
    );
    assert_eq!(
        TrainerConfig::new().struct_size,
        size_of::<sys::ls_trainer_config>()
    );
    let defaults = ModelConfig::new();
    assert_eq!(
        (
            defaults.max_seq_len,
            defaults.max_batch_tokens,
            defaults.padding_idx
        ),
        (256, 4096, 1)
    );
    let t = TrainerConfig::new();
    assert_eq!(
        (t.warmup_updates, t.update_freq, t.loss_scale_interval),
        (4000, 1, 2000)
    );
    assert_eq!(t.loss_scale_init, 65536.0);
}

#[test]
fn presets_and_plan_memory() {
    let base = ModelConfig::preset("transformer-base").unwrap();
    assert_eq!(
        (base.hidden_size, base.ffn_size, base.num_heads),
        (512, 2048, 8)
    );
    let err = ModelConfig::preset("no-such-preset").unwrap_err();
    assert_eq!(err.status, Status::INVALID_ARGUMENT);
    let r = plan_memory(&base, Device::Cpu).unwrap();
    assert!(r.lower_bound_bytes > 0);
    assert!(r.lower_bound_bytes <= r.planned_bytes && r.planned_bytes <= r.no_reuse_bytes);
    assert_eq!(r.total_bytes, r.persistent_bytes + r.planned_bytes);
}

#[test]
fn tiny_model_parameters_round_trip() {
    let ctx = Context::new(Device::Cpu, 1).unwrap();
    let mut model = Model::new(&ctx, &tiny_config()).unwrap();
    let params = model.parameters().unwrap();
    let fc1 = params
        .iter()
        .find(|p| p.name == "encoder.layers.0.fc1.weight")
        .unwrap();
    assert_eq!(fc1.shape, vec![64, 32]);
    let total: i64 = params.iter().map(|p| p.numel).sum();
    assert_eq!(total as u64, model.memory_report().unwrap().num_parameters);

    let values: Vec<f32> = (0..64 * 32).map(|i| (i as f32) * 1e-3 - 1.0).collect();
    model
        .set_parameter("encoder.layers.0.fc1.weight", &values)
        .unwrap();
    assert_eq!(
        model.get_parameter("encoder.layers.0.fc1.weight").unwrap(),
        values
    );
    let err = model
        .set_parameter("encoder.layers.0.fc1.weight", &values[1..])
        .unwrap_err();
    assert_eq!(err.status, Status::INVALID_ARGUMENT);
    assert!(model.get_parameter("no.such.weight").is_err());
    let embed = model.get_parameter("encoder.embed_tokens.weight").unwrap();
    assert!(embed[PAD as usize * 32..(PAD as usize + 1) * 32]
        .iter()
        .all(|&x| x == 0.0));
}

#[test]
fn trainer_steps_reduce_the_loss() {
    let ctx = Context::new(Device::Cpu, 1).unwrap();
    let mut model = Model::new(&ctx, &tiny_config()).unwrap();
    let mut tc = TrainerConfig::new();
    tc.lr = 3e-3;
    tc.lr_schedule = sys::LS_LR_CONSTANT;
    tc.warmup_updates = 0;
    let mut trainer = Trainer::new(&mut model, &tc).unwrap();
    let (src, prev, target) = fixed_batch();
    let batch = Batch {
        batch_size: 4,
        src_len: 6,
        src: &src,
        tgt_len: 6,
        prev_output: &prev,
        target: &target,
    };
    let mut first = 0.0;
    let mut last = 0.0;
    for i in 0..40 {
        let r = trainer.step(&batch).unwrap();
        assert_eq!(r.tokens, 24);
        assert_eq!(r.updated, 1);
        assert_eq!(r.num_updates, i + 1);
        let per_token = r.loss / r.tokens as f64;
        if i == 0 {
            first = per_token;
        }
        last = per_token;
    }
    // A 16-way vocabulary starts near ln(16) = 2.8 per token; memorising 24 tokens with ~40k
    // parameters takes it well under half of that.
    assert!(last < 0.5 * first, "first {first}, last {last}");
    let eval = trainer.model_mut().evaluate(&batch).unwrap();
    assert!(eval.loss / (eval.tokens as f64) < 0.5 * first);

    let short = Batch {
        target: &target[1..],
        ..batch
    };
    assert_eq!(
        trainer.step(&short).unwrap_err().status,
        Status::INVALID_ARGUMENT
    );
}

#[test]
fn checkpoint_save_load() {
    let ctx = Context::new(Device::Cpu, 1).unwrap();
    let mut model = Model::new(&ctx, &tiny_config()).unwrap();
    let mut tc = TrainerConfig::new();
    tc.lr_schedule = sys::LS_LR_CONSTANT;
    tc.warmup_updates = 0;
    let mut trainer = Trainer::new(&mut model, &tc).unwrap();
    let (src, prev, target) = fixed_batch();
    let batch = Batch {
        batch_size: 4,
        src_len: 6,
        src: &src,
        tgt_len: 6,
        prev_output: &prev,
        target: &target,
    };
    trainer.step(&batch).unwrap();
    let path = std::env::temp_dir().join(format!("ls_train_rust_{}.ckpt", std::process::id()));
    trainer.save(&path).unwrap();
    let saved = trainer
        .model()
        .get_parameter("encoder.layers.0.fc1.weight")
        .unwrap();
    let next = trainer.step(&batch).unwrap().loss;
    trainer.load(&path).unwrap();
    assert_eq!(
        trainer
            .model()
            .get_parameter("encoder.layers.0.fc1.weight")
            .unwrap(),
        saved
    );
    assert_eq!(trainer.step(&batch).unwrap().loss, next); // bitwise on the CPU
    let missing = trainer.load(&path.with_extension("missing")).unwrap_err();
    assert_eq!(missing.status, Status::IO);
    std::fs::remove_file(&path).ok();
}

#[test]
fn recompute_layer_norm_round_trips_and_shrinks_the_plan() {
    let defaults = ModelConfig::new();
    assert_eq!((defaults.eos_idx, defaults.recompute_layer_norm), (2, 1));
    let on = tiny_config(); // pre-LN, recompute_layer_norm on by default
    let mut off = on;
    off.recompute_layer_norm = 0;
    let r_off = plan_memory(&off, Device::Cpu).unwrap();
    let r_on = plan_memory(&on, Device::Cpu).unwrap();
    assert!(r_on.saved_activations < r_off.saved_activations);
    let ctx = Context::new(Device::Cpu, 1).unwrap();
    let model = Model::new(&ctx, &off).unwrap();
    assert_eq!(model.config().unwrap().recompute_layer_norm, 0);
    let model = Model::new(&ctx, &on).unwrap();
    assert_eq!(model.config().unwrap().recompute_layer_norm, 1);
}

#[test]
fn layer_norm_backward_from_output_round_trips_and_shrinks_the_plan() {
    assert_eq!(ModelConfig::new().layer_norm_backward_from_output, 0);
    let ctx = Context::new(Device::Cpu, 1).unwrap();
    // Unlike recompute_layer_norm, post-LN plans shrink too: no LayerNorm input is kept.
    for pre_layer_norm in [1, 0] {
        let mut off = tiny_config();
        off.pre_layer_norm = pre_layer_norm;
        let mut on = off;
        on.layer_norm_backward_from_output = 1;
        let r_off = plan_memory(&off, Device::Cpu).unwrap();
        let r_on = plan_memory(&on, Device::Cpu).unwrap();
        assert!(
            r_on.saved_activations < r_off.saved_activations,
            "pre_layer_norm {pre_layer_norm}: {r_on:?} vs {r_off:?}"
        );
        assert!(
            r_on.planned_bytes < r_off.planned_bytes,
            "pre_layer_norm {pre_layer_norm}: {r_on:?} vs {r_off:?}"
        );
        let model = Model::new(&ctx, &on).unwrap();
        let got = model.config().unwrap();
        assert_eq!(got.layer_norm_backward_from_output, 1);
        assert_eq!(got.recompute_layer_norm, 1); // as given; ignored
    }
}

#[test]
fn layer_norm_backward_from_output_is_validated() {
    // With recompute_layer_norm on (the default) it wins: the same plan as with it off.
    let mut both = tiny_config();
    both.recompute_layer_norm = 1;
    both.layer_norm_backward_from_output = 1;
    let mut alone = both;
    alone.recompute_layer_norm = 0;
    let r_both = plan_memory(&both, Device::Cpu).unwrap();
    let r_alone = plan_memory(&alone, Device::Cpu).unwrap();
    assert_eq!(r_both.saved_activations, r_alone.saved_activations);
    assert_eq!(r_both.planned_bytes, r_alone.planned_bytes);
    let ctx = Context::new(Device::Cpu, 1).unwrap();
    let model = Model::new(&ctx, &both).unwrap();
    assert_eq!(model.config().unwrap().layer_norm_backward_from_output, 1);
    let mut two = tiny_config();
    two.layer_norm_backward_from_output = 2;
    let err = plan_memory(&two, Device::Cpu).unwrap_err();
    assert_eq!(err.status, Status::INVALID_ARGUMENT);
    assert!(
        err.message.contains("layer_norm_backward_from_output"),
        "{err}"
    );
}
