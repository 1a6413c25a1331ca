"""Human and JSON summaries of a checkpoint (``edgeproto train`` / ``edgeproto info``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgeproto.layers import get_family


def summarize(config: dict, path: str | Path, detailed: bool = False) -> dict:
    """The figures a user asks of a checkpoint first."""
    model = config["model"]
    protos = model["prototypes"]
    family = get_family(protos["family"])
    per_class = Counter(p["class_name"] for p in config.get("prototypes", []))
    summary = {
        "checkpoint": str(path),
        "recipe": config["recipe"]["name"],
        "backbone": model["backbone"],
        "family": family.name,
        "op": f"edgeproto::{family.op_type}",
        "formula": family.summary,
        # proc_kd students hold their teacher's prototypes, not per_class × their own classes
        "num_prototypes": model.get("teacher_prototypes", protos["per_class"] * model["num_classes"]),
        "prototype_dim": protos["dim"],
        "classes": config["classes"],
        "prototypes_per_class": dict(per_class),
        "image_size": config["image_size"],
        "duplicates_merged": len(config.get("merged_prototypes", {})),
        "merged_prototypes": config.get("merged_prototypes", {}),
        "prototypes_without_source": [p["index"] for p in config.get("prototypes", [])
                                      if p.get("no_source")],
        "metrics": config.get("metrics", {}),
        "train_seconds": config.get("train_seconds"),
        "world_size": config.get("world_size", 1),
        "imported": config.get("imported", {}).get("from"),
        "teacher": (model.get("teacher") or {}).get("checkpoint"),  # edgeproto distill
    }
    if detailed:
        summary["prototypes"] = config.get("prototypes", [])
    return summary


def render(summary: dict, console: Console | None = None) -> None:
    """Print a summary as a table (on ``console``; default: stdout, 160 columns when piped)."""
    table = Table(title=f"checkpoint {summary['checkpoint']}", show_header=False)
    for key in ("recipe", "family", "op", "formula", "backbone", "num_prototypes", "prototype_dim",
                "classes", "image_size", "train_seconds", "world_size"):
        table.add_row(key, str(summary[key]))
    if summary.get("teacher"):
        table.add_row("distilled from", summary["teacher"])
    merged = summary.get("merged_prototypes", {})
    table.add_row("duplicates merged", f"{len(merged)}" + (
        " (" + ", ".join(f"{d}→{k}" for d, k in merged.items()) + ")" if merged else ""))
    if summary.get("prototypes_without_source"):
        table.add_row("no source patch", "prototypes " + ", ".join(map(str, summary["prototypes_without_source"]))
                      + (" (imported: no source patches)" if summary.get("imported")
                                 else " (their class had no training image)"))
    for key, value in summary["metrics"].items():
        if "_epoch" not in key:  # per-epoch curves stay in --json
            values = value if isinstance(value, (list, tuple)) else [value]  # e.g. per-class IoU
            table.add_row(key, ", ".join(f"{v:.4f}" for v in values))
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    console.print(table)
