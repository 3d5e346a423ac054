#!/usr/bin/env python3
"""PyTorch baseline for the ls_train whole-step benchmark (issue #6).

The same encoder-decoder as ls_train's bench/cuda/bench_model_step, written the way a PyTorch
user would: nn.Transformer(norm_first=True, batch_first=True) with ReLU, dropout 0.1 and its final
LayerNorms; fairseq-style sinusoidal positions; one embedding matrix shared by source, target and
the output projection, scaled by sqrt(d); label-smoothed cross-entropy (0.1, padding ignored,
summed); fused Adam (betas 0.9/0.98); fp16 autocast with GradScaler. Runs eager and under
torch.compile (default mode).

Per run it reports target tokens/s (non-padding target tokens; warm-up steps, then timed steps
between CUDA synchronisations), peak memory (torch.cuda.max_memory_allocated and
max_memory_reserved since a reset before the run), and per config the largest batch (rows of
--len tokens) whose training step fits a memory budget: doubling then bisection over the batch
size, each probe a fresh model + optimizer and a few steps under
torch.cuda.set_per_process_memory_fraction(budget / total). The search runs in eager mode only,
so torch.compile's compile time is paid once per run, never per probe.

  python bench/pytorch/bench_torch_transformer.py --configs base,big --tokens 4096,8192,16384 \
      --modes eager,compile --steps 30 --budget-gib 16 --json torch.json
  python bench/pytorch/bench_torch_transformer.py --device cpu --tiny      # smoke test
"""

import argparse
import contextlib
import gc
import json
import math
import sys
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD = 1  # fairseq padding_idx
EOS = 2  # first token of prev_output_tokens
FIRST_WORD = 4  # random tokens are drawn from [FIRST_WORD, vocab)

# name -> (d_model, ffn, heads, encoder layers, decoder layers, vocab)
CONFIGS = {
    "base": dict(d_model=512, ffn=2048, heads=8, enc_layers=6, dec_layers=6, vocab=32768),
    "big": dict(d_model=1024, ffn=4096, heads=16, enc_layers=6, dec_layers=6, vocab=32768),
    # ls_train's transformer-tiny (its CPU sample), for smoke tests.
    "tiny": dict(d_model=128, ffn=512, heads=4, enc_layers=2, dec_layers=2, vocab=4000),
}
# ls_train's preset names for the same configs (bench_model_step, ls-train plan).
LS_PRESETS = {"base": "transformer-base", "big": "transformer-big", "tiny": "transformer-tiny"}

GIB = float(1 << 30)


# ---------------------------------------------------------------------------------------------
# Model


def sinusoidal_table(num_positions, dim, padding_idx):
    """fairseq SinusoidalPositionalEmbedding.get_embedding: row p = [sin(p f_i)..., cos(p f_i)...]
    with f_i = exp(-i log(10000) / (half_dim - 1)), a zero last column for odd dim, and a zero
    row at padding_idx."""
    half_dim = dim // 2
    freq = torch.exp(torch.arange(half_dim, dtype=torch.float32) * -(math.log(10000.0) /
                                                                     (half_dim - 1)))
    angle = torch.arange(num_positions, dtype=torch.float32)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    table[padding_idx, :] = 0
    return table


def make_positions(tokens, padding_idx):
    """fairseq make_positions: the j-th non-padding token of a row (j from 1) gets position
    padding_idx + j; padding tokens get padding_idx (the table's zero row)."""
    mask = tokens.ne(padding_idx).long()
    return torch.cumsum(mask, dim=1) * mask + padding_idx


