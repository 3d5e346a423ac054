#!/usr/bin/env bash
# The main job: sets up a fresh machine, builds, and trains the sample English->German
# translation model (on the GPU when there is one, else a small model on the CPU).
# Extra arguments go to `ls-train train` (see `ls-train train --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
LS_BUILD_TESTS=OFF bash scripts/build.sh
build=${LS_BUILD_DIR:-build}
"$build/ls-train" info
exec "$build/ls-train" train "$@"
