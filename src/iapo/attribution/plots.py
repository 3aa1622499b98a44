"""Attribution pictures: where the student and the teacher looked, over the image grid and each crop.

    figure = attribution_figure(trajectory.images, student, teacher, grid=(3, 3))
    figure.savefig("attribution.png")

Panels: row 1 the student, row 2 the teacher (absent when the run has no teacher: its dict is empty) — the original image with its grid regions shaded by weight, then each
crop titled with its weight; a last column with both distributions over all components as bars. With the `blocks`
layout (keys P / R / I / T, no `image/` regions) the images are shown plain, the first titled with the weight of the
image block I (which covers every image), and the bars carry the comparison.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def region_heatmap(weights: dict[str, float], grid: tuple[int, int]) -> np.ndarray:
    """[R, C] array of the `image/r{i}c{j}` weights (0 where absent)."""
    rows, cols = grid
    heat = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            heat[i, j] = weights.get(f"image/r{i}c{j}", 0.0)
    return heat


def attribution_figure(
    images: list[Image.Image],
    student: dict[str, float],
    teacher: dict[str, float],
    grid: tuple[int, int] = (3, 3),
    title: str = "",
):
    """A matplotlib figure comparing two attribution distributions over one trajectory's inputs (the student's alone
    when `teacher` is empty)."""
    crops = images[1:]
    columns = 2 + len(crops)
    views = [("student", student)] + ([("teacher", teacher)] if teacher else [])
    figure, axes = plt.subplots(len(views), columns, figsize=(3.2 * columns, 3.2 * len(views)), squeeze=False)
    vmax = max([*student.values(), *teacher.values(), 1e-9])
    regions = any(key.startswith("image/") for key in (*student, *teacher))
    for row, (name, weights) in enumerate(views):
        ax = axes[row, 0]
        ax.imshow(images[0])
        if not regions:
            ax.set_title(f"{name}: images, I = {weights.get('I', 0.0):.2f}")
            for t, crop in enumerate(crops, start=1):
                axes[row, t].imshow(crop)
                axes[row, t].set_title(f"{name}: returned image {t}")
            for ax in axes[row, : columns - 1]:
                ax.axis("off")
            continue
        width, height = images[0].size
        ax.imshow(
            region_heatmap(weights, grid),
            extent=(0, width, height, 0),
            cmap="magma",
            alpha=0.55,
            vmin=0,
            vmax=vmax,
            interpolation="nearest",
        )
        rows, cols = grid
        heat = region_heatmap(weights, grid)
        for i in range(rows):
            for j in range(cols):
                x, y = (j + 0.5) * width / cols, (i + 0.5) * height / rows
                ax.text(x, y, f"{heat[i, j]:.2f}", ha="center", va="center", color="white", fontsize=8)
        ax.set_title(f"{name}: image regions")
        for t, crop in enumerate(crops, start=1):
            axes[row, t].imshow(crop)
            axes[row, t].set_title(f"{name}: tool/{t} = {weights.get(f'tool/{t}', 0.0):.2f}")
        for ax in axes[row, : columns - 1]:
            ax.axis("off")
    keys = sorted(set(student) | set(teacher))
    positions = np.arange(len(keys))
    bars = plt.subplot2grid((len(views), columns), (0, columns - 1), rowspan=len(views), fig=figure)
    for row in range(len(views)):
        axes[row, columns - 1].remove()
    for offset, (name, weights) in zip((-0.2, 0.2), views, strict=False):
        bars.barh(positions + offset, [weights.get(k, 0.0) for k in keys], height=0.4, label=name)
    bars.set_yticks(positions, keys, fontsize=7)
    bars.invert_yaxis()
    bars.legend(loc="lower right")
    bars.set_title("components")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
