"""Parse NVIDIA Jetson ``tegrastats`` lines: power rails, RAM, GPU and CPU load; power and energy. No torch.

Line formats differ by board and L4T release; all of these parse::

    Orin Nano / NX (L4T 35/36):  ... RAM 2713/7620MB ... CPU [2%@729,1%@729,...] ... GR3D_FREQ 0%@[305]
                                 ... VDD_IN 4673mW/4673mW VDD_CPU_GPU_CV 567mW/567mW VDD_SOC 1411mW/1411mW
    AGX Orin:                    ... CPU [0%@729,off,...] GR3D_FREQ 0%@[0,0] ... VDD_GPU_SOC 2398mW/2398mW
                                 VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 2418mW/2418mW VDDQ_VDD2_1V8AO 302mW/302mW
    Nano / TX1 (L4T 32):         ... CPU [6%@102,...] EMC_FREQ 3%@204 GR3D_FREQ 0%@76 ...
                                 POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 215/215     (mW, no unit)

A rail is ``NAME current/average`` in milliwatts: the reading at the sample and tegrastats' own
running average since it started.

**Which rail is "the board's power"** (:func:`input_rail`, used when ``rail`` is not given):

1. ``VDD_IN`` — the module's total input (Orin Nano/NX, Xavier NX, TX2);
2. ``POM_5V_IN`` — the module's 5 V input (Nano, TX1);
3. AGX Orin has no total-input channel: the sum ``VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0``, the three
   channels of its first INA3221 that together feed the module (``VDDQ_VDD2_1V8AO``, the DRAM rail,
   is left out: it is supplied from ``VIN_SYS_5V0`` and would be counted twice);
4. AGX Xavier (``GPU CPU SOC CV VDDRQ SYS5V``): the sum of those six rails.

None of these includes the carrier board (USB, fan, NVMe...): the figures are module power. Pass
``rail="NAME"`` or ``rail="A+B"`` (or a list) to choose yourself.

Power over a run is the mean of the *instantaneous* readings of the samples taken during it
(tegrastats samples at a fixed interval, so that is the time average); tegrastats' running average
also covers the time before the run. Energy per inference (mJ) = mean power (mW) / throughput
(inferences per second): in single-stream that equals P (W) × latency (ms) / batch.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from edgeproto.errors import EdgeprotoError

_RAIL = re.compile(r"(?<![\w@])([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_TEMP = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_STAMP = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")

AGX_ORIN_RAILS = ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")
AGX_XAVIER_RAILS = ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V")


def parse_line(line: str) -> dict:
    """One tegrastats line → ``{"rails": {NAME: {"current_mw", "average_mw"}}, "ram": {...}, "cpu": [...],
    "gpu": {...}, "emc": {...}, "temps": {...}, "time": str|None}`` (absent fields are missing/None)."""
    out: dict = {"time": None, "rails": {}, "ram": None, "swap": None, "cpu": [], "gpu": None, "emc": None,
                 "temps": {}}
    m = _STAMP.match(line)
    if m:
        out["time"] = m.group(1)
    m = _RAM.search(line)
    if m:
        out["ram"] = {"used_mb": int(m.group(1)), "total_mb": int(m.group(2))}
    m = _SWAP.search(line)
    if m:
        out["swap"] = {"used_mb": int(m.group(1)), "total_mb": int(m.group(2))}
    m = _CPU.search(line)
    if m:
        shared = int(m.group(2)) if m.group(2) else None
        for core in m.group(1).split(","):
            core = core.strip()
            if not core or core == "off":
                out["cpu"].append(None)  # core powered down
                continue
            load, _, freq = core.partition("@")
            out["cpu"].append({"load": float(load.rstrip("%")), "freq_mhz": int(freq) if freq else shared})
    m = _GR3D.search(line)
    if m:
        freqs = [int(f) for f in m.group(2).split(",") if f] if m.group(2) else []
        out["gpu"] = {"load": float(m.group(1)), "freq_mhz": freqs}
    m = _EMC.search(line)
    if m:
        out["emc"] = {"load": float(m.group(1)), "freq_mhz": int(m.group(2)) if m.group(2) else None}
    for name, temp in _TEMP.findall(line):
        out["temps"][name] = float(temp)
    for name, cur, avg in _RAIL.findall(line):
        if name in ("RAM", "SWAP", "IRAM"):
            continue
        out["rails"][name] = {"current_mw": float(cur), "average_mw": float(avg)}
    return out


def parse(lines: Iterable[str]) -> list[dict]:
    """Parsed samples of the non-empty lines."""
    return [parse_line(ln) for ln in lines if ln and ln.strip()]


def _rail_names(rail) -> tuple[str, ...]:
    if isinstance(rail, str):
        return tuple(r.strip() for r in rail.split("+") if r.strip())
    return tuple(rail)


def input_rail(rails: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """``(label, rail names to sum)`` for the board's input power (see the module docstring)."""
    seen = set(rails)
    if "VDD_IN" in seen:
        return "VDD_IN", ("VDD_IN",)
    if "POM_5V_IN" in seen:
        return "POM_5V_IN", ("POM_5V_IN",)
    if all(r in seen for r in AGX_ORIN_RAILS):
        return "+".join(AGX_ORIN_RAILS), AGX_ORIN_RAILS
    if all(r in seen for r in AGX_XAVIER_RAILS):
        return "+".join(AGX_XAVIER_RAILS), AGX_XAVIER_RAILS
    raise EdgeprotoError(
        "tegrastats shows no known input rail (VDD_IN, POM_5V_IN, AGX Orin's or AGX Xavier's rails); "
        f"rails seen: {', '.join(sorted(seen)) or 'none'}: pass rail='NAME' or 'A+B'"
    )


