// ls_train.h compiles as C++ (with -Wall -Wextra -Werror) and links against the shared library.
#include <ls_train.h>

#include <cstdio>

int main() {
  std::printf("%s %s\n", ls_version_string(), ls_status_string(LS_OK));
  return ls_abi_version() == LS_TRAIN_ABI_VERSION ? 0 : 1;
}
