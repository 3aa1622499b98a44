"""The benchmark runs the rollout paths side by side and the shared training step for GRPO and IAPO's attribution
variants per workload, and reports every phase, the work counts, the IAPO/GRPO ratio, the attribution's share and
the completeness gaps (timings themselves are not asserted); the `gpu` preset runs on a GPU only."""

from __future__ import annotations

import json

import pytest

from helpers.run_if import RunIf
from iapo.agent.rollout import SamplingSettings
from iapo.experiments.bench import BEFORE, main, parse_args, step_settings
from iapo.experiments.bench_variants import Variant, parse_variant


def test_bench_reports_both_paths_and_every_phase(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results = main(
        ["--preset", "cpu", "--rollouts", "4", "--group-size", "2", "--workloads", "short=4", "--repeats", "1"]
        + ["--warmup", "0", "--step-paths", "plain", "fast", "--call-choices", "1"]
        + ["--variants", "integrated_gradients:riemann:2:nodedup", "grad_x_input", "paper", "--out", str(out)]
    )
    [rollouts] = results["workloads"]["short"]["rollout"]
    plain, fast = rollouts["plain"], rollouts["fast"]
    assert rollouts["same_tokens"]  # same prompts, same seed: the fast path changes no token
    assert plain["turns_per_trajectory"] == fast["turns_per_trajectory"] == 2  # scripted call, then a sampled turn
    # 2 prompts × 2 samples: the fast path encodes each prompt's image once and each row's crop once
    assert plain["vision_images_per_trajectory"] == 3 and fast["vision_images_per_trajectory"] == 1.5
    assert fast["prefill_positions_per_trajectory"] < plain["prefill_positions_per_trajectory"] / 2
    assert plain["tokens_per_second"] > 0 and fast["tokens_per_second"] > 0

    steps = {(row["path"], row["method"]): row for row in results["workloads"]["short"]["step"]}
    names = ["grpo", "iapo IG riemann m=2 no dedup", "iapo grad_x_input", "iapo IG gauss_legendre m=3 (paper)"]
    assert set(steps) == {(path, name) for path in ("plain", "fast") for name in names}
    phases = {f"time/{name}" for name in ("rollout", "attribution_student", "attribution_teacher", "update")}
    for path in ("plain", "fast"):
        grpo = steps[(path, "grpo")]
        assert "time/attribution_student" not in grpo["timings"] and grpo["iapo_over_grpo"] == 1.0
        assert steps[(path, names[1])]["attribution_over_first"] == 1.0
        for name in names[1:]:
            iapo = steps[(path, name)]
            assert phases <= set(iapo["timings"]) and all(iapo["timings"][phase] > 0 for phase in phases)
            assert iapo["iapo_over_grpo"] == pytest.approx(iapo["total"] / grpo["total"])
            assert 0 < iapo["attribution_share"] < 1
            assert iapo["attributed"] == iapo["trajectories"] == 4  # every trajectory has its tool call
    # one scripted call: the fast path with deduplication attributes each prompt's call once
    assert steps[("fast", names[3])]["distinct"] == 0.5 and steps[("fast", names[1])]["distinct"] == 1.0
    assert set(steps[("fast", names[3])]["gaps"]) == {"student", "teacher"}
    assert steps[("fast", names[2])]["gaps"] == {}  # gradient × input has no completeness to measure
    assert (
        steps[("fast", "iapo grad_x_input")]["vision_images_per_trajectory"]
        < steps[("plain", "iapo grad_x_input")]["vision_images_per_trajectory"]
    )
    assert json.loads(out.read_text())["workloads"]["short"]["step"][0]["method"] == "grpo"
    printed = capsys.readouterr().out
    assert "## short" in printed and "same tokens: yes" in printed and "IAPO / GRPO" in printed


def test_variants_parse_and_the_paper_variant_is_the_configs():
    assert parse_variant(BEFORE) == Variant("integrated_gradients", "riemann", 16, deduplicate=False)
    assert parse_variant("occlusion") == Variant("occlusion")
    paper = parse_variant("paper")
    assert paper.paper and paper.method == "integrated_gradients" and paper.deduplicate
    with_loss = parse_variant("occlusion:loss")
    assert with_loss == Variant("occlusion", attribution_loss=1.0) and with_loss.label == "iapo occlusion + loss"
    ig_loss = parse_variant("integrated_gradients:riemann:2:loss3")
    assert ig_loss == Variant("integrated_gradients", "riemann", 2, attribution_loss=1.0, loss_calls=3)
    assert ig_loss.label == "iapo IG riemann m=2 + loss (3 calls)"
    bad_variants = ("integrated_gradients", "integrated_gradients:simpson:4", "integrated_gradients:riemann:0", "x")
    for bad in (*bad_variants, "attention:loss", "occlusion:loss0", "occlusion:lossy"):  # a graph; N >= 1
        with pytest.raises(ValueError, match="variant"):
            parse_variant(bad)
    args = parse_args(["--preset", "cpu"])
    assert [name for name, _ in args.workloads] == ["short", "realistic"] and args.variants[0] == parse_variant(BEFORE)
    settings = step_settings(args, SamplingSettings(), "fast", with_loss)
    assert settings.attribution_loss == 1.0 and settings.attribution.method == "occlusion"
    settings = step_settings(args, SamplingSettings(), "fast", ig_loss)
    assert (settings.attribution_loss, settings.attribution_loss_calls, settings.attribution.steps) == (1.0, 3, 2)


@RunIf(min_gpus=1, bitsandbytes=True)
def test_gpu_preset_reports_every_stage_and_its_peak_memory(tmp_path):
    """The `gpu` preset's shapes on a small budget: rollout tokens/s and every stage's peak memory are reported."""
    results = main(
        ["--preset", "gpu", "--rollouts", "8", "--workloads", "short=16", "--repeats", "1", "--warmup", "0"]
        + ["--out", str(tmp_path / "bench.json")]
    )
    [rollouts] = results["workloads"]["short"]["rollout"]
    assert rollouts["fast"]["tokens_per_second"] > 0 and rollouts["fast"]["peak_gib"] > 0
    for row in results["workloads"]["short"]["step"]:
        assert all(value > 0 for key, value in row["timings"].items() if key.startswith("memory/"))
        assert "memory/update_gib" in row["timings"]
