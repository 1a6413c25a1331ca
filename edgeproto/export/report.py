"""Terminal report of an export: where the bundle is and how close ONNX Runtime came to PyTorch."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def render_export(out: str, manifest: dict) -> None:
    """Print the export check as a table (one row per output)."""
    check = manifest["export_check"]
    m = manifest["model"]
    table = Table(title=f"ONNX Runtime vs PyTorch on {check['images']} golden images "
                        f"(atol={check['atol']:g}, rtol={check['rtol']:g})")
    for col in ("output", "max abs", "mean abs", "p99 abs", "max rel"):
        table.add_column(col, justify="right" if col != "output" else "left")
    for name, d in check["diffs"].items():
        table.add_row(name, f"{d['max_abs']:.3g}", f"{d['mean_abs']:.3g}", f"{d['p99_abs']:.3g}", f"{d['max_rel']:.3g}")
    console = Console()
    console.print(table)
    console.print(f"top-1 prototype agreement: {check['top1_prototype_agreement']:.3f}")
    console.print(f"bundle written: {out}  (edgeproto::{m['op_type']}, ops={m['ops']}, opset {m['opset']})")
