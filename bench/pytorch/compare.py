#!/usr/bin/env python3
"""ls_train against PyTorch on the same card in one run (issue #6), as a markdown table.

1. ls_train speed and memory: build-device/bench/bench_model_step (fp16 and bf16 steps of
   transformer-base/-big at batch 128 x 64, and base at 64 x 64 and 256 x 64), its lines parsed.
2. ls_train largest batch within the memory budget: bisection over the batch size with
   `ls-train plan --pre-layer-norm --json` (the planner computes the arena a batch would need
   without allocating; ls_train allocates exactly that arena once, so the plan is what the card
   must hold), for the same pre-LN model bench_model_step runs.
3. PyTorch: bench_torch_transformer.py (eager and torch.compile, fp16 autocast; largest batch by
   out-of-memory probes in eager only).
4. One table: system, mode, config, tokens, tok/s, peak GiB, largest batch in the budget, the
   ratios ls_train / eager and / compiled (speed) and ls_train / eager (memory), and the GPU's
   SM clock and power during each run's timed steps (gpu_monitor.py: nvidia-smi sampling every
   50 ms; the card may be power-capped). Written as compare.md and compare.json under --out
   with the raw logs beside them.

  python3 bench/pytorch/compare.py --out "$OUT"            # on the GPU machine, after the build
  python3 bench/pytorch/compare.py --out "$OUT" --build    # builds the two targets first
"""

import argparse
import shlex
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TORCH_SCRIPT = os.path.join(HERE, "bench_torch_transformer.py")
GIB = float(1 << 30)
PRESETS = {"base": "transformer-base", "big": "transformer-big", "tiny": "transformer-tiny"}

sys.path.insert(0, HERE)
import gpu_monitor  # noqa: E402  (beside this script)

# One line of bench_model_step per run, e.g.
# transformer-base fp16 B=128 L=64: 23.65 ms/step, 346355 target tokens/s, arena 3.51 GiB
#   (planned 2.46 GiB, lower bound 2.46 GiB, persistent 1.05 GiB), loss/token 9.123
# (then ", LayerNorm outputs kept" or ", LayerNorm backward from output" with a model option)
LS_LINE = re.compile(
    r"^(?P<preset>\S+)\s+(?P<dtype>fp16|bf16|fp32) B=(?P<batch>\d+) L=(?P<len>\d+)"
    r"(?:\s+(?P<mode>sync|async|graph))?\s*: "
    r"(?P<ms>[\d.]+) ms/step, (?P<tps>[\d.]+) target tokens/s, arena (?P<arena>[\d.]+) GiB "
    r"\(planned (?P<planned>[\d.]+) GiB, lower bound (?P<lower>[\d.]+) GiB, persistent "
    r"(?P<persistent>[\d.]+) GiB\), loss/token (?P<loss>[^,\s]+)(?:, .*)?$")

# One line of bench_torch_transformer.py per run, e.g.
# compile  big     128 x 64:    31.26 ms/step      262,035 tok/s  peak 8.19 GiB alloc ...
TORCH_LINE = re.compile(r"^(?P<mode>eager|compile)\s+(?P<config>\S+)\s+(?P<batch>\d+) x "
                        r"(?P<len>\d+):\s+(?P<ms>[\d.]+) ms/step")


def log(msg):
    print(msg, flush=True)


def run_logged(cmd, log_path, timeout=None, env=None, stamps=None):
    """Runs cmd, echoing and saving its output; returns (exit code, output). With a list
    `stamps`, appends (time.time() on arrival, line) for each output line."""
    log("$ " + " ".join(cmd))
    t0 = time.perf_counter()
    lines = []
    with open(log_path, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=REPO)
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                f.write(line)
                lines.append(line)
                if stamps is not None:
                    stamps.append((time.time(), line))
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = -9
    log(f"  (exit {rc}, {time.perf_counter() - t0:.0f} s; log {log_path})")
    return rc, "".join(lines)


