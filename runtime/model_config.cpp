// Model configuration: defaults, presets and validation.
#include <cstring>
#include <string>

#include "runtime/error.h"
#include "runtime/model.h"

namespace ls {

void model_config_defaults(ls_model_config& c) {
  size_t size = c.struct_size;
  std::memset(&c, 0, sizeof(c));
  c.struct_size = size ? size : sizeof(c);
  c.arch = LS_ARCH_ENCODER_DECODER;
  c.src_vocab_size = 8000;
  c.tgt_vocab_size = 8000;
  c.hidden_size = 256;
  c.ffn_size = 1024;
  c.num_heads = 4;
  c.encoder_layers = 3;
  c.decoder_layers = 3;
  c.pre_layer_norm = 1;
  c.activation = LS_ACTIVATION_RELU;
  c.dropout = 0.1f;
  c.attention_dropout = 0.f;
  c.activation_dropout = 0.f;
  c.layer_norm_eps = 1e-5f;
  c.padding_idx = 1;
  c.share_all_embeddings = 0;
  c.share_decoder_input_output_embed = 1;
  c.scale_embedding = 1;
  c.learned_positions = 0;
  c.max_seq_len = 256;
  c.max_batch_tokens = 4096;
  c.dtype = LS_DTYPE_FP32;
  c.label_smoothing = 0.1f;
  c.eos_idx = 2;
  c.recompute_layer_norm = 1;
  c.layer_norm_backward_from_output = 0;
}

void model_config_preset(const std::string& name, ls_model_config& c) {
  ls_model_config p;
  p.struct_size = c.struct_size;
  model_config_defaults(p);
  if (name == "transformer-base") {  // fairseq transformer_wmt_en_de
    p.hidden_size = 512, p.ffn_size = 2048, p.num_heads = 8;
    p.encoder_layers = p.decoder_layers = 6;
    p.pre_layer_norm = 0;
    p.src_vocab_size = p.tgt_vocab_size = 32768;
    p.share_all_embeddings = 1;
  } else if (name == "transformer-big") {  // fairseq transformer_vaswani_wmt_en_de_big
    p.hidden_size = 1024, p.ffn_size = 4096, p.num_heads = 16;
    p.encoder_layers = p.decoder_layers = 6;
    p.pre_layer_norm = 0;
    p.dropout = 0.3f;
    p.src_vocab_size = p.tgt_vocab_size = 32768;
    p.share_all_embeddings = 1;
  } else if (name == "gpt2-small") {
    p.arch = LS_ARCH_DECODER_ONLY;
    p.hidden_size = 768, p.ffn_size = 3072, p.num_heads = 12;
    p.encoder_layers = 0, p.decoder_layers = 12;
    p.pre_layer_norm = 1;
    p.activation = LS_ACTIVATION_GELU;
    p.learned_positions = 1;
    p.scale_embedding = 0;
    p.src_vocab_size = p.tgt_vocab_size = 50304;
    p.max_seq_len = 1024;
    p.max_batch_tokens = 8192;
    p.label_smoothing = 0.f;
  } else if (name == "transformer-tiny") {  // the CPU sample
    p.hidden_size = 128, p.ffn_size = 512, p.num_heads = 4;
    p.encoder_layers = p.decoder_layers = 2;
    p.pre_layer_norm = 1;
    p.src_vocab_size = p.tgt_vocab_size = 4000;
    p.share_all_embeddings = 1;
    p.max_seq_len = 128;
    p.max_batch_tokens = 2048;
  } else {
    LS_FAIL(LS_ERR_INVALID_ARGUMENT, "unknown preset '" << name
                                                        << "' (known: transformer-base, "
                                                           "transformer-big, gpt2-small, "
                                                           "transformer-tiny)");
  }
  c = p;
}

DType to_dtype(ls_dtype t) {
  switch (t) {
    case LS_DTYPE_FP32: return DType::F32;
    case LS_DTYPE_FP16: return DType::F16;
    case LS_DTYPE_BF16: return DType::BF16;
    case LS_DTYPE_FP64: return DType::F64;
  }
  LS_FAIL(LS_ERR_INVALID_ARGUMENT, "unknown dtype " << static_cast<int>(t));
}

void validate_model_config(const ls_model_config& c, bool cuda) {
  auto positive = [](const char* field, int64_t v) {
    LS_CHECK_ARG(v > 0, "ls_model_config." << field << " must be positive, got " << v);
  };
  LS_CHECK_ARG(c.arch == LS_ARCH_ENCODER_DECODER || c.arch == LS_ARCH_DECODER_ONLY,
               "ls_model_config.arch " << static_cast<int>(c.arch) << " is unknown");
  bool encdec = c.arch == LS_ARCH_ENCODER_DECODER;
  positive("tgt_vocab_size", c.tgt_vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("ffn_size", c.ffn_size);
  positive("num_heads", c.num_heads);
  positive("decoder_layers", c.decoder_layers);
  positive("max_seq_len", c.max_seq_len);
  positive("max_batch_tokens", c.max_batch_tokens);
  if (encdec) {
    positive("src_vocab_size", c.src_vocab_size);
    positive("encoder_layers", c.encoder_layers);
  }
  LS_CHECK_ARG(c.hidden_size % c.num_heads == 0, "ls_model_config.hidden_size "
                                                     << c.hidden_size
                                                     << " is not divisible by num_heads "
                                                     << c.num_heads);
  if (cuda)
    LS_REQUIRE((c.hidden_size / c.num_heads) % 8 == 0, LS_ERR_UNSUPPORTED,
               "head dimension " << c.hidden_size / c.num_heads
                                 << " must be a multiple of 8 on CUDA");
  LS_CHECK_ARG(c.max_seq_len <= c.max_batch_tokens,
               "max_seq_len " << c.max_seq_len << " exceeds max_batch_tokens "
                              << c.max_batch_tokens << " (one sequence must fit a batch)");
  for (auto [name, v] : {std::pair<const char*, float>{"dropout", c.dropout},
                         {"attention_dropout", c.attention_dropout},
                         {"activation_dropout", c.activation_dropout}})
    LS_CHECK_ARG(v >= 0.f && v < 1.f, "ls_model_config." << name << " must be in [0, 1), got " << v);
  LS_CHECK_ARG(c.label_smoothing >= 0.f && c.label_smoothing < 1.f,
               "ls_model_config.label_smoothing must be in [0, 1), got " << c.label_smoothing);
  LS_CHECK_ARG(c.layer_norm_eps > 0.f, "ls_model_config.layer_norm_eps must be positive");
  LS_CHECK_ARG(c.recompute_layer_norm == 0 || c.recompute_layer_norm == 1,
               "ls_model_config.recompute_layer_norm must be 0 or 1, got "
                   << c.recompute_layer_norm);
  LS_CHECK_ARG(c.layer_norm_backward_from_output == 0 || c.layer_norm_backward_from_output == 1,
               "ls_model_config.layer_norm_backward_from_output must be 0 or 1, got "
                   << c.layer_norm_backward_from_output);
  LS_CHECK_ARG(c.padding_idx >= 0 && c.padding_idx < c.tgt_vocab_size &&
                   (!encdec || c.padding_idx < c.src_vocab_size),
               "ls_model_config.padding_idx " << c.padding_idx << " is outside the vocabulary");
  LS_CHECK_ARG(c.eos_idx >= 0 && c.eos_idx < c.tgt_vocab_size,
               "ls_model_config.eos_idx " << c.eos_idx << " is outside the vocabulary");
  if (encdec && c.share_all_embeddings)
    LS_CHECK_ARG(c.src_vocab_size == c.tgt_vocab_size,
                 "share_all_embeddings needs src_vocab_size == tgt_vocab_size ("
                     << c.src_vocab_size << " != " << c.tgt_vocab_size << ")");
  DType dt = to_dtype(c.dtype);
  if (cuda)
    LS_REQUIRE(dt != DType::F64, LS_ERR_UNSUPPORTED, "fp64 is CPU-only (the reference backend)");
  else
    LS_REQUIRE(dt == DType::F32 || dt == DType::F64, LS_ERR_UNSUPPORTED,
               dtype_name(dt) << " needs the CUDA backend; the CPU backend runs fp32 and fp64");
}

}  // namespace ls
