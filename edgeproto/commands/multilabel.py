"""``validate`` and ``explain`` of a multi-label bundle (``"task": "multilabel"``): run and render.

Reached from :mod:`edgeproto.commands.validate` and :mod:`edgeproto.commands.explain` when the
bundle's manifest says ``multilabel``.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeproto import atomic_files
from edgeproto.commands.options import console
from edgeproto.errors import EdgeprotoError


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def validate_multilabel(bundle, target, precision, guard, options, out, sweep, as_json, data) -> int:
    """Validate one target; exit code 0 when every check passes, 1 otherwise."""
    from rich.table import Table

    from edgeproto.compare.multilabel import validate_multilabel as run

    if sweep or data is not None or options.thresholds is not None:
        raise EdgeprotoError("validate of a multi-label bundle takes one --target (no --sweep, --data or "
                             "--thresholds yet)")
    if not target:
        raise EdgeprotoError("validate needs a --target (onnxruntime, openvino)")
    result = run(bundle, target, precision, guard, split=options.split, limit=options.limit, batch=options.batch,
                 device=options.device, threads=options.threads, data_root=options.data_root,
                 progress=options.progress)
    if out is not None:
        atomic_files.write_text(Path(out) / "report.json", json.dumps(result, indent=2))
    code = 0 if result["passed"] else 1
    if as_json:
        print(json.dumps(result, indent=2))
        return code
    t = result["target"]
    cons = console()
    table = Table(title=f"{t['target']} {t['precision']} vs PyTorch on {result['data']['images']} "
                        f"{result['data']['split']} images (multi-label)")
    for col in ("check", "limit", "value", "verdict"):
        table.add_column(col, justify="left" if col in ("check", "verdict") else "right")
    for c in result["checks"]:
        value = str(c["value"]) if isinstance(c["value"], bool) else f"{c['value']:.4f}"
        table.add_row(c["name"], "" if isinstance(c["limit"], bool) else f"≥ {c['limit']}", value,
                      "[green]PASS[/]" if c["passed"] else "[bold red]FAIL[/]")
    cons.print(table)
    r, d = result["reference"], result["deployed"]
    labels = Table(title="per label (reference → target)")
    for col in ("label", "AP", "F1", "pointing game", "decision agreement"):
        labels.add_column(col, justify="left" if col == "label" else "right")
    for c, name in enumerate(result["data"]["labels"]):
        point = (f"{_fmt(r['label_pointing_game'][c])} → {_fmt(d['label_pointing_game'][c])}"
                 if "label_pointing_game" in r else "—")
        labels.add_row(name, f"{_fmt(r['label_ap'][c])} → {_fmt(d['label_ap'][c])}",
                       f"{_fmt(r['label_f1'][c])} → {_fmt(d['label_f1'][c])}", point,
                       f"{result['label_decision_agreement'][c]:.4f}")
    cons.print(labels)
    cons.print(f"mAP: reference {r['map']:.4f}, target {d['map']:.4f}; macro F1: reference {r['macro_f1']:.4f}, "
               f"target {d['macro_f1']:.4f}; {result['maps_compared']} transport maps compared; max |target − reference|: "
               + ", ".join(f"{k} {v:.3g}" for k, v in result["max_abs"].items()))
    cons.print("[bold green]PASSED[/]" if result["passed"] else f"[bold red]FAILED[/]: {', '.join(result['failed'])}")
    return code


def explain_multilabel(bundle, image, target, precision, guard, device, png: Path, js: Path, as_json: bool) -> int:
    """Explain one image: the predicted label set and each predicted label's transport map."""
    from rich.table import Table

    from edgeproto.device.multilabel import explain_multilabel as run
    from edgeproto.device.multilabel import render_multilabel

    result = run(bundle, image, target=target, precision=precision, guard=guard, device=device)
    render_multilabel(bundle, image, result, png)
    result["figure"] = str(png)
    atomic_files.write_text(js, json.dumps(result))
    if as_json:
        print(json.dumps({**result, "labels": [{k: v for k, v in r.items() if k != "map"} for r in result["labels"]],
                          "json": str(js)}, indent=2))
        return 0
    rt = result["runtime"]
    table = Table(title=f"{Path(image).name}: {', '.join(result['predicted_labels']) or 'no label predicted'}",
                  caption=f"{rt['name']} {rt['version']} · {rt['precision']} · {rt['device']}")
    for col in ("label", "probability", "label embedding", "score", "peak (x,y)", "95% box"):
        table.add_column(col, justify="left" if col in ("label", "95% box") else "right")
    for r in result["labels"]:
        table.add_row(r["label_name"] + ("" if r["predicted"] else " (below threshold)"), f"{r['probability']:.3f}",
                      str(r["prototype"]), f"{r['score']:.4g}", f"{r['peak'][0]},{r['peak'][1]}", str(r["box"]))
    out = console()
    out.print(table)
    out.print(f"figure: {png}\njson:   {js}")
    return 0
