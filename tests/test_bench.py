"""``edgeproto bench``: latency statistics, benches on a tiny trained bundle, tegrastats parsing, errors."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from edgeproto.errors import EdgeprotoError
from edgeproto.measure import latency
from edgeproto.measure.bench import bench_bundle, parse_batches
from edgeproto.commands.bench import run_bench
from edgeproto.measure.tegrastats import (
    average_power_mw,
    energy_per_inference_mj,
    input_rail,
    load_summary,
    parse_line,
    power_summary,
)
from edgeproto.export.bundle_writer import export_bundle

FAST = dict(min_queries=5, min_seconds=0.05, warmup=2)


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "b"
    export_bundle(trained("l2_log"), path)
    return path


# --------------------------------------------------------------------------- latency statistics


def test_summarize_nearest_rank_percentiles():
    stats = latency.summarize([float(x) for x in range(100, 0, -1)], batch=4, duration_s=2.0)
    assert (stats["p50_ms"], stats["p90_ms"], stats["p99_ms"]) == (50.0, 90.0, 99.0)
    assert (stats["min_ms"], stats["max_ms"], stats["mean_ms"]) == (1.0, 100.0, 50.5)
    assert stats["queries"] == 100 and stats["throughput"] == pytest.approx(4 * 100 / 2.0)
    assert stats["qps"] == pytest.approx(50.0)


def test_measure_on_a_fake_clock(monkeypatch):
    """Each call of fn advances a fake clock by a known latency: the statistics are exact."""
    now = [0]
    monkeypatch.setattr(latency, "_now_ns", lambda: now[0])
    durations = iter([7.0, 7.0] + [float(1 + i % 10) for i in range(1000)])  # 2 warm-up, then 1..10 ms cycling
    calls = []

    def fn():
        calls.append(1)
        now[0] += int(next(durations) * 1e6)

    seen = []
    stats = latency.measure(fn, warmup=2, min_queries=20, min_seconds=0.0, batch=2,
                            progress=lambda q, s: seen.append(q))
    assert len(calls) == 22 and stats["queries"] == 20 and stats["first_ms"] == 7.0
    assert stats["p50_ms"] == 5.0 and stats["p90_ms"] == 9.0 and stats["p99_ms"] == 10.0
    assert stats["min_ms"] == 1.0 and stats["max_ms"] == 10.0 and stats["mean_ms"] == 5.5
    assert stats["duration_s"] == pytest.approx(0.110)
    assert stats["throughput"] == pytest.approx(2 * 20 / 0.110)
    assert seen[-1] == 20
    # the minimum duration wins over the minimum query count: 9 cycles of 1..10 ms = 495 ms, then 1+2+3
    stats = latency.measure(fn, warmup=0, min_queries=3, min_seconds=0.5)
    assert stats["queries"] == 93 and stats["duration_s"] == pytest.approx(0.501)


def test_measure_rejects_bad_arguments():
    for kwargs in ({"min_queries": 0}, {"min_seconds": -1}, {"batch": 0}, {"warmup": -1}):
        with pytest.raises(EdgeprotoError):
            latency.measure(lambda: None, **kwargs)


# --------------------------------------------------------------------------- bench on a real bundle


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_bench_target_against_torch(bundle, target):
    if target == "openvino":
        pytest.importorskip("openvino")
    report = bench_bundle(bundle, target=target, batches=(1, 3), threads=1, compare_torch=True, **FAST)
    rt = report["runtime"]
    assert rt["name"] == target and rt["precision"] == "fp32" and rt["version"]
    assert rt["device"] in ("CPUExecutionProvider", "CPU")
    if target == "openvino":
        assert rt["threads"] == 1
    assert report["torch"]["threads"] == 1 and report["torch"]["mode"] == "eager, eval, no_grad"
    assert report["load_s"] > 0 and report["memory"]["peak_rss_mb"] > 0
    assert [row["batch"] for row in report["batches"]] == [1, 3]
    for row in report["batches"]:
        for key in ("latency", "torch"):
            s = row[key]
            assert s["queries"] >= 5 and s["duration_s"] >= 0.05 and "window" not in s
            assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
            assert s["throughput"] == pytest.approx(row["batch"] * s["queries"] / s["duration_s"])
        assert row["speedup_vs_torch"]["p50"] == pytest.approx(row["torch"]["p50_ms"] / row["latency"]["p50_ms"])
        assert row["max_abs_logits_vs_torch"] < 1e-3  # the same model was timed
    json.dumps(report)  # JSON-able


def test_torch_target_alone_and_cli_output(bundle, capsys):
    report = bench_bundle(bundle, target="torch", batches=(2,), **FAST)
    assert report["runtime"]["name"] == "torch" and report["batches"][0]["latency"]["batch"] == 2
    assert run_bench(bundle, "onnxruntime", batches="1,2", min_queries=3, min_seconds=0.0, as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    assert [row["batch"] for row in out["batches"]] == [1, 2] and out["target"] == "onnxruntime"
    assert run_bench(bundle, "onnxruntime", batches="1", min_queries=3, min_seconds=0.0, compare="torch") == 0
    text = capsys.readouterr().out
    assert "p50" in text and "torch" in text and "onnxruntime" in text


def test_bench_errors(bundle, tmp_path):
    with pytest.raises(EdgeprotoError, match="batch size"):
        bench_bundle(bundle, target="onnxruntime", batches=(0,))
    with pytest.raises(EdgeprotoError, match="batch size"):
        bench_bundle(bundle, target="onnxruntime", batches=(1, -2))
    with pytest.raises(EdgeprotoError, match="batch"):
        parse_batches("1,x")
    with pytest.raises(EdgeprotoError, match="unknown target 'tpu'"):
        bench_bundle(bundle, target="tpu")
    with pytest.raises(EdgeprotoError, match="no onnxruntime int8 artifact"):
        bench_bundle(bundle, target="onnxruntime", precision="int8", **FAST)
    with pytest.raises(EdgeprotoError, match="fp32 PyTorch reference"):
        bench_bundle(bundle, target="torch", precision="fp16")
    with pytest.raises(EdgeprotoError, match="--compare"):
        run_bench(bundle, "onnxruntime", compare="tensorflow")
    moved = tmp_path / "moved"
    shutil.copytree(bundle, moved)
    manifest = json.loads((moved / "manifest.json").read_text())
    manifest["source"]["checkpoint"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeprotoError, match="source checkpoint .* not here"):
        bench_bundle(moved, target="onnxruntime", compare_torch=True, **FAST)
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(EdgeprotoError, match="target 'tensorrt' needs tensorrt, which is not installed: "
                                                 "pip install 'edgeproto\\[tensorrt\\]'"):
            bench_bundle(bundle, target="tensorrt", **FAST)
    with pytest.raises(EdgeprotoError, match="unknown target 'tensorflow'; known: onnxruntime, openvino, tensorrt, "
                                             "tensorrt-graph, torch, jetson"):
        bench_bundle(bundle, target="tensorflow", **FAST)


# --------------------------------------------------------------------------- tegrastats

ORIN_NANO = [
    "08-21-2023 12:43:25 RAM 2713/7620MB (lfb 1x2MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,1%@729,0%@729,"
    "0%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 10%@[305] NVENC off NVDEC off NVJPG off VIC off OFA off APE 200 "
    "cpu@47.75C soc2@46.562C tj@47.75C VDD_IN 4000mW/4673mW VDD_CPU_GPU_CV 567mW/567mW VDD_SOC 1411mW/1411mW",
    "08-21-2023 12:43:26 RAM 2800/7620MB (lfb 1x2MB) SWAP 0/3810MB (cached 0MB) CPU [50%@1510,30%@1510,0%@1510,"
    "0%@1510,off,off] EMC_FREQ 5%@2133 GR3D_FREQ 90%@[624] NVENC off NVDEC off NVJPG off VIC off OFA off APE 200 "
    "cpu@48.1C soc2@46.9C tj@48.1C VDD_IN 6000mW/4800mW VDD_CPU_GPU_CV 2000mW/700mW VDD_SOC 1500mW/1420mW",
]
AGX_ORIN = [
    "RAM 2448/30593MB (lfb 6699x4MB) SWAP 0/15296MB (cached 0MB) CPU [0%@729,off,off,off,0%@729,off,off,off,"
    "0%@729,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 115 APE 174 CV0@-256C CPU@43.843C "
    "SOC2@40.375C tj@43.843C VDD_GPU_SOC 2000mW/2398mW VDD_CPU_CV 500mW/399mW VIN_SYS_5V0 2500mW/2418mW "
    "VDDQ_VDD2_1V8AO 300mW/302mW",
    "RAM 2460/30593MB (lfb 6699x4MB) SWAP 0/15296MB (cached 0MB) CPU [20%@2201,off,off,off,10%@2201,off,off,off,"
    "0%@2201,off,off,off] EMC_FREQ 1%@3199 GR3D_FREQ 60%@[1300,1300] VIC_FREQ 115 APE 174 CPU@45.1C tj@45.1C "
    "VDD_GPU_SOC 8000mW/3000mW VDD_CPU_CV 1500mW/450mW VIN_SYS_5V0 3500mW/2500mW VDDQ_VDD2_1V8AO 500mW/310mW",
]
NANO = [
    "RAM 1555/3964MB (lfb 88x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [6%@102,2%@102,0%@102,"
    "0%@102] EMC_FREQ 3%@204 GR3D_FREQ 0%@76 APE 25 PLL@21.5C CPU@24C PMIC@100C GPU@21.5C AO@29.5C "
    "thermal@22.75C POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 215/215",
    "RAM 1600/3964MB (lfb 88x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [80%@1479,70%@1479,"
    "60%@1479,50%@1479] EMC_FREQ 20%@1600 GR3D_FREQ 99%@921 APE 25 PLL@25C CPU@27C PMIC@100C GPU@26C "
    "AO@30.5C thermal@26.1C POM_5V_IN 2250/1700 POM_5V_GPU 900/300 POM_5V_CPU 600/250",
]


def test_tegrastats_orin_nano_line():
    s = parse_line(ORIN_NANO[0])
    assert s["time"] == "08-21-2023 12:43:25"
    assert s["ram"] == {"used_mb": 2713, "total_mb": 7620} and s["swap"]["total_mb"] == 3810
    assert s["rails"]["VDD_IN"] == {"current_mw": 4000.0, "average_mw": 4673.0}
    assert set(s["rails"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert s["gpu"] == {"load": 10.0, "freq_mhz": [305]}
    assert s["cpu"][0] == {"load": 2.0, "freq_mhz": 729} and s["cpu"][4] is None and len(s["cpu"]) == 6
    assert s["temps"]["tj"] == 47.75
    assert average_power_mw(ORIN_NANO) == 5000.0
    summary = power_summary(ORIN_NANO)
    assert summary["rail"] == "VDD_IN" and summary["samples"] == 2 and summary["tegrastats_average_mw"] == 4800.0
    assert average_power_mw(ORIN_NANO, rail="VDD_SOC") == pytest.approx(1455.5)
    loads = load_summary(ORIN_NANO)
    assert loads["gpu_load_mean"] == 50.0 and loads["ram_used_max_mb"] == 2800
    assert loads["cpu_load_mean"] == pytest.approx((2 + 1 + 50 + 30) / 8)


def test_tegrastats_agx_orin_sums_the_module_rails():
    s = parse_line(AGX_ORIN[1])
    assert s["gpu"] == {"load": 60.0, "freq_mhz": [1300, 1300]} and s["cpu"].count(None) == 9
    assert input_rail(s["rails"]) == ("VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0", ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"))
    # (2000+500+2500 + 8000+1500+3500) / 2; VDDQ_VDD2_1V8AO (fed by VIN_SYS_5V0) is not added twice
    assert average_power_mw(AGX_ORIN) == 9000.0
    assert average_power_mw(AGX_ORIN, rail="VDD_GPU_SOC+VDD_CPU_CV") == 6000.0
    assert average_power_mw(AGX_ORIN, rail=["VIN_SYS_5V0"]) == 3000.0


def test_tegrastats_nano_unitless_rails():
    s = parse_line(NANO[0])
    assert s["rails"]["POM_5V_IN"] == {"current_mw": 1750.0, "average_mw": 1628.0}
    assert "IRAM" not in s["rails"] and s["gpu"] == {"load": 0.0, "freq_mhz": [76]}
    assert average_power_mw(NANO) == 2000.0
    assert power_summary(NANO)["rail"] == "POM_5V_IN"
    assert load_summary(NANO)["gpu_load_max"] == 99.0


def test_energy_and_rail_errors():
    assert energy_per_inference_mj(5000.0, 100.0) == 50.0  # 5 W at 100 inferences/s = 50 mJ each
    with pytest.raises(EdgeprotoError, match="throughput"):
        energy_per_inference_mj(5000.0, 0.0)
    with pytest.raises(EdgeprotoError, match="no known input rail"):
        average_power_mw(["RAM 1/2MB FOO_RAIL 10mW/10mW"])
    with pytest.raises(EdgeprotoError, match="no rail VDD_X"):
        average_power_mw(ORIN_NANO, rail="VDD_X")
    with pytest.raises(EdgeprotoError, match="no tegrastats sample"):
        average_power_mw(["", "RAM 1/2MB"])


# --------------------------------------------------------------------------- jetson local mode (fake board)


def fake_board(root, power_mw: int = 5000):
    """A directory that plays a Jetson Orin Nano for EDGEPROTO_FAKE_TEGRA."""
    (root / "etc").mkdir(parents=True)
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/sbin").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May 6 2024\n")
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit (fake)\x00")
    line = ORIN_NANO[0].replace("VDD_IN 4000mW", f"VDD_IN {power_mw}mW")
    scripts = {
        "usr/bin/tegrastats": f'#!/bin/sh\nwhile true; do echo "{line}"; sleep 0.05; done\n',
        "usr/sbin/nvpmodel": '#!/bin/sh\necho "NV Power Mode: 15W"\necho 0\n',
    }
    for rel, text in scripts.items():
        (root / rel).write_text(text)
        os.chmod(root / rel, os.stat(root / rel).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return root


def test_jetson_local_mode_with_a_fake_board(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPROTO_FAKE_TEGRA", str(fake_board(tmp_path / "board")))
    from edgeproto.measure.jetson import bench_local

    report = bench_local(bundle, batches=(1,), idle_seconds=0.2, **FAST)
    jet = report["jetson"]
    assert report["target"] == "jetson" and jet["model"] == "NVIDIA Jetson Orin Nano Developer Kit (fake)"
    assert jet["l4t"] == "36.3.0" and jet["nvpmodel"]["name"] == "15W" and jet["nvpmodel"]["id"] == 0
    if not jet["tensorrt"]:
        assert report["runtime_target"] == "onnxruntime" and "not TensorRT numbers" in jet["runtime_note"]
    row = report["batches"][0]
    assert row["power"]["rail"] == "VDD_IN" and row["power"]["mean_mw"] == 5000.0
    assert row["power"]["energy_per_inference_mj"] == pytest.approx(5000.0 / row["latency"]["throughput"])
    assert jet["tegrastats"]["idle_power_mw"] == 5000.0 and "window" not in row["latency"]

    monkeypatch.setenv("EDGEPROTO_FAKE_TEGRA", str(tmp_path / "not-a-board"))
    with pytest.raises(EdgeprotoError, match="not a Jetson"):
        bench_bundle(bundle, target="jetson")
