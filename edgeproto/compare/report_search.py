"""Report sections for precision choices: the Pareto plot (latency vs top-1 prototype agreement vs
accuracy) of a sweep or of a ``compile --precision auto`` search, and the ``validate --localize`` table.

Each returns an HTML fragment (empty when there is nothing to show); :mod:`.report_html` places them.
The plot is matplotlib (object API, Agg), inline as a base64 PNG.
"""

from __future__ import annotations

import html
import math

from edgeproto.compare.report_images import figure_uri

__all__ = ["localize_section", "pareto_chart", "pareto_front", "pareto_points", "pareto_section"]


def _e(s) -> str:
    return html.escape(str(s))


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def pareto_points(result: dict) -> list[dict]:
    """``{label, latency_ms, top1, accuracy, passed, chosen}`` per configuration: the rows of a sweep,
    or the candidates of the ``compile --precision auto`` search a validate report carries."""
    points = []
    if result.get("kind") == "sweep":
        for r in result.get("rows", []):
            if "error" in r or r.get("latency_ms") is None:
                continue
            points.append({"label": f"{r['target']} {r['precision']}" + ("" if r["guard"] == "prototypes" else
                                                                         " no guard"),
                           "latency_ms": r["latency_ms"], "top1": r["top1_prototype_agreement"],
                           "accuracy": r["accuracy"], "passed": r["passed"], "chosen": False})
        return points
    search = result.get("search") or {}
    for r in search.get("candidates", []):
        if "error" in r or r.get("latency_ms") is None or r.get("same_as"):  # a duplicate artifact: one point
            continue
        points.append({"label": r["name"], "latency_ms": r["latency_ms"], "top1": r["top1"],
                       "accuracy": r["accuracy"], "passed": r["passed"], "chosen": r["name"] == search.get("winner")})
    return points


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point beats on both latency (lower) and top-1 agreement (higher), fastest first."""
    front = [p for p in points
             if not any((q["latency_ms"] <= p["latency_ms"] and q["top1"] >= p["top1"])
                        and (q["latency_ms"] < p["latency_ms"] or q["top1"] > p["top1"]) for q in points)]
    return sorted(front, key=lambda p: p["latency_ms"])


def pareto_chart(points: list[dict], min_top1: float | None = None, title: str = "") -> str | None:
    """Latency (x) vs top-1 prototype agreement (y), colour = accuracy, the Pareto front as a step
    line; a data URI, or None without points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [p for p in points if p["top1"] is not None and math.isfinite(p["latency_ms"])]
    if not points:
        return None
    fig = Figure(figsize=(9.5, 5.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = [p["latency_ms"] for p in points]
    y = [p["top1"] for p in points]
    acc = [p["accuracy"] for p in points]
    sc = ax.scatter(x, y, c=acc, cmap="viridis", s=[110 if p["chosen"] else 55 for p in points],
                    edgecolors=["#cf222e" if p["chosen"] else "#1f2328" for p in points],
                    linewidths=[2.2 if p["chosen"] else 0.6 for p in points], zorder=3)
    cbar = fig.colorbar(sc, ax=ax)
    cbar.set_label("accuracy (validation images)")
    front = pareto_front(points)
    ax.step([p["latency_ms"] for p in front], [p["top1"] for p in front], where="post", color="#8250df",
            lw=1.3, ls="--", label="Pareto front", zorder=2)
    for p in points:
        ax.annotate(p["label"][:44], (p["latency_ms"], p["top1"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=7, color="#cf222e" if p["chosen"] else "#57606a")
    if min_top1 is not None:
        ax.axhline(min_top1, color="#cf222e", lw=1, ls=":", label=f"min top-1 {min_top1:g}")
    ax.set_xlabel("batch-1 latency, p50 (ms) — lower is better")
    ax.set_ylabel("top-1 prototype agreement — higher is better")
    ax.set_title(title or "latency vs explanation fidelity vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return figure_uri(fig)


def pareto_section(result: dict) -> str:
    """``<h2>`` + the plot + the front as a list, for a sweep or an auto-compiled artifact's search."""
    points = pareto_points(result)
    if not points:
        return ""
    search = result.get("search") or {}
    min_top1 = (search.get("thresholds") or {}).get("min_top1")
    what = ("every configuration of the sweep" if result.get("kind") == "sweep" else
            "every candidate of the compile --precision auto search (its validation images; red ring: chosen)")
    chart = pareto_chart(points, min_top1)
    front = ", ".join(f"{_e(p['label'])} ({p['latency_ms']:.3f} ms, top-1 {p['top1']:.3f})" for p in pareto_front(points))
    return (f"<h2>Latency vs top-1 prototype agreement vs accuracy (Pareto)</h2><p class='meta'>{_e(what)}. "
            f"Pareto front (no other point is both faster and more faithful): {front}.</p>"
            + (f"<img class='chart' src='{chart}' alt='Pareto plot'>" if chart else ""))


def localize_section(loc: dict | None) -> str:
    """The ``validate --localize`` table: per watched tensor, the target's error against the fp32 model."""
    if not loc:
        return ""
    first = loc.get("first_divergence")
    head = (f"<p><b style='color:#cf222e'>First divergence: {_e(first['tensor'])} — {_e(first['what'])} "
            f"(relative L2 error {_num(first['rel_l2'])})</b></p>" if first else
            "<p><b style='color:#1a7f37'>No tensor diverges</b></p>")
    head += (f"<p class='meta'>Top-1 prototype agreement on these images: "
             f"{_num(loc.get('top1_prototype_agreement'))}</p>")
    rows = []
    for r in loc["tensors"]:
        if r["status"] == "absent":
            rows.append(f"<tr class='off'><td class='l'>{_e(r['tensor'])}</td><td class='l'>{_e(r['what'])}</td>"
                        "<td colspan='5'>not in the target's graph under this name</td><td class='st'>absent</td></tr>")
            continue
        css = "fail" if r["status"] == "diverged" else "pass"
        rows.append(f"<tr class='{css}'><td class='l'>{_e(r['tensor'])}</td><td class='l'>{_e(r['what'])}</td>"
                    f"<td>{_num(r['rel_l2'])}</td><td>{_num(r['max_abs'])}</td><td>{_num(r['p99_abs'])}</td>"
                    f"<td>{_num(r['within_tolerance'])}</td><td>{_num(r.get('growth'))}</td>"
                    f"<td class='st'>{_e(r['status'])}</td></tr>")
    tol = loc["tolerance"]
    return ("<h2>Where the artifact departs from the fp32 model (--localize)</h2>"
            f"<p class='meta'>{loc['images']} images; reference: {_e(loc['reference'])}; a tensor diverges when "
            f"its relative L2 error ‖t − r‖/‖r‖ exceeds {_num(loc['limit_rel_l2'])} or it is not finite; "
            f"'within tol.' is the fraction of elements within {tol['atol']:g} + {tol['rtol']:g}·|r|.</p>" + head
            + "<table><tr><th class='l'>tensor</th><th class='l'>what</th><th>rel. L2</th><th>max abs</th>"
              "<th>p99 abs</th><th>within tol.</th><th>× previous</th><th>status</th></tr>" + "".join(rows)
            + "</table>")
