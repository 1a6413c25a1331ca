"""Tests for edgeproto.data: the datasets, their configs, and torch-free preprocessing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgeproto.data import build_dataset
from edgeproto.data.preprocess import load_image, to_input
from edgeproto.data.procedural import CLASS_PARTS, PART_NAMES
from edgeproto.errors import EdgeprotoError

REPO = Path(__file__).resolve().parents[1]
SMALL = {"name": "procedural", "train_size": 60, "test_size": 40, "seed": 3}


# ---------------------------------------------------------------- config


def test_unknown_name_lists_allowed_names():
    with pytest.raises(EdgeprotoError, match="allowed names: procedural, digits, folder, cub"):
        build_dataset({"name": "imagenet"}, "train")
    with pytest.raises(EdgeprotoError, match="needs a 'name'"):
        build_dataset({}, "train")


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(EdgeprotoError, match=r"'imagesize'.*allowed keys: name, image_size"):
        build_dataset({"name": "procedural", "imagesize": 64}, "train")


def test_bad_split_and_bad_values():
    with pytest.raises(EdgeprotoError, match="allowed splits: train, test"):
        build_dataset({"name": "procedural"}, "val")
    with pytest.raises(EdgeprotoError, match="num_classes"):
        build_dataset({"name": "procedural", "num_classes": 11}, "train")
    with pytest.raises(EdgeprotoError, match="image_size.*integer"):
        build_dataset({"name": "procedural", "image_size": "64"}, "train")
    with pytest.raises(EdgeprotoError, match="needs key"):
        build_dataset({"name": "folder"}, "train")


# ---------------------------------------------------------------- procedural


def test_procedural_defaults_shapes_and_dtypes():
    ds = build_dataset({"name": "procedural"}, "train")
    assert len(ds) == 1200 and len(build_dataset({"name": "procedural"}, "test")) == 400
    assert ds.image_size == 64 and ds.classes == ["+".join(p) for p in CLASS_PARTS[:4]]
    assert ds.part_names == list(PART_NAMES)
    x, y = ds[5]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3, 64, 64)
    assert isinstance(y, int) and y == ds.labels[5]
    raw = ds.raw_image(5)
    assert raw.dtype == np.uint8 and raw.shape == (64, 64, 3)
    # the input is exactly the raw image, normalised
    expected = (raw.astype(np.float32) / 255 - np.float32(0.5)) / np.float32(ds.std[0])
    np.testing.assert_allclose(x.numpy(), expected.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
    masks = ds.part_masks(5)
    assert masks.dtype == bool and masks.shape == (len(PART_NAMES), 64, 64)
    assert len(ds[-1]) == 2
    with pytest.raises(IndexError):
        ds[1200]


def test_procedural_is_deterministic_and_splits_differ():
    a = build_dataset(SMALL, "train")
    b = build_dataset(SMALL, "train")
    test = build_dataset(SMALL, "test")
    other_seed = build_dataset({**SMALL, "seed": 4}, "train")
    for i in (0, 7, 39):
        np.testing.assert_array_equal(a.raw_image(i), b.raw_image(i))
        np.testing.assert_array_equal(a.part_masks(i), b.part_masks(i))
        assert torch.equal(a[i][0], b[i][0])
        assert not np.array_equal(a.raw_image(i), other_seed.raw_image(i))
    # b generated fresh, a from its cache: same bytes; train and test never share an image
    train_imgs = {a.raw_image(i).tobytes() for i in range(len(a))}
    assert not train_imgs & {test.raw_image(i).tobytes() for i in range(len(test))}
    assert len(train_imgs) == len(a)
    np.testing.assert_array_equal(a.render(3).image, a.raw_image(3))


def test_procedural_masks_match_class_parts_and_drawn_pixels():
    ds = build_dataset({**SMALL, "num_classes": 10}, "train")
    saw_distractor = False
    for i in range(len(ds)):
        r = ds.render(i)
        present = {PART_NAMES[k] for k in range(len(PART_NAMES)) if r.part_masks[k].any()}
        assert present == set(CLASS_PARTS[int(ds.labels[i])]), i
        np.testing.assert_array_equal(ds.part_masks(i), r.part_masks)
        changed = (r.image != r.background).any(axis=2)
        drawn = r.part_masks.any(axis=0)
        # every mask pixel was painted, and nothing but parts and the distractor was painted
        assert changed[drawn].all()
        assert not (changed & ~drawn & ~r.distractor_mask).any()
        assert not (r.part_masks.sum(axis=0) > 1).any()  # parts never overlap
        assert not (drawn & r.distractor_mask).any()
        for k in np.flatnonzero(r.part_masks.any(axis=(1, 2))):
            assert 40 <= r.part_masks[k].sum() <= 14 * 14  # a 10-14 px shape
        saw_distractor |= bool(r.distractor_mask.any())
    assert saw_distractor


def test_procedural_class_balance_and_colour_independent_of_class():
    ds = build_dataset({"name": "procedural", "num_classes": 5, "train_size": 250}, "train")
    assert sorted(Counter(ds.labels.tolist()).values()) == [50] * 5
    assert set(ds.labels.tolist()) == set(range(5))
    # mean colour of the painted pixels must not separate the classes
    means = np.zeros((5, 3))
    for c in range(5):
        rows = [ds.raw_image(i)[ds.part_masks(i).any(0)] for i in np.flatnonzero(ds.labels == c)]
        means[c] = np.concatenate(rows).mean(axis=0)
    assert np.ptp(means, axis=0).max() < 30


def test_procedural_image_size_scales():
    ds = build_dataset({"name": "procedural", "image_size": 96, "train_size": 8}, "train")
    assert ds[0][0].shape == (3, 96, 96) and ds.part_masks(0).shape == (5, 96, 96)


def test_procedural_generation_is_fast():
    import time

    ds = build_dataset({"name": "procedural", "train_size": 200, "seed": 11}, "train")
    start = time.perf_counter()
    for i in range(len(ds)):
        ds.raw_image(i)
    assert (time.perf_counter() - start) / len(ds) < 0.02  # ~1 ms on a laptop


# ---------------------------------------------------------------- digits


def test_digits_sizes_range_and_stratification():
    train = build_dataset({"name": "digits"}, "train")
    test = build_dataset({"name": "digits"}, "test")
    assert len(train) + len(test) == 1797 and len(test) == 450
    assert train.classes == [str(d) for d in range(10)] and train.part_masks(0) is None
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y <= 9
    raw = np.stack([train.raw_image(i) for i in range(50)])
    assert raw.dtype == np.uint8 and raw.shape[1:] == (32, 32, 3)
    assert raw.min() == 0 and raw.max() >= 250
    assert (raw[..., 0] == raw[..., 1]).all()  # grey as RGB
    lo = (0 - train.mean[0]) / train.std[0]
    hi = (1 - train.mean[0]) / train.std[0]
    assert lo - 1e-5 <= x.min() and x.max() <= hi + 1e-5
    tr_frac = np.bincount(train.labels, minlength=10) / len(train)
    te_frac = np.bincount(test.labels, minlength=10) / len(test)
    assert np.abs(tr_frac - te_frac).max() < 0.01
    assert not set(train.source_index) & set(test.source_index)
    again = build_dataset({"name": "digits"}, "test")
    assert np.array_equal(again.labels, test.labels)
    np.testing.assert_array_equal(again.raw_image(3), test.raw_image(3))


# ---------------------------------------------------------------- folder


def _png(path: Path, colour, size=(20, 16), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def test_folder_loads_classes_and_splits(tmp_path):
    for k, name in enumerate(["cat", "ant", "bee"]):
        for j in range(5):
            _png(tmp_path / name / f"{j}.png", (40 * k, 10 * j, 200))
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    cfg = {"name": "folder", "root": str(tmp_path), "image_size": 24}
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert train.classes == test.classes == ["ant", "bee", "cat"]
    assert len(train) == 12 and len(test) == 3
    assert sorted(test.labels.tolist()) == [0, 1, 2]
    assert not set(train.files) & set(test.files)
    x, y = train[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and y == 0
    assert train.raw_image(0).shape == (24, 24, 3)
    for i in range(len(train)):  # label = the folder the file is in
        assert train.classes[train.labels[i]] == train.files[i].parent.name
    assert build_dataset(cfg, "test").files == test.files  # deterministic


def test_folder_with_train_and_test_subfolders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for name in ("a", "b"):
            for j in range(n):
                _png(tmp_path / split / name / f"{j}.jpg", (9, 9, 9))
    cfg = {"name": "folder", "root": tmp_path}
    assert len(build_dataset(cfg, "train")) == 6 and len(build_dataset(cfg, "test")) == 4
    assert build_dataset(cfg, "test")[0][0].shape == (3, 64, 64)


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(EdgeprotoError, match="not found"):
        build_dataset({"name": "folder", "root": str(tmp_path / "missing")}, "train")
    with pytest.raises(EdgeprotoError, match=f"no class folders in {tmp_path}"):
        build_dataset({"name": "folder", "root": str(tmp_path)}, "train")
    _png(tmp_path / "a" / "0.png", (1, 2, 3))
    (tmp_path / "b").mkdir()
    with pytest.raises(EdgeprotoError, match=f"class folder {tmp_path / 'b'} has no images"):
        build_dataset({"name": "folder", "root": str(tmp_path)}, "train")
    (tmp_path / "b" / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(EdgeprotoError, match=f"cannot read image file {tmp_path / 'b' / 'bad.png'}"):
        build_dataset({"name": "folder", "root": str(tmp_path)}, "train")


def test_folder_truncated_image_fails_on_load(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(noise).save(tmp_path / split / "a" / "0.png")
    good = (tmp_path / "train" / "a" / "0.png").read_bytes()
    (tmp_path / "train" / "a" / "0.png").write_bytes(good[: len(good) // 2])  # header intact
    ds = build_dataset({"name": "folder", "root": str(tmp_path)}, "train")
    with pytest.raises(EdgeprotoError, match=f"cannot read image file {tmp_path / 'train'}"):
        ds[0]
    assert build_dataset({"name": "folder", "root": str(tmp_path)}, "test")[0][0].shape[0] == 3
    with pytest.raises(EdgeprotoError, match="image file not found"):
        load_image(tmp_path / "nope.png")


# ---------------------------------------------------------------- cub

# id -> (class label 1-based, is_train, size (w, h), bbox (x, y, w, h), parts {part_id: (x, y, vis)})
CUB_IMAGES = {
    1: (1, 1, (100, 50), (10, 5, 50, 40), {1: (50, 25, 1), 2: (0, 0, 0)}),
    2: (1, 0, (80, 80), (0, 0, 80, 80), {1: (20, 60, 1), 2: (70, 10, 1)}),
    3: (2, 1, (60, 120), (20, 30, 20, 60), {1: (30, 60, 1), 2: (5, 5, 1)}),
    4: (2, 0, (64, 64), (8, 8, 32, 32), {1: (0, 0, 0), 2: (10, 20, 1)}),
    5: (3, 1, (90, 60), (30, 15, 45, 30), {1: (45, 30, 1), 2: (60, 40, 1)}),
    6: (3, 0, (50, 50), (5, 5, 40, 40), {1: (25, 25, 1), 2: (0, 0, 0)}),
}


def _write_cub(root: Path) -> None:
    names = {1: "001.Red_bird", 2: "002.Green_bird", 3: "003.Blue_bird"}
    lines = {k: [] for k in ("images", "labels", "split", "boxes", "locs")}
    for i, (label, is_train, (w, h), box, parts) in CUB_IMAGES.items():
        rel = f"{names[label]}/img_{i:02d}.png"
        arr = np.zeros((h, w, 3), dtype=np.uint8)
        arr[:, :, label - 1] = 200
        (root / "images" / names[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / "images" / rel)
        lines["images"].append(f"{i} {rel}")
        lines["labels"].append(f"{i} {label}")
        lines["split"].append(f"{i} {is_train}")
        lines["boxes"].append(f"{i} " + " ".join(f"{v:.1f}" for v in box))
        lines["locs"] += [f"{i} {p} {x:.1f} {y:.1f} {v}" for p, (x, y, v) in parts.items()]
    (root / "parts").mkdir()
    files = {
        "images.txt": lines["images"],
        "image_class_labels.txt": lines["labels"],
        "train_test_split.txt": lines["split"],
        "classes.txt": [f"{k} {v}" for k, v in names.items()],
        "bounding_boxes.txt": lines["boxes"],
        "parts/parts.txt": ["1 left eye", "2 tail"],
        "parts/part_locs.txt": lines["locs"],
    }
    for rel, rows in files.items():
        (root / rel).write_text("\n".join(rows) + "\n")


def test_cub_split_labels_and_points(tmp_path):
    _write_cub(tmp_path)
    cfg = {"name": "cub", "root": str(tmp_path), "image_size": 56}
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert train.image_ids == [1, 3, 5] and test.image_ids == [2, 4, 6]
    assert train.classes == ["001.Red_bird", "002.Green_bird", "003.Blue_bird"]
    assert train.labels.tolist() == [0, 1, 2] and test.labels.tolist() == [0, 1, 2]
    assert train.part_names == ["left eye", "tail"]
    x, y = train[1]
    assert x.shape == (3, 56, 56) and y == 1
    assert (train.raw_image(1)[..., 1] == 200).all()  # class 2 images are green
    # image 1 is 100x50: (50, 25) -> (28, 28); part 2 not visible
    np.testing.assert_allclose(train.part_points(0), [[28, 28, 1], [0, 0, 0]])
    # image 3 is 60x120: (30, 60) -> (28, 28), (5, 5) -> (4.666.., 2.333..)
    np.testing.assert_allclose(train.part_points(1), [[28, 28, 1], [5 * 56 / 60, 5 * 56 / 120, 1]])
    masks = train.part_masks(0)
    assert masks.shape == (2, 56, 56) and masks.dtype == bool
    assert not masks[1].any()  # invisible part
    rows, cols = np.nonzero(masks[0])
    assert masks[0][28, 28] and abs(rows.mean() - 27.5) < 0.6 and abs(cols.mean() - 27.5) < 0.6
    assert rows.max() - rows.min() <= 2 * 56 / 28 + 1  # radius image_size / 28
    m = train.part_masks(2)[1]  # image 5 (90x60), tail at (60, 40) -> (37.33, 37.33)
    assert m[37, 37] and not m[10, 10]


def test_cub_crop_to_bbox(tmp_path):
    _write_cub(tmp_path)
    cfg = {"name": "cub", "root": str(tmp_path), "image_size": 28, "crop_to_bbox": True}
    train = build_dataset(cfg, "train")
    assert train.source_image(0).size == (50, 40)  # the bounding box of image 1
    # image 1: box (10, 5, 50, 40); (50, 25) -> ((50-10)*28/50, (25-5)*28/40) = (22.4, 14)
    np.testing.assert_allclose(train.part_points(0)[0], [22.4, 14.0, 1.0])
    # image 3: box (20, 30, 20, 60); (5, 5) falls outside the crop -> not visible
    np.testing.assert_allclose(train.part_points(1), [[14, 14, 1], [0, 0, 0]])
    assert train[0][0].shape == (3, 28, 28)


def test_cub_malformed_files(tmp_path):
    _write_cub(tmp_path)
    locs = tmp_path / "parts" / "part_locs.txt"
    lines = locs.read_text().splitlines()
    lines[2] = "2 1 twenty 60.0 1"
    locs.write_text("\n".join(lines) + "\n")
    with pytest.raises(EdgeprotoError, match=rf"part_locs.txt:3: malformed line"):
        build_dataset({"name": "cub", "root": str(tmp_path)}, "train")
    lines[2] = "2 7 20.0 60.0 1"
    locs.write_text("\n".join(lines) + "\n")
    with pytest.raises(EdgeprotoError, match=r"part_locs.txt:3: part id 7"):
        build_dataset({"name": "cub", "root": str(tmp_path)}, "train")
    (tmp_path / "train_test_split.txt").unlink()
    with pytest.raises(EdgeprotoError, match="train_test_split.txt"):
        build_dataset({"name": "cub", "root": str(tmp_path)}, "train")


# ---------------------------------------------------------------- preprocess


def test_preprocess_works_without_torch(tmp_path):
    Image.new("L", (40, 30), 128).save(tmp_path / "grey.png")
    Image.new("RGBA", (17, 50), (255, 0, 0, 10)).save(tmp_path / "rgba.png")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import numpy as np
        from PIL import Image
        from edgeproto.data.preprocess import load_image, to_input
        import edgeproto.data  # the package import must stay torch-free too
        for name in ("grey.png", "rgba.png"):
            for img in (Image.open({str(tmp_path)!r} + "/" + name), load_image({str(tmp_path)!r} + "/" + name)):
                x = to_input(img, 24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
                assert x.shape == (3, 24, 24) and x.dtype == np.float32, (x.shape, x.dtype)
                print(name, img.mode, round(float(x[0].mean()), 4), round(float(x[1].mean()), 4))
        assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    grey = (128 / 255 - 0.5) / 0.25
    assert lines[0].split()[1:] == ["L", str(round(grey, 4)), str(round(grey, 4))]
    assert lines[2].split()[1:] == ["RGBA", "2.0", "-2.0"]  # alpha dropped: pure red


def test_to_input_rejects_bad_arguments():
    img = Image.new("RGB", (4, 4))
    with pytest.raises(EdgeprotoError, match="mean"):
        to_input(img, 8, (0.5, 0.5), (1, 1, 1))
    with pytest.raises(EdgeprotoError, match="std"):
        to_input(img, 8, (0.5, 0.5, 0.5), (1, 0, 1))
    with pytest.raises(EdgeprotoError, match="PIL image"):
        to_input(np.zeros((4, 4, 3)), 8, (0, 0, 0), (1, 1, 1))
