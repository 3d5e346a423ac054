"""pytest setup: find the ls_train package and library in this checkout when the environment
does not say (scripts/test.sh sets PYTHONPATH and LS_TRAIN_LIBRARY itself)."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "bindings", "python"))
if "LS_TRAIN_LIBRARY" not in os.environ:
    candidate = os.path.join(REPO, os.environ.get("LS_BUILD_DIR", "build"), "libls_train.so")
    if os.path.exists(candidate):
        os.environ["LS_TRAIN_LIBRARY"] = candidate
