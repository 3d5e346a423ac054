// The C API core: status strings, the per-thread error message, versions, struct_size
// handling, NULL arguments, and a context on the CPU.
#include <doctest/doctest.h>

#include <cstddef>

#include <cstring>
#include <string>
#include <thread>

#include "ls_train.h"

namespace {
bool contains(const char* haystack, const char* needle) {
  return std::strstr(haystack, needle) != nullptr;
}
}  // namespace

TEST_CASE("status strings name every code and unknown values") {
  CHECK(std::string(ls_status_string(LS_OK)) == "LS_OK");
  CHECK(std::string(ls_status_string(LS_ERR_INVALID_ARGUMENT)) == "LS_ERR_INVALID_ARGUMENT");
  CHECK(std::string(ls_status_string(LS_ERR_OUT_OF_MEMORY)) == "LS_ERR_OUT_OF_MEMORY");
  CHECK(std::string(ls_status_string(LS_ERR_UNSUPPORTED)) == "LS_ERR_UNSUPPORTED");
  CHECK(std::string(ls_status_string(LS_ERR_CUDA)) == "LS_ERR_CUDA");
  CHECK(std::string(ls_status_string(LS_ERR_CUBLAS)) == "LS_ERR_CUBLAS");
  CHECK(std::string(ls_status_string(LS_ERR_NCCL)) == "LS_ERR_NCCL");
  CHECK(std::string(ls_status_string(LS_ERR_IO)) == "LS_ERR_IO");
  CHECK(std::string(ls_status_string(LS_ERR_CORRUPT_DATA)) == "LS_ERR_CORRUPT_DATA");
  CHECK(std::string(ls_status_string(LS_ERR_INTERNAL)) == "LS_ERR_INTERNAL");
  CHECK(std::string(ls_status_string(LS_ERR_NUMERIC)) == "LS_ERR_NUMERIC");
  CHECK(std::string(ls_status_string(static_cast<ls_status>(12345))) == "LS_ERR_UNKNOWN");
  // The numeric values are part of the ABI.
  CHECK(LS_OK == 0);
  CHECK(LS_ERR_INVALID_ARGUMENT == 1);
  CHECK(LS_ERR_INTERNAL == 9);
}

TEST_CASE("versions") {
  CHECK(ls_abi_version() == LS_TRAIN_ABI_VERSION);
  CHECK(std::string(ls_version_string()).find('.') != std::string::npos);
  CHECK((ls_backends() & LS_BACKEND_CPU) != 0);
}

TEST_CASE("ls_last_error is per thread and cleared by a successful call") {
  CHECK(ls_cuda_device_count(nullptr) == LS_ERR_INVALID_ARGUMENT);
  std::string main_msg = ls_last_error();
  CHECK(main_msg.find("count") != std::string::npos);

  std::string other_before, other_after;
  std::thread t([&] {
    other_before = ls_last_error();  // this thread has made no failing call
    ls_context_options o;
    ls_context_options_init(&o);
    o.struct_size = 0;
    ls_context* ctx = nullptr;
    CHECK(ls_context_create(&o, &ctx) == LS_ERR_INVALID_ARGUMENT);
    other_after = ls_last_error();
  });
  t.join();
  CHECK(other_before.empty());
  CHECK(other_after.find("struct_size") != std::string::npos);
  // The other thread's failure did not touch this thread's message.
  CHECK(std::string(ls_last_error()) == main_msg);

  int32_t count = -1;
  CHECK(ls_cuda_device_count(&count) == LS_OK);
  CHECK(count >= 0);
  CHECK(std::string(ls_last_error()).empty());
}

TEST_CASE("context on the CPU") {
  ls_context_options o;
  ls_context_options_init(&o);
  o.device = LS_DEVICE_CPU;
  o.seed = 42;
  ls_context* ctx = nullptr;
  REQUIRE(ls_context_create(&o, &ctx) == LS_OK);
  REQUIRE(ctx != nullptr);
  ls_device_info info;
  ls_device_info_init(&info);
  CHECK(ls_context_device(ctx, &info) == LS_OK);
  CHECK(info.kind == LS_DEVICE_CPU);
  CHECK(info.multiprocessors >= 1);
  CHECK(contains(info.name, "CPU"));
  CHECK(ls_context_synchronize(ctx) == LS_OK);
  ls_context_destroy(ctx);
}

// A 0/1 field of ls_context_options: its default, 2 refused with a message naming it, both 0 and
// 1 accepted on the CPU, and an older struct that ends before it (the default applies; what lies
// past struct_size, here 2, is not read).
static void check_context_flag(int32_t ls_context_options::*field, size_t offset, const char* name,
                               int32_t default_value) {
  INFO(name);
  ls_context_options o;
  ls_context_options_init(&o);
  CHECK(o.*field == default_value);
  o.device = LS_DEVICE_CPU;
  o.*field = 2;
  ls_context* ctx = nullptr;
  CHECK(ls_context_create(&o, &ctx) == LS_ERR_INVALID_ARGUMENT);
  CHECK(contains(ls_last_error(), name));
  CHECK(ctx == nullptr);
  for (int32_t v : {0, 1}) {
    o.*field = v;
    REQUIRE(ls_context_create(&o, &ctx) == LS_OK);
    ls_context_destroy(ctx);
  }
  ls_context_options old;
  ls_context_options_init(&old);
  old.device = LS_DEVICE_CPU;
  old.*field = 2;
  old.struct_size = offset;
  REQUIRE(ls_context_create(&old, &ctx) == LS_OK);
  ls_context_destroy(ctx);
}

