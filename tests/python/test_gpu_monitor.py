"""bench/pytorch/gpu_monitor.py and compare.py's use of it: parsing nvidia-smi's samples, the
timed windows, the table column, and a whole sampling loop against a stand-in nvidia-smi."""
import os
import stat
import sys
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "pytorch"))
import compare  # noqa: E402
import gpu_monitor  # noqa: E402
from gpu_monitor import Sample  # noqa: E402


def test_parse_sample_reads_clock_power_limit_and_reasons():
    s = gpu_monitor.parse_sample("1590, 693.51, 700.00, 0x0000000000000004\n", 12.5)
    assert s == Sample(12.5, 1590.0, 693.51, 700.0, 4)
    assert gpu_monitor.parse_sample("[N/A], 693.5, 700.00, 0x0", 1.0) is None
    assert gpu_monitor.parse_sample("Field \"x\" is not a valid field to query.", 1.0) is None
    assert gpu_monitor.parse_sample("1590, 693.5, 700.00", 1.0) is None


def test_summarize_gives_medians_and_the_capped_and_thermal_shares():
    samples = [Sample(0, 1980, 500, 700, 0x0), Sample(1, 1600, 699, 700, 0x4),
               Sample(2, 1500, 701, 700, 0x80), Sample(3, 1400, 690, 700, 0x24)]
    g = gpu_monitor.summarize(samples)
    assert g["samples"] == 4
    assert g["sm_mhz"] == pytest.approx(1550)  # even count: the mean of the middle two
    assert g["sm_mhz_min"] == 1400
    assert g["power_w"] == pytest.approx(694.5)
    assert g["power_w_mean"] == pytest.approx((500 + 699 + 701 + 690) / 4)
    assert g["power_limit_w"] == 700
    assert g["power_capped"] == pytest.approx(0.75)  # 0x4, 0x80 and 0x24 have a power bit
    assert g["thermal"] == pytest.approx(0.25)  # 0x24 has the software thermal bit
    assert gpu_monitor.summarize([]) is None
    assert gpu_monitor.describe(g) == ("1550 MHz, 694 W of 700, power-capped 75%, thermal 25% "
                                       "(4 samples)")
    assert gpu_monitor.describe(None) == "—"
    # With the run's rate: the mean power (647.5 W) over 350,000 tokens/s, in µJ per token.
    assert gpu_monitor.energy_per_token_uj(g, 350000.0) == pytest.approx(1e6 * 647.5 / 350000)
    assert gpu_monitor.describe(g, 350000.0).endswith("(4 samples), 1850 µJ/token")
    assert gpu_monitor.energy_per_token_uj(g, None) is None
    assert gpu_monitor.energy_per_token_uj(None, 350000.0) is None


def test_timed_windows_end_at_the_report_line_and_span_steps_times_ms():
    stamped = [(100.0, "building...\n"),
               (110.0, "transformer-big  fp16 B=128 L=64 async: 23.00 ms/step, 356000 target "
                       "tokens/s, arena 6.06 GiB (planned 2.51 GiB, lower bound 2.51 GiB, "
                       "persistent 2.35 GiB), loss/token 9.1\n"),
               (130.0, "compile  big     128 x 64:    31.26 ms/step      262,035 tok/s  peak\n")]
    ls = gpu_monitor.timed_windows(stamped, compare.LS_LINE, 20)
    assert len(ls) == 1
    assert ls[0][1] == pytest.approx((110.0 - 20 * 0.023, 110.0))
    torch = gpu_monitor.timed_windows(stamped, compare.TORCH_LINE, 20)
    assert len(torch) == 1
    assert torch[0][0].group("config") == "big"
    assert torch[0][1] == pytest.approx((130.0 - 20 * 0.03126, 130.0))


class FixedMonitor:
    def __init__(self):
        self.asked = []

    def window(self, t0, t1):
        self.asked.append((t0, t1))
        return dict(samples=3, sm_mhz=1590.0, sm_mhz_min=1500.0, power_w=693.0,
                    power_w_mean=712.0, power_limit_w=700.0, power_capped=1.0, thermal=0.0)