def _samples(lines) -> list[dict]:
    items = list(lines)
    return [s if isinstance(s, dict) else parse_line(s) for s in items if isinstance(s, dict) or (s and s.strip())]


def power_summary(lines: Sequence[str] | Sequence[dict], rail=None) -> dict:
    """Mean power over the samples: ``{"rail", "rails", "mean_mw", "min_mw", "max_mw", "samples",
    "tegrastats_average_mw"}`` (the last is tegrastats' own running average at the last sample).

    ``lines``: raw lines or :func:`parse_line` results. ``rail``: None (the board's input rail, see
    :func:`input_rail`), a name, ``"A+B"`` or a list of names to sum.
    """
    samples = [s for s in _samples(lines) if s["rails"]]
    if not samples:
        raise EdgeprotoError("no tegrastats sample with power rails: cannot compute power")
    if rail is None:
        label, names = input_rail(samples[0]["rails"])
    else:
        names = _rail_names(rail)
        if not names:
            raise EdgeprotoError(f"rail must name at least one power rail (got {rail!r})")
        label = "+".join(names)
    totals = []
    for s in samples:
        missing = [n for n in names if n not in s["rails"]]
        if missing:
            raise EdgeprotoError(
                f"tegrastats sample has no rail {', '.join(missing)} (rails: {', '.join(sorted(s['rails']))})"
            )
        totals.append(sum(s["rails"][n]["current_mw"] for n in names))
    return {
        "rail": label,
        "rails": list(names),
        "mean_mw": sum(totals) / len(totals),
        "min_mw": min(totals),
        "max_mw": max(totals),
        "samples": len(totals),
        "tegrastats_average_mw": sum(samples[-1]["rails"][n]["average_mw"] for n in names),
    }


def average_power_mw(lines: Sequence[str] | Sequence[dict], rail=None) -> float:
    """Mean power (mW) of the board's input rail (or ``rail``) over the samples; see :func:`power_summary`."""
    return power_summary(lines, rail)["mean_mw"]


def energy_per_inference_mj(power_mw: float, throughput: float) -> float:
    """Energy per inference (mJ) = power (mW) / inferences per second."""
    if not throughput or throughput <= 0:
        raise EdgeprotoError(f"throughput must be > 0 to compute energy (got {throughput!r})")
    return power_mw / throughput


def load_summary(lines: Sequence[str] | Sequence[dict]) -> dict:
    """GPU load (GR3D_FREQ) mean/max %, mean load of the online CPU cores %, peak RAM used (MB)."""
    samples = _samples(lines)
    gpu = [s["gpu"]["load"] for s in samples if s["gpu"]]
    cpu = [c["load"] for s in samples for c in s["cpu"] if c is not None]
    ram = [s["ram"]["used_mb"] for s in samples if s["ram"]]
    total = next((s["ram"]["total_mb"] for s in samples if s["ram"]), None)
    return {
        "samples": len(samples),
        "gpu_load_mean": sum(gpu) / len(gpu) if gpu else None,
        "gpu_load_max": max(gpu) if gpu else None,
        "cpu_load_mean": sum(cpu) / len(cpu) if cpu else None,
        "ram_used_max_mb": max(ram) if ram else None,
        "ram_total_mb": total,
    }
