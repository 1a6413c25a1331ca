"""``edgeproto validate``: options, run (:func:`run_validate`), render.

User mistakes raise EdgeprotoError (the CLI prints one ``error:`` line and exits 2); otherwise the
exit code is 0 when every threshold passes and 1 when one fails (a CI gate).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgeproto.commands.options import (
    console,
    device_option,
    guard_option,
    json_option,
    precision_option,
    target_option,
)
from edgeproto.errors import EdgeprotoError

if TYPE_CHECKING:
    from rich.table import Table


def _targets(target: str | None, targets) -> list[str]:
    if targets is None or (not isinstance(targets, str) and len(targets) == 0):
        from edgeproto.compare.validate import sweep_targets

        return [target] if target else sweep_targets()
    if isinstance(targets, str):
        targets = targets.split(",")
    out = [t.strip() for t in targets if t and t.strip()]
    if not out:
        raise EdgeprotoError("--sweep needs at least one target")
    return list(dict.fromkeys(out))


def _print_validate(report: dict, paths: dict | None) -> None:
    from rich.table import Table

    from edgeproto.compare.report_html import fmt

    t, rt = report["target"], report["target"]["runtime"]
    table = Table(title=f"{t['target']} {t['precision']}{'' if t['guard'] == 'prototypes' else ' (no guard)'} vs "
                        f"PyTorch on {report['data']['images']} {report['data']['split']} images",
                  caption=f"{rt['name']} {rt['version']} · {rt['precision']} · {rt['device']} · {t['artifact']}")
    for col in ("threshold", "limit", "value", "verdict"):
        table.add_column(col, justify="left" if col in ("threshold", "verdict") else "right")
    style = {"pass": "[green]PASS[/]", "fail": "[bold red]FAIL[/]", "off": "[dim]off[/]", "n/a": "[dim]n/a[/]"}
    for c in report["checks"]:
        op = "≥" if c["direction"] == "min" else "≤"
        table.add_row(c["name"], "—" if c["limit"] is None else f"{op} {fmt(c['limit'])}", fmt(c["value"]),
                      style[c["status"]])
    out = console()
    out.print(table)
    a, f = report["accuracy"], report["fidelity"]
    out.print(f"accuracy: reference {a['reference']:.4f}, target {a['target']:.4f}; top-1 prototype agreement "
                  f"{f['top1']:.4f}; map IoU {f['map_iou']:.4f}")
    loc = report.get("localization")
    if loc:
        r, g = loc["reference"], loc["target"]
        out.print("localization (reference → target): " + ", ".join(
            f"{k.replace('_', ' ')} {fmt(r[k])} → {fmt(g[k])}" for k in ("pointing_game", "consistency", "stability")))
    _print_localize(out, report.get("localize"))
    _print_footer(out, report, paths)


def _print_localize(out, loc: dict | None) -> None:
    if not loc:
        return
    from rich.table import Table

    from edgeproto.compare.report_html import fmt

    table = Table(title=f"--localize: the artifact's tensors vs the fp32 ONNX model on {loc['images']} images "
                        f"(diverged: relative L2 > {loc['limit_rel_l2']:g} or not finite)")
    for col in ("tensor", "what", "rel L2", "max abs", "within tol", "× prev", "status"):
        table.add_column(col, justify="left" if col in ("tensor", "what", "status") else "right")
    style = {"ok": "[green]ok[/]", "diverged": "[bold red]DIVERGED[/]", "absent": "[dim]absent[/]"}
    for r in loc["tensors"]:
        if r["status"] == "absent":
            table.add_row(r["tensor"], r["what"], "", "", "", "", style["absent"])
            continue
        table.add_row(r["tensor"], r["what"], fmt(r["rel_l2"]), fmt(r["max_abs"]), fmt(r["within_tolerance"]),
                      fmt(r.get("growth")), style[r["status"]])
    out.print(table)
    first = loc["first_divergence"]
    out.print((f"first divergence: [bold]{first['tensor']}[/] ({first['what']})" if first else
               "first divergence: none") + f"; top-1 prototype agreement on these images: "
              f"{fmt(loc.get('top1_prototype_agreement'))}")


def _sweep_table(title: str, metrics: dict[str, str], rows: list[dict], failed_detail) -> Table:
    """One row per (target, precision, guard) of a sweep: the ``metrics`` (column → row key),
    then the verdict (``failed_detail(row)`` after FAIL); a row whose compile or run failed shows its error."""
    from rich.table import Table

    from edgeproto.compare.report_html import fmt

    table = Table(title=title)
    for col in ("target", "precision", "guard", *metrics, "verdict"):
        left = col in ("target", "precision", "guard", "verdict")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    for r in rows:
        if "error" in r:
            table.add_row(r["target"], r["precision"], r["guard"], *[""] * len(metrics),
                          f"[bold red]ERROR[/] {r['error']}")
            continue
        verdict = "[green]PASS[/]" if r["passed"] else f"[red]FAIL[/] ({failed_detail(r)})"
        cells = [f"{r[k]:.3f}" if k == "latency_ms" else fmt(r.get(k)) for k in metrics.values()]
        table.add_row(r["target"], r["precision"], r["guard"], *cells,
                      verdict + ("" if r["guard"] == "prototypes" else " [dim]not gated[/]"))
    return table


def _print_sweep(result: dict, paths: dict | None) -> None:
    d = result["data"]
    metrics = {"acc": "accuracy", "pred agr": "prediction_agreement", "top-1 agr": "top1_prototype_agreement",
               "top-5 ovl": "topk_overlap", "τ": "kendall_tau", "map IoU": "map_iou", "point": "pointing_game",
               "consist": "consistency", "stab": "stability", "ms": "latency_ms", "× fp32": "latency_vs_fp32"}
    table = _sweep_table(f"validate sweep on {d['images']} {d['split']} images (PyTorch accuracy "
                         f"{result['reference']['accuracy']:.4f}, batch-1 {result['reference']['latency_ms']:.2f} ms)",
                         metrics, result["rows"], lambda r: len(r["failed"]))
    out = console()
    out.print(table)
    for r in result["rows"]:
        if r.get("failed") and "error" not in r:
            out.print(f"{r['target']} {r['precision']}{'' if r['guard'] == 'prototypes' else ' (no guard)'} "
                          f"failed: {', '.join(r['failed'])}")
    _print_footer(out, result, paths)


def _print_footer(out, result: dict, paths: dict | None) -> None:
    if result["passed"]:
        out.print("[bold green]PASSED[/]")
    else:
        out.print(f"[bold red]FAILED[/]: {', '.join(result['failed'])}")
    if paths:
        out.print(f"report: {paths['html']}\njson:   {paths['json']}")


def _validate_segmentation(bundle, target, precision, guard, options, out, sweep, targets, as_json, data) -> int:
    """A segmentation bundle: mIoU / pixel accuracy of both sides, per-pixel and per-region agreement
    (``sweep``: every precision of each target in one table)."""
    from edgeproto import atomic_files
    from edgeproto.compare.segmentation import sweep_segmentation, validate_segmentation

    if options.thresholds is not None:
        raise EdgeprotoError("validate of a segmentation bundle has no --thresholds yet (its limits: pixel "
                             "agreement, region top-1 prototype agreement, map IoU; see "
                             "edgeproto.compare.segmentation)")
    if not target and not sweep:
        raise EdgeprotoError("validate needs a --target (onnxruntime, openvino)")
    common = dict(split=options.split, limit=options.limit, batch=options.batch, device=options.device,
                  threads=options.threads, data=data, data_root=options.data_root, progress=options.progress)
    if sweep:
        result = sweep_segmentation(bundle, _targets(target, targets), calib=options.calib, **common)
    else:
        result = validate_segmentation(bundle, target, precision, guard, **common)
    if out is not None:
        atomic_files.write_text(Path(out) / "report.json", json.dumps(result, indent=2))
    code = 0 if result["passed"] else 1
    if as_json:
        print(json.dumps(result, indent=2))
        return code
    (_print_segmentation_sweep if sweep else _print_segmentation)(result)
    return code


def _print_segmentation(result: dict) -> None:
    from rich.table import Table

    t = result["target"]
    table = Table(title=f"{t['target']} {t['precision']}{'' if t['guard'] == 'prototypes' else ' (no guard)'} vs "
                        f"PyTorch on {result['data']['images']} {result['data']['split']} images (segmentation)")
    for col in ("check", "limit", "value", "verdict"):
        table.add_column(col, justify="left" if col in ("check", "verdict") else "right")
    for c in result["checks"]:
        table.add_row(c["name"], f"≥ {c['limit']}" if c["name"] != "finite" else "", f"{c['value']:.4f}"
                      if not isinstance(c["value"], bool) else str(c["value"]),
                      "[green]PASS[/]" if c["passed"] else "[bold red]FAIL[/]")
    cons = console()
    cons.print(table)
    r, d = result["reference"], result["deployed"]
    cons.print(f"mIoU: reference {r['miou']:.4f}, target {d['miou']:.4f}; pixel accuracy: reference "
               f"{r['pixel_accuracy']:.4f}, target {d['pixel_accuracy']:.4f}; {result['regions']} regions")
    cons.print("[bold green]PASSED[/]" if result["passed"] else f"[bold red]FAILED[/]: {', '.join(result['failed'])}")


def _print_segmentation_sweep(result: dict) -> None:
    d, ref = result["data"], result["reference"]
    title = "validate sweep (segmentation)" + (
        f" on {d['images']} {d['split']} images (PyTorch mIoU {ref['miou']:.4f})" if d else "")
    metrics = {"mIoU": "miou", "pixel acc": "pixel_accuracy", "pixel agr": "pixel_agreement",
               "region top-1": "region_top1_agreement", "map IoU": "map_iou"}
    table = _sweep_table(title, metrics, result["rows"], lambda r: ", ".join(r["failed"]))
    cons = console()
    cons.print(table)
    cons.print("[bold green]PASSED[/]" if result["passed"] else f"[bold red]FAILED[/]: {', '.join(result['failed'])}")


def run_validate(
    bundle,
    target: str | None = "onnxruntime",
    precision: str = "fp32",
    guard: str = "prototypes",
    data=None,
    split: str = "test",
    limit: int | None = None,
    thresholds=None,
    out=None,
    sweep: bool = False,
    targets: Sequence[str] | str | None = None,
    device: str | None = None,
    as_json: bool = False,
    batch: int = 32,
    threads: int = 0,
    latency_queries: int = 50,
    progress: bool = True,
    data_root=None,
    pointing_tolerance: float = 0.0,
    localize: bool = False,
    localize_limit: float | None = None,
) -> int:
    """Validate ``bundle`` on ``target`` (or, with ``sweep``, every precision of ``targets``) against its
    PyTorch reference; write ``<out>/report.json`` and ``<out>/report.html`` when ``out`` is given.

    Prints a rich verdict table (or, with ``as_json``, the report as JSON on stdout; progress bars go
    to stderr). Returns 0 when every threshold passes, 1 when one fails (sweep: any guarded row).
    """
    from edgeproto.compare.options import ValidateOptions
    from edgeproto.compare.report_html import _jsonable, write_report
    from edgeproto.compare.validate import sweep as run_sweep
    from edgeproto.compare.validate import validate_bundle

    options = ValidateOptions(data=data, split=split, limit=limit, batch=batch, thresholds=thresholds, device=device,
                              threads=threads, latency_queries=latency_queries, progress=progress and not as_json,
                              data_root=data_root, pointing_tolerance=pointing_tolerance)
    options.check()
    if targets and not sweep:
        raise EdgeprotoError("--targets is for --sweep; validate one target with --target")
    if localize and sweep:
        raise EdgeprotoError("--localize follows one artifact through the graph: use it without --sweep")
    if localize_limit is not None and not localize:
        raise EdgeprotoError("--localize-limit is for --localize")
    from edgeproto.bundle import Bundle, open_bundle

    opened = bundle if isinstance(bundle, Bundle) else open_bundle(bundle)  # opened (and hashed) once
    if out is not None:
        from edgeproto import atomic_files

        given = opened.root if isinstance(bundle, Bundle) else bundle  # a .zip, or the folder
        atomic_files.check_output(out, {"bundle": opened.root, "bundle file": given,
                                        "data config": data if isinstance(data, (str, Path)) else None}, "--out")
        if Path(out).exists() and not Path(out).is_dir():
            raise EdgeprotoError(f"--out {out} exists and is not a directory")
    bundle = opened
    if bundle.manifest.get("task") == "segmentation":
        return _validate_segmentation(bundle, target, precision, guard, options, out, sweep, targets, as_json, data)
    if bundle.manifest.get("task") == "multilabel":
        from edgeproto.commands.multilabel import validate_multilabel

        return validate_multilabel(bundle, target, precision, guard, options, out, sweep, as_json, data)
    if sweep:
        result = run_sweep(bundle, _targets(target, targets), options)
    else:
        if not target:
            raise EdgeprotoError("validate needs a --target (onnxruntime, openvino)")
        result = validate_bundle(bundle, target=target, precision=precision, guard=guard, options=options)
        if localize:
            from edgeproto.compare.localize import localize as run_localize
            from edgeproto.compare.validate import localize_images

            result["localize"] = run_localize(bundle, localize_images(bundle, options), target=target,
                                              precision=precision, guard=guard, limit=localize_limit,
                                              device=device, threads=threads)
        if precision == "auto":  # the search that chose the artifact: its Pareto plot goes in the report
            from edgeproto.runtimes import get_runtime

            entry = bundle.manifest.get("compiled", {}).get(f"{get_runtime(target).artifact_target}-auto", {})
            if entry.get("search"):
                result["search"] = entry["search"]
    paths = write_report(result, Path(out)) if out is not None else None
    code = 0 if result["passed"] else 1
    if as_json:
        doc = _jsonable(result)
        if paths:
            doc["report"] = {k: str(v) for k, v in paths.items()}
        print(json.dumps(doc, indent=2))
        return code
    (_print_sweep if sweep else _print_validate)(result, paths)
    return code


@click.command()
@click.argument("bundle", type=click.Path())
@target_option()
@precision_option
@guard_option
@device_option
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="dataset config or recipe YAML (default: the bundle's recipe data)")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="the image folder of the bundle's dataset, when it is no longer where the manifest says")
@click.option("--split", default="test", show_default=True, help="dataset split")
@click.option("--limit", type=int, default=None, help="N images, evenly spaced over the split")
@click.option("--threads", type=int, default=0, show_default=True, help="runtime and PyTorch threads (0: default)")
@click.option("--thresholds", type=click.Path(dir_okay=False), default=None, help="YAML/JSON overriding thresholds")
@click.option("--out", type=click.Path(), default=None, help="write report.json + report.html here")
@click.option("--sweep", is_flag=True, help="fp32, fp16/bf16, int8 with and without the guard, in one table")
@click.option("--targets", default=None, help="with --sweep: comma-separated targets (default: --target)")
@click.option("--pointing-tolerance", type=float, default=0.0, show_default=True,
              help="pointing game: pixels of slack around the part masks (Zhang et al. use 15)")
@click.option("--localize", is_flag=True,
              help="mark intermediate tensors (backbone blocks, add-on, prototype-layer input, maps) as outputs in the "
                   "fp32 ONNX and the artifact and report where the artifact first diverges")
@click.option("--localize-limit", type=float, default=None,
              help="--localize: relative L2 error above which a tensor diverges (default by precision: int8 0.5, "
                   "fp16/bf16 0.1, fp32 1e-3)")
@json_option()
def validate(bundle, target, precision, guard, device, data, data_root, split, limit, threads, thresholds, out, sweep,
             targets, pointing_tolerance, localize, localize_limit, as_json) -> None:
    """Accuracy, parity and explanation fidelity vs the PyTorch reference; exit 1 when a threshold fails."""
    sys.exit(run_validate(bundle, target=target, precision=precision, guard=guard, data=data, split=split,
                          limit=limit, thresholds=thresholds, out=out, sweep=sweep, targets=targets,
                          device=device, threads=threads, as_json=as_json, data_root=data_root,
                          pointing_tolerance=pointing_tolerance, localize=localize, localize_limit=localize_limit))
