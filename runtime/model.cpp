#include "runtime/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "allocator/alloc_stats.h"
#include "runtime/error.h"

namespace ls {

namespace {

// Writes host doubles into a buffer of type t (F32 or F64) on the backend via a staging copy.
void store_values(Ops& ops, void* dst, DType t, const double* src, size_t n,
                  std::vector<double>& stage) {
  if (t == DType::F64) {
    ops.from_host(dst, src, n * sizeof(double));
    return;
  }
  stage.resize((n * sizeof(float) + sizeof(double) - 1) / sizeof(double));
  float* f = reinterpret_cast<float*>(stage.data());
  for (size_t i = 0; i < n; ++i) f[i] = static_cast<float>(src[i]);
  ops.from_host(dst, f, n * sizeof(float));
}

}  // namespace

Model::Model(Context& ctx, const ls_model_config& cfg) : ctx_(ctx), dropout_seed_(ctx.seed()) {
  ctx_.activate();
  graph_ = std::make_unique<TransformerGraph>(cfg, ctx_.is_cuda());
  plan_ = graph_->plan_schedule();
  // Generation runs a different schedule (encoder once, then the decoder step after step):
  // plan it on a twin graph (same declarations, so the same buffer ids) and size the planned
  // region for the larger of the two.
  {
    TransformerGraph twin(cfg, ctx_.is_cuda());
    Exec ex(twin.planner());
    RunCtx rc;
    rc.ex = &ex;
    rc.wv.dt = twin.dt();
    rc.wv.acc = twin.acc();
    rc.wv.master = rc.wv.work = rc.wv.grad = reinterpret_cast<std::byte*>(uintptr_t{0x10000});
    rc.shape = {1, cfg.max_seq_len, cfg.max_seq_len};
    rc.training = false;
    if (twin.encoder_decoder()) twin.encode(rc);
    twin.decode_hidden(rc);
    // Gather the last positions, project, convert: all alive with the decoder's output.
    rc.ptr(twin.dec_hidden);
    rc.ptr(twin.gen_hidden);
    rc.ptr(twin.gen_logits);
    rc.ptr(twin.gen_logits_acc);
    if (twin.encoder_decoder()) rc.ptr(twin.enc_out);
    twin.planner().tick();
    gen_plan_ = twin.planner().plan();
  }
  LS_REQUIRE(gen_plan_.planned_base == plan_.planned_base, LS_ERR_INTERNAL,
             "generation plan's persistent layout differs from the training plan's");
  size_t total = std::max(plan_.total_bytes, gen_plan_.total_bytes);
  size_t align = std::max(plan_.base_align, gen_plan_.base_align);
  arena_ = Arena(ctx_.is_cuda() ? MemoryKind::Device : MemoryKind::Host, total, align);

  const ls_model_config& c = graph_->config();
  const size_t T = static_cast<size_t>(c.max_batch_tokens);
  host_tokens_.assign(T, 0);
  staging_.ops = &ctx_.ops();
  staging_.p = ctx_.ops().host_alloc(3 * T * sizeof(int32_t));
  gen_tokens_.assign(static_cast<size_t>(graph_->gen_max_rows) * (c.max_seq_len + 1), 0);
  gen_logits_host_.assign(static_cast<size_t>(graph_->gen_max_rows) * c.tgt_vocab_size, 0.f);

  // Initial parameters (fairseq's scheme) from the context seed; gradients and moments zero.
  Ops& ops = ctx_.ops();
  std::vector<double> init, stage;
  graph_->params().initialize(init, ctx_.seed());
  const DType acc = graph_->acc();
  const size_t n = graph_->params().total_elements();
  store_values(ops, buffer(graph_->master), acc, init.data(), n, stage);
  ops.zero(buffer(graph_->grad), n * dtype_size(acc));
  if (graph_->grad_zero_ranges.valid()) {  // before-pairs, then after-criterion pairs
    std::vector<uint64_t> table = graph_->grad_zero_before;
    table.insert(table.end(), graph_->grad_zero_after_criterion.begin(),
                 graph_->grad_zero_after_criterion.end());
    ops.from_host(buffer(graph_->grad_zero_ranges), table.data(), table.size() * sizeof(uint64_t));
  }
  ops.zero(buffer(graph_->adam_m), n * dtype_size(acc));
  ops.zero(buffer(graph_->adam_v), n * dtype_size(acc));
  ops.zero(buffer(graph_->scalars), TransformerGraph::kScalarCount * dtype_size(acc) + 64);
  {
    TrainState fresh;
    ops.from_host(train_state(), &fresh, sizeof(fresh));
  }
  refresh_working_copy();
  if (graph_->workspace.valid()) ctx_.ops().set_workspace(buffer(graph_->workspace), graph_->workspace_bytes);
  ops.synchronize();
}

Model::~Model() = default;

WeightsView Model::weights() const {
  WeightsView w;
  w.dt = graph_->dt();
  w.acc = graph_->acc();
  w.master = static_cast<std::byte*>(buffer(graph_->master));
  w.work = graph_->work.valid() ? static_cast<std::byte*>(buffer(graph_->work)) : w.master;
  w.grad = static_cast<std::byte*>(buffer(graph_->grad));
  return w;
}

void Model::refresh_working_copy() {
  if (!graph_->work.valid()) return;
  ctx_.ops().cast(buffer(graph_->master), graph_->acc(), buffer(graph_->work), graph_->dt(),
                  graph_->params().total_elements());
}

MemoryReport Model::memory_report() const { return graph_->planner().report(plan_); }

void Model::get_parameter(const std::string& name, float* host, int64_t numel) {
  LS_CHECK_ARG(host != nullptr, "host is NULL");
  const ParamEntry& e = graph_->params().find(name);
  LS_CHECK_ARG(numel == static_cast<int64_t>(e.ref.numel),
               "parameter '" << name << "' has " << e.ref.numel << " elements, buffer has "
                             << numel);
  ctx_.activate();
  const DType acc = graph_->acc();
  const std::byte* src = static_cast<std::byte*>(buffer(graph_->master)) + e.ref.offset * dtype_size(acc);
  if (acc == DType::F32) {
    ctx_.ops().to_host(host, src, e.ref.numel * sizeof(float));
  } else {
    std::vector<double> tmp(e.ref.numel);
    ctx_.ops().to_host(tmp.data(), src, e.ref.numel * sizeof(double));
    for (size_t i = 0; i < e.ref.numel; ++i) host[i] = static_cast<float>(tmp[i]);
  }
}

void Model::set_parameter(const std::string& name, const float* host, int64_t numel) {
  LS_CHECK_ARG(host != nullptr, "host is NULL");
  const ParamEntry& e = graph_->params().find(name);
  LS_CHECK_ARG(numel == static_cast<int64_t>(e.ref.numel),
               "parameter '" << name << "' has " << e.ref.numel << " elements, buffer has "
                             << numel);
  for (int64_t i = 0; i < numel; ++i)
    LS_CHECK_ARG(std::isfinite(host[i]), "parameter '" << name << "' value " << i
                                                       << " is not finite");
  ctx_.activate();
  const DType acc = graph_->acc();
  std::byte* dst = static_cast<std::byte*>(buffer(graph_->master)) + e.ref.offset * dtype_size(acc);
  if (acc == DType::F32) {
    ctx_.ops().from_host(dst, host, e.ref.numel * sizeof(float));
  } else {
    std::vector<double> tmp(host, host + numel);
    ctx_.ops().from_host(dst, tmp.data(), e.ref.numel * sizeof(double));
  }
  if (graph_->work.valid()) {
    std::byte* w = static_cast<std::byte*>(buffer(graph_->work)) + e.ref.offset * dtype_size(graph_->dt());
    ctx_.ops().cast(dst, acc, w, graph_->dt(), e.ref.numel);
  }
  ctx_.ops().synchronize();
}

void Model::validate_batch(const ls_batch& b, HostBatch& out) {
  const ls_model_config& c = graph_->config();
  const bool encdec = graph_->encoder_decoder();
  LS_CHECK_ARG(b.batch_size > 0, "batch_size must be positive, got " << b.batch_size);
  LS_CHECK_ARG(b.tgt_len > 0, "tgt_len must be positive, got " << b.tgt_len);
  LS_CHECK_ARG(b.prev_output_tokens != nullptr, "batch.prev_output_tokens is NULL");
  LS_CHECK_ARG(b.target != nullptr, "batch.target is NULL");
  LS_CHECK_ARG(b.tgt_len <= c.max_seq_len, "target length " << b.tgt_len << " exceeds max_seq_len "
                                                             << c.max_seq_len);
  const int64_t tt = static_cast<int64_t>(b.batch_size) * b.tgt_len;
  LS_CHECK_ARG(tt <= c.max_batch_tokens, "batch has " << tt << " target tokens (" << b.batch_size
                                                      << " x " << b.tgt_len
                                                      << "), more than max_batch_tokens "
                                                      << c.max_batch_tokens);
  if (encdec) {
    LS_CHECK_ARG(b.src_tokens != nullptr, "batch.src_tokens is NULL (encoder-decoder model)");
    LS_CHECK_ARG(b.src_len > 0, "src_len must be positive, got " << b.src_len);
    LS_CHECK_ARG(b.src_len <= c.max_seq_len, "source length " << b.src_len
                                                               << " exceeds max_seq_len "
                                                               << c.max_seq_len);
    const int64_t ts = static_cast<int64_t>(b.batch_size) * b.src_len;
    LS_CHECK_ARG(ts <= c.max_batch_tokens, "batch has " << ts << " source tokens ("
                                                        << b.batch_size << " x " << b.src_len
                                                        << "), more than max_batch_tokens "
                                                        << c.max_batch_tokens);
  }
  LS_CHECK_ARG(b.tokens_on_device == 0 || b.tokens_on_device == 1,
               "tokens_on_device must be 0 or 1");
  LS_CHECK_ARG(!b.tokens_on_device || ctx_.is_cuda(),
               "tokens_on_device is set but the model runs on the CPU");

  out.batch = b.batch_size;
  out.src_len = encdec ? b.src_len : 0;
  out.tgt_len = b.tgt_len;
  out.on_device = b.tokens_on_device != 0;
  out.src = encdec ? b.src_tokens : nullptr;
  out.prev = b.prev_output_tokens;
  out.target = b.target;
  if (out.on_device) return;  // ids are checked on the device (load_batch)
  auto check_ids = [&](const int32_t* ids, int64_t n, int64_t len, int32_t vocab, const char* what) {
    for (int64_t i = 0; i < n; ++i)
      LS_CHECK_ARG(ids[i] >= 0 && ids[i] < vocab, what << " token id " << ids[i] << " at row "
                                                       << i / len << ", position " << i % len
                                                       << " is outside the vocabulary [0, "
                                                       << vocab << ")");
  };
  if (encdec) check_ids(out.src, out.batch * out.src_len, out.src_len, c.src_vocab_size, "source");
  check_ids(out.prev, tt, out.tgt_len, c.tgt_vocab_size, "prev_output");
  check_ids(out.target, tt, out.tgt_len, c.tgt_vocab_size, "target");
}

void Model::upload_tokens(BufferId dst, const int32_t* host_src, size_t n) {
  ctx_.ops().from_host(buffer(dst), host_src, n * sizeof(int32_t));
}

void Model::load_batch(const HostBatch& b) {
  ctx_.activate();
  Ops& ops = ctx_.ops();
  const ls_model_config& c = graph_->config();
  const bool encdec = graph_->encoder_decoder();
  const size_t T = static_cast<size_t>(c.max_batch_tokens);
  const size_t ts = static_cast<size_t>(b.batch * b.src_len);
  const size_t tt = static_cast<size_t>(b.batch * b.tgt_len);
  shape_ = {b.batch, b.src_len, b.tgt_len};
  auto* src_buf = encdec ? static_cast<int32_t*>(buffer(graph_->src_tokens)) : nullptr;
  auto* prev_buf = static_cast<int32_t*>(buffer(graph_->prev_tokens));
  auto* tgt_buf = static_cast<int32_t*>(buffer(graph_->target));
  if (b.on_device) {
    uint32_t* bad = &train_state()->bad_tokens;
    if (encdec) ops.import_tokens(b.src, src_buf, ts, c.src_vocab_size, c.padding_idx, bad);
    ops.import_tokens(b.prev, prev_buf, tt, c.tgt_vocab_size, c.padding_idx, bad);
    ops.import_tokens(b.target, tgt_buf, tt, c.tgt_vocab_size, c.padding_idx, bad);
  } else {
    // The previous batch's copies read the staging asynchronously: wait for them (they were
    // queued a step ago, so this rarely waits) before overwriting it.
    if (staging_in_flight_) ops.wait_mark();
    int32_t* stage = static_cast<int32_t*>(staging_.p);
    if (encdec) std::memcpy(stage, b.src, ts * sizeof(int32_t));
    std::memcpy(stage + T, b.prev, tt * sizeof(int32_t));
    std::memcpy(stage + 2 * T, b.target, tt * sizeof(int32_t));
    if (encdec) ops.from_host(src_buf, stage, ts * sizeof(int32_t));
    ops.from_host(prev_buf, stage + T, tt * sizeof(int32_t));
    ops.from_host(tgt_buf, stage + 2 * T, tt * sizeof(int32_t));
    ops.mark();
    staging_in_flight_ = true;
  }
  if (encdec)
    ops.padding_mask(src_buf, static_cast<uint8_t*>(buffer(graph_->src_pad)),
                     static_cast<int64_t>(ts), c.padding_idx);
  ops.padding_mask(prev_buf, static_cast<uint8_t*>(buffer(graph_->tgt_pad)),
                   static_cast<int64_t>(tt), c.padding_idx);
}

void Model::check_imported_tokens() {
  Ops& ops = ctx_.ops();
  uint32_t bad = 0;
  ops.to_host(&bad, &train_state()->bad_tokens, sizeof(bad));
  ops.synchronize();
  if (bad == 0) return;
  ops.zero(&train_state()->bad_tokens, sizeof(uint32_t));
  ops.synchronize();
  LS_FAIL(LS_ERR_INVALID_ARGUMENT,
          "batch (device arrays) has " << bad << " token id(s) outside the vocabulary [0, "
                                       << graph_->config().tgt_vocab_size
                                       << ") (source: [0, " << graph_->config().src_vocab_size
                                       << ")); nothing was run on it");
}

TrainState Model::read_train_state() {
  ctx_.activate();
  TrainState s;
  ctx_.ops().to_host(&s, train_state(), sizeof(s));
  ctx_.ops().synchronize();
  return s;
}

void Model::write_train_state(const TrainState& s) {
  ctx_.activate();
  ctx_.ops().from_host(train_state(), &s, sizeof(s));
  ctx_.ops().synchronize();
}

void Model::advance_dropout_stream() { ctx_.ops().counter_add(&train_state()->dropout_stream, 1); }

RunCtx Model::run_ctx(bool training) {
  RunCtx rc;
  rc.wv = weights();
  rc.shape = shape_;
  rc.training = training;
  rc.seed = dropout_seed_;
  rc.dropout_stream = dropout_stream_ptr();
  return rc;
}

void Model::run_forward(bool training) {
  Exec ex(ctx_.ops(), plan_, arena_.base());
  RunCtx rc = run_ctx(training);
  rc.ex = &ex;
  graph_->forward(rc);
}

void Model::run_backward(bool deterministic) {
  Exec ex(ctx_.ops(), plan_, arena_.base());
  RunCtx rc = run_ctx(true);
  rc.ex = &ex;
  graph_->backward(rc, deterministic);
}

void Model::train_pass(bool fresh_gradients, bool deterministic) {
  const TransformerGraph& g = *graph_;
  if (fresh_gradients && !g.grad_zero_before.empty())
    ctx_.ops().zero_ranges(buffer(g.grad), static_cast<const uint64_t*>(buffer(g.grad_zero_ranges)),
                           static_cast<int64_t>(g.grad_zero_before.size() / 2),
                           g.grad_zero_max_elements, dtype_size(g.acc()));
  zero_sums();
  Exec ex(ctx_.ops(), plan_, arena_.base());
  RunCtx rc = run_ctx(true);
  rc.ex = &ex;
  rc.fresh_gradients = fresh_gradients;
  rc.overwrite_weight_grads = fresh_gradients && g.overwrite_weight_grads;
  graph_->forward(rc);
  graph_->backward(rc, deterministic);
}

void Model::zero_sums() {
  ctx_.ops().zero(buffer(graph_->scalars), 3 * dtype_size(graph_->acc()));
}

void Model::read_sums(double out[3]) {
  const DType acc = graph_->acc();
  if (acc == DType::F64) {
    ctx_.ops().to_host(out, buffer(graph_->scalars), 3 * sizeof(double));
  } else {
    float f[3];
    ctx_.ops().to_host(f, buffer(graph_->scalars), sizeof(f));
    for (int i = 0; i < 3; ++i) out[i] = f[i];
  }
}

void Model::evaluate(const ls_batch& batch, ls_eval_result& result) {
  HostBatch hb;
  validate_batch(batch, hb);
  load_batch(hb);
  if (hb.on_device) check_imported_tokens();
  zero_sums();
  run_forward(false);
  double s[3];
  read_sums(s);
  result.loss = s[0];
  result.nll = s[1];
  result.tokens = static_cast<int64_t>(std::llround(s[2]));
}

void Model::generate(const int32_t* src, int64_t batch, int64_t src_len, int64_t max_len,
                     int32_t* out_tokens, int32_t* out_lengths) {
  const ls_model_config& c = graph_->config();
  const bool encdec = graph_->encoder_decoder();
  LS_CHECK_ARG(out_tokens != nullptr && out_lengths != nullptr, "out_tokens/out_lengths is NULL");
  LS_CHECK_ARG(batch > 0 && batch <= graph_->gen_max_rows,
               "generate batch_size " << batch << " must be in [1, " << graph_->gen_max_rows << "]");
  LS_CHECK_ARG(max_len > 0, "max_len must be positive, got " << max_len);
  LS_CHECK_ARG(src != nullptr || (!encdec && src_len == 0), "src_tokens is NULL");
  LS_CHECK_ARG(src_len >= (encdec ? 1 : 0), "src_len " << src_len << " is too small");
  const int64_t prompt = encdec ? 0 : src_len;
  const int64_t total_len = encdec ? max_len : prompt + max_len;
  LS_CHECK_ARG(total_len <= c.max_seq_len && (!encdec || src_len <= c.max_seq_len),
               "generation length " << total_len << " (source " << src_len
                                    << ") exceeds max_seq_len " << c.max_seq_len);
  LS_CHECK_ARG(batch * total_len <= c.max_batch_tokens && batch * src_len <= c.max_batch_tokens,
               "generation needs " << batch * std::max(total_len, src_len)
                                   << " tokens, more than max_batch_tokens " << c.max_batch_tokens);
  const int32_t vocab_src = encdec ? c.src_vocab_size : c.tgt_vocab_size;
  for (int64_t i = 0; i < batch * src_len; ++i)
    LS_CHECK_ARG(src[i] >= 0 && src[i] < vocab_src,
                 "source token id " << src[i] << " at " << i << " is outside the vocabulary");

  ctx_.activate();
  Ops& ops = ctx_.ops();
  const DType dt = graph_->dt(), acc = graph_->acc();
  const int64_t V = c.tgt_vocab_size, d = c.hidden_size;
  Exec ex(ops, gen_plan_, arena_.base());
  RunCtx rc = run_ctx(false);
  rc.ex = &ex;
  if (encdec) {
    rc.shape = {batch, src_len, 0};
    upload_tokens(graph_->src_tokens, src, static_cast<size_t>(batch * src_len));
    ops.padding_mask(static_cast<const int32_t*>(buffer(graph_->src_tokens)),
                     static_cast<uint8_t*>(buffer(graph_->src_pad)), batch * src_len, c.padding_idx);
    graph_->encode(rc);
  }
  // Decoder input rows: encoder-decoder starts from eos; decoder-only from the prompt.
  int32_t* seq = gen_tokens_.data();
  const int64_t stride = c.max_seq_len + 1;
  std::vector<char> done(static_cast<size_t>(batch), 0);  // outside the training step
  for (int64_t r = 0; r < batch; ++r) {
    out_lengths[r] = 0;
    for (int64_t t = 0; t < max_len; ++t) out_tokens[r * max_len + t] = c.padding_idx;
    if (encdec)
      seq[r * stride] = c.eos_idx;
    else
      for (int64_t t = 0; t < prompt; ++t) seq[r * stride + t] = src[r * src_len + t];
  }
  int64_t len = encdec ? 1 : prompt;
  LS_CHECK_ARG(len > 0, "decoder-only generation needs a prompt of at least one token");
  const size_t e = dtype_size(dt);
  for (int64_t step = 0; step < max_len; ++step) {
    rc.shape = {batch, encdec ? src_len : 0, len};
    std::vector<int32_t>& stage = host_tokens_;
    for (int64_t r = 0; r < batch; ++r)
      for (int64_t t = 0; t < len; ++t) stage[r * len + t] = seq[r * stride + t];
    upload_tokens(graph_->prev_tokens, stage.data(), static_cast<size_t>(batch * len));
    ops.padding_mask(static_cast<const int32_t*>(buffer(graph_->prev_tokens)),
                     static_cast<uint8_t*>(buffer(graph_->tgt_pad)), batch * len, c.padding_idx);
    graph_->decode_hidden(rc);
    // Last position of every row -> [batch, d] -> logits [batch, V] -> acc -> host.
    std::byte* hid = static_cast<std::byte*>(rc.ptr(graph_->dec_hidden));
    std::byte* gh = static_cast<std::byte*>(rc.ptr(graph_->gen_hidden));
    for (int64_t r = 0; r < batch; ++r)
      ops.copy(gh + r * d * e, hid + ((r * len) + len - 1) * d * e, static_cast<size_t>(d) * e);
    Linear::forward(ops, dt, gh, rc.wv.w(graph_->output_projection), rc.ptr(graph_->gen_logits),
                    batch, d, V);
    void* lacc = rc.ptr(graph_->gen_logits_acc);
    if (acc == dt)
      ops.copy(lacc, rc.ptr(graph_->gen_logits), static_cast<size_t>(batch * V) * e);
    else
      ops.cast(rc.ptr(graph_->gen_logits), dt, lacc, acc, static_cast<size_t>(batch * V));
    bool all_done = true;
    for (int64_t r = 0; r < batch; ++r) {
      int32_t best = 0;
      if (acc == DType::F64) {
        std::vector<double> row(static_cast<size_t>(V));
        ops.to_host(row.data(), static_cast<std::byte*>(lacc) + r * V * 8, V * 8);
        double bv = -INFINITY;
        for (int64_t v = 0; v < V; ++v)
          if (v != c.padding_idx && row[v] > bv) bv = row[v], best = static_cast<int32_t>(v);
      } else {
        float* row = gen_logits_host_.data();
        ops.to_host(row, static_cast<std::byte*>(lacc) + r * V * 4, V * 4);
        float bv = -INFINITY;
        for (int64_t v = 0; v < V; ++v)
          if (v != c.padding_idx && row[v] > bv) bv = row[v], best = static_cast<int32_t>(v);
      }
      if (!done[r]) {
        out_tokens[r * max_len + step] = best;
        out_lengths[r] = static_cast<int32_t>(step + 1);
        if (best == c.eos_idx) done[r] = 1;
      }
      seq[r * stride + len] = done[r] && best != c.eos_idx ? c.padding_idx : best;
      all_done = all_done && done[r];
    }
    ++len;
    if (all_done) break;
  }
}

}  // namespace ls
