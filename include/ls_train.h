/*
 * ls_train.h -- the public C API of libls_train, a mixed-precision Transformer training runtime.
 *
 * Pure C (C99 and later; also compiles as C++). This is the only public header.
 *
 * Conventions
 * - Every fallible call returns ls_status. LS_OK (0) is success. On failure, ls_last_error()
 *   returns a message for the calling thread, out parameters are left untouched and nothing
 *   leaks. No call aborts, exits or lets a C++ exception escape.
 * - Objects are opaque handles: ls_X_create(..., &handle) / ls_X_destroy(handle). Every destroy
 *   accepts NULL.
 * - Structs passed in or out begin with `size_t struct_size`, set by the caller to
 *   sizeof(the struct as the caller knows it). The library reads (or writes) only the fields
 *   that size covers and uses defaults for the rest, so fields are only ever appended. Use the
 *   matching ls_X_init() function to fill a struct with defaults and the right struct_size.
 *   A struct_size of 0, or one smaller than the first version of the struct, is an error.
 * - Streams cross the boundary as `void*` (a cudaStream_t), never owned by the library.
 */
#ifndef LS_TRAIN_H_
#define LS_TRAIN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define LS_API
#else
#define LS_API __attribute__((visibility("default")))
#endif

/* ABI version: bumped on any incompatible change; it is also the soname's major number. */
#define LS_TRAIN_ABI_VERSION 0

/* ------------------------------------------------------------------------------------------
 * Status and errors
 * ---------------------------------------------------------------------------------------- */

/* Stable status codes. Values never change; new codes are only appended. */
typedef enum ls_status {
  LS_OK = 0,
  LS_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer, a bad struct_size, a value out of range */
  LS_ERR_OUT_OF_MEMORY = 2,    /* host or device memory could not be had */
  LS_ERR_UNSUPPORTED = 3,      /* not available in this build or on this device */
  LS_ERR_CUDA = 4,             /* a CUDA runtime call failed */
  LS_ERR_CUBLAS = 5,           /* a cuBLAS / cuBLASLt call failed */
  LS_ERR_NCCL = 6,             /* an NCCL call failed */
  LS_ERR_IO = 7,               /* a file could not be opened, read or written */
  LS_ERR_CORRUPT_DATA = 8,     /* a file or buffer is not what it claims (bad magic, checksum) */
  LS_ERR_INTERNAL = 9,         /* a bug in ls_train: please report it with the message */
  LS_ERR_NUMERIC = 10          /* training cannot go on: e.g. the loss scale fell below its minimum */
} ls_status;

/* A short constant name for a status ("LS_OK", "LS_ERR_INVALID_ARGUMENT", ...). Never NULL;
 * unknown values give "LS_ERR_UNKNOWN". */
LS_API const char* ls_status_string(ls_status status);

/* The message of the last failed call on this thread ("" if none). Valid until the next
 * ls_* call on this thread. Never NULL. */
LS_API const char* ls_last_error(void);

/* LS_TRAIN_ABI_VERSION of the library actually loaded. */
LS_API uint32_t ls_abi_version(void);

/* The library version, e.g. "0.1.0". */
LS_API const char* ls_version_string(void);

/* Backends and libraries compiled into this build: a mask of ls_backend_flags. */
typedef enum ls_backend_flags {
  LS_BACKEND_CPU = 1,   /* always */
  LS_BACKEND_CUDA = 2,  /* the CUDA backend (cuBLASLt) */
  LS_BACKEND_NCCL = 4,  /* NCCL gradient synchronisation */
  LS_BACKEND_CBLAS = 8  /* the CPU backend uses an optimised CBLAS (OpenBLAS) */
} ls_backend_flags;
LS_API uint32_t ls_backends(void);

/* ------------------------------------------------------------------------------------------
 * Devices
 * ---------------------------------------------------------------------------------------- */

typedef enum ls_device_kind {
  LS_DEVICE_AUTO = 0, /* the first usable GPU, else the CPU */
  LS_DEVICE_CPU = 1,
  LS_DEVICE_CUDA = 2
} ls_device_kind;

typedef struct ls_device_info {
  size_t struct_size;
  ls_device_kind kind;        /* LS_DEVICE_CPU or LS_DEVICE_CUDA */
  int32_t index;              /* CUDA ordinal; 0 for the CPU */
  char name[128];             /* e.g. "NVIDIA H100 80GB HBM3" or "CPU (2 threads)" */
  uint64_t total_memory;      /* bytes */
  uint64_t free_memory;       /* bytes, at the time of the query */
  int32_t compute_capability_major; /* 0 for the CPU */
  int32_t compute_capability_minor;
  int32_t multiprocessors;    /* SMs, or logical CPUs */
} ls_device_info;

/* Fills defaults and struct_size. */
LS_API void ls_device_info_init(ls_device_info* info);

/* Number of usable CUDA devices. 0 (and LS_OK) when there is no GPU, no driver, or the CUDA
 * backend is not compiled in. */
LS_API ls_status ls_cuda_device_count(int32_t* count);

/* Information on CUDA device `index` (0 <= index < count). */
LS_API ls_status ls_cuda_device_info(int32_t index, ls_device_info* info);

/* ------------------------------------------------------------------------------------------
 * Context: the device, its stream and library handles, and the random seed.
 * ---------------------------------------------------------------------------------------- */

typedef struct ls_context ls_context;

typedef struct ls_context_options {
  size_t struct_size;
  ls_device_kind device; /* default LS_DEVICE_AUTO */
  int32_t device_index;  /* CUDA ordinal when device is LS_DEVICE_CUDA; default 0 */
  uint64_t seed;         /* default 1 */
  void* stream;          /* optional cudaStream_t to run on; NULL = the context's own stream */
} ls_context_options;

LS_API void ls_context_options_init(ls_context_options* options);

/* Creates a context. options may be NULL (all defaults). LS_DEVICE_AUTO never fails for lack
 * of a GPU: it falls back to the CPU. LS_DEVICE_CUDA on a machine without one is
 * LS_ERR_UNSUPPORTED. */
LS_API ls_status ls_context_create(const ls_context_options* options, ls_context** out);
LS_API void ls_context_destroy(ls_context* context);

/* The device this context runs on. */
LS_API ls_status ls_context_device(const ls_context* context, ls_device_info* info);

/* Waits until all work queued by this context has finished. */
LS_API ls_status ls_context_synchronize(ls_context* context);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LS_TRAIN_H_ */
