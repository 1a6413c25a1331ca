"""The default dataset: synthetic shape images whose class is which two part types appear.

Each image is S x S RGB on a textured, noisy background of random colour. Five part types
(``PART_NAMES``: filled circle, square, triangle, plus-shaped cross, striped patch) are ~10-14 px
at S=64 (scaled with S). An image of class ``c`` shows exactly the two part types
``CLASS_PARTS[c]``, plus, in half the images, a distractor (a thick line segment of random angle)
that belongs to no class. Positions, sizes, orientations and colours are random and independent of
the class, so only the shapes tell classes apart. Each shape colour differs in brightness from the
background (a stripe's two colours also from each other), so shapes show in greyscale too.
Part types are shared between classes (with the default 4 classes, circle, square and triangle each
occur in two), so a model has to find both parts of an image, not just one.

Image ``i`` of a split is a pure function of ``(seed, split, i)`` -- the splits use different
random streams and never share images -- and is generated on first access, then kept in memory.
``part_masks(i)`` gives the exact pixels of each part type (all-False for absent types).

``rule: xor`` (default ``pairs``, the rule above) is a two-class variant that no linear function of
part presence can learn: class ``exactly_one`` shows exactly one of circle and square, class
``none_or_both`` shows both or neither. Every image has exactly two shapes (plus the optional
distractor): the missing ones are fillers drawn from triangle, cross and stripes, so the shape
count does not give the class away. The four cases (neither, circle, square, both) are equally
likely within their class.

``task: segmentation`` makes the same images a semantic-segmentation set: the pixel classes are
``background`` plus the five part types (``SEGMENTATION_CLASSES``), ``mask(i)`` is the uint8 (S, S)
class index of every pixel (the distractor line counts as background: it is clutter the model has
to ignore), and an image's ``label`` is its largest part's class (the scene's classification label
is not a pixel class).

``task: multilabel`` makes a multi-label set: the labels are the five part types
(``classes == PART_NAMES``), an image shows 1 to 3 different part types drawn uniformly
(``MULTILABEL_PARTS``; the number first, then the types without replacement) plus, in half the
images, the distractor (no label); ``targets`` is the (N, 5) 0/1 matrix of each image's label set,
and an image's ``label`` is its first part type (so single-label code still runs).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from edgeproto.data.base import ImageDataset
from edgeproto.data.options import check_split, int_option
from edgeproto.errors import EdgeprotoError

PART_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "stripes")

# Class c shows exactly these two part types. The first five pairs form a cycle over the part
# types (each type in two classes); the last five the remaining pairs. num_classes takes a prefix.
CLASS_PARTS: tuple[tuple[str, str], ...] = (
    ("circle", "square"),
    ("triangle", "cross"),
    ("circle", "stripes"),
    ("square", "triangle"),
    ("cross", "stripes"),
    ("circle", "triangle"),
    ("square", "cross"),
    ("triangle", "stripes"),
    ("circle", "cross"),
    ("square", "stripes"),
)
MAX_CLASSES = len(CLASS_PARTS)
DISTRACTOR_PROBABILITY = 0.5
RULES = ("pairs", "xor")
XOR_PARTS: tuple[str, str] = ("circle", "square")  # rule xor: class = exactly one of these
XOR_FILLERS: tuple[str, ...] = ("triangle", "cross", "stripes")
XOR_CLASSES: tuple[str, str] = ("none_or_both", "exactly_one")
TASKS = ("classification", "segmentation", "multilabel")
MULTILABEL_PARTS = (1, 3)  # task multilabel: the fewest and most part types in one image
SEGMENTATION_CLASSES: tuple[str, ...] = ("background",) + PART_NAMES

_SPLIT_STREAM = {"train": 0, "test": 1}
_DISTRACTOR = -2  # kind code for the distractor (not a part type)
_BACKGROUND_RANGE = (60, 196)  # base colour per channel; texture + noise stay within +-45
_MIN_CONTRAST = 60  # brightness gap between a shape colour and the background base (0..255)


class Rendering(NamedTuple):
    """One generated sample, with what it was drawn on (for tests and diagnostics)."""

    image: np.ndarray  # uint8 (S, S, 3)
    background: np.ndarray  # uint8 (S, S, 3): the image before any shape was drawn
    part_masks: np.ndarray  # bool (P, S, S), one per PART_NAMES entry
    distractor_mask: np.ndarray  # bool (S, S); all-False when the image has no distractor


class ProceduralDataset(ImageDataset):
    """Synthetic part-shape images (see module docstring); deterministic by (seed, split, index)."""

    def __init__(
        self,
        split: str = "train",
        image_size: int = 64,
        num_classes: int = 4,
        train_size: int = 1200,
        test_size: int = 400,
        seed: int = 0,
        rule: str = "pairs",
        task: str = "classification",
        superpixels: int = 0,
    ) -> None:
        check_split(split)
        self.seed = int_option("seed", seed, 0, 2**32 - 1)
        size = int_option("image_size", image_size, 32, 512)
        if rule not in RULES:
            raise EdgeprotoError(f"dataset option 'rule' must be one of {', '.join(RULES)}, got {rule!r}")
        if rule == "xor" and num_classes not in (2, 4):  # 4: the default, i.e. not set
            raise EdgeprotoError("dataset option 'rule: xor' has 2 classes; leave num_classes out or set 2")
        self.rule = rule
        if task not in TASKS:
            raise EdgeprotoError(f"dataset option 'task' must be one of {', '.join(TASKS)}, got {task!r}")
        self.task = task
        self.superpixels = int_option("superpixels", superpixels, 0, 255)
        if self.superpixels and task != "segmentation":
            raise EdgeprotoError("dataset option 'superpixels' needs 'task: segmentation'")
        if task == "multilabel" and (rule != "pairs" or num_classes not in (4, len(PART_NAMES))):
            raise EdgeprotoError("dataset option 'task: multilabel' has the 5 part types as labels: leave "
                                 "num_classes and rule out")
        num_classes = 2 if rule == "xor" else int_option("num_classes", num_classes, 2, MAX_CLASSES)
        n_train = int_option("train_size", train_size, 1)
        n_test = int_option("test_size", test_size, 1)
        n = n_train if split == "train" else n_test
        class_parts = CLASS_PARTS[:num_classes]
        super().__init__(
            split=split,
            classes=list(XOR_CLASSES) if rule == "xor" else ["+".join(pair) for pair in class_parts],
            labels=np.arange(n) % num_classes,  # balanced: counts differ by at most one
            image_size=size,
            mean=(0.5, 0.5, 0.5),
            std=(0.17, 0.17, 0.17),  # measured over generated images
            part_names=PART_NAMES,
        )
        self.class_parts: list[tuple[str, str]] = [] if rule == "xor" else list(class_parts)
        self._class_kinds = [tuple(PART_NAMES.index(p) for p in pair) for pair in class_parts]
        self._images: list[np.ndarray | None] = [None] * n
        self._part_maps: list[np.ndarray | None] = [None] * n  # int8 (S, S): part index or -1
        if task == "segmentation":
            self.scene_labels: np.ndarray = self.labels.copy()
            self.classes = list(SEGMENTATION_CLASSES)
            self.labels = np.array([self._largest_part(i) for i in range(n)], dtype=np.int64)
        if task == "multilabel":
            self.classes = list(PART_NAMES)
            self._kinds = [self._multilabel_kinds(i) for i in range(n)]
            self.targets: np.ndarray = np.zeros((n, len(PART_NAMES)), dtype=np.uint8)
            for i, kinds in enumerate(self._kinds):
                self.targets[i, list(kinds)] = 1
            self.labels = np.array([kinds[0] for kinds in self._kinds], dtype=np.int64)

    def render(self, index: int) -> Rendering:
        """Generate sample ``index`` from scratch, with its background and distractor mask."""
        i = self._index(index)
        rng = np.random.default_rng([self.seed, _SPLIT_STREAM[self.split], i])
        if self.task == "multilabel":
            return _render(rng, self.image_size, _multilabel_kinds(rng))
        if self.rule == "xor":
            return _render(rng, self.image_size, _xor_kinds(rng, int(self.labels[i])))
        return _render(rng, self.image_size, self._class_kinds[int(self.labels[i])])

    def raw_image(self, index: int) -> np.ndarray:
        i = self._index(index)
        self._ensure(i)
        return self._images[i].copy()  # type: ignore[union-attr]

    def source_image(self, index: int) -> Image.Image:
        i = self._index(index)
        self._ensure(i)
        return Image.fromarray(self._images[i], "RGB")  # type: ignore[arg-type]

    def part_masks(self, index: int) -> np.ndarray:
        i = self._index(index)
        self._ensure(i)
        kinds = np.arange(len(PART_NAMES), dtype=np.int8)[:, None, None]
        return self._part_maps[i][None] == kinds  # type: ignore[index]

    def mask(self, index: int) -> np.ndarray:
        """uint8 (S, S) pixel classes (task segmentation): 0 background, 1 + part index for parts."""
        if self.task != "segmentation":
            raise EdgeprotoError("mask() needs dataset option 'task: segmentation'")
        i = self._index(index)
        self._ensure(i)
        return (self._part_maps[i].astype(np.int16) + 1).astype(np.uint8)  # type: ignore[union-attr]

    def _multilabel_kinds(self, i: int) -> tuple[int, ...]:
        """Task multilabel: the part types of image ``i`` (the first draws of its random stream)."""
        return _multilabel_kinds(np.random.default_rng([self.seed, _SPLIT_STREAM[self.split], i]))

    def _largest_part(self, i: int) -> int:
        counts = np.bincount(self.mask(i).ravel(), minlength=len(SEGMENTATION_CLASSES))
        return int(counts[1:].argmax()) + 1

    def _ensure(self, i: int) -> None:
        if self._images[i] is None:
            r = self.render(i)
            part_map = np.full((self.image_size, self.image_size), -1, dtype=np.int8)
            for k, mask in enumerate(r.part_masks):
                part_map[mask] = k
            self._images[i] = r.image
            self._part_maps[i] = part_map


def _multilabel_kinds(rng: np.random.Generator) -> tuple[int, ...]:
    """Task multilabel: 1..3 different part types, in random order."""
    count = int(rng.integers(MULTILABEL_PARTS[0], MULTILABEL_PARTS[1] + 1))
    return tuple(int(k) for k in rng.choice(len(PART_NAMES), size=count, replace=False))


def _xor_kinds(rng: np.random.Generator, label: int) -> tuple[int, ...]:
    """Rule xor: the two part types of an image of class ``label`` (1 = exactly one of XOR_PARTS)."""
    a, b = (PART_NAMES.index(p) for p in XOR_PARTS)
    fillers = [PART_NAMES.index(p) for p in XOR_FILLERS]
    case = int(rng.integers(0, 2))
    if label == 1:  # exactly one: circle or square, plus a filler
        return ((a, b)[case], fillers[int(rng.integers(0, len(fillers)))])
    if case == 1:  # both
        return (a, b)
    f1, f2 = rng.choice(len(fillers), size=2, replace=False)  # neither: two different fillers
    return (fillers[int(f1)], fillers[int(f2)])


def _render(rng: np.random.Generator, size: int, kinds: tuple[int, ...]) -> Rendering:
    scale = size / 64.0
    base = rng.integers(_BACKGROUND_RANGE[0], _BACKGROUND_RANGE[1] + 1, size=3)
    background = _background(rng, size, base)
    image = background.copy()
    part_masks = np.zeros((len(PART_NAMES), size, size), dtype=bool)
    distractor = np.zeros((size, size), dtype=bool)
    items = list(kinds)
    if rng.random() < DISTRACTOR_PROBABILITY:
        items.append(_DISTRACTOR)
    rng.shuffle(items)  # placement order must not hint at which shape is which
    boxes: list[tuple[int, int, int]] = []
    for kind in items:
        s = max(8, int(round(int(rng.integers(10, 15)) * scale)))
        x0, y0 = _place(rng, size, s, boxes)
        boxes.append((x0, y0, s))
        local, pattern = _shape(rng, kind, s, scale)
        colours = _colours(rng, base, 1 if pattern is None else 2)
        patch = image[y0 : y0 + s, x0 : x0 + s]
        idx = pattern if pattern is not None else np.zeros((s, s), dtype=np.intp)
        patch[local] = colours[idx[local]]
        target = distractor if kind == _DISTRACTOR else part_masks[kind]
        target[y0 : y0 + s, x0 : x0 + s] = local
    return Rendering(image, background, part_masks, distractor)


def _background(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    """Base colour + smooth blotches (+-15) + a gradient (+-15) + per-pixel noise (+-15)."""
    coarse = rng.uniform(-15.0, 15.0, size=(8, 8, 3))
    pos = np.clip((np.arange(size) + 0.5) * (8.0 / size) - 0.5, 0.0, 7.0)
    lo = np.minimum(pos.astype(np.intp), 6)
    frac = (pos - lo)[:, None]
    rows = coarse[lo] * (1 - frac[:, :, None]) + coarse[lo + 1] * frac[:, :, None]  # (S, 8, 3)
    blotches = rows[:, lo] * (1 - frac.T[:, :, None]) + rows[:, lo + 1] * frac.T[:, :, None]
    gx, gy = rng.uniform(-7.5, 7.5, size=2)
    ramp = np.linspace(-1.0, 1.0, size)
    gradient = gy * ramp[:, None] + gx * ramp[None, :]
    noise = rng.integers(-15, 16, size=(size, size, 3))
    img = base[None, None, :] + blotches + gradient[:, :, None] + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb[0]) * 0.299 + float(rgb[1]) * 0.587 + float(rgb[2]) * 0.114


def _colours(rng: np.random.Generator, base: np.ndarray, count: int) -> np.ndarray:
    """``count`` random colours whose brightness differs by >= _MIN_CONTRAST from the background
    base and from each other, so shapes (and stripes) show in a greyscale copy too."""
    base_luma = _luma(base)
    while True:
        colours = rng.integers(0, 256, size=(count, 3))
        lumas = [base_luma] + [_luma(c) for c in colours]
        if all(
            abs(lumas[a] - lumas[b]) >= _MIN_CONTRAST
            for a in range(len(lumas))
            for b in range(a + 1, len(lumas))
        ):
            return colours.astype(np.uint8)


def _place(
    rng: np.random.Generator, size: int, s: int, boxes: list[tuple[int, int, int]]
) -> tuple[int, int]:
    """Top-left corner of an s x s box inside the image, >= 2 px (scaled) away from other boxes."""
    gap = max(2, int(round(2 * size / 64)))
    for _ in range(1000):
        x0, y0 = (int(v) for v in rng.integers(1, size - s, size=2))
        if all(
            x0 >= bx + bs + gap or bx >= x0 + s + gap or y0 >= by + bs + gap or by >= y0 + s + gap
            for bx, by, bs in boxes
        ):
            return x0, y0
    raise RuntimeError(f"could not place a {s}px shape in a {size}px image")  # pragma: no cover


def _shape(
    rng: np.random.Generator, kind: int, s: int, scale: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """bool (s, s) mask of one shape, and for stripes an int (s, s) map choosing colour 0 or 1."""
    name = "distractor" if kind == _DISTRACTOR else PART_NAMES[kind]
    inset = max(1, int(round(0.08 * s)))
    if name in ("circle", "triangle", "distractor"):
        canvas = Image.new("L", (s, s), 0)
        draw = ImageDraw.Draw(canvas)
        if name == "circle":
            draw.ellipse((0, 0, s - 1, s - 1), fill=255)
        elif name == "triangle":
            tip, foot = (0, s - 1) if rng.random() < 0.5 else (s - 1, 0)  # points up or down
            draw.polygon([((s - 1) / 2, tip), (s - 1, foot), (0, foot)], fill=255)
        else:
            width = max(2, int(round(3 * scale)))
            angle = rng.uniform(0.0, np.pi)
            half = (s - 1 - width) / 2
            c = (s - 1) / 2
            dx, dy = half * np.cos(angle), half * np.sin(angle)
            draw.line([(c - dx, c - dy), (c + dx, c + dy)], fill=255, width=width)
        return np.asarray(canvas) > 0, None
    mask = np.zeros((s, s), dtype=bool)
    if name == "cross":
        t = max(2, int(round(s / 3)))
        a = (s - t) // 2
        mask[:, a : a + t] = True
        mask[a : a + t, :] = True
        return mask, None
    mask[inset : s - inset, inset : s - inset] = True
    if name == "square":
        return mask, None
    # stripes: a square patch of alternating bands, horizontal, vertical or diagonal
    width = max(2, int(round(2 * scale)))
    yy, xx = np.mgrid[0:s, 0:s]
    coord = (yy, xx, yy + xx)[int(rng.integers(0, 3))]
    return mask, (coord // width) % 2
