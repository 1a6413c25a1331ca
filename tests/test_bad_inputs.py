"""The bad-input corpus: every case runs the CLI (``edgeproto.cli:main``: exit 2 + one ``error:`` line)
and checks that nothing was left behind.

Each case: an argv (with ``{tmp}``, ``{ckpt}``, ``{bundle}``, ``{zip}`` placeholders), an optional
set-up that makes the bad input inside the case's own temporary folder, the expected exit code and a
fragment of the message. ``{ckpt}`` / ``{bundle}`` / ``{zip}`` are fresh copies (in the temporary
folder) of a tiny trained checkpoint, its bundle and its zipped bundle. Before and after the command
the folder is listed (every file with its size and sha256, the zip-extraction cache included): a
failed command must leave it exactly as it was (no half-written output, no leftover directory, no
input replaced).

Cases that need a trained model are marked slow (they share one tiny model per session).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from conftest import TINY_RECIPE

# --------------------------------------------------------------------------- helpers


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``edgeproto.cli:main`` in-process with ``argv``; (exit code, stdout, stderr)."""
    from edgeproto.cli import main

    old = sys.argv
    sys.argv = ["edgeproto", *argv]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def listing(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` with its sha256 (files) or ``dir``; mode changes ignored."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def recipe(tmp: Path, mutate: Callable[[dict], None] | None = None, name: str = "r.yaml") -> Path:
    raw = json.loads(json.dumps(TINY_RECIPE))
    raw["model"]["prototypes"]["family"] = "l2_log"
    if mutate:
        mutate(raw)
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` × ``height`` (RGB) with a tiny, incomplete body: opening it
    costs nothing, decoding it would need width·height·3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def rehash(bundle: Path) -> None:
    """Rewrite the manifest's sha256 list after a set-up changed files (a 'valid' but hostile bundle)."""
    from edgeproto.bundle import file_hashes

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = file_hashes(bundle)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def edit_manifest(bundle: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def image(path: Path, size: int = 32) -> Path:
    from PIL import Image

    Image.new("RGB", (size, size), (200, 30, 30)).save(path)
    return path


BILLION_LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
) + "\n"


# --------------------------------------------------------------------------- set-ups


def s_recipe(mutate=None):
    return lambda tmp: recipe(tmp, mutate)


def s_text(name: str, text: str | bytes):
    def setup(tmp):
        (tmp / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def s_laughs_recipe(tmp):
    """The laughs inside a key that takes any value (the description): valid keys, 9⁹ strings once walked."""
    text = recipe(tmp).read_text()
    laughs = "".join("  " + line + "\n" for line in BILLION_LAUGHS.splitlines())
    (tmp / "r.yaml").write_text(text + "description:\n" + laughs)


def s_big_recipe(tmp):
    text = recipe(tmp).read_text()
    (tmp / "r.yaml").write_text(text + "".join(f"# padding line {i} " + "x" * 100 + "\n" for i in range(12000)))


def s_non_utf8(tmp):
    (tmp / "r.yaml").write_bytes(recipe(tmp).read_bytes() + b"description: caf\xe9\n")


def s_lr_nan(tmp):
    text = recipe(tmp).read_text()
    assert "  batch_size: 32\n" in text
    (tmp / "r.yaml").write_text(text.replace("  batch_size: 32\n", "  batch_size: 32\n  lr: {backbone: .nan}\n"))


def s_nonempty_dir(tmp):
    recipe(tmp)
    (tmp / "out").mkdir()
    (tmp / "out" / "thesis.tex").write_text("years of work")


def s_folder_data(tmp):
    for cls in ("a", "b"):
        (tmp / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            image(tmp / "imgs" / cls / f"{i}.png")
    recipe(tmp, lambda r: r.update(data={"name": "folder", "root": str(tmp / "imgs"), "image_size": 32}))


def s_other_dir(tmp):
    (tmp / "other").mkdir()
    (tmp / "other" / "notes.txt").write_text("mine")


def s_drop_manifest_key(key):
    return lambda tmp: edit_manifest(tmp / "bundle", lambda m: m.pop(key))


def s_manifest_text(text):
    return lambda tmp: (tmp / "bundle" / "manifest.json").write_text(text)


def s_truncated_zip(tmp):
    data = (tmp / "b.zip").read_bytes()
    (tmp / "b.zip").write_bytes(data[: len(data) // 2])


def s_zip_with(extra: dict[str, bytes], rehash_listed: bool = False, compress=zipfile.ZIP_DEFLATED):
    def setup(tmp):
        src = tmp / "bundle"
        manifest = json.loads((src / "manifest.json").read_text())
        if rehash_listed:
            for name, data in extra.items():
                manifest["files"][name] = hashlib.sha256(data).hexdigest()
        with zipfile.ZipFile(tmp / "evil.zip", "w", compress) as zf:
            for p in sorted(src.rglob("*")):
                if p.is_file() and p.name != "manifest.json" and p.relative_to(src).as_posix() not in extra:
                    zf.write(p, p.relative_to(src).as_posix())
            zf.writestr("manifest.json", json.dumps(manifest))
            for name, data in extra.items():
                zf.writestr(name, data)
    return setup


ZEROS = b"\x00" * (40 << 20)  # 40 MB of zeros: ~40 kB deflated


def s_huge_image(width, height, name="huge.png"):
    return lambda tmp: png_header(tmp / name, width, height)


def s_nan_tiff(tmp):
    from PIL import Image

    a = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    a[4, 4] = np.nan
    Image.fromarray(a, "F").save(tmp / "nan.tif")


def s_image(tmp):
    image(tmp / "img.png")


def s_huge_patch(width, height):
    def setup(tmp):
        image(tmp / "img.png")
        manifest = json.loads((tmp / "bundle" / "manifest.json").read_text())
        for p in manifest["prototypes"]:  # every prototype's patch: whichever ranks first is drawn
            png_header(tmp / "bundle" / p["patch_png"], width, height)
        rehash(tmp / "bundle")
    return setup


def s_compiled(tmp):
    from edgeproto.runtimes.compile import compile_bundle

    compile_bundle(tmp / "bundle", target="onnxruntime", precision="fp32", progress=False)


def s_checkpoint_out(tmp):
    recipe(tmp)
    shutil.copytree(tmp / "ckpt", tmp / "out")


# --------------------------------------------------------------------------- the corpus


@dataclass
class Case:
    id: str
    argv: list[str]
    message: str
    setup: Callable[[Path], None] | None = None
    code: int = 2
    needs: tuple[str, ...] = ()  # "ckpt", "bundle", "zip": copies made in the case folder
    only_non_root: bool = False
    usage: bool = False  # a click usage error ("Error: ..." after the usage lines), also exit 2
    marks: list = field(default_factory=list)


TRAIN = ["train", "--recipe", "{tmp}/r.yaml", "--out", "{tmp}/out", "--quiet"]

CASES = [
    # ---- recipes: wrong types, ranges, files (refused before any file is written)
    Case("recipe-lr-string", TRAIN, "train.lr.backbone", s_recipe(lambda r: r["train"].update(lr={"backbone": "fast"}))),
    Case("recipe-coef-string", TRAIN, "train.coefs.clst", s_recipe(lambda r: r["train"].update(coefs={"clst": "lots"}))),
    Case("recipe-width-negative", TRAIN, "model.backbone.width",
         s_recipe(lambda r: r["model"]["backbone"].update(width=-4))),
    Case("recipe-epsilon-negative", TRAIN, "model.prototypes.attrs.epsilon",
         s_recipe(lambda r: r["model"]["prototypes"].update(attrs={"epsilon": -1}))),
    Case("recipe-non-utf8", TRAIN, "not UTF-8", s_non_utf8),
    Case("recipe-epochs-bool", TRAIN, "train.joint_epochs", s_recipe(lambda r: r["train"].update(joint_epochs=True))),
    Case("recipe-lr-negative", TRAIN, "train.lr.backbone",
         s_recipe(lambda r: r["train"].update(lr={"backbone": -0.1}))),
    Case("recipe-weight-decay-negative", TRAIN, "train.weight_decay",
         s_recipe(lambda r: r["train"].update(weight_decay=-1e-3))),
    Case("recipe-augment-shift-negative", TRAIN, "train.augment_shift",
         s_recipe(lambda r: r["train"].update(augment_shift=-2))),
    Case("recipe-lr-nan", TRAIN, "finite", s_lr_nan),
    Case("recipe-billion-laughs", TRAIN, "aliases", s_laughs_recipe),
    Case("recipe-too-large", TRAIN, "KiB", s_big_recipe),
    Case("recipe-unknown-key", TRAIN, "unknown recipe key(s) train.epochs", s_recipe(lambda r: r["train"].update(epochs=3))),
    Case("recipe-missing-family", TRAIN, "model.prototypes.family",
         s_recipe(lambda r: r["model"]["prototypes"].pop("family"))),
    Case("recipe-batch-huge", TRAIN, "train.batch_size", s_recipe(lambda r: r["train"].update(batch_size=1_000_000))),
    Case("recipe-list", TRAIN, "must be a YAML mapping", s_text("r.yaml", "- a\n- b\n")),
    Case("recipe-bad-yaml", TRAIN, "not valid YAML", s_text("r.yaml", "name: [unclosed\n")),
    Case("recipe-not-found", TRAIN, "recipe not found"),
    Case("recipe-is-a-directory", ["train", "--recipe", "{tmp}", "--out", "{tmp}/out"], "is a directory", usage=True),
    Case("recipe-seed-negative", TRAIN, "'seed'", s_recipe(lambda r: r.update(seed=-1))),
    Case("recipe-push-unknown", TRAIN, "train.push", s_recipe(lambda r: r["train"].update(push="sometimes"))),
    Case("recipe-name-number", TRAIN, "'name'", s_recipe(lambda r: r.update(name=123))),
    Case("recipe-image-size-string", TRAIN, "data.image_size", s_recipe(lambda r: r["data"].update(image_size="big"))),
    Case("recipe-per-class-zero", TRAIN, "model.prototypes.per_class",
         s_recipe(lambda r: r["model"]["prototypes"].update(per_class=0))),
    Case("recipe-tau-zero", TRAIN, "model.head_attrs.tau",
         s_recipe(lambda r: r["model"].update(head="tversky", head_attrs={"tau": 0.0}))),
    Case("recipe-lr-bool", TRAIN, "train.lr.prototypes", s_recipe(lambda r: r["train"].update(lr={"prototypes": True}))),
    Case("recipe-data-unknown", TRAIN, "imagenet", s_recipe(lambda r: r["data"].update(name="imagenet"))),
    # ---- train --out: never into something that is not (or holds) a checkpoint of ours
    Case("train-out-nonempty-dir", TRAIN, "not an edgeproto checkpoint", s_nonempty_dir),
    Case("train-out-is-data-root", ["train", "--recipe", "{tmp}/r.yaml", "--out", "{tmp}/imgs", "--force"],
         "data root", s_folder_data),
    Case("train-out-inside-data-root", ["train", "--recipe", "{tmp}/r.yaml", "--out", "{tmp}/imgs/a/run"],
         "data root", s_folder_data),
    Case("train-out-is-recipe", ["train", "--recipe", "{tmp}/r.yaml", "--out", "{tmp}/r.yaml", "--force"],
         "recipe", s_recipe()),
    Case("train-out-holds-checkpoint", TRAIN, "--force", s_checkpoint_out, needs=("ckpt",)),
    # ---- export
    Case("export-out-is-checkpoint", ["export", "{ckpt}", "-o", "{ckpt}", "--force"], "is the checkpoint",
         needs=("ckpt",)),
    Case("export-out-inside-checkpoint", ["export", "{ckpt}", "-o", "{ckpt}/bundle", "--force"],
         "inside the checkpoint", needs=("ckpt",)),
    Case("export-out-contains-checkpoint", ["export", "{ckpt}", "-o", "{tmp}", "--force"], "contains the checkpoint",
         needs=("ckpt",)),
    Case("export-force-non-bundle", ["export", "{ckpt}", "-o", "{tmp}/other", "--force"], "not an edgeproto bundle",
         s_other_dir, needs=("ckpt",)),
    Case("export-force-non-bundle-zip", ["export", "{ckpt}", "-o", "{tmp}/notes", "--zip", "--force"],
         "not an edgeproto bundle", s_text("notes.zip", "my notes"), needs=("ckpt",)),
    Case("export-exists-no-force", ["export", "{ckpt}", "-o", "{tmp}/other"], "--force", s_other_dir, needs=("ckpt",)),
    Case("export-atol-negative", ["export", "{ckpt}", "-o", "{tmp}/b", "--atol", "-1"], "--atol", needs=("ckpt",)),
    Case("export-atol-nan", ["export", "{ckpt}", "-o", "{tmp}/b", "--atol", "nan"], "--atol", needs=("ckpt",)),
    Case("export-rtol-inf", ["export", "{ckpt}", "-o", "{tmp}/b", "--rtol", "inf"], "--rtol", needs=("ckpt",)),
    Case("export-opset", ["export", "{ckpt}", "-o", "{tmp}/b", "--opset", "3"], "opset 3", needs=("ckpt",)),
    Case("export-golden-zero", ["export", "{ckpt}", "-o", "{tmp}/b", "--golden", "0"], "--golden", needs=("ckpt",)),
    Case("export-checkpoint-missing", ["export", "{tmp}/nope", "-o", "{tmp}/b"], "checkpoint not found"),
    # ---- bundles: manifests without required keys, broken zips, zip bombs
    Case("manifest-no-preprocess-explain", ["explain", "{bundle}", "{tmp}/img.png", "-o", "{tmp}/e"],
         "'preprocess'", lambda tmp: (s_drop_manifest_key("preprocess")(tmp), s_image(tmp)), needs=("bundle",)),
    Case("manifest-no-preprocess-verify", ["verify", "{bundle}"], "'preprocess'", s_drop_manifest_key("preprocess"),
         needs=("bundle",)),
    Case("manifest-no-classes-compile", ["compile", "{bundle}", "--target", "onnxruntime"], "'classes'",
         s_drop_manifest_key("classes"), needs=("bundle",)),
    Case("manifest-no-classes-bench", ["bench", "{bundle}", "--min-queries", "1", "--min-seconds", "0"], "'classes'",
         s_drop_manifest_key("classes"), needs=("bundle",)),
    Case("manifest-no-classes-validate", ["validate", "{bundle}", "--limit", "4"], "'classes'",
         s_drop_manifest_key("classes"), needs=("bundle",)),
    Case("manifest-not-json", ["verify", "{bundle}"], "unreadable", s_manifest_text("{not json"), needs=("bundle",)),
    Case("manifest-list", ["verify", "{bundle}"], "not an edgeproto bundle manifest", s_manifest_text("[1, 2]"),
         needs=("bundle",)),
    Case("bundle-not-a-bundle", ["verify", "{tmp}/other"], "not an edgeproto bundle", s_other_dir),
    Case("zip-truncated", ["verify", "{zip}"], "not a readable zip", s_truncated_zip, needs=("zip",)),
    Case("zip-text-file", ["explain", "{tmp}/t.zip", "{tmp}/img.png"], "not a readable zip",
         lambda tmp: (s_text("t.zip", "hello")(tmp), s_image(tmp))),
    Case("zip-bomb", ["verify", "{tmp}/evil.zip"], "zip bomb", s_zip_with({"golden/pad.npy": ZEROS}, True),
         needs=("bundle",)),
    Case("zip-unlisted-member", ["verify", "{tmp}/evil.zip"], "not listed in the manifest",
         s_zip_with({"extra.bin": b"x" * 100}), needs=("bundle",)),
    Case("zip-unsafe-path", ["verify", "{tmp}/evil.zip"], "unsafe path", s_zip_with({"../escape.txt": b"x"}),
         needs=("bundle",)),
    Case("zip-tampered-member", ["verify", "{tmp}/evil.zip"], "sha256 mismatch",
         s_zip_with({"golden/logits.npy": b"\x93NUMPY tampered"}), needs=("bundle",)),
    # ---- compile
    Case("compile-exists-no-force", ["compile", "{bundle}", "--target", "onnxruntime"], "--force", s_compiled,
         needs=("bundle",)),
    Case("compile-calib-zero", ["compile", "{bundle}", "--precision", "int8", "--calib", "0"], "calib",
         needs=("bundle",)),
    Case("compile-precision-unsupported", ["compile", "{bundle}", "--target", "onnxruntime", "--precision", "bf16"],
         "not supported", needs=("bundle",)),
    Case("compile-zip", ["compile", "{zip}"], "zipped bundle", needs=("zip",)),
    Case("compile-read-only", ["compile", "{bundle}", "--precision", "fp16"], "read-only",
         lambda tmp: os.chmod(tmp / "bundle", 0o555), needs=("bundle",), only_non_root=True),
    Case("compile-data-root-procedural", ["compile", "{bundle}", "--precision", "int8", "--data-root", "{tmp}"],
         "reads no image folder", needs=("bundle",)),
    # ---- explain
    Case("explain-out-is-image", ["explain", "{bundle}", "{tmp}/img.png", "-o", "{tmp}/img.png"], "is the image",
         s_image, needs=("bundle",)),
    Case("explain-out-inside-bundle", ["explain", "{bundle}", "{tmp}/img.png", "-o", "{bundle}/x"],
         "inside the bundle", s_image, needs=("bundle",)),
    Case("explain-out-not-a-dir", ["explain", "{bundle}", "{tmp}/img.png", "-o", "{tmp}/f.txt/"], "not a directory",
         lambda tmp: (s_image(tmp), s_text("f.txt", "x")(tmp)), needs=("bundle",)),
    Case("explain-400mpx-image", ["explain", "{bundle}", "{tmp}/huge.png", "-o", "{tmp}/e"], "decompression bomb",
         s_huge_image(20000, 20000), needs=("bundle",)),
    Case("explain-81mpx-image", ["explain", "{bundle}", "{tmp}/huge.png", "-o", "{tmp}/e"], "Mpx",
         s_huge_image(9000, 9000), needs=("bundle",)),
    Case("explain-400mpx-prototype", ["explain", "{bundle}", "{tmp}/img.png", "-o", "{tmp}/e"], "too large",
         s_huge_patch(20000, 20000), needs=("bundle",)),
    Case("explain-81mpx-prototype", ["explain", "{bundle}", "{tmp}/img.png", "-o", "{tmp}/e"], "Mpx",
         s_huge_patch(9000, 9000), needs=("bundle",)),
    Case("explain-nan-tiff", ["explain", "{bundle}", "{tmp}/nan.tif", "-o", "{tmp}/e"], "NaN", s_nan_tiff,
         needs=("bundle",)),
    Case("explain-image-missing", ["explain", "{bundle}", "{tmp}/nope.png", "-o", "{tmp}/e"], "image file not found",
         needs=("bundle",)),
    Case("explain-not-an-image", ["explain", "{bundle}", "{tmp}/x.png", "-o", "{tmp}/e"], "cannot read image",
         s_text("x.png", "not a png"), needs=("bundle",)),
    Case("explain-k-zero", ["explain", "{bundle}", "{tmp}/img.png", "-o", "{tmp}/e", "-k", "0"], "k must be",
         s_image, needs=("bundle",)),
    Case("explain-video-missing", ["explain", "{bundle}", "{tmp}/nope.mp4"], "video file not found", needs=("bundle",)),
    Case("explain-max-frames-zero", ["explain", "{bundle}", "{tmp}/img.png", "--max-frames", "0"],
         "--max-frames must be at least 1", s_image, needs=("bundle",)),
    Case("explain-video-not-a-video", ["explain", "{bundle}", "{tmp}/x.mp4", "-o", "{tmp}/v"], "cannot open video",
         s_text("x.mp4", "not a video"), needs=("bundle",)),
    Case("serve-negative-rate", ["serve", "{bundle}", "--rate", "-1"], "--rate must be >= 0", needs=("bundle",)),
    # ---- validate
    Case("validate-targets-without-sweep", ["validate", "{bundle}", "--targets", "onnxruntime"], "--targets is for --sweep",
         needs=("bundle",)),
    Case("validate-threads-huge", ["validate", "{bundle}", "--threads", "100000"], "usable CPU", needs=("bundle",)),
    Case("validate-out-is-bundle", ["validate", "{bundle}", "--out", "{bundle}"], "is the bundle", needs=("bundle",)),
    Case("validate-out-inside-bundle", ["validate", "{bundle}", "--out", "{bundle}/report"], "inside the bundle",
         needs=("bundle",)),
    Case("validate-out-is-file", ["validate", "{bundle}", "--out", "{tmp}/f.txt"], "not a directory",
         s_text("f.txt", "x"), needs=("bundle",)),
    Case("validate-limit-zero", ["validate", "{bundle}", "--limit", "0"], "limit", needs=("bundle",)),
    Case("validate-thresholds-laughs", ["validate", "{bundle}", "--thresholds", "{tmp}/t.yaml"], "aliases",
         s_text("t.yaml", BILLION_LAUGHS), needs=("bundle",)),
    Case("validate-data-non-utf8", ["validate", "{bundle}", "--data", "{tmp}/d.yaml"], "not UTF-8",
         s_text("d.yaml", b"name: caf\xe9\n"), needs=("bundle",)),
    Case("validate-data-root-moved", ["validate", "{bundle}", "--data-root", "{tmp}/imgs"], "reads no image folder",
         needs=("bundle",)),
    # ---- bench
    Case("bench-threads-huge", ["bench", "{bundle}", "--threads", "100000"], "usable CPU", needs=("bundle",)),
    Case("bench-batch-huge", ["bench", "{bundle}", "--batches", "1000000"], "4096", needs=("bundle",)),
    Case("bench-batches-total", ["bench", "{bundle}", "--batches", "4096,4096,4096,4096,4096"], "in all",
         needs=("bundle",)),
    Case("bench-batch-zero", ["bench", "{bundle}", "--batches", "0"], "batch size", needs=("bundle",)),
    Case("bench-min-queries-huge", ["bench", "{bundle}", "--min-queries", "1000000000"], "min_queries",
         needs=("bundle",)),
    Case("bench-missing-artifact", ["bench", "{bundle}", "--precision", "fp16", "--min-queries", "1"], "has no onnxruntime fp16",
         needs=("bundle",)),
    Case("validate-missing-artifact", ["validate", "{bundle}", "--precision", "fp16", "--limit", "2"],
         "has no onnxruntime fp16", needs=("bundle",)),
    # ---- verify
    Case("verify-atol-nan", ["verify", "{bundle}", "--atol", "nan"], "finite", needs=("bundle",)),
    Case("verify-rtol-negative", ["verify", "{bundle}", "--rtol", "-1"], "finite", needs=("bundle",)),
    Case("verify-missing-artifact", ["verify", "{bundle}", "--precision", "int8"], "has no onnxruntime int8",
         needs=("bundle",)),
]


def _params():
    out = []
    for case in CASES:
        marks = list(case.marks)
        if case.needs:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


@pytest.fixture(scope="session")
def artifacts(trained, tmp_path_factory):
    """A tiny checkpoint, its bundle and its zipped bundle (copied into each case's folder)."""
    from edgeproto.export.bundle_writer import export_bundle

    ckpt = trained("l2_log")
    root = tmp_path_factory.mktemp("bad-inputs-artifacts")
    export_bundle(ckpt, root / "bundle", golden=4)
    export_bundle(ckpt, root / "b", golden=4, as_zip=True)
    return {"ckpt": ckpt, "bundle": root / "bundle", "zip": root / "b.zip"}


def test_corpus_size():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, request, tmp_path, monkeypatch, capsys):
    if case.only_non_root and hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    tmp = tmp_path / "case"
    tmp.mkdir()
    monkeypatch.setenv("EDGEPROTO_CACHE", str(tmp / ".cache"))
    values = {"tmp": str(tmp)}
    if case.needs:
        art = request.getfixturevalue("artifacts")
        for need in case.needs:
            src = art[need]
            dst = tmp / ("ckpt" if need == "ckpt" else "bundle" if need == "bundle" else "b.zip")
            (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
            values[need] = str(dst)
    if case.setup:
        case.setup(tmp)
    capsys.readouterr()
    before = listing(tmp)
    argv = [a.format(**values) for a in case.argv]
    try:
        code, out, err = run_main(argv, capsys)
    finally:
        if case.only_non_root:
            os.chmod(tmp / "bundle", 0o755)
    after = listing(tmp)
    assert code == case.code, (argv, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if case.usage:
        assert lines and lines[-1].startswith("Error: ") and case.message in lines[-1], err
    else:
        assert lines and lines[-1].startswith("error: "), err
        assert case.message in lines[-1], (case.message, err)
        assert len(lines) == 1, err  # one clear line, no noise before it
    assert after == before, {"new or changed": sorted(set(after.items()) ^ set(before.items()))}


def test_cli_subprocess_error_line(tmp_path):
    """The installed entry point (not only the in-process call): exit 2, one error line, nothing written."""
    import subprocess

    path = recipe(tmp_path, lambda r: r["train"].update(lr={"backbone": "fast"}))
    before = listing(tmp_path)
    result = subprocess.run([sys.executable, "-c", "from edgeproto.cli import main; main()", "train", "--recipe",
                             str(path), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: recipe key 'train.lr.backbone': must be a number, got 'fast'"]
    assert listing(tmp_path) == before


# --------------------------------------------------------------------------- must never happen: dedicated tests


@pytest.mark.slow
def test_replaced_zip_is_not_stale(artifacts, tmp_path, monkeypatch):
    """A replaced .zip opens as the new bundle (the extraction cache is keyed by the zip's sha256)."""
    from edgeproto.bundle import open_bundle
    from edgeproto.export.bundle_writer import export_bundle

    monkeypatch.setenv("EDGEPROTO_CACHE", str(tmp_path / "cache"))
    export_bundle(artifacts["ckpt"], tmp_path / "six", golden=6, as_zip=True)
    shutil.copyfile(artifacts["zip"], tmp_path / "model.zip")
    assert len(open_bundle(tmp_path / "model.zip").golden()["image"]) == 4
    shutil.copyfile(tmp_path / "six.zip", tmp_path / "model.zip")  # the user ships a new model under the same name
    assert len(open_bundle(tmp_path / "model.zip").golden()["image"]) == 6
    assert not (tmp_path / "model").exists()  # nothing extracted beside the zip any more
    assert len(list((tmp_path / "cache" / "bundles").iterdir())) == 2


@pytest.mark.slow
def test_failed_zip_open_leaves_nothing(artifacts, tmp_path, monkeypatch):
    from edgeproto.bundle import open_bundle
    from edgeproto.errors import EdgeprotoError

    monkeypatch.setenv("EDGEPROTO_CACHE", str(tmp_path / "cache"))
    shutil.copytree(artifacts["bundle"], tmp_path / "bundle")
    s_zip_with({"golden/logits.npy": b"\x93NUMPY tampered"})(tmp_path)
    with pytest.raises(EdgeprotoError, match="sha256 mismatch"):
        open_bundle(tmp_path / "evil.zip")
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_export_force_replaces_only_a_bundle(artifacts, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(artifacts["ckpt"], ckpt)
    before = listing(ckpt)
    assert run_main(["export", str(ckpt), "-o", str(ckpt), "--force"], capsys)[0] == 2
    assert listing(ckpt) == before  # the checkpoint is intact
    assert run_main(["export", str(ckpt), "-o", str(tmp_path / "b"), "--golden", "2", "--json"], capsys)[0] == 0
    code, out, err = run_main(["export", str(ckpt), "-o", str(tmp_path / "b"), "--golden", "3", "--force", "--json"],
                              capsys)
    assert code == 0, err
    assert len(json.loads((tmp_path / "b" / "manifest.json").read_text())["golden"]["labels"]) == 3


@pytest.mark.slow
def test_train_out_refuses_a_foreign_directory_and_resumes_no_empty_folder(tmp_path, capsys):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "data.csv").write_text("1,2,3")
    path = recipe(tmp_path)
    code, _, err = run_main(["train", "--recipe", str(path), "--out", str(tmp_path / "work"), "--force"], capsys)
    assert code == 2 and "not an edgeproto checkpoint" in err
    assert (tmp_path / "work" / "data.csv").read_text() == "1,2,3"
    bad = recipe(tmp_path, lambda r: r["data"].update(num_classes=1), name="bad.yaml")  # fails in the dataset
    code, _, err = run_main(["train", "--recipe", str(bad), "--out", str(tmp_path / "new")], capsys)
    assert code == 2 and not (tmp_path / "new").exists(), err


def test_yaml_aliases_and_size_are_bounded(tmp_path):
    from edgeproto.errors import EdgeprotoError
    from edgeproto.yaml_files import load_yaml, parse_yaml

    assert parse_yaml("a: [1, 2]\nb: {c: 1e-4}\n") == {"a": [1, 2], "b": {"c": "1e-4"}}
    with pytest.raises(EdgeprotoError, match="aliases"):
        parse_yaml(BILLION_LAUGHS)
    with pytest.raises(EdgeprotoError, match="aliases"):
        parse_yaml("a: &x 1\nb: *x\n")
    (tmp_path / "big.yaml").write_text("a: 1\n" + "#" * (2 << 20))
    with pytest.raises(EdgeprotoError, match="KiB"):
        load_yaml(tmp_path / "big.yaml")
    with pytest.raises(EdgeprotoError, match="nested"):
        parse_yaml("a: " + "[" * 100 + "]" * 100)


def test_every_shipped_recipe_is_valid_and_lr_strings_are_numbers():
    from edgeproto.train import load_recipe, validate_recipe

    for path in sorted((Path(__file__).resolve().parents[1] / "models").glob("*.yaml")):
        load_recipe(path)
    raw = json.loads(json.dumps(TINY_RECIPE))
    raw["model"]["prototypes"]["family"] = "l2_log"
    raw["train"]["lr"] = {"backbone": "1e-4"}  # YAML 1.1 reads 1e-4 as a string
    assert validate_recipe(raw)["train"]["lr"]["backbone"] == pytest.approx(1e-4)


def test_resource_caps(tmp_path):
    from edgeproto.compare.options import ValidateOptions
    from edgeproto.data.preprocess import load_image, read_image_size
    from edgeproto.environment import usable_cpus
    from edgeproto.errors import EdgeprotoError
    from edgeproto.measure.single_stream import check_batches

    with pytest.raises(EdgeprotoError, match="usable CPU"):
        ValidateOptions(threads=usable_cpus() + 1).check()
    ValidateOptions(threads=usable_cpus()).check()
    with pytest.raises(EdgeprotoError, match="4096"):
        check_batches([1_000_000])
    with pytest.raises(EdgeprotoError, match="batch must be at most"):
        ValidateOptions(batch=1_000_000).check()
    png_header(tmp_path / "big.png", 9000, 9000)  # 81 Mpx: refused from the header, nothing decoded
    for fn in (load_image, read_image_size):
        with pytest.raises(EdgeprotoError, match="81 Mpx"):
            fn(tmp_path / "big.png")
    png_header(tmp_path / "bomb.png", 20000, 20000)  # 400 Mpx: Pillow's own bomb error, as one clear line
    with pytest.raises(EdgeprotoError, match="decompression bomb"):
        load_image(tmp_path / "bomb.png")


def test_float_images_are_scaled_and_nan_refused(tmp_path):
    from PIL import Image

    from edgeproto.data.preprocess import SCALED_NOTE, load_image
    from edgeproto.errors import EdgeprotoError

    a = np.full((8, 8), 0.5, dtype=np.float32)
    Image.fromarray(a, "F").save(tmp_path / "half.tif")
    img = load_image(tmp_path / "half.tif")
    assert np.asarray(img).mean() == pytest.approx(128, abs=1)  # not black
    assert img.info.get("edgeproto_scaled") == SCALED_NOTE
    s_nan_tiff(tmp_path)
    with pytest.raises(EdgeprotoError, match="NaN"):
        load_image(tmp_path / "nan.tif")


def test_int8_verdict_is_validates():
    """compile's golden check, verify and validate judge int8 by the same limits."""
    from edgeproto.compare.thresholds import default_thresholds
    from edgeproto.outputs import golden_passed, golden_tolerance

    tol, limits = golden_tolerance("int8"), default_thresholds("int8")
    assert tol["min_agreement"] == limits["top1_prototype_agreement"]
    assert tol["min_class_agreement"] == limits["prediction_agreement"]
    assert not tol["elementwise"] and all(limits[f"{n}_max_abs"] is None for n in ("logits", "scores", "maps"))
    check = {"diffs": {"maps": {"within_tolerance": False, "finite": True}}, "top1_prototype_agreement": 0.9,
             "class_agreement": 1.0}
    assert golden_passed(check, tol)  # int8 maps move more than atol: validate would pass it, so does compile
    assert not golden_passed(check, golden_tolerance("fp16"))
    check["diffs"]["maps"]["finite"] = False
    assert not golden_passed(check, tol)


def test_console_is_wide_when_piped():
    from edgeproto.commands.options import console

    assert console().width == 160  # pytest captures stdout: not a terminal


@pytest.mark.slow
def test_compile_read_only_bundle_and_sweep(artifacts, tmp_path, monkeypatch, capsys):
    """Root ignores permissions, so the read-only bundle is simulated through os.access / mkdtemp."""
    import tempfile

    bundle = tmp_path / "bundle"
    shutil.copytree(artifacts["bundle"], bundle)
    before = listing(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p).startswith(str(bundle)) and mode == os.W_OK
                        else real_access(p, mode, *a, **k))
    code, _, err = run_main(["compile", str(bundle), "--precision", "fp16"], capsys)
    assert code == 2 and "read-only" in err and "Traceback" not in err
    code, _, err = run_main(["validate", str(bundle), "--sweep", "--targets", "onnxruntime", "--limit", "4"], capsys)
    assert code == 2 and "read-only" in err, err
    monkeypatch.setattr(os, "access", real_access)

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "mkdtemp", no_space)
    code, _, err = run_main(["compile", str(bundle), "--precision", "fp16"], capsys)
    assert code == 2 and "No space left" in err, err
    assert listing(tmp_path) == before


@pytest.mark.slow
def test_explain_out_forms(artifacts, tmp_path, monkeypatch, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(artifacts["bundle"], bundle)
    img = image(tmp_path / "photo 图像.png")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "figs").mkdir()
    for out, expect in [("x.png", ["x.png", "x.json"]), ("y.json", ["y.png", "y.json"]), ("pre", ["pre.png", "pre.json"]),
                        ("figs", ["figs/photo 图像.explained.png", "figs/photo 图像.explained.json"]),
                        ("new/", ["new/photo 图像.explained.png", "new/photo 图像.explained.json"]),
                        (".", ["photo 图像.explained.png", "photo 图像.explained.json"])]:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no glyph warnings for the unicode file name
            code, _, err = run_main(["explain", str(bundle), str(img), "-o", out, "--json"], capsys)
        assert code == 0, (out, err)
        for rel in expect:
            assert (tmp_path / rel).is_file(), (out, rel)
    assert not list(tmp_path.glob("*.png.png")) and not (tmp_path / "figs.png").exists()


@pytest.mark.slow
def test_compile_force_and_calibration_note(artifacts, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(artifacts["bundle"], bundle)
    code, out, err = run_main(["compile", str(bundle), "--precision", "int8", "--calib", "100000"], capsys)
    assert code == 0, err
    assert "calibrated on all" in out
    entry = json.loads((bundle / "manifest.json").read_text())["compiled"]["onnxruntime-int8"]
    assert entry["calibration"]["requested"] == 100000 and "calibrated on all" in entry["calibration"]["note"]
    assert entry["calibration"]["images"] < 100000
    assert "PASS" in out or "FAIL" in out
    code, _, err = run_main(["compile", str(bundle), "--precision", "int8"], capsys)
    assert code == 2 and "--force" in err
    code, out, err = run_main(["compile", str(bundle), "--precision", "int8", "--calib", "8", "--force"], capsys)
    assert code == 0, err
    assert json.loads((bundle / "manifest.json").read_text())["compiled"]["onnxruntime-int8"]["calibration"]["images"] == 8


@pytest.mark.slow
def test_relative_data_root_is_stored_absolute_and_can_be_overridden(tmp_path, monkeypatch, capsys):
    """data.root: imgs (relative) → stored absolute; export/compile int8 work from another folder;
    after the images move, compile --data-root and validate --data-root find them."""
    work = tmp_path / "work"
    for cls in ("a", "b"):
        (work / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            from PIL import Image

            Image.new("RGB", (32, 32), (40 * i, 200 if cls == "a" else 20, 90)).save(work / "imgs" / cls / f"{i}.png")
    path = recipe(work, lambda r: (r.update(data={"name": "folder", "root": "imgs", "image_size": 32}),
                                   r["train"].update(joint_epochs=1, last_layer_epochs=1)))
    monkeypatch.chdir(work)
    code, _, err = run_main(["train", "--recipe", str(path), "--out", "ckpt", "--quiet", "--json"], capsys)
    assert code == 0, err
    cfg = json.loads((work / "ckpt" / "config.json").read_text())
    assert cfg["recipe"]["data"]["root"] == str((work / "imgs").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_main(["export", str(work / "ckpt"), "-o", "bundle", "--golden", "2", "--json"], capsys)
    assert code == 0, err
    code, _, err = run_main(["compile", "bundle", "--precision", "int8", "--calib", "4", "--json"], capsys)
    assert code == 0, err
    shutil.move(str(work / "imgs"), str(tmp_path / "moved"))
    code, _, err = run_main(["compile", "bundle", "--precision", "int8", "--calib", "4", "--force"], capsys)
    assert code == 2 and "image folder not found" in err
    code, _, err = run_main(["compile", "bundle", "--precision", "int8", "--calib", "4", "--force",
                             "--data-root", str(tmp_path / "moved")], capsys)
    assert code == 0, err
    code, _, err = run_main(["validate", "bundle", "--data-root", str(tmp_path / "moved"), "--json"], capsys)
    assert code in (0, 1), err  # a verdict, not an error


@pytest.mark.slow
def test_train_force_leaves_no_stale_prototype_patches(tmp_path):
    from edgeproto.train import train

    from conftest import tiny_recipe

    train(tiny_recipe(joint_epochs=1, last_layer_epochs=1, model={"prototypes": {"family": "l2_log", "per_class": 3, "dim": 16}}),
          tmp_path / "ckpt", quiet=True)
    assert len(list((tmp_path / "ckpt" / "prototypes").glob("*.png"))) == 9
    config = train(tiny_recipe(joint_epochs=1, last_layer_epochs=1), tmp_path / "ckpt", force=True, quiet=True)
    pngs = sorted(p.name for p in (tmp_path / "ckpt" / "prototypes").glob("*.png"))
    assert pngs == sorted(Path(r["patch_png"]).name for r in config["prototypes"]) and len(pngs) == 6
