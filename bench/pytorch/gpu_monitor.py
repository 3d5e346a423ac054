"""The GPU's SM clock and power while benchmarks run, sampled by `nvidia-smi -lms`.

An H200 running Transformer-big's step sits at its 700 W power limit: the driver lowers the SM
clock (to ~1600 MHz from 1980 in bench/RESULTS.md's thirteenth session) until the power fits,
so a step's speed depends on how much energy it takes, and two systems compared on the same
card should be compared at the clocks they ran at. compare.py starts a GpuMonitor, stamps each
output line of the benchmarks with its arrival time, and asks for the samples inside each run's
timed steps (the steps x ms/step before the line that reports them). Each run's mean power
over its tokens per second is its energy per target token: on a power-capped card the system
that takes less energy per token is the faster one.

No GPU or no nvidia-smi: start() returns False and every window is None.
"""

import shutil
import subprocess
import threading
import time
from typing import NamedTuple, Optional

# clocks_event_reasons.active bits (nvml's nvmlClocksEventReasons):
POWER_CAP_BITS = 0x4 | 0x80  # software power cap, hardware power brake
THERMAL_BITS = 0x20 | 0x40  # software and hardware thermal slowdown


class Sample(NamedTuple):
    t: float  # host time.time() when the line arrived
    sm_mhz: float
    power_w: float
    limit_w: float
    reasons: int


def parse_sample(line, t):
    """One `nvidia-smi --format=csv,noheader,nounits` line of (clocks.sm, power, power.limit,
    event reasons) as a Sample, or None for anything else ("[N/A]", error text)."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 4:
        return None
    try:
        return Sample(t, float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3], 16))
    except ValueError:
        return None


def summarize(samples):
    """Median SM clock and power, the mean power, the limit, and the fractions of samples whose
    event reasons say power cap or thermal slowdown; None without samples."""
    if not samples:
        return None

    def median(xs):
        xs = sorted(xs)
        n = len(xs)
        return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])

    n = len(samples)
    return dict(samples=n,
                sm_mhz=median([s.sm_mhz for s in samples]),
                sm_mhz_min=min(s.sm_mhz for s in samples),
                power_w=median([s.power_w for s in samples]),
                power_w_mean=sum(s.power_w for s in samples) / n,
                power_limit_w=max(s.limit_w for s in samples),
                power_capped=sum(1 for s in samples if s.reasons & POWER_CAP_BITS) / n,
                thermal=sum(1 for s in samples if s.reasons & THERMAL_BITS) / n)


def timed_windows(stamped_lines, pattern, steps):
    """(match, (t0, t1)) for each line that `pattern` matches: the line reports `steps` timed
    steps of match.group('ms') milliseconds each, which ended when it arrived."""
    out = []
    for t, line in stamped_lines:
        m = pattern.match(line.strip())
        if m:
            out.append((m, (t - steps * float(m.group("ms")) / 1000.0, t)))
    return out


class GpuMonitor:
    """nvidia-smi sampling GPU `index` every `period_ms` into memory, on a reader thread."""

    def __init__(self, index=0, period_ms=50, smi=None):
        self.index = index
        self.period_ms = period_ms
        self.smi = smi if smi is not None else shutil.which("nvidia-smi")
        self.fields = None
        self.samples = []
        self._proc = None
        self._thread = None
        self._lock = threading.Lock()

    def _first_known(self, names):
        for name in names:
            try:
                out = subprocess.run([self.smi, "-i", str(self.index), f"--query-gpu={name}",
                                      "--format=csv,noheader,nounits"], capture_output=True,
                                     text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):  # a broken or hanging nvidia-smi
                return None
            if out.returncode == 0 and "not a valid field" not in out.stdout.lower():
                return name
        return None

    def start(self):
        """Starts sampling; False (and no samples ever) without nvidia-smi or a GPU."""
        if not self.smi:
            return False
        power = self._first_known(["power.draw.instant", "power.draw"])
        reasons = self._first_known(["clocks_event_reasons.active",
                                     "clocks_throttle_reasons.active"])
        if power is None or reasons is None:
            return False
        self.fields = ["clocks.sm", power, "power.limit", reasons]
        self._proc = subprocess.Popen(
            [self.smi, "-i", str(self.index), "--query-gpu=" + ",".join(self.fields),
             "--format=csv,noheader,nounits", f"--loop-ms={self.period_ms}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return True

    def _read(self):
        for line in self._proc.stdout:
            s = parse_sample(line, time.time())
            if s is not None:
                with self._lock:
                    self.samples.append(s)

    def stop(self):
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._thread.join(timeout=5)
            self._proc = None

    def window(self, t0, t1):
        """summarize() of the samples taken between host times t0 and t1."""
        with self._lock:
            return summarize([s for s in self.samples if t0 <= s.t <= t1])


def energy_per_token_uj(g, tokens_per_s):
    """Microjoules per target token: the mean power over the timed steps' samples divided by the
    run's tokens per second; None without samples or a rate. The samples are instants every
    50 ms, so over a short window this is an estimate (bench_model_step reads the GPU's energy
    counter for its own runs)."""
    if not g or not tokens_per_s or "power_w_mean" not in g:
        return None
    return 1e6 * g["power_w_mean"] / tokens_per_s


def describe(g, tokens_per_s=None):
    """A table cell: "1590 MHz, 693 W of 700, power-capped 83% (12 samples), 1950 µJ/token"
    ("—" without samples; the energy only with the run's tokens/s)."""
    if not g:
        return "—"
    text = f"{g['sm_mhz']:.0f} MHz, {g['power_w']:.0f} W of {g['power_limit_w']:.0f}"
    if g["power_capped"] > 0:
        text += f", power-capped {100 * g['power_capped']:.0f}%"
    if g["thermal"] > 0:
        text += f", thermal {100 * g['thermal']:.0f}%"
    text += f" ({g['samples']} samples)"
    uj = energy_per_token_uj(g, tokens_per_s)
    return text + (f", {uj:.0f} µJ/token" if uj is not None else "")