def parse_ls_bench(text):
    runs = []
    for line in text.splitlines():
        m = LS_LINE.match(line.strip())
        if not m:
            continue
        g = m.groupdict()
        batch, length = int(g["batch"]), int(g["len"])
        config = next((k for k, v in PRESETS.items() if v == g["preset"]), g["preset"])
        runs.append(dict(system="ls_train", mode=g["dtype"], lsmode=g["mode"] or "sync",
                         config=config, preset=g["preset"],
                         dtype=g["dtype"], batch=batch, len=length, tokens=batch * length,
                         ms_per_step=float(g["ms"]), tokens_per_s=float(g["tps"]),
                         arena_gib=float(g["arena"]), planned_gib=float(g["planned"]),
                         lower_bound_gib=float(g["lower"]),
                         persistent_gib=float(g["persistent"]), loss_per_token=float(g["loss"])))
    return runs


def largest_fitting(fits, start, limit, resolution):
    # The same search the PyTorch side uses (doubling, then bisection), taken from its script so
    # both systems answer the question the same way. Imported late: it imports torch.
    sys.path.insert(0, HERE)
    from bench_torch_transformer import largest_fitting as search
    return search(fits, start, limit, resolution)


def ls_plan_search(ls_train, preset, length, budget_gib, device, dtype, start, limit,
                   resolution, extra=()):
    """Largest batch (rows of `length`) whose planned ls_train arena fits budget_gib."""
    budget = budget_gib * GIB
    plans = {}

    def fits(batch):
        # Pre-LN, as bench_model_step (and nn.Transformer(norm_first=True)) runs the presets.
        cmd = [ls_train, "plan", "--preset", preset, "--max-batch-tokens", str(batch * length),
               "--max-seq-len", str(length), "--dtype", dtype, "--device", device,
               "--pre-layer-norm", "--json"] + list(extra)
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip() or out.stdout}")
        plan = json.loads(out.stdout)
        plans[batch] = plan
        return plan["total_bytes"] <= budget

    best, probes = largest_fitting(fits, start, limit, resolution)
    result = dict(system="ls_train", mode=f"{dtype} (planned)", config=None, preset=preset,
                  budget_gib=budget_gib, len=length, largest_batch=best,
                  largest_tokens=best * length, resolution=resolution, plan_device=device,
                  probes=[dict(batch=b, fits=ok, arena_gib=plans[b]["total_bytes"] / GIB)
                          for b, ok in probes])
    if best in plans:
        result["arena_gib"] = plans[best]["total_bytes"] / GIB
    return result


def device_info():
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "no nvidia-smi"
    out = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


def fmt(x, spec, missing="—", suffix=""):
    return missing if x is None else format(x, spec) + suffix


def ratio(a, b):
    return a / b if a is not None and b else None


