"""``edgeproto explain``: options, run, render. No torch.

User mistakes raise EdgeprotoError (the CLI prints one ``error:`` line and exits 2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeproto import atomic_files
from edgeproto.commands.options import artifact_options, console, json_option
from edgeproto.errors import EdgeprotoError


def output_paths(image, out=None) -> tuple[Path, Path]:
    """Where the figure and the JSON go. ``out``: ``x.png`` or ``x.json`` (the other gets the same stem),
    a directory (existing, or written with a trailing ``/``: ``<image stem>.explained.png/.json`` in it),
    or a prefix ``x`` (``x.png``, ``x.json``). Default: ``<image without suffix>.explained.*`` beside it."""
    stem = Path(image).stem + ".explained"
    if out is None or str(out) == "":
        base = Path(image).with_name(stem)
    else:
        text = str(out)
        path = Path(text).expanduser()
        if text.endswith(("/", "\\")) or path.is_dir() or path.name in ("", ".", ".."):
            if path.exists() and not path.is_dir():
                raise EdgeprotoError(f"-o {out}: not a directory")
            base = path / stem
        elif path.suffix.lower() in (".png", ".json"):
            base = path.with_suffix("")
        else:
            base = path
    png, js = base.with_name(base.name + ".png"), base.with_name(base.name + ".json")
    for p in (png, js):
        if p.is_dir():
            raise EdgeprotoError(f"-o {out}: {p} is a directory")
    return png, js


def run_explain(bundle, image, target: str = "onnxruntime", precision: str = "fp32", guard: str = "prototypes",
                device: str | None = None, k: int = 3, out_prefix=None, as_json: bool = False) -> int:
    """Explain ``image`` with ``bundle`` on ``target``; write ``<out_prefix>.png`` and ``<out_prefix>.json``.

    ``out_prefix``: see :func:`output_paths`. Prints a summary table (or the JSON).
    """
    from edgeproto.device.explain import as_bundle, explain_image
    from edgeproto.device.figure import render_explanation

    png, js = output_paths(image, out_prefix)
    opened = as_bundle(bundle)
    atomic_files.check_output(png, {"bundle": opened.root, "image": image}, "-o/--out")
    atomic_files.check_output(js, {"bundle": opened.root, "image": image}, "-o/--out")
    if opened.manifest.get("task") == "segmentation":
        return _explain_segmentation(opened, image, target, precision, guard, device, png, js, as_json)
    result = explain_image(opened, image, target=target, precision=precision, guard=guard, device=device, k=k)
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
    if result.get("input_note"):
        out.print(f"input: {result['input_note']}")
    out.print(f"figure: {png}\njson:   {js}")
    return 0


def _explain_segmentation(bundle, image, target, precision, guard, device, png, js, as_json: bool) -> int:
    """A segmentation bundle: the predicted mask and each region's explaining prototype."""
    from edgeproto.device.segmentation import explain_segmentation, render_segmentation

    result = explain_segmentation(bundle, image, target=target, precision=precision, guard=guard, device=device)
    render_segmentation(bundle, image, result, png)
    result["figure"] = str(png)
    atomic_files.write_text(js, json.dumps(result))
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "mask"} | {"json": str(js)}, indent=2))
        return 0
    from rich.table import Table

    rt = result["runtime"]
    table = Table(title=f"{Path(image).name}: {len(result['regions'])} region(s)",
                  caption=f"{rt['name']} {rt['version']} · {rt['precision']} · {rt['device']}")
    for col in ("region", "pixels", "prototype", "similarity", "95% box", "source image"):
        table.add_column(col, justify="left" if col in ("region", "95% box") else "right")
    for r in result["regions"]:
        table.add_row(r["class_name"], str(r["pixels"]), str(r["prototype"]), f"{r['score']:.4g}", str(r["box"]),
                      str(r["source_image"]))
    out = console()
    out.print(table)
    out.print(f"figure: {png}\njson:   {js}")
    return 0


@click.command()
@click.argument("bundle", type=click.Path())
@click.argument("image", type=click.Path())
@artifact_options
@click.option("-k", "--top", "k", type=int, default=3, show_default=True, help="prototypes to show")
@click.option("-o", "--out", "out_prefix", default=None,
              help="OUT.png / OUT.json, a directory, or a prefix for .png and .json (default: IMAGE.explained.*)")
@json_option("print the explanation as JSON")
def explain(bundle: str, image: str, target: str, precision: str, guard: str, device: str | None, k: int,
            out_prefix: str | None, as_json: bool) -> None:
    """On-device "this looks like that": prediction, top prototypes, heatmaps and source patches."""
    sys.exit(run_explain(bundle, image, target, precision, guard, device, k, out_prefix, as_json))
