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


def stream_paths(source, out=None) -> tuple[Path, Path]:
    """Outputs of a folder (a directory of figures + ``explanations.jsonl``) or of a video / camera
    (``x.mp4`` + ``x.jsonl``). Default: ``<input>.explained/`` or ``<input stem>.explained.mp4``
    beside the input (``camera<N>.explained.mp4`` in the current directory)."""
    if source.kind == "folder":
        folder = Path(out) if out else Path(source.label.rstrip("/\\") + ".explained")
        if folder.exists() and not folder.is_dir():
            raise EdgeprotoError(f"-o {out}: not a directory")
        return folder, folder / "explanations.jsonl"
    if out:
        base = Path(out)
        base = base.with_suffix("") if base.suffix.lower() in (".mp4", ".jsonl") else base
    elif source.kind == "camera":
        base = Path(source.label.replace(" ", "") + ".explained")
    else:
        base = Path(source.label).with_name(Path(source.label).stem + ".explained")
    return base.with_name(base.name + ".mp4"), base.with_name(base.name + ".jsonl")


def run_explain(bundle, image, target: str = "onnxruntime", precision: str = "fp32", guard: str = "prototypes",
                device: str | None = None, k: int = 3, out_prefix=None, as_json: bool = False, *,
                because: bool = False, overlap: bool = True, max_frames: int | None = None,
                figure: bool = True) -> int:
    """Explain ``image`` (an image file, a folder, a video file or a camera) with ``bundle`` on ``target``.

    An image gets ``<out>.png`` + ``<out>.json`` (:func:`output_paths`); a folder a figure per image
    and ``explanations.jsonl``; a video or camera an annotated MP4 and a JSON Lines file
    (:func:`stream_paths`). ``figure=False`` writes only the JSON / JSON Lines (no PNG, no MP4).
    Prints a summary table (or the JSON).
    """
    from edgeproto.device.explain import as_bundle
    from edgeproto.device.explainer import Explainer
    from edgeproto.device.sources import open_source

    if max_frames is not None and max_frames < 1:
        raise EdgeprotoError(f"--max-frames must be at least 1, got {max_frames}")
    opened = as_bundle(bundle)
    if opened.manifest.get("task") == "segmentation":
        png, js = output_paths(image, out_prefix)
        for p in (png, js):
            atomic_files.check_output(p, {"bundle": opened.root, "image": image}, "-o/--out")
        return _explain_segmentation(opened, image, target, precision, guard, device, png, js, as_json)
    if opened.manifest.get("task") == "multilabel":
        from edgeproto.commands.multilabel import explain_multilabel

        png, js = output_paths(image, out_prefix)
        for p in (png, js):
            atomic_files.check_output(p, {"bundle": opened.root, "image": image}, "-o/--out")
        return explain_multilabel(opened, image, target, precision, guard, device, png, js, as_json)
    source = open_source(image, max_frames=max_frames)
    if source.kind == "image":
        png, js = output_paths(image, out_prefix)
        for p in (png, js):
            atomic_files.check_output(p, {"bundle": opened.root, "image": image}, "-o/--out")
    else:
        first, second = stream_paths(source, out_prefix)
        inputs = {"bundle": opened.root, "input": image if source.kind != "camera" else None}
        for p in (first, second):
            atomic_files.check_output(p, inputs, "-o/--out")
    with Explainer.open(opened, target=target, precision=precision, guard=guard, device=device, k=k) as explainer:
        if source.kind == "image":
            return _explain_one(explainer, source, png if figure else None, js, as_json, because)
        return _explain_stream(explainer, source, first if figure else None, second, as_json, because, overlap)


def _explain_one(explainer, source, png: Path | None, js: Path, as_json: bool, because: bool) -> int:
    from edgeproto.device.explain import explanation_record

    image = source.paths[0]
    name, frame = next(source.frames())
    result = explainer.explain(frame, because=because)
    record = explanation_record(explainer, result, image)
    if frame.shape[:2] != (result.input_size, result.input_size):
        record["resized_from"] = [int(frame.shape[1]), int(frame.shape[0])]
    if png is not None:
        from edgeproto.device.figure import figure_png  # matplotlib: most of a cold run's time

        atomic_files.write_bytes(png, figure_png(explainer.bundle, result.raw, record, explainer.map_range))
    record["figure"] = None if png is None else str(png)
    atomic_files.write_text(js, json.dumps(record, indent=2))
    if as_json:
        print(json.dumps({**record, "json": str(js)}, indent=2))
        return 0
    _print_table(record, Path(image).name)
    out = console()
    if record.get("resized_from"):
        w, h = record["resized_from"]
        out.print(f"input resized from {w}×{h} to {record['input_size']}×{record['input_size']}")
    if record.get("merged_prototypes"):
        out.print(f"{record['merged_prototypes']} duplicate prototype(s) were merged at push (not ranked)")
    if record.get("input_note"):
        out.print(f"input: {record['input_note']}")
    out.print((f"figure: {png}\n" if png else "") + f"json:   {js}")
    return 0


