// ls-train info [--json]
#include <cstdio>

#include "cli.h"

namespace cli {

int cmd_info(int argc, char** argv) {
  Args args(argc, argv, 2);
  if (args.flag("--help")) {
    std::printf(
        "usage: ls-train info [--json]\n\n"
        "Prints the library version, the ABI version, the backends compiled in and the devices\n"
        "found. A machine without a GPU (or without a driver) lists none; that is not an error.\n");
    return 0;
  }
  bool json = args.flag("--json");
  args.finish();

  uint32_t backends = ls_backends();
  int32_t count = 0;
  check(ls_cuda_device_count(&count), "ls_cuda_device_count");
  std::vector<ls_device_info> devices;
  for (int32_t i = 0; i < count; ++i) {
    ls_device_info d;
    ls_device_info_init(&d);
    check(ls_cuda_device_info(i, &d), "ls_cuda_device_info");
    devices.push_back(d);
  }

  if (json) {
    Json j;
    j.begin_object();
    j.kv("version", ls_version_string());
    j.kv("abi_version", static_cast<int64_t>(ls_abi_version()));
    j.begin_array("backends");
    if (backends & LS_BACKEND_CPU) j.kv(nullptr, "cpu");
    if (backends & LS_BACKEND_CUDA) j.kv(nullptr, "cuda");
    if (backends & LS_BACKEND_NCCL) j.kv(nullptr, "nccl");
    if (backends & LS_BACKEND_CBLAS) j.kv(nullptr, "cblas");
    j.end_array();
    j.begin_array("cuda_devices");
    for (const auto& d : devices) {
      j.begin_object();
      j.kv("index", d.index);
      j.kv("name", d.name);
      j.kv("total_memory", d.total_memory);
      j.kv("free_memory", d.free_memory);
      j.kv("compute_capability", std::to_string(d.compute_capability_major) + "." +
                                     std::to_string(d.compute_capability_minor));
      j.kv("multiprocessors", d.multiprocessors);
      j.end_object();
    }
    j.end_array();
    j.end_object();
    std::printf("%s\n", j.str().c_str());
    return 0;
  }

  std::printf("ls_train %s (ABI %u)\n", ls_version_string(), ls_abi_version());
  std::printf("backends: cpu%s%s%s\n", (backends & LS_BACKEND_CBLAS) ? " (openblas)" : "",
              (backends & LS_BACKEND_CUDA) ? ", cuda (cublasLt)" : "",
              (backends & LS_BACKEND_NCCL) ? ", nccl" : "");
  if (devices.empty()) {
    std::printf("cuda devices: none%s\n",
                (backends & LS_BACKEND_CUDA) ? " found" : " (CUDA backend not compiled in)");
  } else {
    std::printf("cuda devices: %d\n", count);
    for (const auto& d : devices)
      std::printf("  cuda:%d  %s  %s total, %s free, compute capability %d.%d, %d SMs\n", d.index,
                  d.name, human_bytes(d.total_memory).c_str(), human_bytes(d.free_memory).c_str(),
                  d.compute_capability_major, d.compute_capability_minor, d.multiprocessors);
  }
  return 0;
}

}  // namespace cli