def build_table(pairs, length, ls_runs, torch_runs, ls_search, torch_search):
    """Rows per (config, tokens): ls_train fp16, PyTorch eager, PyTorch compiled."""

    def find(runs, **key):
        return next((r for r in runs if all(r.get(k) == v for k, v in key.items())
                     and "error" not in r), None)

    header = ("| system | mode | config | tokens | tok/s | peak GiB | largest batch in budget | "
              "ls_train / eager tok/s | ls_train / compiled tok/s | ls_train / eager memory | "
              "GPU during the timed steps |")
    lines = [header, "|" + " --- |" * 11]
    rows = []
    for cfg, tokens in pairs:
        # ls_train's async steps (no read-back per step), as the PyTorch loop runs; the sync and
        # CUDA-graph variants are in compare.json and the bench_model_step log.
        ls = (find(ls_runs, config=cfg, tokens=tokens, len=length, dtype="fp16", lsmode="async")
              or find(ls_runs, config=cfg, tokens=tokens, len=length, dtype="fp16"))
        eager = find(torch_runs, config=cfg, tokens=tokens, len=length, mode="eager")
        comp = find(torch_runs, config=cfg, tokens=tokens, len=length, mode="compile")
        lss = ls_search.get(cfg)
        ts = torch_search.get(cfg)
        row = dict(config=cfg, tokens=tokens, ls_train=ls, eager=eager, compile=comp,
                   speedup_vs_eager=ratio(ls and ls["tokens_per_s"],
                                          eager and eager["tokens_per_s"]),
                   speedup_vs_compile=ratio(ls and ls["tokens_per_s"],
                                            comp and comp["tokens_per_s"]),
                   memory_vs_eager=ratio(ls and ls["arena_gib"],
                                         eager and eager.get("peak_allocated_gib")),
                   memory_vs_eager_reserved=ratio(ls and ls["arena_gib"],
                                                  eager and eager.get("peak_reserved_gib")))
        # Energy per target token from each run's GPU samples (None without them).
        energy = {name: gpu_monitor.energy_per_token_uj(r and r.get("gpu"),
                                                        r and r.get("tokens_per_s"))
                  for name, r in (("ls_train", ls), ("eager", eager), ("compile", comp))}
        row["energy_uj_per_token"] = energy
        row["energy_vs_compile"] = ratio(energy["ls_train"], energy["compile"])
        rows.append(row)
        ls_batch = f"{lss['largest_batch']} x {lss['len']} (plan)" if lss else "—"
        t_batch = f"{ts['largest_batch']} x {ts['len']}" if ts else "—"
        lines.append(
            f"| ls_train | {'fp16 ' + ls['lsmode'] if ls else 'fp16'} | {cfg} | {tokens} | "
            f"{fmt(ls and ls['tokens_per_s'], ',.0f', 'not run')} | "
            f"{fmt(ls and ls['arena_gib'], '.2f', suffix=' (arena)')} | {ls_batch} | "
            f"{fmt(row['speedup_vs_eager'], '.2f', suffix='x')} | "
            f"{fmt(row['speedup_vs_compile'], '.2f', suffix='x')} | "
            f"{fmt(row['memory_vs_eager'], '.2f', suffix='x')} | "
            f"{gpu_monitor.describe(ls and ls.get('gpu'), ls and ls['tokens_per_s'])} |")
        for mode, r, batch in (("eager", eager, t_batch), ("compile", comp, "— (eager only)")):
            peak = (f"{r['peak_allocated_gib']:.2f} ({r['peak_reserved_gib']:.2f} reserved)"
                    if r and "peak_allocated_gib" in r else "—")
            gpu = gpu_monitor.describe(r and r.get("gpu"), r and r.get("tokens_per_s"))
            lines.append(f"| PyTorch | {mode} | {cfg} | {tokens} | "
                         f"{fmt(r and r['tokens_per_s'], ',.0f', 'not run')} | {peak} | {batch} "
                         f"| | | | {gpu} |")
    return "\n".join(lines), rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-compare"),
                    help="output folder (default $OUT, else ./bench-compare)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-device"),
                    help="ls_train build with bench/bench_model_step and ls-train")
    ap.add_argument("--build", action="store_true",
                    help="build the two targets first (configures --build-dir as "
                    "scripts/device_ci.sh does when it has no cache)")
    ap.add_argument("--runs",
                    default="base:8192,big:8192,base:4096,base:16384,big:4096,big:16384",
                    help="config:tokens pairs compared (bench_model_step's default matrix runs "
                    "these six)")
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--steps", type=int, default=30, help="timed steps, both systems")
    ap.add_argument("--warmup", type=int, default=10, help="PyTorch warm-up steps "
                    "(bench_model_step has a fixed 5)")
    ap.add_argument("--len", type=int, default=64)
    ap.add_argument("--budget-gib", type=float, default=16.0)
    ap.add_argument("--search-resolution", type=int, default=8)
    ap.add_argument("--plan-device", default="cuda",
                    help="workspaces counted by ls-train plan: cuda (default) or cpu")
    ap.add_argument("--plan-dtype", default="fp16",
                    help="dtype planned (fp16, as benchmarked; fp32 for a CPU-only smoke test)")
    ap.add_argument("--torch-device", default="cuda")
    ap.add_argument("--torch-args", default="",
                    help="extra arguments for bench_torch_transformer.py (one string)")
    ap.add_argument("--torch-json", default=None,
                    help="reuse this PyTorch result instead of running the script")
    ap.add_argument("--ls-log", default=None,
                    help="reuse this bench_model_step output instead of running it")
    ap.add_argument("--skip-ls-bench", action="store_true", help="no bench_model_step run")
    ap.add_argument("--ls-args", default="",
                    help="model options for both bench_model_step and `ls-train plan` (one "
                    "string, given with '=' since it starts with '--'), e.g. "
                    "--ls-args=--layer-norm-backward-from-output")
    ap.add_argument("--ls-bench-args", default="",
                    help="options for bench_model_step only, not for `ls-train plan` (context "
                    "options that leave the memory plan alone), e.g. --ls-bench-args=--gemm-autotune")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per child process")
    ap.add_argument("--gpu-index", type=int, default=0,
                    help="nvidia-smi index of the GPU both systems run on (for its clocks)")
    ap.add_argument("--no-gpu-monitor", action="store_true",
                    help="do not sample the GPU's clock and power with nvidia-smi")
    args = ap.parse_args(argv)

    monitor = gpu_monitor.GpuMonitor(index=args.gpu_index)
    monitoring = (not args.no_gpu_monitor and args.torch_device == "cuda" and
                  not (args.ls_log and args.torch_json) and monitor.start())
    try:
        return run(args, ap, monitor if monitoring else None)
    finally:
        monitor.stop()


