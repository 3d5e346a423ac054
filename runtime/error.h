// Internal error type. Everything below the C API throws ls::Error; capi/ catches it and turns
// it into an ls_status plus the thread-local message.
#pragma once

#include <exception>
#include <sstream>
#include <string>
#include <utility>

#include "ls_train.h"

namespace ls {

class Error : public std::exception {
 public:
  Error(ls_status status, std::string message) : status_(status), message_(std::move(message)) {}
  ls_status status() const noexcept { return status_; }
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  ls_status status_;
  std::string message_;
};

[[noreturn]] inline void fail(ls_status status, const std::string& message) {
  throw Error(status, message);
}

// Builds a message from stream pieces: LS_FAIL(LS_ERR_INVALID_ARGUMENT, "tokens " << n << " > " << m)
#define LS_FAIL(status, pieces)          \
  do {                                   \
    std::ostringstream ls_fail_os_;      \
    ls_fail_os_ << pieces;               \
    ::ls::fail(status, ls_fail_os_.str()); \
  } while (0)

#define LS_REQUIRE(cond, status, pieces) \
  do {                                   \
    if (!(cond)) LS_FAIL(status, pieces); \
  } while (0)

#define LS_CHECK_ARG(cond, pieces) LS_REQUIRE(cond, LS_ERR_INVALID_ARGUMENT, pieces)

}  // namespace ls
