"""The benchmark runs the plain and the fast rollout side by side and the shared training step for GRPO and IAPO on
both paths, and reports every phase, the work counts and the IAPO/GRPO ratio (timings themselves are not asserted)."""

from __future__ import annotations

import json

import pytest

from iapo.experiments.bench import main, step_configurations


def test_bench_reports_both_paths_and_every_phase(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results = main(
        [
            "--preset",
            "cpu",
            "--rollouts",
            "4",
            "--group-size",
            "2",
            "--new-tokens",
            "4",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ]
        + ["--attribution-method", "grad_x_input", "integrated_gradients", "--ig-steps", "2", "--out", str(out)]
    )
    [rollouts] = results["rollout"]
    plain, fast = rollouts["plain"], rollouts["fast"]
    assert rollouts["same_tokens"]  # same prompts, same seed: the fast path changes no token
    assert plain["turns_per_trajectory"] == fast["turns_per_trajectory"] == 2  # scripted call, then a sampled turn
    # 2 prompts × 2 samples: the fast path encodes each prompt's image once and each row's crop once
    assert plain["vision_images_per_trajectory"] == 3 and fast["vision_images_per_trajectory"] == 1.5
    assert fast["prefill_positions_per_trajectory"] < plain["prefill_positions_per_trajectory"] / 2
    assert plain["tokens_per_second"] > 0 and fast["tokens_per_second"] > 0

    steps = {(row["path"], row["method"]): row for row in results["step"]}
    names = ["grpo", "iapo grad_x_input", "iapo integrated_gradients m=2"]
    assert set(steps) == {(path, name) for path in ("plain", "fast") for name in names}
    phases = {f"time/{name}" for name in ("rollout", "attribution_student", "attribution_teacher", "update")}
    for path in ("plain", "fast"):
        grpo = steps[(path, "grpo")]
        assert "time/attribution_student" not in grpo["timings"] and grpo["iapo_over_grpo"] == 1.0
        for name in names[1:]:
            iapo = steps[(path, name)]
            assert phases <= set(iapo["timings"]) and all(iapo["timings"][phase] > 0 for phase in phases)
            assert iapo["iapo_over_grpo"] == pytest.approx(iapo["total"] / grpo["total"])
            assert iapo["attributed"] == iapo["trajectories"] == 4  # every trajectory has its tool call
    # the teacher and the student attribute 4 trajectories that share 2 original images
    assert (
        steps[("fast", "iapo grad_x_input")]["vision_images_per_trajectory"]
        < steps[("plain", "iapo grad_x_input")]["vision_images_per_trajectory"]
    )
    assert json.loads(out.read_text())["step"][0]["method"] == "grpo"
    printed = capsys.readouterr().out
    assert "same tokens: yes" in printed and "IAPO / GRPO" in printed


def test_configurations_cover_each_method_and_m():
    class Args:
        attribution_method = ["grad_x_input", "integrated_gradients"]
        ig_steps = [1, 4, 16]

    assert step_configurations(Args) == [
        ("grpo", "", 0),
        ("iapo", "grad_x_input", 0),
        ("iapo", "integrated_gradients", 1),
        ("iapo", "integrated_gradients", 4),
        ("iapo", "integrated_gradients", 16),
    ]
