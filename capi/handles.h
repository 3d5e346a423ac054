// The opaque handle types of ls_train.h, defined over the runtime objects they own.
#pragma once

#include <memory>

#include "ls_train.h"
#include "runtime/context.h"

struct ls_context {
  std::unique_ptr<ls::Context> impl;
};

#include "runtime/model.h"
#include "runtime/trainer.h"

struct ls_model {
  std::unique_ptr<ls::Model> impl;
};

struct ls_trainer {
  std::unique_ptr<ls::Trainer> impl;
};
