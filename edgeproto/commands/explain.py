"""``edgeproto explain``: options, run, render. No torch.

User mistakes raise EdgeprotoError (the CLI prints one ``error:`` line and exits 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeproto import atomic_files
from edgeproto.commands.options import console, device_option, guard_option, json_option, precision_option, target_option


def run_explain(bundle, image, target: str = "onnxruntime", precision: str = "fp32", guard: str = "prototypes",
                device: str | None = None, k: int = 3, out_prefix=None, as_json: bool = False) -> int:
    """Explain ``image`` with ``bundle`` on ``target``; write ``<out_prefix>.png`` and ``<out_prefix>.json``.

    ``out_prefix`` defaults to ``<image without suffix>.explain``. Prints a summary table (or the JSON).
    """
    from edgeproto.device.explain import as_bundle, explain_image
    from edgeproto.device.figure import render_explanation

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
    out = console()
    out.print(table)
    if result.get("resized_from"):
        w, h = result["resized_from"]
        out.print(f"input resized from {w}×{h} to {result['input_size']}×{result['input_size']}")
    if result.get("merged_prototypes"):
        out.print(f"{result['merged_prototypes']} duplicate prototype(s) were merged at push (not ranked)")
    out.print(f"figure: {png}\njson:   {js}")
    return 0


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("image", type=click.Path())
@target_option()
@precision_option
@guard_option
@device_option
@click.option("-k", "--top", "k", type=int, default=3, show_default=True, help="prototypes to show")
@click.option("-o", "--out", "out_prefix", default=None, help="write OUT.png and OUT.json (default: next to IMAGE)")
@json_option("print the explanation as JSON")
def explain(bundle: str, image: str, target: str, precision: str, guard: str, device: str | None, k: int,
            out_prefix: str | None, as_json: bool) -> None:
    """On-device "this looks like that": prediction, top prototypes, heatmaps and source patches."""
    prefix = out_prefix or str(Path(image).with_suffix("")) + ".explained"
    sys.exit(run_explain(bundle, image, target, precision, guard, device, k, prefix, as_json))
