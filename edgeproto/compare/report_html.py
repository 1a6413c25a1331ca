"""``report.json`` + a self-contained ``report.html`` for ``edgeproto validate`` (one run or a sweep).

The HTML has inline CSS and every image inline (base64 PNG), so it can be mailed or archived as one
file: the verdict per threshold (coloured), parity, fidelity and localization tables (reference and
target side by side), the images whose explanations differ most, and for sample and worst images the
reference's and the target's explanations side by side (heatmap of the top-1 prototype with its
95th-percentile box and peak, next to that prototype's source patch). A sweep adds the table of
every (target, precision, guard) and a chart of fidelity and latency per precision (matplotlib,
object API). ``report.json`` holds every figure (raw example images are drawn, not stored).
Both files are written atomically (:mod:`edgeproto.atomic_files`).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgeproto import atomic_files
from edgeproto.device.figure import heatmap_overlay
from edgeproto.compare.report_images import array_uri, figure_uri
from edgeproto.compare.report_search import localize_section, pareto_section
from edgeproto.compare.thresholds import THRESHOLDS

PANEL = 160  # example panels are drawn at least this many pixels wide
SHOW = 168  # and shown this wide
BOX_COLOR = (0, 255, 102)

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1320px;color:#1f2328;
background:#fff;line-height:1.4}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
.meta{color:#57606a;font-size:13px}.meta code{font-size:12px}
.badge{display:inline-block;padding:4px 14px;border-radius:6px;font-weight:700;font-size:18px;color:#fff;
vertical-align:middle;margin-left:10px}
.PASS{background:#1a7f37}.FAIL{background:#cf222e}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}
th{background:#f6f8fa}td.l,th.l{text-align:left}
tr.pass td.st{background:#dafbe1;color:#1a7f37;font-weight:700}
tr.fail td.st{background:#ffebe9;color:#cf222e;font-weight:700}
tr.fail td{background:#fff5f4}
tr.off td.st,tr.na td.st{color:#8c959f}
td.bad{color:#cf222e;font-weight:600}td.good{color:#1a7f37}
.ex{border:1px solid #d0d7de;border-radius:8px;padding:10px;margin:10px 0;display:flex;gap:14px;align-items:flex-start;
flex-wrap:wrap}
.ex.diff{border-color:#cf222e;background:#fff8f7}
.ex figure{margin:0;text-align:center;font-size:12px}.ex img{display:block;border:1px solid #d0d7de;image-rendering:pixelated}
.ex .info{font-size:12.5px;flex:1 1 220px}.ex .info b{font-size:13.5px}
.side{border-left:3px solid #d0d7de;padding-left:10px;display:flex;gap:8px}
.side.ref{border-color:#0969da}.side.tgt{border-color:#8250df}
.tag{display:inline-block;font-size:11px;padding:1px 6px;border-radius:10px;background:#eaeef2;margin-right:4px}
.tag.worst{background:#ffebe9;color:#cf222e}
.tag.misclassified{background:#cf222e;color:#fff}
table.cm td.hit{background:#dafbe1;font-weight:700}table.cm td.miss{background:#ffebe9;color:#cf222e;font-weight:700}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
img.chart{max-width:100%;border:1px solid #d0d7de}
.sweep table{font-size:12px}.sweep th,.sweep td{padding:3px 5px}
"""


# --------------------------------------------------------------------------- helpers


def _jsonable(obj):
    """A copy fit for strict JSON: numpy types unwrapped, non-finite floats as null, ``_`` keys dropped."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def fmt(v) -> str:
    """A figure for a table cell."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        return f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def _e(s) -> str:
    return html.escape(str(s))


