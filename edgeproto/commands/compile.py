"""``edgeproto compile``: a bundle → a runtime artifact at a precision, recorded in the manifest.

``--precision auto`` searches the target's precisions (:mod:`edgeproto.compare.precision_search`)
and keeps the fastest artifact whose explanations meet ``--min-top1`` (and the optional limits).
"""

from __future__ import annotations

import json

import click

from edgeproto.commands.options import artifact_options, json_option
from edgeproto.errors import EdgeprotoError


def _print_search(entry: dict, bundle: str, target: str) -> None:
    from rich.table import Table

    from edgeproto.commands.options import console

    search = entry["search"]
    table = Table(title=f"{target} --precision auto on {search['validation']['images']} validation images "
                        f"({search['validation']['split']} split, not the calibration images)")
    for col in ("candidate", "precision", "top-1 agr", "map IoU", "acc drop", "ms", "× fp32", "verdict"):
        table.add_column(col, justify="left" if col in ("candidate", "precision", "verdict") else "right")
    for r in search["candidates"]:
        if "error" in r:
            table.add_row(r["name"], r["precision"], "", "", "", "", "", f"[red]ERROR[/] {r['error']}")
            continue
        verdict = ("[dim]baseline[/]" if r.get("baseline") else "[bold green]CHOSEN[/]" if r["name"] == search["winner"]
                   else "[green]pass[/]" if r["passed"] else "[red]fail[/]")
        table.add_row(r["name"], r.get("effective_precision", r["precision"]), f"{r['top1']:.4f}",
                      f"{r['map_iou']:.4f}", f"{r['accuracy_drop']:+.4f}", f"{r['latency_ms']:.3f}",
                      f"{r['speedup_vs_fp32']:.2f}" if "speedup_vs_fp32" in r else "", verdict)
    out = console()
    out.print(table)
    out.print(f"chosen: {search['winner']} — {search['why']}")
    out.print(f"written: {bundle}/{entry['model']} (manifest key {target}-auto)")


@click.command()
@click.argument("bundle", type=click.Path())
@artifact_options
@click.option("--calib", type=int, default=128, show_default=True, help="int8: calibration images (train split)")
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="int8: the image folder of the recipe's data, when it is no longer where the manifest says")
@click.option("--min-top1", type=float, default=None,
              help="--precision auto: least top-1 prototype agreement with fp32 on the validation images [0.98]")
@click.option("--min-map-iou", type=float, default=None, help="--precision auto: least mean map IoU (off by default)")
@click.option("--max-accuracy-drop", type=float, default=None,
              help="--precision auto: most accuracy lost vs fp32 on the validation images (off by default)")
@click.option("--val-split", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="--precision auto: validation images from the train images not used for calibration, "
                   "or the test split")
@click.option("--val-images", type=int, default=256, show_default=True, help="--precision auto: validation images")
@click.option("--latency-queries", type=int, default=50, show_default=True,
              help="--precision auto: timed batch-1 queries per candidate")
@click.option("--reduced-only", is_flag=True,
              help="--precision auto: never choose fp32 (it is still timed as the baseline)")
@click.option("--force", is_flag=True, help="rebuild an artifact the bundle already holds")
@click.option("--ops", type=click.Choice(["inline", "plugin"]), default="inline", show_default=True,
              help="tensorrt: the prototype ops as standard ops (inline) or as edgeproto's TensorRT plugins")
@json_option("print the manifest entry as JSON")
def compile(bundle: str, target: str, precision: str, guard: str, calib: int, data_root: str | None,
            min_top1: float | None, min_map_iou: float | None, max_accuracy_drop: float | None, val_split: str,
            val_images: int, latency_queries: int, reduced_only: bool, device: str | None, force: bool, ops: str,
            as_json: bool) -> None:
    """Compile a bundle for a runtime and precision; the artifact is recorded in the manifest.

    --precision auto writes the fastest candidate whose explanations meet the thresholds."""
    if precision == "auto":
        if guard != "prototypes":
            raise EdgeprotoError("--precision auto searches the guard too (every candidate says which parts stay "
                                 "fp32): leave --guard out")
        if ops != "inline":
            raise EdgeprotoError("--precision auto searches inline prototype ops only; --ops plugin takes one "
                                 "precision (compile --precision fp32|fp16|int8 --ops plugin)")
        from edgeproto.compare.precision_search import SearchThresholds, compile_auto

        thresholds = SearchThresholds(min_top1=0.98 if min_top1 is None else min_top1, min_map_iou=min_map_iou,
                                      max_accuracy_drop=max_accuracy_drop)
        entry = compile_auto(bundle, target=target, thresholds=thresholds, calib=calib, val_split=val_split,
                             val_images=val_images, latency_queries=latency_queries, reduced_only=reduced_only,
                             device=device,
                             progress=not as_json, force=force, data_root=data_root)
        if as_json:
            click.echo(json.dumps(entry, indent=2))
        else:
            _print_search(entry, bundle, target)
        return
    given = [n for n, v in (("--min-top1", min_top1), ("--min-map-iou", min_map_iou),
                            ("--max-accuracy-drop", max_accuracy_drop), ("--reduced-only", reduced_only or None))
             if v is not None]
    if given:
        raise EdgeprotoError(f"{', '.join(given)} set(s) the thresholds of --precision auto, "
                             f"not of --precision {precision}")
    from edgeproto.runtimes.compile import compile_bundle

    entry = compile_bundle(bundle, target=target, precision=precision, guard=guard, calib=calib, device=device,
                           progress=not as_json, force=force, data_root=data_root, ops=ops)
    if as_json:
        click.echo(json.dumps(entry, indent=2))
        return
    check = entry["check"]
    note = entry.get("calibration", {}).get("note")
    if note:
        click.echo(f"note: {note}")
    form = f", ops={entry['ops']}" if "ops" in entry else ""
    click.echo(f"compiled {target} {precision} (guard={guard}{form}): {bundle}/{entry['model']}")
    click.echo(f"golden check on {check['images']} images: top-1 prototype agreement "
               f"{check['top1_prototype_agreement']:.3f}, class agreement {check['class_agreement']:.3f}, "
               f"finite {'yes' if check['finite'] else 'NO'}; "
               + (f"within atol {check['atol']:g} + rtol {check['rtol']:g}" if check.get("elementwise_gated", True)
                  else f"(int8: top-1 prototype ≥ {check['min_agreement']:g}, class ≥ "
                       f"{check['min_class_agreement']:g}, as validate judges int8)")
               + f": {'PASS' if check['passed'] else 'FAIL (edgeproto verify will fail too)'}")