def attach_gpu(runs, stamps, pattern, steps, monitor, key):
    """Sets run["gpu"] (gpu_monitor.summarize of the run's timed steps) for each run whose
    report line in `stamps` matches `pattern`, paired by key(run) == key(match)."""
    def key_of(d):
        try:
            return key(d)
        except (KeyError, TypeError, ValueError):  # e.g. an out-of-memory run: no batch
            return None

    for m, (t0, t1) in gpu_monitor.timed_windows(stamps, pattern, steps):
        k = key_of(m.groupdict())
        for r in runs:
            if "gpu" not in r and k is not None and key_of(r) == k:
                r["gpu"] = monitor.window(t0, t1)
                break


def attach_torch_gpu(runs, stamps, steps, monitor):
    """attach_gpu for the PyTorch script's runs. The script records each timed window in host
    time (timed_window_unix): it prints a run's line only after freeing the run's memory
    (seconds, under torch.compile), so the line's arrival time is only the fallback (runs of an
    older script)."""
    for r in runs:
        if "timed_window_unix" in r:
            r["gpu"] = monitor.window(*r["timed_window_unix"])
    attach_gpu(runs, stamps, TORCH_LINE, steps, monitor,
               lambda d: (d["mode"], d["config"], int(d["batch"]), int(d["len"])))


