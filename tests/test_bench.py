"""The benchmark script times every phase of a training step (timings themselves are not asserted)."""

from __future__ import annotations

from iapo.experiments.bench import main


def test_bench_reports_every_phase(tmp_path):
    out = tmp_path / "bench.json"
    results = main(
        [
            "--student",
            "tiny-student",
            "--teacher",
            "tiny-teacher",
            "--quantization",
            "none",
            "--rollouts",
            "4",
            "--group-size",
            "2",
            "--new-tokens",
            "6",
            "--steps",
            "1",
            "--out",
            str(out),
        ]
    )
    step = results["step_0"]
    assert {"rollout", "attribution_student", "attribution_teacher", "update"} <= set(step)
    assert all(step[name]["seconds"] > 0 for name in ("rollout", "attribution_student", "update"))
    assert step["rollout"]["tokens_per_second"] > 0 and step["prompt_tokens"] > 0
    assert out.is_file()
