// Helpers shared by the extern "C" entry points: the exception barrier, the thread-local error
// message, and reading/writing versioned structs by their struct_size.
#pragma once

#include <cstring>
#include <new>
#include <string>
#include <type_traits>

#include "ls_train.h"
#include "runtime/error.h"

namespace ls::capi {

void set_error(ls_status status, const std::string& message);
void clear_error();

// Runs body() and converts any exception into a status plus the thread-local message. The
// only place exceptions stop. body must leave out parameters untouched when it throws.
template <class F>
ls_status guarded(const char* function, F&& body) noexcept {
  try {
    clear_error();
    body();
    return LS_OK;
  } catch (const ls::Error& e) {
    set_error(e.status(), std::string(function) + ": " + e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_error(LS_ERR_OUT_OF_MEMORY, std::string(function) + ": host memory exhausted");
    return LS_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_error(LS_ERR_INTERNAL, std::string(function) + ": internal error: " + e.what());
    return LS_ERR_INTERNAL;
  } catch (...) {
    set_error(LS_ERR_INTERNAL, std::string(function) + ": internal error: unknown exception");
    return LS_ERR_INTERNAL;
  }
}

#define LS_CHECK_NOT_NULL(ptr) LS_CHECK_ARG((ptr) != nullptr, #ptr " is NULL")

// Largest struct_size accepted from a caller newer than this library: the bytes past what we
// know must then be zero (a newer caller asking for a feature we lack must not be ignored).
constexpr size_t kMaxStructSize = 4096;

// Copies the caller's input struct into `out` (which holds our defaults), reading only the
// bytes the caller's struct_size covers. min_size is the size of the struct's first version.
template <class T>
void read_struct(const T* user, T& out, size_t min_size, const char* type_name) {
  static_assert(std::is_trivially_copyable<T>::value, "versioned structs are plain C");
  LS_CHECK_NOT_NULL(user);
  size_t size = user->struct_size;
  LS_CHECK_ARG(size >= min_size && size <= kMaxStructSize,
               type_name << ".struct_size is " << size << "; expected between " << min_size
                         << " and " << sizeof(T) << " (use " << "the _init function)");
  if (size > sizeof(T)) {
    const unsigned char* extra = reinterpret_cast<const unsigned char*>(user) + sizeof(T);
    for (size_t i = 0; i < size - sizeof(T); ++i)
      LS_REQUIRE(extra[i] == 0, LS_ERR_UNSUPPORTED,
                 type_name << " has fields this library version (" << LS_VERSION_STRING
                           << ") does not know, and they are set");
  }
  std::memcpy(&out, user, size < sizeof(T) ? size : sizeof(T));
  out.struct_size = sizeof(T);
}

// Checks an output struct's struct_size before anything is computed.
template <class T>
void check_out_struct(const T* user, size_t min_size, const char* type_name) {
  LS_CHECK_NOT_NULL(user);
  size_t size = user->struct_size;
  LS_CHECK_ARG(size >= min_size && size <= kMaxStructSize,
               type_name << ".struct_size is " << size << "; expected between " << min_size
                         << " and " << sizeof(T) << " (use the _init function)");
}

// Writes `value` into the caller's output struct, only the bytes its struct_size covers;
// keeps the caller's struct_size.
template <class T>
void write_struct(T* user, const T& value) {
  size_t size = user->struct_size;
  T tmp = value;
  tmp.struct_size = size;
  std::memcpy(user, &tmp, size < sizeof(T) ? size : sizeof(T));
}

}  // namespace ls::capi