def run(args, ap, monitor):
    """The comparison (main's body), with `monitor` sampling the GPU (None: not sampling)."""
    os.makedirs(args.out, exist_ok=True)
    ls_extra = shlex.split(args.ls_args)
    bench_extra = shlex.split(args.ls_bench_args)
    notes = [f"ls_train model options: {args.ls_args}"] if ls_extra else []
    if bench_extra:
        notes.append(f"ls_train bench_model_step options: {args.ls_bench_args}")
    pairs = [(c, int(t)) for c, t in (x.split(":") for x in args.runs.split(",") if x)]
    configs = list(dict.fromkeys(c for c, _ in pairs))
    for c in configs:
        if c not in PRESETS:
            ap.error(f"unknown config '{c}' (known: {', '.join(PRESETS)})")
    bench_bin = os.path.join(args.build_dir, "bench", "bench_model_step")
    ls_train_bin = os.path.join(args.build_dir, "ls-train")
    device = device_info()
    log(f"# device: {device}")

    if args.build:
        if not os.path.exists(os.path.join(args.build_dir, "CMakeCache.txt")):
            # As scripts/device_ci.sh configures it; without doctest (.deps/ not carried) the
            # tests are left out, which these two targets do not need.
            have_doctest = any(os.path.exists(os.path.join(d, "doctest", "doctest.h"))
                               for d in (os.path.join(REPO, ".deps"), "/usr/include"))
            rc, _ = run_logged(["cmake", "-S", REPO, "-B", args.build_dir, "-G", "Ninja",
                                "-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_CUDA_ARCHITECTURES=90"] +
                               ([] if have_doctest else ["-DLS_BUILD_TESTS=OFF"]),
                               os.path.join(args.out, "configure.log"))
            if rc:
                sys.exit("configure failed: see configure.log")
        rc, _ = run_logged(["cmake", "--build", args.build_dir, "-j", str(os.cpu_count() or 2),
                            "--target", "bench_model_step", "ls-train"],
                           os.path.join(args.out, "build.log"))
        if rc:
            sys.exit("build failed: see build.log")

    # ---- ls_train: speed and arena
    ls_runs = []
    if args.ls_log:
        with open(args.ls_log) as f:
            ls_runs = parse_ls_bench(f.read())
    elif args.skip_ls_bench:
        notes.append("bench_model_step was not run (--skip-ls-bench).")
    elif not os.access(bench_bin, os.X_OK):
        notes.append(f"bench_model_step not found at {bench_bin} (build with the CUDA backend).")
        log("# " + notes[-1])
    else:
        cmd = [bench_bin, str(args.steps)] + [PRESETS[c] for c in configs] + ls_extra + bench_extra
        stamps = []
        rc, text = run_logged(cmd, os.path.join(args.out, "ls_bench_model_step.txt"),
                              timeout=args.timeout, stamps=stamps)
        ls_runs = parse_ls_bench(text)
        if monitor:
            attach_gpu(ls_runs, stamps, LS_LINE, args.steps, monitor,
                       lambda d: (d["preset"], d["dtype"], int(d["batch"]), int(d["len"]),
                                  d.get("lsmode") or d.get("mode") or "sync"))
        if rc:
            notes.append(f"bench_model_step exited {rc}; parsed {len(ls_runs)} lines.")
    missing = [f"{c}:{t}" for c, t in pairs
               if not any(r["config"] == c and r["tokens"] == t and r["dtype"] == "fp16"
                          for r in ls_runs)]
    if missing and ls_runs:
        notes.append("bench_model_step has no fp16 run for " + ", ".join(missing) +
                     " (it runs base and big at 64, 128 and 256 x 64 only).")

    # ---- ls_train: largest batch within the budget, from the planner
    ls_search = {}
    if args.budget_gib > 0:
        if not os.access(ls_train_bin, os.X_OK):
            notes.append(f"ls-train not found at {ls_train_bin}: no ls_train largest batch.")
        else:
            for c in configs:
                t0 = time.perf_counter()
                s = ls_plan_search(ls_train_bin, PRESETS[c], args.len, args.budget_gib,
                                   args.plan_device, args.plan_dtype, 64, 1 << 14,
                                   args.search_resolution, ls_extra)
                s["config"] = c
                s["seconds"] = time.perf_counter() - t0
                ls_search[c] = s
                log(f"ls_train {c}: largest batch in {args.budget_gib:g} GiB (planned arena, "
                    f"{args.plan_device}): {s['largest_batch']} x {args.len} "
                    f"({s.get('arena_gib', 0):.2f} GiB)")
            notes.append("ls_train's largest batch comes from its memory planner (ls-train plan: "
                         f"the arena it allocates once, {args.plan_dtype}, pre-LN as "
                         "benchmarked; the dropout rates do not change the plan: fused attention "
                         "and the ReLU FFN store no masks); PyTorch's from out-of-memory probes of the eager step under "
                         "set_per_process_memory_fraction.")

    # ---- PyTorch
    torch_result = None
    if args.torch_json:
        with open(args.torch_json) as f:
            torch_result = json.load(f)
    else:
        torch_json = os.path.join(args.out, "torch.json")
        runs_arg = ",".join(f"{c}:{t}" for c, t in pairs)
        cmd = [sys.executable, TORCH_SCRIPT, "--runs", runs_arg, "--configs", ",".join(configs),
               "--modes", args.modes, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--len", str(args.len), "--budget-gib", str(args.budget_gib),
               "--search-resolution", str(args.search_resolution), "--device", args.torch_device,
               "--json", torch_json] + args.torch_args.split()
        stamps = []
        rc, _ = run_logged(cmd, os.path.join(args.out, "torch_stdout.txt"), timeout=args.timeout,
                           stamps=stamps)
        if os.path.exists(torch_json):
            with open(torch_json) as f:
                torch_result = json.load(f)
            if monitor:
                attach_torch_gpu(torch_result.get("runs", []), stamps, args.steps, monitor)
        else:
            notes.append(f"the PyTorch script exited {rc} without results (torch_stdout.txt).")
    if re.search(r"--padding-masks(=|\s+)always\b", args.torch_args):
        notes.append("PyTorch ran with --padding-masks always: the source, target and memory "
                     "key-padding masks are passed every step (all false here), so SDPA leaves "
                     "its flash path; ls_train reads its padding flags every step either way.")
    torch_runs = torch_result["runs"] if torch_result else []
    torch_search = {s["config"]: s for s in (torch_result or {}).get("budget_search", [])}

    # ---- table
    table, rows = build_table(pairs, args.len, ls_runs, torch_runs, ls_search, torch_search)
    notes += [
        "tok/s: non-padding target tokens per second over the timed steps (batches of random "
        f"tokens, no padding, length {args.len}).",
        "peak GiB: ls_train's whole arena (its one allocation: parameters, fp16 copy, gradients, "
        "Adam state, planned activations, workspace); PyTorch's torch.cuda.max_memory_allocated "
        "over the run (max_memory_reserved in parentheses). Neither counts the CUDA context.",
        "ls_train / eager memory: arena / PyTorch peak allocated.",
        "ls_train rows: bench_model_step's async step (nothing read back inside the timed "
        "window, as in the PyTorch loop; warm-up: 5 steps, then on until the loss scale has "
        "held for 3 steps, as PyTorch's); its sync (result read back every "
        "step) and CUDA-graph steps are listed below the table.",
        "Both use the fairseq inverse_sqrt schedule's warm-up (lr from 1e-7 towards 5e-4 over "
        "4000 updates) and GradScaler's defaults; PyTorch warms up until the loss scale has "
        "held for 3 steps and reports skipped (overflowed) updates in the timed window "
        "(torch.json: skipped_steps_timed).",
    ]
    if monitor:
        notes.append(
            "GPU during the timed steps: nvidia-smi's samples (every 50 ms) inside each run's "
            "timed window (PyTorch: the window the script recorded; ls_train: steps x ms/step "
            "before the line reporting it): median SM clock, "
            "median power against the limit, and the share of samples whose clock-event reasons "
            "say power cap (or thermal slowdown). A power-capped card lowers its clock until the "
            "power fits, so a step that takes less energy runs faster. µJ/token: the mean "
            "power of the window's samples over the run's tokens/s (compare.json rows: "
            "energy_uj_per_token, energy_vs_compile). Both systems' timed windows are as long "
            "as --steps makes them (a few warm-up steps before).")
    else:
        notes.append("GPU clocks and power were not sampled (no nvidia-smi, a CPU run, "
                     "--no-gpu-monitor, or results reused from --ls-log and --torch-json).")
    torch_ver = torch_result.get("torch_version") if torch_result else None
    torch_dtype = torch_result.get("dtype", "fp16") if torch_result else "fp16"
    md = [f"# ls_train vs PyTorch, {time.strftime('%Y-%m-%d')}", "",
          f"- Device: {device}",
          f"- PyTorch {torch_ver or 'not run'}; autocast {torch_dtype}"
          f"{' + GradScaler' if torch_dtype == 'fp16' else ''}, Adam (fused on CUDA); "
          f"{args.steps} timed steps (PyTorch: after {args.warmup} warm-up steps).",
          f"- Memory budget for the largest batch: {args.budget_gib:g} GiB (rows of {args.len}; "
          f"bisection to {args.search_resolution} rows; PyTorch searched in eager mode only).",
          "", table, "", "Notes:", ""] + [f"- {n}" for n in notes]
    in_table = [id(row["ls_train"]) for row in rows if row["ls_train"]]
    other, seen = [], set()
    for r in ls_runs:
        key = (r["preset"], r["dtype"], r["lsmode"], r["batch"], r["len"])
        if id(r) not in in_table and key not in seen:
            seen.add(key)
            other.append(r)
    if other:
        md += ["", "Other ls_train runs (bench_model_step):", ""]
        md += [f"- {r['preset']} {r['dtype']} {r['lsmode']} {r['batch']} x {r['len']}: "
               f"{r['tokens_per_s']:,.0f} tok/s, arena {r['arena_gib']:.2f} GiB"
               + (f"; GPU {gpu_monitor.describe(r['gpu'], r['tokens_per_s'])}"
                  if r.get("gpu") else "")
               for r in other]
    md_text = "\n".join(md) + "\n"
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(md_text)
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(dict(date=time.strftime("%Y-%m-%d"), device=device, args=vars(args),
                       ls_train=dict(runs=ls_runs, budget_search=list(ls_search.values())),
                       pytorch=torch_result, rows=rows, notes=notes), f, indent=2)
    print()
    print(md_text)
    log(f"# wrote {os.path.join(args.out, 'compare.md')} and compare.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
