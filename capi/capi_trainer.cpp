// Trainers: configuration, steps, checkpoints.
#include <cstring>

#include "capi/capi_internal.h"
#include "capi/handles.h"

namespace {
constexpr size_t kTrainerConfigV0 = sizeof(ls_trainer_config);
constexpr size_t kStepResultV0 = sizeof(ls_step_result);
constexpr size_t kBatchV0 = sizeof(ls_batch);
}  // namespace

extern "C" {

LS_API void ls_trainer_config_init(ls_trainer_config* config) {
  if (!config) return;
  config->struct_size = sizeof(*config);
  ls::trainer_config_defaults(*config);
}

LS_API void ls_step_result_init(ls_step_result* result) {
  if (!result) return;
  std::memset(result, 0, sizeof(*result));
  result->struct_size = sizeof(*result);
}

LS_API ls_status ls_trainer_create(ls_model* model, const ls_trainer_config* config,
                                   ls_trainer** out) {
  return ls::capi::guarded("ls_trainer_create", [&] {
    LS_CHECK_NOT_NULL(model);
    LS_CHECK_NOT_NULL(out);
    ls_trainer_config c;
    ls_trainer_config_init(&c);
    if (config) ls::capi::read_struct(config, c, kTrainerConfigV0, "ls_trainer_config");
    auto t = std::make_unique<ls_trainer>();
    t->impl = std::make_unique<ls::Trainer>(*model->impl, c);
    *out = t.release();
  });
}

LS_API void ls_trainer_destroy(ls_trainer* trainer) { delete trainer; }

LS_API ls_status ls_trainer_step(ls_trainer* trainer, const ls_batch* batch,
                                 ls_step_result* result) {
  return ls::capi::guarded("ls_trainer_step", [&] {
    LS_CHECK_NOT_NULL(trainer);
    LS_CHECK_NOT_NULL(batch);
    if (result) ls::capi::check_out_struct(result, kStepResultV0, "ls_step_result");
    ls_batch b;
    ls_batch_init(&b);
    ls::capi::read_struct(batch, b, kBatchV0, "ls_batch");
    if (!result) {
      trainer->impl->step(b, nullptr);  // no read-back: the step stays asynchronous
      return;
    }
    ls_step_result r;
    ls_step_result_init(&r);
    trainer->impl->step(b, &r);
    ls::capi::write_struct(result, r);
  });
}

LS_API ls_status ls_trainer_save(const ls_trainer* trainer, const char* path) {
  return ls::capi::guarded("ls_trainer_save", [&] {
    LS_CHECK_NOT_NULL(trainer);
    LS_CHECK_NOT_NULL(path);
    trainer->impl->save(path);
  });
}

LS_API ls_status ls_trainer_load(ls_trainer* trainer, const char* path) {
  return ls::capi::guarded("ls_trainer_load", [&] {
    LS_CHECK_NOT_NULL(trainer);
    LS_CHECK_NOT_NULL(path);
    trainer->impl->load(path);
  });
}

}  // extern "C"
