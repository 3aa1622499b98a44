"""Synthetic visual search: small patterned objects on a large canvas, readable only after a zoom-in.

Each image is a `canvas_size`² canvas with a few coloured shapes placed on a coarse grid of positions. Every shape
carries a small grey panel filled with a fine texture ("horizontal lines", "dots", "checkerboard", ...). The question
asks for the texture inside one shape, named by colour and shape ("What pattern is inside the red circle?"), with
lettered options naming textures. This is the zoom setting's offline training set (docs/method.md).

Why the zoom is needed: every texture repeats every 3 px (`pattern_scale=1`) and all textures have exactly the same
mean grey (the ink is darker for sparser tiles). Shrinking the 672-px canvas to the model's 224-px input (3× in each
direction) averages every texture to that same flat grey, so a panel looks the same whatever texture it holds.
Panels sit on the 3-px grid of the downsampling and their contrast ramps up linearly over 9 px from their edges, so
the edges do not leak the texture either: after 3× box averaging the images of the different textures are
identical, after bicubic (the Qwen2.5-VL processor's filter) they differ by at most 2 grey levels in a few pixels
(a hard-edged panel would leak ~11). A zoom crop of the object (e.g. 96-160 px of the original, fed at its own
resolution) shows the texture plainly, at full contrast.

The target's box (`meta["bbox"]`, original-image pixels, `[x1, y1, x2, y2)` with exclusive `x2, y2`) is stored
for expert trajectories and analysis only; the prompt never contains it.

    from iapo.data.synthetic import SyntheticConfig, build_split
    samples = build_split("train", 64, SyntheticConfig(n_distractors=5), seed=0)   # in memory, PIL images

Write a split to disk (PNGs plus `<split>.jsonl` in the generic JSONL format of `iapo.data.jsonl`):

    python -m iapo.data.synthetic --out data/synthetic --train 2000 --val 200 --test 200
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from iapo.data.sample import VQASample
from iapo.data.synthetic_files import generator_main, write_samples

SOURCE = "synthetic"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (50, 100, 230),
    "yellow": (235, 200, 30),
    "purple": (150, 70, 200),
    "orange": (245, 130, 20),
}
"""Shape colours by name."""

SHAPES = ("circle", "square", "triangle", "diamond")

PATTERNS: dict[str, tuple[str, ...]] = {
    "horizontal lines": ("...", "###", "..."),
    "vertical lines": (".#.", ".#.", ".#."),
    "dots": ("#.#", "...", "#.#"),
    "checkerboard": (".#.", "#.#", ".#."),
    "holes": ("###", "#.#", "###"),
}
"""Textures as one 3×3 tile ("#" = ink), repeated over the panel: tiled, "dots" are 2×2 dark squares, "checkerboard"
a diagonal lattice of ink pixels, "holes" single blank pixels on grey ink. Every tile is mirror-symmetric about its
centre row and column: with that, a contrast ramp that is linear within each 3-px block leaves nothing of the
texture after 3× box averaging (and only a fraction of a grey level after bicubic). Chosen among such tiles so that
any two differ in at least 80 grey levels per pixel on average, whatever their relative shift."""

BACKGROUND = (225, 225, 225)
CELL_TINTS = (
    (250, 120, 120),
    (120, 220, 120),
    (120, 150, 250),
    (240, 220, 90),
    (220, 120, 230),
    (90, 220, 220),
    (250, 170, 90),
    (150, 150, 150),
    (180, 120, 80),
)
"""Background of the target's grid cell (row-major index; a grid of more cells repeats them) with `cell_hint`."""
PAPER = 255
"""Grey level of the panel's blank pixels."""
PANEL_MEAN = 175
"""Mean grey of every panel: the ink of a tile with k ink pixels is PAPER - (PAPER - PANEL_MEAN) * 9 / k, an integer
for k in {3, 4, 8} (15, 75 and 165), so all textures average to exactly this grey."""
FADE_PX = 9
"""Texture contrast rises linearly over this many px from each panel edge; a multiple of 3, so the ramp is linear
within every 3-px block of the downsampling (a hard edge would leak the texture through the bicubic kernel's lobes:
~11 grey levels; this ramp: under 1 before rounding)."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Difficulty knobs of the synthetic set. The defaults are the easy setting for a tiny model on a CPU.

    `pattern_scale` sets the fineness: a texture period is `3 * pattern_scale` px. With 1 (default) the texture
    averages out exactly when the canvas is shrunk 3× (672 → 224, the tiny model's input), so it is readable only
    after a zoom; set `canvas_size = 3 * input side` for other input sizes. Larger scales make the texture visible
    without zooming (an easier curriculum, or a no-zoom control). `jitter` moves objects off the grid-cell centres by
    up to that many px (kept on the period grid).

    `cell_hint` shades the background of the target's grid cell in a tint that names the cell (`CELL_TINTS`, row
    major), so where to zoom can be read from the colours of the 224-px view alone: Qwen2.5-VL has no absolute
    position embedding, and a tiny model trained from scratch does not learn to read an object's position in a CPU
    budget without it (docs/results.md). The texture still needs the zoom.
    `shuffle_options: False` lists the options in the order of `patterns`, so each texture always has the same
    letter (the answer is then a direct function of the texture).
    """

    canvas_size: int = 672
    object_size: int = 96
    grid: int = 4
    jitter: int = 0
    n_distractors: int = 3
    n_same_colour: int = 0
    n_options: int = 4
    pattern_scale: int = 1
    panel_fraction: float = 0.5
    cell_hint: bool = False
    shuffle_options: bool = True
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    patterns: tuple[str, ...] = tuple(PATTERNS)

    def __post_init__(self) -> None:
        vocabularies = {
            "colour": (self.colours, COLOURS),
            "shape": (self.shapes, SHAPES),
            "pattern": (self.patterns, PATTERNS),
        }
        for kind, (names, known) in vocabularies.items():
            unknown = [name for name in names if name not in known]
            if unknown or len(set(names)) != len(names) or not names:
                raise ValueError(f"{kind}s must be distinct names from {list(known)}, got {list(names)}")
        pitch = self.canvas_size // self.grid
        if self.object_size > pitch - 2 * self.period:
            raise ValueError(f"object_size {self.object_size} does not fit a grid cell of {pitch} px with margins")
        if 1 + self.n_distractors > self.grid**2:
            raise ValueError(f"{1 + self.n_distractors} objects do not fit a {self.grid}x{self.grid} grid")
        if not 2 <= self.n_options <= len(self.patterns):
            raise ValueError(f"n_options must be in [2, {len(self.patterns)}], got {self.n_options}")
        if not 0 <= self.n_same_colour <= min(self.n_distractors, len(self.shapes) - 1):
            raise ValueError(f"n_same_colour must be in [0, {min(self.n_distractors, len(self.shapes) - 1)}]")
        if self.n_distractors > self.n_same_colour and len(self.colours) < 2:
            raise ValueError("distractors of another colour need at least two colours")
        if self.panel_side < 2 * (FADE_PX + self.period):
            raise ValueError(f"a panel of {self.panel_side} px is too small for a {self.period}-px texture")

    @property
    def period(self) -> int:
        """Pixels after which a texture repeats; every object and panel edge lies on this grid."""
        return 3 * self.pattern_scale

    @property
    def panel_side(self) -> int:
        """Side of the textured panel inside each shape, a whole number of periods."""
        return int(self.panel_fraction * self.object_size) // self.period * self.period


