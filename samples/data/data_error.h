// DataError: the one exception type of the sample data pipeline (samples/data). Every message
// names the call or file and what is wrong with it. This code is not part of libls_train, so it
// does not use ls::Error.
#pragma once

#include <stdexcept>
#include <string>

namespace ls_sample {

struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace ls_sample
