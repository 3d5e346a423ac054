#!/usr/bin/env bash
# Installs the built tree into a temporary prefix, then builds and runs the C99 consumer
# twice: through pkg-config and through CMake's find_package(ls_train).
set -euo pipefail
build=$1; src=$2; work=$3
rm -rf "$work"; mkdir -p "$work"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log"
libdir=$(find "$prefix" -name 'libls_train.so.0' -printf '%h\n' | head -n1)
test -n "$libdir" || { echo "libls_train.so.0 not installed"; exit 1; }
test -f "$prefix/include/ls_train.h" || { echo "ls_train.h not installed"; exit 1; }
test -x "$prefix/bin/ls-train" || { echo "ls-train not installed"; exit 1; }

# 1. pkg-config
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -std=c99 -Wall -Wextra -Werror $(pkg-config --cflags ls_train) "$src/c99/consumer.c" \
   -o "$work/consumer_pkgconfig" $(pkg-config --libs ls_train) -Wl,-rpath,"$libdir"
"$work/consumer_pkgconfig"

# 2. find_package
cmake -S "$src/install/consumer" -B "$work/cmake_build" -DCMAKE_PREFIX_PATH="$prefix" \
      -DCONSUMER_SOURCE="$src/c99/consumer.c" >"$work/configure.log"
cmake --build "$work/cmake_build" >"$work/build.log"
"$work/cmake_build/consumer"

# 3. the installed command runs
"$prefix/bin/ls-train" info >/dev/null
echo "install check passed"