def _img(arr: np.ndarray, caption: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<figure><img src="{array_uri(arr)}"{w} alt="{_e(caption)}"><figcaption>{caption}</figcaption></figure>'


def _table(headers: list[str], rows: list[list[str]], left: int = 1, row_classes: list[str] | None = None) -> str:
    """An HTML table; the first ``left`` columns are left-aligned; cells are already HTML."""
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes else ""
        cells = "".join(c if c.startswith("<td") else (f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>")
                        for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------- sections


def verdict_table(checks: list[dict]) -> str:
    rows, classes = [], []
    for c in checks:
        op = "≥" if c["direction"] == "min" else "≤"
        limit = "—" if c["limit"] is None else f"{op} {fmt(c['limit'])}"
        rows.append([f"<code>{_e(c['name'])}</code>", _e(c.get("description", THRESHOLDS.get(c["name"], ("", ""))[1])),
                     limit, fmt(c["value"]), f'<td class="st">{_e(c["status"].upper())}</td>'])
        classes.append({"pass": "pass", "fail": "fail", "off": "off"}.get(c["status"], "na"))
    return _table(["threshold", "what", "limit", "value", "verdict"], rows, left=2, row_classes=classes)


def parity_table(parity: dict) -> str:
    rows = [[f"<code>{_e(n)}</code>", fmt(d["max_abs"]), fmt(d["mean_abs"]), fmt(d["p99_abs"]), fmt(d["max_rel"]),
             fmt(d["p99_rel"]), fmt(d["finite"])] for n, d in parity.items()]
    return _table(["output", "max abs", "mean abs", "p99 abs", "max rel", "p99 rel", "finite"], rows)


_FID_ROWS = (
    ("prediction", "prediction agreement", "same predicted class"),
    ("top1", "top-1 prototype agreement", "same top-1 explaining prototype (predicted class first, by similarity)"),
    ("topk_overlap", "top-k overlap", "mean |top-k ∩ top-k| / k"),
    ("topk_set", "top-k set agreement", "identical top-k sets"),
    ("kendall_tau", "Kendall τ (scores)", "rank correlation of all prototype scores"),
    ("map_pearson", "map Pearson", "reference's top-k prototypes: Pearson of the raw maps"),
    ("map_iou", "map IoU (≥p95)", "IoU of the ≥95th-percentile masks of the upsampled maps"),
    ("box_iou", "high-activation box IoU", "IoU of ProtoPNet's 95th-percentile boxes"),
    ("argmax", "argmax agreement", "maps peak in the same latent cell"),
    ("argmax_pixel", "argmax agreement, pixel", "upsampled maps peak at the very same input pixel"),
    ("argmax_distance_px", "argmax distance (px)", "mean distance between the two peaks"),
    ("map_pearson_top1", "map Pearson, top-1", "the reference's top-1 prototype only"),
    ("map_iou_top1", "map IoU, top-1", "the reference's top-1 prototype only"),
    ("argmax_top1", "argmax agreement, top-1", "the reference's top-1 prototype only"),
)


def fidelity_table(summary: dict) -> str:
    rows = [[_e(label), _e(what), fmt(summary.get(key))] for key, label, what in _FID_ROWS if key in summary]
    return _table(["figure", "what", f"target vs reference ({summary.get('images')} images, k={summary.get('k')})"],
                  rows, left=2)


def _delta_cell(r, a) -> str:
    if r is None or a is None:
        return "—"
    d = a - r
    cls = "good" if abs(d) < 1e-12 else "bad"
    return f'<td class="{cls}">{d:+.4f}</td>'


def localization_section(loc: dict | None) -> str:
    if not loc:
        return "<p class='meta'>The dataset has no part annotations: pointing game, consistency and stability " \
               "are not measured.</p>"
    ref, tgt = loc["reference"], loc["target"]
    rows = []
    for key, label in (("pointing_game", "pointing game"), ("consistency", "consistency"),
                       ("stability", f"stability (noise σ={loc.get('noise_std')})")):
        rows.append([_e(label), fmt(ref.get(key)), fmt(tgt.get(key)), _delta_cell(ref.get(key), tgt.get(key))])
    rows.append(["consistent prototypes", f"{ref['consistent_prototypes']}/{ref['measured_prototypes']}",
                 f"{tgt['consistent_prototypes']}/{tgt['measured_prototypes']}", ""])
    out = _table(["figure", "reference (PyTorch)", "target", "target − reference"], rows)
    out += (f"<p class='meta'>Box {ref['box_px']}×{ref['box_px']} px (±{ref['box_half_px']} px, inclusive) around "
            f"the upsampled argmax (±36 px at 224 px); a part is hit when its centroid is in the box; consistent "
            f"when a part's hit rate over the images of the prototype's class where the part is visible is ≥ "
            f"{ref['threshold']:g}; stability noise clipped to ±0.25 (Huang et al., ICCV 2023, as their public "
            f"EvalProtoPNet code computes them). Pointing game tolerance "
            f"{ref.get('pointing_tolerance_px', 0):g} px.</p>")
    prow = []
    for pr, pt in zip(ref["prototypes"], tgt["prototypes"]):
        if not pr.get("images"):
            continue
        prow.append([str(pr["prototype"]), str(pr["class"]), _e(pr.get("best_part_name", "")),
                     fmt(pr.get("best_rate")), fmt(pt.get("best_rate")), fmt(pr.get("consistent")),
                     fmt(pt.get("consistent")), fmt(pr.get("stability")), fmt(pt.get("stability")),
                     str(pr["images"])])
    out += ("<details><summary>per prototype</summary>"
            + _table(["prototype", "class", "best part (ref)", "hit rate ref", "hit rate target", "consistent ref",
                      "consistent target", "stability ref", "stability target", "images"], prow, left=3)
            + "</details>")
    return out


def worst_table(worst: list[dict], classes: list[str]) -> str:
    if not worst:
        return "<p class='meta'>No images.</p>"
    note = ("<p class='meta'>No image's explanation differs: these are simply the first images.</p>"
            if all(w.get("badness", 1) < 1e-6 for w in worst) else "")

    def cls(i):
        return _e(classes[i]) if 0 <= i < len(classes) else str(i)

    rows = []
    for w in worst:
        rows.append([str(w["id"]), _e(w.get("label_name", "")), cls(w["ref_pred"]),
                     cls(w["act_pred"]) if w["prediction"] else f'<td class="bad">{cls(w["act_pred"])}</td>',
                     str(w["ref_top1"]), str(w["act_top1"]) if w["top1"] else f'<td class="bad">{w["act_top1"]}</td>',
                     fmt(w["topk_overlap"]), fmt(w["kendall_tau"]), fmt(w["map_pearson"]), fmt(w["map_iou"]),
                     fmt(w["argmax"])])
    return note + _table(["image id", "label", "ref prediction", "target prediction", "ref top-1", "target top-1",
                          "top-k overlap", "Kendall τ", "map Pearson", "map IoU", "argmax"], rows, left=2)


def _side_side(size: int) -> int:
    return size * max(1, -(-PANEL // size))


def _overlay(raw: np.ndarray, rec: dict, side: int) -> np.ndarray:
    """The input with the prototype's heatmap, its 95th-percentile box and its peak."""
    size = raw.shape[0]
    if not rec.get("finite", True) or "map" not in rec:
        img = np.asarray(Image.fromarray(raw).resize((side, side), Image.Resampling.NEAREST)).copy()
        img[::4, :, :] = (207, 34, 46)  # striped red: no map to draw
        return img
    over = Image.fromarray(heatmap_overlay(raw, np.asarray(rec["map"], dtype=np.float64), side))
    draw = ImageDraw.Draw(over)
    s = side / size
    x0, y0, x1, y1 = rec["box"]
    draw.rectangle([x0 * s + 1, y0 * s + 1, x1 * s - 2, y1 * s - 2], outline=BOX_COLOR, width=2)
    ax, ay = ((v + 0.5) * s for v in rec["argmax"])
    draw.line([ax - 7, ay, ax + 7, ay], fill=(255, 255, 255), width=2)
    draw.line([ax, ay - 7, ax, ay + 7], fill=(255, 255, 255), width=2)
    return np.asarray(over)


def _patch(bundle_root: Path, rel: str | None, side: int) -> np.ndarray | None:
    if not rel:
        return None
    try:
        with Image.open(bundle_root / rel) as im:
            im = im.convert("RGB")
            w, h = im.size
            f = side / max(w, h)
            im = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.NEAREST)
            canvas = Image.new("RGB", (side, side), (255, 255, 255))
            canvas.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
            return np.asarray(canvas)
    except (OSError, ValueError, SyntaxError):
        return None


def _side_html(name: str, css: str, side_rec: dict, raw: np.ndarray, side: int, bundle_root: Path) -> str:
    top = side_rec["top"][0]
    parts = [_img(_overlay(raw, top, side),
                  f"{name}: prototype <b>{top['prototype']}</b><br>score {fmt(top['score'])} · "
                  f"contribution {fmt(top['contribution'])}", SHOW)]
    patch = _patch(bundle_root, top.get("patch_png"), side)
    if patch is not None:
        parts.append(_img(patch, f"…looks like prototype {top['prototype']}<br>(class {top['class']})", SHOW))
    return f'<div class="side {css}">{"".join(parts)}</div>'


def example_card(ex: dict, bundle_root: Path) -> str:
    raw = ex.get("_raw")
    if raw is None:
        return ""
    raw = np.asarray(raw, dtype=np.uint8)
    side = _side_side(raw.shape[0])
    ref, tgt, f = ex["reference"], ex["target"], ex["fidelity"]
    differs = not (f["top1"] and f["prediction"])
    wrong = tgt["pred"] != ex.get("label", tgt["pred"])
    kinds = [k for k in ex["kind"] if k != "misclassified"] + (["misclassified"] if wrong else [])
    tags = "".join(f'<span class="tag {_e(k)}">{_e(k)}</span>' for k in kinds)
    rows = [
        f"<b>image {ex['id']}</b> {tags}",
        f"label: {_e(ex['label_name'])}",
        f"reference: {_e(ref['pred_name'])}, prototypes {', '.join(str(t['prototype']) for t in ref['top'])}",
        f"target: {_e(tgt['pred_name'])}, prototypes {', '.join(str(t['prototype']) for t in tgt['top'])}",
        f"same prediction: <b>{fmt(f['prediction'])}</b> · same top-1: <b>{fmt(f['top1'])}</b>",
        f"top-k overlap {fmt(f['topk_overlap'])} · τ {fmt(f['kendall_tau'])}",
        f"map Pearson {fmt(f['map_pearson'])} · IoU {fmt(f['map_iou'])} · argmax {fmt(f['argmax'])}",
    ]
    big = np.asarray(Image.fromarray(raw).resize((side, side), Image.Resampling.NEAREST))
    return (f'<div class="ex{" diff" if differs else ""}">{_img(big, "input", SHOW)}'
            + _side_html("reference (PyTorch)", "ref", ref, raw, side, bundle_root)
            + _side_html("target", "tgt", tgt, raw, side, bundle_root)
            + f'<div class="info">{"<br>".join(rows)}</div></div>')


def environment_section(env: dict, timing: dict | None = None) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    rt = env.get("runtime")
    rows = [["CPU", _e(f"{env.get('cpu')} ({env.get('logical_cpus')} logical cores)")],
            ["threads", _e(", ".join(f"{k}: {v}" for k, v in env.get("threads", {}).items()))],
            ["versions", _e(versions)], ["platform", _e(f"{env.get('platform')} · Python {env.get('python')}")]]
    if rt:
        rows.insert(0, ["runtime", _e(f"{rt['name']} {rt['version']} · {rt['precision']} · {rt['device']}")])
    if timing:
        rows.append(["wall time", _e(", ".join(f"{k} {v:.1f} s" for k, v in timing.items()))])
    return _table(["", ""], rows, left=2)


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>")


def _badge(passed: bool) -> str:
    return f'<span class="badge {"PASS" if passed else "FAIL"}">{"PASS" if passed else "FAIL"}</span>'


def confusion_table(matrix: list[list[int]], classes: list[str], reference: list[list[int]] | None = None) -> str:
    """Rows: true label; columns: the target's prediction (the reference's count in brackets where it
    differs). Diagonal green, off-diagonal misclassifications red."""
    head = "".join(f"<th>{_e(c)}</th>" for c in classes)
    rows = []
    for i, row in enumerate(matrix):
        cells = []
        for j, n in enumerate(row):
            ref = reference[i][j] if reference is not None else n
            cls = "hit" if i == j and n else ("miss" if n else "")
            cells.append(f"<td class='{cls}'>{n}{f' ({ref})' if ref != n else ''}</td>")
        rows.append(f"<tr><th class='l'>{_e(classes[i])}</th>{''.join(cells)}</tr>")
    return (f"<table class='cm'><tr><th class='l'>label ↓ · predicted →</th>{head}</tr>{''.join(rows)}</table>"
            "<p class='meta'>Counts of the target; in brackets the PyTorch reference's where it differs.</p>")


def _validate_body(r: dict, heading: bool = True) -> str:
    t, d, m, a = r["target"], r["data"], r["model"], r["accuracy"]
    root = Path(r["bundle"])
    out = []
    if heading:
        out.append(f"<h1>edgeproto validate: {_e(t['target'])} {_e(t['precision'])}"
                   f"{'' if t['guard'] == 'prototypes' else ' (no guard)'} {_badge(r['passed'])}</h1>")
        out.append(f"<div class='meta'>bundle <code>{_e(r['bundle'])}</code> · artifact <code>{_e(t['artifact'])}"
                   f"</code> · reference <code>{_e(r['checkpoint'])}</code><br>model {_e(m['recipe'])} "
                   f"({_e(m['family'])}, {m['prototypes']} prototypes, {len(m['classes'])} classes, "
                   f"{m['input_size']}×{m['input_size']}) · data {_e(d['config'].get('name'))} {_e(d['split'])} split: "
                   f"{d['images']} of {d['split_size']} images · {_e(r['created'])}</div>")
    if r["failed"]:
        out.append(f"<p><b style='color:#cf222e'>Failed: {_e(', '.join(r['failed']))}</b></p>")
    out.append("<h2>Verdict</h2>" + verdict_table(r["checks"]))
    out.append("<h2>Accuracy</h2>" + _table(
        ["", "reference (PyTorch)", "target", "prediction agreement"],
        [["top-1 accuracy", fmt(a["reference"]), fmt(a["target"]), fmt(a["prediction_agreement"])]]))
    if a.get("confusion"):
        out.append("<h3>Confusion matrix</h3>" + confusion_table(a["confusion"]["target"], m["classes"],
                                                                 a["confusion"]["reference"]))
    out.append("<h2>Numerical parity (target − reference, all images)</h2>" + parity_table(r["parity"]))
    out.append("<h2>Explanation fidelity</h2>" + fidelity_table(r["fidelity"]))
    out.append("<h2>Localization against ground-truth parts</h2>" + localization_section(r.get("localization")))
    out.append("<h2>Images whose explanations differ most</h2>" + worst_table(r["worst"], m["classes"]))
    cards = "".join(example_card(ex, root) for ex in r.get("examples", []))
    if cards:
        out.append("<h2>Explanations side by side</h2><p class='meta'>Left: the input. Blue: the PyTorch "
                   "reference's top-1 prototype (heatmap, 95th-percentile box in green, peak +) and its source "
                   "patch. Purple: the same for the target. Red frame: prediction or top-1 prototype differs."
                   "</p>" + cards)
    return "".join(out)


def render_validate(r: dict) -> str:
    body = _validate_body(r)
    body += localize_section(r.get("localize")) + pareto_section(r)
    body += "<h2>Environment</h2>" + environment_section(r["environment"], r.get("timing_s"))
    t = r["target"]
    return _page(f"validate {t['target']} {t['precision']}: {'PASS' if r['passed'] else 'FAIL'}", body)


def _config_label(row: dict) -> str:
    return row["precision"] + ("" if row["guard"] == "prototypes" else "\nno guard")


def sweep_chart(s: dict) -> str | None:
    """Fidelity vs precision (one line per target and figure) and batch-1 latency, as a data URI."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in s["rows"] if "error" not in r]
    if not rows:
        return None
    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig = Figure(figsize=(13, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    styles = {"top1_prototype_agreement": ("top-1 prototype", "o", "-"),
              "prediction_agreement": ("prediction", "s", "--"),
              "map_iou": ("map IoU", "^", ":"), "topk_overlap": ("top-5 overlap", "D", "-.")}
    colors = ["#0969da", "#8250df", "#bf3989", "#1a7f37"]
    positions: list[str] = []  # one x position per config label; fp16 and bf16 share the "half" slot
    for r in rows:
        slot = "half" if r["precision"] in ("fp16", "bf16") else _config_label(r)
        if slot not in positions:
            positions.append(slot)
    names = {p: " / ".join(dict.fromkeys(r["precision"] for r in rows if r["precision"] in ("fp16", "bf16")))
             if p == "half" else p for p in positions}
    for ti, target in enumerate(targets):
        trs = [r for r in rows if r["target"] == target]
        x = [positions.index("half" if r["precision"] in ("fp16", "bf16") else _config_label(r)) for r in trs]
        for key, (label, marker, ls) in styles.items():
            ax1.plot(x, [r[key] for r in trs], marker=marker, ls=ls, color=colors[ti % len(colors)],
                     label=f"{target}: {label}")
    ax1.set_xticks(np.arange(len(positions)), [names[p] for p in positions])
    ax1.set_ylim(-0.02, 1.05)
    ax1.set_ylabel("agreement with PyTorch")
    ax1.set_title("explanation fidelity vs precision")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7.5, loc="lower left", ncol=len(targets))
    labels = [f"{r['target']}\n{_config_label(r)}" for r in rows]
    vals = [r["latency_ms"] for r in rows]
    bars = ax2.bar(np.arange(len(rows)), vals, color=[colors[targets.index(r["target"]) % len(colors)] for r in rows])
    ref = s["reference"]["latency_ms"]
    ax2.axhline(ref, color="#57606a", ls="--", lw=1)
    ax2.text(len(rows) - 0.5, ref, f" PyTorch {ref:.2f} ms", va="bottom", ha="right", fontsize=8, color="#57606a")
    for b, v in zip(bars, vals):
        ax2.text(b.get_x() + b.get_width() / 2, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax2.set_xticks(np.arange(len(rows)), labels, fontsize=7.5)
    ax2.set_ylabel("batch-1 latency, p50 (ms)")
    ax2.set_title("latency")
    ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return figure_uri(fig)


def render_sweep(s: dict) -> str:
    d = s["data"]
    out = [f"<h1>edgeproto validate --sweep {_badge(s['passed'])}</h1>",
           f"<div class='meta'>bundle <code>{_e(s['bundle'])}</code> · reference <code>{_e(s['checkpoint'])}</code> · "
           f"data {_e(d['config'].get('name'))} {_e(d['split'])} split: {d['images']} of {d['split_size']} images · "
           f"PyTorch accuracy {fmt(s['reference']['accuracy'])}, batch-1 {s['reference']['latency_ms']:.2f} ms · "
           f"{_e(s['created'])}<br>The gate covers the guarded rows; int8 without the explanation guard is shown "
           "for comparison.</div>"]
    if s["failed"]:
        out.append(f"<p><b style='color:#cf222e'>Failed: {_e(', '.join(s['failed']))}</b></p>")
    rows, classes, failures = [], [], []
    for r in s["rows"]:
        if "error" in r:
            rows.append([_e(r["target"]), _e(r["precision"]), _e(r["guard"]),
                         f'<td class="l bad" colspan="15">{_e(r["error"])}</td>', '<td class="st">ERROR</td>'])
            failures.append(f"<li><b>{_e(r['target'])} {_e(r['precision'])}</b>: {_e(r['error'])}</li>")
            classes.append("fail")
            continue
        verdict = "PASS" if r["passed"] else f"FAIL ({len(r['failed'])})"
        if not r["passed"]:
            failures.append(f"<li><b>{_e(r['target'])} {_e(r['precision'])}"
                            f"{'' if r['guard'] == 'prototypes' else ' (no guard, not gated)'}</b>: "
                            f"{_e(', '.join(r['failed']))}</li>")
        precision = r["precision"] + ("" if r["effective_precision"] == r["precision"]
                                      else f" (runs {r['effective_precision']})")
        rows.append([_e(r["target"]), _e(precision), _e(r["guard"]),
                     fmt(r["accuracy"]), fmt(r["prediction_agreement"]), fmt(r["top1_prototype_agreement"]),
                     fmt(r["topk_overlap"]), fmt(r["kendall_tau"]), fmt(r["map_pearson"]), fmt(r["map_iou"]),
                     fmt(r["argmax_agreement"]), fmt(r["pointing_game"]), fmt(r["consistency"]), fmt(r["stability"]),
                     fmt(r["scores_max_abs"]) if r["finite"] else '<td class="bad">non-finite</td>',
                     f"{r['latency_ms']:.3f}", fmt(r.get("latency_vs_fp32")), fmt(r.get("latency_vs_pytorch")),
                     f'<td class="st l">{_e(verdict)}</td>'])
        classes.append("pass" if r["passed"] else "fail")
    ref_loc = s["reference"].get("localization") or {}
    rows.append(["PyTorch", "fp32", "—", fmt(s["reference"]["accuracy"]), "1", "1", "1", "1", "1", "1", "1",
                 fmt(ref_loc.get("pointing_game")), fmt(ref_loc.get("consistency")), fmt(ref_loc.get("stability")),
                 "0", f"{s['reference']['latency_ms']:.3f}", "—", "1", '<td class="st l">reference</td>'])
    classes.append("off")
    out.append("<h2>Sweep</h2><div class='sweep'>" + _table(
        ["target", "precision", "guard", "accuracy", "prediction agr.", "top-1 proto agr.", "top-5 overlap",
         "Kendall τ", "map Pearson", "map IoU", "argmax agr.", "pointing game", "consistency", "stability",
         "scores max abs", "batch-1 ms", "× fp32", "× PyTorch", "verdict"], rows, left=3, row_classes=classes)
        + "</div>")
    if failures:
        out.append("<p class='meta'>Failed thresholds:</p><ul class='meta'>" + "".join(failures) + "</ul>")
    chart = sweep_chart(s)
    if chart:
        out.append(f"<h2>Fidelity and latency per precision</h2><img class='chart' src='{chart}' alt='sweep chart'>")
    out.append(pareto_section(s))
    out.append("<h2>Each configuration</h2>")
    for r, rep in zip(s["rows"], s["reports"]):
        if rep is None:
            continue
        title = f"{r['target']} {r['precision']}{'' if r['guard'] == 'prototypes' else ' (no guard)'}"
        out.append(f"<details><summary>{_e(title)}: {'PASS' if rep['passed'] else 'FAIL'}</summary>"
                   f"{_validate_body(rep, heading=False)}</details>")
    out.append("<h2>Environment</h2>" + environment_section(s["environment"]))
    return _page(f"validate sweep: {'PASS' if s['passed'] else 'FAIL'}", "".join(out))


def write_report(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` for a validate or sweep result into ``out_dir``."""
    out_dir = Path(out_dir)
    page = render_sweep(result) if result.get("kind") == "sweep" else render_validate(result)
    paths = {"json": out_dir / "report.json", "html": out_dir / "report.html"}
    atomic_files.write_text(paths["json"], json.dumps(_jsonable(result), indent=2, allow_nan=False))
    atomic_files.write_text(paths["html"], page)
    return paths