def _print_table(record: dict, name: str) -> None:
    from rich.table import Table

    pred, rt = record["prediction"], record["runtime"]
    terms = record.get("logit_terms") or {}
    table = Table(title=f"{name}: {pred['class_name']} (p = {pred['probability']:.3f})",
                  caption=f"{rt['name']} {rt['version']} · {rt['precision']} · {rt['device']}"
                  + (f" · logit {terms['logit']:.4g} = prototypes {terms['prototypes']:.4g} + rest {terms['rest']:.3g}"
                     if terms else ""))
    because = any(p.get("because") for p in record["top_prototypes"])
    cols = ["rank", "prototype", "class", "score", "weight", "contribution", "argmax (x,y)", "95% box"]
    if because:
        cols.append("because: Δ this image / global (train)")
    for col in cols:
        table.add_column(col, justify="left" if col in ("class", "95% box") or col.startswith("because") else "right")
    for p in record["top_prototypes"]:
        row = [str(p["rank"]), str(p["prototype"]), f"{p['class']} {p['class_name']}", f"{p['score']:.4g}",
               f"{p['weight']:.4g}", f"{p['contribution']:.4g}", f"{p['argmax'][0]},{p['argmax'][1]}", str(p["box"])]
        if because:
            b = p.get("because") or {}
            glob = b.get("global") or {}
            row.append("  ".join(f"{n} {v:+.2f}" + (f"/{glob[n]:+.2f}" if n in glob else "")
                                 for n, v in (b.get("local") or {}).items()))
        table.add_row(*row)
    console().print(table)
    ru = record.get("runner_up")
    if ru:
        console().print(f"runner-up {ru['class_name']}: {ru['gap']:.3g} behind; largest terms of the gap: "
                        + ", ".join(f"#{d['prototype']} {d['term']:+.3g}" for d in ru["deciding"]))


def _explain_stream(explainer, source, first: Path | None, second: Path, as_json: bool, because: bool,
                    overlap: bool) -> int:
    import contextlib

    from edgeproto.device.explain import explanation_record
    from edgeproto.device.pipeline import explain_stream
    from edgeproto.device.writers import JsonLines, VideoOut
    from edgeproto.progress import progress_bar

    with contextlib.ExitStack() as stack:
        lines = JsonLines(second, stack)
        if first is None:  # --no-figure: the JSON Lines only
            def write(name, frame, result):
                record = explanation_record(explainer, result, Path(source.label) / name
                                            if source.kind == "folder" else None)
                lines.write({"name": name, **record})
        elif source.kind == "folder":
            from edgeproto.device.figure import figure_png

            first.mkdir(parents=True, exist_ok=True)

            def write(name, frame, result):
                record = explanation_record(explainer, result, Path(source.label) / name)
                png = first / (Path(name).stem + ".explained.png")
                atomic_files.write_bytes(png, figure_png(explainer.bundle, result.raw, record, explainer.map_range))
                lines.write({**record, "figure": str(png)})
        else:
            video = VideoOut(first, source.fps, explainer.map_range, stack)
            count = [0]

            def write(name, frame, result):
                video.write(frame, result)
                record = explanation_record(explainer, result, None)
                record.pop("bundle"), record.pop("runtime"), record.pop("rank_by")
                lines.write({"frame": count[0], "name": name, **record})
                count[0] += 1

        with progress_bar(not as_json, f"explain {source.kind}", source.total) as advance:
            stats = explain_stream(explainer, source, write, overlap=overlap, because=because, advance=advance)
    summary = {"input": source.label, "kind": source.kind, **stats.to_dict(),
               "outputs": {"figures" if source.kind == "folder" else "video": None if first is None else str(first),
                           "jsonl": str(second)},
               "runtime": explainer.info}
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console().print(f"{source.kind} {source.label}: {stats.frames} frames in {stats.seconds:.2f} s = "
                        f"{stats.fps:.1f} frames/s ({'decode, inference and drawing overlapped' if overlap else 'serial'})"
                        + (f"\n{'figures' if source.kind == 'folder' else 'video'}: {first}" if first else "")
                        + f"\njsonl:  {second}")
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
@click.argument("input", type=str)
@artifact_options
@click.option("-k", "--top", "k", type=int, default=3, show_default=True, help="prototypes to show")
@click.option("-o", "--out", "out_prefix", default=None,
              help="image: OUT.png / OUT.json, a directory, or a prefix (default: IMAGE.explained.*); folder: the "
                   "output directory (default: FOLDER.explained/); video/camera: OUT.mp4 + OUT.jsonl")
@click.option("--because", is_flag=True,
              help="also say why: how much hue, shape, texture, contrast, saturation and brightness matter to "
                   "each prototype's similarity (Nauta et al. 2020; needs OpenCV)")
@click.option("--serial", is_flag=True, help="decode, explain and draw one after another (no overlap)")
@click.option("--figure/--no-figure", default=True, show_default=True,
              help="draw the figure (image, folder) or the annotated MP4 (video, camera); --no-figure: JSON only")
@click.option("--max-frames", type=int, default=None, help="stop a video, camera or folder after N frames")
@json_option("print the explanation (image) or the run summary (folder, video, camera) as JSON")
def explain(bundle: str, input: str, target: str, precision: str, guard: str, device: str | None, k: int,
            out_prefix: str | None, because: bool, serial: bool, figure: bool, max_frames: int | None,
            as_json: bool) -> None:
    """On-device "this looks like that": prediction, top prototypes, heatmaps and source patches.

    INPUT is an image, a folder of images, a video file or a camera (0, camera:0, /dev/video0).
    """
    sys.exit(run_explain(bundle, input, target, precision, guard, device, k, out_prefix, as_json,
                         because=because, overlap=not serial, max_frames=max_frames, figure=figure))
