"""``edgeproto verify``: the on-device self-check (options, run, render). No torch."""

from __future__ import annotations

import json
import sys

import click

from edgeproto.commands.options import artifact_options, console, json_option


def run_verify(bundle, target: str = "onnxruntime", precision: str = "fp32", guard: str = "prototypes",
               device: str | None = None, atol: float | None = None, rtol: float | None = None,
               as_json: bool = False) -> int:
    """Self-check ``bundle`` on ``target`` against its golden outputs; 0 when it passes, 1 when not."""
    from edgeproto.device.verify import verify_bundle

    report = verify_bundle(bundle, target=target, precision=precision, guard=guard, device=device,
                           atol=atol, rtol=rtol)
    code = 0 if report["passed"] else 1
    if as_json:
        print(json.dumps(report, indent=2))
        return code

    from rich.table import Table

    rt = report["runtime"]
    table = Table(title=f"{rt['name']} {rt['version']} ({rt['precision']}, {rt['device']}) vs PyTorch on "
                        f"{report['images']} golden images (atol={report['atol']:g}, rtol={report['rtol']:g})")
    for col in ("output", "max abs", "mean abs", "p99 abs", "max rel", "within"):
        table.add_column(col, justify="left" if col == "output" else "right")
    for name, d in report["diffs"].items():
        table.add_row(name, f"{d['max_abs']:.3g}", f"{d['mean_abs']:.3g}", f"{d['p99_abs']:.3g}",
                      f"{d['max_rel']:.3g}", "[green]yes[/]" if d["within_tolerance"] else "[red]NO[/]")
    out = console()
    out.print(table)
    out.print(f"top-1 prototype agreement: {report['top1_prototype_agreement']:.3f} "
                  f"(required ≥ {report['min_agreement']:g}); top-1 class agreement: "
                  f"{report['top1_class_agreement']:.3f}"
                  + (f" (required ≥ {report['min_class_agreement']:g})" if report.get("min_class_agreement") else ""))
    if not report.get("elementwise_gated", True):
        out.print("int8: the element-wise differences are shown, not gated (as validate judges int8)")
    out.print("[bold green]PASSED[/]" if report["passed"] else "[bold red]FAILED[/]")
    return code


@click.command()
@click.argument("bundle", type=click.Path())
@artifact_options
@click.option("--atol", type=float, default=None, help="absolute tolerance (default by precision)")
@click.option("--rtol", type=float, default=None, help="relative tolerance (default by precision)")
@json_option("machine-readable report")
def verify(bundle: str, target: str, precision: str, guard: str, device: str | None, atol: float | None,
           rtol: float | None, as_json: bool) -> None:
    """On-device self-check: golden inputs on the target vs the stored PyTorch outputs (exit 1 on failure)."""
    sys.exit(run_verify(bundle, target, precision, guard, device, atol, rtol, as_json))