@dataclass(frozen=True)
class SceneObject:
    """One shape on the canvas; `box` is `(x1, y1, x2, y2)` in canvas pixels, `x2, y2` exclusive."""

    colour: str
    shape: str
    pattern: str
    box: tuple[int, int, int, int]

    def as_dict(self) -> dict:
        return {"colour": self.colour, "shape": self.shape, "pattern": self.pattern, "bbox": list(self.box)}


def sample_scene(rng: np.random.Generator, config: SyntheticConfig) -> tuple[SceneObject, ...]:
    """Draw the objects of one image; the first one is the target, the only one with its colour and shape."""
    n_objects = 1 + config.n_distractors
    cells = rng.choice(config.grid**2, size=n_objects, replace=False)
    colour = str(rng.choice(config.colours))
    shape = str(rng.choice(config.shapes))
    other_shapes = [s for s in config.shapes if s != shape]
    other_colours = [c for c in config.colours if c != colour]
    kinds = [(colour, shape)]
    kinds += [(colour, str(s)) for s in rng.choice(other_shapes, size=config.n_same_colour, replace=False)]
    kinds += [
        (str(rng.choice(other_colours)), str(rng.choice(config.shapes)))
        for _ in range(config.n_distractors - config.n_same_colour)
    ]
    return tuple(
        SceneObject(c, s, str(rng.choice(config.patterns)), _cell_box(int(cell), rng, config))
        for (c, s), cell in zip(kinds, cells, strict=True)
    )