def test_attach_gpu_pairs_each_line_with_its_run_and_the_table_shows_it():
    text = ("transformer-big  fp16 B=128 L=64 sync : 23.10 ms/step, 354000 target tokens/s, arena "
            "6.06 GiB (planned 2.51 GiB, lower bound 2.51 GiB, persistent 2.35 GiB), loss/token "
            "9.1\n"
            "transformer-big  fp16 B=128 L=64 async: 23.00 ms/step, 356000 target tokens/s, arena "
            "6.06 GiB (planned 2.51 GiB, lower bound 2.51 GiB, persistent 2.35 GiB), loss/token "
            "9.1\n")
    runs = compare.parse_ls_bench(text)
    stamps = [(50.0, line + "\n") for line in text.splitlines()]
    stamps[1] = (60.0, stamps[1][1])
    mon = FixedMonitor()
    compare.attach_gpu(runs, stamps, compare.LS_LINE, 10, mon,
                       lambda d: (d["preset"], d["dtype"], int(d["batch"]), int(d["len"]),
                                  d.get("lsmode") or d.get("mode") or "sync"))
    assert [r["lsmode"] for r in runs] == ["sync", "async"]
    assert all(r["gpu"]["sm_mhz"] == 1590.0 for r in runs)
    assert mon.asked == [pytest.approx((50.0 - 10 * 0.0231, 50.0)),
                         pytest.approx((60.0 - 10 * 0.023, 60.0))]
    torch_runs = [dict(system="pytorch", mode="eager", config="big", tokens=8192,
                       error="out of memory"),
                  dict(system="pytorch", mode="eager", config="big", batch=128, len=64,
                       tokens=8192, tokens_per_s=178000.0)]
    compare.attach_gpu(torch_runs, [(70.0, "eager    big     128 x 64:    46.00 ms/step\n")],
                       compare.TORCH_LINE, 10, mon,
                       lambda d: (d["mode"], d["config"], int(d["batch"]), int(d["len"])))
    assert "gpu" not in torch_runs[0] and torch_runs[1]["gpu"]["samples"] == 3
    del torch_runs[1]["gpu"]
    table, rows = compare.build_table([("big", 8192)], 64, runs, torch_runs, {}, {})
    lines = table.splitlines()
    assert lines[0].endswith("| GPU during the timed steps |")
    assert all(line.count("|") == 12 for line in lines)
    # ls_train async: 712 W mean over 356,000 tokens/s = 2000 µJ per token.
    assert "1590 MHz, 693 W of 700, power-capped 100% (3 samples), 2000 µJ/token" in lines[2]
    assert lines[3].endswith("| — |")  # the eager run has no samples here
    assert rows[0]["energy_uj_per_token"]["ls_train"] == pytest.approx(2000.0)
    assert rows[0]["energy_uj_per_token"]["eager"] is None
    assert rows[0]["energy_vs_compile"] is None  # no compiled run


def test_pytorch_runs_use_the_window_the_script_recorded():
    mon = FixedMonitor()
    runs = [dict(mode="compile", config="big", batch=128, len=64, timed_window_unix=[10.0, 10.6]),
            dict(mode="eager", config="big", batch=128, len=64)]  # an older script's run
    stamps = [(99.0, "compile  big     128 x 64:    31.26 ms/step\n"),
              (120.0, "eager    big     128 x 64:    46.00 ms/step\n")]
    compare.attach_torch_gpu(runs, stamps, 20, mon)
    # The compiled run's line arrived long after its steps: its recorded window counts.
    assert mon.asked == [(10.0, 10.6), pytest.approx((120.0 - 20 * 0.046, 120.0))]
    assert runs[0]["gpu"]["samples"] == 3 and runs[1]["gpu"]["samples"] == 3


def fake_smi(tmp_path):
    """An nvidia-smi stand-in: answers the field probes, then prints a sample every 10 ms."""
    path = tmp_path / "nvidia-smi"
    path.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, time
        args = " ".join(sys.argv[1:])
        if "power.draw.instant" in args and "clocks.sm" not in args:
            print('Field "power.draw.instant" is not a valid field to query.')
            sys.exit(2)
        if "--loop-ms" not in args:
            print("0x0" if "reasons" in args else "700.00")
            sys.exit(0)
        while True:
            print("1600, 695.00, 700.00, 0x0000000000000004", flush=True)
            time.sleep(0.01)
        """))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_monitor_samples_a_running_nvidia_smi_and_stops_it(tmp_path):
    mon = gpu_monitor.GpuMonitor(smi=fake_smi(tmp_path), period_ms=10)
    t0 = time.time()
    assert mon.start()
    assert mon.fields == ["clocks.sm", "power.draw", "power.limit",
                          "clocks_event_reasons.active"]
    deadline = time.time() + 10
    while len(mon.samples) < 5 and time.time() < deadline:
        time.sleep(0.02)
    mon.stop()
    g = mon.window(t0, time.time())
    assert g is not None and g["samples"] >= 5
    assert g["sm_mhz"] == 1600 and g["power_w"] == 695 and g["power_capped"] == 1.0
    n = len(mon.samples)
    time.sleep(0.1)
    assert len(mon.samples) == n  # stopped: no more samples
    assert mon.window(t0 - 100, t0 - 50) is None


def test_monitor_without_nvidia_smi_does_not_start(tmp_path):
    for smi in ("", str(tmp_path / "missing-nvidia-smi")):
        mon = gpu_monitor.GpuMonitor(smi=smi)
        assert not mon.start()
        mon.stop()
        assert mon.window(0, time.time()) is None
