// Shared pieces of the ls-train command: subcommand table, argument parsing helpers, and a
// tiny JSON writer. Built on the public C API only.
#pragma once

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "ls_train.h"

namespace cli {

// A usage error (exit code 2) or a failed ls_* call (exit code 1) propagate as exceptions to
// main, which prints them.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ApiError : std::runtime_error {
  ls_status status;
  ApiError(ls_status s, const std::string& what) : std::runtime_error(what), status(s) {}
};

// Throws ApiError with the status name and ls_last_error() when s != LS_OK.
inline void check(ls_status s, const char* call) {
  if (s != LS_OK)
    throw ApiError(s, std::string(call) + " failed: " + ls_status_string(s) + ": " + ls_last_error());
}

// Simple "--name value" / "--flag" parser over argv[first..].
class Args {
 public:
  Args(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) items_.emplace_back(argv[i]);
    used_.assign(items_.size(), false);
  }
  bool flag(const std::string& name);
  bool has(const std::string& name) const;
  std::string str(const std::string& name, const std::string& def);
  int64_t integer(const std::string& name, int64_t def);
  double number(const std::string& name, double def);
  // Throws UsageError naming any argument nobody asked for.
  void finish() const;

 private:
  int find(const std::string& name) const;
  std::vector<std::string> items_;
  mutable std::vector<bool> used_;
};

// Minimal JSON writer: objects, arrays, strings, numbers, booleans.
class Json {
 public:
  Json& begin_object(const char* key = nullptr);
  Json& end_object();
  Json& begin_array(const char* key = nullptr);
  Json& end_array();
  Json& kv(const char* key, const std::string& v);
  Json& kv(const char* key, const char* v) { return kv(key, std::string(v)); }
  Json& kv(const char* key, double v);
  Json& kv(const char* key, int64_t v);
  Json& kv(const char* key, uint64_t v);
  Json& kv(const char* key, int v) { return kv(key, static_cast<int64_t>(v)); }
  Json& kv(const char* key, bool v);
  const std::string& str() const { return out_; }

 private:
  void sep(const char* key);
  std::string out_;
  std::vector<bool> first_;
};

std::string human_bytes(uint64_t bytes);

int cmd_info(int argc, char** argv);
int cmd_plan(int argc, char** argv);
int cmd_train(int argc, char** argv);

}  // namespace cli