def _cell_box(cell: int, rng: np.random.Generator, config: SyntheticConfig) -> tuple[int, int, int, int]:
    """The object box in grid cell `cell`: centred, moved by the jitter, on the period grid, inside the cell."""
    pitch, period = config.canvas_size // config.grid, config.period
    row, col = divmod(cell, config.grid)
    corner = []
    for index in (col, row):
        low = -(-index * pitch // period) * period  # first grid line inside the cell
        high = (index * pitch + pitch - config.object_size) // period * period
        offset = int(rng.integers(-config.jitter, config.jitter + 1)) if config.jitter else 0
        start = index * pitch + (pitch - config.object_size) // 2 + offset
        corner.append(min(max(start // period * period, low), high))
    x1, y1 = corner
    return x1, y1, x1 + config.object_size, y1 + config.object_size


def render_scene(objects: tuple[SceneObject, ...], config: SyntheticConfig) -> Image.Image:
    """Draw the objects on a blank canvas: a filled shape each, with its textured panel inside (the first object is
    the target, whose cell `cell_hint` shades)."""
    canvas = np.empty((config.canvas_size, config.canvas_size, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    if config.cell_hint:
        pitch = config.canvas_size // config.grid
        x1, y1, x2, y2 = objects[0].box
        row, col = (y1 + y2) // 2 // pitch, (x1 + x2) // 2 // pitch
        tint = CELL_TINTS[(row * config.grid + col) % len(CELL_TINTS)]
        canvas[row * pitch : (row + 1) * pitch, col * pitch : (col + 1) * pitch] = tint
    for obj in objects:
        x1, y1, x2, y2 = obj.box
        region = canvas[y1:y2, x1:x2]
        region[_shape_mask(obj.shape, config.object_size)] = COLOURS[obj.colour]
        px, py = _panel_offset(obj.shape, config)
        side = config.panel_side
        region[py : py + side, px : px + side] = _panel(obj.pattern, side, config.pattern_scale)[..., None]
    return Image.fromarray(canvas)


@lru_cache(maxsize=64)
def _shape_mask(shape: str, size: int) -> np.ndarray:
    """Boolean mask of a shape filling a `size`² box (triangle: apex up, base on the bottom edge)."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    last = size - 1
    if shape == "circle":
        draw.ellipse((0, 0, last, last), fill=1)
    elif shape == "square":
        draw.rectangle((0, 0, last, last), fill=1)
    elif shape == "triangle":
        draw.polygon([(last / 2, 0), (last, last), (0, last)], fill=1)
    elif shape == "diamond":
        draw.polygon([(last / 2, 0), (last, last / 2), (last / 2, last), (0, last / 2)], fill=1)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(mask, dtype=bool)


def _panel_offset(shape: str, config: SyntheticConfig) -> tuple[int, int]:
    """Top-left corner of the panel inside the object box, on the period grid and inside the shape."""
    centred = (config.object_size - config.panel_side) // 2 // config.period * config.period
    if shape == "triangle":  # the widest part of a triangle is its lower half
        return centred, config.object_size // 2 // config.period * config.period
    return centred, centred


@lru_cache(maxsize=64)
def _panel(pattern: str, side: int, scale: int) -> np.ndarray:
    """The grey `side`² panel of a texture: tiles of mean PANEL_MEAN, contrast ramped up from the edges."""
    tile = np.array([[char == "#" for char in row] for row in PATTERNS[pattern]])
    ink = PAPER - (PAPER - PANEL_MEAN) * tile.size / tile.sum()
    period = 3 * scale
    texture = np.tile(np.kron(np.where(tile, ink, PAPER), np.ones((scale, scale))), (side // period, side // period))
    from_edge = np.minimum(np.arange(side), np.arange(side)[::-1])
    ramp = np.minimum((from_edge + 0.5) / FADE_PX, 1.0)
    envelope = np.multiply.outer(ramp, ramp)
    return np.rint(PANEL_MEAN + envelope * (texture - PANEL_MEAN)).astype(np.uint8)


def make_sample(split: str, index: int, config: SyntheticConfig | None = None, seed: int = 0) -> VQASample:
    """Sample `index` of a split: a pure function of (split, index, config, seed).

    `meta` holds the target's `bbox`, `colour`, `shape` and `pattern`, and `objects`: every object on the canvas
    (target first) with its colour, shape, pattern and bbox.
    """
    config = config or SyntheticConfig()
    rng = np.random.default_rng([seed, zlib.crc32(split.encode()), index])
    objects = sample_scene(rng, config)
    target = objects[0]
    wrong = [p for p in config.patterns if p != target.pattern]
    choices = [target.pattern, *(str(p) for p in rng.choice(wrong, size=config.n_options - 1, replace=False))]
    if config.shuffle_options:
        options = tuple(choices[i] for i in rng.permutation(config.n_options))
    else:
        options = tuple(p for p in config.patterns if p in choices)
    return VQASample(
        uid=f"{SOURCE}-{split}-{index:06d}",
        source=SOURCE,
        image=render_scene(objects, config),
        question=f"What pattern is inside the {target.colour} {target.shape}?",
        answer=chr(ord("A") + options.index(target.pattern)),
        answer_type="mcq",
        options=options,
        category=target.pattern,
        meta={
            "bbox": list(target.box),
            "colour": target.colour,
            "shape": target.shape,
            "pattern": target.pattern,
            "objects": [obj.as_dict() for obj in objects],
        },
    )


def iter_split(split: str, n: int, config: SyntheticConfig | None = None, seed: int = 0) -> Iterator[VQASample]:
    """Samples 0..n-1 of a split, one at a time. Splits draw from disjoint seed streams."""
    if not split:
        raise ValueError("split must be a non-empty name such as 'train', 'val' or 'test'")
    for index in range(n):
        yield make_sample(split, index, config, seed)


def build_split(split: str, n: int, config: SyntheticConfig | None = None, seed: int = 0) -> list[VQASample]:
    """The first `n` samples of `split` ("train", "val", "test", ...) with in-memory PIL images."""
    return list(iter_split(split, n, config, seed))


def write_split(
    out_dir: str | Path,
    split: str,
    n: int,
    config: SyntheticConfig | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write a split as `<out_dir>/<split>/<uid>.png` plus `<out_dir>/<split>.jsonl`; return the JSONL path.

    Rows follow the generic format read by `iapo.data.jsonl.read_jsonl` (image paths relative to `out_dir`);
    read them back with `read_jsonl(path, source="synthetic")`.
    """
    return write_samples(out_dir, split, iter_split(split, n, config, seed), n, progress)


def main(argv: list[str] | None = None) -> None:
    generator_main(
        argv, SyntheticConfig, write_split, "Write the synthetic visual-search splits (PNGs + JSONL).", "data/synthetic"
    )


if __name__ == "__main__":
    main()