class Seq2SeqWithLoss(nn.Module):
    """Encoder-decoder Transformer plus its criterion: forward returns the summed label-smoothed
    cross-entropy, so torch.compile sees the whole forward (model and loss) as one graph."""

    def __init__(self, d_model, ffn, heads, enc_layers, dec_layers, vocab, max_len, dropout,
                 label_smoothing, device):
        super().__init__()
        self.vocab = vocab
        self.label_smoothing = label_smoothing
        self.embed_scale = math.sqrt(d_model)
        # One matrix for source tokens, target tokens and the output projection (fairseq
        # --share-all-embeddings); fairseq's init: N(0, d^-1/2) with a zero padding row.
        self.embed = nn.Embedding(vocab, d_model, padding_idx=PAD, device=device)
        nn.init.normal_(self.embed.weight, mean=0.0, std=d_model**-0.5)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()
        self.register_buffer("positions",
                             sinusoidal_table(PAD + 1 + max_len, d_model, PAD).to(device),
                             persistent=False)
        self.embed_dropout = nn.Dropout(dropout)
        with warnings.catch_warnings():
            # nn.Transformer warns that norm_first disables the nested-tensor fast path (an
            # inference-only path); nothing to act on here.
            warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")
            self.transformer = nn.Transformer(d_model=d_model, nhead=heads,
                                              num_encoder_layers=enc_layers,
                                              num_decoder_layers=dec_layers,
                                              dim_feedforward=ffn, dropout=dropout,
                                              activation="relu", batch_first=True,
                                              norm_first=True, device=device)

    def embed_tokens(self, tokens):
        x = self.embed(tokens) * self.embed_scale + self.positions[make_positions(tokens, PAD)]
        return self.embed_dropout(x)

    def forward(self, src_tokens, prev_output_tokens, target, padded=False):
        """Summed loss over the non-padding target tokens. `padded` says whether any row has
        padding: when none does (the benchmark's batches), the key-padding masks are left out,
        which is exact and lets the causal self-attention keep SDPA's is_causal fast path."""
        length = prev_output_tokens.size(1)
        causal = torch.triu(
            torch.ones(length, length, dtype=torch.bool, device=prev_output_tokens.device), 1)
        src_pad = src_tokens.eq(PAD) if padded else None
        tgt_pad = prev_output_tokens.eq(PAD) if padded else None
        out = self.transformer(self.embed_tokens(src_tokens),
                               self.embed_tokens(prev_output_tokens), tgt_mask=causal,
                               src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                               memory_key_padding_mask=src_pad, tgt_is_causal=True)
        logits = F.linear(out, self.embed.weight)
        return F.cross_entropy(logits.view(-1, self.vocab), target.reshape(-1),
                               ignore_index=PAD, label_smoothing=self.label_smoothing,
                               reduction="sum")


# ---------------------------------------------------------------------------------------------
# Training step


