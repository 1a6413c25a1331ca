"""What ``edgeproto explain`` and ``edgeproto verify`` do, as plain functions (the CLI only parses).

User mistakes raise EdgeprotoError (the CLI prints one ``error:`` line and exits 2); the functions
return the exit code otherwise. No torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeproto import atomic_files


def _console():
    from rich.console import Console

    return Console()


def run_explain(bundle, image, target: str = "onnxruntime", precision: str = "fp32", guard: str = "prototypes",
                device: str | None = None, k: int = 3, out_prefix=None, as_json: bool = False) -> int:
    """Explain ``image`` with ``bundle`` on ``target``; write ``<out_prefix>.png`` and ``<out_prefix>.json``.

    ``out_prefix`` defaults to ``<image without suffix>.explain``. Prints a summary table (or the JSON).
    """
    from edgeproto.eval.explain import as_bundle, explain_image
    from edgeproto.eval.explanation_figure import render_explanation

    opened = as_bundle(bundle)
    result = explain_image(opened, image, target=target, precision=precision, guard=guard, device=device, k=k)
    prefix = Path(out_prefix) if out_prefix else Path(image).with_suffix("").with_name(Path(image).stem + ".explain")
    png, js = prefix.with_name(prefix.name + ".png"), prefix.with_name(prefix.name + ".json")
    render_explanation(opened, image, result, png)
    result["figure"] = str(png)
    atomic_files.write_text(js, json.dumps(result, indent=2))
    if as_json:
        print(json.dumps({**result, "json": str(js)}, indent=2))
        return 0

    from rich.table import Table

    pred, rt = result["prediction"], result["runtime"]
    table = Table(title=f"{Path(image).name}: {pred['class_name']} (p = {pred['probability']:.3f})",
                  caption=f"{rt['name']} {rt['version']} · {rt['precision']} · {rt['device']}")
    for col in ("rank", "prototype", "class", "score", "weight", "contribution", "argmax (x,y)", "95% box"):
        table.add_column(col, justify="left" if col in ("class", "95% box") else "right")
    for p in result["top_prototypes"]:
        table.add_row(str(p["rank"]), str(p["prototype"]), f"{p['class']} {p['class_name']}", f"{p['score']:.4g}",
                      f"{p['weight']:.4g}", f"{p['contribution']:.4g}", f"{p['argmax'][0]},{p['argmax'][1]}",
                      str(p["box"]))
    console = _console()
    console.print(table)
    if result.get("resized_from"):
        w, h = result["resized_from"]
        console.print(f"input resized from {w}×{h} to {result['input_size']}×{result['input_size']}")
    console.print(f"figure: {png}\njson:   {js}")
    return 0


def run_verify(bundle, target: str = "onnxruntime", precision: str = "fp32", guard: str = "prototypes",
               device: str | None = None, atol: float | None = None, rtol: float | None = None,
               as_json: bool = False) -> int:
    """Self-check ``bundle`` on ``target`` against its golden outputs; 0 when it passes, 1 when not."""
    from edgeproto.eval.verify import verify_bundle

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
    console = _console()
    console.print(table)
    console.print(f"top-1 prototype agreement: {report['top1_prototype_agreement']:.3f} "
                  f"(required ≥ {report['min_agreement']:g}); top-1 class agreement: "
                  f"{report['top1_class_agreement']:.3f}")
    console.print("[bold green]PASSED[/]" if report["passed"] else "[bold red]FAILED[/]")
    return code
