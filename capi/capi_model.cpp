// Model configuration, memory planning, models (parameters, evaluation, generation).
#include <cstddef>
#include <cstring>

#include "capi/capi_internal.h"
#include "capi/handles.h"

namespace {

// First published sizes: fields after these were appended later and get defaults.
constexpr size_t kModelConfigV0 = offsetof(ls_model_config, eos_idx);
constexpr size_t kMemoryReportV0 = sizeof(ls_memory_report);
constexpr size_t kParameterInfoV0 = sizeof(ls_parameter_info);
constexpr size_t kBatchV0 = sizeof(ls_batch);
constexpr size_t kEvalResultV0 = sizeof(ls_eval_result);

ls_model_config read_config(const ls_model_config* config) {
  ls_model_config c;
  c.struct_size = sizeof(c);
  ls::model_config_defaults(c);
  ls::capi::read_struct(config, c, kModelConfigV0, "ls_model_config");
  return c;
}

ls_memory_report to_c(const ls::MemoryReport& r, const ls::TransformerGraph& g) {
  using C = ls::MemCategory;
  auto cat = [&](C c) { return static_cast<uint64_t>(r.category_bytes[static_cast<int>(c)]); };
  ls_memory_report out;
  std::memset(&out, 0, sizeof(out));
  out.struct_size = sizeof(out);
  out.parameters = cat(C::Parameters);
  out.working_copy = cat(C::WorkingCopy);
  out.gradients = cat(C::Gradients);
  out.optimizer_state = cat(C::OptimizerState) + cat(C::LossScaler);
  out.inputs = cat(C::Inputs);
  out.workspace = cat(C::Workspace);
  out.saved_activations = cat(C::SavedActivations);
  out.temporaries = cat(C::Temporaries);
  out.planned_bytes = r.planned_bytes;
  out.lower_bound_bytes = r.lower_bound_bytes;
  out.no_reuse_bytes = r.no_reuse_bytes;
  out.persistent_bytes = r.persistent_bytes;
  out.total_bytes = r.total_bytes;
  out.num_parameters = g.params().num_parameters();
  uint64_t planned = 0;
  for (size_t i = 0; i < g.planner().size(); ++i)
    planned += !g.planner().buffer(ls::BufferId{static_cast<int32_t>(i)}).persistent;
  out.num_planned_buffers = planned;
  return out;
}

bool build_has_cuda() {
#if LS_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

extern "C" {

LS_API void ls_model_config_init(ls_model_config* config) {
  if (!config) return;
  config->struct_size = sizeof(*config);
  ls::model_config_defaults(*config);
}

LS_API ls_status ls_model_config_preset(const char* name, ls_model_config* config) {
  return ls::capi::guarded("ls_model_config_preset", [&] {
    LS_CHECK_NOT_NULL(name);
    LS_CHECK_NOT_NULL(config);
    ls::capi::check_out_struct(config, kModelConfigV0, "ls_model_config");
    ls_model_config c;
    c.struct_size = sizeof(c);
    ls::model_config_preset(name, c);
    ls::capi::write_struct(config, c);
  });
}

LS_API void ls_memory_report_init(ls_memory_report* report) {
  if (!report) return;
  std::memset(report, 0, sizeof(*report));
  report->struct_size = sizeof(*report);
}

LS_API ls_status ls_plan_memory(const ls_model_config* config, ls_device_kind device,
                                ls_memory_report* report) {
  return ls::capi::guarded("ls_plan_memory", [&] {
    LS_CHECK_NOT_NULL(config);
    LS_CHECK_NOT_NULL(report);
    ls::capi::check_out_struct(report, kMemoryReportV0, "ls_memory_report");
    ls_model_config c = read_config(config);
    // Planning is arithmetic: a CUDA plan can be computed on any build (and fp16/bf16 configs
    // are planned for CUDA, the only backend that runs them).
    const bool gpu_dtype = c.dtype == LS_DTYPE_FP16 || c.dtype == LS_DTYPE_BF16;
    bool cuda;
    switch (device) {
      case LS_DEVICE_AUTO: cuda = build_has_cuda() || gpu_dtype; break;
      case LS_DEVICE_CPU: cuda = false; break;
      case LS_DEVICE_CUDA: cuda = true; break;
      default: LS_FAIL(LS_ERR_INVALID_ARGUMENT, "unknown device kind " << static_cast<int>(device));
    }
    ls::TransformerGraph g(c, cuda);
    ls::Plan plan = g.plan_schedule();
    ls::capi::write_struct(report, to_c(g.planner().report(plan), g));
  });
}

LS_API ls_status ls_model_create(ls_context* context, const ls_model_config* config,
                                 ls_model** out) {
  return ls::capi::guarded("ls_model_create", [&] {
    LS_CHECK_NOT_NULL(context);
    LS_CHECK_NOT_NULL(config);
    LS_CHECK_NOT_NULL(out);
    ls_model_config c = read_config(config);
    auto m = std::make_unique<ls_model>();
    m->impl = std::make_unique<ls::Model>(*context->impl, c);
    *out = m.release();
  });
}

LS_API void ls_model_destroy(ls_model* model) { delete model; }

LS_API ls_status ls_model_get_config(const ls_model* model, ls_model_config* config) {
  return ls::capi::guarded("ls_model_get_config", [&] {
    LS_CHECK_NOT_NULL(model);
    LS_CHECK_NOT_NULL(config);
    ls::capi::check_out_struct(config, kModelConfigV0, "ls_model_config");
    ls::capi::write_struct(config, model->impl->config());
  });
}

LS_API ls_status ls_model_memory_report(const ls_model* model, ls_memory_report* report) {
  return ls::capi::guarded("ls_model_memory_report", [&] {
    LS_CHECK_NOT_NULL(model);
    LS_CHECK_NOT_NULL(report);
    ls::capi::check_out_struct(report, kMemoryReportV0, "ls_memory_report");
    ls::capi::write_struct(report, to_c(model->impl->memory_report(), model->impl->graph()));
  });
}

LS_API void ls_parameter_info_init(ls_parameter_info* info) {
  if (!info) return;
  std::memset(info, 0, sizeof(*info));
  info->struct_size = sizeof(*info);
}

LS_API ls_status ls_model_num_parameters(const ls_model* model, int64_t* num_tensors) {
  return ls::capi::guarded("ls_model_num_parameters", [&] {
    LS_CHECK_NOT_NULL(model);
    LS_CHECK_NOT_NULL(num_tensors);
    *num_tensors = static_cast<int64_t>(model->impl->params().entries().size());
  });
}

LS_API ls_status ls_model_parameter_info(const ls_model* model, int64_t index,
                                         ls_parameter_info* info) {
  return ls::capi::guarded("ls_model_parameter_info", [&] {
    LS_CHECK_NOT_NULL(model);
    LS_CHECK_NOT_NULL(info);
    ls::capi::check_out_struct(info, kParameterInfoV0, "ls_parameter_info");
    const auto& entries = model->impl->params().entries();
    LS_CHECK_ARG(index >= 0 && index < static_cast<int64_t>(entries.size()),
                 "parameter index " << index << " out of range [0, " << entries.size() << ")");
    const ls::ParamEntry& e = entries[static_cast<size_t>(index)];
    ls_parameter_info p;
    std::memset(&p, 0, sizeof(p));
    std::strncpy(p.name, e.name.c_str(), sizeof(p.name) - 1);
    p.ndim = static_cast<int32_t>(e.shape.size());
    for (size_t i = 0; i < e.shape.size() && i < 4; ++i) p.shape[i] = e.shape[i];
    p.numel = static_cast<int64_t>(e.ref.numel);
    ls::capi::write_struct(info, p);
  });
}

LS_API ls_status ls_model_get_parameter(const ls_model* model, const char* name, float* host,
                                        int64_t numel) {
  return ls::capi::guarded("ls_model_get_parameter", [&] {
    LS_CHECK_NOT_NULL(model);
    LS_CHECK_NOT_NULL(name);
    LS_CHECK_NOT_NULL(host);
    model->impl->get_parameter(name, host, numel);
  });
}

LS_API ls_status ls_model_set_parameter(ls_model* model, const char* name, const float* host,
                                        int64_t numel) {
  return ls::capi::guarded("ls_model_set_parameter", [&] {
    LS_CHECK_NOT_NULL(model);
    LS_CHECK_NOT_NULL(name);
    LS_CHECK_NOT_NULL(host);
    model->impl->set_parameter(name, host, numel);
  });
}

LS_API void ls_batch_init(ls_batch* batch) {
  if (!batch) return;
  std::memset(batch, 0, sizeof(*batch));
  batch->struct_size = sizeof(*batch);
}

LS_API void ls_eval_result_init(ls_eval_result* result) {
  if (!result) return;
  std::memset(result, 0, sizeof(*result));
  result->struct_size = sizeof(*result);
}

LS_API ls_status ls_model_evaluate(ls_model* model, const ls_batch* batch, ls_eval_result* result) {
  return ls::capi::guarded("ls_model_evaluate", [&] {
    LS_CHECK_NOT_NULL(model);
    LS_CHECK_NOT_NULL(batch);
    LS_CHECK_NOT_NULL(result);
    ls::capi::check_out_struct(result, kEvalResultV0, "ls_eval_result");
    ls_batch b;
    ls_batch_init(&b);
    ls::capi::read_struct(batch, b, kBatchV0, "ls_batch");
    ls_eval_result r;
    ls_eval_result_init(&r);
    model->impl->evaluate(b, r);
    ls::capi::write_struct(result, r);
  });
}

LS_API ls_status ls_model_generate(ls_model* model, const int32_t* src_tokens, int32_t batch_size,
                                   int32_t src_len, int32_t max_len, int32_t* out_tokens,
                                   int32_t* out_lengths) {
  return ls::capi::guarded("ls_model_generate", [&] {
    LS_CHECK_NOT_NULL(model);
    LS_CHECK_NOT_NULL(out_tokens);
    LS_CHECK_NOT_NULL(out_lengths);
    model->impl->generate(src_tokens, batch_size, src_len, max_len, out_tokens, out_lengths);
  });
}

}  // extern "C"