def make_batch(batch, length, vocab, device, seed):
    """Random tokens in [FIRST_WORD, vocab), no padding; prev_output = [eos] + target[:-1].
    The batches have no padding, so Trainer.step's has_padding stays False for them."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    src = torch.randint(FIRST_WORD, vocab, (batch, length), generator=g, dtype=torch.long)
    target = torch.randint(FIRST_WORD, vocab, (batch, length), generator=g, dtype=torch.long)
    prev = torch.cat([torch.full((batch, 1), EOS, dtype=torch.long), target[:, :-1]], dim=1)
    num_tokens = int(target.ne(PAD).sum())
    return src.to(device), prev.to(device), target.to(device), num_tokens


class Trainer:
    """Model, fused Adam and GradScaler for one run; step() is one training update."""

    def __init__(self, cfg, args, device, amp_dtype, compile_model):
        self.device = device
        self.padding_masks = args.padding_masks
        torch.manual_seed(args.seed)  # the same initial weights in every run of a config
        self.model = Seq2SeqWithLoss(**CONFIGS[cfg], max_len=args.len, dropout=args.dropout,
                                     label_smoothing=args.label_smoothing, device=device)
        self.model.train()
        params = list(self.model.parameters())
        fused = device.type == "cuda"  # fused Adam is the CUDA kernel; CPU uses the default
        self.opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.98), eps=1e-8,
                                    fused=fused or None)
        # ls_trainer_config's default schedule (fairseq inverse_sqrt): linear warm-up from
        # warmup_init_lr to lr over warmup_updates, then lr * sqrt(warmup / t). A benchmark's
        # few dozen steps stay in the warm-up, as ls_train's do.
        warmup, init_lr, peak = args.warmup_updates, args.warmup_init_lr, args.lr

        def lr_factor(t):  # t = updates done; LambdaLR multiplies the base lr (peak)
            if t < warmup:
                return (init_lr + t * (peak - init_lr) / warmup) / peak
            return math.sqrt(warmup / max(t, 1))

        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_factor)
        self.amp_dtype = amp_dtype
        # Dynamic loss scaling only for fp16 (GradScaler's defaults: 65536, x2 / 2000, x0.5).
        self.scaler = torch.amp.GradScaler(device.type,
                                           enabled=amp_dtype == torch.float16)
        self.forward = torch.compile(self.model) if compile_model else self.model
        self.num_params = sum(p.numel() for p in params)
        self._materialize_optimizer_state()

    def _materialize_optimizer_state(self):
        # Adam creates its moments lazily on the first update that is not skipped; with fp16 the
        # first steps at scale 65536 may overflow and be skipped, which would leave the moments
        # out of a short probe's peak memory. One update with zero gradients creates them and
        # leaves the weights unchanged (m = v = 0, no weight decay).
        for p in self.model.parameters():
            p.grad = torch.zeros_like(p)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def autocast(self):
        if self.amp_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def step(self, src, prev, target, has_padding=False):
        # "auto" passes the key-padding masks only when the batch has padding (the benchmark's
        # batches have none); "always" passes them every step, as a training script does that
        # does not know its batches are unpadded. The caller says whether the batch has padding
        # (known when it is made, so no host synchronisation here).
        padded = self.padding_masks == "always" or has_padding
        with self.autocast():
            loss = self.forward(src, prev, target, padded=padded)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.schedule.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def loss_scale(trainer):
    return trainer.scaler.get_scale() if trainer.scaler.is_enabled() else 1.0


def bench_run(cfg, tokens, mode, args, device, amp_dtype):
    """One (config, token budget, mode) run: warm-up, then timed steps; returns a result dict."""
    if tokens % args.len:
        raise ValueError(f"--tokens {tokens} is not a multiple of --len {args.len}")
    batch = tokens // args.len
    free_memory(device)
    if mode == "compile":
        torch._dynamo.reset()  # every compiled run compiles from the start: its time is its own
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(cfg, args, device, amp_dtype, compile_model=mode == "compile")
    src, prev, target, num_tokens = make_batch(batch, args.len, CONFIGS[cfg]["vocab"], device,
                                               seed=args.seed)
    t0 = time.perf_counter()
    first_loss = trainer.step(src, prev, target)
    sync(device)
    first_step_s = time.perf_counter() - t0  # includes compilation under torch.compile
    # The first forward sees the same weights and batch in every mode (only dropout's random
    # stream differs), so eager and compiled first losses agree closely: a correctness check.
    first_loss = float(first_loss) / num_tokens
    for _ in range(max(args.warmup - 1, 0)):
        trainer.step(src, prev, target)
    # The summed loss at GradScaler's initial 65536 overflows fp16 gradients for several steps
    # (base: ~6 halvings, big: ~9): warm up further until the scale has held for 3 steps in a
    # row, so that the timed steps are real updates, not skipped ones.
    warmup_steps, held, scale = args.warmup, 0, loss_scale(trainer)
    while trainer.scaler.is_enabled() and held < 3 and warmup_steps < args.warmup + 40:
        trainer.step(src, prev, target)
        warmup_steps += 1
        new_scale = loss_scale(trainer)
        held = held + 1 if new_scale == scale else 0
        scale = new_scale
    sync(device)
    scale_before = loss_scale(trainer)
    t0, unix0 = time.perf_counter(), time.time()
    for _ in range(args.steps):
        loss = trainer.step(src, prev, target)
    sync(device)
    seconds = time.perf_counter() - t0
    unix1 = time.time()  # the timed window in host time, for compare.py's clock samples
    scale_after = loss_scale(trainer)
    # GradScaler only grows after 2000 clean steps, so within the timed window every halving
    # of the scale is one skipped (overflowed) update.
    skipped = int(round(math.log2(scale_before / scale_after))) if scale_after > 0 else -1
    result = dict(system="pytorch", mode=mode, config=cfg, preset=LS_PRESETS[cfg], batch=batch,
                  len=args.len, tokens=num_tokens, steps=args.steps, warmup=warmup_steps,
                  dtype=str(amp_dtype).replace("torch.", ""), num_params=trainer.num_params,
                  ms_per_step=1e3 * seconds / args.steps,
                  tokens_per_s=num_tokens * args.steps / seconds, first_step_s=first_step_s,
                  first_loss_per_token=first_loss, loss_per_token=float(loss) / num_tokens,
                  loss_scale=scale_after,
                  skipped_steps_timed=skipped, timed_window_unix=[unix0, unix1],
                  padding_masks=args.padding_masks)
    if device.type == "cuda":
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / GIB
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
    del trainer, src, prev, target, loss
    free_memory(device)
    return result


# ---------------------------------------------------------------------------------------------
# Largest batch within a memory budget


def largest_fitting(fits, start, limit, resolution):
    """Largest n in [1, limit] with fits(n) true, for a fits() that is monotone (true up to some
    n, false above): doubles from `start` until a probe fails (or limit is reached), then bisects
    between the last fit and the first failure until they are within `resolution`. Returns
    (n or 0 if even 1 fails, [(n, fitted), ...] in probe order)."""
    probes = []

    def probe(n):
        ok = bool(fits(n))
        probes.append((n, ok))
        return ok

    lo, hi = 0, None  # lo fits (0: nothing known to fit), hi fails (None: no failure seen)
    n = max(1, min(start, limit))
    while True:
        if probe(n):
            lo = n
            if n >= limit:
                return lo, probes
            n = min(2 * n, limit)
        else:
            hi = n
            break
    while hi - lo > max(resolution, 1):
        mid = (lo + hi) // 2
        if probe(mid):
            lo = mid
        else:
            hi = mid
    # Below the resolution the answer is rounded down to a probed fit; with resolution 1 it is
    # exact. A start that already fails bisects down from it.
    return lo, probes


def is_oom(err):
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    if isinstance(err, oom_types):
        return True
    # cuBLAS / cuDNN report a failed workspace allocation as a RuntimeError.
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or
                                              "ALLOC_FAILED" in text)


def budget_search(cfg, args, device, amp_dtype):
    """Largest batch (rows of --len) whose eager training step fits --budget-gib."""
    total = torch.cuda.get_device_properties(device).total_memory
    budget = args.budget_gib * GIB
    fraction = min(budget / total, 1.0)
    details = {}

    def fits(batch):
        free_memory(device)
        torch.cuda.reset_peak_memory_stats(device)
        ok = False
        try:
            trainer = Trainer(cfg, args, device, amp_dtype, compile_model=False)
            src, prev, target, _ = make_batch(batch, args.len, CONFIGS[cfg]["vocab"], device,
                                              seed=args.seed)
            for _ in range(args.probe_steps):
                trainer.step(src, prev, target)
            sync(device)
            ok = True
        except Exception as err:  # only running out of memory means "does not fit"
            if not is_oom(err):
                raise
        # Leaving the try drops the traceback; the locals below go with this frame.
        trainer = src = prev = target = None
        if ok:
            details[batch] = dict(peak_allocated_gib=torch.cuda.max_memory_allocated(device) / GIB,
                                  peak_reserved_gib=torch.cuda.max_memory_reserved(device) / GIB)
        free_memory(device)
        print(f"  probe {cfg} batch {batch} x {args.len}: {'fits' if ok else 'out of memory'}",
              file=sys.stderr, flush=True)
        return ok

    torch.cuda.set_per_process_memory_fraction(fraction, device)
    try:
        t0 = time.perf_counter()
        best, probes = largest_fitting(fits, args.search_start, args.search_limit,
                                       args.search_resolution)
        seconds = time.perf_counter() - t0
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        free_memory(device)
    result = dict(system="pytorch", mode="eager", config=cfg, preset=LS_PRESETS[cfg],
                  budget_gib=args.budget_gib, device_total_gib=total / GIB,
                  memory_fraction=fraction, len=args.len, largest_batch=best,
                  largest_tokens=best * args.len, resolution=args.search_resolution,
                  probe_steps=args.probe_steps, seconds=seconds,
                  probes=[dict(batch=b, fits=ok, **details.get(b, {})) for b, ok in probes])
    result.update(details.get(best, {}))
    return result


# ---------------------------------------------------------------------------------------------
# Self-check of the pure helpers (no GPU, no model): python ... --self-test


def self_test():
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    for true_max in (1, 5, 63, 64, 65, 100, 1000, 4096):
        for res in (1, 8):
            got, probes = largest_fitting(lambda n: n <= true_max, 64, 4096, res)
            check(got <= true_max and true_max - got < res,
                  f"largest_fitting(max {true_max}, res {res}) = {got}")
            check(all(ok == (n <= true_max) for n, ok in probes), "probe answers")
    got, _ = largest_fitting(lambda n: False, 64, 4096, 1)
    check(got == 0, f"nothing fits -> {got}")
    got, _ = largest_fitting(lambda n: True, 64, 1000, 1)
    check(got == 1000, f"everything fits up to the limit -> {got}")

    tokens = torch.tensor([[5, 6, 7, PAD], [PAD, PAD, 9, 10]])
    pos = make_positions(tokens, PAD)
    check(pos.tolist() == [[2, 3, 4, PAD], [PAD, PAD, 2, 3]], f"positions {pos.tolist()}")
    table = sinusoidal_table(10, 7, PAD)
    half = 3
    p, i = 4, 2
    f = math.exp(-i * math.log(10000.0) / (half - 1))
    check(abs(table[p, i].item() - math.sin(p * f)) < 1e-6, "sin column")
    check(abs(table[p, half + i].item() - math.cos(p * f)) < 1e-6, "cos column")
    check(table[:, 6].abs().max().item() == 0 and table[PAD].abs().max().item() == 0,
          "odd last column and padding row are zero")
    for f_ in failures:
        print("FAILED:", f_)
    print(f"self-test: {0 if failures else 1} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------
# Driver


def parse_list(text, kind=str):
    return [kind(x) for x in text.split(",") if x.strip()]


def format_table(runs, searches):
    lines = ["| mode | config | batch x len | tokens | ms/step | tok/s | peak alloc GiB | "
             "peak reserved GiB | first step s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        alloc = f"{r['peak_allocated_gib']:.2f}" if "peak_allocated_gib" in r else "n/a"
        res = f"{r['peak_reserved_gib']:.2f}" if "peak_reserved_gib" in r else "n/a"
        lines.append(f"| {r['mode']} | {r['config']} | {r['batch']} x {r['len']} | "
                     f"{r['tokens']} | {r['ms_per_step']:.2f} | {r['tokens_per_s']:,.0f} | "
                     f"{alloc} | {res} | {r['first_step_s']:.1f} |")
    if searches:
        lines += ["", "| config | budget GiB | largest batch (eager) | tokens | peak alloc GiB | "
                  "probes |", "| --- | --- | --- | --- | --- | --- |"]
        for s in searches:
            peak = f"{s['peak_allocated_gib']:.2f}" if "peak_allocated_gib" in s else "n/a"
            lines.append(f"| {s['config']} | {s['budget_gib']:g} | {s['largest_batch']} x "
                         f"{s['len']} | {s['largest_tokens']} | {peak} | {len(s['probes'])} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="base,big", help="base, big, tiny (comma list)")
    ap.add_argument("--tokens", default="4096,8192,16384",
                    help="target tokens per batch (batch = tokens / len), comma list")
    ap.add_argument("--runs", default=None,
                    help="explicit config:tokens pairs (e.g. base:8192,big:8192,base:4096); "
                    "overrides the --configs x --tokens cross product for the throughput runs")
    ap.add_argument("--modes", default="eager,compile", help="eager, compile (comma list)")
    ap.add_argument("--len", type=int, default=64, help="source and target length")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=10,
                    help="untimed steps first (>= 1); with fp16, more until the loss scale "
                    "has held for 3 steps")
    ap.add_argument("--budget-gib", type=float, default=16.0,
                    help="memory budget for the largest-batch search (0: no search)")
    ap.add_argument("--search-start", type=int, default=64, help="first batch probed")
    ap.add_argument("--search-limit", type=int, default=1 << 14, help="largest batch probed")
    ap.add_argument("--search-resolution", type=int, default=8,
                    help="stop bisecting when the fit and the failure are this many rows apart")
    ap.add_argument("--probe-steps", type=int, default=2, help="training steps per probe")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--dtype", default=None, choices=["fp16", "bf16", "fp32"],
                    help="autocast dtype (default fp16 on CUDA, bf16 on CPU)")
    ap.add_argument("--tiny", action="store_true",
                    help="smoke test: tiny model, batch 4 x 8, 2 steps, 1 warm-up, no search")
    ap.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    ap.add_argument("--warmup-updates", type=int, default=4000)
    ap.add_argument("--warmup-init-lr", type=float, default=1e-7)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--padding-masks", default="auto", choices=["auto", "always"],
                    help="auto: key-padding masks only for batches with padding (none here; "
                    "keeps SDPA's causal flash path); always: pass them every step")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--self-test", action="store_true",
                    help="check the search and position helpers, then exit")
    args = ap.parse_args(argv)
    # LambdaLR warns when its step() follows a GradScaler-skipped optimizer step; expected here.
    warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
    if args.self_test:
        return self_test()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is false (use --device cpu)")
    if args.tiny:
        args.configs, args.len, args.tokens, args.runs = "tiny", 8, "32", None
        args.steps, args.warmup, args.budget_gib = 2, 1, 0.0
    dtype_name = args.dtype or ("fp16" if device.type == "cuda" else "bf16")
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    if amp_dtype == torch.float16 and device.type != "cuda":
        ap.error("fp16 autocast needs CUDA; use --dtype bf16 or fp32 on the CPU")
    configs = parse_list(args.configs)
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config '{c}' (known: {', '.join(CONFIGS)})")
    if args.runs:
        pairs = [(c, int(t)) for c, t in (x.split(":") for x in parse_list(args.runs))]
    else:
        pairs = [(c, t) for c in configs for t in parse_list(args.tokens, int)]
    modes = parse_list(args.modes)
    for m in modes:
        if m not in ("eager", "compile"):
            ap.error(f"unknown mode '{m}' (eager, compile)")
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be at least 1")
    if device.type == "cuda":
        if device.index is None:  # memory and device queries below want an index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)

    info = dict(system="pytorch", torch_version=torch.__version__, device=str(device),
                device_name=(torch.cuda.get_device_name(device) if device.type == "cuda" else
                             "cpu"),
                cuda_version=torch.version.cuda, dtype=dtype_name, args=vars(args))
    if device.type == "cuda":
        info["device_total_gib"] = torch.cuda.get_device_properties(device).total_memory / GIB
    print(f"# PyTorch {torch.__version__} on {info['device_name']}, autocast {dtype_name}, "
          f"key-padding masks {args.padding_masks}", flush=True)

    runs = []
    # Modes outermost: eager numbers come first, and one compile failure cannot hide them.
    for mode in modes:
        for cfg, tokens in pairs:
            try:
                r = bench_run(cfg, tokens, mode, args, device, amp_dtype)
            except Exception as err:
                if not is_oom(err):
                    raise
                free_memory(device)
                r = dict(system="pytorch", mode=mode, config=cfg, preset=LS_PRESETS[cfg],
                         tokens=tokens, error=f"out of memory: {str(err).splitlines()[0]}")
                print(f"{mode} {cfg} {tokens}: {r['error']}", flush=True)
                runs.append(r)
                continue
            print(f"{mode:8s} {cfg:5s} {r['batch']:5d} x {r['len']}: {r['ms_per_step']:8.2f} "
                  f"ms/step {r['tokens_per_s']:12,.0f} tok/s  peak "
                  f"{r.get('peak_allocated_gib', float('nan')):.2f} GiB alloc "
                  f"{r.get('peak_reserved_gib', float('nan')):.2f} GiB reserved  first step "
                  f"{r['first_step_s']:.1f} s  loss/token first {r['first_loss_per_token']:.3f} "
                  f"last {r['loss_per_token']:.3f}  warm-up {r['warmup']} skipped "
                  f"{r['skipped_steps_timed']}", flush=True)
            runs.append(r)

    searches = []
    if args.budget_gib > 0:
        if device.type != "cuda":
            print("# largest-batch search skipped: it needs CUDA", flush=True)
        else:
            for cfg in dict.fromkeys(c for c, _ in pairs):
                s = budget_search(cfg, args, device, amp_dtype)
                print(f"budget   {cfg:5s} {args.budget_gib:g} GiB: largest batch "
                      f"{s['largest_batch']} x {args.len} ({len(s['probes'])} probes, "
                      f"{s['seconds']:.0f} s)", flush=True)
                searches.append(s)

    ok_runs = [r for r in runs if "error" not in r]
    print()
    print(format_table(ok_runs, searches))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info, runs=runs, budget_search=searches), f, indent=2)
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
