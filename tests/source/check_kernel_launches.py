#!/usr/bin/env python3
"""Source check of the CUDA backend's launch discipline (layers/kernels/cuda/*.cu, *.cuh).

Programmatic dependent launch (cuda_common.cuh, launch_kernel) lets a kernel start while the one
before it drains, so every kernel must begin with pdl_wait(), before any memory access or early
return, and must be launched through launch_kernel (a plain <<<...>>> launch of a kernel whose
successor waits only on it would still be correct, but one launched with the attribute and no
wait would race). This test fails, naming the kernel, when a __global__ function's first
statement is not pdl_wait(); or when a <<<...>>> launch appears in the backend.
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
files = sorted((root / "layers" / "kernels" / "cuda").glob("*.cu")) + sorted(
    (root / "layers" / "kernels" / "cuda").glob("*.cuh"))
if not files:
    sys.exit(f"no CUDA sources under {root}/layers/kernels/cuda")
problems, kernels = [], 0
for f in files:
    text = f.read_text()
    code = re.sub(r"//[^\n]*", "", text)  # comments may mention either
    for m in re.finditer(r"__global__\b", code):
        body = code.index("{", m.end())
        name = re.findall(r"(\w+)\s*\(", code[m.end():body])
        kernels += 1
        first = code[body + 1:].lstrip()
        if not first.startswith("pdl_wait();"):
            problems.append(f"{f.name}: kernel {name[-1] if name else '?'} does not start with pdl_wait()")
    for m in re.finditer(r"<<<", code):
        line = code[:m.start()].count("\n") + 1
        problems.append(f"{f.name}:{line}: <<<...>>> launch (use launch_kernel)")
if kernels == 0:
    problems.append("no __global__ kernels found")
for p in problems:
    print(p)
print(f"{kernels} kernels checked in {len(files)} files, {len(problems)} problems")
sys.exit(1 if problems else 0)
