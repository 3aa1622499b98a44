"""The attribution picture: image and crops for student and teacher, plus the components' bar chart."""

from __future__ import annotations

import numpy as np
from PIL import Image

from iapo.attribution.plots import attribution_figure, region_heatmap


def test_region_heatmap_places_each_region():
    heat = region_heatmap({"image/r0c1": 0.25, "image/r1c0": 0.5, "question": 0.25}, (2, 3))
    np.testing.assert_array_equal(heat, [[0, 0.25, 0], [0.5, 0, 0]])


def test_figure_layout(tmp_path):
    images = [Image.new("RGB", (672, 448), "white"), Image.new("RGB", (96, 96), "gray")]
    student = {"image/r0c0": 0.5, "tool/1": 0.3, "question": 0.2}
    teacher = {"image/r2c2": 0.6, "tool/1": 0.4}
    figure = attribution_figure(images, student, teacher, grid=(3, 3), title="What pattern?")
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:4] == [
        "student: image regions",
        "student: tool/1 = 0.30",
        "teacher: image regions",
        "teacher: tool/1 = 0.40",
    ]
    bars = figure.axes[-1]
    assert bars.get_title() == "components" and len(figure.axes) == 5
    assert [t.get_text() for t in bars.get_yticklabels()] == ["image/r0c0", "image/r2c2", "question", "tool/1"]
    path = tmp_path / "attribution.png"
    figure.savefig(path, dpi=50)
    width, height = Image.open(path).size
    assert (width, height) == (int(3 * 3.2 * 50), int(6.4 * 50))


def test_figure_of_the_blocks_layout():
    images = [Image.new("RGB", (672, 448), "white"), Image.new("RGB", (96, 96), "gray")]
    student = {"P": 0.1, "R": 0.2, "I": 0.6, "T": 0.1}
    figure = attribution_figure(images, student, {"P": 0.05, "R": 0.15, "I": 0.75, "T": 0.05})
    assert [ax.get_title() for ax in figure.axes][:4] == [
        "student: images, I = 0.60",
        "student: returned image 1",
        "teacher: images, I = 0.75",
        "teacher: returned image 1",
    ]
    assert len(figure.axes[0].images) == 1
    assert [t.get_text() for t in figure.axes[-1].get_yticklabels()] == ["I", "P", "R", "T"]