TEST_CASE("allow_tf32 (default 1) and gemm_autotune (default 0) take 0 or 1, others refused") {
  check_context_flag(&ls_context_options::allow_tf32, offsetof(ls_context_options, allow_tf32),
                     "allow_tf32", 1);
  // gemm_autotune = 1 is accepted on the CPU, whose backend ignores it.
  check_context_flag(&ls_context_options::gemm_autotune,
                     offsetof(ls_context_options, gemm_autotune), "gemm_autotune", 0);
}

TEST_CASE("auto device never fails for lack of a GPU; NULL options mean defaults") {
  ls_context* ctx = nullptr;
  REQUIRE(ls_context_create(nullptr, &ctx) == LS_OK);
  ls_device_info info;
  ls_device_info_init(&info);
  CHECK(ls_context_device(ctx, &info) == LS_OK);
  int32_t count = 0;
  CHECK(ls_cuda_device_count(&count) == LS_OK);
  CHECK(info.kind == (count > 0 ? LS_DEVICE_CUDA : LS_DEVICE_CPU));
  ls_context_destroy(ctx);
}

TEST_CASE("asking for CUDA where there is none is LS_ERR_UNSUPPORTED, out untouched") {
  int32_t count = 0;
  REQUIRE(ls_cuda_device_count(&count) == LS_OK);
  ls_context_options o;
  ls_context_options_init(&o);
  o.device = LS_DEVICE_CUDA;
  o.device_index = count;  // one past the last device: never valid
  ls_context* sentinel = reinterpret_cast<ls_context*>(0x1234);
  ls_context* ctx = sentinel;
  ls_status s = ls_context_create(&o, &ctx);
  CHECK(s != LS_OK);
  CHECK((s == LS_ERR_UNSUPPORTED || s == LS_ERR_INVALID_ARGUMENT));
  CHECK(ctx == sentinel);
  CHECK(contains(ls_last_error(), "cuda:"));
}

TEST_CASE("struct_size: older smaller structs get defaults; 0 and impossible sizes fail") {
  // An older caller whose struct ends before `stream`.
  struct old_options {
    size_t struct_size;
    ls_device_kind device;
    int32_t device_index;
    uint64_t seed;
  } old{};
  old.struct_size = sizeof(old);
  old.device = LS_DEVICE_CPU;
  old.seed = 7;
  ls_context* ctx = nullptr;
  REQUIRE(ls_context_create(reinterpret_cast<const ls_context_options*>(&old), &ctx) == LS_OK);
  ls_context_destroy(ctx);

  ls_context_options o;
  ls_context_options_init(&o);
  o.device = LS_DEVICE_CPU;
  for (size_t bad : {size_t{0}, size_t{1}, sizeof(size_t), size_t{1} << 40}) {
    o.struct_size = bad;
    ctx = reinterpret_cast<ls_context*>(0x1);
    CHECK(ls_context_create(&o, &ctx) == LS_ERR_INVALID_ARGUMENT);
    CHECK(ctx == reinterpret_cast<ls_context*>(0x1));
    CHECK(contains(ls_last_error(), "struct_size"));
  }

  // A newer caller's larger struct is accepted when the unknown tail is zero...
  struct newer {
    ls_context_options base;
    uint64_t future_field;
  } n{};
  ls_context_options_init(&n.base);
  n.base.device = LS_DEVICE_CPU;
  n.base.struct_size = sizeof(n);
  ctx = nullptr;
  CHECK(ls_context_create(&n.base, &ctx) == LS_OK);
  ls_context_destroy(ctx);
  // ...and refused when it asks for something this version does not know.
  n.future_field = 1;
  ctx = nullptr;
  CHECK(ls_context_create(&n.base, &ctx) == LS_ERR_UNSUPPORTED);
  CHECK(ctx == nullptr);

  // Output structs: a smaller info struct is filled only as far as it reaches.
  REQUIRE(ls_context_create(nullptr, &ctx) == LS_OK);
  ls_device_info info;
  std::memset(&info, 0xAB, sizeof(info));
  info.struct_size = 0;
  CHECK(ls_context_device(ctx, &info) == LS_ERR_INVALID_ARGUMENT);
  ls_context_destroy(ctx);
}

TEST_CASE("NULL arguments on every entry point") {
  ls_context* ctx = nullptr;
  CHECK(ls_context_create(nullptr, nullptr) == LS_ERR_INVALID_ARGUMENT);
  CHECK(contains(ls_last_error(), "out is NULL"));
  ls_device_info info;
  ls_device_info_init(&info);
  CHECK(ls_context_device(nullptr, &info) == LS_ERR_INVALID_ARGUMENT);
  CHECK(contains(ls_last_error(), "context is NULL"));
  REQUIRE(ls_context_create(nullptr, &ctx) == LS_OK);
  CHECK(ls_context_device(ctx, nullptr) == LS_ERR_INVALID_ARGUMENT);
  CHECK(contains(ls_last_error(), "info is NULL"));
  ls_context_destroy(ctx);
  CHECK(ls_context_synchronize(nullptr) == LS_ERR_INVALID_ARGUMENT);
  CHECK(ls_cuda_device_count(nullptr) == LS_ERR_INVALID_ARGUMENT);
  CHECK(ls_cuda_device_info(0, nullptr) == LS_ERR_INVALID_ARGUMENT);
  CHECK(ls_cuda_device_info(-1, &info) == LS_ERR_INVALID_ARGUMENT);
  CHECK(contains(ls_last_error(), "out of range"));
  // destroy and init functions accept NULL.
  ls_context_destroy(nullptr);
  ls_context_options_init(nullptr);
  ls_device_info_init(nullptr);
}
