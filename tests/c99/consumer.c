/* A C99 program using the public API: creates and destroys a context. Built in the tree, and
 * again against an installed copy through pkg-config and through find_package. */
#include <stdio.h>

#include <ls_train.h>

int main(void) {
  ls_context_options options;
  ls_context* context = NULL;
  ls_device_info info;
  ls_status status;

  ls_context_options_init(&options);
  options.device = LS_DEVICE_CPU;
  status = ls_context_create(&options, &context);
  if (status != LS_OK) {
    fprintf(stderr, "ls_context_create: %s: %s\n", ls_status_string(status), ls_last_error());
    return 1;
  }
  ls_device_info_init(&info);
  status = ls_context_device(context, &info);
  if (status != LS_OK || info.kind != LS_DEVICE_CPU) {
    fprintf(stderr, "ls_context_device: %s: %s\n", ls_status_string(status), ls_last_error());
    ls_context_destroy(context);
    return 1;
  }
  printf("ls_train %s (ABI %u) on %s\n", ls_version_string(), (unsigned)ls_abi_version(), info.name);
  ls_context_destroy(context);
  return ls_abi_version() == LS_TRAIN_ABI_VERSION ? 0 : 1;
}
