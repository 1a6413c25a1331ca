"""``edgeproto export``: options, run, and the terminal report of the export check."""

from __future__ import annotations

import json

import click

from edgeproto.commands.options import console, json_option


def render_export(out: str, manifest: dict) -> None:
    """Print the export check as a table (one row per output)."""
    from rich.table import Table

    check = manifest["export_check"]
    m = manifest["model"]
    table = Table(title=f"ONNX Runtime vs PyTorch on {check['images']} golden images "
                        f"(atol={check['atol']:g}, rtol={check['rtol']:g})")
    for col in ("output", "max abs", "mean abs", "p99 abs", "max rel"):
        table.add_column(col, justify="right" if col != "output" else "left")
    for name, d in check["diffs"].items():
        table.add_row(name, f"{d['max_abs']:.3g}", f"{d['mean_abs']:.3g}", f"{d['p99_abs']:.3g}", f"{d['max_rel']:.3g}")
    out_console = console()
    out_console.print(table)
    out_console.print(f"top-1 prototype agreement: {check['top1_prototype_agreement']:.3f}")
    out_console.print(f"bundle written: {out}  (edgeproto::{m['op_type']}, ops={m['ops']}, opset {m['opset']})")


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(), help="bundle directory to write")
@click.option("--ops", type=click.Choice(["function", "inline", "plugin"]), default="function", show_default=True,
              help="custom node + function body | standard ops only | custom node for a TensorRT plugin")
@click.option("--opset", type=int, default=18, show_default=True, help="default-domain ONNX opset (17..25)")
@click.option("--golden", type=int, default=16, show_default=True, help="test images stored with reference outputs")
@click.option("--atol", type=float, default=1e-5, show_default=True, help="export check: absolute tolerance")
@click.option("--rtol", type=float, default=1e-4, show_default=True, help="export check: relative tolerance")
@click.option("--analysis-images", default="500", show_default=True,
              help="training images analysed for the on-device extras (prototype source images, nearest-patch "
                   "gallery, 'because' importances; needs OpenCV), spread evenly over the train split: a number, 'all', or 0 to skip")
@click.option("--zip", "as_zip", is_flag=True, help="write one OUT.zip instead of a directory")
@click.option("--force", is_flag=True, help="replace an existing OUT")
@json_option("print the export check as JSON")
def export(checkpoint: str, out: str, ops: str, opset: int, golden: int, atol: float, rtol: float,
           analysis_images: str, as_zip: bool, force: bool, as_json: bool) -> None:
    """Export a checkpoint to a deployment bundle, checked in ONNX Runtime against PyTorch."""
    from edgeproto.errors import EdgeprotoError
    from edgeproto.progress import status_line

    if analysis_images.strip().lower() == "all":
        images = None
    elif analysis_images.strip().isdigit():
        images = int(analysis_images)
    else:
        raise EdgeprotoError(f"--analysis-images must be a number >= 0 or 'all', got {analysis_images!r}")

    with status_line(not as_json, "export") as status:
        status("loading PyTorch and ONNX")
        from edgeproto.export.bundle_writer import export_bundle

        manifest = export_bundle(checkpoint, out, ops=ops, opset=opset, golden=golden, atol=atol, rtol=rtol,
                                 force=force, as_zip=as_zip, analysis_images=images,
                                 status=status)
    if as_json:
        click.echo(json.dumps({"bundle": out, "model": manifest["model"], "export_check": manifest["export_check"]},
                              indent=2))
    else:
        render_export(out, manifest)
